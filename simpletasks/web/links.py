"""Signed links: result downloads (``/r/<token>``) and job pages (``/jobs/<id>?t=<token>``).

A token is the payload signed with the service's secret key (itsdangerous). It carries its
own expiry time, so each pipeline can give its links another lifetime. Loading a token
whose signature does not match raises :class:`LinkTampered` (the service answers 403); one
past its expiry raises :class:`LinkExpired` (410).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from itsdangerous import BadSignature, URLSafeSerializer

from simpletasks.buckets import Presigning

logger = logging.getLogger(__name__)


class LinkTampered(Exception):
    """The token was not signed by this service (or was changed)."""


class LinkExpired(Exception):
    """The token was genuine but its lifetime is over."""


class LinkSigner:
    """Makes and checks the service's signed tokens.

    Args:
        secret_key: The service's secret.
        clock: Wall clock (for tests).
    """

    def __init__(self, secret_key: str, clock: Callable[[], float] = time.time) -> None:
        self._results = URLSafeSerializer(secret_key, salt="simpletasks-result-link")
        self._jobs = URLSafeSerializer(secret_key, salt="simpletasks-job-link")
        self._clock = clock

    def result_token(self, job_id: str, key: str, seconds: float) -> str:
        """Return a token for downloading object ``key`` of ``job_id`` for ``seconds``."""
        return str(self._results.dumps({"j": job_id, "k": key, "e": int(self._clock() + seconds)}))

    def job_token(self, job_id: str, seconds: float) -> str:
        """Return a token that opens ``job_id``'s page for ``seconds``."""
        return str(self._jobs.dumps({"j": job_id, "e": int(self._clock() + seconds)}))

    def load_result(self, token: str) -> tuple[str, str]:
        """Return ``(job_id, key)`` of a result token.

        Raises:
            LinkTampered: Bad signature or shape.
            LinkExpired: Past its expiry.
        """
        data = self._load(self._results, token)
        if not isinstance(data.get("k"), str):
            raise LinkTampered("token has no key")
        return str(data.get("j")), data["k"]

    def load_job(self, token: str) -> str:
        """Return the job id of a job-page token (raises as :meth:`load_result`)."""
        return str(self._load(self._jobs, token).get("j"))

    def _load(self, serializer: URLSafeSerializer, token: str) -> dict[str, Any]:
        try:
            data = serializer.loads(token)
        except BadSignature:
            raise LinkTampered("bad signature") from None
        if not isinstance(data, dict) or not isinstance(data.get("e"), int):
            raise LinkTampered("bad token")
        if self._clock() > data["e"]:
            raise LinkExpired("link expired")
        return data


def presigned_url(bucket: Any, key: str, seconds: int) -> str | None:
    """Return a short-lived direct URL of ``key`` if the bucket backend can make one.

    Backends that offer :class:`~simpletasks.buckets.Presigning` (S3; GCS with credentials
    that can sign) make one; for every other backend (file, memory, GCS without a signing
    identity), or when signing fails, this returns ``None`` and the service streams the
    object itself.
    """
    if not isinstance(bucket, Presigning):
        return None
    try:
        return bucket.presigned_url(key, seconds)
    except Exception as exc:  # a backend that cannot sign here: stream instead
        logger.warning("cannot presign %s: %s; streaming it", key, exc)
        return None
