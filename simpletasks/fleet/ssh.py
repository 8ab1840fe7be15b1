"""Commands on other machines through the system ``ssh`` client: key-based, never a prompt.

Every call passes ``BatchMode=yes`` (no password or passphrase prompt, no host-key question:
a host that needs one fails at once) and a connect timeout. ``ssh`` exits with 255 when the
connection or the login failed; :class:`SshResult` tells that apart from the remote
command's own failure.
"""

from __future__ import annotations

import logging
import shlex
import subprocess
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class SshResult:
    """What one remote command did."""

    host: str
    returncode: int
    stdout: str
    stderr: str

    @property
    def connected(self) -> bool:
        """Whether ssh reached the host and logged in (exit status 255 means it did not)."""
        return self.returncode != 255

    def problem(self) -> str:
        """One line saying what went wrong (the last line ssh or the command wrote)."""
        lines = [line for line in self.stderr.splitlines() if line.strip()]
        if not self.connected:
            return f"ssh failed: {lines[-1] if lines else 'exit status 255'}"
        return f"exit status {self.returncode}: {lines[-1] if lines else '(no output)'}"


class Ssh:
    """Runs commands on hosts with the system ``ssh``.

    Args:
        config: An ssh config file (``ssh -F``); default: the user's own.
        connect_timeout: Seconds to wait for a connection.
        options: More ``-o`` options, e.g. ``("StrictHostKeyChecking=accept-new",)``.
        executable: The ssh client.
    """

    def __init__(
        self,
        *,
        config: str | None = None,
        connect_timeout: float = 10.0,
        options: Sequence[str] = (),
        executable: str = "ssh",
    ) -> None:
        self.config = config
        self.connect_timeout = connect_timeout
        self.options = list(options)
        self.executable = executable

    def command(self, host: str, argv: Sequence[str]) -> list[str]:
        """The local command line that runs ``argv`` on ``host`` (each word quoted)."""
        cmd = [self.executable]
        if self.config:
            cmd += ["-F", self.config]
        cmd += ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={int(self.connect_timeout)}"]
        for option in self.options:
            cmd += ["-o", option]
        return [*cmd, "--", host, shlex.join(argv)]

    def run(self, host: str, argv: Sequence[str], *, timeout: float = 120.0) -> SshResult:
        """Run ``argv`` on ``host``; a local timeout is reported like a failed connection."""
        cmd = self.command(host, argv)
        logger.debug("ssh: %s", shlex.join(cmd))
        try:
            done = subprocess.run(
                cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
            )
        except subprocess.TimeoutExpired:
            return SshResult(host, 255, "", f"no answer within {timeout:.0f} s")
        except FileNotFoundError:
            return SshResult(host, 255, "", f"no ssh client {self.executable!r} on this machine")
        return SshResult(host, done.returncode, done.stdout, done.stderr)


def on_each(hosts: Sequence[str], call: Callable[[str], T], *, parallel: int = 16) -> list[T]:
    """``call(host)`` for every host, ``parallel`` at a time; results in the hosts' order."""
    if not hosts:
        return []
    with ThreadPoolExecutor(min(parallel, len(hosts)), thread_name_prefix="st-ssh") as pool:
        return list(pool.map(call, hosts))


def resolve_hostname(host: str, config: str | None = None) -> str:
    """The address ``ssh`` connects to for ``host`` (``ssh -G``), or ``host`` if unknown."""
    cmd = ["ssh", *(["-F", config] if config else []), "-G", "--", host]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return host.split("@")[-1]
    for line in out.splitlines():
        key, _, value = line.partition(" ")
        if key == "hostname" and value:
            return value.strip()
    return host.split("@")[-1]
