"""Upload pages: CSRF, limits, sanitised names, rate limit, scan hook, e-mail with links."""

from __future__ import annotations

import io
import re
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from simpletasks.buckets import open_bucket
from simpletasks.queues import open_queue
from simpletasks.web import SmtpConfig


def _csrf(client: Any, name: str = "demo") -> str:
    page = client.get(f"/pipelines/{name}")
    assert page.status_code == 200
    match = re.search(rb'name="csrf_token" value="([^"]+)"', page.data)
    assert match
    return match.group(1).decode()


def _post(
    client: Any,
    files: list[tuple[bytes, str]],
    *,
    email: str = "a@example.org",
    csrf: str | None = None,
    name: str = "demo",
) -> Any:
    token = _csrf(client, name) if csrf is None else csrf
    data: dict[str, Any] = {"email": email, "csrf_token": token}
    data["files"] = [(io.BytesIO(content), filename) for content, filename in files]
    return client.post(f"/pipelines/{name}", data=data, content_type="multipart/form-data")


def _queued(env: Any) -> int:
    return int(open_queue(env.queue_url).counts().visible or 0)


def test_index_and_form(client: Any):
    assert b"Demo pipeline" in client.get("/").data
    page = client.get("/pipelines/demo")
    assert b'type="file" name="files" multiple' in page.data and b".txt,.dat" in page.data
    assert client.get("/pipelines/nope").status_code == 404
    assert b"<html" in client.get("/pipelines/nope").data  # pages get HTML errors


def test_upload_stores_files_and_enqueues_one_task_each(client: Any, env: Any):
    response = _post(client, [(b"one", "a.txt"), (b"two", "b.dat")])
    assert response.status_code == 201, response.data
    assert b"Received 2 file(s)" in response.data and b"a.txt" in response.data
    assert _queued(env) == 2
    bucket = open_bucket(env.bucket_url)
    keys = sorted(bucket.list("jobs/"))
    assert [k.rsplit("/", 1)[-1] for k in keys] == ["a.txt", "b.dat"]


@pytest.mark.parametrize(
    ("files", "email", "status", "needle"),
    [
        ([(b"x", "a.txt")], "not-an-address", 400, b"valid e-mail"),
        ([(b"x", "a.txt")], "a@b.c\nBcc: x@y.z", 400, b"valid e-mail"),
        ([], "a@example.org", 400, b"at least one file"),
        ([(b"x", "a.txt")] * 4, "a@example.org", 400, b"at most 3 files"),
        ([(b"x", "a.exe")], "a@example.org", 400, b"only .txt, .dat"),
        ([(b"x", "noext")], "a@example.org", 400, b"only .txt, .dat"),
        ([(b"x" * 1001, "big.txt")], "a@example.org", 413, b"larger than 1000"),
        ([(b"x", "\u65e5\u672c.txt")], "a@example.org", 400, b"no usable characters"),
    ],
)
def test_bad_uploads_are_refused_and_nothing_is_enqueued(
    client: Any, env: Any, files: Any, email: str, status: int, needle: bytes
):
    response = _post(client, files, email=email)
    assert response.status_code == status, response.data
    assert needle in response.data
    assert _queued(env) == 0
    assert _post(client, [(b"x", "ok.txt")]).status_code == 201  # the next upload works


def test_csrf_token_is_required(client: Any, env: Any):
    _csrf(client)
    assert _post(client, [(b"x", "a.txt")], csrf="forged").status_code == 400
    fresh = type(client)(client.application)  # another browser: no session cookie
    response = _post(fresh, [(b"x", "a.txt")], csrf=_csrf(client))
    assert response.status_code == 400 and b"reload" in response.data
    assert _queued(env) == 0


def test_file_names_are_sanitised_and_deduplicated(client: Any, env: Any):
    files = [(b"1", "../../etc/evil.txt"), (b"2", "evil.txt"), (b"3", "EVIL.txt")]
    response = _post(client, files)
    assert response.status_code == 201
    names = sorted(k.rsplit("/", 1)[-1] for k in open_bucket(env.bucket_url).list("jobs/"))
    assert names == ["EVIL-3.txt", "evil-2.txt", "evil.txt"]


def test_request_size_limit(env: Any):
    client = env.app(max_request_bytes=2000).test_client()
    response = _post(client, [(b"x" * 900, "a.txt"), (b"x" * 900, "b.txt"), (b"x" * 900, "c.txt")])
    assert response.status_code == 413
    assert _queued(env) == 0


def test_rate_limit_per_client(env: Any):
    client = env.app(uploads_per_minute=2).test_client()
    assert _post(client, [(b"x", "a.txt")]).status_code == 201
    assert _post(client, [(b"x", "a.txt")]).status_code == 201
    response = _post(client, [(b"x", "a.txt")])
    assert response.status_code == 429 and response.headers["Retry-After"]
    other = client.application.test_client()
    page = other.get("/pipelines/demo", environ_base={"REMOTE_ADDR": "10.0.0.9"})
    token = re.search(rb'name="csrf_token" value="([^"]+)"', page.data).group(1).decode()
    data = {"email": "b@example.org", "csrf_token": token, "files": [(io.BytesIO(b"y"), "y.txt")]}
    response = other.post("/pipelines/demo", data=data, environ_base={"REMOTE_ADDR": "10.0.0.9"})
    assert response.status_code == 201  # another client is not limited
    assert _queued(env) == 3


