"""The ``simpletasks`` command line.

Commands, one module each: ``run`` (the daemon), ``create`` and ``upload`` (set up queues,
buckets and inputs: ``setup``), ``schedule`` and ``purge`` (``queues``), ``status``, ``peek``
and ``requeue`` (look without consuming, replay failures: ``inspect``), ``local`` (the
example, the tiering demo and the local stack), ``edge`` (the HASTE edge agent, gateway and
simulator), ``tier`` (the HASTE tiering worker's report, demo and helpers), ``serve`` (the
job API and upload pages) and ``fleet`` (daemons on machines over ssh).

Every option of ``run`` can also come from a ``SIMPLETASKS_*`` environment variable (named
in ``--help``); a flag wins. A mistake ends in one line, ``Error: ...``, exit status 1 (2 for
wrong usage); see :mod:`._common`. This package is the only place that configures logging
handlers.
"""

from __future__ import annotations

import click

from simpletasks.cli import edge, fleet, inspect, local, queues, run, serve, setup, tier
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
    inspect.status,
    inspect.peek,
    inspect.requeue,
    queues.purge,
    local.local,
    edge.edge,
    tier.tier,
    serve.serve,
    fleet.fleet,
):
    main.add_command(command)
