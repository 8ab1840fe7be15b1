"""moto in server mode: SQS and S3 on 127.0.0.1.

:class:`MotoServer` runs moto in server mode in a child process: a real HTTP endpoint that
speaks the SQS and S3 protocols, so the code under test is the same code that talks to AWS.
"""

from __future__ import annotations

import logging
import os
import sys
import urllib.request
from typing import Any

from simpletasks.emulators import LocalService

logger = logging.getLogger(__name__)

#: Credentials moto accepts; never real ones.
FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class MotoServer(LocalService):
    """moto in server mode on 127.0.0.1, in a child process.

    Use it as a context manager::

        with MotoServer() as moto:
            queue = open_queue("sqs://jobs", endpoint_url=moto.endpoint_url, create=True)

    Args:
        port: Port to listen on; a free one by default.
        start_timeout: Seconds to wait for the server to answer.
    """

    name = "moto server"

    @property
    def endpoint_url(self) -> str:
        """The server's base URL, for ``endpoint_url=`` or ``AWS_ENDPOINT_URL``."""
        return f"http://{self.host}:{self.port}"

    def env(self) -> dict[str, str]:
        """Environment variables that point boto3 at this server with fake credentials."""
        return {**FAKE_AWS_ENV, "AWS_ENDPOINT_URL": self.endpoint_url}

    def client(self, service: str) -> Any:
        """Return a boto3 client for ``service`` on this server, with fake credentials."""
        from simpletasks import aws

        return aws.make_client(
            service,
            endpoint_url=self.endpoint_url,
            region_name=FAKE_AWS_ENV["AWS_DEFAULT_REGION"],
            aws_access_key_id=FAKE_AWS_ENV["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=FAKE_AWS_ENV["AWS_SECRET_ACCESS_KEY"],
            aws_session_token=FAKE_AWS_ENV["AWS_SESSION_TOKEN"],
        )

    def command(self) -> list[str]:
        """``python -m moto.server`` on this host and port."""
        return [sys.executable, "-m", "moto.server", "-H", self.host, "-p", str(self.port)]

    def ready_url(self) -> str:
        """moto's own API answers once the server is up."""
        return f"{self.endpoint_url}/moto-api/"

    def child_env(self) -> dict[str, str]:
        """Ours plus fake credentials, so the server never sees real ones."""
        return {**os.environ, **FAKE_AWS_ENV}

    def reset(self) -> None:
        """Drop every queue and bucket the server holds."""
        req = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST")
        with urllib.request.urlopen(req, timeout=10):
            pass
