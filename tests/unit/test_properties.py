"""Hypothesis properties of the parts that see untrusted input: message parsing, key
validation and the cache's mapping of keys to files.
"""

from __future__ import annotations

import json
import os
import posixpath
import tempfile
from pathlib import Path

import pytest
from bad_messages import escaping_keys, json_values, wrong_types
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from simpletasks.cache import FileSystemCache
from simpletasks.errors import InvalidKey, MessageError
from simpletasks.keys import join_key, validate_key
from simpletasks.message import TaskMessage

bodies = st.one_of(
    st.text(),  # anything, lone surrogates and NUL included
    st.binary(),
    json_values.map(json.dumps),
    wrong_types().map(json.dumps),
    st.text(st.sampled_from('{}[]",:0123456789.eE+-tfnul\\ '), max_size=40),
)


@given(bodies)
@example(b"\xff\xfe{}")
@example("\ufeff{}")
@example("[" * 5000)
@example('{"basic_info": {"id": 1, "name": "X", "inputs": ["\\ud800"]}}')
@example('{"basic_info": {"id": 1e400, "name": "X"}}')
@example('{"basic_info": {"id": 1, "name": "X"}, "payload_info": NaN}')
def test_from_json_raises_only_message_error(body: str | bytes) -> None:
    try:
        message = TaskMessage.from_json(body)
    except MessageError as exc:
        assert str(exc)
        return
    assert isinstance(message.basic_info.id, int)
    for key in message.basic_info.input_keys():
        validate_key(key)


def test_from_json_raises_message_error_for_an_integer_too_long_to_convert() -> None:
    with pytest.raises(MessageError):
        TaskMessage.from_json("1" * 5000)


ROOT = "/srv/root"
key_text = st.text(st.sampled_from(["a", "b", ".", "/", "\\", "\x00", " ", "\u2215", "é"]))
keys = key_text | escaping_keys() | st.text()


def escapes(key: str) -> bool:
    """Whether ``key``, taken as a path under ROOT, names anything but a strict descendant."""
    resolved = posixpath.normpath(posixpath.join(ROOT, key))
    return not resolved.startswith(ROOT + "/") or resolved != posixpath.join(ROOT, key)


@given(keys)
@example("..")
@example("a/../../b")
@example("a/./b")
@example("a//b")
@example("/abs")
@example("a/")
def test_validate_key_never_accepts_a_key_that_escapes(key: str) -> None:
    try:
        validate_key(key)
    except InvalidKey as exc:
        assert str(exc)
        return
    assert not escapes(key)
    assert "\\" not in key and "\x00" not in key
    with tempfile.TemporaryDirectory() as root:  # and the OS agrees
        full = os.path.realpath(os.path.join(root, key))
        assert full.startswith(os.path.realpath(root) + os.sep)


def test_validate_key_rejects_a_key_that_is_not_valid_unicode() -> None:
    with pytest.raises(InvalidKey, match="lone surrogate"):
        validate_key("a\udfff.dat")


@given(st.lists(keys | st.just(""), min_size=1, max_size=4))
def test_join_key_accepts_only_keys_that_stay_inside(parts: list[str]) -> None:
    try:
        key = join_key(*parts)
    except InvalidKey:
        return
    assert not escapes(key)


@pytest.fixture(scope="module")
def sandbox() -> Path:
    """``root`` (the cache, with a symlink to ``outside``) and ``outside`` (must stay empty)."""
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        (base / "outside").mkdir()
        (base / "root").mkdir()
        (base / "root" / "link").symlink_to(base / "outside")
        (base / "root" / "a").mkdir()
        (base / "root" / "a" / "up").symlink_to(base)
        yield base


def snapshot(base: Path) -> set[str]:
    return {
        str(Path(d, n).relative_to(base))
        for d, dirs, files in os.walk(base)
        for n in dirs + files
        if not str(Path(d, n).relative_to(base)).startswith("root/")
    }


cache_keys = keys | st.lists(
    st.sampled_from(["link", "a", "up", "..", "x", ".tmp", ".locks", ""]), max_size=4
).map("/".join)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=150)
@given(cache_keys)
@example("link/x")
@example("a/up/outside/x")
@example("../outside/x")
@example(".tmp/x")
@example(".locks/evict.lock")
def test_the_cache_never_writes_outside_its_root(sandbox: Path, key: str) -> None:
    before = snapshot(sandbox)
    cache = FileSystemCache(sandbox / "root", max_bytes=1 << 20)
    try:
        path = cache.put_bytes(key, b"data")
    except (InvalidKey, OSError):  # refused, or a name the file system rejects
        pass
    else:
        assert os.path.realpath(path).startswith(str(sandbox / "root") + os.sep)
        assert path.read_bytes() == b"data"
        listed = cache.keys()
        assert key in listed
        cache.remove(key)
    assert snapshot(sandbox) == before
    assert list((sandbox / "outside").iterdir()) == []
