"""Work is never lost: daemon processes killed, stopped and outlasted by their tasks.

These run real ``python -m simpletasks run`` processes on SQS (a moto server) and on the
file queue, with the task types and the harness of ``benchmarks/`` (see RELIABILITY.md);
the full-size runs are the ``slow`` tests at the end and the scripts in ``benchmarks/``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

from _daemons import (  # noqa: E402
    Cluster,
    DaemonProcess,
    make_cluster,
    read_executions,
    stop_all,
    wait_until,
)
from chaos import ChaosParams, problems, run_chaos  # noqa: E402
from chaos_tasks import expected_output, output_key  # noqa: E402

from simpletasks.emulators.moto import MotoServer  # noqa: E402
from simpletasks.message import BasicInfo, TaskMessage  # noqa: E402
from simpletasks.queues import QueueCounts  # noqa: E402


def cluster_for(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Cluster:
    moto = request.getfixturevalue("moto_server") if backend == "sqs" else None
    if backend == "amqp":
        request.getfixturevalue("rabbitmq_url")  # the machine's broker answers (or skip/fail)
    cluster = make_cluster(backend, tmp_path, moto)
    request.addfinalizer(cluster.close)  # on RabbitMQ: delete the run's queues
    return cluster


def send_chaos_task(cluster: Cluster, seconds: float, task_id: int = 1) -> Path:
    log_dir = cluster.workdir / "runs"
    log_dir.mkdir(exist_ok=True)
    body = TaskMessage(
        BasicInfo(task_id, "CHAOS", ""), {"log_dir": str(log_dir), "seconds": seconds}
    )
    cluster.queue().send(body.to_json())
    return log_dir


def drained(cluster: Cluster) -> bool:
    return cluster.counts() == QueueCounts(visible=0, in_flight=0)


def assert_clean(cluster: Cluster, task_id: int = 1) -> None:
    """The task's output is right, the task queue is empty and no error was reported."""
    key = output_key(task_id)
    assert cluster.read_outputs([key]) == {key: expected_output(task_id)}
    counts = cluster.counts()
    assert (counts.visible, counts.in_flight) == (0, 0)
    assert cluster.counts(cluster.error_url).visible == 0, cluster.drain_reports(cluster.error_url)


