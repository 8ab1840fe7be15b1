"""`simpletasks fleet` against real OpenSSH servers on 127.0.0.1: two good hosts share one
file:// queue; a host that refuses the key and a host that is down are reported."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from fleet.sshd import SshHosts, start_hosts

from simpletasks.buckets import open_bucket
from simpletasks.message import BasicInfo, TaskMessage
from simpletasks.queues import open_queue

TESTS = Path(__file__).resolve().parents[1]
TASKS = 12


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[SshHosts]:
    running = start_hosts(tmp_path / "ssh", good=["h1", "h2"], refusing=["h3"], down=["h4"])
    yield running
    if (tmp_path / "fleet.json").exists():  # a failed test must not leave daemons running
        fleet(tmp_path, running, "stop", "--grace", "0")
    running.stop()


def fleet(tmp_path: Path, hosts: SshHosts, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "simpletasks", "fleet", *args[:1]]
    cmd += ["--ssh-config", str(hosts.config), "--state", str(tmp_path / "fleet.json")]
    return subprocess.run([*cmd, *args[1:]], capture_output=True, text=True, timeout=120)


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def wait_for(predicate: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


@pytest.mark.slow
def test_fleet_start_status_logs_stop_over_ssh(tmp_path: Path, hosts: SshHosts) -> None:
    urls = {n: f"file://{tmp_path}/{n}" for n in ("tasks", "errors", "bucket")}
    open_queue(urls["tasks"], create=True).close()
    open_queue(urls["errors"], create=True).close()
    open_bucket(urls["bucket"], create=True)
    remote = tmp_path / "remote"
    remote.mkdir()
    shutil.copy(TESTS / "tasktypes.py", remote)  # the daemons' working directory
    log = tmp_path / "work.log"
    queue = open_queue(urls["tasks"])
    for i in range(TASKS):
        queue.send(
            TaskMessage(BasicInfo(i, "SLEEP", ""), {"seconds": 0.2, "log": str(log)}).to_json()
        )
    run_args = ["--queue", urls["tasks"], "--error-queue", urls["errors"], "--bucket"]
    run_args += [urls["bucket"], "--task", "tasktypes:SleepTask", "--wait", "0.2"]
    run_args += ["--poll-frequency", "0.2", "--grace", "0", "--cache-dir", str(tmp_path / "c")]
    run_args += ["--metrics-port", "0", "--metrics-host", "127.0.0.1"]
    started = fleet(
        tmp_path,
        hosts,
        "start",
        "--hosts",
        "h1,h2,h3,h4",
        "-n",
        "2",
        "--python",
        sys.executable,
        "--remote-dir",
        str(remote),
        "--connect-timeout",
        "3",
        "--",
        *run_args,
    )
    # the two bad hosts fail the command, after the good ones started
    assert started.returncode == 1, started.stderr
    assert "h1\tstarted 2: h1-0, h1-1" in started.stdout
    assert "h2\tstarted 2: h2-0, h2-1" in started.stdout
    assert "h3\tFAILED: ssh failed: " in started.stderr and "Permission denied" in started.stderr
    assert "h4\tFAILED: ssh failed: " in started.stderr and "refused" in started.stderr
    assert "2 of 4 host(s) had problems: h3, h4" in started.stderr
    state = json.loads((tmp_path / "fleet.json").read_text())
    assert sorted(d["name"] for d in state["daemons"]) == ["h1-0", "h1-1", "h2-0", "h2-1"]

    wait_for(lambda: sum(x.startswith("end") for x in lines(log)) == TASKS)
    time.sleep(1.5)  # status files are rewritten every second
    targets = tmp_path / "targets.json"
    status = fleet(tmp_path, hosts, "status", "--targets", str(targets))
    assert status.returncode == 0, status.stderr
    rows = [r.split("\t") for r in status.stdout.splitlines()[1:-1]]
    assert sorted(r[1] for r in rows) == ["h1-0", "h1-1", "h2-0", "h2-1"]
    assert all(r[2] == "yes" and r[3] == "running" for r in rows)
    total = status.stdout.splitlines()[-1].split("\t")
    assert total[0] == "TOTAL" and int(total[5]) == TASKS  # succeeded, from the hosts' files
    assert sum(int(r[5]) > 0 for r in rows) >= 2  # the work was shared
    # Prometheus file_sd targets: every daemon's endpoint, scraped and summed
    groups = json.loads(targets.read_text())
    assert sorted(g["labels"]["daemon"] for g in groups) == ["h1-0", "h1-1", "h2-0", "h2-1"]
    scraped = 0.0
    for group in groups:
        (target,) = group["targets"]
        assert target.startswith("127.0.0.1:")
        with urllib.request.urlopen(f"http://{target}/metrics", timeout=5) as response:
            text = response.read().decode()
        for line in text.splitlines():
            if line.startswith("simpletasks_tasks_succeeded_total{"):
                assert f'daemon="{group["labels"]["daemon"]}"' in line
                scraped += float(line.split()[-1])
    assert scraped == TASKS

    logs = fleet(tmp_path, hosts, "logs", "h2", "-n", "5")
    assert logs.returncode == 0, logs.stderr
    assert "==> h2 h2-0 <==" in logs.stdout and "==> h2 h2-1 <==" in logs.stdout
    assert "daemon on file://" in fleet(tmp_path, hosts, "logs", "h1", "-n", "200").stdout
    unknown = fleet(tmp_path, hosts, "logs", "h3")
    assert unknown.returncode == 2 and "runs no daemon" in unknown.stderr

    # a long task is running when the fleet stops: it is released, and reported as such
    queue.send(TaskMessage(BasicInfo(99, "SLEEP", ""), {"seconds": 30, "log": str(log)}).to_json())
    wait_for(lambda: "start 99" in lines(log))
    stopped = fleet(tmp_path, hosts, "stop", "--grace", "10")
    assert stopped.returncode == 0, stopped.stderr
    reported = [r.split("\t") for r in stopped.stdout.splitlines()]
    assert len(reported) == 4 and all("stopped:" in r[2] for r in reported)
    released = sum(int(r[2].split(", ")[1].split()[0]) for r in reported)
    # released by the daemon running it (and maybe again by one that received it meanwhile)
    assert released >= 1, stopped.stdout
    assert not (tmp_path / "fleet.json").exists()
    pids = [d["pid"] for d in state["daemons"]]
    assert not [p for p in pids if _running(p)]
    assert queue.counts().visible == 1  # the long task is back on the queue


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def test_a_host_without_a_compatible_simpletasks_is_refused(
    tmp_path: Path, hosts: SshHosts
) -> None:
    old = tmp_path / "oldpython"
    old.write_text("#!/bin/sh\necho 0.0.1\n")
    old.chmod(0o755)
    missing = tmp_path / "nopython"
    missing.write_text("#!/bin/sh\necho \"ModuleNotFoundError: No module named 'x'\" >&2\nexit 1\n")
    missing.chmod(0o755)
    for python, expected in ((old, "simpletasks 0.0.1 there"), (missing, "not installed")):
        done = fleet(
            tmp_path, hosts, "start", "--hosts", "h1", "--python", str(python), "--", "--queue", "x"
        )
        assert done.returncode == 1 and expected in done.stderr, done.stderr
        assert "0 daemon(s) running" in done.stdout
    assert not (tmp_path / "fleet.json").exists()


def test_daemons_that_exit_at_once_are_reported_with_their_log(
    tmp_path: Path, hosts: SshHosts
) -> None:
    remote = tmp_path / "remote"
    args = ["start", "--hosts", "h1,h2", "-n", "2", "--python", sys.executable]
    args += ["--remote-dir", str(remote), "--wait", "10", "--", "--queue", "file:///nowhere"]
    done = fleet(tmp_path, hosts, *args)  # no --error-queue, no --bucket: run refuses
    assert done.returncode == 1
    for host in ("h1", "h2"):
        assert f"{host}\tFAILED: 2 of 2 daemon(s) exited at once (exit status 2): " in done.stderr
    assert "missing option(s) --error-queue, --bucket" in done.stderr
    assert "0 daemon(s) running" in done.stdout and not (tmp_path / "fleet.json").exists()


def test_run_options_that_fleet_sets_itself_and_a_damaged_state_file_are_refused(
    tmp_path: Path, hosts: SshHosts
) -> None:
    done = fleet(tmp_path, hosts, "start", "--hosts", "h1", "--", "--name", "x")
    assert done.returncode == 2 and "--name is set by fleet start itself" in done.stderr
    (tmp_path / "fleet.json").write_text("{not json")
    for args in (("start", "--hosts", "h1"), ("status",), ("stop",), ("logs", "h1")):
        done = fleet(tmp_path, hosts, *args)
        assert done.returncode == 1 and "is not a fleet state file" in done.stderr, args
    assert (tmp_path / "fleet.json").read_text() == "{not json"  # left for the user to see


def test_status_without_a_fleet_says_how_to_start_one(tmp_path: Path, hosts: SshHosts) -> None:
    done = fleet(tmp_path, hosts, "status")
    assert done.returncode == 1 and "fleet start" in done.stderr


def test_bad_host_lists_are_refused_before_any_ssh(tmp_path: Path) -> None:
    from simpletasks.errors import ConfigError
    from simpletasks.fleet.hosts import parse_hosts

    spec = tmp_path / "hosts"
    spec.write_text("# lab\nlab1\n\nroot@lab2  # the big one\n")
    assert parse_hosts(str(spec)) == ["lab1", "root@lab2"]
    assert parse_hosts("a,b") == ["a", "b"]
    for bad, message in (
        ("-oProxyCommand=x", "is not a host"),
        ("a,,b", "empty host"),
        ("a,a", "listed twice"),
        ("a b", "is not a host"),
    ):
        with pytest.raises(ConfigError, match=message):
            parse_hosts(bad)
    spec.write_text("# nothing\n")
    with pytest.raises(ConfigError, match="no hosts"):
        parse_hosts(str(spec))
