"""Clients of the cloud instance metadata services: GCE's metadata server and EC2's IMDSv2.

Each answers "what is attribute/tag X of this instance?" and "which region?". Requests time
out after 2 s and are not retried. Turning those values into ``simpletasks run`` options is
:mod:`simpletasks.metadata`'s job. No environment variable is read here.
"""

from __future__ import annotations

import http.client
import logging
import urllib.error
import urllib.request
from collections.abc import Mapping
from email.message import Message
from typing import ClassVar

from simpletasks.errors import ConfigError

logger = logging.getLogger(__name__)

FLAVOURS = ("gce", "ec2")
DEFAULT_TIMEOUT = 2.0
GCE_DEFAULT_HOST = "metadata.google.internal"
EC2_DEFAULT_ENDPOINT = "http://169.254.169.254"

#: The environment variable that points the CLI at another metadata server, per flavour.
ENDPOINT_VARIABLES = {"gce": "GCE_METADATA_HOST", "ec2": "AWS_EC2_METADATA_SERVICE_ENDPOINT"}


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
