"""A daemon through :class:`~tcpfaultproxy.TCPFaultProxy` under TCP faults: nothing lost.

:func:`run_tcp_chaos` sends ``tasks`` sleep tasks to a RabbitMQ queue (or a Pub/Sub
subscription on the emulator) directly, then runs a daemon whose queue connection goes
through the proxy while it injects seeded random resets, stalls and half-open connections.
Every task logs its end to a file. When every task has ended once, the faults stop, the
daemon runs on briefly (late redeliveries show up), stops, and what is left on the queue is
drained and counted.

Checks (``Outcome.problems``): every task ended at least once (what is left on the queue
after the stop is only redeliveries of finished tasks); a task ran twice only where a fault
hit it in flight: every extra run is of a redelivery (attempt > 1: the broker or Pub/Sub
delivered it again because its lease, or its ack, was lost), never a second run of a first
delivery; without faults, no task runs twice. The summary also gives the messages held
when a RabbitMQ connection was lost and the ids whose ack/extend failed (logged). Used by
``tests/integration/test_tcp_faults.py`` (a short run) and ``benchmarks/chaos_tcp.py``.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tcpfaultproxy import TCPFaultProxy

from simpletasks.daemon import DaemonService
from simpletasks.message import BasicInfo, TaskMessage
from simpletasks.queues import open_queue
from simpletasks.registry import TaskRegistry
from simpletasks.settings import DaemonSettings
from simpletasks.task import DaemonTask, Result


@dataclass
class NapPayload:
    seconds: float
    log: str


class NapTask(DaemonTask):
    """Sleeps, then appends ``end <id> <attempt>`` to its log."""

    name = "TCPCHAOS_NAP"
    payload_type = NapPayload

    def execute(self, datasource: object) -> Result:
        time.sleep(self.payload.seconds)
        with open(self.payload.log, "a") as f:
            f.write(f"end {self.id} {self.context.attempt}\n")
        return Result(success=True, outputs=[])


_HELD = re.compile(r"connection lost .*the broker redelivers the (\d+) message")
_IDS = re.compile(r"for ([0-9a-f, -]+):")


@dataclass
class Outcome:
    """What a chaos run did and found."""

    backend: str
    tasks: int
    seconds: float = 0.0
    ended: Counter[int] = field(default_factory=Counter)
    first_runs: Counter[int] = field(default_factory=Counter)  # runs on a first delivery
    left_on_queue: Counter[int] = field(default_factory=Counter)  # drained after the stop
    injected: dict[str, int] = field(default_factory=dict)
    held_at_losses: int = 0  # RabbitMQ: messages held when a connection was lost
    failed_settles: set[str] = field(default_factory=set)  # Pub/Sub: ids whose ack/extend failed
    problems: list[str] = field(default_factory=list)

    @property
    def duplicates(self) -> int:
        """Extra deliveries: task ends beyond one per task, plus redeliveries of finished
        tasks still on the queue after the stop (they would have run again)."""
        extra = sum(n - 1 for n in self.ended.values() if n > 1)
        return extra + sum(n for i, n in self.left_on_queue.items() if self.ended[i])

    def summary(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "tasks": self.tasks,
            "seconds": round(self.seconds, 1),
            "completed": len(self.ended),
            "duplicates": self.duplicates,
            "left_on_queue_after_stop": sum(self.left_on_queue.values()),
            "injected": self.injected,
            "held_at_connection_losses": self.held_at_losses,
            "failed_settle_ids": len(self.failed_settles),
            "problems": self.problems,
        }


class _Collector(logging.Handler):
    """Collects the library's warnings about lost connections and failed settles."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(logging.WARNING)
        self.outcome = outcome

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if match := _HELD.search(text):
            self.outcome.held_at_losses += int(match.group(1))
        elif text.startswith(("ack failed", "could not extend")) and (m := _IDS.search(text)):
            self.outcome.failed_settles.update(i.strip() for i in m.group(1).split(","))


