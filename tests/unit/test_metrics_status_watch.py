"""`simpletasks status --watch`: live counts and rates until interrupted."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from simpletasks.cli import main
from simpletasks.queues import open_queue


def test_watch_shows_counts_and_rates_for_a_bounded_number_of_refreshes(tmp_path: Path) -> None:
    url = f"file://{tmp_path}/tasks"
    queue = open_queue(url, create=True)
    for i in range(40):
        queue.send(f"m{i}")
    stop = threading.Event()

    def consume() -> None:  # 10 messages every 0.1 s: the queue drains
        while not stop.is_set():
            for m in queue.receive(10, wait_seconds=0, lease_seconds=60):
                queue.ack(m)
            stop.wait(0.1)

    result = None
    thread = threading.Thread(target=consume)
    try:
        runner = CliRunner()
        args = ["status", url, "--watch", "--interval", "0.2", "--refreshes", "3"]
        thread.start()
        result = runner.invoke(main, args)
    finally:
        stop.set()
        thread.join()
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 3 and all(f"\t{url}\tvisible=" in line for line in lines)
    assert "visible/s" not in lines[0]  # no rate before a second sample
    assert "visible/s=-" in lines[1] and "total/s=-" in lines[1]


def test_a_missing_queue_is_one_clear_error(tmp_path: Path) -> None:
    args = ["status", f"file://{tmp_path}/gone", "--watch", "--refreshes", "1"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and "does not exist" in result.output


def test_a_failed_count_is_reported_and_watching_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from simpletasks.queues.file import FileQueue

    url = f"file://{tmp_path}/tasks"
    open_queue(url, create=True).send("x")
    real = FileQueue.counts
    calls = []

    def flaky(self: FileQueue) -> object:
        calls.append(1)
        if len(calls) == 2:
            raise OSError("disk went away")
        return real(self)

    monkeypatch.setattr(FileQueue, "counts", flaky)
    args = ["status", url, "--watch", "--interval", "0.1", "--refreshes", "3"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert "error: disk went away" in lines[1] and "visible=1" in lines[2]


def test_ctrl_c_ends_watching_quietly(tmp_path: Path) -> None:
    url = f"file://{tmp_path}/tasks"
    open_queue(url, create=True).send("x")
    proc = subprocess.Popen(
        [sys.executable, "-m", "simpletasks", "status", url, "--watch", "--interval", "0.1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert "Traceback" not in err and out.count("visible=1") >= 2
