"""Lease expiry in the memory and file queues, on an injected clock instead of sleeps.

Each test moves a fake clock across a lease's end and checks what ``receive``, ``counts``
and the settling calls see just before and just after it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from simpletasks.queues import QueueCounts
from simpletasks.queues.file import FileQueue
from simpletasks.queues.memory import MemoryQueue


class FakeClock:
    """Seconds that move only when a test says so."""

    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


Factory = Callable[[FakeClock], MemoryQueue | FileQueue]


@pytest.fixture(params=["mem", "file"])
def make(request: pytest.FixtureRequest, tmp_path: Path) -> Factory:
    if request.param == "mem":
        MemoryQueue.reset_all()
        return lambda clock: MemoryQueue("leases", clock=clock)
    return lambda clock: FileQueue(tmp_path / "q", create=True, clock=clock)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(time.time())  # the file queue stores expiries as file times


def test_a_lease_ends_exactly_when_the_clock_passes_it(make: Factory, clock: FakeClock) -> None:
    queue = make(clock)
    queue.send("work")
    [first] = queue.receive(lease_seconds=100)
    clock.advance(99.5)
    assert queue.receive() == []
    assert queue.counts() == QueueCounts(visible=0, in_flight=1)
    clock.advance(0.6)
    assert queue.counts() == QueueCounts(visible=1, in_flight=0)
    [second] = queue.receive(lease_seconds=100)
    assert (second.id, second.body, second.attempt) == (first.id, "work", 2)


def test_extend_moves_the_end_from_now(make: Factory, clock: FakeClock) -> None:
    queue = make(clock)
    queue.send_batch(["a", "b"])
    held = queue.receive(2, lease_seconds=10)
    clock.advance(9)
    assert queue.extend_many(held, 10) == []
    clock.advance(9)  # 18 s after receive: past the first lease, inside the extended one
    assert queue.receive() == []
    clock.advance(2)
    assert sorted(m.body for m in queue.receive(5)) == ["a", "b"]


def test_settling_after_expiry_is_ignored_and_reported(
    make: Factory, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    queue = make(clock)
    queue.send("x")
    [stale] = queue.receive(lease_seconds=5)
    clock.advance(6)
    [current] = queue.receive(lease_seconds=5)
    assert queue.extend_many([stale, current], 30) == [stale]
    queue.ack(stale)
    assert "ignored" in caplog.text
    clock.advance(20)  # inside the extended lease of the current delivery
    assert queue.counts() == QueueCounts(visible=0, in_flight=1)
    queue.ack(current)
    clock.advance(100)
    assert queue.counts() == QueueCounts(visible=0, in_flight=0)


def test_a_zero_lease_is_visible_again_at_once(make: Factory, clock: FakeClock) -> None:
    queue = make(clock)
    queue.send("x")
    [first] = queue.receive(lease_seconds=0)
    [second] = queue.receive()
    assert second.id == first.id and second.attempt == 2
