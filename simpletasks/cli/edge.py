"""``simpletasks edge``: the HASTE edge agent, its gateway, and the policy simulator.

- ``edge agent PATH``: watch PATH, pre-process the most promising files, upload every file to
  a HASTE gateway (``--host``) or a bucket (``--bucket``); a live progress line on stderr, a
  JSON summary on stdout at the end. The original agent's flags (``--include --tag --host
  --username --password``) keep their meaning.
- ``edge gateway``: receive uploads (``POST /stream/STREAM_ID``) into a bucket.
- ``edge simulate``: the same policies on a virtual clock, from a profile CSV.

Everything heavy (numpy, Pillow, the agent) is imported inside the commands.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import click

from simpletasks.cli._common import CONTEXT_SETTINGS, Group, env_name, log_level_option


def _open_bucket(url: str) -> Any:
    from simpletasks.buckets import open_bucket

    kwargs = {"create": True} if url.lower().startswith("file://") else {}
    return open_bucket(url, **kwargs)


@click.group(cls=Group, context_settings=CONTEXT_SETTINGS)
@log_level_option(None)
def edge() -> None:
    """HASTE edge pipeline: agent (watch, pre-process, upload), gateway, simulator."""


@edge.command(context_settings=CONTEXT_SETTINGS)
@click.argument("path", type=click.Path(file_okay=False, path_type=Path))
@click.option("--include", multiple=True, help="Only names ending with this (e.g. .png); repeat.")
@click.option("--tag", default="edge", show_default=True, help="Short ASCII tag of this machine.")
@click.option("--host", help="HASTE gateway HOST:PORT (or http(s)://HOST:PORT).")
@click.option("--username", envvar=env_name("EDGE_USERNAME"), show_envvar=True)
@click.option("--password", envvar=env_name("EDGE_PASSWORD"), show_envvar=True)
@click.option("--bucket", "bucket_url", help="Upload to this bucket instead of a gateway.")
@click.option("--preprocessing-cores", "cores", type=click.IntRange(0), default=1,
              show_default=True, help="CPU workers pre-processing files (0: none).")  # fmt: skip
@click.option("--uploads", type=click.IntRange(1), default=4, show_default=True,
              help="Uploads at once, sharing the link.")  # fmt: skip
@click.option("--policy", default="splines", show_default=True,
              help="splines, splines-random, splines-block, natural, random, content, "
              "upload-only (oracle needs true scores: simulator and benchmarks only).")  # fmt: skip
@click.option("--operator", default="border-dark", show_default=True,
              help="Pre-processing operator (a name or module:Class).")  # fmt: skip
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Journal and work files [default: PATH/.simpletasks-edge].")  # fmt: skip
@click.option("--stream-id", help="Override the stream id [default: YYYY_MM_DD__HH_MM_SS_TAG].")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=60.0, show_default=True,
              help="Seconds one upload may stall before it is retried.")  # fmt: skip
@click.option("--exit-when-idle", type=click.FloatRange(min=0), default=None,
              help="Exit once all is uploaded and nothing arrived for this long (s).")  # fmt: skip
@click.option("--progress/--no-progress", default=True, show_default=True,
              help="Live progress line on stderr.")  # fmt: skip
@log_level_option(None)
def agent(
    path: Path,
    include: tuple[str, ...],
    tag: str,
    host: str | None,
    username: str | None,
    password: str | None,
    bucket_url: str | None,
    cores: int,
    uploads: int,
    policy: str,
    operator: str,
    state_dir: Path | None,
    stream_id: str | None,
    timeout: float,
    exit_when_idle: float | None,
    progress: bool,
) -> None:
    """Watch PATH and stream every complete file to a HASTE gateway or a bucket.

    Files already in PATH are included; files a previous run confirmed (its journal in the
    state directory) are not sent again. SIGTERM/Ctrl-C: running uploads finish (10 s grace),
    the rest is sent by the next run. Prints a JSON summary on stdout.
    """
    from simpletasks.tasks.edge.agent import AgentConfig, EdgeAgent, progress_line
    from simpletasks.tasks.edge.upload import BucketUploader, GatewayUploader, make_stream_id

    if bool(host) == bool(bucket_url):
        raise click.UsageError("give exactly one target: --host HOST:PORT or --bucket URL")
    if host and (username is None or password is None):
        raise click.UsageError("--host needs --username and --password")
    if policy == "oracle":
        raise click.BadParameter("oracle needs the true scores; use it in `edge simulate`",
                                 param_hint="--policy")  # fmt: skip
    stream = stream_id or make_stream_id(tag)
    if host:
        uploader: Any = GatewayUploader(host, username=username or "", password=password or "",
                                        stream_id=stream, tag=tag, timeout=timeout)  # fmt: skip
    else:
        uploader = BucketUploader(_open_bucket(bucket_url or ""), stream_id=stream)
    config = AgentConfig(path, include=include, policy=policy, cores=cores, uploads=uploads,
                         state_dir=state_dir, operator=operator,
                         exit_when_idle=exit_when_idle)  # fmt: skip
    try:
        runner = EdgeAgent(config, uploader, progress=_printer() if progress else None)
    except ValueError as exc:  # an unknown policy or operator
        raise click.ClickException(str(exc)) from None
    runner.install_signal_handlers()
    summary = runner.run()
    if progress:
        click.echo(f"\r{progress_line(runner)}", err=True)
    click.echo(json.dumps({**summary, "stream_id": stream}, indent=2, default=str))
    if summary["fatal"]:
        raise click.ClickException(summary["fatal"])


def _printer() -> Any:
    from simpletasks.tasks.edge.agent import progress_line

    tty = sys.stderr.isatty()
    last = [0.0]

    def show(agent: Any) -> None:
        line = progress_line(agent)
        if tty:
            click.echo(f"\r\x1b[K{line}", err=True, nl=False)
        elif time.monotonic() - last[0] >= 10:  # a log file gets a line every 10 s
            last[0] = time.monotonic()
            click.echo(line, err=True)

    return show


@edge.command(context_settings=CONTEXT_SETTINGS)
@click.option("--listen", default="127.0.0.1:8080", show_default=True, help="HOST:PORT.")
@click.option("--bucket", "bucket_url", required=True, help="Where uploads are stored.")
@click.option("--username", envvar=env_name("EDGE_USERNAME"), show_envvar=True)
@click.option("--password", envvar=env_name("EDGE_PASSWORD"), show_envvar=True)
@click.option("--no-auth", is_flag=True, help="Accept uploads without credentials.")
@click.option("--queue", "queue_url", help="Enqueue a task message for each upload here.")
@click.option("--task-name", default="IMAGE_TIERING", show_default=True,
              help="basic_info.name of the enqueued messages.")  # fmt: skip
@click.option("--bandwidth", type=click.FloatRange(min=0, min_open=True),
              help="Cap all uploads together at MB/s (10^6 bytes/s), for experiments.")  # fmt: skip
@click.option("--max-bytes", type=click.IntRange(1), help="Largest accepted upload.")
@log_level_option(None)
def gateway(
    listen: str,
    bucket_url: str,
    username: str | None,
    password: str | None,
    no_auth: bool,
    queue_url: str | None,
    task_name: str,
    bandwidth: float | None,
    max_bytes: int | None,
) -> None:
    """Receive HASTE uploads (POST /stream/STREAM_ID, Basic auth) and store them in a bucket.

    Each upload is stored as STREAM_ID/<base name of X-HASTE-original_filename>; with
    --queue, a task message (base_directory STREAM_ID, inputs [name]) is enqueued for it.
    """
    from simpletasks.queues import open_queue
    from simpletasks.tasks.edge.gateway import GatewayServer, HasteGateway

    if not no_auth and (not username or password is None):
        raise click.UsageError("give --username and --password (or --no-auth)")
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise click.BadParameter(f"{listen!r} is not HOST:PORT", param_hint="--listen")
    gw = HasteGateway(
        _open_bucket(bucket_url),
        username=None if no_auth else username,
        password=password,
        queue=open_queue(queue_url) if queue_url else None,
        task_name=task_name,
        bandwidth=bandwidth * 1e6 if bandwidth else None,
        max_bytes=max_bytes,
    )
    try:
        server = GatewayServer(gw, host or "127.0.0.1", int(port))
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {listen}: {exc}") from None
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: done.set())
    server.start()
    click.echo(f"gateway on {server.url}/stream/STREAM_ID -> {bucket_url}", err=True)
    try:
        done.wait()
    finally:
        server.stop()
    s = gw.stats
    click.echo(json.dumps({"stored": s.stored, "bytes": s.bytes, "rejected": s.rejected,
                           "failed": s.failed}))  # fmt: skip


@edge.command(context_settings=CONTEXT_SETTINGS)
@click.option("--profile", required=True, type=click.Path(dir_okay=False, exists=True),
              help="CSV: index,size_bytes,saved_bytes,cpu_seconds[,hint].")  # fmt: skip
@click.option("--bandwidth", required=True, type=click.FloatRange(min=0, min_open=True),
              help="Uplink in MB/s (10^6 bytes/s).")  # fmt: skip
@click.option("--cores", type=click.IntRange(0), default=1, show_default=True)
@click.option("--policy", default="splines", show_default=True, help="A policy name, or all.")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), default=20.0,
              show_default=True, help="Arrivals per second.")  # fmt: skip
@click.option("--seeds", type=click.IntRange(1), default=1, show_default=True)
@click.option("--uploads", type=click.IntRange(1), default=1, show_default=True)
@log_level_option(None)
def simulate(
    profile: str,
    bandwidth: float,
    cores: int,
    policy: str,
    rate: float,
    seeds: int,
    uploads: int,
) -> None:
    """Simulate a policy (or all) on a virtual clock; print JSON (makespan, bytes, latency)."""
    from simpletasks.tasks.edge.simulate import simulate_command

    try:
        result = simulate_command(profile, bandwidth=bandwidth, cores=cores, policy=policy,
                                  rate=rate, seeds=seeds, uploads=uploads)  # fmt: skip
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps(result, indent=2))
