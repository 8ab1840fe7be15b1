"""The job REST API (the role of the DART server). Every route needs an API key.

See :mod:`simpletasks.web.openapi` for the description served at ``/openapi.json``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from flask import Blueprint, Response, g, jsonify, request
from sqlalchemy import func, select

import simpletasks
from simpletasks.urls import redact_url
from simpletasks.web import jobs as jobs_
from simpletasks.web.app import state
from simpletasks.web.auth import find_key, presented_key
from simpletasks.web.db import Job, Report, Worker
from simpletasks.web.errors import ApiError

logger = logging.getLogger(__name__)

blueprint = Blueprint("api", __name__)

MAX_PER_PAGE = 500
LINK_SECONDS = 24 * 3600  # lifetime of the download links in API results
_NAME_MAX = 200


@blueprint.before_request
def _authenticate() -> None:
    if request.endpoint == "api.openapi":
        return
    key = presented_key(request)
    if key is None:
        raise ApiError(401, "unauthenticated", "API key required: Authorization: Bearer <key>")
    with state().sessions() as session:
        row = find_key(session, key)
    if row is None:
        raise ApiError(403, "forbidden", "API key not recognised")
    g.api_key_name = row.name


@blueprint.get("/openapi.json")
def openapi() -> Response:
    """The OpenAPI description of this API."""
    from simpletasks.web.openapi import description

    limit = state().config.max_tasks_per_request
    return jsonify(description(request.host_url.rstrip("/"), max_tasks=limit))


@blueprint.get("/server/")
def server() -> Response:
    """Service facts: version, uptime, queues, counts."""
    s = state()
    with s.sessions() as session:
        jobs = session.scalar(select(func.count()).select_from(Job)) or 0
        reports = session.scalar(select(func.count()).select_from(Report)) or 0
    consumer = s.consumer
    return jsonify(
        {
            "name": "simpletasks",
            "version": simpletasks.__version__,
            "time": time.time(),
            "uptime_seconds": time.time() - s.started,
            "queue": redact_url(s.config.queue_url),
            "jobs": int(jobs),
            "reports": int(reports),
            "consumer": {
                "running": bool(consumer and consumer.running),
                "last_poll": consumer.last_poll if consumer else None,
                "unreadable": consumer.unreadable if consumer else 0,
            },
        }
    )


@blueprint.get("/workers/")
def workers() -> Response:
    """Daemons seen in reports: host, pid, name, tasks done and failed, last seen, alive."""
    s = state()
    now = time.time()
    with s.sessions() as session:
        rows = session.scalars(select(Worker).order_by(Worker.last_seen.desc())).all()
    return jsonify(
        {
            "workers": [
                {
                    "host": w.hostname,
                    "pid": w.pid,
                    "daemon": w.daemon,
                    "tasks_done": w.tasks_done,
                    "tasks_failed": w.tasks_failed,
                    "first_seen": w.first_seen,
                    "last_seen": w.last_seen,
                    "alive": now - w.last_seen <= s.config.worker_seconds,
                }
                for w in rows
            ]
        }
    )


@blueprint.get("/jobs/")
def list_jobs() -> Response:
    """Jobs, newest first, paged."""
    page, per_page = _paging()
    with state().sessions() as session:
        total = session.scalar(select(func.count()).select_from(Job)) or 0
        rows = session.scalars(
            select(Job).order_by(Job.created.desc()).offset((page - 1) * per_page).limit(per_page)
        ).all()
        items = [_job_json(session, job) for job in rows]
    return jsonify(_page(items, "jobs", page, per_page, int(total)))


@blueprint.post("/jobs/")
def create_job() -> tuple[Response, int]:
    """Define a job: name, task type, default payload (and base directory)."""
    data = _body({"name", "task_type", "payload", "base_directory"})
    name = _string(data, "name", required=True, max_len=_NAME_MAX)
    task_type = _string(data, "task_type", required=True, max_len=_NAME_MAX)
    base = data.get("base_directory")
    if "base_directory" in data and not isinstance(base, str):
        raise ApiError(400, "bad_request", "base_directory must be a string")
    with state().sessions() as session:
        job = jobs_.new_job(
            session,
            name=name,
            task_type=task_type,
            payload=data.get("payload"),
            base_directory=base,
        )
        return jsonify(_job_json(session, job)), 201


@blueprint.get("/jobs/<job_id>/")
def get_job(job_id: str) -> Response:
    """One job with its counts."""
    with state().sessions() as session:
        return jsonify(_job_json(session, jobs_.get_job(session, job_id)))


@blueprint.delete("/jobs/<job_id>/")
def cancel_job(job_id: str) -> Response:
    """Cancel a job: daemons skip its pending tasks and report them as cancelled."""
    s = state()
    with s.sessions() as session:
        job = jobs_.cancel(session, s.bucket, jobs_.get_job(session, job_id))
        return jsonify(_job_json(session, job))


@blueprint.get("/jobs/<job_id>/status/")
def job_status(job_id: str) -> Response:
    """Counts by state: queued, running, succeeded, failed, cancelled."""
    with state().sessions() as session:
        return jsonify(jobs_.status(session, jobs_.get_job(session, job_id)))


@blueprint.post("/jobs/<job_id>/tasks/")
def submit_tasks(job_id: str) -> tuple[Response, int]:
    """Enqueue tasks: ``{"tasks": [{"inputs": [...], "payload": ...}, ...]}``."""
    s = state()
    data = _body({"tasks"})
    items = data.get("tasks")
    if not isinstance(items, list) or not items:
        raise ApiError(400, "bad_request", "tasks must be a non-empty array of objects")
    limit = s.config.max_tasks_per_request
    if len(items) > limit:
        raise ApiError(400, "too_many", f"{len(items)} tasks in one request; at most {limit}")
    parsed = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ApiError(400, "bad_request", f"tasks[{i}] must be an object")
        unknown = sorted(set(item) - {"inputs", "payload"})
        if unknown:
            raise ApiError(
                400, "bad_request", f"tasks[{i}] has unknown field(s): {', '.join(unknown)}"
            )
        inputs = item.get("inputs", [])
        if not isinstance(inputs, list) or not all(isinstance(x, str) for x in inputs):
            raise ApiError(400, "bad_request", f"tasks[{i}].inputs must be an array of strings")
        parsed.append(
            jobs_.TaskInput(
                inputs=tuple(inputs), payload=item.get("payload"), has_payload="payload" in item
            )
        )
    with s.sessions() as session:
        job = jobs_.get_job(session, job_id)
        tasks = jobs_.submit(session, s.queue, job, parsed)
        return jsonify({"job_id": job.id, "task_ids": [t.task_id for t in tasks]}), 201


@blueprint.get("/jobs/<job_id>/results/")
def results(job_id: str) -> Response:
    """Final outcomes of the job's tasks, paged: outputs, host, timings, error if any."""
    page, per_page = _paging()
    with state().sessions() as session:
        job = jobs_.get_job(session, job_id)
        query = jobs_.results_query(job.id)
        total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
        rows = session.scalars(query.offset((page - 1) * per_page).limit(per_page)).all()
        items = [result_json(job.id, r) for r in rows]
    return jsonify(_page(items, "results", page, per_page, int(total)))


