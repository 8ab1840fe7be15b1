"""The service's database: jobs, their tasks, the reports consumed, workers and API keys.

SQLAlchemy 2 ORM over SQLite (default) or PostgreSQL (``postgresql+psycopg://...``).
Every report consumed is stored once, keyed by (message id, attempt, kind): a report
delivered again after a crash of the consumer is recognised and ignored, so the consumer may
ack after it commits and be restarted at any time.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Engine,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker
from sqlalchemy.pool import StaticPool

#: Task states, in the order a later report may move a task (never backwards).
STATES = ("queued", "running", "cancelled", "failed", "succeeded")
FINAL_STATES = ("cancelled", "failed", "succeeded")


class Base(DeclarativeBase):
    """Declarative base of the service's tables (all prefixed ``st_``)."""


class ApiKey(Base):
    """An API key, stored as the SHA-256 of the key (keys are random 256-bit tokens)."""

    __tablename__ = "st_api_keys"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    created: Mapped[float] = mapped_column(Float, default=time.time)


class Job(Base):
    """A job: a task type, a default payload and the tasks submitted to it."""

    __tablename__ = "st_jobs"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    task_type: Mapped[str] = mapped_column(String(200))
    payload: Mapped[Any] = mapped_column(JSON, nullable=True)
    base_directory: Mapped[str] = mapped_column(String(500))
    created: Mapped[float] = mapped_column(Float, default=time.time)
    cancelled: Mapped[float | None] = mapped_column(Float, nullable=True)
    pipeline: Mapped[str | None] = mapped_column(String(200), nullable=True)
    email: Mapped[str | None] = mapped_column(String(320), nullable=True)
    notified: Mapped[float | None] = mapped_column(Float, nullable=True)
    next_task: Mapped[int] = mapped_column(Integer, default=1)


class Task(Base):
    """One task of a job and the state the reports consumed so far put it in."""

    __tablename__ = "st_tasks"
    __table_args__ = (UniqueConstraint("job_id", "task_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("st_jobs.id", ondelete="CASCADE"), index=True)
    task_id: Mapped[int] = mapped_column(Integer)
    inputs: Mapped[Any] = mapped_column(JSON)
    payload: Mapped[Any] = mapped_column(JSON, nullable=True)
    state: Mapped[str] = mapped_column(String(20), default="queued", index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    updated: Mapped[float] = mapped_column(Float, default=time.time)


class Report(Base):
    """A report consumed from the done or error queue (a *result* when it is final).

    ``kind`` is ``done``, ``error`` or ``started`` (never final; phase ``started``).
    """

    __tablename__ = "st_reports"
    __table_args__ = (UniqueConstraint("message_id", "attempt", "kind"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    message_id: Mapped[str] = mapped_column(String(500))
    attempt: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(10))
    job_id: Mapped[str | None] = mapped_column(String(128), nullable=True, index=True)
    task_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    final: Mapped[bool] = mapped_column(Boolean)
    phase: Mapped[str] = mapped_column(String(20), default="")
    outputs: Mapped[Any] = mapped_column(JSON, default=list)
    message: Mapped[str] = mapped_column(Text, default="")
    error_type: Mapped[str] = mapped_column(String(200), default="")
    hostname: Mapped[str] = mapped_column(String(255), default="")
    pid: Mapped[int] = mapped_column(Integer, default=0)
    daemon: Mapped[str] = mapped_column(String(200), default="")
    seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    time: Mapped[float] = mapped_column(Float)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)


class Worker(Base):
    """A daemon seen through its reports."""

    __tablename__ = "st_workers"
    __table_args__ = (UniqueConstraint("hostname", "pid", "daemon"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    hostname: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    daemon: Mapped[str] = mapped_column(String(200))
    tasks_done: Mapped[int] = mapped_column(Integer, default=0)
    tasks_failed: Mapped[int] = mapped_column(Integer, default=0)
    first_seen: Mapped[float] = mapped_column(Float)
    last_seen: Mapped[float] = mapped_column(Float)


def make_engine(url: str) -> Engine:
    """Create the engine for ``url`` and the tables if missing.

    SQLite gets WAL mode and a 30 s busy timeout, so the web threads and the report
    consumer can write the same file.
    """
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
        if url in ("sqlite://", "sqlite:///:memory:"):  # one connection, or each has its own DB
            kwargs["poolclass"] = StaticPool
    engine = create_engine(url, **kwargs)
    if url.startswith("sqlite"):

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, record: Any) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

    Base.metadata.create_all(engine)
    return engine


def make_sessions(engine: Engine) -> sessionmaker[Any]:
    """Return the session factory the app and the consumer share."""
    return sessionmaker(engine, expire_on_commit=False)
