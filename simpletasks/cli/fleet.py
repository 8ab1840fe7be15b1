"""`simpletasks fleet start | status | stop | logs`: daemons on machines reached over ssh.

The system ``ssh`` client logs in with keys (``BatchMode=yes``: never a prompt). Every host
needs Python and a compatible simpletasks; ``start`` checks that first. Where daemons run is
recorded in a local state file (``--state``, default ``~/.simpletasks/fleet.json``); each
daemon keeps a status file and a log on its host, under ``--remote-dir`` (relative to the
login's home). A host that is down, refuses the key or lacks simpletasks is reported and
the others go on; the command then exits with status 1.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from simpletasks.cli._common import CONTEXT_SETTINGS, echo, env_name, log_level_option


def _state_option(f: Any) -> Any:
    return click.option(
        "--state",
        "state_path",
        default="~/.simpletasks/fleet.json",
        show_default=True,
        show_envvar=True,
        envvar=env_name("FLEET_STATE"),
        help="Local file recording where the fleet's daemons run.",
    )(f)


def _ssh_options(f: Any) -> Any:
    f = click.option(
        "--ssh-config",
        type=click.Path(exists=True, dir_okay=False),
        show_envvar=True,
        envvar=env_name("SSH_CONFIG"),
        help="ssh config file (ssh -F); default: your own ~/.ssh/config.",
    )(f)
    return click.option(
        "--connect-timeout",
        default=10.0,
        show_default=True,
        type=click.FloatRange(min=1),
        help="Seconds to wait for each host's ssh connection.",
    )(f)


def _ssh(ssh_config: str | None, connect_timeout: float) -> Any:
    from simpletasks.fleet.ssh import Ssh

    return Ssh(config=ssh_config, connect_timeout=connect_timeout)


def _load(state_path: str) -> tuple[Path, Any]:
    from simpletasks.fleet import state

    path = Path(state_path).expanduser()
    return path, state.load(path)


def _fail_if(reports: list[Any]) -> None:
    bad = [r for r in reports if not r.ok]
    if bad:
        names = ", ".join(r.host for r in bad)
        raise click.ClickException(f"{len(bad)} of {len(reports)} host(s) had problems: {names}")


@click.group(context_settings=CONTEXT_SETTINGS)
def fleet() -> None:
    """Run daemons on machines over ssh (lab machines, VMs without a cloud around them)."""


@fleet.command(
    context_settings={**CONTEXT_SETTINGS, "ignore_unknown_options": True},
)
@log_level_option(None)
@click.option(
    "--hosts",
    "hosts_spec",
    required=True,
    help="A file with one host a line (ssh config aliases, names or addresses), or h1,h2.",
)
@click.option(
    "-n",
    "--per-host",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Daemons to start on each host.",
)
@click.option(
    "--python",
    default="python3",
    show_default=True,
    help="Python on the hosts that has simpletasks installed.",
)
@click.option(
    "--remote-dir",
    default=".simpletasks/fleet",
    show_default=True,
    help="Directory on the hosts for logs and status files (relative to the home).",
)
@click.option(
    "--wait",
    "wait_seconds",
    default=2.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Seconds to watch new daemons before reporting them started.",
)
@_ssh_options
@_state_option
@click.argument("run_args", nargs=-1, type=click.UNPROCESSED, metavar="[-- RUN OPTIONS]")
def start(
    hosts_spec: str,
    per_host: int,
    python: str,
    remote_dir: str,
    wait_seconds: float,
    ssh_config: str | None,
    connect_timeout: float,
    state_path: str,
    run_args: tuple[str, ...],
) -> None:
    """Start N daemons on each host with `simpletasks run [RUN OPTIONS]` (after --).

    Example: simpletasks fleet start --hosts lab1,lab2 -n 4 -- --queue sqs://tasks
    --error-queue sqs://errors --bucket s3://data --task mytasks:Blur
    """
    from simpletasks.fleet import manage, state
    from simpletasks.fleet.hosts import parse_hosts

    hosts = parse_hosts(hosts_spec)
    for arg in run_args:
        if arg in ("--name", "--status-file") or arg.startswith(("--name=", "--status-file=")):
            raise click.BadParameter(f"{arg} is set by fleet start itself", param_hint="RUN")
    ssh = _ssh(ssh_config, connect_timeout)
    path = Path(state_path).expanduser()
    if path.exists():
        recorded = state.load(path)  # a damaged file is an error, never overwritten
    else:
        recorded = state.FleetState(remote_dir, python, ssh_config)
    busy = set(recorded.hosts()) & set(hosts)
    if busy:
        raise click.ClickException(
            f"{', '.join(sorted(busy))} already run(s) daemons of this fleet ({path}): "
            "`simpletasks fleet stop` first, or use another --state"
        )
    if recorded.daemons and (recorded.remote_dir, recorded.python) != (remote_dir, python):
        raise click.ClickException(
            f"{path} records a fleet with --remote-dir {recorded.remote_dir} and --python "
            f"{recorded.python}; use the same, or another --state"
        )
    reports, records = manage.start(
        ssh,
        hosts,
        per_host=per_host,
        python=python,
        remote_dir=remote_dir,
        run_args=run_args,
        wait=wait_seconds,
    )
    recorded.daemons += records
    recorded.ssh_config = ssh_config
    if records:
        state.save(path, recorded)
    for report in reports:
        alive = [d["name"] for d in report.daemons if d.get("alive")]
        if alive:
            echo(f"{report.host}\tstarted {len(alive)}: {', '.join(alive)}")
        if not report.ok:
            echo(f"{report.host}\tFAILED: {report.problem}", err=True)
    echo(f"{len(records)} daemon(s) running on {len({r.host for r in records})} host(s); {path}")
    _fail_if(reports)


COUNT_COLUMNS = ("received", "succeeded", "retried", "dead_lettered", "released")


@fleet.command()
@log_level_option(None)
@click.option(
    "--targets",
    "targets_path",
    type=click.Path(dir_okay=False),
    help="Also write the metrics endpoints of the running daemons to this file, in "
    "Prometheus file_sd format (docs/deploy.md).",
)
@_ssh_options
@_state_option
def status(
    targets_path: str | None, ssh_config: str | None, connect_timeout: float, state_path: str
) -> None:
    """Show each daemon: alive, state and task counts, read from the hosts themselves."""
    from simpletasks.fleet import manage

    _, recorded = _load(state_path)
    reports = manage.status(_ssh(ssh_config or recorded.ssh_config, connect_timeout), recorded)
    echo("HOST\tDAEMON\tALIVE\tSTATE\t" + "\t".join(c.upper() for c in COUNT_COLUMNS) + "\tAGE")
    totals = dict.fromkeys(COUNT_COLUMNS, 0)
    now = time.time()
    for report in reports:
        if not report.daemons:
            echo(f"{report.host}\t-\t?\t{report.problem}")
            continue
        for d in report.daemons:
            s = d.get("status") or {}
            counts = [int(s.get(c, 0)) for c in COUNT_COLUMNS]
            for c, v in zip(COUNT_COLUMNS, counts, strict=True):
                totals[c] += v
            age = f"{now - s['updated']:.0f}s" if "updated" in s else "-"
            alive = "yes" if d.get("alive") else "no"
            row = [report.host, d["name"], alive, s.get("state", "?"), *map(str, counts), age]
            echo("\t".join(row))
    echo("TOTAL\t\t\t\t" + "\t".join(str(totals[c]) for c in COUNT_COLUMNS))
    if targets_path:
        write_targets(Path(targets_path), recorded, reports)
    _fail_if(reports)


def write_targets(path: Path, recorded: Any, reports: list[Any]) -> None:
    """Write Prometheus file_sd targets: ``host:metrics_port`` of each running daemon.

    The host is the one ``ssh`` reaches, after the ssh config's ``HostName`` if it has one.
    """
    import json
    import os

    from simpletasks.fleet.ssh import resolve_hostname

    ssh_config = recorded.ssh_config
    groups = []
    for report in reports:
        address = resolve_hostname(report.host, ssh_config)
        for d in report.daemons:
            port = (d.get("status") or {}).get("metrics_port")
            if d.get("alive") and port:
                labels = {"fleet_host": report.host, "daemon": d["name"]}
                groups.append({"targets": [f"{address}:{port}"], "labels": labels})
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(groups, indent=1) + "\n")
    os.replace(tmp, path)
    echo(f"{len(groups)} metrics target(s) written to {path}", err=True)


@fleet.command()
@log_level_option(None)
@click.option(
    "--grace",
    default=35.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Seconds to wait for the daemons to exit after SIGTERM (their --grace, plus a bit).",
)
@_ssh_options
@_state_option
def stop(grace: float, ssh_config: str | None, connect_timeout: float, state_path: str) -> None:
    """SIGTERM every daemon, wait for them to exit, report what each released."""
    from simpletasks.fleet import manage, state

    path, recorded = _load(state_path)
    reports = manage.stop(_ssh(ssh_config or recorded.ssh_config, connect_timeout), recorded, grace)
    stopped: set[tuple[str, str]] = set()
    for report in reports:
        if not report.daemons:
            echo(f"{report.host}\tFAILED: {report.problem}", err=True)
            continue
        for d in report.daemons:
            s = d.get("status") or {}
            if d.get("alive"):
                echo(f"{report.host}\t{d['name']}\tSTILL RUNNING after {grace:g} s", err=True)
                continue
            stopped.add((report.host, d["name"]))
            what = "stopped" if d.get("was_running") else "was not running"
            echo(
                f"{report.host}\t{d['name']}\t{what}: {s.get('succeeded', 0)} succeeded, "
                f"{s.get('released', 0)} released"
            )
    recorded.daemons = [d for d in recorded.daemons if (d.host, d.name) not in stopped]
    if recorded.daemons:
        state.save(path, recorded)
    else:
        path.unlink(missing_ok=True)
    _fail_if(reports)


@fleet.command()
@log_level_option(None)
@click.argument("host")
@click.option(
    "--lines",
    "-n",
    default=50,
    show_default=True,
    type=click.IntRange(min=1),
    help="Lines of each daemon's log.",
)
@_ssh_options
@_state_option
def logs(
    host: str, lines: int, ssh_config: str | None, connect_timeout: float, state_path: str
) -> None:
    """Print the last lines of the logs of HOST's daemons."""
    from simpletasks.fleet import manage

    path, recorded = _load(state_path)
    if host not in recorded.hosts():
        known = ", ".join(recorded.hosts()) or "none"
        raise click.BadParameter(f"{host!r} runs no daemon of {path} (hosts: {known})")
    report = manage.logs(
        _ssh(ssh_config or recorded.ssh_config, connect_timeout), recorded, host, lines
    )
    if not report.ok:
        raise click.ClickException(f"{host}: {report.problem}")
    for d in report.daemons:
        echo(f"==> {host} {d['name']} <==")
        for line in d["lines"]:
            echo(line)
