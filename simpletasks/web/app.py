"""The Flask app factory and the state the blueprints share."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from flask import Flask, current_app, request
from sqlalchemy.orm import sessionmaker
from werkzeug.exceptions import HTTPException

from simpletasks.buckets import BucketService, open_bucket
from simpletasks.queues import QueueService, open_queue
from simpletasks.web.config import WebConfig
from simpletasks.web.consumer import ReportConsumer
from simpletasks.web.db import make_engine, make_sessions
from simpletasks.web.errors import ApiError, error_response
from simpletasks.web.links import LinkSigner
from simpletasks.web.mail import Mailer
from simpletasks.web.notify import Notifier
from simpletasks.web.ratelimit import RateLimiter
from simpletasks.web.scan import VirusScanner

logger = logging.getLogger(__name__)


@dataclass
class WebState:
    """What every request may use (``current_app.extensions["simpletasks"]``)."""

    config: WebConfig
    sessions: sessionmaker[Any]
    queue: QueueService
    bucket: BucketService
    signer: LinkSigner
    limiter: RateLimiter
    download_limiter: RateLimiter
    mailer: Mailer
    scanner: VirusScanner | None
    consumer: ReportConsumer | None
    started: float


def state() -> WebState:
    """Return the current app's :class:`WebState`."""
    value: WebState = current_app.extensions["simpletasks"]
    return value


def create_app(
    config: WebConfig,
    *,
    queue: QueueService | None = None,
    bucket: BucketService | None = None,
) -> Flask:
    """Build the app: API, job and upload pages, result links.

    The report consumer is created (when a done or error queue is configured) but not
    started: call ``state.consumer.start()`` (``simpletasks serve`` does) or
    ``poll_once``/``drain`` in tests.

    Args:
        config: The configuration.
        queue: The task queue (opened from ``config.queue_url`` if not given).
        bucket: The bucket (opened from ``config.bucket_url`` if not given).
    """
    from simpletasks.web import api, links_view, pages

    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=config.secret_key,
        MAX_CONTENT_LENGTH=config.max_request_bytes,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=config.public_url.startswith("https://"),
        JSON_SORT_KEYS=False,
    )
    app.json.sort_keys = False  # type: ignore[attr-defined]
    engine = make_engine(config.database_url)
    sessions = make_sessions(engine)
    signer = LinkSigner(config.secret_key)
    mailer = Mailer(config.smtp)
    report_queues = [
        open_queue(url) for url in (config.done_queue_url, config.error_queue_url) if url
    ]
    notifier = Notifier(
        mailer, signer, config.public_url, config.pipelines, config.job_link_seconds
    )
    consumer = (
        ReportConsumer(sessions, report_queues, after_batch=notifier) if report_queues else None
    )
    app.extensions["simpletasks"] = WebState(
        config=config,
        sessions=sessions,
        queue=queue or open_queue(config.queue_url),
        bucket=bucket or open_bucket(config.bucket_url),
        signer=signer,
        limiter=RateLimiter(config.uploads_per_minute),
        download_limiter=RateLimiter(config.downloads_per_minute),
        mailer=mailer,
        scanner=VirusScanner(config.scan_command) if config.scan_command else None,
        consumer=consumer,
        started=time.time(),
    )
    if config.proxy_hops:
        from werkzeug.middleware.proxy_fix import ProxyFix

        hops = config.proxy_hops
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)  # type: ignore[method-assign]
    app.add_template_filter(human_bytes)
    app.add_template_filter(human_seconds)
    app.register_blueprint(api.blueprint)
    app.register_blueprint(pages.blueprint)
    app.register_blueprint(links_view.blueprint)
    app.register_error_handler(ApiError, _api_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected)

    @app.after_request
    def _headers(response: Any) -> Any:
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'; "
            "form-action 'self'; base-uri 'none'",
        )
        return response

    return app


def human_bytes(n: float) -> str:
    """``1536`` → ``"1.5 KB"`` (for pages)."""
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def human_seconds(s: float) -> str:
    """``7200`` → ``"2 hours"`` (for pages)."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if s >= size:
            value = s / size
            text = f"{value:.0f}" if value == int(value) else f"{value:.1f}"
            return f"{text} {unit}{'' if text == '1' else 's'}"
    return f"{s:.0f} seconds"


def wants_json() -> bool:
    """Whether the current request is an API call (JSON errors) rather than a page."""
    if request.blueprint == "api":
        return True
    if request.blueprint in ("pages", "links"):
        return False
    return request.path.endswith("/") or request.path.endswith(".json")


def _api_error(exc: ApiError) -> Any:
    if wants_json():
        return error_response(exc.status, exc.message, exc.code)
    from simpletasks.web.pages import error_page

    return error_page(exc.status, exc.message)


def _http_error(exc: HTTPException) -> Any:
    status = exc.code or 500
    message = exc.description or exc.name
    if status == 413:
        message = "request too large"
    if wants_json():
        response = error_response(status, message)
    else:
        from simpletasks.web.pages import error_page

        response = error_page(status, message)
    if status == 405 and hasattr(exc, "valid_methods") and exc.valid_methods:
        response.headers["Allow"] = ", ".join(exc.valid_methods)
    return response


def _unexpected(exc: Exception) -> Any:
    logger.exception("unexpected error on %s %s", request.method, request.path)
    if wants_json():
        return error_response(500, "internal error; see the service log")
    from simpletasks.web.pages import error_page

    return error_page(500, "internal error; see the service log")
