"""The daemon of this checkout against the daemon of another git revision, alternated.

A change to the daemon's hot path moves its no-op dispatch rate by 5-20 %, while rounds on
this shared 2-core machine swing 2x; comparing two separate benchmark runs says little. This
script imports both versions into one process (the other revision, from ``git archive``,
under the package name ``simpletasks_rev``), and alternates them round by round on the same
server: one Pub/Sub emulator, the machine's RabbitMQ, or ``mem://``. Each round fills a fresh
queue with ``--messages`` no-op tasks through that version's ``schedule()`` and runs that
version's :class:`~simpletasks.daemon.DaemonService` (burst, ``max_tasks``) until all are
done. The figure is the median of per-round rate ratios, this checkout over the revision.

``--backend gcs-get`` compares the datasource instead: fake-gcs-server holds ``--objects``
objects of ``--kb`` KB, and each round fetches all of them with one ``get([...])`` of that
version's :class:`~simpletasks.datasource.BucketCacheDatasource` (8 threads) into a fresh
cache; the rate is objects per second.

``--sleep-ms N`` makes each task sleep N ms (an I/O-like task: the daemon's threads then
hand the interpreter lock over at every task, which the no-op rate does not show; watch
``cpu_us_per_task``). ``--metrics`` runs each version's daemon with its Prometheus metrics
wired as ``simpletasks run --metrics-port`` wires them (the metrics middleware and a metered
queue).

Usage::

    python benchmarks/compare_revisions.py --rev HEAD~3 --backend pubsub --concurrency 1
    python benchmarks/compare_revisions.py --rev main --backend amqp --messages 5000
    python benchmarks/compare_revisions.py --rev HEAD --backend mem --quick   # an A/A run
    python benchmarks/compare_revisions.py --rev HEAD~1 --backend gcs-get --rounds 12
    python benchmarks/compare_revisions.py --rev HEAD~1 --backend mem --metrics
    python benchmarks/compare_revisions.py --rev HEAD~1 --backend amqp --sleep-ms 5 --messages 1000
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from _common import emit, machine_info, setup_logging, versions

REPO = Path(__file__).resolve().parent.parent
ALIAS = "simpletasks_rev"
_IMPORT = re.compile(r"\b(from|import) simpletasks(?=[ .\n])")


def export_revision(rev: str, into: Path) -> None:
    """Write revision ``rev``'s ``simpletasks`` package into ``into`` as :data:`ALIAS`."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", rev, "simpletasks"],
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    package = into / ALIAS
    (into / "simpletasks").rename(package)
    for path in package.rglob("*.py"):
        text = _IMPORT.sub(rf"\1 {ALIAS}", path.read_text())
        path.write_text(text.replace('"simpletasks.', f'"{ALIAS}.'))


def load(package: str, sleep_seconds: float = 0.0) -> dict[str, Any]:
    """The modules of one version and a registry with its no-op task type."""
    mods = {
        name: importlib.import_module(f"{package}.{name}")
        for name in (
            "daemon",
            "registry",
            "settings",
            "task",
            "message",
            "scheduler",
            "queues",
            "cache",
            "datasource",
            "buckets.gcs",
            "metrics",
        )
    }
    task_mod = mods["task"]

    class NoOp(task_mod.DaemonTask):  # type: ignore[name-defined,misc]
        name = "BENCH_NOOP"

        def execute(self, datasource: Any) -> Any:
            if sleep_seconds:
                time.sleep(sleep_seconds)
            return task_mod.Result(success=True)

    registry = mods["registry"].TaskRegistry()
    registry.register(NoOp)
    mods["registry_with_noop"] = registry
    mods["package"] = package
    return mods


class Server:
    """Opens queues of one backend for either version."""

    def __init__(self, backend: str, args: argparse.Namespace) -> None:
        self.backend = backend
        self.emulator: Any = None
        self.keys: list[str] = []
        if backend == "gcs-get":
            from simpletasks.emulators.gcs import FakeGcsServer

            self.emulator = FakeGcsServer().__enter__()
            self.gcs_client = self.emulator.client()
            raw_bucket = self.gcs_client.create_bucket("cmp")
            self.keys = [f"small/{i:05d}" for i in range(args.objects)]
            with ThreadPoolExecutor(8) as pool:
                data = os.urandom(args.kb * 1000)
                list(pool.map(lambda k: raw_bucket.blob(k).upload_from_string(data), self.keys))
        if backend == "pubsub":
            from simpletasks.emulators.pubsub import PubSubEmulator
            from simpletasks.queues._pubsub_admin import make_clients

            self.emulator = PubSubEmulator().__enter__()
            self.subscriber, self.publisher = make_clients(self.emulator.host_port)

    def open(self, mods: dict[str, Any], name: str) -> Any:
        if self.backend == "pubsub":
            pubsub = importlib.import_module(f"{mods['package']}.queues.pubsub")
            return pubsub.PubSubQueue(
                self.emulator.project,
                name,
                subscriber=self.subscriber,
                publisher=self.publisher,
                create=True,
                ack_deadline_seconds=60,
            )
        if self.backend == "amqp":
            url = f"amqp://guest:guest@127.0.0.1:5672/%2F?queue={name}"
            return mods["queues"].open_queue(url, create=True)
        return mods["queues"].open_queue(f"mem://{name}")

    def close(self) -> None:
        if self.emulator is not None:
            self.emulator.__exit__(None, None, None)


