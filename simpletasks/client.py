"""A small Python client of the job REST API (``simpletasks serve``).

Example::

    from simpletasks.client import JobClient

    api = JobClient("http://127.0.0.1:8080", key="st_...")
    job = api.create_job("word counts", "CALL_FUNCTION",
                         payload={"function": "mypkg.words:count", "parameter": None})
    api.submit(job["id"], [{"payload": {"function": "mypkg.words:count", "parameter": t}}
                           for t in texts])
    api.wait(job["id"], timeout=600)
    for result in api.results(job["id"]):
        print(result["task_id"], result["message"])

Only the standard library is used. Errors are :class:`ApiError` with the HTTP status and the
service's error code and message.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from typing import Any


class ApiError(Exception):
    """The service answered with an error.

    Attributes:
        status: HTTP status.
        code: The service's error code (``not_found``, ``forbidden`` ...).
        message: What was wrong.
    """

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class JobClient:
    """Calls the job API with an API key.

    Args:
        url: Base URL of the service, e.g. ``http://127.0.0.1:8080``.
        key: An API key (``simpletasks serve --create-api-key NAME`` prints one).
        timeout: Seconds per request.
    """

    def __init__(self, url: str, key: str, *, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.key = key
        self.timeout = timeout

    def request(self, method: str, path: str, body: Any = None, **query: Any) -> Any:
        """Send one request; return the decoded JSON (``None`` for 204).

        Raises:
            ApiError: For any error status.
        """
        url = self.url + path
        params = {k: v for k, v in query.items() if v is not None}
        if params:
            url += "?" + urllib.parse.urlencode(params)
        data = None if body is None else json.dumps(body).encode()
        headers = {"Authorization": f"Bearer {self.key}", "Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                err = json.loads(raw)["error"]
                raise ApiError(exc.code, str(err["code"]), str(err["message"])) from None
            except (ValueError, KeyError, TypeError):
                raise ApiError(exc.code, "http_error", raw[:200].decode(errors="replace")) from None
        return json.loads(raw) if raw else None

    def server(self) -> dict[str, Any]:
        """``GET /server/``."""
        return self.request("GET", "/server/")

    def workers(self) -> list[dict[str, Any]]:
        """``GET /workers/``."""
        return self.request("GET", "/workers/")["workers"]

    def create_job(
        self, name: str, task_type: str, *, payload: Any = None, base_directory: str | None = None
    ) -> dict[str, Any]:
        """``POST /jobs/``; returns the job."""
        body: dict[str, Any] = {"name": name, "task_type": task_type, "payload": payload}
        if base_directory is not None:
            body["base_directory"] = base_directory
        return self.request("POST", "/jobs/", body)

    def job(self, job_id: str) -> dict[str, Any]:
        """``GET /jobs/{id}/``."""
        return self.request("GET", f"/jobs/{_q(job_id)}/")

    def cancel(self, job_id: str) -> dict[str, Any]:
        """``DELETE /jobs/{id}/``: cancel the job."""
        return self.request("DELETE", f"/jobs/{_q(job_id)}/")

    def status(self, job_id: str) -> dict[str, Any]:
        """``GET /jobs/{id}/status/``."""
        return self.request("GET", f"/jobs/{_q(job_id)}/status/")

    def submit(
        self, job_id: str, tasks: Sequence[dict[str, Any]], *, chunk: int = 1000
    ) -> list[int]:
        """``POST /jobs/{id}/tasks/`` in chunks; return every task id."""
        ids: list[int] = []
        for start in range(0, len(tasks), chunk):
            part = list(tasks[start : start + chunk])
            ids += self.request("POST", f"/jobs/{_q(job_id)}/tasks/", {"tasks": part})["task_ids"]
        return ids

    def results(self, job_id: str, *, per_page: int = 200) -> Iterator[dict[str, Any]]:
        """Yield every result of the job (``GET /jobs/{id}/results/``, page by page)."""
        page: int | None = 1
        while page is not None:
            data = self.request("GET", f"/jobs/{_q(job_id)}/results/", page=page, per_page=per_page)
            yield from data["results"]
            page = data["next_page"]

    def delete_result(self, job_id: str, result_id: int) -> None:
        """``DELETE /jobs/{id}/results/{rid}/``."""
        self.request("DELETE", f"/jobs/{_q(job_id)}/results/{int(result_id)}/")

    def wait(self, job_id: str, *, timeout: float = 600.0, poll: float = 1.0) -> dict[str, Any]:
        """Poll the status until every task is final; return it.

        Raises:
            TimeoutError: If the job is not finished after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            status = self.status(job_id)
            if status["total"] and status["finished"] >= status["total"]:
                return status
            if time.monotonic() >= deadline:
                raise TimeoutError(f"job {job_id} not finished after {timeout:g} s: {status}")
            time.sleep(poll)


def _q(value: str) -> str:
    return urllib.parse.quote(value, safe="")
