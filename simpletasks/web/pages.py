"""Pages for people: upload pages per pipeline (Freeloader's role) and the job page.

Upload pages have no accounts by design, so they defend themselves: a CSRF token bound to
the session cookie, limits on file count and size, sanitised file names, an allow-list of
extensions, a per-client rate limit and, if configured, a virus scan before anything is
stored or enqueued.
"""

from __future__ import annotations

import hmac
import logging
import re
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, abort, make_response, render_template, request, session
from werkzeug.datastructures import FileStorage
from werkzeug.utils import secure_filename

from simpletasks.web import jobs as jobs_
from simpletasks.web.app import state
from simpletasks.web.auth import find_key, presented_key
from simpletasks.web.config import PipelineConfig
from simpletasks.web.errors import ApiError
from simpletasks.web.links import LinkExpired, LinkTampered
from simpletasks.web.links_view import client_address
from simpletasks.web.scan import ScanError

logger = logging.getLogger(__name__)

blueprint = Blueprint("pages", __name__)

_EMAIL = re.compile(r"^[^@\s<>\"',;]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$")
_CHUNK = 64 * 1024
REFRESH_SECONDS = 3


def error_page(status: int, message: str) -> Response:
    """Return an HTML error page."""
    response = make_response(render_template("error.html", status=status, message=message), status)
    if status == 429:
        response.headers["Retry-After"] = "60"
    return response


def csrf_token() -> str:
    """Return the session's CSRF token (creating it)."""
    token = session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        session["csrf"] = token
    return token


def _check_csrf() -> None:
    expected = session.get("csrf")
    given = request.form.get("csrf_token", "")
    if not isinstance(expected, str) or not hmac.compare_digest(expected, given):
        raise ApiError(400, "csrf", "the form expired or was not sent from this site; reload it")


def _pipeline(name: str) -> PipelineConfig:
    pipeline = state().config.pipelines.get(name)
    if pipeline is None:
        abort(404, f"no pipeline named {name!r}")
    return pipeline


@blueprint.get("/")
def index() -> str:
    """List the upload pages."""
    return render_template("index.html", pipelines=list(state().config.pipelines.values()))


@blueprint.get("/pipelines/<name>")
def upload_form(name: str) -> str:
    """The upload page of one pipeline: e-mail and files."""
    pipeline = _pipeline(name)
    return render_template("upload.html", p=pipeline, csrf=csrf_token())


@blueprint.post("/pipelines/<name>")
def upload(name: str) -> Any:
    """Receive an upload: check it, store the files, enqueue one task per file, confirm."""
    s = state()
    pipeline = _pipeline(name)
    if not s.limiter.allow(f"upload:{client_address()}"):
        raise ApiError(429, "rate_limited", "too many uploads from your address; try again later")
    _check_csrf()
    email = request.form.get("email", "").strip()
    if len(email) > 254 or not _EMAIL.match(email):
        raise ApiError(400, "bad_request", "please give a valid e-mail address")
    files = [f for f in request.files.getlist("files") if f.filename]
    if not files:
        raise ApiError(400, "bad_request", "choose at least one file")
    if len(files) > pipeline.max_files:
        raise ApiError(400, "bad_request", f"at most {pipeline.max_files} files per upload")
    tmp = Path(tempfile.mkdtemp(prefix="st-upload-"))
    try:
        received = _receive(files, pipeline, tmp)
        _scan(received, tmp)
        with s.sessions() as db:
            job = jobs_.new_job(
                db,
                name=pipeline.title or pipeline.name,
                task_type=pipeline.task_type,
                payload=pipeline.payload,
                pipeline=pipeline.name,
                email=email,
            )
            try:
                for safe, _size in received:
                    s.bucket.upload(tmp / safe, f"{job.base_directory}/inputs/{safe}")
            except Exception as exc:
                logger.error("upload to %s: cannot store files: %s", pipeline.name, exc)
                raise ApiError(
                    503, "unavailable", "cannot store the files now; try later"
                ) from None
            items = [jobs_.TaskInput(inputs=(f"inputs/{safe}",)) for safe, _ in received]
            jobs_.submit(db, s.queue, job, items)
            token = s.signer.job_token(job.id, pipeline.link_seconds)
            job_id = job.id
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("upload to %s: job %s, %d file(s)", pipeline.name, job_id, len(received))
    return render_template(
        "received.html", p=pipeline, files=received, email=email, job_id=job_id, token=token
    ), 201


