"""The OpenAPI 3.0 description of the job API (served at ``/openapi.json``)."""

from __future__ import annotations

import copy
from typing import Any

import simpletasks
from simpletasks.web.jobs import BASE_PATTERN, KEY_PATTERN, TASK_TYPE_PATTERN

_ID = {"type": "string", "minLength": 1, "maxLength": 64}
_NUM = {"type": "number"}
_INT = {"type": "integer"}
_STR = {"type": "string"}
_NULLABLE_NUM = {"type": "number", "nullable": True}
STATE_NAMES = ["queued", "running", "cancelled", "failed", "succeeded"]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _obj(props: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {"type": "object", "properties": props, "required": required or list(props)}


_ERRORS = {
    "400": {"$ref": "#/components/responses/Error"},
    "401": {"$ref": "#/components/responses/Error"},
    "403": {"$ref": "#/components/responses/Error"},
    "default": {"$ref": "#/components/responses/Error"},
}
_JOB_ID = {"name": "job_id", "in": "path", "required": True, "schema": _ID}
_PAGING = [
    {
        "name": "page",
        "in": "query",
        "schema": {"type": "integer", "minimum": 1, "maximum": 1_000_000_000, "default": 1},
    },
    {
        "name": "per_page",
        "in": "query",
        "schema": {"type": "integer", "minimum": 1, "maximum": 500, "default": 50},
    },
]

SCHEMAS: dict[str, Any] = {
    "Error": _obj(
        {"error": _obj({"code": _STR, "message": _STR})},
    ),
    "Counts": _obj({name: {"type": "integer", "minimum": 0} for name in STATE_NAMES}),
    "JobCreate": {
        "type": "object",
        "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 200},
            "task_type": {"type": "string", "pattern": TASK_TYPE_PATTERN},
            "payload": {"description": "Default payload_info of the job's tasks (any JSON)"},
            "base_directory": {"type": "string", "maxLength": 500, "pattern": BASE_PATTERN},
        },
        "required": ["name", "task_type"],
        "additionalProperties": False,
    },
    "Job": _obj(
        {
            "id": _STR,
            "name": _STR,
            "task_type": _STR,
            "payload": {"nullable": True},
            "base_directory": _STR,
            "created": _NUM,
            "cancelled": {"type": "boolean"},
            "state": {"type": "string", "enum": ["empty", "running", "finished", "cancelled"]},
            "total": _INT,
            "counts": _ref("Counts"),
            "page": {"type": "string", "description": "Signed link to the job page"},
        }
    ),
    "JobPage": _obj(
        {
            "jobs": {"type": "array", "items": _ref("Job")},
            "page": _INT,
            "per_page": _INT,
            "total": _INT,
            "next_page": {"type": "integer", "nullable": True},
        }
    ),
    "Status": _obj(
        {
            "job_id": _STR,
            "state": {"type": "string", "enum": ["empty", "running", "finished", "cancelled"]},
            "total": _INT,
            "finished": _INT,
            "progress": {"type": "number", "minimum": 0, "maximum": 1},
            "counts": _ref("Counts"),
        }
    ),
    "TaskSubmit": {
        "type": "object",
        "properties": {
            "tasks": {
                "type": "array",
                "minItems": 1,
                "maxItems": 1000,
                "items": {
                    "type": "object",
                    "properties": {
                        "inputs": {
                            "type": "array",
                            "items": {"type": "string", "maxLength": 1000, "pattern": KEY_PATTERN},
                        },
                        "payload": {"description": "payload_info; the job's default if absent"},
                    },
                    "additionalProperties": False,
                },
            }
        },
        "required": ["tasks"],
        "additionalProperties": False,
    },
    "Submitted": _obj({"job_id": _STR, "task_ids": {"type": "array", "items": _INT}}),
    "Result": _obj(
        {
            "id": _INT,
            "task_id": {"type": "integer", "nullable": True},
            "state": {"type": "string", "enum": ["succeeded", "failed", "cancelled"]},
            "outputs": {"type": "array", "items": _STR},
            "links": {"type": "object", "additionalProperties": _STR},
            "message": _STR,
            "error": {
                "type": "object",
                "nullable": True,
                "properties": {"type": _STR, "message": _STR, "phase": _STR},
            },
            "host": _STR,
            "pid": _INT,
            "daemon": _STR,
            "attempt": _INT,
            "seconds": _NULLABLE_NUM,
            "time": _NUM,
        }
    ),
    "ResultPage": _obj(
        {
            "results": {"type": "array", "items": _ref("Result")},
            "page": _INT,
            "per_page": _INT,
            "total": _INT,
            "next_page": {"type": "integer", "nullable": True},
        }
    ),
    "Worker": _obj(
        {
            "host": _STR,
            "pid": _INT,
            "daemon": _STR,
            "tasks_done": _INT,
            "tasks_failed": _INT,
            "first_seen": _NUM,
            "last_seen": _NUM,
            "alive": {"type": "boolean"},
        }
    ),
    "Server": _obj(
        {
            "name": _STR,
            "version": _STR,
            "time": _NUM,
            "uptime_seconds": _NUM,
            "queue": _STR,
            "jobs": _INT,
            "reports": _INT,
            "consumer": _obj(
                {"running": {"type": "boolean"}, "last_poll": _NULLABLE_NUM, "unreadable": _INT}
            ),
        }
    ),
}


