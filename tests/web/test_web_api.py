"""The job API: every endpoint, auth failures, bad bodies, and a whole job run by a daemon."""

from __future__ import annotations

import io
from typing import Any

import pytest

from simpletasks.buckets import open_bucket
from simpletasks.queues import open_queue

ENDPOINTS = [
    ("GET", "/server/"),
    ("GET", "/workers/"),
    ("GET", "/jobs/"),
    ("POST", "/jobs/"),
    ("GET", "/jobs/x/"),
    ("DELETE", "/jobs/x/"),
    ("GET", "/jobs/x/status/"),
    ("POST", "/jobs/x/tasks/"),
    ("GET", "/jobs/x/results/"),
    ("DELETE", "/jobs/x/results/1/"),
]


def _job(client: Any, auth: dict[str, str], **body: Any) -> dict[str, Any]:
    data = {"name": "words", "task_type": "NO_OP", "payload": "p"} | body
    response = client.post("/jobs/", json=data, headers=auth)
    assert response.status_code == 201, response.json
    return response.json


def _error(response: Any, status: int, code: str | None = None) -> str:
    assert response.status_code == status, (response.status_code, response.data[:300])
    body = response.json
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    if code:
        assert body["error"]["code"] == code
    return str(body["error"]["message"])


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_missing_key_is_401_and_wrong_key_is_403(client: Any, key: str, method: str, path: str):
    response = client.open(path, method=method, json={})
    _error(response, 401, "unauthenticated")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    _error(client.open(path, method=method, json={}, headers={"X-API-Key": key + "x"}), 403)
    bearer = {"Authorization": "Bearer st_not-a-key"}
    _error(client.open(path, method=method, json={}, headers=bearer), 403, "forbidden")


def test_keys_are_stored_hashed(app: Any, key: str):
    from sqlalchemy import select

    from simpletasks.web.auth import key_digest
    from simpletasks.web.db import ApiKey

    with app.extensions["simpletasks"].sessions() as session:
        rows = session.scalars(select(ApiKey)).all()
    assert [r.digest for r in rows] == [key_digest(key)]
    assert key not in rows[0].digest


def test_x_api_key_header_works(client: Any, key: str):
    assert client.get("/server/", headers={"X-API-Key": key}).status_code == 200


def test_server_and_openapi(client: Any, auth: dict[str, str]):
    body = client.get("/server/", headers=auth).json
    assert body["name"] == "simpletasks" and body["jobs"] == 0
    spec = client.get("/openapi.json").json  # no key needed for the description
    assert spec["openapi"].startswith("3.")
    assert "/jobs/{job_id}/tasks/" in spec["paths"]


def test_create_get_list_job(client: Any, auth: dict[str, str]):
    job = _job(client, auth, payload={"a": [1, 2.5, None]})
    assert job["state"] == "empty" and job["total"] == 0 and job["cancelled"] is False
    assert job["payload"] == {"a": [1, 2.5, None]}
    assert job["base_directory"] == f"jobs/{job['id']}"
    got = client.get(f"/jobs/{job['id']}/", headers=auth).json
    assert got["id"] == job["id"] and got["counts"]["queued"] == 0
    listed = client.get("/jobs/?per_page=1", headers=auth).json
    assert listed["total"] == 1 and listed["jobs"][0]["id"] == job["id"]
    assert listed["next_page"] is None


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"task_type": "NO_OP"}, 400, "name"),
        ({"name": "x"}, 400, "task_type"),
        ({"name": 5, "task_type": "NO_OP"}, 400, "name"),
        ({"name": "x", "task_type": "NO OP"}, 400, "task_type"),
        ({"name": "x", "task_type": "NO_OP", "extra": 1}, 400, "extra"),
        ({"name": "x" * 201, "task_type": "NO_OP"}, 400, "longer"),
        ({"name": "x", "task_type": "NO_OP", "base_directory": "../up"}, 400, "relative key"),
        ({"name": "x", "task_type": "NO_OP", "base_directory": "/abs"}, 400, "relative key"),
        ([1, 2], 400, "object"),
    ],
)
def test_bad_job_bodies(client: Any, auth: dict[str, str], body: Any, status: int, needle: str):
    assert needle in _error(client.post("/jobs/", json=body, headers=auth), status)
    # other work goes on
    assert (
        client.post("/jobs/", json={"name": "ok", "task_type": "T"}, headers=auth).status_code
        == 201
    )


def test_non_json_bodies(client: Any, auth: dict[str, str]):
    _error(client.post("/jobs/", data="name=x", headers=auth), 415)
    bad = client.post("/jobs/", data="{not json", headers=auth, content_type="application/json")
    _error(bad, 400)


