"""A HASTE gateway: receive ``POST /stream/STREAM_ID`` uploads and store them in a bucket.

The protocol of the HASTE cloud gateway: HTTP Basic auth; the body is the file; headers
``X-HASTE-original_filename`` (the sender's local path; its base name names the object),
``X-HASTE-tag`` and ``X-HASTE-unixtime``. Each upload is stored whole as
``STREAM_ID/<base name>`` in the bucket and answered ``200 {"key": ..., "bytes": ...}`` only
once stored (and, with a queue, once a task message for it is enqueued, so a worker such as
the tiering task can pick it up). Bad requests get a 4xx with the reason in plain text; a
storage or queue failure gets a 503, which the agent retries.

``bandwidth`` caps the bytes per second read from all connections together (a token bucket),
to emulate a slow uplink in experiments. The server is the standard library's
``ThreadingHTTPServer`` (one thread per connection, HTTP/1.1 keep-alive).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import itertools
import json
import logging
import math
import re
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

from simpletasks.buckets import BucketService
from simpletasks.errors import InvalidKey
from simpletasks.keys import validate_key
from simpletasks.message import BasicInfo, TaskMessage
from simpletasks.queues import QueueService

logger = logging.getLogger(__name__)

_PATH_RE = re.compile(r"^/stream/([A-Za-z0-9._-]{1,200})/?$")
_CHUNK = 16 * 1024


class TokenBucket:
    """Shared byte-rate limit: ``consume(n)`` blocks until ``n`` bytes fit the rate.

    Callers take tokens in turn and may run into debt, then sleep it off, so the long-run rate
    is exact and no connection starves. ``burst`` bytes may pass at once after an idle spell.

    Args:
        rate: Bytes per second (> 0).
        burst: Bucket capacity in bytes (default: 50 ms of rate, at least 64 KiB).
    """

    def __init__(self, rate: float, burst: float | None = None) -> None:
        if not rate > 0 or math.isinf(rate):
            raise ValueError(f"rate must be a positive number of bytes per second, got {rate}")
        self.rate = float(rate)
        self.burst = float(burst if burst is not None else max(65536.0, rate * 0.05))
        self._tokens = self.burst
        self._last = time.monotonic()
        self._lock = threading.Lock()

    def consume(self, n: int) -> None:
        """Take ``n`` bytes' worth of tokens, sleeping as long as the rate requires."""
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            self._tokens -= n
            debt = -self._tokens
        if debt > 0:
            time.sleep(debt / self.rate)


