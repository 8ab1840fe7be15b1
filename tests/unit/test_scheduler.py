"""``schedule()``: every message is checked before any is sent; batches, threads, hand-off.

Every backend's side (the messages arrive, once) is in tests/contract/test_queues.py.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Sequence
from typing import Any

import pytest

from simpletasks.errors import BatchError, MessageError
from simpletasks.message import BasicInfo, TaskMessage
from simpletasks.queues import QueueCapabilities, open_queue
from simpletasks.queues._checks import CheckedBodies
from simpletasks.scheduler import ScheduleError, schedule


def task(i: int, name: str = "NO_OP") -> TaskMessage:
    return TaskMessage(BasicInfo(i, name, ""))


class Recorder:
    """A queue that records the batches it is sent (and how many sends ran at once)."""

    url = "test://recorder"

    def __init__(
        self, max_batch: int = 3, max_body_bytes: int | None = None, overlap: bool = False
    ) -> None:
        self.capabilities = QueueCapabilities(max_batch=max_batch, max_body_bytes=max_body_bytes)
        self.batches: list[Sequence[str]] = []
        self._lock = threading.Lock()
        self.running = self.most_running = self.calls = 0
        # with overlap, the first two sends wait for each other (up to 5 s)
        self._overlap = threading.Barrier(2, timeout=5) if overlap else None

    def send_batch(self, bodies: Sequence[str]) -> None:
        with self._lock:
            self.running += 1
            self.calls += 1
            first_two = self.calls <= 2
            self.most_running = max(self.most_running, self.running)
        if self._overlap is not None and first_two:
            with contextlib.suppress(threading.BrokenBarrierError):
                self._overlap.wait()
        with self._lock:
            self.running -= 1
            self.batches.append(bodies)


def test_every_message_is_sent_once_in_batches_of_max_batch() -> None:
    queue = Recorder(max_batch=3, overlap=True)
    messages = [task(i) for i in range(5)] + [task(5).to_json(), task(6).to_json()]
    assert schedule(queue, messages, threads=2) == 7  # type: ignore[arg-type]
    assert sorted(len(b) for b in queue.batches) == [1, 3, 3]
    sent = sorted(TaskMessage.from_json(body).basic_info.id for b in queue.batches for body in b)
    assert sent == list(range(7))
    assert queue.most_running == 2  # threads are honoured: two sends overlapped


def test_batches_are_handed_down_as_checked() -> None:
    queue = Recorder()
    schedule(queue, [task(i) for i in range(4)], threads=1)  # type: ignore[arg-type]
    assert all(type(batch) is CheckedBodies for batch in queue.batches)


@pytest.mark.parametrize(
    ("bad", "error", "match"),
    [
        ("{not json", MessageError, "not JSON"),
        (task(9, "NO\uffffOP").to_json(), ValueError, r"bodies\[7\] contains character U\+FFFF"),
        (task(9, "NO\ud800OP"), ValueError, r"bodies\[7\] contains character U\+D800"),
    ],
    ids=["malformed-json", "bad-character-in-text", "bad-character-in-a-task"],
)
def test_a_late_malformed_message_stops_everything_before_any_send(
    bad: Any, error: type[Exception], match: str
) -> None:
    queue = Recorder(max_batch=2)
    with pytest.raises(error, match=match):
        schedule(queue, [task(i) for i in range(7)] + [bad], threads=1)  # type: ignore[arg-type]
    assert queue.batches == []


def test_a_late_body_over_the_size_limit_stops_everything_before_any_send() -> None:
    unnamed = task(0, "").to_json()
    queue = Recorder(max_batch=2, max_body_bytes=len(unnamed.encode()) + 10)  # names of 10 fit
    big = task(1, "N" * 11)
    multibyte = task(1, "\u00e9" * 6)  # fewer characters than fit, but 12 bytes of UTF-8
    for late in (big, multibyte):
        with pytest.raises(ValueError, match=r"bodies\[4\] is \d+ bytes of UTF-8; queue test://"):
            schedule(queue, [task(0)] * 4 + [late], threads=1)  # type: ignore[arg-type]
        assert queue.batches == []
    fits = task(1, "N" * 10)
    assert schedule(queue, [task(0)] * 4 + [fits], threads=1) == 5  # type: ignore[arg-type]


def test_send_batch_called_directly_still_checks_every_body() -> None:
    queue = open_queue("mem://scheduler-direct")
    with pytest.raises(ValueError, match=r"bodies\[1\] contains character U\+0000"):
        queue.send_batch(["fine", "a\x00b"])
    with pytest.raises(ValueError, match=r"bodies\[0\] must not be empty"):
        queue.send_batch(("", "fine"))  # any other sequence is checked too
    assert queue.receive(10) == []


class Failing(Recorder):
    """Fails whole batches whose first message id is in ``down``, and the second half of
    batches whose first id is in ``half`` (a BatchError: the first half went out)."""

    def __init__(self, down: set[int], half: frozenset[int] = frozenset()) -> None:
        super().__init__(max_batch=4)
        self.down, self.half = down, half

    def send_batch(self, bodies: Sequence[str]) -> None:
        first = TaskMessage.from_json(bodies[0]).basic_info.id
        if first in self.down:
            raise ConnectionError(f"queue down at {first}")
        if first in self.half:
            keep = len(bodies) // 2
            super().send_batch(bodies[:keep])
            failed = [(i, "Throttled", "slow down") for i in range(keep, len(bodies))]
            raise BatchError("some failed", failed)
        super().send_batch(bodies)


def test_failed_batches_do_not_stop_the_others_and_are_listed_exactly() -> None:
    queue = Failing(down={4}, half={12})
    messages = [task(i) for i in range(18)]
    with pytest.raises(ScheduleError) as caught:
        schedule(queue, messages, threads=2)  # type: ignore[arg-type]
    error = caught.value
    unsent = [4, 5, 6, 7, 14, 15]  # batch 4-7 down; the second half of batch 12-15
    assert error.failed_indexes == unsent
    assert error.sent == 12 and len(error.bodies) == 18
    assert [TaskMessage.from_json(b).basic_info.id for b in error.unsent] == unsent
    sent = sorted(TaskMessage.from_json(body).basic_info.id for b in queue.batches for body in b)
    assert sent == sorted(set(range(18)) - set(unsent))  # everything else went, once
    assert str(error).startswith("sent 12 of 18 message(s) to test://recorder; 6 not sent")
    assert "ConnectionError: queue down at 4" in str(error)
