"""API errors: ``{"error": {"code": ..., "message": ...}}`` with the right HTTP status."""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify


class ApiError(Exception):
    """An error a request gets back as JSON.

    Args:
        status: HTTP status.
        code: A stable machine-readable code (``not_found``, ``bad_request`` ...).
        message: A human-readable sentence saying what was wrong.
    """

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


#: Default codes by HTTP status.
CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    410: "gone",
    413: "too_large",
    415: "unsupported_media_type",
    422: "unprocessable",
    429: "rate_limited",
    500: "internal_error",
    503: "unavailable",
}


def error_response(status: int, message: str, code: str | None = None) -> Response:
    """Return the JSON error response."""
    body: dict[str, Any] = {
        "error": {"code": code or CODES.get(status, "error"), "message": message}
    }
    response = jsonify(body)
    response.status_code = status
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="simpletasks"'
    return response
