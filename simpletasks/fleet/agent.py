"""The host side of ``simpletasks fleet``: ``python -m simpletasks.fleet.agent COMMAND``.

``simpletasks fleet`` runs this module over ssh on each host; it prints one JSON document on
stdout. Commands (``DIR`` holds each daemon's ``NAME.log`` and ``NAME.status.json``):

- ``start DIR PREFIX COUNT WAIT -- RUN_ARGS...``: start ``COUNT`` daemons named
  ``PREFIX-0``... detached from the ssh session (a new session, stdin from /dev/null, output
  to the log), wait ``WAIT`` seconds and report which are alive (with the log's tail for
  those that are not). ``--metrics-port P`` becomes ``P + i`` for daemon ``i`` (0 stays 0:
  each picks a free port and writes it in its status file);
- ``status DIR NAME...``: whether each runs, and its status file;
- ``stop DIR GRACE NAME...``: SIGTERM each, wait up to ``GRACE`` seconds, report which
  stopped and what their final status says (released messages);
- ``logs DIR LINES NAME...``: the last ``LINES`` lines of each log.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

TAIL_LINES = 20


def alive(pid: int | None) -> bool:
    """Whether process ``pid`` runs (a zombie does not count)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc: trust kill
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def tail(path: Path, lines: int) -> list[str]:
    """The last ``lines`` lines of ``path`` ([] if it does not exist)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 200 * lines - 4096))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return []
    return text.splitlines()[-lines:]


def read_status(path: Path) -> dict[str, Any] | None:
    """The daemon's status file, or ``None`` if missing or half-written."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def with_port(args: list[str], i: int) -> list[str]:
    """``args`` with ``--metrics-port P`` (P > 0) made ``P + i``: one port per daemon."""
    out = list(args)
    for j, arg in enumerate(out):
        if arg == "--metrics-port" and j + 1 < len(out) and out[j + 1].isdigit():
            if int(out[j + 1]) > 0:
                out[j + 1] = str(int(out[j + 1]) + i)
        elif arg.startswith("--metrics-port=") and arg.split("=", 1)[1].isdigit():
            port = int(arg.split("=", 1)[1])
            if port > 0:
                out[j] = f"--metrics-port={port + i}"
    return out


def start(directory: Path, prefix: str, count: int, wait: float, args: list[str]) -> list[dict]:
    """Start ``count`` daemons; return what became of each after ``wait`` seconds."""
    directory.mkdir(parents=True, exist_ok=True)
    started = []
    for i in range(count):
        name = f"{prefix}-{i}"
        log, status = directory / f"{name}.log", directory / f"{name}.status.json"
        status.unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "simpletasks", "run", "--name", name]
        cmd += ["--status-file", str(status), *with_port(args, i)]
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=directory,
            )
        started.append((name, proc, log))
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and any(p.poll() is None for _, p, _ in started):
        time.sleep(0.05)
    report = []
    for name, proc, log in started:
        entry: dict[str, Any] = {"name": name, "pid": proc.pid, "log": str(log)}
        entry["alive"] = proc.poll() is None
        if not entry["alive"]:
            entry["exit_code"] = proc.returncode
            entry["log_tail"] = tail(log, TAIL_LINES)
        report.append(entry)
    return report


def status(directory: Path, names: list[str]) -> list[dict]:
    """Whether each daemon runs, and its status file's contents."""
    out = []
    for name in names:
        state = read_status(directory / f"{name}.status.json")
        pid = (state or {}).get("pid")
        out.append({"name": name, "alive": alive(pid), "status": state})
    return out


def stop(directory: Path, grace: float, names: list[str]) -> list[dict]:
    """SIGTERM each running daemon; wait up to ``grace`` s for all; report each."""
    pids: dict[str, int | None] = {}
    for name in names:
        pid = (read_status(directory / f"{name}.status.json") or {}).get("pid")
        running = int(pid) if isinstance(pid, int) and alive(pid) else None
        pids[name] = running
        if running is not None:
            os.kill(running, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(alive(p) for p in pids.values()):
        time.sleep(0.1)
    out = []
    for name, pid in pids.items():
        state = read_status(directory / f"{name}.status.json")
        out.append(
            {
                "name": name,
                "was_running": pid is not None,
                "alive": alive(pid),
                "status": state,
            }
        )
    return out


def logs(directory: Path, lines: int, names: list[str]) -> list[dict]:
    """The last ``lines`` lines of each daemon's log."""
    return [{"name": n, "lines": tail(directory / f"{n}.log", lines)} for n in names]


def main(argv: list[str]) -> int:
    """Run one command; print its JSON; return the exit status."""
    if len(argv) < 2:
        print(json.dumps({"error": "usage: agent start|status|stop|logs DIR ..."}))
        return 2
    command, directory = argv[0], Path(argv[1]).expanduser()
    rest = argv[2:]
    if command == "start":
        prefix, count, wait = rest[0], int(rest[1]), float(rest[2])
        args = rest[4:] if len(rest) > 3 and rest[3] == "--" else rest[3:]
        result: Any = start(directory, prefix, count, wait, args)
    elif command == "status":
        result = status(directory, rest)
    elif command == "stop":
        result = stop(directory, float(rest[0]), rest[1:])
    elif command == "logs":
        result = logs(directory, int(rest[0]), rest[1:])
    else:
        print(json.dumps({"error": f"unknown command {command!r}"}))
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
