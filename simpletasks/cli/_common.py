"""What the command modules share: option helpers, URL checks, masking, errors, logging.

Errors: a command raises :class:`~simpletasks.errors.SimpleTasksError` (or a click error);
:class:`Group` turns it into one line, ``Error: <message>``, with any ``amqp://`` password
masked, and exit status 1 (2 for wrong usage). No traceback for a mistake a user can fix.
"""

from __future__ import annotations

import errno
import logging
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from simpletasks.errors import SimpleTasksError
from simpletasks.urls import redact

DEFAULT_CACHE = "~/.cache/simpletasks"
CONTEXT_SETTINGS: dict[str, Any] = {"help_option_names": ["-h", "--help"]}
QUEUE_SCHEMES = (
    "sqs://NAME, pubsub://PROJECT/SUBSCRIPTION, amqp://USER:PASS@HOST/VHOST?queue=NAME, "
    "file:///ABS/DIR"
)
BUCKET_SCHEMES = "s3://BUCKET/PREFIX, gs://BUCKET/PREFIX, file:///ABS/DIR"
MEM_REASON = (
    "mem:// lives inside one process and vanishes when this command exits; "
    "use file:///absolute/dir for a local queue or bucket (or sqs://, pubsub://, amqp://, "
    "s3://, gs://)"
)
#: Exceptions of the cloud SDKs and database libraries shown as one line when one got through.
_LIBRARY_MODULES = (
    "botocore",
    "boto3",
    "google",
    "pika",
    "urllib3",
    "requests",
    "sqlalchemy",
    "psycopg",
)

#: What to do, by the class name of a cloud SDK exception that reached the command line.
_HINTS = {
    "NoCredentialsError": "no AWS credentials found: set AWS_ACCESS_KEY_ID and "
    "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), run on a VM with a role, or for the local stack "
    "`set -a; . ./simpletasks-local.env; set +a`",
    "PartialCredentialsError": "incomplete AWS credentials: set both AWS_ACCESS_KEY_ID and "
    "AWS_SECRET_ACCESS_KEY",
    "EndpointConnectionError": "nothing answers at the AWS endpoint: check AWS_ENDPOINT_URL "
    "(is the local stack still running?) and the network",
    "DefaultCredentialsError": "no Google credentials found: run `gcloud auth "
    "application-default login`, set GOOGLE_APPLICATION_CREDENTIALS, or for the local stack "
    "`set -a; . ./simpletasks-local.env; set +a`",
    "RetryError": "a Google Cloud service did not answer in time: check the network, or "
    "PUBSUB_EMULATOR_HOST / STORAGE_EMULATOR_HOST (is the local stack still running?)",
    "AMQPConnectionError": "cannot connect to RabbitMQ: is it running, and are host, port, "
    "user and password right?",
    "OperationalError": "cannot use the database: check its URL, that the server is running "
    "and lets you in, or for SQLite that the file's folder exists and is writable",
}

F = TypeVar("F", bound=Callable[..., Any])


def env_name(name: str) -> str:
    """Return the environment variable that can set option ``name``."""
    return f"SIMPLETASKS_{name}"


def echo(text: str, **kwargs: Any) -> None:
    """``click.echo`` with passwords masked."""
    click.echo(redact(text), **kwargs)


def setup_logging(level: str) -> None:
    """Log to stderr at ``level``; keep the cloud SDKs' chatter at warnings."""
    if not logging.root.handlers:
        logging.basicConfig(
            format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
        )
        for handler in logging.root.handlers:
            handler.addFilter(_RedactFilter())
    logging.root.setLevel(getattr(logging, level.upper()))
    quiet = ("pika", "google.auth")  # log each failed attempt: the command says it once
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer", "google", *quiet):
        floor = logging.CRITICAL if noisy in quiet else logging.WARNING
        logging.getLogger(noisy).setLevel(max(floor, logging.root.level))


class _RedactFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        masked = redact(text)
        if masked != text:
            record.msg, record.args = masked, None
        return True


