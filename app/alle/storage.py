"""Cloud Storage: attachments and reports live in the bucket named by STORAGE_BUCKET, never on local disk.

google-cloud-storage is a blocking client. The worker calls `Storage` from its threads; the web process uses
`AsyncStorage`, which runs each blocking call in a worker thread under a capacity limiter, so the event loop
never waits on the bucket and a burst of transfers cannot take every thread.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from typing import IO, TypeVar, TypeVarTuple

import anyio
import anyio.to_thread
from google.api_core.exceptions import NotFound
from google.cloud import storage

from alle.config import Settings

_CHUNK = 256 * 1024
#: Bytes buffered per upload before they go to Cloud Storage (resumable chunks are multiples of 256 KiB).
UPLOAD_CHUNK = 4 * _CHUNK

T = TypeVar("T")
Args = TypeVarTuple("Args")


class Storage:
    def __init__(self, settings: Settings) -> None:
        # STORAGE_EMULATOR_HOST, when set, points the client at an emulator with anonymous credentials.
        self.client = storage.Client(project=settings.GOOGLE_CLOUD_PROJECT)
        self.bucket = self.client.bucket(settings.STORAGE_BUCKET)

    def writer(self, name: str, *, content_type: str) -> IO[bytes]:
        """A resumable upload fed chunk by chunk; the object appears when the writer is closed (or collected)."""
        blob = self.bucket.blob(name)
        writer: IO[bytes] = blob.open("wb", chunk_size=UPLOAD_CHUNK, content_type=content_type, if_generation_match=0)
        return writer

    def reader(self, name: str) -> IO[bytes]:
        reader: IO[bytes] = self.bucket.blob(name).open("rb", chunk_size=_CHUNK)
        return reader

    def upload_text(self, name: str, text: str, *, content_type: str) -> None:
        self.bucket.blob(name).upload_from_string(text, content_type=content_type)

    def stream(self, name: str) -> Iterator[bytes]:
        with self.reader(name) as reader:
            while chunk := reader.read(_CHUNK):
                yield chunk

    def delete(self, name: str) -> None:
        """Deleting an object that is already gone is success: callers may retry."""
        with contextlib.suppress(NotFound):
            self.bucket.blob(name).delete()


class _Upload:
    """One resumable upload, opened on its first bytes; its methods block and run in a worker thread."""

    def __init__(self, storage: Storage, name: str, content_type: str) -> None:
        self.storage = storage
        self.name = name
        self.content_type = content_type
        self.writer: IO[bytes] | None = None

    def write(self, data: bytes) -> None:
        if self.writer is None:
            self.writer = self.storage.writer(self.name, content_type=self.content_type)
        self.writer.write(data)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    def abort(self) -> bool:
        """Close after a failure; True when an object may exist. A BlobWriter finalises its upload when it is
        closed or garbage collected, so it is closed here and the caller deletes what it wrote."""
        if self.writer is None:
            return False
        with contextlib.suppress(Exception):
            self.writer.close()
        return True


class AsyncStorage:
    """The web process's view of the bucket: every blocking call in a thread, at most `limit` at a time."""

    def __init__(self, storage: Storage, *, limit: int) -> None:
        self.storage = storage
        self.limiter = anyio.CapacityLimiter(limit)

    async def _run(self, call: Callable[[*Args], T], *args: *Args) -> T:
        return await anyio.to_thread.run_sync(call, *args, limiter=self.limiter)

    async def upload(self, name: str, chunks: AsyncIterator[bytes], *, content_type: str) -> int:
        """Stream `chunks` to a new object with at most UPLOAD_CHUNK bytes in memory; returns the size.

        No bytes: returns 0 and creates nothing. If `chunks` raises (too large, client gone) or the upload
        fails, the partial object is deleted and the error re-raised.
        """
        upload = _Upload(self.storage, name, content_type)
        pending = bytearray()
        size = 0
        try:
            async for chunk in chunks:
                pending += chunk
                size += len(chunk)
                if len(pending) >= UPLOAD_CHUNK:
                    await self._run(upload.write, bytes(pending))
                    pending.clear()
            if pending:
                await self._run(upload.write, bytes(pending))
            await self._run(upload.close)
        except BaseException:
            # Shielded: the partial object is removed even when the request is being cancelled.
            with anyio.CancelScope(shield=True):
                if await self._run(upload.abort):
                    await self.delete(name)
            raise
        return size

    async def stream(self, name: str) -> AsyncIterator[bytes]:
        """Chunks of an object; the thread is held only while a chunk is read, never while the client reads."""
        reader = await self._run(self.storage.reader, name)
        try:
            while chunk := await self._run(reader.read, _CHUNK):
                yield chunk
        finally:
            with anyio.CancelScope(shield=True):
                await self._run(reader.close)

    async def delete(self, name: str) -> None:
        await self._run(self.storage.delete, name)
