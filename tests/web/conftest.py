"""Fixtures of the web service tests: an app over fresh mem:// queues and bucket, a SQLite
file database, an API key, and a real daemon that runs the tasks the app enqueues."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from simpletasks.buckets import open_bucket
from simpletasks.cache import FileSystemCache
from simpletasks.daemon import DaemonService
from simpletasks.datasource import BucketCacheDatasource
from simpletasks.jobs import JobCancellations
from simpletasks.queues import open_queue
from simpletasks.registry import TaskRegistry
from simpletasks.settings import DaemonSettings
from simpletasks.started import StartedReports
from simpletasks.tasks.noop.task import NoOpTask

try:  # the web extra; CI must have it (an ImportError there fails the collection)
    from simpletasks.web import PipelineConfig, WebConfig, create_app
    from simpletasks.web.auth import create_api_key
except ImportError:
    if os.environ.get("CI") == "true":
        raise
    collect_ignore_glob = ["test_web_*.py"]

SECRET = "test-secret-key-0123456789abcdef"


@dataclass
class WebEnv:
    """URLs of one test's queues, bucket and database, and helpers over them."""

    tmp: Path
    name: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    db_url: str = ""

    def __post_init__(self) -> None:
        if not self.db_url:
            self.db_url = f"sqlite:///{self.tmp / 'web.db'}"

    @property
    def queue_url(self) -> str:
        return f"mem://web-{self.name}-tasks"

    @property
    def done_url(self) -> str:
        return f"mem://web-{self.name}-done"

    @property
    def error_url(self) -> str:
        return f"mem://web-{self.name}-errors"

    @property
    def bucket_url(self) -> str:
        return f"mem://web-{self.name}-bucket"

    def config(self, **overrides: Any) -> WebConfig:
        base = WebConfig(
            database_url=self.db_url,
            queue_url=self.queue_url,
            bucket_url=self.bucket_url,
            secret_key=SECRET,
            done_queue_url=self.done_url,
            error_queue_url=self.error_url,
            public_url="http://127.0.0.1:8080",
            pipelines={
                "demo": PipelineConfig(
                    name="demo",
                    task_type="NO_OP",
                    payload="uploaded",
                    title="Demo pipeline",
                    extensions=(".txt", ".dat"),
                    max_files=3,
                    max_file_bytes=1000,
                    link_seconds=3600,
                )
            },
        )
        return replace(base, **overrides)

    def app(self, **overrides: Any) -> Any:
        app = create_app(self.config(**overrides))
        app.config["TESTING"] = True
        return app

    def daemon(
        self,
        registry: TaskRegistry | None = None,
        *,
        skip: bool = True,
        report_starts: bool = False,
        **settings: Any,
    ) -> DaemonService:
        """A real daemon on the task queue, reporting to the done and error queues (and
        its starts to the done queue, with ``report_starts``)."""
        if registry is None:
            registry = TaskRegistry()
            registry.register(NoOpTask)
        bucket = open_bucket(self.bucket_url)
        defaults: dict[str, Any] = dict(
            burst=True,
            wait_seconds=0.0,
            poll_frequency_seconds=0.05,
            retry_delay_seconds=0.0,
            max_attempts=2,
            grace_seconds=5.0,
        )
        defaults.update(settings)
        done = open_queue(self.done_url)
        return DaemonService(
            queue=open_queue(self.queue_url),
            registry=registry,
            datasource=BucketCacheDatasource(bucket, FileSystemCache(self.tmp / "cache")),
            error_queue=open_queue(self.error_url),
            done_queue=done,
            settings=DaemonSettings(**defaults),
            skip=JobCancellations(bucket, ttl_seconds=0.0) if skip else None,
            middleware=[StartedReports(done)] if report_starts else [],
        )


@pytest.fixture
def env(tmp_path: Path) -> Iterator[WebEnv]:
    yield WebEnv(tmp_path)


@pytest.fixture
def app(env: WebEnv) -> Any:
    return env.app()


@pytest.fixture
def key(app: Any) -> str:
    with app.extensions["simpletasks"].sessions() as session:
        return create_api_key(session, "tests")


@pytest.fixture
def client(app: Any) -> Any:
    return app.test_client()


@pytest.fixture
def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def consume() -> Any:
    """``consume(app)``: apply every report waiting on the done and error queues."""

    def run(app: Any) -> int:
        return int(app.extensions["simpletasks"].consumer.drain())

    return run


@dataclass
class Inbox:
    """Messages an SMTP server on 127.0.0.1 received."""

    host: str
    port: int
    messages: list[Any] = field(default_factory=list)


@pytest.fixture
def smtp_server() -> Iterator[Inbox]:
    """A real SMTP server (aiosmtpd) on 127.0.0.1 that keeps what it receives."""
    import email
    import socket

    from tests_support import require_service

    try:
        from aiosmtpd.controller import Controller
    except ImportError:
        require_service("aiosmtpd is not installed")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    inbox = Inbox("127.0.0.1", port)

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            inbox.messages.append(email.message_from_bytes(envelope.original_content))
            return "250 OK"

    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    yield inbox
    controller.stop()
