"""The web service's configuration: one frozen value built by the CLI (or a test)."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simpletasks.errors import ConfigError

_PIPELINE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


@dataclass(frozen=True)
class PipelineConfig:
    """One upload page, ``/pipelines/<name>``.

    Attributes:
        name: URL name (lower-case letters, digits, ``-``, ``_``).
        task_type: ``basic_info.name`` of the tasks enqueued, one per uploaded file.
        payload: ``payload_info`` of those tasks.
        title: Heading of the page.
        description: Text under the heading.
        extensions: Allowed file name extensions, lower case with the dot (empty: any).
        max_files: Most files per upload.
        max_file_bytes: Largest file.
        link_seconds: How long the e-mailed result links work.
    """

    name: str
    task_type: str
    payload: Any = None
    title: str = ""
    description: str = ""
    extensions: tuple[str, ...] = ()
    max_files: int = 10
    max_file_bytes: int = 20 * 1024 * 1024
    link_seconds: int = 7 * 24 * 3600

    def __post_init__(self) -> None:
        if not _PIPELINE_NAME.match(self.name):
            raise ConfigError(
                f"pipeline name {self.name!r}: use 1-64 lower-case letters, digits, - and _"
            )
        if not self.task_type:
            raise ConfigError(f"pipeline {self.name!r} needs a task_type")
        if self.max_files < 1 or self.max_file_bytes < 1 or self.link_seconds < 1:
            raise ConfigError(
                f"pipeline {self.name!r}: max_files, max_file_bytes, link_seconds must be >= 1"
            )
        exts = tuple(e.lower() if e.startswith(".") else f".{e.lower()}" for e in self.extensions)
        object.__setattr__(self, "extensions", exts)

    @classmethod
    def from_dict(cls, name: str, data: Mapping[str, Any]) -> PipelineConfig:
        """Build from a TOML table; unknown keys are an error naming them."""
        known = {f for f in cls.__dataclass_fields__ if f != "name"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"pipeline {name!r} has unknown key(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(known))}"
            )
        if "task_type" not in data:
            raise ConfigError(f"pipeline {name!r} needs a task_type")
        values = dict(data)
        try:
            if "extensions" in values:
                if not isinstance(values["extensions"], list):
                    raise TypeError("extensions must be a list of strings")
                values["extensions"] = tuple(values["extensions"])
            return cls(name=name, **values)
        except TypeError as exc:  # a wrong type, e.g. max_files = "ten"
            raise ConfigError(f"pipeline {name!r}: {exc}") from None


def load_pipelines(path: str | Path) -> dict[str, PipelineConfig]:
    """Read ``[pipelines.<name>]`` tables from a TOML file.

    Raises:
        ConfigError: If the file cannot be read or parsed, or a pipeline is invalid.
    """
    try:
        data = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read pipelines from {path}: {exc}") from None
    tables = data.get("pipelines", {})
    if not isinstance(tables, dict):
        raise ConfigError(f"{path}: [pipelines] must be a table of tables")
    return {name: PipelineConfig.from_dict(name, table) for name, table in tables.items()}


@dataclass(frozen=True)
class SmtpConfig:
    """Where result e-mails go out. ``host`` empty: no e-mail (links show on the job page)."""

    host: str = ""
    port: int = 25
    sender: str = "simpletasks@localhost"
    username: str = ""
    password: str = field(default="", repr=False)
    starttls: bool = False
    timeout: float = 10.0


@dataclass(frozen=True)
class WebConfig:
    """Everything the app needs.

    Attributes:
        database_url: SQLAlchemy URL (``sqlite:///path`` or ``postgresql+psycopg://...``).
        queue_url: Where tasks are sent.
        bucket_url: The workers' bucket: uploads, results, cancellation markers.
        secret_key: Signs links, CSRF tokens and the session cookie. Keep it secret and
            stable: changing it invalidates every link sent.
        done_queue_url: Done reports to consume (optional).
        error_queue_url: Error reports to consume (optional).
        public_url: Base URL of links in e-mails (``http://host:port``).
        pipelines: Upload pages by name.
        smtp: E-mail settings.
        scan_command: Virus scanner argv prefix, e.g. ``("clamdscan", "--fdpass")``; the
            files are appended. Empty: no scan.
        max_tasks_per_request: Longest task list one ``POST /jobs/{id}/tasks/`` accepts.
        max_request_bytes: Largest request body (uploads included).
        uploads_per_minute: Uploads per client address per minute.
        downloads_per_minute: Result-link downloads per client address per minute.
        proxy_hops: Reverse proxies in front of the service whose ``X-Forwarded-For`` and
            ``X-Forwarded-Proto`` are trusted (0: none; the rate limit then sees the
            proxy's address).
        job_link_seconds: Lifetime of the signed job-page links.
        worker_seconds: A worker not heard from for this long is listed as not alive.
    """

    database_url: str
    queue_url: str
    bucket_url: str
    secret_key: str = field(repr=False)
    done_queue_url: str | None = None
    error_queue_url: str | None = None
    public_url: str = "http://127.0.0.1:8080"
    pipelines: Mapping[str, PipelineConfig] = field(default_factory=dict)
    smtp: SmtpConfig = field(default_factory=SmtpConfig)
    scan_command: tuple[str, ...] = ()
    max_tasks_per_request: int = 1000
    max_request_bytes: int = 200 * 1024 * 1024
    uploads_per_minute: int = 10
    downloads_per_minute: int = 120
    proxy_hops: int = 0
    job_link_seconds: int = 30 * 24 * 3600
    worker_seconds: float = 600.0

    def __post_init__(self) -> None:
        if len(self.secret_key) < 16:
            raise ConfigError("secret_key must be at least 16 characters (use a random one)")
        for name, value in (("queue_url", self.queue_url), ("bucket_url", self.bucket_url)):
            if not value:
                raise ConfigError(f"{name} is required")
