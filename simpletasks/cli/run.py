"""`simpletasks run`: the daemon, configured by flags, environment or instance metadata."""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from simpletasks.cli._common import (
    DEFAULT_CACHE,
    env_name,
    log_level_option,
    refuse_mem,
    require,
)
from simpletasks.cli._observers import build_observers
from simpletasks.errors import SimpleTasksError


def build_registry(task_paths: tuple[str, ...]) -> Any:
    """Return a registry with the task classes named ``module:Class`` (built-ins if none).

    The current directory is put on the import path first (as Celery's worker does), so
    ``--task mytasks:MyTask`` finds ``./mytasks.py``.

    Raises:
        click.BadParameter: Naming the module and what went wrong when it cannot be imported
            (a missing module, a syntax error or any exception raised while importing it),
            or has no such class.
    """
    from simpletasks.registry import TaskRegistry
    from simpletasks.tasks import BUILTIN

    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    registry = TaskRegistry()
    for path in task_paths or BUILTIN:
        registry.register(import_task(path))
    return registry


def import_task(path: str, option: str = "--task") -> Any:
    """Import the class ``module:Class`` names; any failure is one clear ``BadParameter``."""
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise click.BadParameter(f"{path!r} is not of the form module:Class", param_hint=option)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.split(".")[0] == exc.name.split(".")[0]:
            raise click.BadParameter(
                f"cannot import {path!r}: no module named {exc.name!r} in the current "
                f"directory ({os.getcwd()}) or the installed packages; run from the directory "
                "that holds it, or install it",
                param_hint=option,
            ) from None
        raise click.BadParameter(
            f"cannot import {path!r}: {exc} (a package it imports is missing)", param_hint=option
        ) from None
    except SyntaxError as exc:
        where = f"{exc.filename}, line {exc.lineno}" if exc.filename else module_name
        raise click.BadParameter(
            f"cannot import {path!r}: SyntaxError in {where}: {exc.msg}", param_hint=option
        ) from None
    except Exception as exc:
        raise click.BadParameter(
            f"cannot import {path!r}: importing module {module_name!r} raised "
            f"{type(exc).__name__}: {exc}",
            param_hint=option,
        ) from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise click.BadParameter(
            f"cannot import {path!r}: module {module_name!r} has no {attr!r}", param_hint=option
        ) from None


def same_queue(a: str, b: str) -> bool:
    """Whether two queue URLs name the same queue (scheme case and trailing slashes aside)."""

    def norm(url: str) -> str:
        scheme, sep, rest = url.partition("://")
        return f"{scheme.lower()}{sep}{rest.rstrip('/')}"

    return norm(a) == norm(b)


def build_datasource(
    bucket_url: str, cache_dir: str, cache_max_bytes: int | None, metered: Any = None
) -> Any:
    """Open the bucket and wrap it with a file cache (both counted by ``metered``, if given:
    a :class:`~simpletasks.metrics.MetricsMiddleware`)."""
    from simpletasks.buckets import open_bucket
    from simpletasks.cache import FileSystemCache
    from simpletasks.datasource import BucketCacheDatasource

    root = Path(cache_dir).expanduser()
    bucket = open_bucket(bucket_url)
    if metered is None:
        return BucketCacheDatasource(bucket, FileSystemCache(root, max_bytes=cache_max_bytes))
    cache = metered.cache(root, max_bytes=cache_max_bytes)
    return BucketCacheDatasource(metered.bucket(bucket), cache)


