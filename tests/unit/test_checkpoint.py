"""Checkpoints: a task interrupted on one daemon resumes on another from its last checkpoint."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from simpletasks.buckets import open_bucket
from simpletasks.buckets.memory import MemoryBucket
from simpletasks.cache import FileSystemCache
from simpletasks.checkpoint import Checkpoints, checkpoint_key
from simpletasks.context import TaskContext
from simpletasks.daemon import DaemonService
from simpletasks.datasource import BucketCacheDatasource
from simpletasks.message import BasicInfo, TaskMessage
from simpletasks.queues import open_queue
from simpletasks.queues.memory import MemoryQueue
from simpletasks.registry import TaskRegistry
from simpletasks.settings import DaemonSettings
from simpletasks.task import DaemonTask, Result

STEPS = 40
WORK: list[int] = []  # every step executed, by every delivery


@pytest.fixture(autouse=True)
def _fresh() -> Iterator[None]:
    MemoryQueue.reset_all()
    MemoryBucket.reset_all()
    WORK.clear()
    yield
    MemoryQueue.reset_all()
    MemoryBucket.reset_all()


class Steps(DaemonTask):
    """Sums 0..STEPS-1 one step at a time (10 ms each), checkpointing after each step."""

    name = "STEPS"

    def execute(self, ds: object) -> Result:
        state = self.context.restore() or {"next": 0, "total": 0}
        for step in range(state["next"], STEPS):
            if self.context.cancelled():
                return Result(success=False, message="cancelled")
            time.sleep(0.01)
            WORK.append(step)
            state = {"next": step + 1, "total": state["total"] + step}
            self.context.checkpoint(state)
        return Result(success=True, message=str(state["total"]))

    def finalize(self, ds: object, result: Result) -> None:
        ds.put("out/total", result.message.encode())  # type: ignore[attr-defined]


def daemon(tmp_path: Path, name: str, **settings: object) -> DaemonService:
    registry = TaskRegistry()
    registry.register(Steps)
    ds = BucketCacheDatasource(open_bucket("mem://data"), FileSystemCache(tmp_path / name))
    return DaemonService(
        queue=open_queue("mem://tasks"),
        registry=registry,
        datasource=ds,
        error_queue=open_queue("mem://errors"),
        settings=DaemonSettings(wait_seconds=0.05, poll_frequency_seconds=0.05, **settings),  # type: ignore[arg-type]
        name=name,
    )


def test_an_interrupted_task_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    body = TaskMessage(BasicInfo(1, "STEPS", "")).to_json()
    open_queue("mem://tasks").send(body)
    first = daemon(tmp_path, "first", grace_seconds=0)
    thread = threading.Thread(target=first.run)
    thread.start()
    deadline = time.monotonic() + 5
    while len(WORK) < STEPS // 2 and time.monotonic() < deadline:
        time.sleep(0.005)
    first.stop()  # preempted half-way: released after a zero grace period
    thread.join(5)
    assert first.stats.succeeded == 0 and first.stats.released == 1
    done_before = len(WORK)
    assert STEPS // 2 <= done_before < STEPS

    second = daemon(tmp_path, "second", burst=True)
    assert second.run().succeeded == 1
    assert len(WORK) < 1.3 * STEPS  # resumed, not restarted
    assert WORK[done_before] >= done_before - 1  # picked up at (or one before) the last step
    bucket = open_bucket("mem://data")
    import io

    out = io.BytesIO()
    bucket.download_fileobj("out/total", out)
    assert out.getvalue() == str(sum(range(STEPS))).encode()
    assert not bucket.exists(checkpoint_key(body))  # deleted after success


def test_checkpoint_round_trips_bytes_and_json() -> None:
    bucket = open_bucket("mem://data")
    c = Checkpoints(bucket, "body")
    assert c.load() is None
    c.save(b"\x00raw")
    assert c.load() == b"\x00raw"
    c.save({"a": [1, 2]})
    assert c.load() == {"a": [1, 2]}
    assert Checkpoints(bucket, "other body").load() is None
    c.delete()
    c.delete()  # a missing checkpoint is fine
    assert c.load() is None


def test_without_a_bucket_checkpoints_say_what_is_missing() -> None:
    context = TaskContext()
    with pytest.raises(RuntimeError, match="without checkpoint storage"):
        context.checkpoint({"x": 1})
    with pytest.raises(RuntimeError, match="need a bucket"):
        Checkpoints(None, "b").save(b"x")
