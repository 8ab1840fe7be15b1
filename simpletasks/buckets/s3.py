"""Amazon S3 (or any S3-compatible store) as a bucket: ``s3://bucket[/prefix]``.

Transfers use boto3's managed transfers (multipart above a threshold, parallel parts), and
the client retries throttling and transient errors itself ("standard" retry mode). The
endpoint and region come from the usual AWS settings (``AWS_ENDPOINT_URL``,
``AWS_DEFAULT_REGION``...), read by boto3; ``endpoint_url=`` and ``region_name=`` override
them, or a ready client can be injected with ``client=``.

Downloads are verified: the file's size must equal the object's ``ContentLength`` and, when
the ETag is a plain MD5 (single-part upload, no SSE-KMS/SSE-C), the file's MD5 must equal it
(computed from the bytes as they are written, for an object below the multipart threshold).
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError

from simpletasks import aws
from simpletasks.buckets import check_link_seconds, split_bucket_url
from simpletasks.buckets.file import NewFile, atomic_path, validate_prefix
from simpletasks.errors import ConfigError, IntegrityError, KeyNotFound
from simpletasks.keys import is_valid_key, validate_key
from simpletasks.urls import create_hint

logger = logging.getLogger(__name__)

MiB = 1024 * 1024
_NOT_FOUND = frozenset({"404", "NoSuchKey", "NoSuchBucket", "NotFound"})
_MD5_ETAG = re.compile(r"^[0-9a-f]{32}$")


def default_transfer_config() -> TransferConfig:
    """Return the transfer settings used unless ``transfer_config=`` is given.

    Multipart above 8 MiB in 8 MiB parts, 10 parts in flight.
    """
    return TransferConfig(
        multipart_threshold=8 * MiB,
        multipart_chunksize=8 * MiB,
        max_concurrency=10,
        use_threads=True,
    )


def make_client(*, endpoint_url: str | None = None, region_name: str | None = None) -> Any:
    """Return an S3 client with our retry and pool settings (see :mod:`simpletasks.aws`)."""
    return aws.make_client("s3", endpoint_url=endpoint_url, region_name=region_name)


def file_md5(path: Path) -> str:
    """Return the hex MD5 digest of the file at ``path``."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "md5").hexdigest()


def _etag(head: dict[str, Any]) -> str:
    return str(head.get("ETag", "")).strip('"').lower()


def _plain_md5(head: dict[str, Any]) -> bool:
    """Whether the object's ETag is its MD5 (single-part upload, no SSE-KMS/SSE-C)."""
    encrypted = str(head.get("ServerSideEncryption", "")).startswith("aws:kms") or bool(
        head.get("SSECustomerAlgorithm")
    )
    return not encrypted and _MD5_ETAG.match(_etag(head)) is not None


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def parse_s3_url(url: str) -> tuple[str, str]:
    """Split ``s3://bucket[/prefix]`` into ``(bucket, prefix)`` (see :func:`split_bucket_url`)."""
    return split_bucket_url(url, "s3", "S3")


