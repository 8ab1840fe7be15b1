"""LONG_SUM: a long, checkpointed task for the preemption and fleet tests (subprocess-safe).

It hashes ``steps`` numbers one step at a time (``step_seconds`` each), appending every step
it executes to the file ``work_log`` (so a test counts the work done by all deliveries), and
checkpoints every 5 steps, and at every step once its daemon is stopping. Its output
``out/<id>`` is the final hash: the same whether or not the task was interrupted.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any

from simpletasks.task import DaemonTask, Result


@dataclass
class LongSumPayload:
    steps: int
    work_log: str
    step_seconds: float = 0.05


def expected(steps: int) -> str:
    """The output of an uninterrupted run."""
    acc = ""
    for step in range(steps):
        acc = hashlib.sha256(f"{acc}:{step}".encode()).hexdigest()
    return acc


class LongSum(DaemonTask):
    name = "LONG_SUM"
    payload_type = LongSumPayload

    def execute(self, ds: Any) -> Result:
        state = self.context.restore() or {"next": 0, "acc": ""}
        with open(self.payload.work_log, "a") as log:
            for step in range(state["next"], self.payload.steps):
                if self.context.cancelled():
                    return Result(success=False, message="cancelled")
                time.sleep(self.payload.step_seconds)
                acc = hashlib.sha256(f"{state['acc']}:{step}".encode()).hexdigest()
                state = {"next": step + 1, "acc": acc}
                log.write(f"{self.context.daemon} {step}\n")
                log.flush()
                if step % 5 == 4 or self.context.stopping():
                    self.context.checkpoint(state)
        return Result(success=True, message=state["acc"])

    def finalize(self, ds: Any, result: Result) -> None:
        ds.put(f"out/{self.id}", result.message.encode())