def run_tcp_chaos(
    backend: str,
    tmp: Path,
    *,
    tasks: int = 200,
    task_seconds: float = 0.03,
    concurrency: int = 4,
    every: tuple[float, float] = (0.3, 0.8),
    weights: dict[str, float] | None = None,
    faults: bool = True,
    seed: int = 0,
    timeout: float = 90.0,
    emulator: Any = None,
    amqp_port: int = 5672,
) -> Outcome:
    """Run the scenario on ``backend`` (``"amqp"`` or ``"pubsub"``); see the module docstring.

    Args:
        backend: ``"amqp"`` (RabbitMQ on 127.0.0.1:``amqp_port``) or ``"pubsub"``
            (``emulator``, a running :class:`~simpletasks.emulators.pubsub.PubSubEmulator`).
        tmp: A directory for the tasks' log.
        tasks: How many tasks.
        task_seconds: How long each task sleeps.
        concurrency: The daemon's workers.
        every: Pause between injected faults (seconds, uniform).
        weights: Relative frequency of the fault kinds (see ``TCPFaultProxy.chaos``).
        faults: Inject faults (False: a control run through the proxy).
        seed: Seed of the proxy's RNG.
        timeout: Give up waiting for the tasks after this many seconds.
    """
    outcome = Outcome(backend, tasks)
    name = f"tcpchaos-{uuid.uuid4().hex[:10]}"
    log = tmp / f"{name}.log"
    log.touch()
    upstream = ("127.0.0.1", amqp_port) if backend == "amqp" else (emulator.host, emulator.port)
    lease = 10.0 if backend == "pubsub" else 30.0  # Pub/Sub: its shortest ack deadline
    collector = _Collector(outcome)
    root = logging.getLogger("simpletasks")
    level = root.level
    root.addHandler(collector)
    if not root.isEnabledFor(logging.WARNING):
        root.setLevel(logging.WARNING)
    proxy = TCPFaultProxy(upstream, seed=seed)
    started = time.monotonic()
    try:
        if backend == "amqp":
            direct_url = f"amqp://127.0.0.1:{amqp_port}/%2F?queue={name}"
            proxied_url = f"amqp://127.0.0.1:{proxy.port}/%2F?queue={name}"
            direct = open_queue(direct_url, create=True)
            queue = open_queue(proxied_url)
        else:
            url = f"pubsub://{emulator.project}/{name}"
            direct = open_queue(url, create=True, emulator_host=emulator.host_port,
                                ack_deadline_seconds=int(lease))  # fmt: skip
            queue = open_queue(url, emulator_host=proxy.address)
        bodies = [
            TaskMessage(BasicInfo(i, NapTask.name, ""), {"seconds": task_seconds, "log": str(log)})
            for i in range(tasks)
        ]
        direct.send_batch([b.to_json() for b in bodies])
        registry = TaskRegistry()
        registry.register(NapTask)
        settings = DaemonSettings(
            concurrency=concurrency, lease_seconds=lease, wait_seconds=1, grace_seconds=2.0
        )
        daemon = DaemonService(queue=queue, registry=registry, settings=settings)
        thread = threading.Thread(target=daemon.run, name="tcpchaos-daemon", daemon=True)
        thread.start()
        if faults:
            proxy.chaos(every=every, weights=weights)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(_ends(log)) < tasks:
            time.sleep(0.1)
        proxy.calm()
        time.sleep(lease if backend == "pubsub" else 1.0)  # late redeliveries run too
        daemon.stop()
        thread.join(30)
        if thread.is_alive():
            outcome.problems.append("the daemon did not stop within 30 s")
        queue.close()
        outcome.left_on_queue = _drain(direct, lease)
        direct.close()
        if backend == "pubsub":
            admin_queue = open_queue(url, emulator_host=emulator.host_port)
            admin_queue.delete(topic=True)  # type: ignore[attr-defined]
            admin_queue.close()
        else:
            _delete_amqp(direct_url)
    finally:
        proxy.close()
        root.removeHandler(collector)
        root.setLevel(level)
    outcome.seconds = time.monotonic() - started
    outcome.ended = _ends(log)
    outcome.first_runs = _ends(log, attempt=1)
    outcome.injected = dict(proxy.injected)
    _check(outcome)
    return outcome


def _ends(log: Path, attempt: int | None = None) -> Counter[int]:
    """Task id -> runs ended (on delivery ``attempt`` only, if given)."""
    ends = [line.split() for line in log.read_text().splitlines() if line.startswith("end ")]
    return Counter(int(e[1]) for e in ends if attempt is None or int(e[2]) == attempt)


def _drain(queue: Any, lease: float) -> Counter[int]:
    """Receive and ack what is left (waiting for late returns); count it by task id."""
    left: Counter[int] = Counter()
    quiet_until = time.monotonic() + (lease + 2 if lease <= 10 else 1.5)
    while time.monotonic() < quiet_until:
        batch = queue.receive(100, wait_seconds=0.5, lease_seconds=lease)
        for message in batch:
            left[TaskMessage.from_json(message.body).basic_info.id] += 1
        if batch:
            queue.ack_many(batch)
    return left


def _delete_amqp(url: str) -> None:
    queue = open_queue(url)
    queue.delete()  # type: ignore[attr-defined]
    queue.close()


def _check(outcome: Outcome) -> None:
    missing = [i for i in range(outcome.tasks) if outcome.ended[i] == 0]
    if missing:
        outcome.problems.append(f"{len(missing)} task(s) never ended: {missing[:10]}")
    unfinished = [i for i in outcome.left_on_queue if not outcome.ended[i]]
    if unfinished:
        outcome.problems.append(f"unfinished task(s) left on the queue: {unfinished[:10]}")
    # A run on a first delivery (attempt 1) happens once per task: every other run is of a
    # redelivery, which the broker makes only of a message held when a fault hit.
    twice = [i for i, n in outcome.first_runs.items() if n > 1]
    if twice:
        outcome.problems.append(f"task(s) ran twice on a first delivery: {twice[:10]}")
    if not outcome.injected and outcome.duplicates:
        outcome.problems.append(f"{outcome.duplicates} duplicate run(s) without any fault")
