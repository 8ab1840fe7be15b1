"""Reports as a daemon would write them, and jobs to file them under, for the web tests."""

from __future__ import annotations

from typing import Any

from simpletasks.reports import DoneReport, ErrorReport, HostInfo

HOST = HostInfo(hostname="w1", pid=42)


def job_with_tasks(client: Any, auth: dict[str, str], n: int, task_type: str = "NO_OP") -> str:
    """Create a job of ``n`` tasks through the API; return its id."""
    job = client.post("/jobs/", json={"name": "j", "task_type": task_type}, headers=auth).json
    client.post(f"/jobs/{job['id']}/tasks/", json={"tasks": [{}] * n}, headers=auth)
    return str(job["id"])


def done_report(
    job_id: str,
    task_id: int,
    message_id: str,
    attempt: int = 1,
    *,
    outputs: list[str] | None = None,
    seconds: float = 0.5,
) -> DoneReport:
    """A NO_OP task's done report (outputs ``out/<task_id>`` unless given)."""
    return DoneReport(
        host=HOST,
        message_id=message_id,
        body={},
        task_name="NO_OP",
        task_id=task_id,
        outputs=[f"out/{task_id}"] if outputs is None else outputs,
        result_message="ok",
        attempt=attempt,
        seconds=seconds,
        job_id=job_id,
        daemon="d",
    )


def error_report(
    job_id: str, task_id: int, message_id: str, attempt: int, final: bool, phase: str = "execute"
) -> ErrorReport:
    """A NO_OP task's error report (a RuntimeError "boom" in ``phase``)."""
    return ErrorReport(
        host=HOST,
        message_id=message_id,
        body={},
        phase=phase,
        error_type="RuntimeError",
        error_message="boom",
        traceback="",
        attempt=attempt,
        max_attempts=3,
        final=final,
        task_name="NO_OP",
        task_id=task_id,
        job_id=job_id,
        daemon="d",
    )
