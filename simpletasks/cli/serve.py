"""`simpletasks serve`: the job API and upload pages, served by waitress.

Every option can come from a ``SIMPLETASKS_*`` environment variable (named in ``--help``).
The report consumer runs in the same process (``--no-consumer`` to run it elsewhere).
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

import click

from simpletasks.cli._common import env_name, log_level_option, require

logger = logging.getLogger(__name__)


def _opt(*names: str, env: str, **kwargs: Any) -> Any:
    return click.option(*names, envvar=env_name(env), show_envvar=True, **kwargs)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@log_level_option(None)
@_opt(
    "--database",
    env="DATABASE",
    default="sqlite:///simpletasks-web.db",
    show_default=True,
    help="SQLAlchemy URL: sqlite:///path or postgresql+psycopg://user@host/db.",
)
@_opt("--queue", "queue_url", env="QUEUE", help="Task queue URL (where tasks are sent).")
@_opt("--bucket", "bucket_url", env="BUCKET", help="The workers' bucket URL.")
@_opt("--done-queue", "done_url", env="DONE_QUEUE", help="Done-report queue to consume.")
@_opt("--error-queue", "error_url", env="ERROR_QUEUE", help="Error-report queue to consume.")
@_opt(
    "--secret-key",
    env="SECRET_KEY",
    help="Signs links and forms (>= 16 characters; "
    "keep it stable: changing it invalidates every link sent).",
)
@_opt("--host", env="HOST", default="127.0.0.1", show_default=True, help="Address to listen on.")
@_opt("--port", env="PORT", default=8080, show_default=True, type=click.IntRange(0, 65535))
@_opt("--threads", env="THREADS", default=8, show_default=True, type=click.IntRange(1, 256))
@_opt(
    "--public-url", env="PUBLIC_URL", help="Base URL in e-mailed links (default http://HOST:PORT)."
)
@_opt(
    "--pipelines",
    "pipelines_file",
    env="PIPELINES",
    type=click.Path(dir_okay=False),
    help="TOML file with [pipelines.NAME] tables (upload pages).",
)
@_opt("--smtp-host", env="SMTP_HOST", default="", help="SMTP server for result e-mails.")
@_opt("--smtp-port", env="SMTP_PORT", default=25, show_default=True, type=int)
@_opt("--smtp-from", env="SMTP_FROM", default="simpletasks@localhost", show_default=True)
@_opt("--smtp-user", env="SMTP_USER", default="")
@_opt("--smtp-password", env="SMTP_PASSWORD", default="")
@_opt("--smtp-starttls/--no-smtp-starttls", env="SMTP_STARTTLS", default=False)
@_opt(
    "--scan-command",
    env="SCAN_COMMAND",
    default="",
    help="Virus scanner for uploads, e.g. 'clamdscan --fdpass' (files are appended).",
)
@_opt("--uploads-per-minute", env="UPLOADS_PER_MINUTE", default=10, show_default=True, type=int)
@_opt(
    "--downloads-per-minute",
    env="DOWNLOADS_PER_MINUTE",
    default=120,
    show_default=True,
    type=int,
    help="Result-link downloads per client address per minute.",
)
@_opt(
    "--proxy-hops",
    env="PROXY_HOPS",
    default=0,
    show_default=True,
    type=click.IntRange(0, 5),
    help="Trusted reverse proxies in front (their X-Forwarded-For/-Proto are used).",
)
@_opt(
    "--consumer/--no-consumer",
    env="CONSUMER",
    default=True,
    show_default=True,
    help="Consume the done and error queues in this process.",
)
@click.option(
    "--create-api-key",
    metavar="NAME",
    help="Create an API key named NAME in the database, print it, and exit.",
)
def serve(**opts: Any) -> None:
    """Serve the job REST API and the upload pages (waitress).

    Create a key first: `simpletasks serve --database URL --create-api-key me`.
    """
    from simpletasks.web.db import make_engine, make_sessions

    if opts["create_api_key"]:
        from simpletasks.web.auth import create_api_key

        sessions = make_sessions(make_engine(opts["database"]))
        with sessions() as session:
            click.echo(create_api_key(session, opts["create_api_key"]))
        return
    require(queue=opts["queue_url"], bucket=opts["bucket_url"], secret_key=opts["secret_key"])
    app, consumer = build_app(opts)
    import waitress

    server = waitress.create_server(
        app, host=opts["host"], port=opts["port"], threads=opts["threads"], ident="simpletasks"
    )
    if consumer is not None and opts["consumer"]:
        consumer.start()
    stop = threading.Event()

    def _shutdown(signum: int, frame: Any) -> None:
        stop.set()
        server.close()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _shutdown)
    click.echo(f"serving on http://{server.effective_host}:{server.effective_port}", err=True)
    try:
        server.run()
    except (OSError, ValueError):
        if not stop.is_set():
            raise
    finally:
        if consumer is not None:
            consumer.stop()
    logger.info("stopped")


def build_app(opts: dict[str, Any]) -> tuple[Any, Any]:
    """Return the app and its consumer for the ``serve`` options."""
    from simpletasks.web import SmtpConfig, WebConfig, create_app, load_pipelines

    public = opts["public_url"] or f"http://{opts['host']}:{opts['port']}"
    config = WebConfig(
        database_url=opts["database"],
        queue_url=opts["queue_url"],
        bucket_url=opts["bucket_url"],
        secret_key=opts["secret_key"],
        done_queue_url=opts["done_url"],
        error_queue_url=opts["error_url"],
        public_url=public,
        pipelines=load_pipelines(opts["pipelines_file"]) if opts["pipelines_file"] else {},
        smtp=SmtpConfig(
            host=opts["smtp_host"],
            port=opts["smtp_port"],
            sender=opts["smtp_from"],
            username=opts["smtp_user"],
            password=opts["smtp_password"],
            starttls=opts["smtp_starttls"],
        ),
        scan_command=tuple(opts["scan_command"].split()),
        uploads_per_minute=opts["uploads_per_minute"],
        downloads_per_minute=opts["downloads_per_minute"],
        proxy_hops=opts["proxy_hops"],
    )
    app = create_app(config)
    return app, app.extensions["simpletasks"].consumer