@blueprint.delete("/jobs/<job_id>/results/<int:result_id>/")
def delete_result(job_id: str, result_id: int) -> tuple[str, int]:
    """Delete a result and its output objects from the bucket."""
    s = state()
    with s.sessions() as session:
        job = jobs_.get_job(session, job_id)
        report = session.get(Report, result_id)
        if report is None or report.job_id != job.id or not report.final or report.deleted:
            raise ApiError(404, "not_found", f"job {job.id} has no result {result_id}")
        for key in report.outputs or []:
            try:
                s.bucket.delete(key)
            except Exception as exc:
                raise ApiError(503, "unavailable", f"cannot delete {key}: {exc}") from None
        report.deleted = True
        session.commit()
    return "", 204


# -- helpers ------------------------------------------------------------------------------


def result_json(job_id: str, r: Report) -> dict[str, Any]:
    """Return the API form of a result."""
    signer = state().signer
    base = state().config.public_url.rstrip("/")
    return {
        "id": r.id,
        "task_id": r.task_id,
        "state": jobs_.result_state(r),
        "outputs": list(r.outputs or []),
        "links": {
            key: f"{base}/r/{signer.result_token(job_id, key, LINK_SECONDS)}"
            for key in r.outputs or []
        },
        "message": r.message,
        "error": None
        if r.kind == "done"
        else {"type": r.error_type, "message": r.message, "phase": r.phase},
        "host": r.hostname,
        "pid": r.pid,
        "daemon": r.daemon,
        "attempt": r.attempt,
        "seconds": r.seconds,
        "time": r.time,
    }


def _job_json(session: Any, job: Job) -> dict[str, Any]:
    status = jobs_.status(session, job)
    token = state().signer.job_token(job.id, state().config.job_link_seconds)
    return {
        "id": job.id,
        "name": job.name,
        "task_type": job.task_type,
        "payload": job.payload,
        "base_directory": job.base_directory,
        "created": job.created,
        "cancelled": job.cancelled is not None,
        "state": status["state"],
        "total": status["total"],
        "counts": status["counts"],
        "page": f"{state().config.public_url.rstrip('/')}/jobs/{job.id}?t={token}",
    }


def _body(allowed: set[str]) -> dict[str, Any]:
    if not request.is_json:
        raise ApiError(
            415, "unsupported_media_type", "send a JSON body (Content-Type: application/json)"
        )
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise ApiError(400, "bad_request", "the body must be a JSON object")
    unknown = sorted(str(k) for k in set(data) - allowed)
    if unknown:
        raise ApiError(
            400,
            "bad_request",
            f"unknown field(s): {', '.join(unknown)}; known: {', '.join(sorted(allowed))}",
        )
    return data


def _string(data: dict[str, Any], name: str, *, required: bool, max_len: int) -> Any:
    value = data.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise ApiError(400, "bad_request", f"{name} must be a non-empty string")
    if len(value) > max_len:
        raise ApiError(400, "bad_request", f"{name} is longer than {max_len} characters")
    return value


def _paging() -> tuple[int, int]:
    values = []
    for name, default, top in (("page", 1, 10**9), ("per_page", 50, MAX_PER_PAGE)):
        raw = request.args.get(name, str(default))
        try:
            value = int(raw)
        except ValueError:
            raise ApiError(400, "bad_request", f"{name} must be an integer, got {raw!r}") from None
        if not 1 <= value <= top:
            raise ApiError(400, "bad_request", f"{name} must be between 1 and {top}")
        values.append(value)
    return values[0], values[1]


def _page(items: list[Any], name: str, page: int, per_page: int, total: int) -> dict[str, Any]:
    return {
        name: items,
        "page": page,
        "per_page": per_page,
        "total": total,
        "next_page": page + 1 if page * per_page < total else None,
    }
