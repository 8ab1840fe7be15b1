"""A GCS object's bytes in one GET over urllib3: the download path of :mod:`.gcs`.

google-cloud-storage sends each request through ``requests``, whose own work per request
(merging session and environment settings, a look at every proxy variable, hooks, cookies)
costs more CPU than the request itself when objects are small: a 10 KB read from an
emulator is ~560 us of client CPU through the library and ~180 us through urllib3. The
media of an object is one well-known GET, so downloads take it through google-auth's
urllib3 transport (:class:`google.auth.transport.urllib3.AuthorizedHttp`: the same
credentials, refreshed the same way) and keep the library for everything else.

What the library would do, kept: the client's endpoint and credentials; a raw read
(``Accept-Encoding: gzip``, never decompressed); the library's retry policy
(``DEFAULT_RETRY``: 429, 5xx, connection errors, timeouts; 120 s in all); a read cut off
midway resumes with a ``Range`` for the rest, pinned to the generation first served; error
answers become the library's exceptions (``google.api_core.exceptions``); a 60 s timeout to
connect and between reads. The certificate authorities are those ``requests`` trusts
(``REQUESTS_CA_BUNDLE``, ``CURL_CA_BUNDLE``, else certifi's).

:meth:`MediaReader.for_client` declines (returns ``None``, and the library serves the
download) for what it does not do: a client with mutual TLS or a custom HTTP session, and an
endpoint that an HTTP(S)_PROXY setting covers.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

logger = logging.getLogger(__name__)

TIMEOUT_SECONDS = 60.0  # the library's default timeout, to connect and between reads
READ_CHUNK = 1024 * 1024
POOL_SIZE = 32  # connections kept per host (more may open; the extra ones are closed)
_HASH = re.compile(r"\s*(crc32c|md5)=([A-Za-z0-9+/]+={0,3})\s*$")


class Sink(Protocol):
    """Where the bytes go: a writer that counts them and can start over."""

    size: int

    def write(self, data: bytes, /) -> int: ...
    def rewind(self) -> bool: ...


@dataclass(frozen=True)
class Served:
    """What the answer said of the object: its generation and CRC32C (base64), if given."""

    generation: int | None
    crc32c: str | None


def crc32c_of(headers: Mapping[str, str]) -> str | None:
    """The CRC32C in an answer's ``X-Goog-Hash`` header (``crc32c=...,md5=...``), if any."""
    for part in (headers.get("x-goog-hash") or "").split(","):
        match = _HASH.match(part)
        if match and match.group(1) == "crc32c":
            return match.group(2)
    return None


def _error_message(method: str, url: str, body: bytes) -> str:
    """The library's wording: ``GET url: <the JSON error's message, or the body>``."""
    text = body[:2000].decode("utf-8", "replace")
    with contextlib.suppress(ValueError, KeyError, TypeError):
        text = str(json.loads(text)["error"]["message"])
    return f"{method} {url}: {text.strip() or '(no message)'}"