def test_unknown_job_is_404_everywhere(client: Any, auth: dict[str, str]):
    for method, path in ENDPOINTS[4:]:
        body = {"tasks": [{}]} if method == "POST" else None
        response = client.open(
            path.replace("/x/", "/nope/"), method=method, json=body, headers=auth
        )
        _error(response, 404, "not_found")
    _error(client.get("/jobs/" + "x" * 300 + "/", headers=auth), 404)


@pytest.mark.parametrize(
    ("tasks", "status", "needle"),
    [
        (None, 400, "tasks"),
        ([], 400, "non-empty"),
        ("abc", 400, "array"),
        ([5], 400, "tasks[0]"),
        ([{"inputs": "a"}], 400, "inputs"),
        ([{"inputs": [1]}], 400, "inputs"),
        ([{"inputs": ["../etc/passwd"]}], 400, ".."),
        ([{"inputs": ["/abs"]}], 400, "tasks[0]"),
        ([{"bogus": 1}], 400, "bogus"),
        ([{}] * 1001, 400, "at most 1000"),
    ],
)
def test_bad_task_lists(
    client: Any, auth: dict[str, str], env: Any, tasks: Any, status: int, needle: str
):
    job = _job(client, auth)
    body = {} if tasks is None else {"tasks": tasks}
    assert needle in _error(
        client.post(f"/jobs/{job['id']}/tasks/", json=body, headers=auth), status
    )
    assert open_queue(env.queue_url).counts().visible == 0  # nothing was sent
    ok = client.post(f"/jobs/{job['id']}/tasks/", json={"tasks": [{}]}, headers=auth)
    assert ok.status_code == 201 and ok.json["task_ids"] == [1]


@pytest.mark.parametrize("query", ["page=0", "per_page=501", "page=x", "per_page=-1"])
def test_bad_paging(client: Any, auth: dict[str, str], query: str):
    job = _job(client, auth)
    _error(client.get(f"/jobs/{job['id']}/results/?{query}", headers=auth), 400)
    _error(client.get(f"/jobs/?{query}", headers=auth), 400)


def test_unknown_route_and_method_are_json(client: Any, auth: dict[str, str]):
    _error(client.get("/nothing/", headers=auth), 404)
    _error(client.put("/jobs/", json={}, headers=auth), 405)


def test_submitted_messages_carry_job_and_payloads(client: Any, auth: dict[str, str], env: Any):
    import json

    job = _job(client, auth, payload={"default": True})
    tasks = [{"inputs": ["a.dat"]}, {"payload": None}, {"payload": [1]}]
    response = client.post(f"/jobs/{job['id']}/tasks/", json={"tasks": tasks}, headers=auth)
    assert response.status_code == 201 and response.json["task_ids"] == [1, 2, 3]
    again = client.post(f"/jobs/{job['id']}/tasks/", json={"tasks": [{}]}, headers=auth)
    assert again.json["task_ids"] == [4]
    queue = open_queue(env.queue_url)
    bodies = [json.loads(m.body) for m in queue.receive(10, lease_seconds=5)]
    assert [b["basic_info"]["id"] for b in bodies] == [1, 2, 3, 4]
    assert {b["job_id"] for b in bodies} == {job["id"]}
    assert [b["payload_info"] for b in bodies] == [{"default": True}, None, [1], {"default": True}]
    assert bodies[0]["basic_info"]["inputs"] == ["a.dat"]
    assert bodies[0]["basic_info"]["base_directory"] == job["base_directory"]
    status = client.get(f"/jobs/{job['id']}/status/", headers=auth).json
    assert status["counts"]["queued"] == 4 and status["state"] == "running"


