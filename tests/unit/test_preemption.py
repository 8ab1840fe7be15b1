"""Preemption notices read from a fake GCE/EC2 metadata server, and the daemon's answer."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fleet.preemptible import PreemptibleMetadataServer

from simpletasks.buckets import open_bucket
from simpletasks.buckets.memory import MemoryBucket
from simpletasks.cache import FileSystemCache
from simpletasks.checkpoint import checkpoint_key
from simpletasks.daemon import DaemonService
from simpletasks.datasource import BucketCacheDatasource
from simpletasks.errors import ConfigError
from simpletasks.message import BasicInfo, TaskMessage
from simpletasks.metadata_servers import open_metadata
from simpletasks.preemption import Notice, PreemptionWatcher, check_notice, watch
from simpletasks.queues import open_queue
from simpletasks.queues.memory import MemoryQueue
from simpletasks.registry import TaskRegistry
from simpletasks.settings import DaemonSettings
from simpletasks.task import DaemonTask, Result


@pytest.fixture
def server() -> Iterator[PreemptibleMetadataServer]:
    s = PreemptibleMetadataServer().start()
    yield s
    s.stop()


@pytest.fixture(autouse=True)
def _fresh() -> Iterator[None]:
    MemoryQueue.reset_all()
    MemoryBucket.reset_all()
    yield
    MemoryQueue.reset_all()
    MemoryBucket.reset_all()


def test_gce_notice_is_instance_preempted_true(server: PreemptibleMetadataServer) -> None:
    gce = open_metadata("gce", endpoint=server.host)
    assert check_notice(gce) is None
    server.preempted = True
    notice = check_notice(gce)
    assert notice == Notice("gce", 30.0, "instance/preempted = TRUE")


def test_ec2_notice_is_a_spot_instance_action(server: PreemptibleMetadataServer) -> None:
    ec2 = open_metadata("ec2", endpoint=server.endpoint)
    assert check_notice(ec2) is None  # 404 until a notice
    server.announce_spot_interruption(120)
    notice = check_notice(ec2)
    assert notice is not None and notice.flavour == "ec2"
    assert 118 <= notice.seconds_left <= 120
    assert '"action": "terminate"' in notice.detail


def test_an_unreadable_spot_time_assumes_two_minutes(server: PreemptibleMetadataServer) -> None:
    server.spot_action = '{"action": "stop"}'
    notice = check_notice(open_metadata("ec2", endpoint=server.endpoint))
    assert notice is not None and notice.seconds_left == 120.0


def test_an_unreachable_server_is_a_config_error(closed_port: int) -> None:
    with pytest.raises(ConfigError, match="cannot reach the GCE metadata server"):
        check_notice(open_metadata("gce", endpoint=f"127.0.0.1:{closed_port}"))


def test_the_watcher_survives_failures_and_reports_one_notice(
    server: PreemptibleMetadataServer, closed_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    # first a server that is down: the watcher logs and goes on polling
    notices: list[Notice] = []
    down = PreemptionWatcher(
        open_metadata("gce", endpoint=f"127.0.0.1:{closed_port}"), notices.append, interval=0.05
    ).start()
    time.sleep(0.3)
    down.close()
    assert notices == [] and "preemption check failed (1 in a row)" in caplog.text
    watcher = PreemptionWatcher(
        open_metadata("gce", endpoint=server.host), notices.append, interval=0.05
    ).start()
    time.sleep(0.2)
    assert notices == [] and server.notice_polls >= 2
    server.preempted = True
    deadline = time.monotonic() + 5
    while not notices and time.monotonic() < deadline:
        time.sleep(0.02)
    watcher.close()
    polls = server.notice_polls
    time.sleep(0.2)
    assert len(notices) == 1 and server.notice_polls == polls  # stopped after the notice


STARTED = threading.Event()
SEEN: dict[str, Any] = {}


class Long(DaemonTask):
    """Runs until cancelled; notes when it saw the stop request and the cancellation."""

    name = "LONG"

    def execute(self, ds: Any) -> Result:
        STARTED.set()
        t0 = time.monotonic()
        while not self.context.cancelled():
            if self.context.stopping() and "stopping" not in SEEN:
                SEEN["stopping"] = time.monotonic() - t0
                self.context.checkpoint({"at": "stop"})
            time.sleep(0.01)
        SEEN["cancelled"] = time.monotonic()
        return Result(success=False, message="cancelled")


def test_a_spot_notice_stops_the_daemon_and_releases_running_work_before_the_end(
    server: PreemptibleMetadataServer, tmp_path: Path
) -> None:
    STARTED.clear()
    SEEN.clear()
    registry = TaskRegistry()
    registry.register(Long)
    body = TaskMessage(BasicInfo(1, "LONG", "")).to_json()
    open_queue("mem://tasks").send(body)
    open_queue("mem://tasks").send(TaskMessage(BasicInfo(2, "LONG", "")).to_json())
    daemon = DaemonService(
        queue=open_queue("mem://tasks"),
        registry=registry,
        datasource=BucketCacheDatasource(open_bucket("mem://b"), FileSystemCache(tmp_path / "c")),
        error_queue=open_queue("mem://errors"),
        # a grace longer than the notice leaves: the release must come from the notice
        settings=DaemonSettings(wait_seconds=0.05, poll_frequency_seconds=0.05, grace_seconds=60),
    )
    watcher = watch("ec2", [daemon], endpoint=server.endpoint, interval=0.05, margin=1.0)
    thread = threading.Thread(target=daemon.run)
    thread.start()
    try:
        assert STARTED.wait(5)
        server.announce_spot_interruption(3)
        noticed = time.monotonic()
        thread.join(10)
        assert not thread.is_alive()
    finally:
        watcher.close()
        daemon.stop()
        daemon.stop()
        thread.join(5)
    assert watcher.notice is not None
    assert "stopping" in SEEN  # the task saw the stop and checkpointed
    # released about margin (1 s) before the end (2-3 s after the notice), not after 60 s
    assert 0.5 <= SEEN["cancelled"] - noticed <= 3.5
    stats = daemon.stats
    assert stats.received == 1 and stats.succeeded == 0 and stats.released == 1
    assert open_queue("mem://tasks").counts().visible == 2  # both back for another worker
    assert open_bucket("mem://b").exists(checkpoint_key(body))  # the task's checkpoint
