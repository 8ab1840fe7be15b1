"""The NO_OP job through :class:`~simpletasks.daemon.DaemonService` with faults injected.

The daemon's SQS queues and its bucket (S3 on moto, or GCS on fake-gcs-server) are reached
through :class:`faultproxy.FaultProxy` (one proxy for SQS, one for the bucket), so every API
call it makes may meet a 5xx, a throttling answer, a reset connection or a truncated body.
The job is set up and checked with direct clients that bypass the proxies. Used by
``tests/reliability/test_fault_injection.py`` (short runs) and ``benchmarks/faults.py``.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from faultproxy import Fault, FaultProxy

from simpletasks.buckets import BucketService
from simpletasks.buckets.s3 import S3Bucket
from simpletasks.cache import FileSystemCache
from simpletasks.daemon import DaemonService
from simpletasks.datasource import BucketCacheDatasource
from simpletasks.emulators.moto import MotoServer
from simpletasks.message import BasicInfo, TaskMessage
from simpletasks.queues.sqs import SQSQueue
from simpletasks.registry import TaskRegistry
from simpletasks.settings import DaemonSettings
from simpletasks.tasks.noop import NoOpTask

logger = logging.getLogger(__name__)

BASE = "faults"


def drain(queue: SQSQueue) -> list[dict[str, Any]]:
    """Receive and delete every visible message of ``queue``; return the parsed bodies."""
    out: list[dict[str, Any]] = []
    empty = 0
    while empty < 2:  # moto may answer one empty receive while messages remain
        batch = queue.receive(10, wait_seconds=0.2 if empty else 0.0, lease_seconds=60)
        empty = 0 if batch else empty + 1
        out += [json.loads(m.body) for m in batch]
        if batch:
            queue.ack_many(batch)
    return out


def summarize_error(report: dict[str, Any]) -> dict[str, Any]:
    """The fields of an error report worth printing."""
    return {
        k: report[k]
        for k in ("task_id", "attempt", "final", "phase", "error_type", "error_message")
    } | {"error_message": report["error_message"][:300]}


class S3Storage:
    """The job's bucket on moto's S3; the daemon's client is the framework's own, or one
    that ``client_factory(proxy_url)`` makes."""

    def __init__(self, moto: MotoServer, client_factory: Callable[[str], Any] | None = None):
        self.upstream = moto.endpoint_url
        self.direct = moto.client("s3")
        self.client_factory = client_factory

    def create(self, name: str) -> None:
        self.direct.create_bucket(Bucket=name)

    def put(self, name: str, key: str, data: bytes) -> None:
        self.direct.put_object(Bucket=name, Key=key, Body=data)

    def get(self, name: str, key: str) -> bytes | None:
        try:
            return bytes(self.direct.get_object(Bucket=name, Key=key)["Body"].read())
        except self.direct.exceptions.NoSuchKey:
            return None

    def open(self, name: str, proxy_url: str) -> BucketService:
        if self.client_factory is None:
            return S3Bucket.from_url(f"s3://{name}", endpoint_url=proxy_url)
        return S3Bucket.from_url(f"s3://{name}", client=self.client_factory(proxy_url))


class GCSStorage:
    """The job's bucket on fake-gcs-server; the daemon uses :class:`GCSBucket`."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.upstream = server.endpoint_url
        self.direct = server.client()

    def create(self, name: str) -> None:
        self.direct.create_bucket(name)

    def put(self, name: str, key: str, data: bytes) -> None:
        self.direct.bucket(name).blob(key).upload_from_string(data)

    def get(self, name: str, key: str) -> bytes | None:
        blob = self.direct.bucket(name).get_blob(key)
        return None if blob is None else bytes(blob.download_as_bytes())

    def open(self, name: str, proxy_url: str) -> BucketService:
        from google.auth.credentials import AnonymousCredentials

        from simpletasks.buckets.gcs import GCSBucket

        return GCSBucket.from_url(
            f"gs://{name}", project="test", endpoint=proxy_url, credentials=AnonymousCredentials()
        )


