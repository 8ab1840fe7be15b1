"""``/r/<token>``: a signed, expiring result link (no account, no key).

The link redirects to a short-lived presigned URL where the bucket backend makes one, and
otherwise streams the object through the service, so links work for every backend.
Tampered → 403, expired → 410, object deleted → 404, too many downloads → 429.
"""

from __future__ import annotations

import logging
import posixpath
import tempfile
from typing import Any

from flask import Blueprint, redirect, request, send_file

from simpletasks.errors import KeyNotFound
from simpletasks.web.app import state
from simpletasks.web.errors import ApiError
from simpletasks.web.links import LinkExpired, LinkTampered, presigned_url

logger = logging.getLogger(__name__)

blueprint = Blueprint("links", __name__)

PRESIGN_SECONDS = 300
SPOOL_BYTES = 8 * 1024 * 1024  # objects larger than this are spooled to a temporary file


def client_address() -> str:
    """The client's address, for rate limits (the proxy's, behind a reverse proxy)."""
    return request.remote_addr or "unknown"


@blueprint.get("/r/<token>")
def download(token: str) -> Any:
    """Serve the object a result token names."""
    s = state()
    client = client_address()
    if not s.download_limiter.allow(client):
        raise ApiError(429, "rate_limited", "too many requests; try again in a minute")
    try:
        job_id, key = s.signer.load_result(token)
    except LinkTampered:
        raise ApiError(403, "forbidden", "this link is not valid") from None
    except LinkExpired:
        raise ApiError(410, "gone", "this link has expired; ask for a new one") from None
    url = presigned_url(s.bucket, key, PRESIGN_SECONDS)
    if url is not None:
        return redirect(url, code=302)
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115 - send_file closes it
    try:
        s.bucket.download_fileobj(key, spool)  # type: ignore[arg-type]
    except KeyNotFound:
        spool.close()
        raise ApiError(404, "not_found", "this result no longer exists") from None
    spool.seek(0)
    logger.info("result link for job %s: streaming %s", job_id, key)
    return send_file(
        spool,  # type: ignore[arg-type]
        as_attachment=True,
        download_name=posixpath.basename(key) or "result",
        mimetype="application/octet-stream",
    )
