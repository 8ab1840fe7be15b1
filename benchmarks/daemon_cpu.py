"""The daemon's own cost: CPU per no-op task on ``mem://`` (no network, no server).

Contenders, interleaved round by round on fresh ``mem://`` queues of ``--messages`` no-op
task messages:

* ``bare_loop``: receive 100, parse each body with ``TaskMessage.from_json``, ``ack_many``
  (the least any consumer of these messages does);
* ``simpletasks_cN``: :class:`simpletasks.daemon.DaemonService`, ``concurrency=N``,
  ``burst=True``, ``max_tasks=messages``, a registered no-op task;
* ``simpletasks_c1_datasource``: the same at concurrency 1 with a datasource (a
  :class:`~simpletasks.datasource.BucketCacheDatasource` over ``mem://`` and a cache in a temp
  directory), as ``simpletasks run`` always has: each task gets a datasource session;
* ``simpletasks_c1_metrics``: that, with Prometheus metrics wired as ``simpletasks run
  --metrics-port`` wires them (the metrics middleware, a metered queue, bucket and cache).

The figure is the process CPU time (all threads) per task while the contender runs, in µs,
and its rate; ``parse_us`` is the parse alone (the part of the daemon's cost that validating
the message takes). The target is ``simpletasks_c1`` at <= 30 µs of CPU per task. Ratios are
medians of per-round ratios.

Usage::

    python benchmarks/daemon_cpu.py                # 7 rounds of 20,000 tasks, ~1 min
    python benchmarks/daemon_cpu.py --quick        # smoke run
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from typing import Any

from _common import emit, machine_info, rotated, setup_logging, versions
from dispatch import TASK_NAME, BenchNoOp, verify

from simpletasks.buckets import open_bucket
from simpletasks.cache import FileSystemCache
from simpletasks.daemon import DaemonService
from simpletasks.datasource import BucketCacheDatasource
from simpletasks.message import BasicInfo, TaskMessage
from simpletasks.metrics import Metrics
from simpletasks.queues import QueueService, open_queue
from simpletasks.registry import TaskRegistry
from simpletasks.settings import DaemonSettings

TARGET_US = 30.0


def filled(n: int) -> QueueService:
    queue = open_queue(f"mem://cpu-{uuid.uuid4().hex[:8]}")
    bodies = [TaskMessage(BasicInfo(i, TASK_NAME, "")).to_json() for i in range(n)]
    for i in range(0, n, 100):
        queue.send_batch(bodies[i : i + 100])
    return queue


def bare_loop(queue: QueueService, n: int) -> None:
    done = 0
    while done < n:
        batch = queue.receive(100)
        for message in batch:
            TaskMessage.from_json(message.body)
        queue.ack_many(batch)
        done += len(batch)


def daemon(
    concurrency: int,
    registry: TaskRegistry,
    datasource: Any = None,
    metered: Any = None,
) -> Callable[[QueueService, int], None]:
    def run(queue: QueueService, n: int) -> None:
        settings = DaemonSettings(
            concurrency=concurrency,
            burst=True,
            max_tasks=n,
            wait_seconds=0.1,
            poll_frequency_seconds=0.1,
        )
        extras: dict[str, Any] = {}
        if metered is not None:
            queue = metered.queue(queue)
            extras["middleware"] = [metered]
        stats = DaemonService(
            queue=queue, registry=registry, settings=settings, datasource=datasource, **extras
        ).run()
        verify(stats.succeeded == n, f"daemon c{concurrency}: {stats}")

    return run


def measure(run: Callable[[QueueService, int], None], n: int) -> dict[str, float]:
    queue = filled(n)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    run(queue, n)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    queue.close()
    return {"rate": n / wall, "cpu_us": cpu / n * 1e6}


def parse_us(n: int = 20000) -> float:
    body = TaskMessage(BasicInfo(1, TASK_NAME, "")).to_json()
    start = time.process_time()
    for _ in range(n):
        TaskMessage.from_json(body)
    return (time.process_time() - start) / n * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--concurrency", default="1,4")
    parser.add_argument("--quick", action="store_true", help="2 rounds of 5,000")
    parser.add_argument("--output")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.messages = 2, 5000
    setup_logging()
    registry = TaskRegistry()
    registry.register(BenchNoOp)
    contenders: dict[str, Callable[[QueueService, int], None]] = {"bare_loop": bare_loop}
    for c in (int(x) for x in args.concurrency.split(",")):
        contenders[f"simpletasks_c{c}"] = daemon(c, registry)
    cache_dir = tempfile.TemporaryDirectory(prefix="simpletasks-cpu-")
    datasource = BucketCacheDatasource(
        open_bucket("mem://daemon-cpu"), FileSystemCache(cache_dir.name)
    )
    contenders["simpletasks_c1_datasource"] = daemon(1, registry, datasource)
    metered = Metrics().middleware("cpu")
    metered_ds = BucketCacheDatasource(
        metered.bucket(open_bucket("mem://daemon-cpu-metrics")),
        metered.cache(cache_dir.name + "/metrics"),
    )
    contenders["simpletasks_c1_metrics"] = daemon(1, registry, metered_ds, metered)
    names = list(contenders)
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    parses: list[float] = []
    measure(contenders[names[-1]], min(2000, args.messages))  # warm-up
    for r in range(args.rounds):
        for name in rotated(names, r):
            samples[name].append(measure(contenders[name], args.messages))
        parses.append(parse_us())
    result: dict[str, Any] = {
        "benchmark": "daemon_cpu",
        "machine": machine_info(),
        "versions": {"python": sys.version.split()[0], **versions("simpletasks")},
        "parameters": {"rounds": args.rounds, "messages": args.messages, "queue": "mem://"},
        "parse_us_median": round(statistics.median(parses), 2),
        "target_cpu_us_per_task": TARGET_US,
    }
    for name in names:
        rows = samples[name]
        result[name] = {
            "cpu_us_per_task_median": round(statistics.median(s["cpu_us"] for s in rows), 1),
            "cpu_us_per_task": [round(s["cpu_us"], 1) for s in rows],
            "rate_median": round(statistics.median(s["rate"] for s in rows)),
        }
        if name != "bare_loop":
            ratio = [
                s["cpu_us"] / b["cpu_us"] for s, b in zip(rows, samples["bare_loop"], strict=True)
            ]
            result[name]["cpu_vs_bare_loop_paired_median"] = round(statistics.median(ratio), 2)
            result[name]["meets_target"] = result[name]["cpu_us_per_task_median"] <= TARGET_US
    cache_dir.cleanup()
    emit(result, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