@pytest.mark.parametrize("backend", ["sqs", "file", "amqp"])
def test_sigkilled_daemons_lose_nothing(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    cluster = cluster_for(backend, tmp_path, request)
    params = ChaosParams(
        tasks=60,
        daemons=2,
        kills=2,
        interval=(1.0, 1.5),
        lease=2,
        grace=2,
        concurrency=2,
        task_seconds=0.25,
        timeout=60,
    )
    result = run_chaos(cluster, params)
    assert problems(result) == [], result
    assert result["kills"] == 2
    assert result["kills_mid_task"] >= 1, "no kill hit a running task"
    assert result["lost"] == 0


def test_sigterm_mid_task_on_sqs_releases_the_lease_within_a_second(
    tmp_path: Path, moto_server: MotoServer
) -> None:
    cluster = make_cluster("sqs", tmp_path, moto_server)
    log_dir = send_chaos_task(cluster, seconds=3)
    first = DaemonProcess(cluster, "first", lease=30, grace=0)
    wait_until(lambda: (log_dir / "1").exists(), 30, "task started")
    first.terminate()
    released_after = wait_until(lambda: cluster.counts().visible == 1, 5, "lease released")
    assert released_after < 1.0, f"lease released {released_after:.2f} s after SIGTERM"
    assert first.wait(10) == 0, first.stderr_tail()
    assert first.stats()["released"] == 1  # type: ignore[index]

    second = DaemonProcess(cluster, "second", lease=30, extra=("--burst",))
    assert second.wait(60) == 0, second.stderr_tail()
    runs = read_executions(log_dir)[1]
    assert [(r.pid, r.end is not None) for r in runs] == [(first.pid, False), (second.pid, True)]
    assert_clean(cluster)


def test_sigterm_with_short_grace_during_a_long_task_loses_nothing(
    tmp_path: Path, moto_server: MotoServer
) -> None:
    # A 5 s task on a 2 s lease; its daemon gets SIGTERM with 1 s of grace. The other daemon,
    # idle on the same queue, must take the released task over and finish it.
    cluster = make_cluster("sqs", tmp_path, moto_server)
    daemons = [DaemonProcess(cluster, name, lease=2, grace=1) for name in ("a", "b")]
    wait_until(lambda: all(d.ready() for d in daemons), 30, "daemons started")
    log_dir = send_chaos_task(cluster, seconds=5)
    wait_until(lambda: (log_dir / "1").exists(), 30, "task started")
    first_pid = read_executions(log_dir)[1][0].pid
    (victim,) = [d for d in daemons if d.pid == first_pid]
    (other,) = [d for d in daemons if d is not victim]
    victim.terminate()
    signalled = time.monotonic()
    assert victim.wait(10) == 0, victim.stderr_tail()
    exited_after = time.monotonic() - signalled
    assert exited_after < 3.0, f"exited {exited_after:.1f} s after SIGTERM with grace 1 s"
    assert victim.stats()["released"] == 1  # type: ignore[index]
    wait_until(lambda: drained(cluster), 30, "task done")
    assert list(stop_all([other]).values()) == [0], other.stderr_tail()
    runs = read_executions(log_dir)[1]
    assert [(r.pid, r.end is not None) for r in runs] == [(victim.pid, False), (other.pid, True)]
    assert_clean(cluster)


def test_a_task_longer_than_three_leases_runs_once_on_sqs(
    tmp_path: Path, moto_server: MotoServer
) -> None:
    # Lease 2 s, task 7 s, two daemons polling the queue: only the heartbeat keeps the second
    # daemon from receiving the message while it runs.
    cluster = make_cluster("sqs", tmp_path, moto_server)
    log_dir = send_chaos_task(cluster, seconds=7)
    daemons = [DaemonProcess(cluster, name, lease=2) for name in ("a", "b")]
    wait_until(lambda: (log_dir / "1").exists() and drained(cluster), 60, "task done")
    assert set(stop_all(daemons).values()) == {0}
    runs = read_executions(log_dir)[1]
    assert len(runs) == 1 and runs[0].end is not None, runs
    assert runs[0].end - runs[0].start >= 7
    assert sum(d.stats()["succeeded"] for d in daemons) == 1  # type: ignore[index]
    assert_clean(cluster)


# -- full-size runs (pytest -m slow) ---------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqs", "file"])
def test_full_crash_run(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    cluster = cluster_for(backend, tmp_path, request)
    # The file queue runs 0.1 s tasks too fast for 10 kills: give it longer ones. A kill
    # every 1-2 s (not the benchmark's 2-4 s): on a fast host moto drained the queue after 9.
    seconds = 0.1 if backend == "sqs" else 0.5
    params = ChaosParams(tasks=1000, daemons=4, kills=10, task_seconds=seconds, interval=(1.0, 2.0))
    result = run_chaos(cluster, params)
    assert problems(result) == [], result
    assert result["kills"] == 10


@pytest.mark.slow
def test_long_tasks_on_a_short_lease_run_exactly_once(
    tmp_path: Path, moto_server: MotoServer
) -> None:
    cluster = make_cluster("sqs", tmp_path, moto_server)
    params = ChaosParams(tasks=8, daemons=4, kills=0, lease=5, concurrency=2, task_seconds=20)
    result = run_chaos(cluster, params)
    assert problems(result) == [], result
    assert result["executions"] == 8 and result["duplicates"] == 0


@pytest.mark.slow
def test_sigterm_with_short_grace_during_long_tasks_loses_nothing(
    tmp_path: Path, moto_server: MotoServer
) -> None:
    cluster = make_cluster("sqs", tmp_path, moto_server)
    params = ChaosParams(
        tasks=12,
        daemons=3,
        kills=3,
        interval=(5, 8),
        signal="term",
        lease=5,
        grace=2,
        concurrency=2,
        task_seconds=20,
    )
    result = run_chaos(cluster, params)
    assert problems(result) == [], result
    assert result["kills"] == 3
    assert result["sigterm_to_exit_seconds_max"] < params.grace + 3
