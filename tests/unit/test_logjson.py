"""JSON log lines: one object per line; task fields per worker thread, never leaking across."""

from __future__ import annotations

import io
import json
import logging
import threading
from types import SimpleNamespace

from simpletasks.logjson import JsonFormatter, TaskLogFilter, TaskLogMiddleware
from simpletasks.message import BasicInfo, TaskMessage


def capture() -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(TaskLogFilter())
    logger = logging.getLogger(f"test.logjson.{id(stream)}")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger, stream


def test_each_worker_thread_logs_its_own_task() -> None:
    logger, stream = capture()
    mw = TaskLogMiddleware("d1")
    barrier = threading.Barrier(2)

    def worker(i: int) -> None:
        body = TaskMessage(BasicInfo(i, f"T{i}", "")).to_json()
        mw.on_received(SimpleNamespace(id=f"m{i}", body=body, attempt=i + 1))
        task = SimpleNamespace(name=f"T{i}", id=i, context=SimpleNamespace(job_id=f"j{i}"))
        mw.before_phase(task, None, "execute")
        barrier.wait()  # both threads have set their fields before either logs
        logger.info("working on %s", i)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    logger.info("from the main thread")
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(records) == 3
    for r in records[:2]:
        i = int(r["message"].split()[-1])
        assert r["task"] == f"T{i}" and r["task_id"] == i and r["message_id"] == f"m{i}"
        assert r["attempt"] == i + 1 and r["job_id"] == f"j{i}" and r["phase"] == "execute"
        assert r["daemon"] == "d1" and r["level"] == "INFO"
    assert "task" not in records[2] and records[2]["thread"] == "MainThread"


def test_exceptions_unicode_and_unparseable_bodies() -> None:
    logger, stream = capture()
    mw = TaskLogMiddleware()
    result: list[str] = []

    def worker() -> None:
        mw.on_received(SimpleNamespace(id="x", body="not json", attempt=1))
        try:
            raise ValueError("bad\nthing")
        except ValueError:
            logger.exception("failed: %s", "naïve ✓")
        result.append("ok")

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1 and result == ["ok"]  # the multi-line traceback stays one line
    r = json.loads(lines[0])
    assert r["message"] == "failed: naïve ✓" and r["message_id"] == "x" and "task" not in r
    assert "ValueError: bad\nthing" in r["exception"] and r["time"].endswith("Z")
