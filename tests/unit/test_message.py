"""Task message parsing: the SimpleTasks.jl format, strict validation, specific errors."""

from __future__ import annotations

import dataclasses
import json

import pytest

from simpletasks.errors import MessageError
from simpletasks.message import BasicInfo, TaskMessage
from simpletasks.queues import Message

JULIA_EXAMPLE = """{
  "basic_info": {"id": 4, "name": "NO_OP", "base_directory": "datasets\\/noop_dataset",
                 "inputs": ["0_input\\/4.dat", "0_input\\/5.dat"]},
  "payload_info": "NoOp Task for 4:5"
}"""


def good(**info: object) -> dict:
    base = {"id": 1, "name": "NO_OP", "base_directory": "d", "inputs": ["a.dat"]}
    base.update(info)
    return {"basic_info": base, "payload_info": None}


def test_parses_the_julia_example() -> None:
    msg = TaskMessage.from_json(JULIA_EXAMPLE)
    assert msg.basic_info == BasicInfo(
        4, "NO_OP", "datasets/noop_dataset", ("0_input/4.dat", "0_input/5.dat")
    )
    assert msg.payload_info == "NoOp Task for 4:5"
    assert msg.basic_info.input_keys() == [
        "datasets/noop_dataset/0_input/4.dat",
        "datasets/noop_dataset/0_input/5.dat",
    ]


def test_round_trip_through_json() -> None:
    msg = TaskMessage.from_json(JULIA_EXAMPLE)
    assert TaskMessage.from_json(msg.to_json()) == msg
    assert json.loads(msg.to_json()) == json.loads(JULIA_EXAMPLE)


def test_empty_inputs_and_missing_optional_fields_are_allowed() -> None:
    msg = TaskMessage.from_dict({"basic_info": {"id": 0, "name": "X"}})
    assert msg.basic_info.inputs == ()
    assert msg.basic_info.base_directory == ""
    assert msg.payload_info is None
    assert TaskMessage.from_dict(good(inputs=[])).basic_info.input_keys() == []


def test_trailing_slash_on_base_directory_is_tolerated() -> None:
    msg = TaskMessage.from_dict(good(base_directory="data/set/"))
    assert msg.basic_info.input_keys() == ["data/set/a.dat"]


def test_payload_may_be_any_json() -> None:
    for payload in (1, [1, "x"], {"a": {"b": None}}, "text", None, 2.5, True):
        body = json.dumps({"basic_info": good()["basic_info"], "payload_info": payload})
        assert TaskMessage.from_json(body).payload_info == payload


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("not json", "not JSON"),
        (b"\xff\xfe", "not UTF-8"),
        ("[1, 2]", "must be a JSON object, got array"),
        ("{}", "missing required field(s): basic_info"),
        ('{"basic_info": 3}', "basic_info must be an object, got number"),
        ('{"basic_info": {"name": "X"}}', "missing required field(s): id"),
        ('{"basic_info": {"id": 1}}', "missing required field(s): name"),
        (json.dumps(good(id="4")), "basic_info.id must be an integer, got string"),
        (json.dumps(good(id=True)), "basic_info.id must be an integer, got boolean"),
        (json.dumps(good(id=1.5)), "basic_info.id must be an integer, got number"),
        (json.dumps(good(name="")), "basic_info.name must be a non-empty string"),
        (json.dumps(good(name=7)), "basic_info.name must be a non-empty string"),
        (json.dumps(good(base_directory=3)), "basic_info.base_directory must be a string"),
        (json.dumps(good(inputs="a.dat")), "basic_info.inputs must be a list of strings"),
        (json.dumps(good(inputs=["a", 2])), "basic_info.inputs[1] must be a string, got number"),
        (json.dumps({**good(), "job_id": 7}), "job_id must be a non-empty string, got number"),
        (json.dumps({**good(), "job_id": " "}), "job_id must be a non-empty string"),
        (json.dumps(good(colour="red")), "basic_info has unknown field(s): colour"),
        ("[" * 100000, "not JSON"),
    ],
)
def test_malformed_messages_say_what_is_wrong(body: str | bytes, expected: str) -> None:
    with pytest.raises(MessageError) as info:
        TaskMessage.from_json(body)
    assert expected in str(info.value)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("inputs", ["../secret"]),
        ("inputs", ["a/../../b"]),
        ("inputs", ["/etc/passwd"]),
        ("inputs", ["a\\b"]),
        ("inputs", ["a\x00b"]),
        ("inputs", [""]),
        ("inputs", ["a//b"]),
        ("base_directory", "../up"),
        ("base_directory", "/abs"),
        ("base_directory", "a\\b"),
    ],
)
def test_keys_that_leave_their_base_directory_are_rejected(field: str, value: object) -> None:
    with pytest.raises(MessageError) as info:
        TaskMessage.from_dict(good(**{field: value}))
    assert f"basic_info.{field}" in str(info.value)


def test_unknown_top_level_fields_are_ignored_and_job_id_round_trips() -> None:
    """SimpleTasks.jl ignores unknown top-level keys; so do we. ``job_id`` is kept."""
    message = TaskMessage.from_json(json.dumps({**good(), "extra": 1, "job_id": "j-1"}))
    assert message.job_id == "j-1"
    assert "extra" not in message.to_dict()
    assert TaskMessage.from_json(message.to_json()) == message
    assert "job_id" not in TaskMessage.from_json(json.dumps(good())).to_dict()


def test_hand_written_constructors_keep_the_frozen_dataclass_contract() -> None:
    # Message, BasicInfo and TaskMessage write their fields straight into the instance dict
    # (faster than the generated __init__); everything else must stay the dataclass's.
    info = BasicInfo(3, "NO_OP", "a", ("x.dat",))
    message = TaskMessage(info, {"k": 1}, "job-1")
    received = Message("m-1", message.to_json(), 2, handle=object(), sent_at=1.5)
    for value in (info, message, received):
        with pytest.raises(dataclasses.FrozenInstanceError):
            value.id = 9  # type: ignore[misc]
    assert info == BasicInfo(id=3, name="NO_OP", base_directory="a", inputs=("x.dat",))
    assert hash(info) == hash(BasicInfo(3, "NO_OP", "a", ("x.dat",)))
    assert BasicInfo(1, "X", "").inputs == ()
    assert TaskMessage(info) == TaskMessage(basic_info=info, payload_info=None, job_id=None)
    assert dataclasses.replace(message, job_id="job-2").job_id == "job-2"
    assert dataclasses.asdict(info) == {
        "id": 3,
        "name": "NO_OP",
        "base_directory": "a",
        "inputs": ("x.dat",),
    }
    assert received == Message("m-1", message.to_json(), 2)  # handle and sent_at not compared
    assert (received.attempt, received.sent_at) == (2, 1.5)
    assert Message("m", "b") == Message(id="m", body="b", attempt=1, handle=None, sent_at=None)
    assert "handle" not in repr(received)
