"""What ``simpletasks fleet start|status|stop|logs`` do, host by host, in parallel.

Each operation talks to every host at once over ssh (:mod:`.ssh`) and runs the host side,
:mod:`simpletasks.fleet.agent`, there. A host that cannot be reached, refuses the key or has
no compatible simpletasks is reported in its :class:`HostReport`; the others go on.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from simpletasks.fleet.ssh import Ssh, SshResult, on_each
from simpletasks.fleet.state import DaemonRecord, FleetState

logger = logging.getLogger(__name__)

AGENT = "simpletasks.fleet.agent"
_VERSION_SCRIPT = "import importlib.metadata as m; print(m.version('simpletasks'))"


@dataclass
class HostReport:
    """What an operation did on one host.

    Attributes:
        host: The host.
        ok: Whether everything asked of it worked.
        problem: What went wrong, if anything (one line).
        daemons: The agent's report of each daemon (see :mod:`.agent`).
    """

    host: str
    ok: bool
    problem: str = ""
    daemons: list[dict[str, Any]] = field(default_factory=list)


def local_version() -> str:
    """The installed simpletasks version here."""
    try:
        return metadata.version("simpletasks")
    except metadata.PackageNotFoundError:
        return "0"


def compatible(local: str, remote: str) -> bool:
    """Same major and minor version (the message and report formats)."""
    return local.split(".")[:2] == remote.split(".")[:2]


def check_host(ssh: Ssh, host: str, python: str) -> HostReport:
    """Whether ``host`` answers and has a compatible simpletasks under ``python``."""
    result = ssh.run(host, [python, "-c", _VERSION_SCRIPT], timeout=60)
    if result.returncode != 0:
        if result.connected and "No module named" in result.stderr + result.stdout:
            return HostReport(host, False, f"simpletasks is not installed for {python}")
        if result.connected and "PackageNotFoundError" in result.stderr:
            return HostReport(host, False, f"simpletasks is not installed for {python}")
        return HostReport(host, False, result.problem())
    remote = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else "?"
    if not compatible(local_version(), remote):
        return HostReport(
            host, False, f"simpletasks {remote} there, {local_version()} here: not compatible"
        )
    return HostReport(host, True)


def daemon_prefix(host: str) -> str:
    """A file-name-safe prefix for the daemons of ``host``."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", host.split("@")[-1])


def start(
    ssh: Ssh,
    hosts: Sequence[str],
    *,
    per_host: int,
    python: str,
    remote_dir: str,
    run_args: Sequence[str],
    wait: float = 2.0,
) -> tuple[list[HostReport], list[DaemonRecord]]:
    """Check each host, then start ``per_host`` daemons on each that passed.

    Returns:
        A report per host and the records of the daemons that were alive after ``wait``.
    """

    def one(host: str) -> HostReport:
        checked = check_host(ssh, host, python)
        if not checked.ok:
            return checked
        argv = [python, "-m", AGENT, "start", remote_dir, daemon_prefix(host), str(per_host)]
        result = ssh.run(host, [*argv, str(wait), "--", *run_args], timeout=wait + 120)
        report = _agent_report(host, result)
        if report.ok:
            dead = [d for d in report.daemons if not d.get("alive")]
            if dead:
                last = (dead[0].get("log_tail") or ["(empty log)"])[-1]
                report.ok = False
                report.problem = (
                    f"{len(dead)} of {per_host} daemon(s) exited at once "
                    f"(exit status {dead[0].get('exit_code')}): {last}"
                )
        return report

    reports = on_each(hosts, one)
    now = time.time()
    records = [
        DaemonRecord(r.host, d["name"], int(d["pid"]), now)
        for r in reports
        for d in r.daemons
        if d.get("alive")
    ]
    return reports, records


def status(ssh: Ssh, state: FleetState) -> list[HostReport]:
    """Ask every host of ``state`` how its daemons are."""

    def one(host: str) -> HostReport:
        names = [d.name for d in state.on(host)]
        argv = [state.python, "-m", AGENT, "status", state.remote_dir, *names]
        report = _agent_report(host, ssh.run(host, argv, timeout=60))
        if report.ok and not all(d.get("alive") for d in report.daemons):
            report.ok = False
            down = [d["name"] for d in report.daemons if not d.get("alive")]
            report.problem = f"not running: {', '.join(down)}"
        return report

    return on_each(state.hosts(), one)


def stop(ssh: Ssh, state: FleetState, grace: float) -> list[HostReport]:
    """SIGTERM every daemon of ``state`` and wait up to ``grace`` s; report what each did."""

    def one(host: str) -> HostReport:
        names = [d.name for d in state.on(host)]
        argv = [state.python, "-m", AGENT, "stop", state.remote_dir, str(grace), *names]
        report = _agent_report(host, ssh.run(host, argv, timeout=grace + 120))
        if report.ok and any(d.get("alive") for d in report.daemons):
            report.ok = False
            left = [d["name"] for d in report.daemons if d.get("alive")]
            report.problem = f"still running after {grace:g} s: {', '.join(left)}"
        return report

    return on_each(state.hosts(), one)


def logs(ssh: Ssh, state: FleetState, host: str, lines: int) -> HostReport:
    """The last ``lines`` lines of the logs of ``host``'s daemons."""
    names = [d.name for d in state.on(host)]
    argv = [state.python, "-m", AGENT, "logs", state.remote_dir, str(lines), *names]
    return _agent_report(host, ssh.run(host, argv, timeout=60))


def _agent_report(host: str, result: SshResult) -> HostReport:
    if result.returncode != 0:
        return HostReport(host, False, result.problem())
    try:
        daemons = json.loads(result.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return HostReport(host, False, f"unexpected answer: {result.stdout.strip()[:200]!r}")
    if not isinstance(daemons, list):
        return HostReport(host, False, str(daemons.get("error", daemons)))
    return HostReport(host, True, daemons=daemons)
