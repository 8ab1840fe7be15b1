"""Validation and joining of bucket/cache keys.

A key is a relative, ``/``-separated path such as ``datasets/noop/0_input/4.dat``. Keys come
from task messages written by other people, so they are checked before any backend or cache
sees them: a key may never climb out of its base directory or name an absolute path.
"""

from __future__ import annotations

from simpletasks.errors import InvalidKey


def validate_key(key: str, *, what: str = "key") -> str:
    """Return ``key`` if it is a safe relative key, else raise :class:`InvalidKey`.

    Args:
        key: The key to check.
        what: How to name the key in the error message (for example ``"inputs[2]"``).

    Raises:
        InvalidKey: If the key is not a string, is empty, is not valid Unicode, is absolute,
            contains a backslash or NUL, or has an empty, ``.`` or ``..`` component.
    """
    if not isinstance(key, str):
        raise InvalidKey(f"{what} must be a string, got {type(key).__name__}")
    if not key:
        raise InvalidKey(f"{what} must not be empty")
    if not key.isascii():
        try:
            key.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidKey(
                f"{what} {key!r} is not valid Unicode (it has a lone surrogate)"
            ) from None
    if "\x00" in key:
        raise InvalidKey(f"{what} {key!r} contains a NUL character")
    if "\\" in key:
        raise InvalidKey(f"{what} {key!r} contains a backslash; use '/' as separator")
    if key.startswith("/"):
        raise InvalidKey(f"{what} {key!r} is absolute; keys are relative to the bucket")
    for part in key.split("/"):
        if part in ("", ".", ".."):
            raise InvalidKey(
                f"{what} {key!r} has an empty, '.' or '..' component; keys must stay inside "
                "their base directory"
            )
    return key


def join_key(*parts: str) -> str:
    """Join key parts with ``/`` and validate the result.

    Empty parts are skipped and trailing slashes dropped, so ``join_key("a/", "b")`` and
    ``join_key("", "a/b")`` give ``"a/b"``. Leading slashes are kept, so they are rejected.

    Raises:
        InvalidKey: If the joined key is not safe (see :func:`validate_key`).
    """
    return validate_key("/".join(p.rstrip("/") for p in parts if p and p.rstrip("/")))


def is_valid_key(key: str) -> bool:
    """Return whether ``key`` passes :func:`validate_key` (for filtering listings)."""
    try:
        validate_key(key)
    except InvalidKey:
        return False
    return True
