"""`simpletasks local`: the example on local emulators, or the local stack."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from simpletasks.cli._common import echo, log_level_option


@click.command()
@log_level_option(None)
@click.option(
    "--cloud",
    type=click.Choice(["aws", "gcp"]),
    default="aws",
    show_default=True,
    help="Run the example on moto (SQS + S3) or on the Pub/Sub emulator + fake-gcs-server.",
)
@click.option(
    "--concurrency",
    default=2,
    show_default=True,
    type=click.IntRange(min=1),
    help="Worker threads of the example's daemon.",
)
@click.option(
    "--keep-cache",
    "cache_dir",
    type=click.Path(file_okay=False),
    help="Use (and keep) this cache directory instead of a temporary one.",
)
@click.option(
    "--stack",
    is_flag=True,
    help="Instead: start moto (SQS + S3) and, if installed, the GCP emulators, with the "
    "example's queues and bucket; write --env-file; run until Ctrl-C. Does not start RabbitMQ.",
)
@click.option(
    "--tiering",
    "tiering_dir",
    type=click.Path(file_okay=False),
    help="Instead: the HASTE tiering demo. Generates a defocus series of synthetic cell "
    "images, tiers it with workers on moto (SQS + S3 tiers with storage classes), prints the "
    "tier table and writes the database, table and figure into this directory.",
)
@click.option(
    "--env-file",
    default="simpletasks-local.env",
    show_default=True,
    type=click.Path(dir_okay=False),
    help="Where --stack writes the environment.",
)
def local(
    cloud: str,
    concurrency: int,
    cache_dir: str | None,
    stack: bool,
    tiering_dir: str | None,
    env_file: str,
) -> None:
    """Run the NO_OP example end to end on local emulators (no cloud account needed).

    Starts the services on free 127.0.0.1 ports, creates the queues and the bucket,
    schedules the example, runs the daemon until the queue is drained and checks every
    output. With --stack, starts moto, fake-gcs-server and the Pub/Sub emulator (those that
    are installed; not RabbitMQ), writes their addresses to an env file and keeps them running: then
    `set -a; . simpletasks-local.env; set +a` and use sqs://, s3://, pubsub:// and gs:// URLs
    as on the clouds. --cloud gcp and the GCP part of --stack need
    `pip install 'simpletasks[gcp-local]'` and the Pub/Sub emulator (Java).
    """
    from simpletasks import local as local_run

    if stack:
        _serve_stack(Path(env_file), local_run)
        return
    if tiering_dir is not None:
        from simpletasks.tasks.tiering.local import run_demo

        if not run_demo(Path(tiering_dir), cloud="aws", concurrency=concurrency, echo=echo):
            raise click.ClickException("the tiering demo did not complete cleanly (see above)")
        return
    ok = local_run.run_local(cloud=cloud, concurrency=concurrency, cache_dir=cache_dir, echo=echo)
    if not ok:
        raise click.ClickException("the local run did not complete cleanly (see above)")


def _serve_stack(env_file: Path, local_run: Any) -> None:
    import signal
    import threading
    from contextlib import ExitStack

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: stop.set())
    with ExitStack() as services:
        env = local_run.start_stack(services, echo=echo)
        local_run.write_env_file(env_file, env)
        echo(f"wrote {env_file}; press Ctrl-C to stop the services")
        stop.wait()
    env_file.unlink(missing_ok=True)
    echo("services stopped")