def description(server_url: str = "", max_tasks: int = 1000) -> dict[str, Any]:
    """Return the OpenAPI document, with ``server_url`` as its server if given.

    Args:
        server_url: Base URL of the service.
        max_tasks: Longest task list one submission accepts.
    """
    schemas = copy.deepcopy(SCHEMAS)
    schemas["TaskSubmit"]["properties"]["tasks"]["maxItems"] = max_tasks
    paths: dict[str, Any] = {
        "/server/": {
            "get": {
                "summary": "Service facts",
                "operationId": "getServer",
                "responses": {"200": _json(_ref("Server"), "Service facts"), **_ERRORS},
            }
        },
        "/workers/": {
            "get": {
                "summary": "Daemons seen recently",
                "operationId": "listWorkers",
                "responses": {
                    "200": _json(
                        _obj({"workers": {"type": "array", "items": _ref("Worker")}}), "Workers"
                    ),
                    **_ERRORS,
                },
            }
        },
        "/jobs/": {
            "get": {
                "summary": "List jobs, newest first",
                "operationId": "listJobs",
                "parameters": _PAGING,
                "responses": {"200": _json(_ref("JobPage"), "A page of jobs"), **_ERRORS},
            },
            "post": {
                "summary": "Define a job",
                "operationId": "createJob",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("JobCreate")}},
                },
                "responses": {"201": _json(_ref("Job"), "The job"), **_ERRORS},
            },
        },
        "/jobs/{job_id}/": {
            "parameters": [_JOB_ID],
            "get": {
                "summary": "One job",
                "operationId": "getJob",
                "responses": {"200": _json(_ref("Job"), "The job"), **_ERRORS},
            },
            "delete": {
                "summary": "Cancel the job (its pending tasks are skipped)",
                "operationId": "cancelJob",
                "responses": {"200": _json(_ref("Job"), "The cancelled job"), **_ERRORS},
            },
        },
        "/jobs/{job_id}/status/": {
            "parameters": [_JOB_ID],
            "get": {
                "summary": "Task counts by state",
                "operationId": "getStatus",
                "responses": {"200": _json(_ref("Status"), "Counts"), **_ERRORS},
            },
        },
        "/jobs/{job_id}/tasks/": {
            "parameters": [_JOB_ID],
            "post": {
                "summary": "Enqueue tasks",
                "operationId": "submitTasks",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("TaskSubmit")}},
                },
                "responses": {"201": _json(_ref("Submitted"), "Task ids"), **_ERRORS},
            },
        },
        "/jobs/{job_id}/results/": {
            "parameters": [_JOB_ID],
            "get": {
                "summary": "Final outcomes of the job's tasks",
                "operationId": "listResults",
                "parameters": _PAGING,
                "responses": {"200": _json(_ref("ResultPage"), "A page of results"), **_ERRORS},
            },
        },
        "/jobs/{job_id}/results/{result_id}/": {
            "parameters": [
                _JOB_ID,
                {
                    "name": "result_id",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "integer", "minimum": 0},
                },
            ],
            "delete": {
                "summary": "Delete a result and its outputs",
                "operationId": "deleteResult",
                "responses": {"204": {"description": "Deleted"}, **_ERRORS},
            },
        },
    }
    doc: dict[str, Any] = {
        "openapi": "3.0.3",
        "info": {
            "title": "simpletasks job API",
            "version": simpletasks.__version__,
            "description": "Define jobs, submit their tasks, follow them, fetch their results. "
            "Every call needs an API key (Authorization: Bearer <key> or X-API-Key).",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "responses": {"Error": _json(_ref("Error"), "An error")},
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
        },
        "security": [{"bearer": []}, {"apiKey": []}],
    }
    if server_url:
        doc["servers"] = [{"url": server_url}]
    return doc
