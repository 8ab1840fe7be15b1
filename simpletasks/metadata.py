"""Configuration from cloud instance metadata: GCE instance attributes or EC2 instance tags.

``simpletasks run --from-metadata gce|ec2`` reads its queues, bucket and settings here (GCE:
instance attribute, else project attribute; EC2: instance tags over IMDSv2): which attribute
sets which option, and how each value is checked. The servers' clients are in
:mod:`simpletasks.metadata_servers` (re-exported here). A worker that cannot read its
configuration exits with an error naming the problem, and systemd starts it again. No
environment variable is read here.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from simpletasks.errors import ConfigError, UnsupportedScheme
from simpletasks.metadata_servers import (
    DEFAULT_TIMEOUT,
    EC2_DEFAULT_ENDPOINT,
    ENDPOINT_VARIABLES,
    FLAVOURS,
    GCE_DEFAULT_HOST,
    Ec2Metadata,
    GceMetadata,
    MetadataServer,
    open_metadata,
)
from simpletasks.urls import BUCKET_BACKENDS, QUEUE_BACKENDS, Backend, scheme_of

logger = logging.getLogger(__name__)

#: Configuration attribute (GCE) or tag (EC2) -> the ``simpletasks run`` option it sets.
OPTIONS: dict[str, str] = {
    "task-queue": "--queue",
    "error-queue": "--error-queue",
    "done-queue": "--done-queue",
    "bucket-name": "--bucket",
    "cache-directory": "--cache-dir",
    "poll-frequency-seconds": "--poll-frequency",
    "concurrency": "--concurrency",
    "task-types": "--task",
}
REQUIRED = frozenset({"task-queue", "error-queue", "bucket-name"})

#: AWS settings for boto3. The keys are read on GCE only (on EC2 use the instance role).
AWS_REGION = "aws-region"
AWS_KEY_ID = "aws-access-key-id"
AWS_SECRET = "aws-secret-access-key"

_BUCKET_SCHEMES = {"gce": "gs", "ec2": "s3"}
_BARE_BUCKET = re.compile(r"[a-z0-9][a-z0-9._-]{1,220}[a-z0-9](/.*)?")
_TASK_PATH = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")


@dataclass(frozen=True)
class InstanceConfig:
    """Configuration read from instance metadata; ``None`` where the metadata had no value.

    The AWS keys are left out of ``repr`` so that logging the configuration never logs them.
    """

    flavour: str
    task_queue: str | None = None
    error_queue: str | None = None
    done_queue: str | None = None
    bucket_name: str | None = None  # a bucket URL (a bare name gets the cloud's scheme)
    cache_directory: str | None = None
    poll_frequency_seconds: float | None = None
    concurrency: int | None = None
    task_types: tuple[str, ...] | None = None  # module:Class paths
    aws_region: str | None = None
    aws_access_key_id: str | None = field(default=None, repr=False)
    aws_secret_access_key: str | None = field(default=None, repr=False)

    def options(self) -> dict[str, Any]:
        """The ``simpletasks run`` options set here, e.g. ``{"--queue": "sqs://tasks"}``."""
        values = {option: getattr(self, _field(name)) for name, option in OPTIONS.items()}
        return {option: value for option, value in values.items() if value is not None}

    def aws_environment(self, environ: Mapping[str, str]) -> dict[str, str]:
        """Variables to add to ``environ`` for boto3: region and keys, unless it sets its own."""
        env: dict[str, str] = {}
        if self.aws_region and not ({"AWS_REGION", "AWS_DEFAULT_REGION"} & environ.keys()):
            env["AWS_DEFAULT_REGION"] = self.aws_region
        if self.aws_access_key_id and self.aws_secret_access_key:
            if {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} & environ.keys():
                logger.info("AWS keys in the environment take precedence over metadata keys")
            else:
                env["AWS_ACCESS_KEY_ID"] = self.aws_access_key_id
                env["AWS_SECRET_ACCESS_KEY"] = self.aws_secret_access_key
        return env


def read_config(
    server: MetadataServer, *, skip: Collection[str] = (), required: Collection[str] = REQUIRED
) -> InstanceConfig:
    """Read and check :data:`OPTIONS`, ``aws-region`` and (GCE only) the AWS keys.

    Args:
        server: Where to read (:func:`open_metadata`).
        skip: Names not to read, e.g. those whose options were given on the command line.
        required: Names that must be set.

    Raises:
        ConfigError: If the server does not answer, a required name is not set, or a value
            is malformed; the message names the attribute or tag.
    """
    values: dict[str, Any] = {}
    for name, option in OPTIONS.items():
        raw = None if name in skip else server.get(name)
        if raw is not None:
            values[_field(name)] = _parsed(server, name, raw, _PARSERS[name])
        elif name in required and name not in skip:
            raise ConfigError(f"{server.describe_missing(name)}; set it, or pass {option}")
    region = server.get(AWS_REGION)
    values["aws_region"] = (
        server.region() if region is None else _parsed(server, AWS_REGION, region, _region)
    )
    if server.flavour == "gce":
        values.update(_aws_keys(server))
    config = InstanceConfig(flavour=server.flavour, **values)
    logger.info("configuration from %s: %s", server, config)
    return config


def _aws_keys(server: MetadataServer) -> dict[str, str]:
    """Read the AWS key pair; messages name the attributes, never show the values."""
    pair = {AWS_KEY_ID: server.get(AWS_KEY_ID), AWS_SECRET: server.get(AWS_SECRET)}
    if pair[AWS_KEY_ID] is None and pair[AWS_SECRET] is None:
        return {}
    for name, value in pair.items():
        if value is None:
            raise ConfigError(f"{server.label} {name!r} is not set: set both AWS keys or neither")
        if not value.strip() or any(c.isspace() for c in value.strip()):
            raise ConfigError(
                f"{server.label} {name!r} is malformed: empty or contains spaces (not shown)"
            )
    logger.warning(
        "using the AWS keys in the GCE attributes 'aws-access-key-id' and 'aws-secret-access-key'"
        ": any process on this VM can read them; prefer keyless credentials (docs/deploy.md)"
    )
    return {_field(name): value.strip() for name, value in pair.items() if value}


# -- parsing -------------------------------------------------------------------------------


def _field(name: str) -> str:
    return name.replace("-", "_")


def _parsed(server: MetadataServer, name: str, raw: str, parse: Callable[[str, str], Any]) -> Any:
    try:
        if not raw.strip():
            raise ValueError("it is empty")
        return parse(raw.strip(), server.flavour)
    except ValueError as exc:
        raise ConfigError(f"{server.label} {name!r} = {raw!r} is malformed: {exc}") from None


def _url(value: str, table: dict[str, Backend], kind: str) -> str:
    try:
        scheme = scheme_of(value)
    except UnsupportedScheme as exc:
        raise ValueError(str(exc)) from None
    if scheme not in table or not value.partition("://")[2].strip("/"):
        raise ValueError(f"expected a {kind} URL ({', '.join(f'{s}://' for s in sorted(table))})")
    return value


def _bucket(value: str, flavour: str) -> str:
    """A bucket URL; a bare name (SimpleTasks.jl style) gets gs:// on GCE, s3:// on EC2."""
    if "://" not in value:
        if not _BARE_BUCKET.fullmatch(value):
            raise ValueError(
                "expected a bucket URL (s3://bucket/prefix, gs://..., file:///dir) or a bucket "
                "name of lower-case letters, digits, '.', '-' and '_'"
            )
        value = f"{_BUCKET_SCHEMES[flavour]}://{value}"
    return _url(value, BUCKET_BACKENDS, "bucket")


