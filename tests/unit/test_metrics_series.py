"""The metrics middleware's task series: exposed as prometheus_client's own metrics would be."""

from __future__ import annotations

import os
import threading
import types
from typing import Any

import pytest

if os.environ.get("CI") != "true":  # CI must have it (the [metrics] extra): fail there
    pytest.importorskip("prometheus_client")
import prometheus_client as prom
from prometheus_client.parser import text_string_to_metric_families

from simpletasks.message import BasicInfo, TaskMessage
from simpletasks.metrics import Metrics
from simpletasks.metrics_series import AGE_BUCKETS, PHASE_BUCKETS
from simpletasks.queues import Message


def samples(registry: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the registry's exposition but ``_created``, by (name, labels)."""
    text = prom.generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if not s.name.endswith("_created")
    }


class Reference:
    """The same families made of prometheus_client's Counter, Gauge and Histogram."""

    def __init__(self) -> None:
        self.registry = prom.CollectorRegistry()
        labels = ("daemon", "task")
        reg = self.registry
        self.counters = {
            name: prom.Counter(f"simpletasks_tasks_{name}", "x", labels, registry=reg)
            for name in ("received", "succeeded", "failed", "retried", "dead_lettered")
        }
        self.in_flight = prom.Gauge("simpletasks_tasks_in_flight", "x", labels, registry=reg)
        self.phases = prom.Histogram(
            "simpletasks_phase_seconds",
            "x",
            (*labels, "phase", "outcome"),
            buckets=PHASE_BUCKETS,
            registry=reg,
        )
        self.age = prom.Histogram(
            "simpletasks_message_age_seconds", "x", labels, buckets=AGE_BUCKETS, registry=reg
        )


def body(name: str, i: int = 0) -> str:
    return TaskMessage(BasicInfo(i, name, "")).to_json()


def test_task_series_are_exposed_as_prometheus_client_would_expose_them() -> None:
    metrics = Metrics()
    mw = metrics.middleware("d")
    ref = Reference()
    # Durations on and around bucket bounds (a bound belongs to its own bucket), and beyond.
    durations = [0.0, 0.005, 0.0051, 0.01, 0.3, 1.0, 2.5, 899.0, 900.0, 5000.0]
    for i, seconds in enumerate(durations):
        for name, ok in (("COPY", True), ("BOOM", False)):
            message = Message(f"{name}-{i}", body(name, i), sent_at=1.0)
            task = types.SimpleNamespace(name=name)
            mw.on_received(message)
            mw.after_phase(task, message, "execute", seconds, None if ok else ValueError())
            if ok:
                mw.on_acked(task, message, None)
            else:
                mw.on_retried(task, message, None)  # type: ignore[arg-type]
    mw.on_received(Message("bad", "not json"))
    mw.on_dead_lettered(None, Message("bad", "not json"), None)  # type: ignore[arg-type]
    mw.on_received(Message("running", body("COPY", 99)))  # still in flight

    for seconds in durations:
        for name, outcome in (("COPY", "ok"), ("BOOM", "error")):
            ref.counters["received"].labels("d", name).inc()
            ref.phases.labels("d", name, "execute", outcome).observe(seconds)
            ref.age.labels("d", name).observe(0)  # sent_at=1.0: long ago, never negative
            ref.counters["succeeded" if outcome == "ok" else "retried"].labels("d", name).inc()
            if outcome == "error":
                ref.counters["failed"].labels("d", name).inc()
    ref.counters["received"].labels("d", "?").inc()
    ref.counters["failed"].labels("d", "?").inc()
    ref.counters["dead_lettered"].labels("d", "?").inc()
    ref.counters["received"].labels("d", "COPY").inc()
    ref.in_flight.labels("d", "COPY").set(1)
    for name in ("BOOM", "?"):
        ref.in_flight.labels("d", name).set(0)

    ours, theirs = samples(metrics.registry), samples(ref.registry)
    ages = {k for k in theirs if k[0].startswith("simpletasks_message_age_seconds")}
    for key in ages:  # ages are now - 1.0 s: compare where they fall, not their sum
        if key[0].endswith("_sum"):
            assert ours.pop(key) > 1e9
            theirs.pop(key)
        elif key[0].endswith("_bucket"):
            assert ours[key] == (0 if dict(key[1])["le"] != "+Inf" else theirs[key])
            ours.pop(key), theirs.pop(key)
    task_keys = {k: v for k, v in ours.items() if dict(k[1]).get("daemon") == "d"}
    assert {k: v for k, v in task_keys.items() if k in theirs} == {
        k: v for k, v in theirs.items() if dict(k[1]).get("daemon") == "d"
    }
    extra = {k: v for k, v in task_keys.items() if k not in theirs}
    assert extra and set(extra.values()) == {0}  # ours shows every counter of a task, at 0


def test_counts_are_exact_under_many_threads() -> None:
    metrics = Metrics()
    mw = metrics.middleware("d")
    task = types.SimpleNamespace(name="COPY")
    per_thread, threads = 2000, 8

    def work(t: int) -> None:
        for i in range(per_thread):
            message = Message(f"{t}-{i}", body("COPY", i))
            mw.on_received(message)
            for phase in ("prepare", "execute", "finalize"):
                mw.after_phase(task, message, phase, 0.001 * (i % 7), None)
            mw.on_acked(task, message, None)

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    got = samples(metrics.registry)
    labels = (("daemon", "d"), ("task", "COPY"))
    total = per_thread * threads
    assert got["simpletasks_tasks_received_total", labels] == total
    assert got["simpletasks_tasks_succeeded_total", labels] == total
    assert got["simpletasks_tasks_in_flight", labels] == 0
    phase = (*labels[:1], ("outcome", "ok"), ("phase", "execute"), labels[1])
    assert got["simpletasks_phase_seconds_count", phase] == total


def test_a_name_taken_by_another_collector_is_refused() -> None:
    metrics = Metrics()
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        prom.Counter("simpletasks_tasks_received", "again", registry=metrics.registry)
