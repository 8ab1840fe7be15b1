"""TCP chaos: daemons on RabbitMQ and the Pub/Sub emulator behind a fault proxy.

The full run of ``tests/tcpchaos.py``: per backend, ``--seeds`` runs of ``--tasks`` 30 ms
tasks (concurrency 4) through :class:`tests.tcpfaultproxy.TCPFaultProxy` injecting seeded
random connection resets, stalls (0.2-1.5 s) and half-open connections every 0.3-0.8 s,
plus one control run through the proxy without faults. Each run checks that no task is
lost, that every extra run is of a redelivery (a fault hit the task in flight) and that the
control run has no duplicate. Prints one JSON document; exits 1 if any run found a problem.

Usage::

    python benchmarks/chaos_tcp.py                        # both backends, ~4 min
    python benchmarks/chaos_tcp.py --backend amqp --seeds 5
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
from pathlib import Path
from typing import Any

from _common import emit, machine_info, setup_logging, versions

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from tcpchaos import run_tcp_chaos


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default="amqp,pubsub")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=400)
    parser.add_argument("--output")
    args = parser.parse_args(argv)
    setup_logging()
    result: dict[str, Any] = {
        "benchmark": "chaos_tcp",
        "machine": machine_info(),
        "versions": versions("simpletasks", "pika", "google-cloud-pubsub", "grpcio"),
        "parameters": {"seeds": args.seeds, "tasks": args.tasks, "task_seconds": 0.03},
    }
    problems = 0
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        for backend in args.backend.split(","):
            emulator = None
            if backend == "pubsub":
                from simpletasks.emulators.pubsub import PubSubEmulator

                emulator = stack.enter_context(PubSubEmulator())
            runs = []
            for seed in range(1, args.seeds + 1):
                outcome = run_tcp_chaos(
                    backend, Path(tmp), tasks=args.tasks, seed=seed, emulator=emulator,
                    timeout=180,
                )  # fmt: skip
                runs.append({"seed": seed, **outcome.summary()})
            control = run_tcp_chaos(
                backend, Path(tmp), tasks=args.tasks, faults=False, emulator=emulator
            )
            runs.append({"seed": None, "control": True, **control.summary()})
            problems += sum(len(run["problems"]) for run in runs)
            result[backend] = runs
    result["problems"] = problems
    emit(result, args.output)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
