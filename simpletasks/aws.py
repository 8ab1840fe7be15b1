"""boto3 clients for the AWS backends (imported only by them: boto3 is an optional extra).

Also the one place that turns botocore's failures at open time (no credentials, endpoint
down, credentials refused) into one-line errors that say what to do.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
)

from simpletasks.endpoints import unreachable
from simpletasks.errors import ConfigError, CredentialsError, ServiceUnavailable

#: Error codes with which AWS refuses credentials (as opposed to a missing resource).
AUTH_CODES = frozenset(
    {
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
        "UnrecognizedClientException",
        "InvalidAccessKeyId",
        "ExpiredToken",
        "ExpiredTokenException",
        "InvalidToken",
        "AuthFailure",
    }
)

#: Standard retry mode (throttling and 5xx retried with back-off) and a connection pool large
#: enough for the daemon's worker threads and parallel transfers.
CLIENT_CONFIG = Config(retries={"mode": "standard", "max_attempts": 5}, max_pool_connections=50)


def make_client(
    service: str,
    *,
    endpoint_url: str | None = None,
    region_name: str | None = None,
    **credentials: Any,
) -> Any:
    """Return a boto3 client for ``service`` with our retry and pool settings.

    Args:
        service: ``"sqs"`` or ``"s3"``.
        endpoint_url: Overrides the endpoint boto3 would pick (it honours
            ``AWS_ENDPOINT_URL`` itself).
        region_name: Overrides the region boto3 would pick.
        **credentials: ``aws_access_key_id`` etc., for local servers; leave empty to use
            the usual chain (environment, profile, instance role).

    Raises:
        ConfigError: If no region is configured.
    """
    try:
        return boto3.session.Session(**credentials).client(
            service, endpoint_url=endpoint_url, region_name=region_name, config=CLIENT_CONFIG
        )
    except NoRegionError as exc:
        raise ConfigError(
            f"no AWS region configured for {service.upper()}: "
            "set AWS_DEFAULT_REGION or pass region_name="
        ) from exc


def probe(endpoint_url: str, service: str, url: str) -> None:
    """Fail fast if nothing listens at the endpoint (boto3 would retry for about 25 s).

    Raises:
        ServiceUnavailable: If a TCP connection to the endpoint's host and port fails.
    """
    parts = urlsplit(endpoint_url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    reason = unreachable(parts.hostname or "", port)
    if reason is not None:
        raise unavailable(service, endpoint_url, url, reason)


def unavailable(service: str, endpoint_url: str, url: str, reason: str) -> ServiceUnavailable:
    """The error for an AWS endpoint that does not answer."""
    return ServiceUnavailable(
        f"cannot reach {service} at {endpoint_url} for {url}: {reason}. Check the endpoint "
        "(AWS_ENDPOINT_URL or endpoint_url=), the network, and that the service runs (a local "
        "moto server: `simpletasks local --stack`)"
    )


@contextlib.contextmanager
def open_errors(client: Any, service: str, url: str) -> Iterator[None]:
    """Check the endpoint answers, then turn botocore's open-time failures into ours.

    Wrap the first requests a backend makes when it is opened.

    Raises:
        CredentialsError: No credentials were found, or AWS refused them.
        ServiceUnavailable: The endpoint does not answer.
    """
    endpoint = str(client.meta.endpoint_url)
    probe(endpoint, service, url)
    try:
        yield
    except (NoCredentialsError, PartialCredentialsError) as exc:
        raise CredentialsError(
            f"no AWS credentials for {service} ({url}): {exc}. Set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, or run where an IAM role provides them "
            "(for a local stack, source the env file `simpletasks local --stack` writes)"
        ) from None
    except (EndpointConnectionError, ConnectTimeoutError) as exc:
        raise unavailable(service, endpoint, url, str(exc)) from None
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        if code not in AUTH_CODES:
            raise
        raise CredentialsError(
            f"AWS refused the credentials for {service} ({url}): {code} "
            f"{error.get('Message', '')}. Check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (or the "
            "profile) and the region"
        ) from None
