"""A fake metadata server that can also announce a preemption (GCE and EC2 Spot).

It extends ``tests/plugins/metadata.py``'s :class:`FakeMetadataServer` with the two notice
paths, answered like the real services: GCE ``instance/preempted`` is ``FALSE`` until
:attr:`preempted` is set, then ``TRUE``; EC2 ``spot/instance-action`` is 404 until
:attr:`spot_action` is set, then that JSON (IMDSv2 token required, as for every EC2 path).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
from plugins.metadata import GCE_PREFIX, FakeMetadataServer

GCE_PREEMPTED = GCE_PREFIX + "instance/preempted"
EC2_ACTION = "/latest/meta-data/spot/instance-action"


class PreemptibleMetadataServer(FakeMetadataServer):
    """A :class:`FakeMetadataServer` with preemption notices."""

    def __init__(self) -> None:
        super().__init__()
        self.preempted = False
        self.spot_action: str | None = None
        self.notice_polls = 0
        base = self._httpd.RequestHandlerClass
        server = self

        class Handler(base):  # type: ignore[valid-type, misc]
            def do_GET(self) -> None:
                if self.path == GCE_PREEMPTED:
                    server.notice_polls += 1
                    if self.headers.get("Metadata-Flavor") != "Google":
                        self._send(403, "Missing Metadata-Flavor:Google header.")
                    else:
                        self._send(200, "TRUE" if server.preempted else "FALSE", gce=True)
                elif self.path == EC2_ACTION:
                    server.notice_polls += 1
                    if self.headers.get("X-aws-ec2-metadata-token") not in server.data.tokens:
                        self._send(401, "")
                    elif server.spot_action is None:
                        self._send(404, "not found")
                    else:
                        self._send(200, server.spot_action)
                else:
                    super().do_GET()

        self._httpd.RequestHandlerClass = Handler

    def announce_spot_interruption(self, seconds: float = 120.0) -> None:
        """Schedule an EC2 Spot interruption ``seconds`` from now."""
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + seconds))
        self.spot_action = json.dumps({"action": "terminate", "time": when})


@pytest.fixture
def preemptible_server() -> Iterator[PreemptibleMetadataServer]:
    """A fresh fake metadata server with preemption notices."""
    server = PreemptibleMetadataServer().start()
    yield server
    server.stop()
