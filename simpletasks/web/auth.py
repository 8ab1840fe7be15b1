"""API keys: random tokens, stored as their SHA-256, checked in constant time.

A request presents its key as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``.
No key is a 401, a key that matches none is a 403. Keys are 256-bit random tokens, so a plain
SHA-256 digest (no salt, no stretching) cannot be reversed; every stored digest is compared
with :func:`hmac.compare_digest`, so the time taken does not tell how close a guess was.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

from flask import Request
from sqlalchemy import select
from sqlalchemy.orm import Session

from simpletasks.web.db import ApiKey

KEY_PREFIX = "st_"


def new_key() -> str:
    """Return a fresh random API key."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def key_digest(key: str) -> str:
    """Return the stored form of ``key``."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def create_api_key(session: Session, name: str) -> str:
    """Store a new key named ``name`` and return it (the only time it is seen in clear)."""
    key = new_key()
    session.add(ApiKey(name=name, digest=key_digest(key)))
    session.commit()
    return key


def presented_key(request: Request) -> str | None:
    """Return the key a request carries, or ``None``."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    value = request.headers.get("X-API-Key", "").strip()
    return value or None


def find_key(session: Session, key: str) -> ApiKey | None:
    """Return the stored key that ``key`` is, comparing every digest in constant time."""
    digest = key_digest(key)
    found: Any = None
    for row in session.scalars(select(ApiKey)):
        if hmac.compare_digest(row.digest, digest):
            found = row
    return found
