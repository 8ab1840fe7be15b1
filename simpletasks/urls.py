"""Backend selection by URL scheme.

One table per interface maps a scheme to ``"module:Class"`` (or a class) plus the pip extra
that provides its dependencies. Backend modules are imported only when a URL asks for them,
so importing simpletasks never imports boto3 or the Google SDKs. Other packages add schemes
with :func:`register_queue_backend` and :func:`register_bucket_backend`.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from simpletasks.errors import ConfigError, MissingDependency, UnsupportedScheme


@dataclass(frozen=True)
class Backend:
    """Where a backend class lives and how to install what it needs."""

    target: str | type  # "package.module:ClassName", or the class itself
    extra: str | None = None  # pip extra that installs its dependencies

    def load(self) -> Any:
        """Import and return the backend class.

        Raises:
            MissingDependency: If the backend's optional dependency is not installed; the
                message says which extra to install.
        """
        if not isinstance(self.target, str):
            return self.target
        module_name, _, class_name = self.target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            hint = f"pip install 'simpletasks[{self.extra}]'" if self.extra else "pip install"
            if exc.name and module_name.startswith(exc.name):  # the module itself is missing
                hint = f"check the module path {module_name!r}"
            raise MissingDependency(
                f"backend {self.target} needs a package that is not installed "
                f"({exc.name or exc}); install it with: {hint}"
            ) from exc
        try:
            return getattr(module, class_name)
        except AttributeError:
            raise UnsupportedScheme(
                f"backend {self.target}: module {module_name!r} has no {class_name!r}"
            ) from None


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


_SCHEME_RE = re.compile(r"^[a-z][a-z0-9+.-]*$")
# scheme://user:password@ -- the password is everything up to the last '@' of the authority.
_USERINFO_RE = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^:/@\s'\"]*:)[^/\s'\"]*@")


def redact_url(url: str) -> str:
    """Return ``url`` with the password of its ``user:password@`` part replaced by ``***``.

    ``amqp://app:s3cret@host/vhost?queue=q`` becomes ``amqp://app:***@host/vhost?queue=q``;
    a URL without a password is returned unchanged.
    """
    return redact(url)


def redact(text: str) -> str:
    """Mask the password of every ``scheme://user:password@`` URL inside ``text``.

    For error messages and log lines that quote URLs (or a library's error that does).
    """
    return _USERINFO_RE.sub(r"\1***@", text) if isinstance(text, str) else text


def _register(
    table: dict[str, Backend], kind: str, scheme: str, target: str | type, extra: str | None
) -> None:
    if not isinstance(scheme, str) or not _SCHEME_RE.match(scheme.lower()):
        raise ValueError(
            f"{kind} backend scheme {scheme!r} is invalid: use a letter then letters, digits, "
            "'+', '-' or '.', without '://'"
        )
    if isinstance(target, str):
        module_name, sep, class_name = target.partition(":")
        if not (module_name and sep and class_name):
            raise ValueError(f"{kind} backend target {target!r} must be 'package.module:Class'")
    elif not isinstance(target, type) or not callable(getattr(target, "from_url", None)):
        raise TypeError(f"{kind} backend {target!r} must be a class with a from_url classmethod")
    table[scheme.lower()] = Backend(target, extra)


def register_queue_backend(scheme: str, target: str | type, extra: str | None = None) -> None:
    """Make ``open_queue("<scheme>://...")`` use ``target``; replaces an earlier registration.

    Args:
        scheme: The URL scheme, without ``://`` (case-insensitive).
        target: ``"package.module:Class"`` (imported on first use) or the class. The class
            must have ``from_url(url, *, create=False, **kwargs)`` and implement
            :class:`simpletasks.queues.QueueService`.
        extra: The pip extra to suggest when importing ``target`` fails.

    Raises:
        ValueError: If ``scheme`` or a string ``target`` is malformed.
        TypeError: If ``target`` is neither a string nor a class with ``from_url``.
    """
    _register(QUEUE_BACKENDS, "queue", scheme, target, extra)


def register_bucket_backend(scheme: str, target: str | type, extra: str | None = None) -> None:
    """Make ``open_bucket("<scheme>://...")`` use ``target``; as :func:`register_queue_backend`.

    The class must implement :class:`simpletasks.buckets.BucketService`.
    """
    _register(BUCKET_BACKENDS, "bucket", scheme, target, extra)


def parse_file_url(url: str, kind: str) -> Path:
    """Return the absolute directory a ``file:///absolute/path`` URL names.

    The one parser for file queues and file buckets, so a URL means the same directory to
    both: the path is percent-decoded (``file:///dir%20x`` is ``/dir x``), as
    :meth:`pathlib.Path.as_uri` encodes it.

    Args:
        url: The URL.
        kind: ``"queue"`` or ``"bucket"``, for the error messages.

    Raises:
        ConfigError: If the scheme is not ``file``, the URL names a host (``file://fq/tasks``
            is host ``fq``: a relative path is refused, never "corrected"), or it has a
            query or fragment.
    """
    form = "file:///absolute/path"
    if not isinstance(url, str) or not url.lower().startswith("file://"):
        raise ConfigError(f"not a file {kind} URL: {url!r} (expected {form})")
    parts = urlsplit(url)
    if parts.netloc:
        raise ConfigError(
            f"file {kind} URL {url!r} is not absolute: {parts.netloc!r} would be a host name. "
            f"Use {form} with three slashes, e.g. file:///srv/{parts.netloc}{parts.path} "
            "(relative paths are not supported)"
        )
    if parts.query or parts.fragment or "?" in url or "#" in url:
        raise ConfigError(
            f"file {kind} URL {url!r} must not have a query or fragment ('?', '#'): "
            "percent-encode them in the path (%3F, %23)"
        )
    path = unquote(parts.path)
    if not path.startswith("/"):
        raise ConfigError(f"file {kind} URL {url!r} has no absolute path (expected {form})")
    if "\x00" in path:
        raise ConfigError(f"file {kind} URL {url!r} contains a NUL character")
    return Path(path)


def create_hint(url: str, kind: str) -> str:
    """What to do about a queue or bucket that does not exist: the command, or ``create=True``.

    Args:
        url: The queue or bucket URL (password masked).
        kind: ``"queue"`` or ``"bucket"``.
    """
    option = "--bucket " if kind == "bucket" else ""
    return f"create it with `simpletasks create {option}{url}` or pass create=True"


def ensure_file_directory(path: Path, url: str, kind: str, *, create: bool) -> None:
    """Check that a file queue/bucket directory exists, or make it with ``create``.

    Raises:
        ConfigError: If it does not exist and ``create`` is false (the message says how to
            create it), is not a directory, or cannot be created.
    """
    if path.is_dir():
        return
    if path.exists():
        raise ConfigError(f"cannot use {str(path)!r} as a file {kind}: it is not a directory")
    if not create:
        raise ConfigError(
            f"file {kind} directory {str(path)!r} does not exist ({url}); {create_hint(url, kind)}"
        )
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create file {kind} directory {str(path)!r}: {exc}") from exc
