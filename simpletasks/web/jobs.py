"""Jobs as the service keeps them: create, submit tasks, cancel, count, list results.

No Flask here: the API, the upload pages and tests call these with a database session.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from simpletasks.buckets import BucketService
from simpletasks.errors import MessageError
from simpletasks.jobs import mark_cancelled
from simpletasks.message import TaskMessage
from simpletasks.queues import QueueService
from simpletasks.web.db import FINAL_STATES, STATES, Job, Report, Task
from simpletasks.web.errors import ApiError

logger = logging.getLogger(__name__)

#: What the API accepts as a task type, a base directory and an input key (the OpenAPI
#: description states the same patterns). Keys: ``/``-separated segments that start with a
#: letter, digit or ``_``, so none is empty, ``.`` or ``..``.
TASK_TYPE_PATTERN = r"^[A-Za-z0-9_.:-]{1,200}$"
_SEGMENT = r"[A-Za-z0-9_][A-Za-z0-9_.=+,@~-]*"
KEY_PATTERN = rf"^{_SEGMENT}(/{_SEGMENT})*$"
BASE_PATTERN = rf"^({_SEGMENT}(/{_SEGMENT})*)?$"
_TASK_TYPE = re.compile(TASK_TYPE_PATTERN)
_KEY = re.compile(KEY_PATTERN)
_BASE = re.compile(BASE_PATTERN)


@dataclass(frozen=True)
class TaskInput:
    """One task to submit: its inputs (relative to the job's base directory) and payload."""

    inputs: tuple[str, ...] = ()
    payload: Any = None
    has_payload: bool = False


def new_job(
    session: Session,
    *,
    name: str,
    task_type: str,
    payload: Any = None,
    base_directory: str | None = None,
    pipeline: str | None = None,
    email: str | None = None,
) -> Job:
    """Create a job (committed). Its base directory defaults to ``jobs/<id>``."""
    if not _TASK_TYPE.match(task_type):
        raise ApiError(400, "bad_request", "task_type must be 1-200 of A-Z a-z 0-9 _ . : -")
    job_id = uuid.uuid4().hex
    base = base_directory if base_directory is not None else f"jobs/{job_id}"
    if len(base) > 500 or not _BASE.search(base):
        raise ApiError(
            400,
            "bad_request",
            "base_directory must be a relative key: segments of "
            "A-Z a-z 0-9 _ . = + , @ ~ - starting with a letter, digit or _, separated by /",
        )
    try:  # the message schema checks the base directory (no .., no absolute path)
        TaskMessage.from_dict({"basic_info": {"id": 0, "name": task_type, "base_directory": base}})
    except MessageError as exc:
        raise ApiError(400, "bad_request", str(exc).replace("basic_info.", "")) from None
    job = Job(
        id=job_id,
        name=name,
        task_type=task_type,
        payload=payload,
        base_directory=base,
        pipeline=pipeline,
        email=email,
        created=time.time(),
        next_task=1,
    )
    session.add(job)
    session.commit()
    logger.info("job %s (%s) created", job_id, name)
    return job


def get_job(session: Session, job_id: str) -> Job:
    """Return the job or raise a 404 :class:`ApiError`."""
    job = session.get(Job, job_id) if isinstance(job_id, str) and len(job_id) <= 64 else None
    if job is None:
        raise ApiError(404, "not_found", f"no job {job_id!r}")
    return job


def submit(
    session: Session, queue: QueueService, job: Job, items: Sequence[TaskInput]
) -> list[Task]:
    """Enqueue one message per item and record the tasks (committed).

    Every message is built and checked before any is sent; a bad one fails the whole
    request. Messages go out in batches of the queue's size; if sending fails part-way, the
    tasks sent so far stay recorded and the error says how many went out.

    Raises:
        ApiError: 409 if the job was cancelled, 400 for a bad input, 503 if the queue fails.
    """
    if job.cancelled is not None:
        raise ApiError(409, "conflict", f"job {job.id} was cancelled; create a new job")
    first = job.next_task
    messages: list[TaskMessage] = []
    limit = queue.capabilities.max_body_bytes
    for i, item in enumerate(items):
        for j, key in enumerate(item.inputs):
            if len(key) > 1000 or not _KEY.search(key):
                raise ApiError(
                    400,
                    "bad_request",
                    f"tasks[{i}].inputs[{j}] {key[:100]!r} is not a safe "
                    "relative key (no empty, '.' or '..' segment, no leading /, no backslash)",
                )
        data = {
            "basic_info": {
                "id": first + i,
                "name": job.task_type,
                "base_directory": job.base_directory,
                "inputs": list(item.inputs),
            },
            "payload_info": item.payload if item.has_payload else job.payload,
            "job_id": job.id,
        }
        try:
            message = TaskMessage.from_dict(data)
            body = message.to_json()
        except MessageError as exc:
            text = str(exc).replace("basic_info.", "")
            raise ApiError(400, "bad_request", f"tasks[{i}]: {text}") from None
        except ValueError as exc:  # NaN/infinity in the payload
            raise ApiError(400, "bad_request", f"tasks[{i}]: payload is not JSON: {exc}") from None
        if limit is not None and len(body.encode()) > limit:
            raise ApiError(
                413,
                "too_large",
                f"tasks[{i}] is {len(body.encode())} bytes; the queue takes {limit}",
            )
        messages.append(message)
    batch = max(1, queue.capabilities.max_batch)
    tasks: list[Task] = []
    now = time.time()
    try:
        for start in range(0, len(messages), batch):
            chunk = messages[start : start + batch]
            queue.send_batch([m.to_json() for m in chunk])
            for m in chunk:
                tasks.append(
                    Task(
                        job_id=job.id,
                        task_id=m.basic_info.id,
                        inputs=list(m.basic_info.inputs),
                        payload=m.payload_info,
                        state="queued",
                        attempts=0,
                        updated=now,
                    )
                )
    except Exception as exc:
        logger.warning("job %s: sending tasks failed after %d: %s", job.id, len(tasks), exc)
        _record(session, job, tasks, first)
        raise ApiError(
            503, "unavailable", f"queue failed after {len(tasks)} of {len(messages)} tasks: {exc}"
        ) from None
    _record(session, job, tasks, first)
    logger.info("job %s: %d task(s) enqueued", job.id, len(tasks))
    return tasks


def _record(session: Session, job: Job, tasks: list[Task], first: int) -> None:
    session.add_all(tasks)
    job.next_task = first + len(tasks)
    session.commit()


def cancel(session: Session, bucket: BucketService, job: Job) -> Job:
    """Cancel a job: write the marker daemons check, then mark the job (idempotent).

    Raises:
        ApiError: 503 if the marker cannot be written (the job stays as it was).
    """
    if job.cancelled is not None:
        return job
    try:
        mark_cancelled(bucket, job.id)
    except Exception as exc:
        raise ApiError(503, "unavailable", f"cannot write the cancellation marker: {exc}") from None
    job.cancelled = time.time()
    session.commit()
    logger.info("job %s cancelled", job.id)
    return job


def counts(session: Session, job_id: str) -> dict[str, int]:
    """Return the number of the job's tasks in each state (every state present)."""
    result = {state: 0 for state in STATES}
    rows = session.execute(
        select(Task.state, func.count()).where(Task.job_id == job_id).group_by(Task.state)
    )
    for state, n in rows:
        result[state] = int(n)
    return result


def job_state(job: Job, by_state: dict[str, int]) -> str:
    """Return ``empty``, ``running``, ``finished`` or ``cancelled``."""
    total = sum(by_state.values())
    finished = sum(by_state[s] for s in FINAL_STATES)
    if job.cancelled is not None:
        return "cancelled"
    if total == 0:
        return "empty"
    return "finished" if finished == total else "running"


def status(session: Session, job: Job) -> dict[str, Any]:
    """Return the job's counts, total, finished fraction and state."""
    by_state = counts(session, job.id)
    total = sum(by_state.values())
    finished = sum(by_state[s] for s in FINAL_STATES)
    return {
        "job_id": job.id,
        "state": job_state(job, by_state),
        "total": total,
        "finished": finished,
        "progress": (finished / total) if total else 0.0,
        "counts": by_state,
    }


def results_query(job_id: str) -> Any:
    """Select the job's results: final reports not deleted, oldest first."""
    return (
        select(Report)
        .where(Report.job_id == job_id, Report.final.is_(True), Report.deleted.is_(False))
        .order_by(Report.id)
    )


def result_state(report: Report) -> str:
    """Return the state a final report puts its task in."""
    if report.kind == "done":
        return "succeeded"
    return "cancelled" if report.phase == "skipped" else "failed"


def recent_failures(session: Session, job_id: str, limit: int = 10) -> list[Report]:
    """Return the job's latest error reports (retried or final, not skips)."""
    query = (
        select(Report)
        .where(Report.job_id == job_id, Report.kind == "error", Report.phase != "skipped")
        .order_by(Report.id.desc())
        .limit(limit)
    )
    return list(session.scalars(query))
