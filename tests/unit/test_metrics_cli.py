"""`simpletasks run --metrics-port 0 --log-format json --status-file`: a daemon process
scraped over HTTP while it works; its JSON log lines name the task, message and attempt."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

if os.environ.get("CI") != "true":  # CI must have it (the [metrics] extra): fail there
    pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families

from simpletasks.buckets import open_bucket
from simpletasks.message import BasicInfo, TaskMessage
from simpletasks.metrics import MetricsMiddleware
from simpletasks.queues import open_queue

TESTS = Path(__file__).resolve().parents[1]


def command(tmp_path: Path, *extra: str) -> list[str]:
    for name in ("tasks", "errors"):
        open_queue(f"file://{tmp_path}/{name}", create=True).close()
    open_bucket(f"file://{tmp_path}/bucket", create=True)
    return [
        sys.executable,
        "-m",
        "simpletasks",
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
        "--task",
        "tasktypes:FailTask",
        "--wait",
        "0.2",
        "--poll-frequency",
        "0.2",
        "--retry-delay",
        "0",
        *extra,
    ]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(TESTS)}


def samples(port: int) -> dict[str, float]:
    """name{labels} -> value, with labels daemon and task only (the others summed)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            key = f"{s.name}{{{s.labels.get('task', '')}}}"
            out[key] = out.get(key, 0.0) + s.value
    return out


def wait_for(predicate: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)
    return value


def test_a_daemon_process_serves_metrics_that_agree_with_its_work(tmp_path: Path) -> None:
    log = tmp_path / "work.log"
    queue = open_queue(f"file://{tmp_path}/tasks", create=True)
    for i in range(4):
        payload = {"seconds": 0.4, "log": str(log)}
        queue.send(TaskMessage(BasicInfo(i, "SLEEP", ""), payload).to_json())
    fail = {"phase": "execute", "log": str(tmp_path / "fail.log"), "times": 1}
    queue.send(TaskMessage(BasicInfo(50, "FAIL", ""), fail).to_json())
    status_file = tmp_path / "status.json"
    cmd = command(tmp_path, "--metrics-port", "0", "--metrics-host", "127.0.0.1")
    cmd += ["--log-format", "json", "--status-file", str(status_file), "--name", "w7"]
    cmd += ["--concurrency", "2"]
    proc = subprocess.Popen(
        cmd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        status = wait_for(
            lambda: status_file.exists() and json.loads(status_file.read_text() or "{}")
        )
        port = status["metrics_port"]
        assert status["daemon"] == "w7" and status["pid"] == proc.pid
        during = wait_for(
            lambda: (s := samples(port)).get("simpletasks_tasks_in_flight{SLEEP}") == 2 and s
        )
        assert during["simpletasks_tasks_in_flight{SLEEP}"] == 2
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
            assert json.loads(r.read()) == {"ok": True, "daemons": {"w7": "ok"}}
        wait_for(lambda: samples(port).get("simpletasks_tasks_succeeded_total{FAIL}") == 1)
        wait_for(lambda: samples(port).get("simpletasks_tasks_succeeded_total{SLEEP}") == 4)
        after = samples(port)
        wait_for(lambda: json.loads(status_file.read_text()).get("succeeded") == 5, timeout=5)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    stats = json.loads(out.strip().splitlines()[-1])
    assert stats["succeeded"] == 5 and stats["retried"] == 1 and stats["received"] == 6
    assert after["simpletasks_tasks_received_total{SLEEP}"] == 4
    assert after["simpletasks_tasks_received_total{FAIL}"] == 2
    assert after["simpletasks_tasks_retried_total{FAIL}"] == 1
    assert after["simpletasks_tasks_failed_total{FAIL}"] == 1
    assert after["simpletasks_phase_seconds_count{SLEEP}"] == 4 * 3  # three phases each
    assert after["simpletasks_tasks_in_flight{SLEEP}"] == 0
    assert json.loads(status_file.read_text())["state"] == "stopped"

    records = [json.loads(line) for line in err.splitlines() if line.strip()]  # all JSON
    failed = [r for r in records if "will retry" in r["message"]]
    assert len(failed) == 1
    f = failed[0]
    assert f["level"] == "WARNING" and f["task"] == "FAIL" and f["task_id"] == 50
    assert f["attempt"] == 1 and f["message_id"] and f["daemon"] == "w7"
    assert f["thread"].startswith("st-w7-worker")
    assert any(f"metrics on http://127.0.0.1:{port}/metrics" in r["message"] for r in records)
    daemon_lines = [r for r in records if r["thread"] == "MainThread"]
    assert daemon_lines and all("task" not in r for r in daemon_lines)


def test_a_metrics_port_in_use_is_one_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cmd = command(tmp_path, "--metrics-port", str(port), "--metrics-host", "127.0.0.1")
        done = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert f"Error: metrics port {port} on 127.0.0.1 is in use" in done.stderr
    assert "Traceback" not in done.stderr


def test_message_age_is_observed_where_the_queue_tells_the_send_time() -> None:
    from types import SimpleNamespace

    from simpletasks.metrics import Metrics

    metrics = Metrics()
    mw: MetricsMiddleware = metrics.middleware("d")
    body = TaskMessage(BasicInfo(1, "SLEEP", "")).to_json()
    mw.on_received(SimpleNamespace(id="a", body=body, attempt=1, sent_at=time.time() - 42))
    mw.on_received(SimpleNamespace(id="b", body=body, attempt=1))  # no send time: not observed
    age = metrics.registry.get_sample_value(
        "simpletasks_message_age_seconds_count", {"daemon": "d", "task": "SLEEP"}
    )
    total = metrics.registry.get_sample_value(
        "simpletasks_message_age_seconds_sum", {"daemon": "d", "task": "SLEEP"}
    )
    assert age == 1 and 41 <= total <= 44