class RequestError(Exception):
    """A bad request: ``status`` and a plain-text reason for the client."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


@dataclass
class GatewayStats:
    """What the gateway did (thread-safe counters)."""

    stored: int = 0
    bytes: int = 0
    rejected: int = 0
    failed: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, name: str, n: int = 1) -> None:
        """Add ``n`` to counter ``name``."""
        with self._lock:
            setattr(self, name, getattr(self, name) + n)


class HasteGateway:
    """The gateway's logic, independent of the socket server.

    Args:
        bucket: Where uploads are stored.
        username: Basic-auth user; ``None`` turns auth off (tests and trusted networks only).
        password: Basic-auth password.
        queue: If given, a task message is enqueued for each stored upload.
        task_name: The ``basic_info.name`` of those messages.
        bandwidth: Bytes per second for all uploads together (``None``: unlimited).
        max_bytes: Largest accepted body (``None``: unlimited).
        spool_dir: Where bodies are spooled before storing (default: a temporary directory).
    """

    def __init__(
        self,
        bucket: BucketService,
        *,
        username: str | None,
        password: str | None = None,
        queue: QueueService | None = None,
        task_name: str = "IMAGE_TIERING",
        bandwidth: float | None = None,
        max_bytes: int | None = None,
        spool_dir: Path | None = None,
    ) -> None:
        self.bucket = bucket
        self._user = (username or "").encode("utf-8")
        self._password = (password or "").encode("utf-8")
        self.auth = username is not None
        self.queue = queue
        self.task_name = task_name
        self.limit = TokenBucket(bandwidth) if bandwidth else None
        self.max_bytes = max_bytes
        self._spool_owner = None if spool_dir else tempfile.TemporaryDirectory(prefix="gw-")
        self.spool_dir = Path(spool_dir or self._spool_owner.name)  # type: ignore[union-attr]
        self.stats = GatewayStats()
        self._ids = itertools.count(1)

    def check_auth(self, header: str | None) -> None:
        """Check a Basic ``Authorization`` header in constant time (per length).

        Raises:
            RequestError: 401 if it is missing, malformed or wrong.
        """
        if not self.auth:
            return
        scheme, _, token = (header or "").strip().partition(" ")
        try:
            raw = base64.b64decode(token.strip(), validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        user, _, password = raw.partition(b":")
        ok_user = hmac.compare_digest(user, self._user)
        ok_password = hmac.compare_digest(password, self._password)
        if not (scheme.lower() == "basic" and ok_user and ok_password):
            raise RequestError(401, "authentication required (HTTP Basic)")

    def object_name(self, header: str | None) -> str:
        """Return the object name from ``X-HASTE-original_filename`` (its base name).

        Raises:
            RequestError: 400 if missing or not a safe name.
        """
        if not header:
            raise RequestError(400, "missing header X-HASTE-original_filename")
        original = unquote(header)
        name = re.split(r"[\\/]", original)[-1]
        try:
            validate_key(name, what="X-HASTE-original_filename base name")
        except InvalidKey as exc:
            raise RequestError(400, str(exc)) from None
        return name

    def store(self, stream_id: str, name: str, body: Path, size: int, meta: dict) -> str:
        """Store a spooled upload; enqueue its task. Returns the key.

        Raises:
            RequestError: 503 if the bucket or the queue failed (the client retries).
        """
        key = f"{stream_id}/{name}"
        try:
            self.bucket.upload(body, key)
        except Exception as exc:
            logger.warning("storing %s in %s failed: %s", key, self.bucket.url, exc)
            raise RequestError(503, f"storage unavailable: {type(exc).__name__}") from exc
        if self.queue is not None:
            message = TaskMessage(
                BasicInfo(
                    id=next(self._ids),
                    name=self.task_name,
                    base_directory=stream_id,
                    inputs=(name,),
                ),
                payload_info={**meta, "bytes": size},
            )
            try:
                self.queue.send(message.to_json())
            except Exception as exc:
                logger.warning("enqueueing %s on %s failed: %s", key, self.queue.url, exc)
                raise RequestError(503, f"queue unavailable: {type(exc).__name__}") from exc
        self.stats.add("stored")
        self.stats.add("bytes", size)
        return key

    def close(self) -> None:
        """Remove the spool directory if the gateway made it."""
        if self._spool_owner is not None:
            self._spool_owner.cleanup()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 60.0  # seconds a stalled client may hold its connection
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        logger.debug("%s %s", self.address_string(), format % args)

    def _reply(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
        try:
            self.send_response(status)
            if status == 401:
                self.send_header("WWW-Authenticate", 'Basic realm="haste"')
            self.send_header("Content-Type", f"{content_type}; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
        except OSError as exc:  # the client gave up (timed out) before our answer
            logger.info("could not answer %s (%d): %s", self.address_string(), status, exc)
            self.close_connection = True

    def _refuse(self, status: int, reason: str) -> None:
        self.server.gateway.stats.add("rejected" if status < 500 else "failed")
        self._reply(status, (reason + "\n").encode("utf-8"))

    def do_GET(self) -> None:
        self.close_connection = True
        self._refuse(405, "only POST /stream/STREAM_ID is supported")

    do_PUT = do_DELETE = do_GET

    def do_POST(self) -> None:
        gw = self.server.gateway
        try:
            length = self._length()
        except RequestError as exc:
            self.close_connection = True  # the body (if any) was not read
            self._refuse(exc.status, str(exc))
            return
        try:
            match = _PATH_RE.match(self.path.split("?", 1)[0])
            if not match:
                raise RequestError(404, "expected POST /stream/STREAM_ID ([A-Za-z0-9._-])")
            gw.check_auth(self.headers.get("Authorization"))
            name = gw.object_name(self.headers.get("X-HASTE-original_filename"))
            meta = self._meta()
        except RequestError as exc:
            self._drain(length)
            self._refuse(exc.status, str(exc))
            return
        with tempfile.NamedTemporaryFile(dir=gw.spool_dir, prefix="up-") as spool:
            received = self._copy_body(length, spool)
            if received is None:
                return  # client went away or stalled; nothing stored
            spool.flush()
            try:
                key = gw.store(match.group(1), name, Path(spool.name), length, meta)
            except RequestError as exc:
                self._refuse(exc.status, str(exc))
                return
        self._reply(200, json.dumps({"key": key, "bytes": length}).encode(), "application/json")

    def _length(self) -> int:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raise RequestError(411, "Content-Length required (chunked bodies not supported)")
        raw = self.headers.get("Content-Length")
        if raw is None:
            raise RequestError(411, "Content-Length required")
        try:
            length = int(raw)
        except ValueError:
            raise RequestError(400, f"bad Content-Length {raw!r}") from None
        if length < 0:
            raise RequestError(400, f"bad Content-Length {raw!r}")
        max_bytes = self.server.gateway.max_bytes
        if max_bytes is not None and length > max_bytes:
            raise RequestError(413, f"body of {length} bytes exceeds the limit of {max_bytes}")
        return length

    def _meta(self) -> dict:
        raw_time = self.headers.get("X-HASTE-unixtime")
        unixtime = None
        if raw_time is not None:
            try:
                unixtime = float(raw_time)
            except ValueError:
                raise RequestError(400, f"X-HASTE-unixtime is not a number: {raw_time!r}") from None
            if not math.isfinite(unixtime):
                raise RequestError(400, f"X-HASTE-unixtime is not finite: {raw_time!r}")
        return {
            "original_filename": unquote(self.headers.get("X-HASTE-original_filename", "")),
            "tag": self.headers.get("X-HASTE-tag", ""),
            "unixtime": unixtime,
        }

    def _drain(self, length: int) -> None:
        """Read and discard the body so the client can read our answer."""
        try:
            while length > 0:
                chunk = self.rfile.read(min(_CHUNK * 4, length))
                if not chunk:
                    break
                length -= len(chunk)
        except OSError:
            self.close_connection = True

    def _copy_body(self, length: int, out: object) -> int | None:
        limit = self.server.gateway.limit
        left = length
        try:
            while left > 0:
                n = min(_CHUNK, left)
                if limit is not None:
                    limit.consume(n)
                chunk = self.rfile.read(n)
                if not chunk:
                    break
                out.write(chunk)  # type: ignore[attr-defined]
                left -= len(chunk)
        except OSError as exc:
            logger.info("upload from %s aborted: %s", self.address_string(), exc)
            self.close_connection = True
            return None
        if left:
            logger.info("upload from %s ended %d bytes short", self.address_string(), left)
            self.close_connection = True
            self.server.gateway.stats.add("rejected")
            return None
        return length


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], gateway: HasteGateway) -> None:
        self.gateway = gateway
        super().__init__(address, _Handler)


class GatewayServer:
    """The gateway listening on ``host:port`` (port 0: an ephemeral one), in a thread.

    Example::

        with GatewayServer(HasteGateway(bucket, username="u", password="p")) as server:
            print(server.url)
    """

    def __init__(self, gateway: HasteGateway, host: str = "127.0.0.1", port: int = 0) -> None:
        self.gateway = gateway
        self._server = _Server((host, port), gateway)
        address = self._server.server_address
        self.host, self.port = str(address[0]), int(address[1])
        self.address = f"{self.host}:{self.port}"
        self.url = f"http://{self.address}"
        self._thread: threading.Thread | None = None

    def serve_forever(self) -> None:
        """Serve in the calling thread until :meth:`stop`."""
        self._server.serve_forever(poll_interval=0.2)

    def start(self) -> GatewayServer:
        """Serve in a background thread."""
        self._thread = threading.Thread(target=self.serve_forever, name="edge-gateway", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._thread is not None:
            self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)
        self.gateway.close()

    def __enter__(self) -> GatewayServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
