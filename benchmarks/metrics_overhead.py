"""Cost of the Prometheus metrics middleware per task: a daemon on mem:// running no-op
tasks with and without :class:`~simpletasks.metrics.MetricsMiddleware` (queue wrapped too),
alternating runs in one process. Prints JSON: tasks/s of each and their ratio.

    python benchmarks/metrics_overhead.py [--tasks 3000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

from simpletasks.daemon import DaemonService
from simpletasks.message import BasicInfo, TaskMessage
from simpletasks.metrics import Metrics
from simpletasks.queues import open_queue
from simpletasks.queues.memory import MemoryQueue
from simpletasks.registry import TaskRegistry
from simpletasks.settings import DaemonSettings
from simpletasks.task import DaemonTask, Result


class Nothing(DaemonTask):
    name = "NOTHING"

    def execute(self, ds: Any) -> Result:
        return Result(success=True)


def one_run(tasks: int, metered: bool, round_: int) -> float:
    MemoryQueue.reset_all()
    queue = open_queue("mem://bench")
    body = TaskMessage(BasicInfo(1, "NOTHING", "")).to_json()
    for start in range(0, tasks, 10):
        queue.send_batch([body] * min(10, tasks - start))
    registry = TaskRegistry()
    registry.register(Nothing)
    kwargs: dict[str, Any] = {}
    if metered:
        mw = Metrics().middleware(f"bench-{round_}")
        queue = mw.queue(queue)
        kwargs["middleware"] = [mw]
    daemon = DaemonService(
        queue=queue,
        registry=registry,
        error_queue=open_queue("mem://bench-errors"),
        settings=DaemonSettings(
            concurrency=4, burst=True, wait_seconds=0, poll_frequency_seconds=0.01
        ),
        **kwargs,
    )
    started = time.perf_counter()
    stats = daemon.run()
    seconds = time.perf_counter() - started
    assert stats.succeeded == tasks, stats
    return tasks / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    plain, metered = [], []
    for i in range(args.rounds):
        plain.append(one_run(args.tasks, False, i))
        metered.append(one_run(args.tasks, True, i))
    result = {
        "tasks": args.tasks,
        "rounds": args.rounds,
        "plain_tasks_per_s": round(statistics.median(plain), 1),
        "metered_tasks_per_s": round(statistics.median(metered), 1),
        "ratio_metered_over_plain": round(statistics.median(metered) / statistics.median(plain), 3),
        "overhead_us_per_task": round(
            1e6 * (1 / statistics.median(metered) - 1 / statistics.median(plain)), 1
        ),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
