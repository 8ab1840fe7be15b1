"""Placing an image in its tier: a server-side copy where it can be, else an upload.

Each tier is a bucket URL (``s3://``, ``gs://``, ``file://``, ``mem://``) and an optional
storage class. :meth:`TierTargets.place` stores the object under the *same key* in the tier's
bucket (below the tier URL's prefix), so placing it twice leaves one copy:

- S3 to S3 on the same endpoint: ``CopyObject`` (multipart copy above 8 MiB) with the
  ``StorageClass``, server-side; nothing goes through the worker.
- GCS to GCS: a ``rewrite`` into a blob whose ``storage_class`` is set, server-side.
- Anything else (file://, across backends or endpoints): an upload of the worker's cached
  copy, with the storage class as an S3 ``StorageClass`` argument or the GCS blob's
  ``storage_class``.

The bucket backends' public API has no copy, storage class or object size yet, so this
module uses the backends' clients (``S3Bucket.client``/``.bucket``/``.prefix``,
``GCSBucket.client``/``.name``/``.prefix``, ``FileBucket.root``) directly.

For move mode (``move: true``), :meth:`TierTargets.stored_size` checks a placed copy before
the source is deleted, and :func:`overlaps` finds a tier that shares objects with the source
bucket (moving an image there could delete its only copy).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from simpletasks.buckets import BucketService, open_bucket
from simpletasks.errors import KeyNotFound
from simpletasks.tasks.tiering.config import Tier, TierConfig
from simpletasks.urls import parse_file_url

logger = logging.getLogger(__name__)

BucketOpener = Callable[[str], BucketService]


def _full_key(bucket: Any, key: str) -> str:
    prefix = str(getattr(bucket, "prefix", "") or "").strip("/")
    return f"{prefix}/{key}" if prefix else key


def _kind(bucket: Any) -> str:
    return type(bucket).__name__


def _s3_endpoint(bucket: Any) -> str | None:
    return getattr(getattr(bucket.client, "meta", None), "endpoint_url", None)


def _location(url: str) -> tuple[str, tuple[str, ...]]:
    """A bucket URL as ``(scheme, path parts)``: bucket then prefix, or a resolved directory."""
    scheme, _, rest = url.partition("://")
    scheme = scheme.lower()
    if scheme == "file":
        rest = os.path.realpath(parse_file_url(url, "bucket"))
    return scheme, tuple(part for part in rest.split("/") if part)


def overlaps(url_a: str, url_b: str) -> bool:
    """Whether two bucket URLs can name the same objects.

    True when both have the same scheme and bucket and one's prefix is the other's or starts
    with it (``s3://b/in`` and ``s3://b/in``, ``s3://b`` and ``s3://b/in/tier``); ``file://``
    directories are compared after resolving symlinks and ``..``. Sibling prefixes
    (``s3://b/ingest`` and ``s3://b/tier-a``) do not overlap. Endpoints are not compared, so
    two services with the same bucket name count as one (the safe answer for moving).
    """
    scheme_a, parts_a = _location(url_a)
    scheme_b, parts_b = _location(url_b)
    n = min(len(parts_a), len(parts_b))
    return scheme_a == scheme_b and parts_a[:n] == parts_b[:n]


class _Counter:
    """A binary sink that only counts what is written to it."""

    def __init__(self) -> None:
        self.n = 0

    def write(self, data: bytes) -> int:
        self.n += len(data)
        return len(data)


class TierTargets:
    """A worker's open tier buckets (opened on first use) and the placing logic.

    Args:
        config: The tiering configuration.
        opener: Opens a bucket URL (default :func:`simpletasks.buckets.open_bucket`).
    """

    def __init__(self, config: TierConfig, opener: BucketOpener = open_bucket) -> None:
        self.config = config
        self._opener = opener
        self._buckets: dict[str, BucketService] = {}
        self._lock = threading.Lock()

    def bucket(self, tier: Tier) -> BucketService:
        """The open bucket of ``tier``."""
        with self._lock:
            if tier.name not in self._buckets:
                self._buckets[tier.name] = self._opener(tier.url)
            return self._buckets[tier.name]

    def storage_url(self, tier: Tier, key: str) -> str:
        """Where ``key`` is stored in ``tier``."""
        return f"{tier.url.rstrip('/')}/{key}"

    def place(self, tier: Tier, source: BucketService, key: str, local: Path) -> tuple[str, str]:
        """Store object ``key`` of ``source`` (cached at ``local``) in ``tier``.

        Returns:
            ``(storage URL, method)``; method is ``"s3-copy"``, ``"gcs-rewrite"`` or
            ``"upload"``.
        """
        dest = self.bucket(tier)
        method = self._method(source, dest)
        if method == "s3-copy":
            self._s3_copy(source, dest, key, tier.storage_class)
        elif method == "gcs-rewrite":
            self._gcs_rewrite(source, dest, key, tier.storage_class)
        else:
            self._upload(dest, key, local, tier.storage_class)
        logger.debug("placed %s in tier %s (%s)", key, tier.name, method)
        return self.storage_url(tier, key), method

    def tier_of(self, storage_url: str, key: str) -> Tier | None:
        """The configured tier where ``key``'s copy at ``storage_url`` is (``None``: none)."""
        for tier in self.config.tiers.values():
            if self.storage_url(tier, key) == storage_url:
                return tier
        return None

    def remove(self, storage_url: str, key: str) -> None:
        """Delete ``key`` from the tier whose copy is at ``storage_url`` (if it is a tier)."""
        tier = self.tier_of(storage_url, key)
        if tier is None:
            logger.warning("old copy %s is in no configured tier; left in place", storage_url)
            return
        self.bucket(tier).delete(key)

    def stored_size(self, tier: Tier, key: str) -> int | None:
        """The size in bytes of ``key``'s copy in ``tier``, asked of the tier's service.

        S3: ``HeadObject``; GCS: the blob's metadata; ``file://``: the file's size; any other
        backend: the bytes of a download (``mem://`` is in memory anyway).

        Returns:
            The size, or ``None`` if there is no such object.
        """
        dest: Any = self.bucket(tier)
        kind = _kind(dest)
        full = _full_key(dest, key)
        if kind == "S3Bucket":
            from botocore.exceptions import ClientError

            try:
                head = dest.client.head_object(Bucket=dest.bucket, Key=full)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                    return None
                raise
            return int(head["ContentLength"])
        if kind == "GCSBucket":
            blob = dest.client.bucket(dest.name).get_blob(full)
            return None if blob is None else int(blob.size)
        if kind == "FileBucket":
            path = Path(dest.root) / key
            return path.stat().st_size if path.is_file() else None
        counter = _Counter()
        try:
            dest.download_fileobj(key, counter)
        except KeyNotFound:
            return None
        return counter.n

    @staticmethod
    def _method(source: Any, dest: Any) -> str:
        ks, kd = _kind(source), _kind(dest)
        if ks == kd == "S3Bucket" and _s3_endpoint(source) == _s3_endpoint(dest):
            return "s3-copy"
        if ks == kd == "GCSBucket" and source.client is dest.client:
            return "gcs-rewrite"
        return "upload"

    @staticmethod
    def _s3_copy(source: Any, dest: Any, key: str, storage_class: str | None) -> None:
        extra = {"StorageClass": storage_class} if storage_class else {}
        dest.client.copy(
            {"Bucket": source.bucket, "Key": _full_key(source, key)},
            dest.bucket,
            _full_key(dest, key),
            ExtraArgs=extra or None,
            Config=dest.transfer_config,
        )

    @staticmethod
    def _gcs_rewrite(source: Any, dest: Any, key: str, storage_class: str | None) -> None:
        src_blob = source.client.bucket(source.name).blob(_full_key(source, key))
        dst_blob = dest.client.bucket(dest.name).blob(_full_key(dest, key))
        if storage_class:
            dst_blob.storage_class = storage_class
        token, _, _ = dst_blob.rewrite(src_blob)
        while token is not None:
            token, _, _ = dst_blob.rewrite(src_blob, token=token)

    @staticmethod
    def _upload(dest: Any, key: str, local: Path, storage_class: str | None) -> None:
        kind = _kind(dest)
        if storage_class and kind == "S3Bucket":
            dest.client.upload_file(
                str(local),
                dest.bucket,
                _full_key(dest, key),
                ExtraArgs={"StorageClass": storage_class},
                Config=dest.transfer_config,
            )
        elif storage_class and kind == "GCSBucket":
            blob = dest.client.bucket(dest.name).blob(_full_key(dest, key))
            blob.storage_class = storage_class
            blob.upload_from_filename(str(local), checksum="crc32c")
        else:
            dest.upload(local, key)


__all__ = ["BucketOpener", "TierTargets", "overlaps"]
