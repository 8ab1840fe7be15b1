"""Task types used by the daemon tests (also importable by daemon subprocesses).

Each appends a line to the file named by its payload's ``log`` on every execution, so tests
can count runs even across processes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from simpletasks.task import DaemonTask, Result


def _log(path: str, line: str) -> int:
    """Append ``line`` to ``path`` and return how many lines it now has."""
    with open(path, "a") as f:
        f.write(line + "\n")
    return len(Path(path).read_text().splitlines())


@dataclass
class SleepPayload:
    seconds: float
    log: str


class SleepTask(DaemonTask):
    name = "SLEEP"
    payload_type = SleepPayload

    def execute(self, datasource: object) -> Result:
        _log(self.payload.log, f"start {self.id}")
        time.sleep(self.payload.seconds)
        _log(self.payload.log, f"end {self.id}")
        return Result(success=True, outputs=[], message=f"slept {self.payload.seconds}")


@dataclass
class FailPayload:
    phase: Literal["prepare", "execute", "finalize", "result"]
    log: str
    times: int = -1  # fail the first `times` runs; -1 = always
    padding: str = ""  # makes a message as big as a test needs


class FailTask(DaemonTask):
    name = "FAIL"
    payload_type = FailPayload

    def _maybe_fail(self, phase: str) -> None:
        if self.payload.phase == phase and (
            self.payload.times < 0 or self.run < self.payload.times
        ):
            raise RuntimeError(f"planned failure in {phase} (run {self.run})")

    def prepare(self, datasource: object) -> None:
        self.run = _log(self.payload.log, f"run {self.id}") - 1  # 0-based run number
        self._maybe_fail("prepare")

    def execute(self, datasource: object) -> Result:
        self._maybe_fail("execute")
        failing = self.payload.phase == "result" and (
            self.payload.times < 0 or self.run < self.payload.times
        )
        return Result(success=not failing, message="planned unsuccessful result" if failing else "")

    def finalize(self, datasource: object, result: Result) -> None:
        self._maybe_fail("finalize")