class MediaReader:
    """Reads objects' media through one pool of connections (thread-safe).

    Args:
        base_url: The API endpoint (``https://storage.googleapis.com``, an emulator's URL).
        credentials: ``google.auth`` credentials (refreshed on a 401 and when expired).
        user_agent: The ``User-Agent`` header.
        retry: A ``google.api_core.retry.Retry``; the library's ``DEFAULT_RETRY`` if None.
    """

    def __init__(
        self, base_url: str, credentials: Any, *, user_agent: str = "", retry: Any = None
    ) -> None:
        import google.auth.transport.urllib3
        import urllib3
        from google.cloud.storage.retry import DEFAULT_RETRY

        self.base_url = base_url.rstrip("/")
        options: dict[str, Any] = {
            "maxsize": POOL_SIZE,
            "timeout": urllib3.Timeout(connect=TIMEOUT_SECONDS, read=TIMEOUT_SECONDS),
            "retries": False,  # the retry policy below, as the library's
        }
        if urlsplit(self.base_url).scheme == "https":
            options["ca_certs"] = _ca_bundle()
        self._http = google.auth.transport.urllib3.AuthorizedHttp(
            credentials, http=urllib3.PoolManager(**options)
        )
        self._headers = {"accept-encoding": "gzip", "user-agent": user_agent or "simpletasks"}
        self._retry = DEFAULT_RETRY if retry is None else retry

    @classmethod
    def for_client(cls, client: Any) -> MediaReader | None:
        """A reader with ``client``'s endpoint and credentials, or None if it cannot be one
        (mutual TLS, an HTTP session of the caller's, a proxy for the endpoint)."""
        import google.auth.transport.requests

        try:
            base_url = str(client._connection.API_BASE_URL)
            credentials = client._credentials
            session = client._http
            user_agent = str(client._connection.user_agent or "")
        except AttributeError:
            return None
        if type(session) is not google.auth.transport.requests.AuthorizedSession:
            why = "its HTTP session is not the library's"
        elif getattr(session, "is_mtls", False):
            why = "it uses mutual TLS"
        elif _proxied(base_url):
            why = "a proxy setting covers its endpoint"
        else:
            return cls(base_url, credentials, user_agent=user_agent)
        logger.debug("GCS downloads through the library for %s: %s", base_url, why)
        return None

    def media_url(self, bucket: str, name: str) -> str:
        """The URL of the media of object ``name`` in ``bucket``."""
        return (
            f"{self.base_url}/download/storage/v1/b/{quote(bucket, safe='')}"
            f"/o/{quote(name, safe='')}?alt=media"
        )

    def read(self, bucket: str, name: str, sink: Sink) -> Served:
        """Write the media of ``name`` into ``sink``; return what the answer said of it.

        Raises:
            google.api_core.exceptions.GoogleAPICallError: The error answer (``NotFound``
                for a missing object), after the retries for transient ones.
            urllib3.exceptions.HTTPError: A connection that kept failing.
            ResumeError: A read cut off midway could not go on (a server that ignored the
                ``Range``, a ``sink`` that cannot start over).
        """
        url = self.media_url(bucket, name)
        served: list[Served] = []  # the first answer's, kept for a resumed read
        self._retry(lambda: self._attempt(url, sink, served))()
        return served[0]

    def _attempt(self, url: str, sink: Sink, served: list[Served]) -> None:
        """One GET: all of it, or the rest of what an earlier attempt began (pinned to the
        generation it read; if that one is gone, the new one from the start)."""
        resume = served[0] if served and sink.size else None
        if resume is None or resume.generation is None:  # from the start, what is there now
            if sink.size:
                _start_over(sink, url)
            served.clear()
            self._get(url, self._headers, sink, served)
            return
        pinned = f"{url}&generation={resume.generation}"
        headers = {**self._headers, "range": f"bytes={sink.size}-"}
        if not self._get(pinned, headers, sink, served, resuming=True):
            _start_over(sink, url)  # that generation was replaced or deleted
            served.clear()
            self._get(url, self._headers, sink, served)

    def _get(
        self,
        url: str,
        headers: dict[str, str],
        sink: Sink,
        served: list[Served],
        *,
        resuming: bool = False,
    ) -> bool:
        """GET ``url`` into ``sink``; False for a 404 when ``resuming`` (the generation is
        gone), else raise the error answer's exception."""
        from google.api_core import exceptions as gexc

        response = self._http.urlopen(
            "GET", url, headers=headers, preload_content=False, decode_content=False
        )
        try:
            if response.status >= 400:
                body = response.read(decode_content=False)
                if resuming and response.status == 404:
                    return False
                raise gexc.from_http_status(
                    response.status, _error_message("GET", url, body), response=response
                )
            if not resuming:
                generation = response.headers.get("x-goog-generation")
                served.append(
                    Served(int(generation) if generation else None, crc32c_of(response.headers))
                )
            elif response.status != 206:  # the whole object again: the Range was ignored
                _start_over(sink, url)
            for chunk in response.stream(READ_CHUNK, decode_content=False):
                sink.write(chunk)
        finally:
            response.release_conn()
        return True


class ResumeError(Exception):
    """A read cut off midway cannot start over: its sink cannot rewind."""


def _start_over(sink: Sink, url: str) -> None:
    if not sink.rewind():
        raise ResumeError(f"GET {url} was cut off and cannot start over in this stream")


def _proxied(url: str) -> bool:
    """Would ``requests`` send a request for ``url`` through a proxy (environment settings,
    ``NO_PROXY`` included)?"""
    import requests.utils

    return requests.utils.select_proxy(url, requests.utils.get_environ_proxies(url)) is not None


def _ca_bundle() -> str:
    """The CA bundle ``requests`` would use."""
    found = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if found:
        return found
    import certifi

    return str(certifi.where())