def _receive(
    files: list[FileStorage], pipeline: PipelineConfig, tmp: Path
) -> list[tuple[str, int]]:
    """Write the files to ``tmp`` under safe, unique names; check extension and size."""
    received: list[tuple[str, int]] = []
    used: set[str] = set()
    for f in files:
        original = f.filename or ""
        base = original.replace("\\", "/").rsplit("/", 1)[-1]
        raw_stem, dot, raw_ext = base.rpartition(".")
        if not dot:
            raw_stem, raw_ext = base, ""
        stem, ext = secure_filename(raw_stem)[:100], secure_filename(raw_ext)[:20]
        if not stem:
            raise ApiError(
                400, "bad_request", f"file name {original[:100]!r} has no usable characters"
            )
        suffix = f".{ext.lower()}" if ext else ""
        if pipeline.extensions and suffix not in pipeline.extensions:
            allowed = ", ".join(pipeline.extensions)
            raise ApiError(
                400, "bad_request", f"{original[:100]!r}: only {allowed} files are accepted"
            )
        candidate, n = f"{stem}{suffix}", 2
        while candidate.lower() in used:
            candidate, n = f"{stem}-{n}{suffix}", n + 1
        used.add(candidate.lower())
        size = 0
        with open(tmp / candidate, "wb") as out:
            while chunk := f.stream.read(_CHUNK):
                size += len(chunk)
                if size > pipeline.max_file_bytes:
                    raise ApiError(
                        413,
                        "too_large",
                        f"{original[:100]!r} is larger than {pipeline.max_file_bytes} bytes",
                    )
                out.write(chunk)
        received.append((candidate, size))
    return received


def _scan(received: list[tuple[str, int]], tmp: Path) -> None:
    scanner = state().scanner
    if scanner is None:
        return
    try:
        found = scanner.scan([tmp / name for name, _ in received])
    except ScanError as exc:
        logger.error("upload refused: %s", exc)
        raise ApiError(
            503, "unavailable", "the virus scanner is not available; try later"
        ) from None
    if found:
        names = ", ".join(f"{Path(p).name} ({sig})" for p, sig in found.items())
        logger.warning("upload from %s rejected: infected: %s", client_address(), names)
        raise ApiError(422, "infected", f"upload rejected: virus found in {names}")


@blueprint.get("/jobs/<job_id>")
def job_page(job_id: str) -> Any:
    """The job page: progress, counts, recent failures, results; refreshes itself."""
    s = state()
    token = request.args.get("t")
    if token:
        try:
            allowed = s.signer.load_job(token)
        except LinkTampered:
            raise ApiError(403, "forbidden", "this link is not valid") from None
        except LinkExpired:
            raise ApiError(410, "gone", "this link has expired") from None
        if allowed != job_id:
            raise ApiError(403, "forbidden", "this link is for another job")
    else:
        key = presented_key(request)
        if key is None:
            raise ApiError(
                401, "unauthenticated", "open this page from its link, or send an API key"
            )
        with s.sessions() as db:
            if find_key(db, key) is None:
                raise ApiError(403, "forbidden", "API key not recognised")
    with s.sessions() as db:
        job = jobs_.get_job(db, job_id)
        status = jobs_.status(db, job)
        failures = jobs_.recent_failures(db, job.id)
        pipeline = s.config.pipelines.get(job.pipeline or "")
        seconds = pipeline.link_seconds if pipeline else s.config.job_link_seconds
        results = []
        for r in db.scalars(jobs_.results_query(job.id).limit(200)):
            links = [
                (k.rsplit("/", 1)[-1], s.signer.result_token(job.id, k, seconds))
                for k in r.outputs or []
            ]
            results.append(
                {
                    "task_id": r.task_id,
                    "state": jobs_.result_state(r),
                    "links": links,
                    "message": r.message,
                }
            )
        busy = status["finished"] < status["total"] or status["state"] == "empty"
        refresh = REFRESH_SECONDS if busy else None
        return render_template(
            "job.html", job=job, status=status, failures=failures, results=results, refresh=refresh
        )
