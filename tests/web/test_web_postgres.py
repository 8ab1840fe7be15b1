"""The service on the machine's PostgreSQL (127.0.0.1:5432, db ``test``): a whole job,
a restart, and two consumers racing over duplicated reports."""

from __future__ import annotations

import io
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from tests_support import require_service

from simpletasks.buckets import open_bucket
from simpletasks.queues import open_queue
from simpletasks.reports import DoneReport, HostInfo
from simpletasks.web.auth import create_api_key
from simpletasks.web.consumer import ReportConsumer

CONNINFO = "host=127.0.0.1 port=5432 dbname=test user=postgres"


@pytest.fixture
def pg_env(env: Any) -> Iterator[Any]:
    try:
        import psycopg

        with psycopg.connect(CONNINFO, connect_timeout=3, autocommit=True) as conn:
            schema = f"st_web_{uuid.uuid4().hex[:10]}"
            conn.execute(f'CREATE SCHEMA "{schema}"')
    except Exception as exc:  # ImportError, OperationalError
        require_service(f"PostgreSQL on 127.0.0.1:5432 db test: {exc}")
    env.db_url = (
        f"postgresql+psycopg://postgres@127.0.0.1:5432/test?options=-csearch_path%3D{schema}"
    )
    yield env
    with psycopg.connect(CONNINFO, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def test_whole_job_and_restart_on_postgresql(pg_env: Any):
    app = pg_env.app()
    sessions = app.extensions["simpletasks"].sessions
    assert sessions.kw["bind"].dialect.name == "postgresql"
    with sessions() as session:
        auth = {"X-API-Key": create_api_key(session, "pg")}
    client = app.test_client()
    job = client.post("/jobs/", json={"name": "pg", "task_type": "NO_OP"}, headers=auth).json
    bucket = open_bucket(pg_env.bucket_url)
    bucket.upload_fileobj(io.BytesIO(b"x"), f"{job['base_directory']}/a.dat")
    tasks = [{"inputs": ["a.dat"]}] * 3 + [{"inputs": ["missing.dat"]}]
    assert (
        client.post(f"/jobs/{job['id']}/tasks/", json={"tasks": tasks}, headers=auth).status_code
        == 201
    )
    pg_env.daemon().run()
    app.extensions["simpletasks"].consumer.drain()
    again = pg_env.app().test_client()  # a restarted service on the same database
    status = again.get(f"/jobs/{job['id']}/status/", headers=auth).json
    assert status["counts"]["succeeded"] == 3 and status["counts"]["failed"] == 1
    results = again.get(f"/jobs/{job['id']}/results/", headers=auth).json
    assert results["total"] == 4
    assert again.get("/workers/", headers=auth).json["workers"][0]["tasks_done"] == 3
    rid = results["results"][0]["id"]
    assert again.delete(f"/jobs/{job['id']}/results/{rid}/", headers=auth).status_code == 204


def test_two_consumers_racing_store_each_report_once(pg_env: Any):
    app = pg_env.app()
    sessions = app.extensions["simpletasks"].sessions
    client = app.test_client()
    with sessions() as session:
        auth = {"X-API-Key": create_api_key(session, "pg")}
    job = client.post("/jobs/", json={"name": "pg", "task_type": "NO_OP"}, headers=auth).json
    client.post(f"/jobs/{job['id']}/tasks/", json={"tasks": [{}] * 5}, headers=auth)
    done = open_queue(pg_env.done_url)
    for _copy in range(8):
        for task_id in range(1, 6):
            report = DoneReport(
                host=HostInfo("w", 1),
                message_id=f"m{task_id}",
                body={},
                task_name="NO_OP",
                task_id=task_id,
                outputs=[],
                result_message="",
                attempt=1,
                seconds=0.1,
                job_id=job["id"],
                daemon="d",
            )
            done.send(report.to_json())
    consumers = [ReportConsumer(sessions, [open_queue(pg_env.done_url)]) for _ in range(2)]
    errors: list[BaseException] = []

    def run(consumer: ReportConsumer) -> None:
        try:
            consumer.drain()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(c,)) for c in consumers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert sum(c.consumed for c in consumers) == 5
    assert sum(c.consumed + c.duplicates for c in consumers) == 40
    status = client.get(f"/jobs/{job['id']}/status/", headers=auth).json
    assert status["counts"]["succeeded"] == 5
    worker = client.get("/workers/", headers=auth).json["workers"]
    assert len(worker) == 1 and worker[0]["tasks_done"] == 5