def test_whole_job_with_a_daemon(
    app: Any, client: Any, auth: dict[str, str], env: Any, consume: Any
):
    bucket = open_bucket(env.bucket_url)
    job = _job(client, auth)
    base = job["base_directory"]
    for i in range(3):
        bucket.upload_fileobj(io.BytesIO(f"file {i}".encode()), f"{base}/in/{i}.dat")
    tasks = [{"inputs": [f"in/{i}.dat"]} for i in range(3)] + [{"inputs": ["in/missing.dat"]}]
    client.post(f"/jobs/{job['id']}/tasks/", json={"tasks": tasks}, headers=auth)
    stats = env.daemon().run()
    assert stats.succeeded == 3
    assert consume(app) >= 4
    status = client.get(f"/jobs/{job['id']}/status/", headers=auth).json
    assert status["counts"] | {} == {
        "queued": 0,
        "running": 0,
        "cancelled": 0,
        "failed": 1,
        "succeeded": 3,
    }
    assert status["state"] == "finished" and status["progress"] == 1.0
    page = client.get(f"/jobs/{job['id']}/results/?per_page=2", headers=auth).json
    assert page["total"] == 4 and len(page["results"]) == 2 and page["next_page"] == 2
    page2 = client.get(f"/jobs/{job['id']}/results/?page=2&per_page=2", headers=auth).json
    everything = page["results"] + page2["results"]
    done = [r for r in everything if r["state"] == "succeeded"]
    failed = [r for r in everything if r["state"] == "failed"]
    assert len(done) == 3 and len(failed) == 1
    assert failed[0]["error"]["type"] == "KeyNotFound" and failed[0]["task_id"] == 4
    assert all(r["host"] and r["seconds"] is not None and r["error"] is None for r in done)
    out = done[0]["outputs"][0]
    assert bucket.exists(out)
    # the signed link of an output downloads it
    link = done[0]["links"][out].removeprefix("http://127.0.0.1:8080")
    assert client.get(link).data.startswith(b"file ")
    # delete a result: the row goes from the list, the object from the bucket
    assert (
        client.delete(f"/jobs/{job['id']}/results/{done[0]['id']}/", headers=auth).status_code
        == 204
    )
    assert not bucket.exists(out)
    _error(client.delete(f"/jobs/{job['id']}/results/{done[0]['id']}/", headers=auth), 404)
    assert client.get(f"/jobs/{job['id']}/results/", headers=auth).json["total"] == 3
    workers = client.get("/workers/", headers=auth).json["workers"]
    assert len(workers) == 1 and workers[0]["tasks_done"] == 3 and workers[0]["tasks_failed"] >= 1
    assert workers[0]["alive"] is True and workers[0]["daemon"] == "daemon"
    server = client.get("/server/", headers=auth).json
    assert server["reports"] >= 4 and server["jobs"] == 1


def test_cancelled_job_refuses_new_tasks(client: Any, auth: dict[str, str], env: Any):
    from simpletasks.jobs import is_cancelled

    job = _job(client, auth)
    first = client.delete(f"/jobs/{job['id']}/", headers=auth)
    assert first.status_code == 200 and first.json["cancelled"] is True
    assert first.json["state"] == "cancelled"
    assert client.delete(f"/jobs/{job['id']}/", headers=auth).status_code == 200  # idempotent
    assert is_cancelled(open_bucket(env.bucket_url), job["id"])
    response = client.post(f"/jobs/{job['id']}/tasks/", json={"tasks": [{}]}, headers=auth)
    _error(response, 409, "conflict")


def test_queue_failure_is_503_and_counts_what_was_sent(app: Any, client: Any, auth: dict[str, str]):
    state = app.extensions["simpletasks"]

    class Broken:
        url = "mem://broken"
        capabilities = state.queue.capabilities

        def send_batch(self, bodies: Any) -> None:
            raise ConnectionError("queue down")

    real, state.queue = state.queue, Broken()
    try:
        job = _job(client, auth)
        response = client.post(f"/jobs/{job['id']}/tasks/", json={"tasks": [{}]}, headers=auth)
        assert "queue down" in _error(response, 503, "unavailable")
    finally:
        state.queue = real
    ok = client.post(f"/jobs/{job['id']}/tasks/", json={"tasks": [{}]}, headers=auth)
    assert ok.status_code == 201 and ok.json["task_ids"] == [1]


def test_bucket_failures_are_503_and_change_nothing(
    app: Any, client: Any, auth: dict[str, str], env: Any, consume: Any
):
    from simpletasks.reports import DoneReport, HostInfo

    state = app.extensions["simpletasks"]
    job = _job(client, auth)
    client.post(f"/jobs/{job['id']}/tasks/", json={"tasks": [{}]}, headers=auth)
    report = DoneReport(
        host=HostInfo("h", 1),
        message_id="m",
        body={},
        task_name="NO_OP",
        task_id=1,
        outputs=["jobs/x/out.txt"],
        result_message="",
        attempt=1,
        seconds=0.1,
        job_id=job["id"],
    )
    open_queue(env.done_url).send(report.to_json())
    consume(app)
    rid = client.get(f"/jobs/{job['id']}/results/", headers=auth).json["results"][0]["id"]

    class Down:
        url = "mem://down"

        def __getattr__(self, name: str) -> Any:
            def fail(*args: Any, **kwargs: Any) -> Any:
                raise ConnectionError("bucket down")

            return fail

    real, state.bucket = state.bucket, Down()
    try:
        assert "bucket down" in _error(client.delete(f"/jobs/{job['id']}/", headers=auth), 503)
        response = client.delete(f"/jobs/{job['id']}/results/{rid}/", headers=auth)
        assert "bucket down" in _error(response, 503)
    finally:
        state.bucket = real
    assert client.get(f"/jobs/{job['id']}/", headers=auth).json["cancelled"] is False
    assert client.get(f"/jobs/{job['id']}/results/", headers=auth).json["total"] == 1
    assert client.delete(f"/jobs/{job['id']}/results/{rid}/", headers=auth).status_code == 204
    assert client.delete(f"/jobs/{job['id']}/", headers=auth).json["cancelled"] is True
