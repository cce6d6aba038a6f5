"""Cloud Storage: attachments and reports live in the bucket named by STORAGE_BUCKET, never on local disk.

google-cloud-storage is a blocking client. The worker calls `Storage` from its threads; the web process uses
`AsyncStorage`, which runs each blocking call in a worker thread under a capacity limiter, so the event loop
never waits on the bucket and a burst of transfers cannot take every thread.

The client library is imported on first use, not at start-up: with google-api-core and google-auth it is about
a third of a process's start (0.4-0.5 s of CPU), which a cold instance would spend before its first request even
though most requests never touch the bucket. The first transfer in a process pays it instead, and a client that
cannot be built fails that transfer (503), not the start.
"""

from __future__ import annotations

import contextlib
import functools
import gc
from collections.abc import AsyncIterator, Callable, Iterator
from typing import IO, TYPE_CHECKING, Any, TypeVar, TypeVarTuple

import anyio
import anyio.to_thread

from alle.config import Settings
from alle.logs import get_logger

if TYPE_CHECKING:
    from google.api_core.retry import Retry
    from google.cloud.storage import Bucket

log = get_logger(__name__)

_CHUNK = 256 * 1024
#: Bytes buffered per upload before they go to Cloud Storage (resumable chunks are multiples of 256 KiB).
UPLOAD_CHUNK = 4 * _CHUNK

#: Seconds one HTTP request to the bucket may take (connect, then between bytes), and seconds of retrying
#: before a call gives up. The library's defaults (60 s, 120 s) held a dead bucket's requests for minutes; with
#: these a failed transfer, and the cleanup after it, are answered within 15 s.
REQUEST_TIMEOUT = 4.0
RETRY_SECONDS = 5.0

T = TypeVar("T")
Args = TypeVarTuple("Args")


class Storage:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @functools.cached_property
    def bucket(self) -> Bucket:
        """Built on first use (see the module's docstring); a failure here is a failed call like any other."""
        from google.cloud import storage

        # STORAGE_EMULATOR_HOST, when set, points the client at an emulator with anonymous credentials.
        bucket = storage.Client(project=self.settings.GOOGLE_CLOUD_PROJECT).bucket(self.settings.STORAGE_BUCKET)
        # The library's modules live as long as the process: frozen with the start-up heap (alle.api.app,
        # settle_heap), so full collections do not walk them.
        gc.freeze()
        return bucket

    @functools.cached_property
    def retry(self) -> Retry:
        from google.cloud.storage.retry import DEFAULT_RETRY

        retry: Retry = DEFAULT_RETRY.with_timeout(RETRY_SECONDS)
        return retry

    def writer(self, name: str, *, content_type: str) -> IO[bytes]:
        """A resumable upload fed chunk by chunk; the object appears when the writer is closed (or collected)."""
        blob = self.bucket.blob(name)
        writer: IO[bytes] = blob.open(
            "wb",
            chunk_size=UPLOAD_CHUNK,
            content_type=content_type,
            if_generation_match=0,
            timeout=REQUEST_TIMEOUT,
            retry=self.retry,
        )
        return writer

    def reader(self, name: str) -> IO[bytes]:
        reader: IO[bytes] = self.bucket.blob(name).open(
            "rb", chunk_size=_CHUNK, timeout=REQUEST_TIMEOUT, retry=self.retry
        )
        return reader

    def upload_text(self, name: str, text: str, *, content_type: str) -> None:
        self.bucket.blob(name).upload_from_string(
            text, content_type=content_type, timeout=REQUEST_TIMEOUT, retry=self.retry
        )

    def stream(self, name: str) -> Iterator[bytes]:
        with self.reader(name) as reader:
            while chunk := reader.read(_CHUNK):
                yield chunk

    def delete(self, name: str) -> None:
        """Deleting an object that is already gone is success: callers may retry."""
        from google.api_core.exceptions import NotFound

        with contextlib.suppress(NotFound):
            self.bucket.blob(name).delete(timeout=REQUEST_TIMEOUT, retry=self.retry)


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
        """Cancel after a failure; True when an object may exist, for the caller to delete (the final chunk
        may have landed before the error). Closing instead would finalise the partial upload as an object, or,
        after a failed close, raise "Stream is already exhausted" in place of the real error.

        BlobWriter.terminate() does this with the transport's 120 s default timeout, so its two steps are
        taken here with REQUEST_TIMEOUT. An upload whose resumable session was never opened (the bucket was
        down from the start) sent no bytes, so no object can exist: nothing is deleted, and the client is not
        kept waiting another RETRY_SECONDS for a delete that a dead bucket refuses too.
        """
        writer: Any = self.writer
        if writer is None:
            return False
        session = writer._upload_and_transport
        try:
            if session:
                upload, transport = session
                transport.delete(upload.upload_url, timeout=REQUEST_TIMEOUT)
        except Exception as error:  # noqa: BLE001 - the error being handled is the one to report
            log.warning("could not cancel an upload", object_name=self.name, error=repr(error))
        finally:
            writer._buffer.close()  # nothing is finalised when it is collected
        return session is not None


