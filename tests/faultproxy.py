"""A fault-injecting HTTP reverse proxy on 127.0.0.1, for reliability tests and benchmarks.

:class:`FaultProxy` forwards every request to an upstream HTTP endpoint (a moto server,
fake-gcs-server...) and, for the requests that a :class:`Fault` rule matches, injects a failure at
the rule's rate instead, chosen by a seeded RNG:

* ``"500"``, ``"503"``: an HTTP 500 ``InternalError`` / 503 ``ServiceUnavailable`` answer;
* ``"throttle"``: a throttling answer (SQS: HTTP 400 ``ThrottlingException``; GCS: HTTP 429
  ``rateLimitExceeded``; S3 and others: HTTP 503 ``SlowDown``);
* ``"reset"``: the connection is reset without an answer (the request never reaches the
  upstream);
* ``"truncate"``: the request is forwarded, then the answer is cut off after half its body
  (the headers announce the full length) and the connection reset;
* ``"drop_response"``: the request is forwarded (and takes effect), then the connection is
  reset without an answer;
* ``"delay"``: the request is held for ``Fault.seconds``, then forwarded (a slow network or
  server).

Point a client's ``endpoint_url`` at :attr:`FaultProxy.url`; :meth:`FaultProxy.counts` says
what was injected. Upstream URLs in JSON answers and ``Location`` headers are rewritten to the
proxy's, so that links the server hands out (GCS ``mediaLink``) lead back through it.
Requests are named by operation (``ReceiveMessage``, ``GetObject``...) so rules can target
one. The RNG is seeded, but requests from several threads arrive in no set
order, so the places of the faults vary between runs; their rate does not.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import random
import re
import socket
import struct
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

logger = logging.getLogger(__name__)

KINDS = frozenset({"500", "503", "throttle", "reset", "truncate", "drop_response", "delay"})
_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
     "upgrade", "expect", "content-length"}
)  # fmt: skip


@dataclass(frozen=True)
class Fault:
    """One injection rule.

    Args:
        kind: One of :data:`KINDS`.
        rate: Probability of injecting into a matching request (1.0 = always).
        operation: Regex that must match the whole operation name (e.g. ``"GetObject"``,
            ``"ReceiveMessage|DeleteMessageBatch"``); ``None`` matches every operation.
        path: Regex searched in the URL-decoded request path (e.g. ``"/0_input/"``).
        seconds: How long a ``"delay"`` holds the request.
    """

    kind: str
    rate: float = 1.0
    operation: str | None = None
    path: str | None = None
    seconds: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"fault kind {self.kind!r} is unknown; use one of {sorted(KINDS)}")
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"fault rate must be between 0 and 1, got {self.rate!r}")

    def matches(self, operation: str, path: str) -> bool:
        """Whether this rule applies to a request (before the rate is drawn)."""
        if self.operation is not None and not re.fullmatch(self.operation, operation):
            return False
        return self.path is None or re.search(self.path, path) is not None


_GCS_PREFIXES = ("/storage/v1/", "/download/storage/v1/", "/upload/storage/v1/")


def is_gcs(path: str) -> bool:
    """Whether a request path is one of the Google Cloud Storage JSON API's."""
    return path.startswith(_GCS_PREFIXES)


def _gcs_operation(method: str, path: str, query: dict[str, list[str]]) -> str:
    if path.startswith("/upload/"):
        return "UploadObject"
    media = path.startswith("/download/") or query.get("alt") == ["media"]
    if "/o/" in path:
        if method == "GET":
            return "DownloadObject" if media else "GetObjectMetadata"
        return {"DELETE": "DeleteObject"}.get(method, f"{method.title()}Object")
    if path.rstrip("/").endswith("/o"):
        return "ListObjects" if method == "GET" else f"{method.title()}Objects"
    return f"{method.title()}Bucket"