@click.command()
@log_level_option(None)
@click.option(
    "--queue",
    "queue_url",
    show_envvar=True,
    envvar=env_name("QUEUE"),
    help="Task queue URL: sqs://NAME, pubsub://PROJECT/SUBSCRIPTION, "
    "amqp://USER:PASS@HOST/VHOST?queue=NAME or file:///ABS/DIR (mem:// only inside Python). "
    "Required.",
)
@click.option(
    "--error-queue",
    "error_url",
    show_envvar=True,
    envvar=env_name("ERROR_QUEUE"),
    help="Queue that receives an error report for every failure (same schemes; not the "
    "task queue). Required.",
)
@click.option(
    "--done-queue",
    "done_url",
    show_envvar=True,
    envvar=env_name("DONE_QUEUE"),
    help="Queue that receives a done report for every success (optional).",
)
@click.option(
    "--followup-queue",
    "followup_url",
    show_envvar=True,
    envvar=env_name("FOLLOWUP_QUEUE"),
    help="Queue for the follow-up tasks a task returns (may be the task queue; optional).",
)
@click.option(
    "--middleware",
    "middleware_paths",
    multiple=True,
    metavar="MODULE:CLASS",
    show_envvar=True,
    envvar=env_name("MIDDLEWARE"),
    help="Middleware class to add, module:Class, made with no arguments (repeatable).",
)
@click.option(
    "--bucket",
    "bucket_url",
    show_envvar=True,
    envvar=env_name("BUCKET"),
    help="Bucket URL: s3://BUCKET/PREFIX, gs://BUCKET/PREFIX or file:///ABS/DIR "
    "(mem:// only inside Python). Required.",
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
    help="Task class to register, module:Class (repeatable; default: the built-in NO_OP). "
    "The current directory is on the import path.",
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
    "poll_frequency",
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
    "--task-timeout",
    "task_timeout",
    type=click.FloatRange(min=0, min_open=True),
    show_envvar=True,
    envvar=env_name("TASK_TIMEOUT_SECONDS"),
    help="Give up a task still running after this many seconds: a failed attempt (phase "
    "timeout), retried as any other; a new worker takes the stuck one's place "
    "[default: no limit].",
)
@click.option(
    "--max-stuck-tasks",
    "max_stuck_tasks",
    type=click.IntRange(min=1),
    show_envvar=True,
    envvar=env_name("MAX_STUCK_TASKS"),
    help="With --task-timeout: stop and exit 1 once this many given-up tasks are still "
    "running on their threads, for a supervisor to restart the process and free them "
    "[default: no limit].",
)
@click.option(
    "--burst",
    is_flag=True,
    show_envvar=True,
    envvar=env_name("BURST"),
    help="Exit once the queue is drained: status 0, or 1 if any task failed for good.",
)
@click.option(
    "--skip-cancelled",
    is_flag=True,
    show_envvar=True,
    envvar=env_name("SKIP_CANCELLED"),
    help="Delete unrun the tasks of jobs cancelled through the job API (`simpletasks serve`): "
    "it marks them in --bucket under _simpletasks/cancelled/JOB_ID (checked with a 5 s cache); "
    "each gets a final report of phase `skipped`.",
)
@click.option(
    "--report-starts",
    is_flag=True,
    show_envvar=True,
    envvar=env_name("REPORT_STARTS"),
    help="Send a started report to --done-queue when a task starts (one more message per "
    "attempt), so the job API (`simpletasks serve`) counts it as running. Needs --done-queue.",
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
    "a flag wins over metadata, metadata over SIMPLETASKS_* variables. Also watches the "
    "preemption notice (GCE instance/preempted, EC2 spot/instance-action): on one, stops "
    "taking work and releases running tasks before the machine goes.",
)
@click.option(
    "--preemption-poll",
    default=5.0,
    show_default=True,
    type=click.FloatRange(min=0.05),
    show_envvar=True,
    envvar=env_name("PREEMPTION_POLL_SECONDS"),
    help="With --from-metadata: seconds between two checks of the preemption notice.",
)
@click.option(
    "--name",
    "daemon_name",
    default="daemon",
    show_default=True,
    show_envvar=True,
    envvar=env_name("NAME"),
    help="Name of this daemon in logs, reports and metric labels.",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    show_envvar=True,
    envvar=env_name("METRICS_PORT"),
    help="Serve Prometheus /metrics, /healthz and /readyz on this port (0: a free port, "
    "logged). Needs prometheus_client.",
)
@click.option(
    "--metrics-host",
    default="0.0.0.0",
    show_default=True,
    show_envvar=True,
    envvar=env_name("METRICS_HOST"),
    help="Address the metrics endpoint listens on.",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    show_envvar=True,
    envvar=env_name("LOG_FORMAT"),
    help="json: one JSON object per log line, with the task, message id and attempt.",
)
@click.option(
    "--status-file",
    type=click.Path(dir_okay=False),
    show_envvar=True,
    envvar=env_name("STATUS_FILE"),
    help="Keep a JSON status (pid, state, counters) in this file (`simpletasks fleet "
    "status` reads it).",
)
def run(
    queue_url: str,
    error_url: str,
    done_url: str | None,
    followup_url: str | None,
    middleware_paths: tuple[str, ...],
    bucket_url: str,
    cache_dir: str,
    cache_max_bytes: int | None,
    task_paths: tuple[str, ...],
    concurrency: int,
    poll_frequency: float,
    wait_seconds: float,
    lease_seconds: float,
    max_attempts: int,
    retry_delay: float,
    grace_seconds: float,
    task_timeout: float | None,
    max_stuck_tasks: int | None,
    burst: bool,
    skip_cancelled: bool,
    report_starts: bool,
    max_tasks: int | None,
    from_metadata: str | None,
    preemption_poll: float,
    daemon_name: str,
    metrics_port: int | None,
    metrics_host: str,
    log_format: str,
    status_file: str | None,
) -> None:
    """Run the daemon: take tasks from the queue and run them until stopped."""
    from simpletasks.daemon import DaemonService
    from simpletasks.queues import open_queue
    from simpletasks.settings import DaemonSettings

    if log_format == "json":
        from simpletasks.logjson import use_json_logs

        use_json_logs()
    observers = build_observers(daemon_name, metrics_port, metrics_host, log_format, status_file)
    try:
        if from_metadata:
            found = _metadata_options(from_metadata)
            queue_url = found.get("queue_url", queue_url)
            error_url = found.get("error_url", error_url)
            done_url = found.get("done_url", done_url)
            bucket_url = found.get("bucket_url", bucket_url)
            cache_dir = found.get("cache_dir", cache_dir)
            poll_frequency = found.get("poll_frequency", poll_frequency)
            concurrency = found.get("concurrency", concurrency)
            task_paths = found.get("task_paths", task_paths)
        require(
            " (or give them by --from-metadata or SIMPLETASKS_* variables)",
            queue=queue_url,
            error_queue=error_url,
            bucket=bucket_url,
        )
        check_urls(queue_url, error_url, done_url, bucket_url, followup_url)
        if max_stuck_tasks is not None and task_timeout is None:
            raise click.BadParameter(
                "needs --task-timeout: only tasks given up after a time limit get stuck",
                param_hint="--max-stuck-tasks",
            )
        settings = DaemonSettings(
            concurrency=concurrency,
            lease_seconds=lease_seconds,
            wait_seconds=wait_seconds,
            poll_frequency_seconds=poll_frequency,
            max_attempts=max_attempts,
            retry_delay_seconds=retry_delay,
            grace_seconds=grace_seconds,
            burst=burst,
            max_tasks=max_tasks,
            task_timeout_seconds=task_timeout,
            max_stuck_tasks=max_stuck_tasks,
        )
        registry = build_registry(task_paths)  # puts the current directory on the path
        extras = _extras(followup_url, middleware_paths)
        if skip_cancelled:
            from simpletasks.jobs import JobCancellations

            extras["skip"] = JobCancellations.from_url(bucket_url)
        done_queue = open_queue(done_url) if done_url else None
        starts = _started_reports(done_queue) if report_starts else []
        extras["middleware"] = [*starts, *observers.middleware, *extras.get("middleware", [])]
        queue = open_queue(queue_url)
        daemon = DaemonService(
            queue=observers.metered.queue(queue) if observers.metered else queue,
            registry=registry,
            datasource=build_datasource(bucket_url, cache_dir, cache_max_bytes, observers.metered),
            error_queue=open_queue(error_url),
            done_queue=done_queue,
            settings=settings,
            name=daemon_name,
            **extras,
        )
        observers.start(daemon, from_metadata, preemption_poll)
    except SimpleTasksError as exc:
        observers.close()
        raise click.ClickException(str(exc)) from exc
    daemon.install_signal_handlers()
    try:
        stats = daemon.run()
    finally:
        observers.close()
    summary = {k: v for k, v in vars(stats).items() if not k.startswith("_")}
    if isinstance(summary.get("seconds"), float):
        summary["seconds"] = round(summary["seconds"], 1)
    click.echo(json.dumps(summary))  # for scripts; the daemon logs the same in words
    if daemon.stop_reason:
        raise click.ClickException(daemon.stop_reason)
    failed = failed_for_good(stats)
    if failed and (burst or max_tasks):
        raise click.ClickException(
            f"{failed} task(s) failed for good; see their reports with "
            f"`simpletasks peek {error_url}`"
        )


