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

The bucket backends' public API has no copy or storage class yet, so this module uses the
backends' clients (``S3Bucket.client``/``.bucket``/``.prefix``, ``GCSBucket.client``/
``.name``/``.prefix``) directly.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from simpletasks.buckets import BucketService, open_bucket
from simpletasks.tasks.tiering.config import Tier, TierConfig

logger = logging.getLogger(__name__)

BucketOpener = Callable[[str], BucketService]


def _full_key(bucket: Any, key: str) -> str:
    prefix = str(getattr(bucket, "prefix", "") or "").strip("/")
    return f"{prefix}/{key}" if prefix else key


def _kind(bucket: Any) -> str:
    return type(bucket).__name__


def _s3_endpoint(bucket: Any) -> str | None:
    return getattr(getattr(bucket.client, "meta", None), "endpoint_url", None)


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

    def remove(self, storage_url: str, key: str) -> None:
        """Delete ``key`` from the tier whose copy is at ``storage_url`` (if it is a tier)."""
        for tier in self.config.tiers.values():
            if self.storage_url(tier, key) == storage_url:
                self.bucket(tier).delete(key)
                return
        logger.warning("old copy %s is in no configured tier; left in place", storage_url)

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


__all__ = ["BucketOpener", "TierTargets"]
