"""The msgspec fast path of ``TaskMessage.from_json`` changes no result, only the time.

Every body gives what the full path (``json.loads`` + ``from_dict``) gives: the same message,
or a ``MessageError`` with the same text. And the fast path really is taken for usual
bodies (otherwise the equivalence would hold trivially).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from bad_messages import escaping_keys, json_values, wrong_types
from hypothesis import example, given
from hypothesis import strategies as st

from simpletasks.errors import MessageError
from simpletasks.message import BasicInfo, TaskMessage, _from_wire, decode_body, peek_basic_info

key_part = st.sampled_from(["a", "0_input", "x.dat", "é", " ", "..a", "\U0001f600"])
good_keys = st.lists(key_part, min_size=1, max_size=3).map("/".join)


@st.composite
def messages(draw: st.DrawFn) -> dict[str, Any]:
    """Valid messages of every shape, with now and then one field wrong or unusual."""
    info: dict[str, Any] = {
        "id": draw(st.integers() | st.integers(-(2**80), 2**80)),
        "name": draw(st.text(min_size=1) | st.sampled_from(["NO_OP", " x ", "", " "])),
    }
    if draw(st.booleans()):
        bases = good_keys | st.sampled_from(["", "/", "a/"]) | escaping_keys()
        info["base_directory"] = draw(bases)
    if draw(st.booleans()):
        info["inputs"] = draw(st.lists(good_keys | escaping_keys(), max_size=3))
    message: dict[str, Any] = {"basic_info": info}
    if draw(st.booleans()):
        message["payload_info"] = draw(json_values)
    if draw(st.booleans()):
        message["job_id"] = draw(st.none() | st.text() | st.sampled_from(["job-1", " ", ""]))
    if draw(st.booleans()):
        message[draw(st.text(max_size=5))] = draw(json_values)  # an unknown top-level field
    return message


# Bodies of every kind: valid messages (also pretty-printed), mistyped ones, any JSON, garbage.
bodies = st.one_of(
    messages().map(json.dumps),
    messages().map(lambda m: json.dumps(m, ensure_ascii=False, indent=1)),
    wrong_types().map(json.dumps),
    json_values.map(json.dumps),
    st.text(st.sampled_from('{}[]",:0123456789.eE+-tfnul\\ '), max_size=40),
)


def full_path(body: str) -> TaskMessage:
    return TaskMessage.from_dict(decode_body(body))


def outcome(parse: Any, body: str) -> str:
    try:
        return "ok " + repr(parse(body))  # repr: NaN payloads compare equal
    except MessageError as exc:
        return "error " + str(exc)


@given(bodies)
@example('{"basic_info": {"id": 1, "name": "X"}, "payload_info": NaN}')
@example('{"basic_info": {"id": 1, "name": "X"}, "payload_info": "\\ud800"}')
@example('{"basic_info": {"id": 1, "name": "X"}, "payload_info": 1e400}')
@example('{"basic_info": {"id": true, "name": "X"}}')
@example('{"basic_info": {"id": 1.0, "name": "X"}}')
@example('{"basic_info": {"id": 1, "id": 2, "name": "X"}}')
@example('{"basic_info": {"id": 1, "name": "X"}, "basic_info": {"id": 2, "name": "Y"}}')
@example('{"basic_info": {"id": 1, "name": "X", "inputs": null}}')
@example('{"basic_info": {"id": 1, "name": "X", "extra": 1}}')
@example('{"basic_info": {"id": 1, "name": "X"}, "job_id": " "}')
@example('{"basic_info": {"id": 1, "name": "X", "base_directory": "a/../b"}}')
@example('{"basic_info": {"id": 1, "name": "X"}} x')
@example('  {"basic_info": {"id": 1, "name": "X"}}\n')
@example('{"basic_info": {"id": 1, "name": "X"}, "payload_info": ' + "[" * 3000 + "]" * 3000 + "}")
def test_from_json_gives_what_the_full_path_gives(body: str) -> None:
    assert outcome(TaskMessage.from_json, body) == outcome(full_path, body)


def test_the_fast_path_is_taken_for_usual_bodies() -> None:
    body = TaskMessage(
        BasicInfo(7, "NO_OP", "datasets/a", ("0_input/1.dat",)), {"k": [1, 2.5]}, "job-3"
    ).to_json()
    fast = _from_wire(body)
    assert fast == full_path(body)
    assert fast is not None and fast.basic_info.inputs == ("0_input/1.dat",)


@pytest.mark.parametrize(
    "body",
    [
        '{"basic_info": {"id": 1, "name": "X"}, "payload_info": NaN}',
        '{"basic_info": {"id": true, "name": "X"}}',
        '{"basic_info": {"id": 1, "name": " "}}',
        '{"basic_info": {"id": 1, "name": "X", "inputs": ["../etc"]}}',
        '{"basic_info": {"id": 1, "name": "X"}, "job_id": ""}',
    ],
)
def test_the_fast_path_leaves_what_it_is_unsure_of_to_the_full_path(body: str) -> None:
    assert _from_wire(body) is None


def peek_the_slow_way(body: str) -> tuple[Any, Any] | None:
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("basic_info"), dict):
        return None
    return data["basic_info"].get("name"), data["basic_info"].get("id")


@given(bodies)
@example('{"basic_info": {"id": 1, "name": "X"}, "payload_info": NaN}')
@example('{"basic_info": {"id": 1, "name": "\\ud800"}}')
@example('{"basic_info": {"name": "X", "name": "Y"}}')
@example('{"basic_info": null}')
def test_peek_basic_info_reads_what_json_loads_reads(body: str) -> None:
    assert repr(peek_basic_info(body)) == repr(peek_the_slow_way(body))
