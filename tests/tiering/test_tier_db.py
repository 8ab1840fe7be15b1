"""The features database on SQLite and PostgreSQL: schema on first use, upsert, one row."""

from __future__ import annotations

from pathlib import Path

import pytest

from simpletasks.errors import ConfigError
from simpletasks.tasks.tiering.db import FeaturesDB, ImageRecord


def _record(key: str = "run/a.png", tier: str = "A", **kw: object) -> ImageRecord:
    base = dict(
        source="s3://ingest",
        key=key,
        size_bytes=1234,
        width=64,
        height=48,
        format="png",
        features={"plls": -1.1, "mean": 0.2},
        score=0.8,
        tier=tier,
        storage_url=f"s3://fast/{key}",
        host="h",
        task_id=1,
        job_id="j",
        attempt=1,
    )
    base.update(kw)
    return ImageRecord(**base)  # type: ignore[arg-type]


def _exercise(db: FeaturesDB) -> None:
    with db.session() as session:
        db.upsert(session, _record())
        db.upsert(session, _record(tier="B", score=0.6, attempt=2))  # a redelivery
        db.upsert(session, _record("run/b.png", tier="trash", storage_url=None))
        assert db.storage_url_of(session, "s3://ingest", "run/a.png") == "s3://fast/run/a.png"
        assert db.storage_url_of(session, "s3://ingest", "run/none.png") is None
    rows = db.rows()
    assert [r["key"] for r in rows] == ["run/a.png", "run/b.png"]
    a = rows[0]
    assert a["tier"] == "B" and a["score"] == 0.6 and a["attempt"] == 2
    assert a["features"] == {"plls": -1.1, "mean": 0.2}
    assert a["created_at"] <= a["updated_at"]
    assert rows[1]["storage_url"] is None


def test_sqlite_file_schema_on_first_use_and_upsert(tmp_path: Path) -> None:
    db = FeaturesDB(f"sqlite:///{tmp_path}/f.db")
    _exercise(db)
    # A second object on the same file sees the same rows (schema already there).
    assert len(FeaturesDB(f"sqlite:///{tmp_path}/f.db").rows()) == 2


def test_postgresql_schema_of_its_own(pg_url: str, pg_schema: str) -> None:
    db = FeaturesDB(pg_url, schema=pg_schema, table="images")
    _exercise(db)
    db.drop()


def test_sqlite_refuses_a_schema_and_bad_urls_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="PostgreSQL"):
        FeaturesDB(f"sqlite:///{tmp_path}/g.db", schema="x")
    with pytest.raises(ConfigError, match="cannot use database"):
        FeaturesDB("nosuchdialect://x")