def _started_reports(done_queue: Any) -> list[Any]:
    """The middleware of ``--report-starts``.

    Raises:
        ConfigError: Without a done queue (the reports' only destination).
    """
    from simpletasks.errors import ConfigError
    from simpletasks.started import StartedReports

    if done_queue is None:
        raise ConfigError(
            "--report-starts sends started reports to the done queue: give --done-queue "
            "(or SIMPLETASKS_DONE_QUEUE)"
        )
    return [StartedReports(done_queue)]


def _extras(followup_url: str | None, middleware_paths: tuple[str, ...]) -> dict[str, Any]:
    """The optional DaemonService arguments given on the command line."""
    from simpletasks.queues import open_queue

    extras: dict[str, Any] = {}
    if followup_url:
        extras["followup_queue"] = open_queue(followup_url)
    if middleware_paths:
        extras["middleware"] = [
            import_task(path, option="--middleware")() for path in middleware_paths
        ]
    return extras


def check_urls(
    queue_url: str,
    error_url: str,
    done_url: str | None,
    bucket_url: str,
    followup_url: str | None = None,
) -> None:
    """Refuse mem:// URLs and a report queue that is also the task queue."""
    for url, option in (
        (queue_url, "--queue"),
        (error_url, "--error-queue"),
        (done_url, "--done-queue"),
        (bucket_url, "--bucket"),
        (followup_url, "--followup-queue"),
    ):
        refuse_mem(url, option)
    for url, option in ((error_url, "--error-queue"), (done_url, "--done-queue")):
        if url and same_queue(url, queue_url):
            raise click.BadParameter(
                f"{url} is also the task queue: every report would come back as a bad task; "
                "give reports a queue of their own",
                param_hint=option,
            )


def failed_for_good(stats: Any) -> int:
    """How many tasks of a run failed for good (final error reports)."""
    for name in ("failed_final", "dead_lettered"):
        value = getattr(stats, name, None)
        if isinstance(value, int):
            return value
    return 0


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
