"""Signed result links: streamed for any bucket, presigned on S3; tampered 403, expired 410."""

from __future__ import annotations

import io
import urllib.request
import uuid
from typing import Any

from simpletasks.buckets import open_bucket
from simpletasks.web.links import LinkExpired, LinkSigner, LinkTampered

SECRET = "another-secret-key-for-signing"


def test_signer_round_trip_and_failures():
    now = [1000.0]
    signer = LinkSigner(SECRET, clock=lambda: now[0])
    token = signer.result_token("j", "jobs/j/out.txt", 60)
    assert signer.load_result(token) == ("j", "jobs/j/out.txt")
    now[0] = 1061.0
    try:
        signer.load_result(token)
    except LinkExpired:
        pass
    else:
        raise AssertionError("expired token accepted")
    for bad in (token[:-2] + "xx", token.replace(".", "", 1), "", "a.b.c"):
        try:
            signer.load_result(bad)
        except LinkTampered:
            continue
        raise AssertionError(f"tampered token {bad!r} accepted")
    other = LinkSigner("a-different-secret-key-000", clock=lambda: 0.0)
    try:
        other.load_result(LinkSigner(SECRET, clock=lambda: 0.0).result_token("j", "k", 60))
    except LinkTampered:
        pass
    else:
        raise AssertionError("token of another service accepted")
    job_token = signer.job_token("j", 60)
    try:  # a job-page token is not a download token
        signer.load_result(job_token)
    except LinkTampered:
        pass
    else:
        raise AssertionError("job token accepted as a result token")


def test_download_statuses(app: Any, client: Any, env: Any):
    bucket = open_bucket(env.bucket_url)
    bucket.upload_fileobj(io.BytesIO(b"result bytes"), "jobs/j/out/r.csv")
    signer = app.extensions["simpletasks"].signer
    ok = client.get(f"/r/{signer.result_token('j', 'jobs/j/out/r.csv', 60)}")
    assert ok.status_code == 200 and ok.data == b"result bytes"
    assert "filename=r.csv" in ok.headers["Content-Disposition"]
    token = signer.result_token("j", "jobs/j/out/r.csv", 60)
    tampered = client.get(f"/r/{token[:-3]}abc")
    assert tampered.status_code == 403 and b"not valid" in tampered.data
    expired = client.get(f"/r/{signer.result_token('j', 'jobs/j/out/r.csv', -5)}")
    assert expired.status_code == 410 and b"expired" in expired.data
    gone = client.get(f"/r/{signer.result_token('j', 'jobs/j/missing', 60)}")
    assert gone.status_code == 404


def test_download_rate_limit(env: Any):
    app = env.app(downloads_per_minute=3)
    client = app.test_client()
    signer = app.extensions["simpletasks"].signer
    token = signer.result_token("j", "nothing", 60)
    assert [client.get(f"/r/{token}").status_code for _ in range(4)] == [404, 404, 404, 429]


def test_large_file_streams_through_the_service(app: Any, client: Any, env: Any):
    data = bytes(range(256)) * 40_000  # 10 MB: spooled to disk, not held in memory
    open_bucket(env.bucket_url).upload_fileobj(io.BytesIO(data), "big.bin")
    token = app.extensions["simpletasks"].signer.result_token("j", "big.bin", 60)
    response = client.get(f"/r/{token}")
    assert response.status_code == 200 and response.data == data


def test_s3_links_redirect_to_a_presigned_url(env: Any, moto_server: Any):
    from simpletasks.buckets.s3 import S3Bucket, make_client

    name = f"web-{uuid.uuid4().hex[:8]}"
    bucket = S3Bucket.from_url(
        f"s3://{name}/pre", client=make_client(endpoint_url=moto_server.endpoint_url), create=True
    )
    bucket.upload_fileobj(io.BytesIO(b"from s3"), "jobs/j/r.txt")
    from simpletasks.web import create_app

    app = create_app(env.config(bucket_url=f"s3://{name}/pre"), bucket=bucket)
    client = app.test_client()
    token = app.extensions["simpletasks"].signer.result_token("j", "jobs/j/r.txt", 60)
    response = client.get(f"/r/{token}")
    assert response.status_code == 302
    location = response.headers["Location"]
    assert location.startswith(moto_server.endpoint_url) and "Signature" in location
    with urllib.request.urlopen(location, timeout=10) as got:
        assert got.read() == b"from s3"
