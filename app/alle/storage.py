"""Cloud Storage: attachments and reports live in the bucket named by STORAGE_BUCKET, never on local disk."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import IO

from google.api_core.exceptions import NotFound
from google.cloud import storage

from alle.config import Settings

_CHUNK = 256 * 1024
#: Bytes buffered per upload before they go to Cloud Storage (resumable chunks are multiples of 256 KiB).
_UPLOAD_CHUNK = 4 * _CHUNK


class Storage:
    def __init__(self, settings: Settings) -> None:
        # STORAGE_EMULATOR_HOST, when set, points the client at an emulator with anonymous credentials.
        self.client = storage.Client(project=settings.GOOGLE_CLOUD_PROJECT)
        self.bucket = self.client.bucket(settings.STORAGE_BUCKET)

    def writer(self, name: str, *, content_type: str) -> IO[bytes]:
        """A resumable upload fed chunk by chunk; the object appears when the writer is closed (or collected)."""
        blob = self.bucket.blob(name)
        writer: IO[bytes] = blob.open("wb", chunk_size=_UPLOAD_CHUNK, content_type=content_type, if_generation_match=0)
        return writer

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