def run_noop_with_faults(
    moto: MotoServer,
    cache_dir: Path,
    *,
    tasks: int = 12,
    sqs_faults: Sequence[Fault] = (),
    bucket_faults: Sequence[Fault] = (),
    storage: S3Storage | GCSStorage | None = None,
    seed: int = 0,
    concurrency: int = 4,
    max_attempts: int = 5,
    lease_seconds: float = 10.0,
    retry_delay_seconds: float = 0.2,
    input_bytes: tuple[int, int] = (1, 64 * 1024),
    timeout: float = 120.0,
) -> dict[str, Any]:
    """Run ``tasks`` NO_OP tasks with faults injected; return what happened.

    Args:
        moto: The moto server (the proxies forward to it).
        cache_dir: The daemon's cache directory (a fresh one).
        tasks: Number of tasks; task ``i`` copies inputs ``i`` and ``i+1`` to the outputs.
        sqs_faults: Rules of the SQS proxy (task, error and done queues).
        bucket_faults: Rules of the bucket's proxy.
        storage: Where the bucket lives: :class:`S3Storage` on ``moto`` by default, or
            :class:`GCSStorage`.
        seed: Seeds the proxies and the input contents.
        concurrency, max_attempts, lease_seconds, retry_delay_seconds: Daemon settings.
        input_bytes: Range of input sizes.
        timeout: Seconds before the daemon is stopped and the run reported as timed out.

    Returns:
        JSON-able figures: completed tasks, done and error reports, output checks,
        daemon stats, what each proxy saw and injected.
    """
    run = uuid.uuid4().hex[:10]
    names = {kind: f"faults-{kind}-{run}" for kind in ("tasks", "errors", "done")}
    bucket_name = f"faults-{run}"
    rng = random.Random(seed)
    storage = storage or S3Storage(moto)
    storage.create(bucket_name)
    inputs = {
        j: rng.randbytes(rng.randint(*input_bytes)) for j in range(1, tasks + 2)
    }  # task i reads i and i+1
    for j, data in inputs.items():
        storage.put(bucket_name, f"{BASE}/0_input/{j}.dat", data)
    direct = {k: SQSQueue(n, client=moto.client("sqs"), create=True) for k, n in names.items()}
    direct["tasks"].send_batch(
        [
            TaskMessage(
                BasicInfo(i, NoOpTask.name, BASE, (f"0_input/{i}.dat", f"0_input/{i + 1}.dat"))
            ).to_json()
            for i in range(1, tasks + 1)
        ]
    )

    with (
        FaultProxy(moto.endpoint_url, seed=seed) as sqs_proxy,
        FaultProxy(storage.upstream, seed=seed + 1) as bucket_proxy,
    ):
        # Open everything before the faults start: a constructor that fails is not a test.
        queues = {k: SQSQueue(n, endpoint_url=sqs_proxy.url) for k, n in names.items()}
        bucket = storage.open(bucket_name, bucket_proxy.url)
        registry = TaskRegistry()
        registry.register(NoOpTask)
        daemon = DaemonService(
            queue=queues["tasks"],
            registry=registry,
            datasource=BucketCacheDatasource(bucket, FileSystemCache(cache_dir)),
            error_queue=queues["errors"],
            done_queue=queues["done"],
            settings=DaemonSettings(
                concurrency=concurrency,
                lease_seconds=lease_seconds,
                wait_seconds=1,
                poll_frequency_seconds=0.2,
                max_attempts=max_attempts,
                retry_delay_seconds=retry_delay_seconds,
                burst=True,
            ),
        )
        sqs_proxy.set_faults(sqs_faults)
        bucket_proxy.set_faults(bucket_faults)
        started = time.monotonic()
        thread = threading.Thread(target=daemon.run, name="faults-daemon", daemon=True)
        thread.start()
        thread.join(timeout)
        timed_out = thread.is_alive()
        if timed_out:
            logger.error("daemon still running after %.0f s: stopping it", timeout)
            daemon.stop()
            daemon.stop()
            thread.join(30)
        seconds = time.monotonic() - started
        proxies = {"sqs": sqs_proxy.counts(), "bucket": bucket_proxy.counts()}
        for queue in queues.values():
            queue.close()

    done = drain(direct["done"])
    errors = drain(direct["errors"])
    left = direct["tasks"].counts()
    outputs_ok, outputs_bad = 0, []
    for j, data in inputs.items():
        key = f"{BASE}/0_output/{j}.dat"
        if storage.get(bucket_name, key) == data:
            outputs_ok += 1
        else:
            outputs_bad.append(key)
    for queue in direct.values():
        queue.delete()
        queue.close()
    done_ids = Counter(r["task_id"] for r in done)
    finals = [r for r in errors if r["final"]]
    stats = daemon.stats
    return {
        "bucket": type(storage).__name__.removesuffix("Storage").upper(),
        "tasks": tasks,
        "completed": len(done_ids),
        "done_reports": len(done),
        "duplicate_done_reports": sum(n - 1 for n in done_ids.values()),
        # (task id, attempt) of each done report of a task with several: the same attempt
        # twice is one run whose report was sent twice (a retried send that had gone
        # through); a higher attempt is a second run after a redelivery.
        "duplicated_runs_attempts": sorted(
            (r["task_id"], r["attempt"]) for r in done if done_ids[r["task_id"]] > 1
        ),
        "completed_ids": sorted(done_ids),
        "error_reports": len(errors),
        "final_error_reports": len(finals),
        "errors": [summarize_error(r) for r in sorted(errors, key=_report_order)],
        "outputs_expected": len(inputs),
        "outputs_correct": outputs_ok,
        "outputs_wrong_or_missing": outputs_bad,
        "left_on_queue": {"visible": left.visible, "in_flight": left.in_flight},
        "daemon": {
            k: getattr(stats, k)
            for k in ("received", "succeeded", "retried", "dead_lettered", "released")
        },
        "seconds": round(seconds, 2),
        "timed_out": timed_out,
        "proxies": proxies,
    }


def _report_order(report: dict[str, Any]) -> tuple[int, int]:
    return (report.get("task_id") or 0, report["attempt"])


def s3_client_for(max_attempts: int) -> Any:
    """Return a factory of S3 clients to a proxy URL with ``max_attempts`` standard retries
    (boto3's ``max_attempts`` counts retries: each call is tried ``max_attempts + 1`` times).

    For short test runs with permanent faults, where five attempts with back-off per call
    would only make the test slow.
    """

    def make(endpoint_url: str) -> Any:
        import boto3
        from botocore.config import Config

        config = Config(retries={"mode": "standard", "max_attempts": max_attempts})
        return boto3.session.Session().client("s3", endpoint_url=endpoint_url, config=config)

    return make