class S3Bucket:
    """Objects in one S3 bucket, under an optional key prefix.

    Args:
        bucket: The bucket's name.
        prefix: Keys are stored under ``prefix/`` (empty for none).
        client: A boto3 S3 client (see :func:`make_client`).
        transfer_config: Multipart/concurrency settings; :func:`default_transfer_config`
            if ``None``.
        create: Create the bucket if it does not exist.

    Raises:
        ConfigError: If the bucket does not exist and ``create`` is false.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        client: Any,
        transfer_config: TransferConfig | None = None,
        create: bool = False,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.client = client
        self.transfer_config = transfer_config or default_transfer_config()
        self.url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self._base = f"{self.prefix}/" if self.prefix else ""
        self._check_bucket(create)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        client: Any = None,
        endpoint_url: str | None = None,
        region_name: str | None = None,
        transfer_config: TransferConfig | None = None,
        create: bool = False,
    ) -> S3Bucket:
        """Open ``s3://bucket[/prefix]``.

        Args:
            url: The bucket URL.
            client: A ready boto3 S3 client; otherwise one is made by :func:`make_client`.
            endpoint_url: Endpoint override (for example a moto server or MinIO).
            region_name: Region override.
            transfer_config: Multipart/concurrency settings.
            create: Create the bucket if it does not exist.

        Raises:
            ConfigError: If the URL is malformed, ``client`` is combined with
                ``endpoint_url``/``region_name``, or the bucket does not exist.
        """
        bucket, prefix = parse_s3_url(url)
        if client is not None and (endpoint_url is not None or region_name is not None):
            raise ConfigError(
                "pass either client= or endpoint_url=/region_name= to S3Bucket, not both"
            )
        if client is None:
            client = make_client(endpoint_url=endpoint_url, region_name=region_name)
        return cls(bucket, prefix, client=client, transfer_config=transfer_config, create=create)

    def __repr__(self) -> str:
        return f"S3Bucket({self.url!r})"

    def _check_bucket(self, create: bool) -> None:
        with aws.open_errors(self.client, "S3", self.url):
            self._find_or_create(create)

    def _find_or_create(self, create: bool) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
            return
        except ClientError as exc:
            code = _error_code(exc)
            if code in ("403", "AccessDenied"):
                logger.warning(
                    "cannot check that S3 bucket %r exists (access denied); going on",
                    self.bucket,
                )
                return
            if code not in _NOT_FOUND:
                raise
        if not create:
            raise ConfigError(
                f"S3 bucket {self.bucket!r} does not exist ({self.url}); "
                f"{create_hint(self.url, 'bucket')}"
            )
        kwargs: dict[str, Any] = {"Bucket": self.bucket}
        region = self.client.meta.region_name
        if region and region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
        try:
            self.client.create_bucket(**kwargs)
            logger.info("created S3 bucket %r", self.bucket)
        except ClientError as exc:
            if _error_code(exc) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise

    def _full(self, key: str) -> str:
        validate_key(key)
        return self._base + key

    def _not_found(self, key: str, exc: ClientError) -> KeyNotFound:
        if _error_code(exc) == "NoSuchBucket":
            return KeyNotFound(
                f"no object {key!r} in {self.url}: bucket {self.bucket!r} does not exist"
            )
        return KeyNotFound(f"no object {key!r} in {self.url}")

    def _head(self, key: str, full: str) -> dict[str, Any]:
        try:
            head: dict[str, Any] = self.client.head_object(Bucket=self.bucket, Key=full)
        except ClientError as exc:
            if _error_code(exc) in _NOT_FOUND:
                raise self._not_found(key, exc) from None
            raise
        return head

    def download(self, key: str, path: Path) -> None:
        """Download object ``key`` to ``path``, whole and verified.

        An object up to the multipart threshold comes in one ranged ``GetObject`` (its size
        and ETag from that answer), checked from the bytes as they are written; a larger
        one with a ``HeadObject`` then boto3's managed (multipart, threaded) transfer, and
        the file is read back for its MD5 if the ETag is one.

        Raises:
            KeyNotFound: If the object (or the bucket) does not exist.
            IntegrityError: If the file's size or MD5 differs from the object's.
        """
        full = self._full(key)
        with atomic_path(Path(path)) as tmp:
            size = self._get_small(key, full, tmp)
            if size is None:
                head = self._head(key, full)
                try:
                    self.client.download_file(
                        self.bucket, full, str(tmp), Config=self.transfer_config
                    )
                except ClientError as exc:
                    if _error_code(exc) in _NOT_FOUND:
                        raise self._not_found(key, exc) from None
                    raise
                size = self._verify(key, tmp, head)
        logger.debug("downloaded %s/%s to %s (%d bytes)", self.url, key, path, size)

    def _get_small(self, key: str, full: str, tmp: Path) -> int | None:
        """Write the object to ``tmp`` with one ranged GET if it is below the multipart
        threshold, verified, and return its size; ``None`` (nothing written) if larger."""
        limit = max(1, int(self.transfer_config.multipart_threshold))
        try:
            answer = self.client.get_object(
                Bucket=self.bucket, Key=full, Range=f"bytes=0-{limit - 1}"
            )
        except ClientError as exc:
            if _error_code(exc) in _NOT_FOUND:
                raise self._not_found(key, exc) from None
            if _error_code(exc) == "InvalidRange":  # an empty object: no byte 0
                return None
            raise
        body = answer["Body"]
        total = str(answer.get("ContentRange", "")).rpartition("/")[2]
        size = int(total) if total.isdigit() else int(answer.get("ContentLength", 0))
        if size > limit:
            body.close()
            return None
        md5 = hashlib.md5(usedforsecurity=False) if _plain_md5(answer) else None
        got = 0
        with NewFile(tmp) as f:
            for chunk in body.iter_chunks(1 << 20):
                f.write(chunk)
                got += len(chunk)
                if md5 is not None:
                    md5.update(chunk)
        self._check(key, answer, size, got, None if md5 is None else md5.hexdigest())
        return size

    def _verify(self, key: str, tmp: Path, head: dict[str, Any]) -> int:
        """Check the downloaded file's size and (plain ETag) MD5; return the size."""
        expected_size = int(head["ContentLength"])
        got_size = tmp.stat().st_size
        got_md5 = file_md5(tmp) if got_size == expected_size and _plain_md5(head) else None
        self._check(key, head, expected_size, got_size, got_md5)
        return expected_size

    def _check(
        self,
        key: str,
        head: dict[str, Any],
        expected_size: int,
        got_size: int,
        got_md5: str | None,
    ) -> None:
        """Raise IntegrityError unless the size (and the MD5, if known) match the object's."""
        if got_size != expected_size:
            raise IntegrityError(
                f"{self.url}: object {key!r} size mismatch: expected {expected_size} "
                f"bytes, got {got_size}"
            )
        etag = _etag(head)
        if got_md5 is not None and got_md5 != etag:
            raise IntegrityError(
                f"{self.url}: object {key!r} MD5 mismatch: expected {etag}, got {got_md5}"
            )

    def upload(self, path: Path, key: str) -> None:
        """Upload the local file ``path`` as object ``key`` (multipart when large)."""
        full = self._full(key)
        self.client.upload_file(str(path), self.bucket, full, Config=self.transfer_config)
        logger.debug("uploaded %s to %s/%s", path, self.url, key)

    def download_fileobj(self, key: str, fileobj: BinaryIO) -> None:
        """Write object ``key`` into ``fileobj``.

        Raises:
            KeyNotFound: If the object (or the bucket) does not exist.
        """
        full = self._full(key)
        try:
            self.client.download_fileobj(self.bucket, full, fileobj, Config=self.transfer_config)
        except ClientError as exc:
            if _error_code(exc) in _NOT_FOUND:
                raise self._not_found(key, exc) from None
            raise

    def upload_fileobj(self, fileobj: BinaryIO, key: str) -> None:
        """Upload everything readable from ``fileobj`` as object ``key``."""
        full = self._full(key)
        self.client.upload_fileobj(fileobj, self.bucket, full, Config=self.transfer_config)

    def exists(self, key: str) -> bool:
        """Return whether object ``key`` exists."""
        full = self._full(key)
        try:
            self._head(key, full)
        except KeyNotFound:
            return False
        return True

    def delete(self, key: str) -> None:
        """Delete object ``key``; a missing key (or bucket) is fine."""
        full = self._full(key)
        try:
            self.client.delete_object(Bucket=self.bucket, Key=full)
        except ClientError as exc:
            if _error_code(exc) not in _NOT_FOUND:
                raise

    def presigned_url(self, key: str, seconds: int) -> str:
        """Return a presigned GET URL of object ``key``, valid for ``seconds``.

        Signed locally by boto3 with the client's credentials (no request is made; the
        object need not exist yet).

        Raises:
            ValueError: If ``key`` is invalid or ``seconds`` is not positive.
        """
        check_link_seconds(seconds)
        params = {"Bucket": self.bucket, "Key": self._full(key)}
        url: str = self.client.generate_presigned_url(
            "get_object", Params=params, ExpiresIn=seconds
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
        paginator = self.client.get_paginator("list_objects_v2")
        pages = paginator.paginate(Bucket=self.bucket, Prefix=self._base + prefix)
        try:
            for page in pages:
                for obj in page.get("Contents", []):
                    key = str(obj["Key"])[len(self._base) :]
                    if not is_valid_key(key):
                        logger.debug("skipping object %r: not a valid key", obj["Key"])
                        continue
                    yield key
        except ClientError as exc:
            if _error_code(exc) in _NOT_FOUND:
                raise KeyNotFound(
                    f"cannot list {self.url}: bucket {self.bucket!r} does not exist"
                ) from None
            raise


__all__ = ["S3Bucket", "default_transfer_config", "file_md5", "make_client", "parse_s3_url"]
