"""The ``simpletasks`` command line: run, schedule, status, purge, local.

Every option can also come from a ``SIMPLETASKS_*`` environment variable (named in
``--help``); a flag on the command line wins. This module is the only one that configures
logging handlers (in ``setup_logging``). One module per group of commands: ``run``,
``queues`` (schedule, status, purge) and ``local``.
"""

from __future__ import annotations

import click

from simpletasks.cli import local, queues, run
from simpletasks.cli._common import env_name, setup_logging


@click.group()
@click.option(
    "--log-level",
    default="info",
    show_envvar=True,
    envvar=env_name("LOG_LEVEL"),
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
)
@click.version_option(package_name="simpletasks")
def main(log_level: str) -> None:
    """Run small data-heavy tasks from a queue (SQS, Pub/Sub, RabbitMQ, file) on a bucket."""
    setup_logging(log_level)


for command in (run.run, queues.schedule, queues.status, queues.purge, local.local):
    main.add_command(command)
