"""Backends registered by scheme from outside the package (``register_*_backend``)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pytest

from simpletasks.buckets import open_bucket, register_bucket_backend
from simpletasks.errors import MissingDependency, UnsupportedScheme
from simpletasks.queues import QueueService, open_queue, register_queue_backend
from simpletasks.queues.memory import MemoryQueue
from simpletasks.urls import BUCKET_BACKENDS, QUEUE_BACKENDS


class EchoQueue(MemoryQueue):
    """A third-party queue: ``echo://name`` is a memory queue under another scheme."""

    opened: list[tuple[str, bool]] = []

    @classmethod
    def from_url(cls, url: str, *, create: bool = False, **kwargs: Any) -> EchoQueue:
        cls.opened.append((url, create))
        queue = cls(url.partition("://")[2], **kwargs)
        queue.url = url
        return queue


class DictBucket:
    """A third-party bucket over a dict (only what this test uses)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.objects: dict[str, bytes] = {}

    @classmethod
    def from_url(cls, url: str, *, create: bool = False) -> DictBucket:
        return cls(url)

    def upload_fileobj(self, fileobj: Any, key: str) -> None:
        self.objects[key] = fileobj.read()

    def exists(self, key: str) -> bool:
        return key in self.objects

    def list(self, prefix: str = "") -> Iterator[str]:
        return iter(sorted(k for k in self.objects if k.startswith(prefix)))


@pytest.fixture(autouse=True)
def _restore_tables() -> Iterator[None]:
    queues, buckets = dict(QUEUE_BACKENDS), dict(BUCKET_BACKENDS)
    yield
    QUEUE_BACKENDS.clear()
    QUEUE_BACKENDS.update(queues)
    BUCKET_BACKENDS.clear()
    BUCKET_BACKENDS.update(buckets)


def test_a_queue_class_registered_by_scheme_opens_and_works() -> None:
    register_queue_backend("echo", EchoQueue)
    queue = open_queue("ECHO://jobs", create=True)
    assert isinstance(queue, EchoQueue) and isinstance(queue, QueueService)
    assert EchoQueue.opened[-1] == ("ECHO://jobs", True)
    queue.send("hi")
    [message] = queue.receive()
    assert message.body == "hi"
    queue.ack(message)


def test_a_queue_backend_registered_by_module_path_is_imported_on_use() -> None:
    register_queue_backend("echo2", f"{__name__}:EchoQueue")
    assert isinstance(open_queue("echo2://x"), EchoQueue)
    register_queue_backend("broken", f"{__name__}:NoSuchClass")
    with pytest.raises(UnsupportedScheme, match="has no 'NoSuchClass'"):
        open_queue("broken://x")
    register_queue_backend("missing", "no_such_package.queues:Queue", extra="nope")
    with pytest.raises(MissingDependency, match=r"check the module path 'no_such_package\.queues'"):
        open_queue("missing://x")


def test_registering_replaces_and_is_listed_in_unknown_scheme_errors() -> None:
    register_queue_backend("echo", EchoQueue)
    with pytest.raises(UnsupportedScheme, match=r"known: .*echo://"):
        open_queue("nope://x")
    register_queue_backend("mem", EchoQueue)  # a package may replace a built-in
    assert isinstance(open_queue("mem://y"), EchoQueue)


@pytest.mark.parametrize(
    ("scheme", "target", "error", "match"),
    [
        ("", EchoQueue, ValueError, "scheme '' is invalid"),
        ("echo://", EchoQueue, ValueError, "without '://'"),
        ("9lives", EchoQueue, ValueError, "is invalid"),
        ("echo", "no_colon", ValueError, "must be 'package.module:Class'"),
        ("echo", object, TypeError, "a class with a from_url classmethod"),
        ("echo", 42, TypeError, "a class with a from_url classmethod"),
    ],
)
def test_bad_registrations_are_refused(scheme: str, target: Any, error: type, match: str) -> None:
    before = dict(QUEUE_BACKENDS)
    with pytest.raises(error, match=match):
        register_queue_backend(scheme, target)
    assert before == QUEUE_BACKENDS  # nothing half-registered; other schemes still work
    assert open_queue("mem://still-there").url == "mem://still-there"


def test_a_bucket_class_registered_by_scheme_opens_and_works() -> None:
    register_bucket_backend("dict", DictBucket)
    bucket = open_bucket("dict://b", create=True)
    assert isinstance(bucket, DictBucket)
    bucket.upload_fileobj(io.BytesIO(b"1"), "k")
    assert list(bucket.list()) == ["k"]
    with pytest.raises(ValueError, match="is invalid"):
        register_bucket_backend("bad scheme", DictBucket)