#: Types served back as stored; anything else is stored and served as application/octet-stream, so an upload
#: cannot become a page (text/html, image/svg+xml) on this origin. Parameters (charset) are dropped.
ATTACHMENT_TYPES = frozenset(
    {
        "application/json",
        "application/msword",
        "application/pdf",
        "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "application/zip",
        "audio/mpeg",
        "image/gif",
        "image/jpeg",
        "image/png",
        "image/webp",
        "text/csv",
        "text/plain",
        "video/mp4",
    }
)
OCTET_STREAM = "application/octet-stream"


def attachment_type(declared: str | None) -> str:
    """The declared media type if it is on the allow-list, else application/octet-stream."""
    media_type = (declared or "").split(";", 1)[0].strip().lower()
    return media_type if media_type in ATTACHMENT_TYPES else OCTET_STREAM


class StorageUnavailableError(Exception):
    """The bucket could not be reached, or failed, within the bounded timeouts; the cause is chained."""


class AsyncStorage:
    """The web process's view of the bucket: every blocking call in a thread, at most `limit` at a time."""

    def __init__(self, storage: Storage, *, limit: int) -> None:
        self.storage = storage
        self.limiter = anyio.CapacityLimiter(limit)

    async def _run(self, call: Callable[[*Args], T], *args: *Args) -> T:
        try:
            return await anyio.to_thread.run_sync(call, *args, limiter=self.limiter)
        except Exception as error:
            raise StorageUnavailableError(f"{type(error).__name__}: {error}") from error

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
                    await self._delete_orphan(name)
            raise
        return size

    async def stream(self, name: str) -> AsyncIterator[bytes]:
        """Chunks of an object, the first already read: a bucket that fails before any byte fails here, while
        the caller can still answer 503. The thread is held only while a chunk is read, never while the
        client reads; a failure after the first chunk raises mid-body, so the connection is aborted."""
        reader = await self._run(self.storage.reader, name)
        try:
            first = await self._run(reader.read, _CHUNK)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._run(reader.close)
            raise
        return self._rest(reader, first)

    async def _rest(self, reader: IO[bytes], first: bytes) -> AsyncIterator[bytes]:
        try:
            chunk = first
            while chunk:
                yield chunk
                chunk = await self._run(reader.read, _CHUNK)
        finally:
            with anyio.CancelScope(shield=True):
                await self._run(reader.close)

    async def delete(self, name: str) -> None:
        await self._run(self.storage.delete, name)

    async def _delete_orphan(self, name: str) -> None:
        """After a failed upload: a bucket that is down cannot be cleaned now, so the orphan is logged by name."""
        try:
            await self.delete(name)
        except StorageUnavailableError as error:
            log.error("could not delete a partial upload; delete it by hand", object_name=name, error=str(error))
