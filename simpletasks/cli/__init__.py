"""The ``simpletasks`` command line.

Commands: ``run`` (the daemon), ``create`` and ``upload`` (set up queues, buckets and
inputs), ``schedule``, ``status``, ``peek``, ``requeue`` and ``purge`` (work with queues),
``local`` (the example and the local stack). Every option of ``run`` can also come from a
``SIMPLETASKS_*`` environment variable (named in ``--help``); a flag wins. A mistake ends in
one line, ``Error: ...``, exit status 1 (2 for wrong usage); see :mod:`._common`. This package
is the only place that configures logging handlers.
"""

from __future__ import annotations

import importlib

import click

from simpletasks.cli import local, queues, run, setup
from simpletasks.cli._common import CONTEXT_SETTINGS, Group, log_level_option


@click.group(cls=Group, context_settings=CONTEXT_SETTINGS)
@log_level_option("info")
@click.version_option(package_name="simpletasks")
def main() -> None:
    """Run small data-heavy tasks from a queue on a bucket.

    Queues: sqs://, pubsub://, amqp://, file:/// (and mem:// inside one Python process).
    Buckets: s3://, gs://, file:/// (and mem://). Start with `simpletasks local`.
    """


for command in (
    run.run,
    setup.create,
    setup.upload,
    queues.schedule,
    queues.status,
    queues.peek,
    queues.requeue,
    queues.purge,
    local.local,
):
    main.add_command(command)


def _add_pipeline_commands() -> None:
    """Add the commands of cli/edge.py, tier.py and serve.py (other helpers') if present.

    Such a module lists its commands in ``COMMANDS``; without it, every click command it
    defines that is not a subcommand of one of its groups is added.
    """
    for name in ("edge", "tier", "serve"):
        try:
            module = importlib.import_module(f"simpletasks.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"simpletasks.cli.{name}":
                raise
            continue
        defined = [
            obj
            for obj in vars(module).values()
            if isinstance(obj, click.Command)
            and getattr(obj.callback, "__module__", None) == module.__name__
        ]
        nested = {
            id(sub)
            for obj in defined
            if isinstance(obj, click.Group)
            for sub in obj.commands.values()
        }
        commands = getattr(module, "COMMANDS", None) or [
            obj for obj in defined if id(obj) not in nested
        ]
        for command in commands:
            main.add_command(command)


_add_pipeline_commands()
