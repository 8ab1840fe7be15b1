"""Preemption notices of Spot/preemptible VMs, and what a daemon does about one.

GCE answers ``instance/preempted`` with ``TRUE`` once the VM is being preempted (about 30 s
before it goes); EC2 answers ``spot/instance-action`` with HTTP 404 until a Spot interruption
is scheduled, then with ``{"action": "terminate", "time": "2026-...Z"}`` about two minutes
ahead. :class:`PreemptionWatcher` polls the one of its cloud on a thread and calls
``on_notice`` once.

:func:`stop_on_notice` gives the daemons' answer: stop taking work at once (buffered
messages are released, running tasks see ``context.stopping()`` and should checkpoint), with
a grace period that ends a few seconds before the machine goes (or the daemon's own, if
shorter), after which whatever still runs is released so that another worker picks it up and
resumes from its checkpoint.
"""

from __future__ import annotations

import calendar
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from simpletasks.errors import ConfigError
from simpletasks.metadata_servers import Ec2Metadata, GceMetadata, open_metadata

logger = logging.getLogger(__name__)

GCE_PREEMPTED = "/computeMetadata/v1/instance/preempted"
EC2_INSTANCE_ACTION = "/latest/meta-data/spot/instance-action"
#: How long each cloud leaves between the notice and the end, when the notice does not say.
DEFAULT_WINDOW = {"gce": 30.0, "ec2": 120.0}
#: Seconds before the machine goes at which running tasks are released.
RELEASE_MARGIN = 5.0


@dataclass(frozen=True)
class Notice:
    """A preemption notice.

    Attributes:
        flavour: ``gce`` or ``ec2``.
        seconds_left: Seconds from the notice until the machine goes (estimated).
        detail: What the metadata server said.
    """

    flavour: str
    seconds_left: float
    detail: str


def check_notice(server: Any, *, now: float | None = None) -> Notice | None:
    """Ask ``server`` (a GCE or EC2 metadata client) once; return a notice or ``None``.

    Raises:
        ConfigError: If the server cannot be reached or answers unexpectedly.
    """
    now = time.time() if now is None else now
    if isinstance(server, GceMetadata):
        status, _, body = server._request("GET", GCE_PREEMPTED, {"Metadata-Flavor": "Google"})
        if status == 404:  # not a real GCE server (a test double): nothing to watch
            return None
        if status != 200:
            raise ConfigError(f"GCE metadata server answered HTTP {status} for {GCE_PREEMPTED}")
        if body.strip().upper() == "TRUE":
            return Notice("gce", DEFAULT_WINDOW["gce"], "instance/preempted = TRUE")
        return None
    if isinstance(server, Ec2Metadata):
        action = server._get(EC2_INSTANCE_ACTION)
        if action is None:
            return None
        return Notice("ec2", _ec2_seconds_left(action, now), f"spot/instance-action = {action}")
    raise ConfigError(f"no preemption notices for {server!r}")


def _ec2_seconds_left(body: str, now: float) -> float:
    try:
        when = json.loads(body)["time"]
        end = calendar.timegm(time.strptime(when, "%Y-%m-%dT%H:%M:%SZ"))
    except (ValueError, KeyError, TypeError):
        logger.warning("cannot read the time of the Spot notice %r; assuming 2 minutes", body)
        return DEFAULT_WINDOW["ec2"]
    return max(0.0, end - now)


class PreemptionWatcher:
    """Polls the metadata server for a preemption notice and calls ``on_notice`` once.

    Args:
        server: The metadata client (:func:`~simpletasks.metadata_servers.open_metadata`).
        on_notice: Called with the :class:`Notice` (on the watcher's thread).
        interval: Seconds between polls.
    """

    def __init__(
        self, server: Any, on_notice: Callable[[Notice], None], *, interval: float = 5.0
    ) -> None:
        self.server = server
        self.on_notice = on_notice
        self.interval = interval
        self.notice: Notice | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="st-preemption", daemon=True)
        self._failures = 0

    def start(self) -> PreemptionWatcher:
        """Start polling."""
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop polling."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(self.interval + 5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                notice = check_notice(self.server)
                self._failures = 0
            except ConfigError as exc:
                self._failures += 1
                if self._failures in (1, 10) or self._failures % 100 == 0:
                    logger.warning("preemption check failed (%d in a row): %s", self._failures, exc)
                notice = None
            if notice is not None:
                self.notice = notice
                logger.warning(
                    "preemption notice (%s): about %.0f s left", notice.detail, notice.seconds_left
                )
                try:
                    self.on_notice(notice)
                except Exception:
                    logger.exception("handling the preemption notice failed")
                return
            self._stop.wait(self.interval)


def stop_on_notice(
    daemons: Sequence[Any], *, margin: float = RELEASE_MARGIN
) -> Callable[[Notice], None]:
    """Return an ``on_notice`` that stops ``daemons`` and releases their tasks in time.

    Each daemon stops with a grace period of the notice window less ``margin`` (at once if
    the notice leaves less), or its own grace period if that is shorter.
    """

    def handle(notice: Notice) -> None:
        window = max(0.0, notice.seconds_left - margin)
        for daemon in daemons:
            own = getattr(getattr(daemon, "settings", None), "grace_seconds", window)
            daemon.stop(grace_seconds=min(own, window))
        logger.warning("preempted: running tasks have %.0f s before they are released", window)

    return handle


def watch(
    flavour: str,
    daemons: Sequence[Any],
    *,
    endpoint: str | None = None,
    interval: float = 5.0,
    margin: float = RELEASE_MARGIN,
) -> PreemptionWatcher:
    """Start watching ``flavour``'s notice; on one, stop ``daemons`` (:func:`stop_on_notice`)."""
    server = open_metadata(flavour, endpoint=endpoint)
    return PreemptionWatcher(
        server, stop_on_notice(daemons, margin=margin), interval=interval
    ).start()
