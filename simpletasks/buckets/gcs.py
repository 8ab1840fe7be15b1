"""Google Cloud Storage as a bucket: ``gs://bucket[/prefix]``.

Transfers use google-cloud-storage: small files in one request, files above 8 MiB as a
resumable upload (in chunks of ``chunk_size`` if set). Idempotent requests (metadata, reads,
listing, delete) are retried by the library's default policy; uploads are retried too, since
each one replaces a whole object with the same bytes. Credentials and project come from the
usual Google settings (Application Default Credentials, a VM's service account), read by the
library; ``STORAGE_EMULATOR_HOST`` points it at an emulator. A ready client can be injected
with ``client=``.

Downloads are verified: the bytes written must have the object's CRC32C, which we compute
ourselves while writing (the library skips its own check for chunked downloads and after a
resumed, ranged retry). Without ``chunk_size`` a download is one GET, checked against the
CRC32C in its answer's ``X-Goog-Hash`` header (a resumed retry reads the same generation),
sent through urllib3 rather than the library where it can be (:mod:`._gcs_media`: a third of
the CPU per request; the library's endpoint, credentials and retry policy);
with ``chunk_size``, or when an answer carries no hash, the object's metadata is read and
the bytes must have its size and CRC32C too, the download pinned to that generation.
Downloads are raw: an object stored gzip-encoded arrives as stored, not decompressed.
Uploads send a CRC32C that the server checks.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, Protocol, cast
from urllib.parse import urlsplit

import google.auth.credentials
import google.auth.exceptions
import google_crc32c
from google.api_core import exceptions as gexc
from google.cloud import storage
from google.cloud.storage.exceptions import DataCorruption
from google.cloud.storage.retry import DEFAULT_RETRY

from simpletasks.buckets import check_link_seconds, split_bucket_url
from simpletasks.buckets._gcs_media import MediaReader, ResumeError
from simpletasks.buckets.file import NewFile, atomic_path, validate_prefix
from simpletasks.endpoints import unreachable
from simpletasks.errors import (
    ConfigError,
    CredentialsError,
    IntegrityError,
    KeyNotFound,
    ServiceUnavailable,
)
from simpletasks.keys import is_valid_key, validate_key
from simpletasks.urls import create_hint

logger = logging.getLogger(__name__)

MiB = 1024 * 1024
_CHUNK_QUANTUM = 256 * 1024  # GCS resumable chunks must be multiples of 256 KiB
_DOWNLOAD_ATTEMPTS = 3  # the object may be replaced between metadata and media reads
_NOT_MADE = object()


def make_client(
    *, project: str | None = None, endpoint: str | None = None, credentials: Any = None
) -> storage.Client:
    """Return a storage client.

    Args:
        project: Project for bucket creation; inferred from the credentials if ``None``.
        endpoint: API endpoint override (for example ``http://127.0.0.1:4443``).
        credentials: ``google.auth`` credentials; Application Default Credentials if ``None``
            (``google.auth.credentials.AnonymousCredentials()`` for an emulator).

    Raises:
        CredentialsError: If no credentials are given or found.
        ConfigError: If no project is given or found.
    """
    options = {"api_endpoint": endpoint} if endpoint else None
    try:
        return storage.Client(project=project, credentials=credentials, client_options=options)
    except google.auth.exceptions.DefaultCredentialsError as exc:
        first = str(exc).split(". ")[0].rstrip(".")
        raise CredentialsError(
            f"no Google credentials for GCS ({first}); set GOOGLE_APPLICATION_CREDENTIALS to a "
            "service account key file, run `gcloud auth application-default login`, run on a "
            "VM with a service account, or for an emulator set STORAGE_EMULATOR_HOST"
        ) from None
    except OSError as exc:  # "Project was not passed and could not be determined..."
        raise ConfigError(
            f"no Google Cloud project for GCS ({exc}); pass project= or set GOOGLE_CLOUD_PROJECT"
        ) from None


def parse_gs_url(url: str) -> tuple[str, str]:
    """Split ``gs://bucket[/prefix]`` into ``(bucket, prefix)`` (see :func:`split_bucket_url`)."""
    return split_bucket_url(url, "gs", "GCS")


class _Stream(Protocol):
    """What a download writes into: a binary file object, or a :class:`NewFile`."""

    def write(self, data: bytes, /) -> int: ...
    def seekable(self) -> bool: ...
    def tell(self) -> int: ...
    def seek(self, offset: int, /) -> int: ...
    def truncate(self) -> int: ...


class _VerifyingWriter:
    """A write-only stream that passes bytes on and keeps their count and CRC32C."""

    def __init__(self, dest: _Stream, start: int | None = None) -> None:
        self._dest = dest
        if start is None:  # (known for a file we just opened: no system calls to ask)
            start = dest.tell() if dest.seekable() else 0
        self._start = start
        self._crc = google_crc32c.Checksum()
        self.size = 0

    def write(self, data: bytes) -> int:
        self._crc.update(data)
        self.size += len(data)
        return self._dest.write(data)

    def rewind(self) -> bool:
        """Forget what was written, to write it again; return False if ``dest`` cannot seek."""
        if self.size and not self._dest.seekable():
            return False
        if self.size:
            self._dest.seek(self._start)
            self._dest.truncate()
        self._crc = google_crc32c.Checksum()
        self.size = 0
        return True

    def digest(self) -> str:
        """The CRC32C of the bytes written, base64 as in GCS metadata."""
        return base64.b64encode(self._crc.digest()).decode("ascii")


class GCSBucket:
    """Objects in one Google Cloud Storage bucket, under an optional key prefix.

    Args:
        bucket: The bucket's name.
        prefix: Keys are stored under ``prefix/`` (empty for none).
        client: A ``google.cloud.storage.Client`` (see :func:`make_client`).
        chunk_size: Chunk size in bytes for resumable uploads and for downloads (a multiple
            of 256 KiB); ``None`` for the library's defaults (100 MiB upload chunks, a
            download in one request).
        create: Create the bucket if it does not exist.

    Raises:
        ConfigError: If the bucket does not exist and ``create`` is false, or ``chunk_size``
            is not a positive multiple of 256 KiB.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        client: storage.Client,
        chunk_size: int | None = None,
        create: bool = False,
    ) -> None:
        if chunk_size is not None and (chunk_size <= 0 or chunk_size % _CHUNK_QUANTUM):
            raise ConfigError(
                f"GCS chunk_size must be a positive multiple of 256 KiB, got {chunk_size}"
            )
        self.name = bucket
        self.prefix = prefix.strip("/")
        self.client = client
        self.chunk_size = chunk_size
        self.url = f"gs://{bucket}/{self.prefix}" if self.prefix else f"gs://{bucket}"
        self._base = f"{self.prefix}/" if self.prefix else ""
        self._bucket = client.bucket(bucket)
        self._media: object = _NOT_MADE
        self._media_lock = threading.Lock()
        self._check_bucket(create)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        client: storage.Client | None = None,
        project: str | None = None,
        endpoint: str | None = None,
        credentials: Any = None,
        chunk_size: int | None = None,
        create: bool = False,
    ) -> GCSBucket:
        """Open ``gs://bucket[/prefix]``.

        Args:
            url: The bucket URL.
            client: A ready storage client; otherwise one is made by :func:`make_client`.
            project: Project for the new client (used when creating the bucket).
            endpoint: API endpoint for the new client (an emulator or a private endpoint).
            credentials: Credentials for the new client.
            chunk_size: See :class:`GCSBucket`.
            create: Create the bucket if it does not exist.

        Raises:
            ConfigError: If the URL is malformed, ``client`` is combined with
                ``project``/``endpoint``/``credentials``, or the bucket does not exist.
        """
        bucket, prefix = parse_gs_url(url)
        if client is not None and (project, endpoint, credentials) != (None, None, None):
            raise ConfigError(
                "pass either client= or project=/endpoint=/credentials= to GCSBucket, not both"
            )
        if client is None:
            client = make_client(project=project, endpoint=endpoint, credentials=credentials)
        return cls(bucket, prefix, client=client, chunk_size=chunk_size, create=create)

    def __repr__(self) -> str:
        return f"GCSBucket({self.url!r})"

    def _probe(self) -> None:
        """Fail in seconds if the endpoint does not answer (the library retries for minutes)."""
        endpoint = str(getattr(self.client, "api_endpoint", "") or "")
        parts = urlsplit(endpoint)
        if not parts.hostname:
            return
        port = parts.port or (443 if parts.scheme == "https" else 80)
        reason = unreachable(parts.hostname, port)
        if reason is not None:
            raise ServiceUnavailable(
                f"cannot reach GCS at {endpoint} for {self.url}: {reason}. Check the endpoint "
                "(STORAGE_EMULATOR_HOST or endpoint=) and the network, and that an emulator "
                "runs there (`simpletasks local --stack`)"
            )

    def _check_bucket(self, create: bool) -> None:
        self._probe()
        try:
            if self._bucket.exists():
                return
        except gexc.Forbidden:
            logger.warning(
                "cannot check that GCS bucket %r exists (permission denied); going on", self.name
            )
            return
        if not create:
            raise ConfigError(
                f"GCS bucket {self.name!r} does not exist ({self.url}); "
                f"{create_hint(self.url, 'bucket')}"
            )
        try:
            self.client.create_bucket(self.name)
            logger.info("created GCS bucket %r", self.name)
        except gexc.Conflict:  # created meanwhile by someone else
            pass

    def _name(self, key: str) -> str:
        validate_key(key)
        return self._base + key

    def _blob(self, key: str) -> storage.Blob:
        return self._bucket.blob(self._name(key), chunk_size=self.chunk_size)

    def _missing(self, key: str) -> KeyNotFound:
        return KeyNotFound(f"no object {key!r} in {self.url}")

    def download(self, key: str, path: Path) -> None:
        """Download object ``key`` to ``path``, whole and verified.

        Raises:
            KeyNotFound: If the object (or the bucket) does not exist.
            IntegrityError: If the file's size or CRC32C differs from the object's.
        """
        name = self._name(key)
        with atomic_path(Path(path)) as tmp, NewFile(tmp) as f:
            size = self._download_verified(key, name, f, start=0)
        logger.debug("downloaded %s/%s to %s (%d bytes)", self.url, key, path, size)

    def download_fileobj(self, key: str, fileobj: BinaryIO) -> None:
        """Write object ``key`` into ``fileobj``, verified as :meth:`download` is.

        On an :class:`~simpletasks.errors.IntegrityError` the bad bytes have been written.

        Raises:
            KeyNotFound: If the object (or the bucket) does not exist.
            IntegrityError: If the bytes' size or CRC32C differs from the object's.
        """
        self._download_verified(key, self._name(key), fileobj)

    def _download_verified(
        self, key: str, name: str, dest: _Stream, start: int | None = None
    ) -> int:
        """Download the current generation of object ``name`` into ``dest`` (at ``start``, if
        known); return its size."""
        if self.chunk_size is None:
            size = self._download_one_request(key, name, dest, start)
            if size is not None:
                return size
        return self._download_pinned(key, name, dest, start)

    def _download_one_request(
        self, key: str, name: str, dest: _Stream, start: int | None
    ) -> int | None:
        """Download in one GET, checked against the CRC32C its answer carries (``X-Goog-Hash``).

        The GET goes through :class:`~simpletasks.buckets._gcs_media.MediaReader` (urllib3)
        where it can, else through the library.

        One GET serves one generation (a resumed retry asks for the rest of the same one),
        and the library reads that generation and its hashes from the answer's headers. If
        the answer has no CRC32C, the object's metadata is read instead and the bytes are
        checked against it if it is still the generation served; otherwise ``dest`` is
        rewound and ``None`` returned (then :meth:`_download_pinned` runs).
        """
        writer = _VerifyingWriter(dest, start)
        reader = self._media_reader()
        try:
            if reader is not None:
                answer = reader.read(self.name, name, writer)
                crc32c, served = answer.crc32c, answer.generation
            else:
                blob = self._bucket.blob(name)
                blob.download_to_file(writer, raw_download=True, checksum=None)
                crc32c, served = blob.crc32c, blob.generation
        except gexc.NotFound:
            raise self._missing(key) from None
        except ResumeError as exc:
            raise IntegrityError(f"{self.url}: object {key!r}: {exc}") from None
        if crc32c is not None:
            self._check(key, writer, None, crc32c)
            return writer.size
        meta = self._bucket.get_blob(name)
        if meta is None or served is None or int(meta.generation or 0) != int(served):
            if writer.rewind():  # replaced or deleted since: read it again, pinned
                logger.debug("%s/%s changed during download; again", self.url, key)
                return None
            raise IntegrityError(f"{self.url}: object {key!r} changed during download")
        self._check(key, writer, int(meta.size or 0), meta.crc32c)
        return writer.size

    def _media_reader(self) -> MediaReader | None:
        """The client's :class:`MediaReader` (made at the first download), or None."""
        if self._media is _NOT_MADE:
            with self._media_lock:
                if self._media is _NOT_MADE:
                    self._media = MediaReader.for_client(self.client)
        return cast("MediaReader | None", self._media)

    def _download_pinned(self, key: str, name: str, dest: _Stream, start: int | None) -> int:
        """Read the metadata, then download that generation (chunked, if ``chunk_size``)."""
        for attempt in range(1, _DOWNLOAD_ATTEMPTS + 1):
            # Size, CRC32C and generation; the download is pinned to that generation (GCS
            # answers 412 if it was replaced; fake-gcs-server ignores the condition).
            blob = self._bucket.get_blob(name, chunk_size=self.chunk_size)
            if blob is None:
                raise self._missing(key)
            writer = _VerifyingWriter(dest, start)
            try:
                blob.download_to_file(
                    writer, raw_download=True, checksum=None, if_generation_match=blob.generation
                )
            except (gexc.NotFound, gexc.PreconditionFailed) as exc:
                # That generation was replaced or deleted after we read its metadata.
                if attempt < _DOWNLOAD_ATTEMPTS and writer.rewind():
                    logger.debug("%s/%s changed during download; again", self.url, key)
                    continue
                if isinstance(exc, gexc.NotFound):
                    raise self._missing(key) from None
                raise IntegrityError(
                    f"{self.url}: object {key!r} kept changing during download"
                ) from None
            self._check(key, writer, int(blob.size or 0), blob.crc32c)
            return writer.size
        raise self._missing(key)  # pragma: no cover - the loop returns or raises

    def _check(
        self, key: str, writer: _VerifyingWriter, size: int | None, crc32c: str | None
    ) -> None:
        """Raise IntegrityError unless the bytes written have ``size`` and ``crc32c`` (if
        known)."""
        if size is not None and writer.size != size:
            raise IntegrityError(
                f"{self.url}: object {key!r} size mismatch: expected {size} "
                f"bytes, got {writer.size}"
            )
        got_crc = writer.digest()
        if crc32c is not None and got_crc != crc32c:
            raise IntegrityError(
                f"{self.url}: object {key!r} CRC32C mismatch: expected {crc32c}, got {got_crc}"
            )

    def upload(self, path: Path, key: str) -> None:
        """Upload the local file ``path`` as object ``key`` (resumable above 8 MiB).

        Raises:
            IntegrityError: If the server's CRC32C of the stored object differs from ours.
        """
        blob = self._blob(key)
        try:
            blob.upload_from_filename(str(path), checksum="crc32c", retry=DEFAULT_RETRY)
        except DataCorruption as exc:
            raise IntegrityError(f"{self.url}: upload of {key!r} was corrupted: {exc}") from None
        logger.debug("uploaded %s to %s/%s", path, self.url, key)

    def upload_fileobj(self, fileobj: BinaryIO, key: str) -> None:
        """Upload everything readable from ``fileobj`` as object ``key``.

        Raises:
            IntegrityError: If the server's CRC32C of the stored object differs from ours.
        """
        blob = self._blob(key)
        try:
            blob.upload_from_file(fileobj, checksum="crc32c", retry=DEFAULT_RETRY)
        except DataCorruption as exc:
            raise IntegrityError(f"{self.url}: upload of {key!r} was corrupted: {exc}") from None

    def exists(self, key: str) -> bool:
        """Return whether object ``key`` exists."""
        return bool(self._blob(key).exists())

    def delete(self, key: str) -> None:
        """Delete object ``key``; a missing key (or bucket) is fine."""
        blob = self._blob(key)
        with contextlib.suppress(gexc.NotFound):
            blob.delete()

    def presigned_url(self, key: str, seconds: int) -> str | None:
        """Return a V4 signed GET URL of object ``key``, valid for ``seconds``.

        Signed locally with the client's credentials when they hold a key (a service
        account key file, impersonated credentials); ``None`` for credentials that cannot
        sign here (a VM's metadata-server identity, user or anonymous credentials), and the
        caller streams the object instead. The URL points at the client's API endpoint (an
        emulator's too). No request is made; the object need not exist yet.

        Raises:
            ValueError: If ``key`` is invalid or ``seconds`` is not positive.
        """
        check_link_seconds(seconds)
        name = self._name(key)
        credentials = getattr(self.client, "_credentials", None)
        if not isinstance(credentials, google.auth.credentials.Signing):
            logger.debug("%s: credentials cannot sign links; %s is streamed", self.url, key)
            return None
        url: str = self._bucket.blob(name).generate_signed_url(
            version="v4",
            expiration=datetime.timedelta(seconds=seconds),
            method="GET",
            credentials=credentials,
            api_access_endpoint=self.client.api_endpoint,
        )
        return url

    def list(self, prefix: str = "") -> Iterator[str]:
        """Yield the keys that start with ``prefix``, in order, relative to the URL's prefix.

        Objects whose names are not valid keys (folder markers such as ``dir/``, ``a//b``)
        are skipped.

        Raises:
            KeyNotFound: If the bucket does not exist (raised on iteration).
        """
        validate_prefix(prefix)
        return self._iter_keys(prefix)

    def _iter_keys(self, prefix: str) -> Iterator[str]:
        blobs = self.client.list_blobs(self.name, prefix=self._base + prefix)
        try:
            for blob in blobs:  # GCS lists names in lexicographic order
                key = str(blob.name)[len(self._base) :]
                if not is_valid_key(key):
                    logger.debug("skipping object %r: not a valid key", blob.name)
                    continue
                yield key
        except gexc.NotFound:
            raise KeyNotFound(
                f"cannot list {self.url}: bucket {self.name!r} does not exist"
            ) from None


__all__ = ["GCSBucket", "make_client", "parse_gs_url"]
