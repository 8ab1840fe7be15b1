"""The HTTP endpoint of a daemon process: ``/metrics``, ``/healthz`` and ``/readyz``.

``/metrics`` is the Prometheus text format of a :class:`~simpletasks.metrics.Metrics`.
``/healthz`` answers 200 while every daemon of the process runs and its queue answered within
its staleness window (the loop is alive), else 503; ``/readyz`` answers 200 while, in
addition, the queue's last answers were not errors (the daemon can take work). Both bodies
are JSON: ``{"ok": bool, "daemons": {name: reason}}``.

Port 0 picks a free port (:attr:`MetricsServer.port` tells which); a port in use is a
:class:`~simpletasks.errors.ConfigError` naming it.
"""

from __future__ import annotations

import errno
import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from simpletasks.errors import ConfigError
from simpletasks.metrics import Metrics

logger = logging.getLogger(__name__)


class MetricsServer:
    """Serves a :class:`Metrics` over HTTP on a thread of its own.

    Args:
        metrics: What to serve.
        port: TCP port; 0 picks a free one.
        host: Address to listen on (``0.0.0.0`` by default, for a Prometheus elsewhere).

    Raises:
        ConfigError: If the port is in use or cannot be bound.
    """

    def __init__(self, metrics: Metrics, port: int, host: str = "0.0.0.0") -> None:
        self.metrics = metrics
        try:
            self._httpd = ThreadingHTTPServer((host, port), _handler(metrics))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(
                    f"metrics port {port} on {host} is in use (another daemon on this host?): "
                    "give each daemon its own --metrics-port, or 0 to pick a free one"
                ) from None
            raise ConfigError(f"cannot serve metrics on {host}:{port}: {exc}") from None
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="st-metrics",
            daemon=True,
        )

    @property
    def port(self) -> int:
        """The port actually listened on."""
        return int(self._httpd.server_address[1])

    def start(self) -> MetricsServer:
        """Start serving; log the address."""
        self._thread.start()
        host = self._httpd.server_address[0]
        logger.info("metrics on http://%s:%d/metrics (and /healthz, /readyz)", host, self.port)
        return self

    def close(self) -> None:
        """Stop serving and close the socket."""
        if self._thread.is_alive():
            self._httpd.shutdown()
        self._httpd.server_close()


def health_report(metrics: Metrics, which: str) -> tuple[bool, dict[str, str]]:
    """``(ok, {daemon: reason})`` for ``which``, ``"live"`` or ``"ready"``."""
    now = time.monotonic()
    daemons = metrics.health()
    reasons: dict[str, str] = {}
    ok = bool(daemons)
    for health in daemons:
        good, why = health.live(now) if which == "live" else health.ready(now)
        reasons[health.name] = why
        ok = ok and good
    return ok, reasons


def _handler(metrics: Metrics) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            logger.debug("metrics %s - " + format, self.address_string(), *args)

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                body, content_type = metrics.exposition()
                self._send(200, body, content_type)
            elif path in ("/healthz", "/readyz"):
                ok, reasons = health_report(metrics, "live" if path == "/healthz" else "ready")
                body = json.dumps({"ok": ok, "daemons": reasons}).encode()
                self._send(200 if ok else 503, body, "application/json")
            else:
                self._send(404, b"not found: try /metrics, /healthz or /readyz\n", "text/plain")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler
