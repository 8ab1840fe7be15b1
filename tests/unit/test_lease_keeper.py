"""LeaseKeeper.wait_until: its waiter is woken when its condition holds, not at every change."""

from __future__ import annotations

import threading
import time

from simpletasks.leases import LeaseKeeper
from simpletasks.queues import Message, open_queue


def test_a_waiter_is_woken_when_its_condition_holds_and_not_before() -> None:
    keeper = LeaseKeeper(open_queue("mem://lease-keeper-wake"), 30)
    messages = [Message(str(i), "{}") for i in range(3)]
    keeper.add(messages)
    waiter_checks: list[tuple[int, int]] = []
    result: list[bool] = []

    def empty_buffer(buffered: int, running: int) -> bool:
        if threading.current_thread() is thread:
            waiter_checks.append((buffered, running))
        return buffered == 0

    thread = threading.Thread(target=lambda: result.append(keeper.wait_until(empty_buffer, 5)))
    thread.start()
    deadline = time.monotonic() + 5
    while not waiter_checks and time.monotonic() < deadline:
        time.sleep(0.001)
    keeper.start(messages[0])  # two changes that leave the condition false:
    keeper.start(messages[1])  # the waiter sleeps on
    time.sleep(0.05)
    assert waiter_checks == [(3, 0)]
    keeper.start(messages[2])  # the buffer is empty: now it wakes
    thread.join(2)
    assert result == [True]
    assert waiter_checks == [(3, 0), (0, 3)]


def test_notify_wakes_a_waiter_whatever_its_condition() -> None:
    """``notify`` (the daemon's stop) always wakes: the waiter's condition reads a flag the
    keeper does not know about."""
    keeper = LeaseKeeper(open_queue("mem://lease-keeper-notify"), 30)
    stopping = threading.Event()
    result: list[bool] = []
    thread = threading.Thread(
        target=lambda: result.append(keeper.wait_until(lambda b, r: stopping.is_set(), 5))
    )
    thread.start()
    time.sleep(0.05)
    started = time.monotonic()
    stopping.set()
    keeper.notify()
    thread.join(2)
    assert result == [True] and time.monotonic() - started < 0.4  # not the 0.5 s re-check
