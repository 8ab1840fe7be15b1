"""Fixtures for RabbitMQ on 127.0.0.1:5672.

If the broker does not answer and ``rabbitmq-server`` is installed, the fixture starts it
with ``rabbitmq-server -detached`` (the default guest/guest login works from 127.0.0.1) and
waits for it. Without a broker, these tests skip, or fail under CI=true.
"""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest
from tests_support import require_service

RABBITMQ_HOST = "127.0.0.1"
RABBITMQ_PORT = 5672


@pytest.fixture(scope="session")
def rabbitmq_url() -> str:
    """The base URL of the local broker's default vhost (guest/guest, the pika default).

    Append ``?queue=name`` for a queue URL. The URL carries no password, so a queue's
    (password-masked) ``url`` equals the URL it was opened with.
    """
    try:
        import pika
        import pika.exceptions
    except ImportError as exc:
        require_service(f"pika not installed ({exc.name}); pip install -e '.[amqp]'")
    parameters = pika.ConnectionParameters(
        RABBITMQ_HOST, RABBITMQ_PORT, socket_timeout=3, connection_attempts=1
    )

    def answers() -> Exception | None:
        try:
            pika.BlockingConnection(parameters).close()
        except pika.exceptions.AMQPError as exc:
            return exc
        return None

    error = answers()
    server = shutil.which("rabbitmq-server")
    if error is not None and server is not None:
        subprocess.run([server, "-detached"], capture_output=True, timeout=60, check=False)
        deadline = time.monotonic() + 60
        while (error := answers()) is not None and time.monotonic() < deadline:
            time.sleep(1)
    if error is not None:
        require_service(
            f"RabbitMQ does not answer on {RABBITMQ_HOST}:{RABBITMQ_PORT} ({error!r}); "
            "start it with: rabbitmq-server -detached"
        )
    return f"amqp://{RABBITMQ_HOST}:{RABBITMQ_PORT}/%2F"
