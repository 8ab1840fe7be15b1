"""Virus scanning of uploads with ClamAV (``clamscan`` or ``clamdscan``).

The scanner is a command: ``("clamdscan", "--fdpass")`` with a running clamd, or
``("clamscan", "-d", "/var/lib/clamav")``; the file paths are appended. ClamAV's exit
status says it: 0 clean, 1 something found (the lines ``<path>: <signature> FOUND`` say
what), anything else an error. An error rejects the upload (fail closed).
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Sequence
from pathlib import Path

logger = logging.getLogger(__name__)


class ScanError(Exception):
    """The scanner could not scan (missing binary, no signatures, timeout)."""


class VirusScanner:
    """Runs a ClamAV command over files.

    Args:
        command: argv prefix; the paths are appended.
        timeout: Seconds before the scan is abandoned (an error).
    """

    def __init__(self, command: Sequence[str], timeout: float = 120.0) -> None:
        if not command:
            raise ValueError("scanner command is empty")
        self.command = list(command)
        self.timeout = timeout

    def scan(self, paths: Sequence[Path]) -> dict[str, str]:
        """Return ``{path: signature}`` of the infected files (empty when all are clean).

        Raises:
            ScanError: If the scanner failed.
        """
        argv = [*self.command, "--no-summary", *[str(p) for p in paths]]
        try:
            done = subprocess.run(
                argv, capture_output=True, text=True, timeout=self.timeout, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ScanError(f"virus scanner {self.command[0]!r} failed: {exc}") from None
        if done.returncode == 0:
            return {}
        if done.returncode != 1:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise ScanError(
                f"virus scanner exited {done.returncode}: {' | '.join(tail) or 'no output'}"
            )
        found: dict[str, str] = {}
        for line in done.stdout.splitlines():
            if line.endswith(" FOUND"):
                path, _, rest = line.rpartition(": ")
                found[path] = rest.removesuffix(" FOUND")
        if not found:
            raise ScanError(f"virus scanner reported infection without naming it: {done.stdout!r}")
        return found
