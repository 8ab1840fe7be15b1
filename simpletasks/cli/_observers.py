"""What watches a `simpletasks run` daemon besides its own work: metrics, JSON logs, a
status file, preemption notices (`--metrics-port`, `--log-format json`, `--status-file`,
`--from-metadata`). Each is imported only when its option asks for it.
"""

from __future__ import annotations

import os
from typing import Any

import click

from simpletasks.errors import SimpleTasksError


class Observers:
    """What watches a daemon besides its own middleware: metrics, logs, status file, notices."""

    def __init__(self) -> None:
        self.middleware: list[Any] = []
        self.metered: Any = None  # the MetricsMiddleware, if metrics are on
        self.metrics: Any = None
        self.server: Any = None
        self.watcher: Any = None
        self.address: tuple[int, str] = (0, "0.0.0.0")
        self.status: Any = None  # the StatusFileMiddleware, if any

    def start(self, daemon: Any, from_metadata: str | None, poll: float) -> None:
        """Serve the metrics; watch the preemption notice of ``from_metadata``'s cloud."""
        if self.metrics is not None and self.server is None:
            from simpletasks.metrics_server import MetricsServer

            self.server = MetricsServer(self.metrics, *self.address).start()
            if self.status is not None:  # the status file tells the port too
                self.status.extra["metrics_port"] = self.server.port
        if from_metadata:
            from simpletasks import metadata, preemption

            endpoint = os.environ.get(metadata.ENDPOINT_VARIABLES[from_metadata])
            self.watcher = preemption.watch(
                from_metadata, [daemon], endpoint=endpoint, interval=poll
            )

    def close(self) -> None:
        """Stop the watcher and the metrics server."""
        if self.watcher is not None:
            self.watcher.close()
        if self.server is not None:
            self.server.close()


def build_observers(
    name: str, port: int | None, host: str, log_format: str, status_file: str | None
) -> Observers:
    """Build the middleware for --metrics-port, --log-format json and --status-file."""
    found = Observers()
    if port is not None:
        from simpletasks.metrics import Metrics

        try:
            found.metrics = Metrics()
        except SimpleTasksError as exc:
            raise click.ClickException(str(exc)) from exc
        found.metered = found.metrics.middleware(name)
        found.address = (port, host)
        found.middleware.append(found.metered)
    if log_format == "json":
        from simpletasks.logjson import TaskLogMiddleware

        found.middleware.append(TaskLogMiddleware(name))
    if status_file:
        from simpletasks.fleet.status import StatusFileMiddleware

        found.status = StatusFileMiddleware(status_file)
        found.middleware.append(found.status)
    return found
