"""`simpletasks run`: the daemon, configured by flags, environment or instance metadata."""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from typing import Any

import click

from simpletasks.cli._common import DEFAULT_CACHE, env_name
from simpletasks.errors import SimpleTasksError


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


@click.command()
@click.option(
    "--queue",
    "queue_url",
    show_envvar=True,
    envvar=env_name("QUEUE"),
    help="Task queue URL (sqs://, pubsub://, amqp://, file://, mem://). Required.",
)
@click.option(
    "--error-queue",
    "error_url",
    show_envvar=True,
    envvar=env_name("ERROR_QUEUE"),
    help="Queue that receives an error report for every failure. Required.",
)
@click.option(
    "--done-queue",
    "done_url",
    show_envvar=True,
    envvar=env_name("DONE_QUEUE"),
    help="Queue that receives a done report for every success (optional).",
)
@click.option(
    "--bucket",
    "bucket_url",
    show_envvar=True,
    envvar=env_name("BUCKET"),
    help="Bucket URL (s3://bucket/prefix, gs://bucket/prefix, file:///dir). Required.",
)
@click.option(
    "--cache-dir",
    default=DEFAULT_CACHE,
    show_default=True,
    show_envvar=True,
    envvar=env_name("CACHE_DIR"),
    help="Local file cache directory.",
)
@click.option(
    "--cache-max-bytes",
    type=click.IntRange(min=1),
    show_envvar=True,
    envvar=env_name("CACHE_MAX_BYTES"),
    help="Bound the cache; least recently used entries not in use are evicted.",
)
@click.option(
    "--task",
    "task_paths",
    multiple=True,
    show_envvar=True,
    envvar=env_name("TASKS"),
    help="Task class to register, module:Class (repeatable; default: built-ins).",
)
@click.option(
    "--concurrency",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    show_envvar=True,
    envvar=env_name("CONCURRENCY"),
    help="Tasks run at once (worker threads).",
)
@click.option(
    "--poll-frequency",
    "idle_max",
    default=10.0,
    show_default=True,
    type=click.FloatRange(min=0),
    show_envvar=True,
    envvar=env_name("POLL_FREQUENCY_SECONDS"),
    help="Longest pause between receives while the queue is empty (seconds).",
)
@click.option(
    "--wait",
    "wait_seconds",
    default=10.0,
    show_default=True,
    type=click.FloatRange(0, 20),
    show_envvar=True,
    envvar=env_name("WAIT_SECONDS"),
    help="Long-poll wait of each receive (seconds).",
)
@click.option(
    "--lease",
    "lease_seconds",
    default=60.0,
    show_default=True,
    type=click.FloatRange(min=1),
    show_envvar=True,
    envvar=env_name("LEASE_SECONDS"),
    help="Lease per message, renewed every third of it while the task runs.",
)
@click.option(
    "--max-attempts",
    default=5,
    show_default=True,
    type=click.IntRange(min=1),
    show_envvar=True,
    envvar=env_name("MAX_ATTEMPTS"),
    help="Deliveries before a failing task is dropped with a final error report.",
)
@click.option(
    "--retry-delay",
    default=1.0,
    show_default=True,
    type=click.FloatRange(min=0),
    show_envvar=True,
    envvar=env_name("RETRY_DELAY_SECONDS"),
    help="Delay before a failed task runs again; doubles per attempt.",
)
@click.option(
    "--grace",
    "grace_seconds",
    default=30.0,
    show_default=True,
    type=click.FloatRange(min=0),
    show_envvar=True,
    envvar=env_name("GRACE_SECONDS"),
    help="On SIGTERM/SIGINT, time running tasks get to finish.",
)
@click.option(
    "--burst",
    is_flag=True,
    show_envvar=True,
    envvar=env_name("BURST"),
    help="Exit 0 once the queue is drained.",
)
@click.option(
    "--max-tasks",
    type=click.IntRange(min=1),
    show_envvar=True,
    envvar=env_name("MAX_TASKS"),
    help="Exit after this many messages.",
)
@click.option(
    "--from-metadata",
    type=click.Choice(["gce", "ec2"]),
    show_envvar=True,
    envvar=env_name("FROM_METADATA"),
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
