"""Configuration from cloud instance metadata: GCE instance attributes or EC2 instance tags.

``simpletasks run --from-metadata gce|ec2`` reads its queues, bucket and settings here (GCE:
instance attribute, else project attribute; EC2: instance tags over IMDSv2). Requests time
out after 2 s and are not retried: a worker that cannot read its configuration exits with an
error naming the problem, and systemd starts it again. No environment variable is read here.
"""

from __future__ import annotations

import http.client
import logging
import math
import re
import urllib.error
import urllib.request
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from email.message import Message
from typing import Any, ClassVar

from simpletasks.errors import ConfigError, UnsupportedScheme
from simpletasks.urls import BUCKET_BACKENDS, QUEUE_BACKENDS, Backend, scheme_of

logger = logging.getLogger(__name__)

FLAVOURS = ("gce", "ec2")
DEFAULT_TIMEOUT = 2.0
GCE_DEFAULT_HOST = "metadata.google.internal"
EC2_DEFAULT_ENDPOINT = "http://169.254.169.254"

#: The environment variable that points the CLI at another metadata server, per flavour.
ENDPOINT_VARIABLES = {"gce": "GCE_METADATA_HOST", "ec2": "AWS_EC2_METADATA_SERVICE_ENDPOINT"}

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


class MetadataServer:
    """A cloud's instance metadata service; :func:`open_metadata` returns one.

    Args:
        endpoint: ``host[:port]`` or ``http://host[:port]``; default: the cloud's own server.
        timeout: Seconds to wait for each answer.
    """

    flavour: ClassVar[str]
    label: ClassVar[str]  # what a name is: "GCE instance attribute", "EC2 instance tag"
    default_endpoint: ClassVar[str]

    def __init__(self, endpoint: str | None = None, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        endpoint = (endpoint or self.default_endpoint).rstrip("/")
        self.base_url = endpoint if "://" in endpoint else f"http://{endpoint}"
        self.timeout = timeout
        # No proxy: an http_proxy setting must never see (or break) metadata requests.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def get(self, name: str) -> str | None:
        """Return the value of attribute/tag ``name``, or ``None`` if it is not set."""
        raise NotImplementedError

    def region(self) -> str | None:
        """The cloud region the instance runs in, if the service tells (EC2 only)."""
        return None

    def describe_missing(self, name: str) -> str:
        """A sentence saying that ``name`` is not set."""
        return f"{self.label} {name!r} is not set"

    def _request(
        self, method: str, path: str, headers: Mapping[str, str]
    ) -> tuple[int, Message, str]:
        """Send one request; return status, headers and body (any HTTP status)."""
        request = urllib.request.Request(f"{self.base_url}{path}", method=method, headers=headers)
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                return response.status, response.headers, response.read().decode("utf-8")
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, exc.headers, ""
        except (OSError, http.client.HTTPException) as exc:
            cloud, reason = self.flavour.upper(), getattr(exc, "reason", None) or exc
            raise ConfigError(
                f"cannot reach the {cloud} metadata server at {self.base_url} ({reason}); "
                f"not on {cloud}? ({ENDPOINT_VARIABLES[self.flavour]} names another server)"
            ) from None
        except UnicodeDecodeError:
            raise ConfigError(f"{self.base_url}{path} answered text that is not UTF-8") from None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base_url!r})"


class GceMetadata(MetadataServer):
    """The GCE metadata server (``GCE_METADATA_HOST`` form: ``host[:port]``)."""

    flavour = "gce"
    label = "GCE instance attribute"
    default_endpoint = GCE_DEFAULT_HOST

    def get(self, name: str) -> str | None:
        """Return the instance attribute ``name``, else the project attribute, else ``None``."""
        for scope in ("instance", "project"):
            path = f"/computeMetadata/v1/{scope}/attributes/{name}"
            status, headers, body = self._request("GET", path, {"Metadata-Flavor": "Google"})
            if status == 404:
                continue
            if status != 200:
                raise ConfigError(f"GCE metadata server answered HTTP {status} for {path}")
            if headers.get("Metadata-Flavor") != "Google":
                raise ConfigError(
                    f"{self.base_url} answered without 'Metadata-Flavor: Google': "
                    "not a GCE metadata server"
                )
            return body
        return None

    def describe_missing(self, name: str) -> str:
        """A sentence saying that ``name`` is set neither on the instance nor the project."""
        return f"{self.label} {name!r} is not set (on the instance or the project)"


class Ec2Metadata(MetadataServer):
    """The EC2 instance metadata service, IMDSv2 (``AWS_EC2_METADATA_SERVICE_ENDPOINT`` form)."""

    flavour = "ec2"
    label = "EC2 instance tag"
    default_endpoint = EC2_DEFAULT_ENDPOINT
    TOKEN_TTL_SECONDS = 300
    _token: str | None = None

    def get(self, name: str) -> str | None:
        """Return the instance tag ``name``, or ``None`` if it is not set (or tags are off)."""
        return self._get(f"/latest/meta-data/tags/instance/{name}")

    def region(self) -> str | None:
        """The region of the instance (``placement/region``)."""
        return self._get("/latest/meta-data/placement/region")

    def describe_missing(self, name: str) -> str:
        """A sentence saying that ``name`` is not set, and why if tags are not exposed."""
        if self._get("/latest/meta-data/tags/instance") is not None:
            return super().describe_missing(name)
        return (
            f"{self.label} {name!r} is not readable: this instance does not expose its tags in "
            "the instance metadata (enable 'instance metadata tags' in the launch template, or "
            "aws ec2 modify-instance-metadata-options --instance-metadata-tags enabled)"
        )

    def _get(self, path: str) -> str | None:
        for _ in range(2):  # a second time with a new token if the first one expired
            token = self._token or self._new_token()
            status, _, body = self._request("GET", path, {"X-aws-ec2-metadata-token": token})
            if status in (200, 404):
                return body if status == 200 else None
            if status != 401:
                break
            self._token = None
        raise ConfigError(f"EC2 metadata service answered HTTP {status} for {path}")

    def _new_token(self) -> str:
        headers = {"X-aws-ec2-metadata-token-ttl-seconds": str(self.TOKEN_TTL_SECONDS)}
        status, _, body = self._request("PUT", "/latest/api/token", headers)
        if status != 200 or not body:
            raise ConfigError(f"{self.base_url} refused an IMDSv2 token (HTTP {status})")
        self._token = body
        return body


def open_metadata(
    flavour: str, *, endpoint: str | None = None, timeout: float = DEFAULT_TIMEOUT
) -> MetadataServer:
    """Return the metadata server of ``flavour``, ``"gce"`` or ``"ec2"``.

    Args:
        flavour: ``"gce"`` or ``"ec2"``.
        endpoint: Another server than the cloud's own: ``host[:port]`` or an ``http://`` URL.
        timeout: Seconds to wait for each answer.

    Raises:
        ConfigError: If ``flavour`` is unknown.
    """
    servers: dict[str, type[MetadataServer]] = {"gce": GceMetadata, "ec2": Ec2Metadata}
    if flavour not in servers:
        raise ConfigError(f"unknown metadata flavour {flavour!r}; expected one of {FLAVOURS}")
    return servers[flavour](endpoint, timeout=timeout)


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
