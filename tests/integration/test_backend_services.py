"""A backend that is down fails alone: the others (on their real local services) go on."""

from __future__ import annotations

from typing import Any

import pytest

from simpletasks.errors import ServiceUnavailable
from simpletasks.queues import open_queue


def test_aws_down_does_not_stop_other_backends_from_opening(
    closed_port: int, moto_server: Any
) -> None:
    with pytest.raises(ServiceUnavailable):
        open_queue("sqs://jobs", endpoint_url=f"http://127.0.0.1:{closed_port}")
    queue = open_queue("sqs://after-failure", endpoint_url=moto_server.endpoint_url, create=True)
    queue.send("x")
    assert [m.body for m in queue.receive(wait_seconds=2)] == ["x"]
    queue.delete()  # type: ignore[attr-defined]