def test_scanner_rejects_infected_upload(env: Any, tmp_path: Path):
    fake = tmp_path / "fakescan.py"  # behaves like clamscan: exit 1 and "<path>: <sig> FOUND"
    fake.write_text(
        "import sys\n"
        "args = [p for p in sys.argv[1:] if not p.startswith('-')]\n"
        "bad = [p for p in args if b'VIRUS' in open(p, 'rb').read()]\n"
        "for p in bad: print(f'{p}: Test.Sig FOUND')\n"
        "sys.exit(1 if bad else 0)\n"
    )
    client = env.app(scan_command=(sys.executable, str(fake))).test_client()
    response = _post(client, [(b"clean", "a.txt"), (b"a VIRUS here", "b.txt")])
    assert response.status_code == 422 and b"b.txt (Test.Sig)" in response.data
    assert _queued(env) == 0 and not list(open_bucket(env.bucket_url).list("jobs/"))
    assert _post(client, [(b"clean", "a.txt")]).status_code == 201


def test_broken_scanner_fails_closed(env: Any):
    client = env.app(scan_command=("/nonexistent/clamscan",)).test_client()
    response = _post(client, [(b"clean", "a.txt")])
    assert response.status_code == 503 and _queued(env) == 0


def test_whole_upload_mail_and_links(env: Any, smtp_server: Any, consume: Any):
    app = env.app(
        smtp=SmtpConfig(host=smtp_server.host, port=smtp_server.port, sender="st@example.org")
    )
    client = app.test_client()
    response = _post(client, [(b"alpha", "a.txt"), (b"beta", "b.txt")], email="user@example.org")
    assert response.status_code == 201
    job_link = (
        re.search(rb'id="job-link" href="([^"]+)"', response.data)
        .group(1)
        .decode()
        .replace("&amp;", "&")
    )
    page = client.get(job_link)
    assert page.status_code == 200 and b"0 of 2 task(s) finished" in page.data
    assert b'http-equiv="refresh"' in page.data
    env.daemon().run()
    consume(app)
    [mail] = smtp_server.messages
    assert mail["To"] == "user@example.org" and mail["From"] == "st@example.org"
    text = mail.get_payload(decode=True).decode()
    assert "2 succeeded, 0 failed" in text
    links = re.findall(r"(a\.txt|b\.txt): http://127\.0\.0\.1:8080(/r/\S+)", text)
    assert sorted(name for name, _ in links) == ["a.txt", "b.txt"]
    got = {name: client.get(path) for name, path in links}
    assert got["a.txt"].data == b"alpha" and got["b.txt"].data == b"beta"
    assert "attachment" in got["a.txt"].headers["Content-Disposition"]
    page = client.get(job_link)
    assert b"2 of 2 task(s) finished" in page.data and b'http-equiv="refresh"' not in page.data
    consume(app)
    assert len(smtp_server.messages) == 1  # mailed once


def test_mail_failure_is_retried_later(env: Any, smtp_server: Any, consume: Any):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    app = env.app(smtp=SmtpConfig(host="127.0.0.1", port=dead_port, timeout=2))
    client = app.test_client()
    assert _post(client, [(b"alpha", "a.txt")]).status_code == 201
    env.daemon().run()
    consume(app)  # cannot mail: logged, job stays unmailed
    state = app.extensions["simpletasks"]
    from simpletasks.web.mail import Mailer

    state.consumer.after_batch.mailer = Mailer(
        SmtpConfig(host=smtp_server.host, port=smtp_server.port)
    )
    state.consumer.poll_once()
    assert len(smtp_server.messages) == 1


def test_failed_tasks_are_listed_on_the_job_page(env: Any, consume: Any, key: str):
    app = env.app()
    client = app.test_client()
    assert _post(client, [(b"x", "a.txt")]).status_code == 201
    open_bucket(env.bucket_url).delete(next(iter(open_bucket(env.bucket_url).list("jobs/"))))
    env.daemon().run()
    consume(app)
    job_id = client.get("/jobs/", headers={"X-API-Key": key}).json["jobs"][0]["id"]
    page = client.get(f"/jobs/{job_id}", headers={"X-API-Key": key})
    assert page.status_code == 200
    assert b"Recent failures" in page.data and b"KeyNotFound" in page.data
    assert b"failed" in page.data


def test_job_page_auth(client: Any, key: str, app: Any):
    job = client.post(
        "/jobs/", json={"name": "j", "task_type": "T"}, headers={"X-API-Key": key}
    ).json
    assert client.get(f"/jobs/{job['id']}").status_code == 401
    assert client.get(f"/jobs/{job['id']}", headers={"X-API-Key": "wrong"}).status_code == 403
    signer = app.extensions["simpletasks"].signer
    assert client.get(f"/jobs/{job['id']}?t={signer.job_token(job['id'], 60)}").status_code == 200
    assert client.get(f"/jobs/{job['id']}?t={signer.job_token('other', 60)}").status_code == 403
    assert client.get(f"/jobs/{job['id']}?t={signer.job_token(job['id'], -1)}").status_code == 410
    assert client.get(f"/jobs/{job['id']}?t=garbage").status_code == 403
    time.sleep(0)
