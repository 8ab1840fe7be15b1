"""The daemon as a real process: SIGTERM mid-task loses nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from simpletasks.buckets import open_bucket
from simpletasks.message import BasicInfo, TaskMessage
from simpletasks.queues import open_queue

TESTS = Path(__file__).resolve().parents[1]


def start_daemon(tmp_path: Path, *extra: str) -> subprocess.Popen[str]:
    for name in ("tasks", "errors"):  # file:// queues and buckets must exist (created once)
        open_queue(f"file://{tmp_path}/{name}", create=True).close()
    open_bucket(f"file://{tmp_path}/bucket", create=True)
    cmd = [
        sys.executable,
        "-m",
        "simpletasks",
        "--log-level",
        "debug",
        "run",
        "--queue",
        f"file://{tmp_path}/tasks",
        "--error-queue",
        f"file://{tmp_path}/errors",
        "--bucket",
        f"file://{tmp_path}/bucket",
        "--cache-dir",
        str(tmp_path / "cache"),
        "--task",
        "tasktypes:SleepTask",
        "--wait",
        "0.2",
        "--poll-frequency",
        "0.2",
        "--lease",
        "30",
        *extra,
    ]
    env = {**os.environ, "PYTHONPATH": f"{TESTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(predicate: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def send_sleep(tmp_path: Path, seconds: float) -> Path:
    log = tmp_path / "log"
    body = TaskMessage(BasicInfo(1, "SLEEP", ""), {"seconds": seconds, "log": str(log)})
    open_queue(f"file://{tmp_path}/tasks", create=True).send(body.to_json())
    return log


def test_sigterm_mid_task_releases_the_lease_and_another_daemon_finishes(tmp_path: Path) -> None:
    log = send_sleep(tmp_path, 3)
    proc = start_daemon(tmp_path, "--grace", "0")
    wait_for(lambda: lines(log) == ["start 1"])
    proc.send_signal(signal.SIGTERM)
    queue = open_queue(f"file://{tmp_path}/tasks")
    signalled = time.monotonic()
    wait_for(lambda: queue.counts().visible == 1, timeout=5)
    released_after = time.monotonic() - signalled
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert released_after < 1.0, f"lease released {released_after:.2f} s after SIGTERM"
    assert json.loads(out.strip().splitlines()[-1])["released"] == 1

    second = start_daemon(tmp_path, "--burst")
    out, err = second.communicate(timeout=30)
    assert second.returncode == 0, err
    assert lines(log) == ["start 1", "start 1", "end 1"]
    counts = queue.counts()
    assert (counts.visible, counts.in_flight) == (0, 0)
    assert open_queue(f"file://{tmp_path}/errors").counts().visible == 0


def test_sigterm_within_grace_lets_the_task_finish(tmp_path: Path) -> None:
    log = send_sleep(tmp_path, 1)
    proc = start_daemon(tmp_path, "--grace", "20")
    wait_for(lambda: lines(log) == ["start 1"])
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert lines(log) == ["start 1", "end 1"]
    assert json.loads(out.strip().splitlines()[-1])["succeeded"] == 1
    counts = open_queue(f"file://{tmp_path}/tasks").counts()
    assert (counts.visible, counts.in_flight) == (0, 0)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_idle_daemon_exits_zero_on_signal(tmp_path: Path, sig: int) -> None:
    proc = start_daemon(tmp_path)
    time.sleep(1.5)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
