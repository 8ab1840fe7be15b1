"""``simpletasks local``: the NO_OP example end to end on a local moto server.

Everything runs through the real parts: moto in server mode speaks SQS and S3 over HTTP on
127.0.0.1, the SQS and S3 backends talk to it with boto3, and the real daemon runs the tasks.
"""

from __future__ import annotations

import io
import json
import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from simpletasks.buckets import BucketService, open_bucket
from simpletasks.cache import FileSystemCache
from simpletasks.daemon import DaemonService
from simpletasks.datasource import BucketCacheDatasource
from simpletasks.emulators.moto import MotoServer
from simpletasks.errors import KeyNotFound
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
    while batch := queue.receive(10, wait_seconds=0, lease_seconds=30):
        bodies += [m.body for m in batch]
        for message in batch:
            queue.ack(message)
    return bodies


def run_local(
    *, concurrency: int = 2, cache_dir: str | None = None, echo: Callable[[str], object] = print
) -> bool:
    """Run the NO_OP example on a fresh local moto server; return whether all went well."""
    from simpletasks.tasks.noop import NoOpTask, make_example_job

    with MotoServer() as moto, tempfile.TemporaryDirectory(prefix="simpletasks-") as tmp:
        echo(f"moto server (SQS + S3) on {moto.endpoint_url}")
        sqs, s3 = moto.client("sqs"), moto.client("s3")
        tasks_q, errors_q, done_q = (
            open_queue(f"sqs://{name}", client=sqs, create=True) for name in QUEUES
        )
        bucket = open_bucket(f"s3://{BUCKET}", client=s3, create=True)
        echo(f"created queues {', '.join(QUEUES)} and bucket s3://{BUCKET}")

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
                concurrency=concurrency, wait_seconds=1, burst=True, idle_max_seconds=0.5
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
        echo(f"outputs in s3://{BUCKET}: {len(outputs)} ({names})")
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