def _matching(pattern: str, expected: str) -> Callable[[str, str], str]:
    regex = re.compile(pattern)

    def parse(value: str, flavour: str) -> str:
        if not regex.fullmatch(value):
            raise ValueError(f"expected {expected}")
        return value

    return parse


_directory = _matching(r"/.*", "an absolute path")
_region = _matching(r"[a-z]{2}(-[a-z]+)+-\d+", "an AWS region such as us-east-1")
_whole = _matching(r"0*[1-9][0-9]*", "a whole number >= 1")


def _seconds(value: str, flavour: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError("expected a number of seconds") from None
    if not 0 <= seconds < math.inf:
        raise ValueError("expected a number of seconds >= 0")
    return seconds


def _task_types(value: str, flavour: str) -> tuple[str, ...]:
    paths = tuple(value.replace(",", " ").split())
    for path in paths:
        if not _TASK_PATH.fullmatch(path):
            raise ValueError(f"expected module:Class paths separated by spaces, not {path!r}")
    return paths


_PARSERS: dict[str, Callable[[str, str], Any]] = {
    "task-queue": lambda value, flavour: _url(value, QUEUE_BACKENDS, "queue"),
    "error-queue": lambda value, flavour: _url(value, QUEUE_BACKENDS, "queue"),
    "done-queue": lambda value, flavour: _url(value, QUEUE_BACKENDS, "queue"),
    "bucket-name": _bucket,
    "cache-directory": _directory,
    "poll-frequency-seconds": _seconds,
    "concurrency": lambda value, flavour: int(_whole(value, flavour)),
    "task-types": _task_types,
}


__all__ = [
    "DEFAULT_TIMEOUT",
    "EC2_DEFAULT_ENDPOINT",
    "ENDPOINT_VARIABLES",
    "FLAVOURS",
    "GCE_DEFAULT_HOST",
    "OPTIONS",
    "REQUIRED",
    "Ec2Metadata",
    "GceMetadata",
    "InstanceConfig",
    "MetadataServer",
    "open_metadata",
    "read_config",
]
