"""MiddlewareChain: which middleware an event reaches, in which order, and broken ones."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from simpletasks.middleware import Middleware, MiddlewareChain


class Phases(Middleware):
    def __init__(self, calls: list[str], name: str) -> None:
        self.calls, self.name = calls, name

    def before_phase(self, task: Any, message: Any, phase: str) -> None:
        self.calls.append(f"{self.name}.before")

    def after_phase(self, task: Any, message: Any, phase: str, seconds: float, error: Any) -> None:
        self.calls.append(f"{self.name}.after")


class Acks:
    """Not a Middleware subclass: only the events it has are called."""

    def __init__(self, calls: list[str]) -> None:
        self.calls = calls

    def on_acked(self, task: Any, message: Any, result: Any) -> None:
        self.calls.append("acks.acked")


def test_events_reach_the_middleware_that_handle_them_in_order() -> None:
    calls: list[str] = []
    chain = MiddlewareChain([Phases(calls, "a"), Acks(calls), Phases(calls, "b")])
    chain.emit("before_phase", None, None, "prepare")
    chain.emit("after_phase", None, None, "prepare", 0.1, None)
    chain.emit("on_acked", None, None, None)
    chain.emit("on_received", None)  # nobody handles it: nothing happens
    assert calls == ["a.before", "b.before", "b.after", "a.after", "acks.acked"]
    assert chain.handles("after_phase") and chain.handles("on_acked")
    assert not chain.handles("on_received") and not chain.handles("on_start")


def test_a_chain_of_base_class_middleware_handles_nothing() -> None:
    chain = MiddlewareChain([Middleware(), Middleware()])
    assert chain  # it has middleware...
    assert not any(chain.handles(event) for event in ("on_received", "after_phase", "on_acked"))


def test_a_failing_middleware_is_logged_and_the_others_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[str] = []

    class Broken(Middleware):
        def on_acked(self, task: Any, message: Any, result: Any) -> None:
            raise RuntimeError("exporter down")

    chain = MiddlewareChain([Acks(calls), Broken()])
    with caplog.at_level(logging.ERROR, logger="simpletasks.middleware"):
        chain.emit("on_acked", None, None, None)
    assert calls == ["acks.acked"]  # reverse order: Broken first, and Acks still ran
    assert "middleware Broken.on_acked failed; ignoring" in caplog.text
