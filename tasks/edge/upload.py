"""Upload targets: a bucket URL, or a HASTE gateway over HTTP; retry with back-off.

A HASTE gateway upload is ``POST http://HOST/stream/STREAM_ID`` with HTTP Basic auth, the
file as the body and the headers ``X-HASTE-original_filename`` (the local path),
``X-HASTE-tag`` and ``X-HASTE-unixtime``; ``STREAM_ID`` is ``YYYY_MM_DD__HH_MM_SS_`` + tag.
A bucket upload stores the file as ``STREAM_ID/<name>`` under the bucket URL's prefix.

Each upload worker opens its own :meth:`Uploader.session` (one kept-alive HTTP connection per
worker), so K workers share the link as K concurrent uploads. :func:`send_with_retry` retries
what can succeed later (5xx, 408, 429, time-outs, connection errors, any bucket error) with a
capped exponential back-off, until it succeeds or the caller cancels; a refused login (401 or
403) raises :class:`AuthRejected` and any other 4xx :class:`UploadRejected` at once.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import random
import re
import time
from base64 import b64encode
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager as ContextManager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

from simpletasks.buckets import BucketService, open_bucket
from simpletasks.errors import ConfigError

logger = logging.getLogger(__name__)

# Printable ASCII except "%" stays as it is, so plain names reach an original HASTE gateway
# unchanged; anything else is percent-encoded (our gateway decodes it).
_HEADER_SAFE = "".join(chr(c) for c in range(32, 127) if chr(c) != "%")
_TAG_RE = re.compile(r"^[A-Za-z0-9._-]{0,100}$")


class UploadError(Exception):
    """An upload failed. ``retryable`` says whether trying again may help."""

    retryable = True


class UploadRejected(UploadError):
    """The target refused the upload for good (an HTTP 4xx other than 401/403/408/429)."""

    retryable = False


class AuthRejected(UploadRejected):
    """The gateway refused the credentials (HTTP 401 or 403)."""


@dataclass(frozen=True)
class Sent:
    """A confirmed upload: where it went and how many bytes."""

    target: str
    bytes: int


def make_stream_id(tag: str, when: datetime | None = None) -> str:
    """Return ``YYYY_MM_DD__HH_MM_SS_<tag>`` for ``when`` (default: now, local time).

    Raises:
        ConfigError: If the tag is not a short ASCII word (letters, digits, ``._-``).
    """
    if not _TAG_RE.match(tag):
        raise ConfigError(f"tag {tag!r} must be up to 100 ASCII letters, digits, '.', '_', '-'")
    return (when or datetime.now()).strftime("%Y_%m_%d__%H_%M_%S_") + tag


class UploadSession(Protocol):
    """One worker's handle on the target."""

    def send(self, path: Path, *, name: str, original_filename: str, unixtime: float) -> Sent:
        """Upload the file at ``path`` once (no retry); return the confirmation."""
        ...


class Uploader(Protocol):
    """An upload target; thread-safe; each worker opens its own session."""

    description: str

    def session(self) -> ContextManager[UploadSession]:
        """Open a session (a connection) for one worker."""
        ...


# -- bucket ------------------------------------------------------------------------------


class BucketUploader:
    """Uploads to any bucket URL (``s3://``, ``gs://``, ``file://``) as ``STREAM_ID/<name>``.

    Args:
        bucket: The bucket (or its URL).
        stream_id: The key prefix for this run.
    """

    def __init__(self, bucket: BucketService | str, *, stream_id: str) -> None:
        self.bucket = open_bucket(bucket) if isinstance(bucket, str) else bucket
        self.stream_id = stream_id
        self.description = f"{self.bucket.url}/{stream_id}/"

    @contextlib.contextmanager
    def session(self) -> Iterator[BucketUploader]:
        """The bucket client is shared; a session is the uploader itself."""
        yield self

    def send(self, path: Path, *, name: str, original_filename: str, unixtime: float) -> Sent:
        """Upload ``path`` as ``STREAM_ID/<name>``; any bucket error is retryable."""
        key = f"{self.stream_id}/{name}"
        size = path.stat().st_size
        try:
            self.bucket.upload(path, key)
        except (FileNotFoundError, IsADirectoryError):
            raise
        except Exception as exc:
            raise UploadError(f"bucket {self.bucket.url}: {type(exc).__name__}: {exc}") from exc
        return Sent(target=key, bytes=size)


# -- HASTE gateway -----------------------------------------------------------------------


def parse_host(host: str) -> tuple[str, str, int]:
    """Split ``HOST[:PORT]`` or ``http(s)://HOST[:PORT]`` into (scheme, host, port).

    Raises:
        ConfigError: If it is not of that form.
    """
    text = host if "://" in host else f"http://{host}"
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"bad --host {host!r}: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
        raise ConfigError(f"bad --host {host!r}: expected HOST[:PORT] or http(s)://HOST[:PORT]")
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80)


