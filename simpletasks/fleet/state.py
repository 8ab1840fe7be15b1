"""The local record of a fleet: which daemons run where (a JSON file, written atomically)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from simpletasks.errors import ConfigError

DEFAULT_STATE = "~/.simpletasks/fleet.json"
VERSION = 1


@dataclass
class DaemonRecord:
    """One daemon started by ``fleet start``."""

    host: str
    name: str
    pid: int
    started: float


@dataclass
class FleetState:
    """What ``fleet start`` recorded; ``fleet status|stop|logs`` read it.

    Attributes:
        remote_dir: The directory on every host that holds logs and status files.
        python: The Python that runs simpletasks on the hosts.
        ssh_config: The ssh config file used (``None``: the user's own).
        daemons: Every daemon started and not yet stopped.
    """

    remote_dir: str
    python: str
    ssh_config: str | None = None
    daemons: list[DaemonRecord] = field(default_factory=list)

    def hosts(self) -> list[str]:
        """The hosts with daemons, in the order first started."""
        return list(dict.fromkeys(d.host for d in self.daemons))

    def on(self, host: str) -> list[DaemonRecord]:
        """The daemons of ``host``."""
        return [d for d in self.daemons if d.host == host]


def load(path: Path) -> FleetState:
    """Read the state file.

    Raises:
        ConfigError: If it does not exist (nothing started) or is not a fleet state.
    """
    try:
        data = json.loads(path.read_text())
        if data.get("version") != VERSION:
            raise ValueError(f"version {data.get('version')!r}, expected {VERSION}")
        daemons = [DaemonRecord(**d) for d in data["daemons"]]
        return FleetState(data["remote_dir"], data["python"], data.get("ssh_config"), daemons)
    except FileNotFoundError:
        raise ConfigError(
            f"no fleet recorded in {path}: start one with `simpletasks fleet start`"
        ) from None
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path} is not a fleet state file: {exc}") from None


def save(path: Path, state: FleetState) -> None:
    """Write the state file atomically (creating its directory)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"version": VERSION, **asdict(state)}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)