def one_get(server: Server, mods: dict[str, Any]) -> dict[str, float]:
    """Fetch every object into a fresh cache with one ``get``; objects/s and CPU per object."""
    bucket = mods["buckets.gcs"].GCSBucket("cmp", client=server.gcs_client)
    with tempfile.TemporaryDirectory(prefix="simpletasks-cmp-") as root:
        ds = mods["datasource"].BucketCacheDatasource(
            bucket, mods["cache"].FileSystemCache(root), max_workers=8
        )
        wall, cpu = time.perf_counter(), time.process_time()
        paths = ds.get(server.keys)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        if len(paths) != len(server.keys) or any(not p.is_file() for p in paths):
            raise SystemExit(f"{mods['package']}: not every object was fetched")
    n = len(server.keys)
    return {"rate": n / wall, "cpu_us_per_task": 1e6 * cpu / n}


def one_round(server: Server, mods: dict[str, Any], args: argparse.Namespace) -> dict[str, float]:
    """Fill a fresh queue, run the daemon until every task is done; rate and CPU per task."""
    if server.backend == "gcs-get":
        return one_get(server, mods)
    name = f"cmp-{uuid.uuid4().hex[:10]}"
    queue = server.open(mods, name)
    message = mods["message"]
    tasks = [
        message.TaskMessage(message.BasicInfo(id=i, name="BENCH_NOOP", base_directory=""))
        for i in range(args.messages)
    ]
    mods["scheduler"].schedule(queue, tasks, threads=4)
    settings = mods["settings"].DaemonSettings(
        concurrency=args.concurrency,
        lease_seconds=60,
        wait_seconds=1.0,
        poll_frequency_seconds=0.5,
        burst=True,
        max_tasks=args.messages,
    )
    extras: dict[str, Any] = {}
    if args.metrics:
        metered = mods["metrics"].Metrics().middleware("cmp")
        extras["middleware"] = [metered]
        queue = metered.queue(queue)
    daemon = mods["daemon"].DaemonService(
        queue=queue, registry=mods["registry_with_noop"], settings=settings, **extras
    )
    wall, cpu = time.perf_counter(), time.process_time()
    stats = daemon.run()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if stats.succeeded != args.messages:
        raise SystemExit(f"{mods['package']}: {stats.succeeded} of {args.messages} succeeded")
    if server.backend == "pubsub":
        queue.delete(topic=True)
    elif hasattr(queue, "delete"):
        queue.delete()
    queue.close()
    return {"rate": args.messages / wall, "cpu_us_per_task": 1e6 * cpu / args.messages}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rev", default="HEAD", help="git revision to compare against")
    parser.add_argument("--backend", choices=("pubsub", "amqp", "mem", "gcs-get"), default="pubsub")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--messages", type=int, default=10_000, help="tasks per round")
    parser.add_argument("--rounds", type=int, default=8, help="rounds after one warm-up")
    parser.add_argument("--objects", type=int, default=1000, help="gcs-get: objects per get")
    parser.add_argument("--kb", type=int, default=10, help="gcs-get: size of each object")
    parser.add_argument("--sleep-ms", type=float, default=0.0, help="each task sleeps this long")
    parser.add_argument("--metrics", action="store_true", help="daemons with Prometheus metrics")
    parser.add_argument("--quick", action="store_true", help="3 rounds of 2,000")
    parser.add_argument("--output", type=Path, help="also write the JSON here")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.messages = 3, 2000
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)
    with tempfile.TemporaryDirectory(prefix="simpletasks-rev-") as tmp:
        export_revision(args.rev, Path(tmp))
        sys.path.insert(0, tmp)
        sleep = args.sleep_ms / 1000
        versions_under_test = {"this": load("simpletasks", sleep), "rev": load(ALIAS, sleep)}
        server = Server(args.backend, args)
        samples: dict[str, list[dict[str, float]]] = {"this": [], "rev": []}
        try:
            for r in range(args.rounds + 1):  # round 0 warms the server up
                order = ("this", "rev") if r % 2 == 0 else ("rev", "this")
                for label in order:
                    sample = one_round(server, versions_under_test[label], args)
                    if r:
                        samples[label].append(sample)
        finally:
            server.close()
    ratios = [t["rate"] / o["rate"] for t, o in zip(samples["this"], samples["rev"], strict=True)]
    result = {
        "benchmark": "compare_revisions",
        "machine": machine_info(),
        "versions": versions("pika", "google-cloud-pubsub", "google-cloud-storage"),
        "parameters": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "this": {
            "rate_median": round(statistics.median(s["rate"] for s in samples["this"]), 1),
            "cpu_us_per_task_median": round(
                statistics.median(s["cpu_us_per_task"] for s in samples["this"]), 1
            ),
        },
        "rev": {
            "rate_median": round(statistics.median(s["rate"] for s in samples["rev"]), 1),
            "cpu_us_per_task_median": round(
                statistics.median(s["cpu_us_per_task"] for s in samples["rev"]), 1
            ),
        },
        "this_vs_rev_paired_median": round(statistics.median(ratios), 3),
        "paired": [round(x, 3) for x in ratios],
    }
    emit(result, args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
