"""Job API throughput: tasks submitted per second, and reports consumed per second.

- ``submit``: ``--tasks`` tasks through ``POST /jobs/{id}/tasks/`` (the Python client, over
  HTTP, to the app served by waitress on 127.0.0.1) in requests of ``--chunk``, onto a
  ``mem://`` queue (``--queues file`` for ``file://``); compared in the same run with the
  raw ``send_batch`` of the same message bodies onto another queue of the same kind, timed
  before and after the API run (mean of the two): ``vs_raw_send`` is the API's rate over
  the raw one.
- ``consume``: as many done reports (each a task of the job) from a done queue
  into the database by the service's consumer (transaction per batch, idempotency check,
  task and worker rows); compared with a bare loop that receives, parses and acks the same
  reports with no database: ``vs_bare_loop``.

    python benchmarks/web_throughput.py [--tasks 2000] [--chunk 500] [--queues mem|file]
                                        [--database URL]
"""

from __future__ import annotations

import argparse
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from _common import emit, machine_info, setup_logging, versions

from simpletasks.client import JobClient
from simpletasks.message import BasicInfo, TaskMessage
from simpletasks.queues import open_queue
from simpletasks.reports import DoneReport, HostInfo, parse_report


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _reports(job_id: str, n: int) -> list[str]:
    host = HostInfo("bench", 1)
    return [
        DoneReport(
            host=host,
            message_id=f"m{i}",
            body={"basic_info": {"id": i}},
            task_name="NO_OP",
            task_id=i,
            outputs=[f"jobs/{job_id}/0_output/{i}.dat"],
            result_message="",
            attempt=1,
            seconds=0.01,
            job_id=job_id,
            daemon="bench",
        ).to_json()
        for i in range(1, n + 1)
    ]


def run(tasks: int, chunk: int, database: str | None, queues: str = "mem") -> dict[str, Any]:
    import waitress

    from simpletasks.web import WebConfig, create_app
    from simpletasks.web.auth import create_api_key

    tmp = Path(tempfile.mkdtemp(prefix="st-web-bench-"))
    for sub in ("tasks", "raw1", "raw2", "done", "bucket"):
        (tmp / sub).mkdir()
    port = _free_port()

    def queue_url(name: str) -> str:
        return f"file://{tmp}/{name}" if queues == "file" else f"mem://bench-{tmp.name}-{name}"

    config = WebConfig(
        database_url=database or f"sqlite:///{tmp / 'web.db'}",
        queue_url=queue_url("tasks"),
        bucket_url=f"file://{tmp}/bucket",
        done_queue_url=queue_url("done"),
        secret_key="benchmark-secret-key-0123456789",
        public_url=f"http://127.0.0.1:{port}",
        max_tasks_per_request=max(chunk, 1000),
    )
    app = create_app(config)
    state = app.extensions["simpletasks"]
    with state.sessions() as session:
        key = create_api_key(session, "bench")
    server = waitress.create_server(app, host="127.0.0.1", port=port, threads=4)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    api = JobClient(f"http://127.0.0.1:{port}", key)
    job = api.create_job("bench", "NO_OP", payload="p")
    items = [{"inputs": [f"in/{i}.dat"]} for i in range(tasks)]

    bodies = [
        TaskMessage(
            BasicInfo(i + 1, "NO_OP", job["base_directory"], (f"in/{i}.dat",)), "p", job["id"]
        ).to_json()
        for i in range(tasks)
    ]

    def raw_send(name: str) -> float:
        raw = open_queue(queue_url(name))
        batch = raw.capabilities.max_batch
        started = time.perf_counter()
        for start in range(0, tasks, batch):
            raw.send_batch(bodies[start : start + batch])
        return time.perf_counter() - started

    raw_before = raw_send("raw1")
    started = time.perf_counter()
    api.submit(job["id"], items, chunk=chunk)
    api_seconds = time.perf_counter() - started
    raw_seconds = (raw_before + raw_send("raw2")) / 2

    done = open_queue(queue_url("done"))
    reports = _reports(job["id"], tasks)
    for start in range(0, tasks, 10):
        done.send_batch(reports[start : start + 10])
    started = time.perf_counter()
    state.consumer.drain()
    consume_seconds = time.perf_counter() - started
    status = api.status(job["id"])
    assert status["counts"]["succeeded"] == tasks, status

    for start in range(0, tasks, 10):
        done.send_batch(reports[start : start + 10])
    started = time.perf_counter()
    parsed = 0
    while messages := done.receive(100, lease_seconds=60):
        parsed += len([parse_report(m.body) for m in messages])
        done.ack_many(messages)
    bare_seconds = time.perf_counter() - started
    assert parsed == tasks
    server.close()
    dialect = state.sessions.kw["bind"].dialect.name
    return {
        "benchmark": "web_throughput",
        "tasks": tasks,
        "chunk": chunk,
        "database": dialect,
        "queues": queues,
        "submit": {
            "api_tasks_per_s": round(tasks / api_seconds, 1),
            "raw_send_tasks_per_s": round(tasks / raw_seconds, 1),
            "vs_raw_send": round(raw_seconds / api_seconds, 3),
        },
        "consume": {
            "reports_per_s": round(tasks / consume_seconds, 1),
            "bare_loop_reports_per_s": round(tasks / bare_seconds, 1),
            "vs_bare_loop": round(bare_seconds / consume_seconds, 3),
        },
        "machine": machine_info(),
        "versions": versions("flask", "waitress", "sqlalchemy"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--chunk", type=int, default=500)
    parser.add_argument("--queues", choices=["mem", "file"], default="mem")
    parser.add_argument("--database", help="SQLAlchemy URL (default: a fresh SQLite file)")
    parser.add_argument("--output")
    args = parser.parse_args()
    setup_logging()
    emit(run(args.tasks, args.chunk, args.database, args.queues), args.output)


if __name__ == "__main__":
    main()
