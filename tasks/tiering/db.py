"""The features database: one row per image, through SQLAlchemy 2.

A SQLite file by default (``sqlite:///haste-tiering.db``); PostgreSQL
(``postgresql+psycopg://user@host/db``) for many workers on many machines. The table is
created on first use (and the PostgreSQL schema, if one is named). Each worker holds one
:class:`~sqlalchemy.orm.Session`; :meth:`FeaturesDB.upsert` writes a row in one statement in
its own transaction (``INSERT ... ON CONFLICT DO UPDATE``), so a redelivered task leaves one
row, and a database that goes away mid-write leaves the old row or none, never half of one.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    event,
    select,
    text,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from simpletasks.errors import ConfigError

logger = logging.getLogger(__name__)

_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


@dataclass(frozen=True)
class ImageRecord:
    """What is recorded about one tiered image."""

    source: str  # the source bucket URL
    key: str  # the object's key in it
    size_bytes: int
    width: int
    height: int
    format: str
    features: Mapping[str, float]
    score: float
    tier: str
    storage_url: str | None  # where the copy is; None for trash
    host: str = ""
    task_id: int | None = None
    job_id: str | None = None
    attempt: int = 1


def make_table(metadata: MetaData, name: str = "haste_images", schema: str | None = None) -> Table:
    """Return the features table (primary key: source bucket URL and key)."""
    return Table(
        name,
        metadata,
        Column("source", String(1024), primary_key=True),
        Column("key", String(1024), primary_key=True),
        Column("size_bytes", BigInteger, nullable=False),
        Column("width", Integer, nullable=False),
        Column("height", Integer, nullable=False),
        Column("format", String(16), nullable=False),
        Column("features", JSON, nullable=False),
        Column("score", Float, nullable=False),
        Column("tier", String(128), nullable=False),
        Column("storage_url", String(2048)),
        Column("host", String(255), nullable=False),
        Column("task_id", BigInteger),
        Column("job_id", String(255)),
        Column("attempt", Integer, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("updated_at", DateTime(timezone=True), nullable=False),
        schema=schema,
    )


def get_engine(url: str) -> Engine:
    """Return the process-wide engine for ``url`` (one connection pool per database).

    SQLite files get a 30 s busy timeout and WAL journaling, so several worker threads (or
    processes) can write; every engine checks connections before use (``pool_pre_ping``), so
    a database that restarted is reconnected to.

    Raises:
        ConfigError: If ``url`` is not a SQLAlchemy URL or its driver is missing.
    """
    with _engines_lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _engines[url] = _create_engine(url)
        return engine


def _create_engine(url: str) -> Engine:
    try:
        if url.startswith("sqlite"):
            engine = create_engine(url, connect_args={"timeout": 30}, pool_pre_ping=True)

            @event.listens_for(engine, "connect")
            def _pragmas(dbapi_conn: Any, record: Any) -> None:
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.close()

            return engine
        return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)
    except (SQLAlchemyError, ImportError, ValueError) as exc:
        raise ConfigError(f"cannot use database {url!r}: {exc}") from None


class FeaturesDB:
    """The features table in one database.

    Args:
        url: SQLAlchemy URL.
        table: Table name.
        schema: PostgreSQL schema (created if missing); not for SQLite.

    Raises:
        ConfigError: If the URL is unusable or a schema is given for SQLite.
    """

    def __init__(self, url: str, *, table: str = "haste_images", schema: str | None = None):
        self.engine = get_engine(url)
        if schema and self.engine.dialect.name == "sqlite":
            raise ConfigError("db_schema is for PostgreSQL; SQLite has one schema per file")
        self.url = url
        self.schema = schema
        self.table = make_table(MetaData(), table, schema)
        self._ready = False
        self._lock = threading.Lock()

    def ensure_schema(self) -> None:
        """Create the schema and table if missing (once per process; safe if others race)."""
        with self._lock:
            if self._ready:
                return
            for attempt in (1, 2):  # two processes creating at once: one wins, retry once
                try:
                    with self.engine.begin() as conn:
                        if self.schema:
                            q = self.engine.dialect.identifier_preparer.quote_schema(self.schema)
                            conn.execute(text(f"CREATE SCHEMA IF NOT EXISTS {q}"))
                        self.table.create(conn, checkfirst=True)
                    break
                except SQLAlchemyError:
                    if attempt == 2:
                        raise
            self._ready = True

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One session (a worker's), closed at exit; the schema is made on first use."""
        self.ensure_schema()
        with Session(self.engine) as session:
            yield session

    def upsert(self, session: Session, record: ImageRecord) -> None:
        """Insert or replace the row of ``(record.source, record.key)`` in one transaction.

        ``created_at`` keeps the first write's time; everything else is replaced.
        """
        now = datetime.now(UTC)
        values = {
            "source": record.source,
            "key": record.key,
            "size_bytes": int(record.size_bytes),
            "width": int(record.width),
            "height": int(record.height),
            "format": record.format,
            "features": {k: float(v) for k, v in record.features.items()},
            "score": float(record.score),
            "tier": record.tier,
            "storage_url": record.storage_url,
            "host": record.host,
            "task_id": record.task_id,
            "job_id": record.job_id,
            "attempt": int(record.attempt),
            "created_at": now,
            "updated_at": now,
        }
        stmt = self._upsert_statement(values)
        try:
            with session.begin():
                session.execute(stmt)
        except BaseException:
            session.rollback()
            raise

    def _upsert_statement(self, values: dict[str, Any]) -> Any:
        name = self.engine.dialect.name
        insert: Any
        if name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        elif name == "sqlite":
            from sqlalchemy.dialects.sqlite import insert  # type: ignore[no-redef]
        else:
            raise ConfigError(f"features database: {name} is not supported (SQLite, PostgreSQL)")
        stmt = insert(self.table).values(**values)
        update = {k: stmt.excluded[k] for k in values if k not in ("source", "key", "created_at")}
        return stmt.on_conflict_do_update(index_elements=["source", "key"], set_=update)

    def storage_url_of(self, session: Session, source: str, key: str) -> str | None:
        """Return the stored ``storage_url`` of an image's row (``None`` if no row or trash)."""
        t = self.table
        try:
            with session.begin():
                value = session.execute(
                    select(t.c.storage_url).where(t.c.source == source, t.c.key == key)
                ).scalar_one_or_none()
        except BaseException:
            session.rollback()
            raise
        return value

    def row(self, session: Session, source: str, key: str) -> dict[str, Any] | None:
        """Return the row of ``(source, key)`` as a dict, or ``None`` if there is none."""
        try:
            with session.begin():
                found = session.execute(
                    select(self.table).where(self.table.c.source == source, self.table.c.key == key)
                ).one_or_none()
        except BaseException:
            session.rollback()
            raise
        return None if found is None else dict(found._mapping)

    def rows(self) -> list[dict[str, Any]]:
        """Return every row as a dict (for reports and tests)."""
        self.ensure_schema()
        with self.engine.connect() as conn:
            result = conn.execute(select(self.table).order_by(self.table.c.key))
            return [dict(r._mapping) for r in result]

    def drop(self) -> None:
        """Drop the table (and the schema, if one was named and is empty)."""
        with self.engine.begin() as conn:
            self.table.drop(conn, checkfirst=True)
            if self.schema:
                q = self.engine.dialect.identifier_preparer.quote_schema(self.schema)
                conn.execute(text(f"DROP SCHEMA IF EXISTS {q}"))
        self._ready = False


__all__ = ["FeaturesDB", "ImageRecord", "get_engine", "make_table"]
