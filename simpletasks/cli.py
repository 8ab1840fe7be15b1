"""The ``simpletasks`` command line: run, schedule, status, purge, local.

Every option can also come from a ``SIMPLETASKS_*`` environment variable (named in
``--help``); a flag on the command line wins. This module is the only one that configures
logging handlers.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import click

from simpletasks.errors import SimpleTasksError

logger = logging.getLogger("simpletasks.cli")

DEFAULT_CACHE = "~/.cache/simpletasks"


def _env(name: str) -> str:
    return f"SIMPLETASKS_{name}"


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer", "pika", "google"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.root.level))


@click.group()
@click.option(
    "--log-level",
    default="info",
    show_envvar=True,
    envvar=_env("LOG_LEVEL"),
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
)
@click.version_option(package_name="simpletasks")
def main(log_level: str) -> None:
    """Run small data-heavy tasks from a queue (SQS, file, memory) on a bucket (S3, file)."""
    _setup_logging(log_level)


def build_registry(task_paths: tuple[str, ...]) -> Any:
    """Return a registry with the task classes named ``module:Class`` (built-ins if none)."""
    from simpletasks.registry import TaskRegistry
    from simpletasks.tasks import BUILTIN

    registry = TaskRegistry()
    for path in task_paths or BUILTIN:
        module_name, _, attr = path.partition(":")
        if not attr:
            raise click.BadParameter(
                f"{path!r} is not of the form module:Class", param_hint="--task"
            )
        try:
            cls = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise click.BadParameter(f"cannot import {path!r}: {exc}", param_hint="--task") from exc
        registry.register(cls)
    return registry


def build_datasource(bucket_url: str, cache_dir: str, cache_max_bytes: int | None) -> Any:
    """Open the bucket and wrap it with a file cache."""
    from simpletasks.buckets import open_bucket
    from simpletasks.cache import FileSystemCache
    from simpletasks.datasource import BucketCacheDatasource

    cache = FileSystemCache(Path(cache_dir).expanduser(), max_bytes=cache_max_bytes)
    return BucketCacheDatasource(open_bucket(bucket_url), cache)


@main.command()
@click.option(
    "--queue",
    "queue_url",
    show_envvar=True,
    envvar=_env("QUEUE"),
    help="Task queue URL (sqs://name, file:///dir, mem://name). Required.",
)
@click.option(
    "--error-queue",
    "error_url",
    show_envvar=True,
    envvar=_env("ERROR_QUEUE"),
    help="Queue that receives an error report for every failure. Required.",
)
@click.option(
    "--done-queue",
    "done_url",
    show_envvar=True,
    envvar=_env("DONE_QUEUE"),
    help="Queue that receives a done report for every success (optional).",
)
@click.option(
    "--bucket",
    "bucket_url",
    show_envvar=True,
    envvar=_env("BUCKET"),
    help="Bucket URL (s3://bucket/prefix, file:///dir). Required.",
)
@click.option(
    "--cache-dir",
    default=DEFAULT_CACHE,
    show_default=True,
    show_envvar=True,
    envvar=_env("CACHE_DIR"),
    help="Local file cache directory.",
)
@click.option(
    "--cache-max-bytes",
    type=click.IntRange(min=1),
    show_envvar=True,
    envvar=_env("CACHE_MAX_BYTES"),
    help="Bound the cache; least recently used entries not in use are evicted.",
)
@click.option(
    "--task",
    "task_paths",
    multiple=True,
    show_envvar=True,
    envvar=_env("TASKS"),
    help="Task class to register, module:Class (repeatable; default: built-ins).",
)
@click.option(
    "--concurrency",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    show_envvar=True,
    envvar=_env("CONCURRENCY"),
    help="Tasks run at once (worker threads).",
)
@click.option(
    "--poll-frequency",
    "idle_max",
    default=10.0,
    show_default=True,
    type=click.FloatRange(min=0),
    show_envvar=True,
    envvar=_env("POLL_FREQUENCY_SECONDS"),
    help="Longest pause between receives while the queue is empty (seconds).",
)
@click.option(
    "--wait",
    "wait_seconds",
    default=10.0,
    show_default=True,
    type=click.FloatRange(0, 20),
    show_envvar=True,
    envvar=_env("WAIT_SECONDS"),
    help="Long-poll wait of each receive (seconds).",
)
@click.option(
    "--lease",
    "lease_seconds",
    default=60.0,
    show_default=True,
    type=click.FloatRange(min=1),
    show_envvar=True,
    envvar=_env("LEASE_SECONDS"),
    help="Lease per message, renewed every third of it while the task runs.",
)
@click.option(
    "--max-attempts",
    default=5,
    show_default=True,
    type=click.IntRange(min=1),
    show_envvar=True,
    envvar=_env("MAX_ATTEMPTS"),
    help="Deliveries before a failing task is dropped with a final error report.",
)
@click.option(
    "--retry-delay",
    default=1.0,
    show_default=True,
    type=click.FloatRange(min=0),
    show_envvar=True,
    envvar=_env("RETRY_DELAY_SECONDS"),
    help="Delay before a failed task runs again; doubles per attempt.",
)
@click.option(
    "--grace",
    "grace_seconds",
    default=30.0,
    show_default=True,
    type=click.FloatRange(min=0),
    show_envvar=True,
    envvar=_env("GRACE_SECONDS"),
    help="On SIGTERM/SIGINT, time running tasks get to finish.",
)
@click.option(
    "--burst",
    is_flag=True,
    show_envvar=True,
    envvar=_env("BURST"),
    help="Exit 0 once the queue is drained.",
)
@click.option(
    "--max-tasks",
    type=click.IntRange(min=1),
    show_envvar=True,
    envvar=_env("MAX_TASKS"),
    help="Exit after this many messages.",
)
@click.option(
    "--from-metadata",
    type=click.Choice(["gce", "ec2"]),
    show_envvar=True,
    envvar=_env("FROM_METADATA"),
    help="Read options from GCE instance attributes or EC2 instance tags (docs/deploy.md): "
    "a flag wins over metadata, metadata over SIMPLETASKS_* variables.",
)
def run(
    queue_url: str,
    error_url: str,
    done_url: str | None,
    bucket_url: str,
    cache_dir: str,
    cache_max_bytes: int | None,
    task_paths: tuple[str, ...],
    concurrency: int,
    idle_max: float,
    wait_seconds: float,
    lease_seconds: float,
    max_attempts: int,
    retry_delay: float,
    grace_seconds: float,
    burst: bool,
    max_tasks: int | None,
    from_metadata: str | None,
) -> None:
    """Run the daemon: take tasks from the queue and run them until stopped."""
    from simpletasks.daemon import DaemonService
    from simpletasks.queues import open_queue
    from simpletasks.settings import DaemonSettings

    try:
        if from_metadata:
            found = _metadata_options(from_metadata)
            queue_url = found.get("queue_url", queue_url)
            error_url = found.get("error_url", error_url)
            done_url = found.get("done_url", done_url)
            bucket_url = found.get("bucket_url", bucket_url)
            cache_dir = found.get("cache_dir", cache_dir)
            idle_max = found.get("idle_max", idle_max)
            concurrency = found.get("concurrency", concurrency)
            task_paths = found.get("task_paths", task_paths)
        required = {"--queue": queue_url, "--error-queue": error_url, "--bucket": bucket_url}
        for option, value in required.items():
            if not value:
                raise click.UsageError(f"Missing option '{option}' (or use --from-metadata).")
        settings = DaemonSettings(
            concurrency=concurrency,
            lease_seconds=lease_seconds,
            wait_seconds=wait_seconds,
            idle_max_seconds=idle_max,
            max_attempts=max_attempts,
            retry_delay_seconds=retry_delay,
            grace_seconds=grace_seconds,
            burst=burst,
            max_tasks=max_tasks,
        )
        daemon = DaemonService(
            queue=open_queue(queue_url),
            registry=build_registry(task_paths),
            datasource=build_datasource(bucket_url, cache_dir, cache_max_bytes),
            error_queue=open_queue(error_url),
            done_queue=open_queue(done_url) if done_url else None,
            settings=settings,
        )
    except SimpleTasksError as exc:
        raise click.ClickException(str(exc)) from exc
    daemon.install_signal_handlers()
    stats = daemon.run()
    click.echo(json.dumps({k: v for k, v in vars(stats).items() if not k.startswith("_")}))


@main.command()
@click.option("--queue", "queue_url", required=True, show_envvar=True, envvar=_env("QUEUE"))
@click.option(
    "--bucket",
    "bucket_url",
    show_envvar=True,
    envvar=_env("BUCKET"),
    help="Bucket for the example's input files (with --example).",
)
@click.option(
    "--example",
    type=click.Choice(["noop"]),
    help="Write the NO_OP example's inputs and schedule its 9 tasks.",
)
@click.option("--threads", default=4, show_default=True, type=click.IntRange(min=1))
@click.argument("messages_file", required=False, type=click.File("r"))
def schedule(
    queue_url: str, bucket_url: str | None, example: str | None, threads: int, messages_file: Any
) -> None:
    """Send tasks: the --example job, or one JSON message per line of MESSAGES_FILE ('-' = stdin).

    Every message is validated before any is sent.
    """
    from simpletasks.queues import open_queue
    from simpletasks.scheduler import schedule as send_all

    if bool(example) == bool(messages_file):
        raise click.UsageError("give either --example or MESSAGES_FILE")
    try:
        if example:
            if not bucket_url:
                raise click.UsageError("--example needs --bucket")
            from simpletasks.buckets import open_bucket
            from simpletasks.tasks.noop import make_example_job

            tasks: list[Any] = make_example_job(open_bucket(bucket_url))
        else:
            tasks = [line for line in messages_file.read().splitlines() if line.strip()]
        sent = send_all(open_queue(queue_url), tasks, threads=threads, progress=True)
    except SimpleTasksError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"sent {sent} task(s) to {queue_url}")


@main.command()
@click.argument("queue_urls", nargs=-1, required=True)
def status(queue_urls: tuple[str, ...]) -> None:
    """Print visible and in-flight counts of each queue."""
    from simpletasks.queues import open_queue

    for url in queue_urls:
        try:
            counts = open_queue(url).counts()
        except SimpleTasksError as exc:
            raise click.ClickException(f"{url}: {exc}") from exc
        click.echo(f"{url}\tvisible={_n(counts.visible)}\tin_flight={_n(counts.in_flight)}")


@main.command()
@click.argument("queue_url")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def purge(queue_url: str, yes: bool) -> None:
    """Delete every message in a queue."""
    from simpletasks.queues import open_queue

    if not yes:
        click.confirm(f"Delete every message in {queue_url}?", abort=True)
    try:
        open_queue(queue_url).purge()
    except SimpleTasksError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"purged {queue_url}")


def _metadata_options(flavour: str) -> dict[str, Any]:
    """Values for the current command's options from instance metadata, by parameter name.

    Options given on the command line are not read. The AWS region and (GCE only) keys found
    in metadata go into ``os.environ`` for boto3, unless the environment sets its own.
    """
    from click.core import ParameterSource

    from simpletasks import metadata

    ctx = click.get_current_context()
    names = {param.opts[0]: param.name for param in ctx.command.params if param.opts}
    commandline = ParameterSource.COMMANDLINE
    given = {o for o, n in names.items() if ctx.get_parameter_source(n) == commandline}
    unset = {o for o, n in names.items() if ctx.params.get(n) is None}
    server = metadata.open_metadata(
        flavour, endpoint=os.environ.get(metadata.ENDPOINT_VARIABLES[flavour])
    )
    config = metadata.read_config(
        server,
        skip={name for name, option in metadata.OPTIONS.items() if option in given},
        required={name for name in metadata.REQUIRED if metadata.OPTIONS[name] in unset},
    )
    os.environ.update(config.aws_environment(os.environ))
    return {names[option]: value for option, value in config.options().items()}


def _n(value: int | None) -> str:
    return "?" if value is None else str(value)


@main.command()
@click.option(
    "--cloud",
    type=click.Choice(["aws", "gcp"]),
    default="aws",
    show_default=True,
    help="Run the example on moto (SQS + S3) or on the Pub/Sub emulator + fake-gcs-server.",
)
@click.option("--concurrency", default=2, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--keep-cache",
    "cache_dir",
    type=click.Path(file_okay=False),
    help="Use (and keep) this cache directory instead of a temporary one.",
)
@click.option(
    "--stack",
    is_flag=True,
    help="Instead: start every local service, write --env-file, run until Ctrl-C.",
)
@click.option(
    "--env-file",
    default="simpletasks-local.env",
    show_default=True,
    type=click.Path(dir_okay=False),
    help="Where --stack writes the environment.",
)
def local(cloud: str, concurrency: int, cache_dir: str | None, stack: bool, env_file: str) -> None:
    """Run the NO_OP example end to end on local emulators (no cloud account needed).

    Starts the services on free 127.0.0.1 ports, creates the queues and the bucket,
    schedules the example, runs the daemon until the queue is drained and checks every
    output. With --stack, starts moto, fake-gcs-server and the Pub/Sub emulator (those that
    are installed), writes their addresses to an env file and keeps them running: then
    `set -a; . simpletasks-local.env; set +a` and use sqs://, s3://, pubsub:// and gs:// URLs
    as on the clouds.
    """
    from simpletasks import local as local_run

    try:
        if stack:
            _serve_stack(Path(env_file), local_run)
            return
        ok = local_run.run_local(
            cloud=cloud, concurrency=concurrency, cache_dir=cache_dir, echo=click.echo
        )
    except SimpleTasksError as exc:
        raise click.ClickException(str(exc)) from exc
    if not ok:
        raise click.ClickException("the local run did not complete cleanly (see above)")


def _serve_stack(env_file: Path, local_run: Any) -> None:
    import signal
    import threading
    from contextlib import ExitStack

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: stop.set())
    with ExitStack() as services:
        env = local_run.start_stack(services, echo=click.echo)
        local_run.write_env_file(env_file, env)
        click.echo(f"wrote {env_file}; press Ctrl-C to stop the services")
        stop.wait()
    env_file.unlink(missing_ok=True)
    click.echo("services stopped")
