"""boto3 clients for the AWS backends (imported only by them: boto3 is an optional extra)."""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import NoRegionError

from simpletasks.errors import ConfigError

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
