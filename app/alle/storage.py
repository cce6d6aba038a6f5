"""Cloud Storage: attachments and reports live in the bucket named by STORAGE_BUCKET, never on local disk."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import IO

from google.api_core.exceptions import NotFound
from google.cloud import storage

from alle.config import Settings

_CHUNK = 256 * 1024


class Storage:
    def __init__(self, settings: Settings) -> None:
        # STORAGE_EMULATOR_HOST, when set, points the client at an emulator with anonymous credentials.
        self.client = storage.Client(project=settings.GOOGLE_CLOUD_PROJECT)
        self.bucket = self.client.bucket(settings.STORAGE_BUCKET)

    def upload(self, name: str, data: IO[bytes], *, content_type: str) -> None:
        self.bucket.blob(name).upload_from_file(data, content_type=content_type, rewind=True)

    def upload_text(self, name: str, text: str, *, content_type: str) -> None:
        self.bucket.blob(name).upload_from_string(text, content_type=content_type)

    def stream(self, name: str) -> Iterator[bytes]:
        with self.bucket.blob(name).open("rb", chunk_size=_CHUNK) as reader:
            while chunk := reader.read(_CHUNK):
                yield chunk

    def delete(self, name: str) -> None:
        """Deleting an object that is already gone is success: callers may retry."""
        with contextlib.suppress(NotFound):
            self.bucket.blob(name).delete()
