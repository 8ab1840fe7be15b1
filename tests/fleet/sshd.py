"""Real OpenSSH servers on 127.0.0.1 ports, each a "host" of a test fleet.

:func:`start_hosts` generates a host key and a user key, starts one ``/usr/sbin/sshd -D``
per host on a free port (root login with the key only, ``StrictModes no``, its own
``AuthorizedKeysFile``), and writes an ssh client config with one ``Host`` alias each. A host
may be made to refuse the key (an empty authorized_keys). Needs Debian's
``openssh-server`` (``apt-get install -y openssh-server``) and root; without them the tests
skip, or fail under ``CI=true``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests_support import require_service

SSHD = "/usr/sbin/sshd"


@dataclass
class SshHosts:
    """Running sshd "hosts" and the ssh config that reaches them."""

    config: Path
    ports: dict[str, int]
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def require_sshd() -> None:
    """Skip (or fail under CI=true) unless sshd, ssh and root are here."""
    missing = [p for p in (SSHD,) if not os.path.exists(p)]
    missing += [p for p in ("ssh", "ssh-keygen") if shutil.which(p) is None]
    if missing:
        require_service(
            f"OpenSSH missing ({', '.join(missing)}): apt-get install -y openssh-server "
            "openssh-client"
        )
    if os.geteuid() != 0:
        require_service("the sshd fleet tests run as root (sshd must switch users)")


def start_hosts(
    root: Path, good: list[str], refusing: list[str] = (), down: list[str] = ()
) -> SshHosts:
    """Start sshd for each of ``good`` and ``refusing``; ``down`` get a closed port."""
    require_sshd()
    root.mkdir(parents=True, exist_ok=True)
    os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege separation directory
    for name in ("host_key", "user_key"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(root / name)], check=True
        )
    authorized = root / "authorized_keys"
    authorized.write_text((root / "user_key.pub").read_text())
    nobody = root / "authorized_keys_empty"
    nobody.write_text("")
    hosts = SshHosts(config=root / "ssh_config", ports={})
    client = []
    for name in [*good, *refusing, *down]:
        port = free_port()
        hosts.ports[name] = port
        client.append(
            f"Host {name}\n  HostName 127.0.0.1\n  Port {port}\n  User root\n"
            f"  IdentityFile {root / 'user_key'}\n  IdentitiesOnly yes\n"
            "  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n"
        )
        if name in down:
            continue
        keys = authorized if name in good else nobody
        config = root / f"sshd_{name}"
        config.write_text(
            f"Port {port}\nListenAddress 127.0.0.1\nHostKey {root / 'host_key'}\n"
            f"PidFile {root / f'sshd_{name}.pid'}\nAuthorizedKeysFile {keys}\n"
            "PermitRootLogin prohibit-password\nPubkeyAuthentication yes\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
            "StrictModes no\nAcceptEnv PYTHONPATH\nLogLevel ERROR\n"
        )
        proc = subprocess.Popen(
            [SSHD, "-f", str(config), "-D", "-e"],
            stdout=subprocess.DEVNULL,
            stderr=open(root / f"sshd_{name}.log", "wb"),  # noqa: SIM115
        )
        hosts.procs.append(proc)
    hosts.config.write_text("\n".join(client))
    deadline = time.monotonic() + 10
    for name in [*good, *refusing]:
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", hosts.ports[name])) == 0:
                    break
            if time.monotonic() > deadline:
                hosts.stop()
                log = (root / f"sshd_{name}.log").read_text()
                require_service(f"sshd for {name} did not start: {log[-500:]}")
            time.sleep(0.05)
    return hosts