def operation_name(method: str, path: str, headers: Any, body: bytes) -> str:
    """Name the API operation of a request: SQS (JSON or query protocol), S3 (path style) or
    GCS (JSON API; names like ``DownloadObject``, ``GetObjectMetadata``, ``UploadObject``)."""
    split = urllib.parse.urlsplit(path)
    if is_gcs(split.path):
        return _gcs_operation(method, split.path, urllib.parse.parse_qs(split.query))
    target = headers.get("X-Amz-Target")
    if target:  # JSON protocols: "AmazonSQS.ReceiveMessage"
        return str(target).rsplit(".", 1)[-1]
    ctype = headers.get("Content-Type", "")
    if method == "POST" and "x-www-form-urlencoded" in ctype:
        action = urllib.parse.parse_qs(body.decode("utf-8", "replace")).get("Action")
        if action:
            return action[0]
    parsed = urllib.parse.urlsplit(path)
    query = urllib.parse.parse_qs(parsed.query, keep_blank_values=True)
    parts = [p for p in parsed.path.split("/") if p]
    if not parts:
        return "ListBuckets"
    if len(parts) == 1:
        names = {"GET": "ListObjects", "HEAD": "HeadBucket", "PUT": "CreateBucket"}
        return names.get(method, f"{method.title()}Bucket")
    if method == "PUT":
        if "partNumber" in query:
            return "UploadPart"
        return "CopyObject" if headers.get("x-amz-copy-source") else "PutObject"
    if method == "POST":
        return "CreateMultipartUpload" if "uploads" in query else "CompleteMultipartUpload"
    names = {"GET": "GetObject", "HEAD": "HeadObject", "DELETE": "DeleteObject"}
    return names.get(method, f"{method.title()}Object")