def _set_log_level(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is not None:
        setup_logging(value)


def log_level_option(default: str | None) -> Callable[[F], F]:
    """The ``--log-level`` option: on the group (with a default) and on every subcommand."""
    return click.option(
        "--log-level",
        default=default,
        show_default=default is not None,
        show_envvar=default is not None,
        envvar=env_name("LOG_LEVEL") if default is not None else None,
        type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
        expose_value=False,
        is_eager=True,
        callback=_set_log_level,
        help="Log level (also accepted before the command).",
    )


def refuse_mem(url: str | None, option: str) -> None:
    """Refuse a ``mem://`` URL: it would live and die with this one command."""
    if url and url.lower().startswith("mem://"):
        raise click.BadParameter(MEM_REASON, param_hint=option)


def require(hint: str = "", **options: Any) -> None:
    """Report every missing required option at once.

    Args:
        hint: Added to the message (e.g. another way to give the options).
        **options: ``option_name=value`` pairs, as in ``error_queue=error_url`` (a trailing
            ``_`` is dropped: ``from_=`` is ``--from``).
    """
    missing = [
        f"--{name.rstrip('_').replace('_', '-')}" for name, value in options.items() if not value
    ]
    if missing:
        names = ", ".join(missing)
        raise click.UsageError(f"missing option(s) {names}{hint}")


def _library_error(exc: BaseException) -> bool:
    module = type(exc).__module__ or ""
    return module.split(".")[0] in _LIBRARY_MODULES


#: errno → what to do about it, after the operating system's own words.
_OS_HINTS = {
    errno.ENOSPC: " (the disk is full: free some space and run the command again)",
    errno.EDQUOT: " (the disk quota is used up: free some space and run the command again)",
    errno.EACCES: " (permission denied: check the owner and mode of that path)",
    errno.EROFS: " (a read-only file system: choose a writable place)",
}

#: Optional packages → the extra that installs them (for a one-line hint when one is missing).
_EXTRAS = {
    "numpy": "tiering",
    "PIL": "tiering",
    "scipy": "edge",
    "tifffile": "tiering",
    "sqlalchemy": "tiering",
    "psycopg": "tiering",
    "yaml": "tiering",
    "matplotlib": "tiering",
    "flask": "web",
    "waitress": "web",
    "itsdangerous": "web",
    "prometheus_client": "metrics",
    "boto3": "aws",
    "botocore": "aws",
    "moto": "local",
    "google": "gcp",
    "pika": "amqp",
}
#: Commands whose optional packages all come from one extra.
_COMMAND_EXTRAS = {"edge": "edge", "tier": "tiering", "serve": "web", "fleet": "metrics"}


class Group(click.Group):
    """A click group whose commands fail with one line, never a traceback, on a known error."""

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command; turn known errors into ``Error: <message>`` (passwords masked)."""
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx else ctx.command_path
            text = redact(exc.format_message())
            raise UsageLine(f"{text} (see `{where} -h`)") from None
        except click.ClickException as exc:
            exc.message = redact(exc.message)
            raise
        except SimpleTasksError as exc:
            raise click.ClickException(redact(str(exc) or type(exc).__name__)) from None
        except ModuleNotFoundError as exc:
            package = (exc.name or "").partition(".")[0]
            extra = _EXTRAS.get(package)
            if extra is None:
                raise
            extra = _COMMAND_EXTRAS.get(ctx.invoked_subcommand or "", extra)
            raise click.ClickException(
                f"this command needs the Python package {package!r}, which is not installed: "
                f"pip install 'simpletasks[{extra}]'"
            ) from None
        except OSError as exc:
            if _library_error(exc):
                raise _one_line(exc) from None
            if exc.errno is None:  # not the operating system's word: a bug, show it all
                raise
            what = f"{exc.strerror}: {exc.filename}" if exc.filename else str(exc)
            hint = _OS_HINTS.get(exc.errno, "")
            raise click.ClickException(redact(f"{what}{hint}")) from None
        except Exception as exc:
            if not _library_error(exc):
                raise
            raise _one_line(exc) from None


def _one_line(exc: BaseException) -> click.ClickException:
    """A library's error as one line, with a hint for the usual ones."""
    name = type(exc).__name__
    text = " ".join(str(exc).split()) or "(no message)"
    hint = _HINTS.get(name)
    line = f"{hint} ({name}: {text})" if hint else f"{name}: {text}"
    return click.ClickException(redact(line))


class UsageLine(click.ClickException):
    """A usage mistake shown as one line (click's own usage errors print the usage first)."""

    exit_code = 2


class MessageLine(click.ClickException):
    """An error about one line of an input file."""

    def __init__(self, source: str, line: int, message: str) -> None:
        super().__init__(f"{source}, line {line}: {message}")
