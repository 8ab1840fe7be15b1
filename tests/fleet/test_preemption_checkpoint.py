"""End to end: a Spot notice on one daemon process; the task resumes on another from its
checkpoint, with less than 1.3x the work of an uninterrupted run and the same output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fleet.longsum import expected
from fleet.preemptible import PreemptibleMetadataServer, preemptible_server  # noqa: F401

from simpletasks.buckets import open_bucket
from simpletasks.message import BasicInfo, TaskMessage
from simpletasks.queues import open_queue

HERE = Path(__file__).resolve().parent
STEPS = 60  # 3 s uninterrupted


def daemon(tmp_path: Path, name: str, *args: str, env: dict[str, str] | None = None) -> list[str]:
    return [
        sys.executable,
        "-m",
        "simpletasks",
        "run",
        "--name",
        name,
        "--cache-dir",
        str(tmp_path / f"cache-{name}"),
        "--wait",
        "0.2",
        "--poll-frequency",
        "0.2",
        *args,
    ]


@pytest.mark.slow
def test_a_preempted_task_resumes_elsewhere_from_its_checkpoint(
    tmp_path: Path,
    preemptible_server: PreemptibleMetadataServer,  # noqa: F811
) -> None:
    urls = {n: f"file://{tmp_path}/{n}" for n in ("tasks", "errors", "bucket")}
    open_queue(urls["tasks"], create=True).close()
    open_queue(urls["errors"], create=True).close()
    bucket = open_bucket(urls["bucket"], create=True)
    work_log = tmp_path / "work.log"
    payload = {"steps": STEPS, "work_log": str(work_log)}
    open_queue(urls["tasks"]).send(TaskMessage(BasicInfo(7, "LONG_SUM", ""), payload).to_json())
    server = preemptible_server
    server.data.ec2_tags.update(
        {
            "task-queue": urls["tasks"],
            "error-queue": urls["errors"],
            "bucket-name": urls["bucket"],
            "task-types": "fleet.longsum:LongSum",
        }
    )
    tests = str(HERE.parent)
    env = {**os.environ, **server.env(), "PYTHONPATH": tests}
    first = subprocess.Popen(
        daemon(tmp_path, "spot", "--from-metadata", "ec2", "--preemption-poll", "0.1"),
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while len(lines(work_log)) < STEPS // 2:
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline, "the first daemon did not get half-way"
            time.sleep(0.02)
        server.announce_spot_interruption(4)  # 4 s left, less than the 5 s margin: release now
        out, err = first.communicate(timeout=20)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, err
    assert "preemption notice" in err
    stats = json.loads(out.strip().splitlines()[-1])
    assert stats["released"] == 1 and stats["succeeded"] == 0
    done_first = len(lines(work_log))
    assert STEPS // 2 <= done_first < STEPS

    second = subprocess.run(
        daemon(
            tmp_path,
            "ondemand",
            "--burst",
            "--task",
            "fleet.longsum:LongSum",
            "--queue",
            urls["tasks"],
            "--error-queue",
            urls["errors"],
            "--bucket",
            urls["bucket"],
        ),
        env={**os.environ, "PYTHONPATH": tests},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout.strip().splitlines()[-1])["succeeded"] == 1
    work = lines(work_log)
    by = {
        name: [int(w.split()[1]) for w in work if w.startswith(name + " ")]
        for name in ("spot", "ondemand")
    }
    assert len(work) < 1.3 * STEPS, f"{len(work)} steps for {STEPS}"
    assert by["ondemand"][0] >= by["spot"][-1] - 5  # resumed near where the notice struck
    assert by["ondemand"][-1] == STEPS - 1
    out_path = tmp_path / "result"
    bucket.download("out/7", out_path)
    assert out_path.read_text() == expected(STEPS)  # identical to an uninterrupted run


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


@pytest.mark.slow
def test_a_gce_preemption_stops_a_daemon_process_and_releases_its_task(
    tmp_path: Path,
    preemptible_server: PreemptibleMetadataServer,  # noqa: F811
) -> None:
    urls = {n: f"file://{tmp_path}/{n}" for n in ("tasks", "errors", "bucket")}
    open_queue(urls["tasks"], create=True).close()
    open_queue(urls["errors"], create=True).close()
    open_bucket(urls["bucket"], create=True)
    log = tmp_path / "log"
    body = TaskMessage(BasicInfo(1, "SLEEP", ""), {"seconds": 60, "log": str(log)})
    open_queue(urls["tasks"]).send(body.to_json())
    server = preemptible_server
    server.data.gce_instance.update(
        {
            "task-queue": urls["tasks"],
            "error-queue": urls["errors"],
            "bucket-name": urls["bucket"],
            "task-types": "tasktypes:SleepTask",
        }
    )
    env = {**os.environ, **server.env(), "PYTHONPATH": str(HERE.parent)}
    # a 60 s grace: only the notice (30 s window on GCE, released 5 s before) or the
    # second stop can end it early; the test's margin makes it release at once
    cmd = daemon(tmp_path, "gce", "--from-metadata", "gce", "--preemption-poll", "0.1")
    proc = subprocess.Popen(
        [*cmd, "--grace", "60"], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while lines(log) != ["start 1"]:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.02)
        server.preempted = True
        noticed = time.monotonic()
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    took = time.monotonic() - noticed
    assert proc.returncode == 0, err
    assert "preemption notice (instance/preempted = TRUE)" in err
    assert "running tasks have 25 s before they are released" in err
    assert 24 <= took <= 35  # released 5 s before the 30 s window ends, not after 60 s
    assert json.loads(out.strip().splitlines()[-1])["released"] == 1
    assert open_queue(urls["tasks"]).counts().visible == 1
