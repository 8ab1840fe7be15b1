"""Bucket services: object storage behind a small interface, and ``open_bucket(url)``.

Keys are relative ``/``-separated paths (see :mod:`simpletasks.keys`), resolved under the
URL's prefix: with ``s3://data/run1`` the key ``a/b.dat`` is the object ``run1/a/b.dat`` in
bucket ``data``. Writes are whole: a reader never sees half an object. Downloads are verified
(size, and a checksum where the backend offers one) before they are handed over.

Backends, one module each, are picked by URL scheme: ``s3://bucket/prefix``,
``gs://bucket/prefix``, ``file:///dir`` and ``mem://name``; more can be added with
:func:`register_bucket_backend`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, Protocol, runtime_checkable

from simpletasks.errors import ConfigError, InvalidKey
from simpletasks.keys import validate_key
from simpletasks.urls import BUCKET_BACKENDS, open_backend, register_bucket_backend


@runtime_checkable
class BucketService(Protocol):
    """What the datasource needs from object storage. Every backend implements exactly this."""

    url: str

    def download(self, key: str, path: Path) -> None:
        """Write the object ``key`` to the local file ``path``, whole and verified.

        ``path`` appears only once the download is complete and verified.

        Raises:
            KeyNotFound: If the object does not exist.
            IntegrityError: If the bytes received do not match the object's size/checksum.
        """
        ...

    def upload(self, path: Path, key: str) -> None:
        """Store the local file ``path`` as object ``key`` (replacing it whole)."""
        ...

    def download_fileobj(self, key: str, fileobj: BinaryIO) -> None:
        """Write the object ``key`` into a binary file object (a stream).

        Raises:
            KeyNotFound: If the object does not exist.
        """
        ...

    def upload_fileobj(self, fileobj: BinaryIO, key: str) -> None:
        """Store everything readable from a binary file object as object ``key``."""
        ...

    def exists(self, key: str) -> bool:
        """Return whether object ``key`` exists."""
        ...

    def delete(self, key: str) -> None:
        """Delete object ``key``; deleting a missing key is not an error."""
        ...

    def list(self, prefix: str = "") -> Iterator[str]:
        """Yield the keys that start with ``prefix``, in lexicographic order."""
        ...


@runtime_checkable
class Presigning(Protocol):
    """An optional extra of a bucket backend: short-lived direct download links.

    S3 (always) and GCS (with credentials that can sign, such as a service account key)
    offer it; the job service redirects result links to such a URL and streams the object
    itself from a bucket without it.
    """

    def presigned_url(self, key: str, seconds: int) -> str | None:
        """Return a URL that lets anyone GET object ``key`` for ``seconds``, or ``None``
        when these credentials cannot sign one.

        Raises:
            ValueError: If ``key`` is not a valid key or ``seconds`` is not positive.
        """
        ...


#: Longest life of a presigned link: SigV4 (S3) and V4 (GCS) signatures allow 7 days.
MAX_LINK_SECONDS = 7 * 24 * 3600


def check_link_seconds(seconds: int) -> None:
    """Raise ``ValueError`` unless ``seconds`` is a whole number in 1..:data:`MAX_LINK_SECONDS`."""
    if isinstance(seconds, bool) or not isinstance(seconds, int):
        raise ValueError(f"link lifetime must be whole seconds, got {seconds!r}")
    if not 0 < seconds <= MAX_LINK_SECONDS:
        raise ValueError(
            f"link lifetime must be 1..{MAX_LINK_SECONDS} seconds (7 days), got {seconds}"
        )


def split_bucket_url(url: str, scheme: str, service: str) -> tuple[str, str]:
    """Split ``scheme://bucket[/prefix]`` into ``(bucket, prefix)``; the prefix has no end slash.

    Args:
        url: The URL to split.
        scheme: The scheme it must have (``"s3"``, ``"gs"``).
        service: How to name the service in errors (``"S3"``, ``"GCS"``).

    Raises:
        ConfigError: If ``url`` has another scheme or no bucket name, or its prefix is not a
            safe key.
    """
    form = f"{scheme}://bucket[/prefix]"
    article = "an" if service[:1] in "AEFHILMNORSX" else "a"  # an S3, a GCS
    found, sep, rest = url.partition("://") if isinstance(url, str) else ("", "", "")
    if not sep or found.lower() != scheme:
        raise ConfigError(f"not {article} {service} bucket URL: {url!r}; expected {form}")
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise ConfigError(f"{service} URL {url!r} has no bucket name; expected {form}")
    prefix = prefix.rstrip("/")
    if prefix:
        try:
            validate_key(prefix, what="prefix")
        except InvalidKey as exc:
            raise ConfigError(f"{service} URL {url!r} has an unsafe prefix: {exc}") from None
    return bucket, prefix


def open_bucket(url: str, *, create: bool = False, **kwargs: Any) -> BucketService:
    """Open the bucket that ``url`` names, choosing the backend by scheme.

    Args:
        url: ``s3://bucket[/prefix]``, ``gs://bucket[/prefix]``, ``file:///absolute/dir``
            or ``mem://name[/prefix]`` (or a scheme added with :func:`register_bucket_backend`).
        create: Create the bucket (the directory, for ``file://``) if it does not exist.
            Without it a missing bucket is an error that says how to create it.
        **kwargs: Passed to the backend's ``from_url`` (for example ``client=`` for S3).

    Raises:
        UnsupportedScheme: For an unknown scheme (the message lists the known ones).
        MissingDependency: If the backend's optional package is missing.
        ConfigError: If the bucket does not exist and ``create`` is false.
    """
    if create:
        kwargs["create"] = True
    bucket: BucketService = open_backend(url, BUCKET_BACKENDS, "bucket", **kwargs)
    return bucket


__all__ = ["BucketService", "open_bucket", "register_bucket_backend", "split_bucket_url"]