def _error_answer(kind: str, path: str, headers: Any) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of an injected error, in the protocol of the request."""
    if is_gcs(path):
        status, reason = {
            "500": (500, "backendError"),
            "503": (503, "backendError"),
            "throttle": (429, "rateLimitExceeded"),
        }[kind]
        error = {"code": status, "message": "injected fault", "errors": [{"reason": reason}]}
        return status, {"Content-Type": "application/json"}, json.dumps({"error": error}).encode()
    if headers.get("X-Amz-Target", "").startswith("AmazonSQS."):
        status, code = {
            "500": (500, "InternalError"),
            "503": (503, "ServiceUnavailable"),
            "throttle": (400, "ThrottlingException"),
        }[kind]
        body = json.dumps({"__type": f"com.amazonaws.sqs#{code}", "message": "injected fault"})
        return status, {"Content-Type": "application/x-amz-json-1.0"}, body.encode()
    status, code = {
        "500": (500, "InternalError"),
        "503": (503, "ServiceUnavailable"),
        "throttle": (503, "SlowDown"),
    }[kind]
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>injected fault</Message>"
        "<RequestId>faultproxy</RequestId></Error>"
    )
    return status, {"Content-Type": "application/xml"}, xml.encode()


class FaultProxy:
    """A threaded reverse proxy to ``upstream`` that injects faults by rule.

    Args:
        upstream: Base URL of the real endpoint, e.g. ``http://127.0.0.1:5000``.
        faults: Rules, tried in order; the first that matches and wins its draw applies.
        seed: Seed of the RNG that draws the faults.

    Use it as a context manager, or call :meth:`start` and :meth:`stop`.
    """

    def __init__(self, upstream: str, faults: Sequence[Fault] = (), *, seed: int = 0) -> None:
        split = urllib.parse.urlsplit(upstream)
        if split.scheme != "http" or not split.hostname:
            raise ValueError(f"upstream must be an http:// URL, got {upstream!r}")
        self.upstream_host = split.hostname
        self.upstream_port = split.port or 80
        self._faults = list(faults)
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._requests: Counter[str] = Counter()
        self._injected: Counter[tuple[str, str]] = Counter()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The proxy's base URL, for ``endpoint_url=``."""
        if self._server is None:
            raise RuntimeError("the proxy is not running; call start() first")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def set_faults(self, faults: Sequence[Fault]) -> None:
        """Replace the rules (takes effect for the next request)."""
        with self._lock:
            self._faults = list(faults)

    def counts(self) -> dict[str, Any]:
        """What the proxy saw: requests and injected faults, in total and by operation."""
        with self._lock:
            by_kind: Counter[str] = Counter()
            by_op: dict[str, dict[str, int]] = {}
            for (op, kind), n in sorted(self._injected.items()):
                by_kind[kind] += n
                by_op.setdefault(op, {})[kind] = n
            return {
                "requests": sum(self._requests.values()),
                "injected": sum(by_kind.values()),
                "injected_by_kind": dict(sorted(by_kind.items())),
                "injected_by_operation": by_op,
                "requests_by_operation": dict(sorted(self._requests.items())),
            }

    def _decide(self, operation: str, path: str) -> Fault | None:
        with self._lock:
            self._requests[operation] += 1
            for fault in self._faults:
                if fault.matches(operation, path) and self._rng.random() < fault.rate:
                    self._injected[(operation, fault.kind)] += 1
                    return fault
        return None

    def start(self) -> FaultProxy:
        """Listen on a free port of 127.0.0.1 and serve in a background thread."""
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        server.daemon_threads = True
        server.proxy = self  # type: ignore[attr-defined]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )
        self._thread.start()
        logger.info("fault proxy %s -> %s:%d", self.url, self.upstream_host, self.upstream_port)
        return self

    def stop(self) -> None:
        """Stop serving (idempotent); open keep-alive connections end on their own."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)
        self._server = self._thread = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 60  # an idle keep-alive connection ends after this
    _upstream: http.client.HTTPConnection | None = None

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("faultproxy: " + format, *args)

    def do_request(self) -> None:
        proxy: FaultProxy = self.server.proxy  # type: ignore[attr-defined]
        body = self._read_body()
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        operation = operation_name(self.command, self.path, self.headers, body)
        fault = proxy._decide(operation, path)
        kind = fault.kind if fault else None
        if kind == "reset":
            self._reset()
            return
        if kind in ("500", "503", "throttle"):
            status, headers, data = _error_answer(kind, path, self.headers)
            self._answer(status, headers, data)
            return
        if fault is not None and kind == "delay":
            time.sleep(fault.seconds)
        try:
            status, headers, data = self._forward(proxy, body)
        except OSError as exc:
            logger.warning("faultproxy: upstream failed for %s %s: %s", self.command, path, exc)
            self._answer(502, {"Content-Type": "text/plain"}, b"upstream failed")
            return
        if kind == "drop_response" or (kind == "truncate" and len(data) < 2):
            self._reset()
            return
        if kind == "truncate":
            self._answer(status, headers, data[: len(data) // 2], length=len(data))
            self._reset()
            return
        self._answer(status, headers, data, length=self._declared_length(headers, data))

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_request

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _forward(self, proxy: FaultProxy, body: bytes) -> tuple[int, dict[str, str], bytes]:
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        if body or self.command in ("POST", "PUT"):
            headers["Content-Length"] = str(len(body))
        for attempt in (1, 2):  # a kept-alive upstream connection may have been closed
            if self._upstream is None:
                self._upstream = http.client.HTTPConnection(
                    proxy.upstream_host, proxy.upstream_port, timeout=60
                )
            try:
                self._upstream.request(self.command, self.path, body=body, headers=headers)
                response = self._upstream.getresponse()
                data = response.read()
            except (http.client.HTTPException, OSError):
                self._upstream.close()
                self._upstream = None
                if attempt == 2:
                    raise
                continue
            out = {k: v for k, v in response.getheaders() if k.lower() not in _HOP_BY_HOP}
            # Links the upstream hands out (GCS mediaLink, upload session Location) must lead
            # back through the proxy; only JSON is rewritten, never object data.
            upstream = f"http://{proxy.upstream_host}:{proxy.upstream_port}"
            if "json" in response.getheader("Content-Type", ""):
                data = data.replace(upstream.encode(), proxy.url.encode())
            if "Location" in out:
                out["Location"] = out["Location"].replace(upstream, proxy.url)
            if self.command == "HEAD" and response.getheader("Content-Length") is not None:
                out["Content-Length"] = str(response.getheader("Content-Length"))
            if response.will_close:
                self._upstream.close()
                self._upstream = None
            return response.status, out, data
        raise AssertionError("unreachable")

    def _declared_length(self, headers: dict[str, str], data: bytes) -> int | None:
        if self.command == "HEAD":
            return None  # keep the upstream's Content-Length of the object
        return len(data)

    def _answer(
        self, status: int, headers: dict[str, str], data: bytes, *, length: int | None = None
    ) -> None:
        self.send_response(status)
        for name, value in headers.items():
            if name.lower() not in ("server", "date"):
                self.send_header(name, value)
        if length is not None or "Content-Length" not in headers:
            self.send_header("Content-Length", str(len(data) if length is None else length))
        self.end_headers()
        if self.command != "HEAD" and data:
            self.wfile.write(data)
        self.wfile.flush()

    def _reset(self) -> None:
        """Close the client connection with a TCP reset, without (the rest of) an answer."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.wfile.flush()
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()

    def finish(self) -> None:
        with contextlib.suppress(OSError):  # the socket was reset on purpose
            super().finish()
        if self._upstream is not None:
            self._upstream.close()
