"""Fixtures for a fake GCE/EC2 instance metadata server on 127.0.0.1.

:class:`FakeMetadataServer` answers the few paths simpletasks reads, the way the real
services do: GCE wants ``Metadata-Flavor: Google`` (else 403) and says it in every answer;
EC2 speaks IMDSv2 only (a ``GET`` without a valid token gets 401, a token ``PUT`` without a
TTL header gets 400). It runs in a thread of the test process, so a daemon started as a
subprocess reaches it over TCP like a VM reaches its metadata server.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

GCE_PREFIX = "/computeMetadata/v1/"
EC2_TAGS = "/latest/meta-data/tags/instance"


@dataclass
class FakeMetadata:
    """What the fake server serves; tests change it freely."""

    gce_instance: dict[str, str] = field(default_factory=dict)
    gce_project: dict[str, str] = field(default_factory=dict)
    ec2_tags: dict[str, str] = field(default_factory=dict)
    ec2_tags_enabled: bool = True
    ec2_region: str = "us-east-1"
    gce_flavor_header: bool = True  # False: answer like a server that is not GCE's
    tokens: set[str] = field(default_factory=set)
    requests: list[tuple[str, str]] = field(default_factory=list)


class FakeMetadataServer:
    """A GCE and EC2 metadata server on a free 127.0.0.1 port, in a thread."""

    def __init__(self) -> None:
        self.data = FakeMetadata()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self.data))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT``, the form of ``GCE_METADATA_HOST``."""
        return f"127.0.0.1:{self._httpd.server_address[1]}"

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:PORT``, the form of ``AWS_EC2_METADATA_SERVICE_ENDPOINT``."""
        return f"http://{self.host}"

    def env(self) -> dict[str, str]:
        """Environment variables that point simpletasks at this server for both clouds."""
        return {"GCE_METADATA_HOST": self.host, "AWS_EC2_METADATA_SERVICE_ENDPOINT": self.endpoint}

    def start(self) -> FakeMetadataServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def _handler(data: FakeMetadata) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
            pass

        def do_GET(self) -> None:
            data.requests.append(("GET", self.path))
            if self.path.startswith(GCE_PREFIX):
                self._gce(self.path[len(GCE_PREFIX) :])
            elif self.path.startswith("/latest/"):
                self._ec2()
            else:
                self._send(404, "not found")

        def do_PUT(self) -> None:
            data.requests.append(("PUT", self.path))
            if self.path != "/latest/api/token":
                self._send(405, "method not allowed")
                return
            ttl = self.headers.get("X-aws-ec2-metadata-token-ttl-seconds", "")
            if not ttl.isdigit() or not 1 <= int(ttl) <= 21600:
                self._send(400, "missing or invalid X-aws-ec2-metadata-token-ttl-seconds")
                return
            token = secrets.token_urlsafe(16)
            data.tokens.add(token)
            self._send(200, token)

        def _gce(self, rest: str) -> None:
            if self.headers.get("Metadata-Flavor") != "Google":
                self._send(403, "Missing Metadata-Flavor:Google header.")
                return
            scope, _, name = rest.partition("/attributes/")
            table = {"instance": data.gce_instance, "project": data.gce_project}.get(scope)
            if table is None or name not in table:
                self._send(404, "not found", gce=True)
            else:
                self._send(200, table[name], gce=True)

        def _ec2(self) -> None:
            if self.headers.get("X-aws-ec2-metadata-token") not in data.tokens:
                self._send(401, "")
                return
            name = self.path.removeprefix(EC2_TAGS + "/")
            if self.path == "/latest/meta-data/placement/region":
                self._send(200, data.ec2_region)
            elif data.ec2_tags_enabled and self.path == EC2_TAGS:
                self._send(200, "\n".join(data.ec2_tags))
            elif data.ec2_tags_enabled and name != self.path and name in data.ec2_tags:
                self._send(200, data.ec2_tags[name])
            else:
                self._send(404, "not found")

        def _send(self, status: int, body: str, *, gce: bool = False) -> None:
            payload = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(payload)))
            if gce and data.gce_flavor_header:
                self.send_header("Metadata-Flavor", "Google")
            self.end_headers()
            self.wfile.write(payload)

    return Handler


@pytest.fixture
def metadata_server() -> Iterator[FakeMetadataServer]:
    """A fresh fake GCE/EC2 metadata server on 127.0.0.1 for one test."""
    server = FakeMetadataServer().start()
    yield server
    server.stop()
