"""CALL_FUNCTION through the job API and a real daemon: allow-listed functions only."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from simpletasks.buckets import open_bucket
from simpletasks.registry import TaskRegistry
from simpletasks.tasks.functions import FunctionTask, allowed_by, function_task


@pytest.mark.parametrize(
    ("path", "patterns", "ok"),
    [
        ("math:sqrt", ["math:sqrt"], True),
        ("math:sqrt", ["math:*"], True),
        ("math:_x", ["math:*"], False),
        ("math:sqrt", ["math:floor"], False),
        ("mathx:sqrt", ["math:*"], False),
        ("os:system", [], False),
        ("math:sqrt", [" math:sqrt "], True),
    ],
)
def test_allow_list_patterns(path: str, patterns: list[str], ok: bool):
    assert allowed_by(path, patterns) is ok


def test_functions_run_and_store_their_return_values(
    app: Any, client: Any, auth: dict[str, str], env: Any, consume: Any
):
    registry = TaskRegistry()
    registry.register(function_task(["web_functions:*", "math:sqrt"]))
    job = client.post(
        "/jobs/",
        json={
            "name": "f",
            "task_type": "CALL_FUNCTION",
            "payload": {"function": "math:sqrt", "parameter": 16},
        },
        headers=auth,
    ).json
    bucket = open_bucket(env.bucket_url)
    bucket.upload_fileobj(io.BytesIO(b"three more words"), f"{job['base_directory']}/t.txt")
    count = {"function": "web_functions:count_words", "parameter": {"text": "a b"}}
    tasks = [
        {},  # math:sqrt(16) from the job's default payload
        {"payload": count},
        {"payload": count, "inputs": ["t.txt"]},
        {"payload": {"function": "os:system", "parameter": "true"}},
        {"payload": {"function": "web_functions:_private"}},
        {"payload": {"function": "web_functions:unencodable"}},
        {"payload": {"function": "web_functions:explode", "parameter": 1}},
        {"payload": {"function": "web_functions:missing"}},
    ]
    client.post(f"/jobs/{job['id']}/tasks/", json={"tasks": tasks}, headers=auth)
    env.daemon(registry, max_attempts=2).run()
    consume(app)
    results = {
        r["task_id"]: r
        for r in client.get(f"/jobs/{job['id']}/results/", headers=auth).json["results"]
    }
    assert json.loads(results[1]["message"]) == 4.0
    assert json.loads(results[2]["message"]) == {"words": 2}
    assert json.loads(results[3]["message"]) == {"words": 5}
    key = results[3]["outputs"][0]
    assert key == f"{job['base_directory']}/results/3.json"
    out = io.BytesIO()
    bucket.download_fileobj(key, out)
    assert json.loads(out.getvalue()) == {"words": 5}
    for task_id, needle in [
        (4, "not allow-listed"),
        (5, "not allow-listed"),
        (6, "JSON"),
        (8, "no function"),
    ]:
        assert results[task_id]["state"] == "failed"
        assert needle in results[task_id]["error"]["message"]
        assert results[task_id]["attempt"] == 1  # permanent: not retried
    assert results[7]["state"] == "failed" and results[7]["attempt"] == 2  # ordinary: retried
    assert "cannot handle 1" in results[7]["error"]["message"]


def test_allow_list_from_environment(monkeypatch: pytest.MonkeyPatch):
    from simpletasks.message import BasicInfo, TaskMessage

    message = TaskMessage(
        BasicInfo(1, "CALL_FUNCTION", ""), {"function": "math:floor", "parameter": 2.5}
    )
    task = FunctionTask(message)
    monkeypatch.delenv("SIMPLETASKS_ALLOWED_FUNCTIONS", raising=False)
    assert task.allow_list() == ()
    monkeypatch.setenv("SIMPLETASKS_ALLOWED_FUNCTIONS", "math:floor, json:*")
    assert allowed_by("math:floor", task.allow_list())
