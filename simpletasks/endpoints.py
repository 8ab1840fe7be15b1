"""A quick "does anything listen there?" check, so a backend that is down fails in seconds.

Cloud client libraries retry a refused connection for a long time (boto3 about 25 s, the
Google libraries up to minutes) before they give up with a generic error. When a backend is
opened, one TCP connection to its endpoint tells a stopped emulator or a wrong port at once.
"""

from __future__ import annotations

import os
import socket

PROBE_TIMEOUT_SECONDS = 3.0
_PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


def unreachable(host: str, port: int, *, timeout: float = PROBE_TIMEOUT_SECONDS) -> str | None:
    """Return why a TCP connection to ``host:port`` fails, or ``None`` if it succeeds.

    Returns ``None`` without connecting when an HTTP proxy is configured: the proxy, not
    this machine, then reaches the endpoint.
    """
    if any(os.environ.get(name) for name in _PROXY_VARS):
        return None
    try:
        with socket.create_connection((host, port), timeout):
            return None
    except ConnectionRefusedError:
        return "connection refused"
    except TimeoutError:
        return f"no answer within {timeout:g} s"
    except socket.gaierror:
        return f"unknown host {host!r}"
    except OSError as exc:
        return exc.strerror or str(exc) or type(exc).__name__


def split_host_port(address: str, default_port: int) -> tuple[str, int]:
    """Split ``host[:port]`` (or ``[v6]:port``) into host and port."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or (host.count(":") and not host.endswith("]")):
        return address.strip("[]"), default_port
    return host.strip("[]"), int(port)
