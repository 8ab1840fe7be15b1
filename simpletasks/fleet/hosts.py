"""Which machines a fleet runs on: ``--hosts FILE`` or ``--hosts h1,h2``."""

from __future__ import annotations

import re
from pathlib import Path

from simpletasks.errors import ConfigError

#: An ssh destination: an alias of the ssh config, a host name or address, optionally user@.
_HOST = re.compile(r"(?:[A-Za-z0-9._-]+@)?[A-Za-z0-9_][A-Za-z0-9._:-]*")


def parse_hosts(spec: str) -> list[str]:
    """Return the hosts of ``spec``: a file (one host a line, ``#`` comments) or a comma list.

    Raises:
        ConfigError: If a host is malformed (a leading ``-`` would be an ssh option), the
            list is empty, or a host appears twice.
    """
    path = Path(spec).expanduser()
    entries: list[tuple[int | None, str]]
    if path.is_file():
        source = str(path)
        entries = [(n, line.split("#", 1)[0].strip()) for n, line in _lines(path)]
    else:
        source = "--hosts"
        entries = [(None, h.strip()) for h in spec.split(",")]
    hosts: list[str] = []
    for line, host in entries:
        where = f"{source}, line {line}" if line else source
        if not host:
            if line is None:
                raise ConfigError(f"{where}: empty host name in {spec!r}")
            continue
        if not _HOST.fullmatch(host):
            raise ConfigError(
                f"{where}: {host!r} is not a host (expected an ssh config alias, a name or "
                "an address, optionally user@)"
            )
        if host in hosts:
            raise ConfigError(f"{where}: host {host!r} is listed twice")
        hosts.append(host)
    if not hosts:
        raise ConfigError(f"{source}: no hosts")
    return hosts


def _lines(path: Path) -> list[tuple[int, str]]:
    return list(enumerate(path.read_text().splitlines(), start=1))