class GatewayUploader:
    """Uploads to a HASTE gateway: ``POST /stream/STREAM_ID`` with Basic auth.

    Args:
        host: ``HOST[:PORT]`` (or with an ``http://``/``https://`` scheme).
        username: Basic-auth user.
        password: Basic-auth password.
        stream_id: The stream of this run (see :func:`make_stream_id`).
        tag: Sent as ``X-HASTE-tag``.
        timeout: Seconds any single socket operation may block.
    """

    def __init__(
        self,
        host: str,
        *,
        username: str,
        password: str,
        stream_id: str,
        tag: str,
        timeout: float = 60.0,
    ) -> None:
        self.scheme, self.host, self.port = parse_host(host)
        self.stream_id = stream_id
        self.tag = tag
        self.timeout = timeout
        self.username = username
        token = b64encode(f"{username}:{password}".encode()).decode("ascii")
        self._auth = f"Basic {token}"
        self.path = f"/stream/{quote(stream_id)}"
        self.description = f"{self.scheme}://{self.host}:{self.port}{self.path}"

    @contextlib.contextmanager
    def session(self) -> Iterator[GatewaySession]:
        """Open one kept-alive connection for one worker."""
        s = GatewaySession(self)
        try:
            yield s
        finally:
            s.close()


class GatewaySession:
    """One worker's kept-alive connection to the gateway (reconnects after an error)."""

    def __init__(self, uploader: GatewayUploader) -> None:
        self.up = uploader
        self._conn: http.client.HTTPConnection | None = None

    def close(self) -> None:
        """Close the connection."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            https = self.up.scheme == "https"
            cls = http.client.HTTPSConnection if https else http.client.HTTPConnection
            self._conn = cls(self.up.host, self.up.port, timeout=self.up.timeout, blocksize=65536)
        return self._conn

    def send(self, path: Path, *, name: str, original_filename: str, unixtime: float) -> Sent:
        """POST the file once; raise :class:`UploadError` (or a subclass) on failure."""
        up = self.up
        with open(path, "rb") as body:
            size = body.seek(0, 2)
            body.seek(0)
            headers = {
                "Authorization": up._auth,
                "Content-Type": "application/octet-stream",
                "Content-Length": str(size),
                "X-HASTE-original_filename": quote(original_filename, safe=_HEADER_SAFE),
                "X-HASTE-tag": up.tag,
                "X-HASTE-unixtime": repr(float(unixtime)),
            }
            try:
                conn = self._connection()
                conn.request("POST", up.path, body=body, headers=headers)
                response = conn.getresponse()
                text = response.read(65536)
                status = response.status
                if response.will_close:
                    self.close()
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                raise UploadError(f"{up.description}: {type(exc).__name__}: {exc}") from exc
        detail = text.decode("utf-8", "replace").strip()[:300]
        if status in (401, 403):
            self.close()
            raise AuthRejected(
                f"{up.description} refused user {up.username!r} (HTTP {status}): "
                f"check --username/--password; {detail}"
            )
        if 400 <= status < 500 and status not in (408, 429):
            raise UploadRejected(f"{up.description} rejected {name} (HTTP {status}): {detail}")
        if not 200 <= status < 300:
            self.close()
            raise UploadError(f"{up.description}: HTTP {status}: {detail}")
        target = f"{up.stream_id}/{name}"
        with contextlib.suppress(ValueError, AttributeError, TypeError):
            reply: Any = json.loads(text)
            target = str(reply.get("key", target))
            if "bytes" in reply and int(reply["bytes"]) != size:
                raise UploadError(f"{up.description} stored {reply['bytes']} of {size} bytes")
        return Sent(target=target, bytes=size)


# -- retry ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Backoff:
    """Capped exponential back-off with jitter: ``first * 2**n`` up to ``cap`` seconds."""

    first: float = 0.5
    cap: float = 30.0

    def delay(self, failures: int) -> float:
        """Delay after ``failures`` consecutive failures (>= 1)."""
        return min(self.cap, self.first * 2 ** max(0, failures - 1)) * random.uniform(0.8, 1.0)


def send_with_retry(
    session: UploadSession,
    path: Path,
    *,
    name: str,
    original_filename: str,
    unixtime: float,
    sleep: Callable[[float], bool],
    backoff: Backoff = Backoff(),
    on_retry: Callable[[int, UploadError], None] | None = None,
) -> Sent | None:
    """Send until confirmed; back off between retryable failures.

    Args:
        session: The worker's session.
        path: The file to send.
        name: Its name in the watched directory (the object's name).
        original_filename: Sent as ``X-HASTE-original_filename``.
        unixtime: Sent as ``X-HASTE-unixtime``.
        sleep: Waits the given seconds; returns True if the caller wants to stop (e.g.
            ``TaskContext.sleep``).
        backoff: The delays.
        on_retry: Called with the failure count and error before each wait.

    Returns:
        The confirmation, or ``None`` if ``sleep`` asked to stop first.

    Raises:
        UploadRejected: At once for a refusal that retrying cannot fix (401/403, other 4xx).
        FileNotFoundError: If ``path`` vanished.
    """
    failures = 0
    while True:
        started = time.monotonic()
        try:
            return session.send(
                path, name=name, original_filename=original_filename, unixtime=unixtime
            )
        except UploadError as exc:
            if not exc.retryable:
                raise
            failures += 1
            if on_retry is not None:
                on_retry(failures, exc)
            logger.warning(
                "upload of %s failed after %.1f s (try %d), retrying: %s",
                name,
                time.monotonic() - started,
                failures,
                exc,
            )
            if sleep(backoff.delay(failures)):
                return None
