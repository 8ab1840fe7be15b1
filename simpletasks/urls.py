"""Backend selection by URL scheme.

One table per interface maps a scheme to ``"module:Class"`` plus the pip extra that provides
its dependencies. Backend modules are imported only when a URL asks for them, so importing
simpletasks never imports boto3 or the Google SDKs.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from simpletasks.errors import MissingDependency, UnsupportedScheme


@dataclass(frozen=True)
class Backend:
    """Where a backend class lives and how to install what it needs."""

    target: str  # "package.module:ClassName"
    extra: str | None = None  # pip extra that installs its dependencies

    def load(self) -> Any:
        """Import and return the backend class.

        Raises:
            MissingDependency: If the backend's optional dependency is not installed; the
                message says which extra to install.
        """
        module_name, _, class_name = self.target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            hint = f"pip install 'simpletasks[{self.extra}]'" if self.extra else "pip install"
            raise MissingDependency(
                f"backend {self.target} needs a package that is not installed "
                f"({exc.name or exc}); install it with: {hint}"
            ) from exc
        return getattr(module, class_name)


QUEUE_BACKENDS: dict[str, Backend] = {
    "sqs": Backend("simpletasks.queues.sqs:SQSQueue", "aws"),
    "file": Backend("simpletasks.queues.file:FileQueue"),
    "mem": Backend("simpletasks.queues.memory:MemoryQueue"),
    "pubsub": Backend("simpletasks.queues.pubsub:PubSubQueue", "gcp"),
    "amqp": Backend("simpletasks.queues.amqp:AMQPQueue", "amqp"),
}

BUCKET_BACKENDS: dict[str, Backend] = {
    "s3": Backend("simpletasks.buckets.s3:S3Bucket", "aws"),
    "gs": Backend("simpletasks.buckets.gcs:GCSBucket", "gcp"),
    "file": Backend("simpletasks.buckets.file:FileBucket"),
    "mem": Backend("simpletasks.buckets.memory:MemoryBucket"),
}


def scheme_of(url: str) -> str:
    """Return the lower-cased scheme of ``url``.

    Raises:
        UnsupportedScheme: If ``url`` has no ``scheme://`` part.
    """
    if not isinstance(url, str) or "://" not in url:
        raise UnsupportedScheme(f"{url!r} is not a URL of the form scheme://...")
    return urlsplit(url).scheme.lower()


def open_backend(url: str, table: dict[str, Backend], kind: str, **kwargs: Any) -> Any:
    """Instantiate the backend that ``table`` maps ``url``'s scheme to.

    The backend class is called as ``cls.from_url(url, **kwargs)``.

    Raises:
        UnsupportedScheme: If no backend handles the scheme; the message lists the known ones.
        MissingDependency: If the backend's optional dependency is not installed.
    """
    scheme = scheme_of(url)
    backend = table.get(scheme)
    if backend is None:
        known = ", ".join(f"{s}://" for s in sorted(table))
        raise UnsupportedScheme(f"no {kind} backend for {scheme}:// in {url!r}; known: {known}")
    return backend.load().from_url(url, **kwargs)
