"""The explicit task registry."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from simpletasks.errors import MessageError, RegistrationError, TaskNotRegistered
from simpletasks.registry import TaskRegistry
from simpletasks.task import DaemonTask, Result


@dataclass
class Pay:
    n: int


class Good(DaemonTask):
    name = "GOOD"
    payload_type = Pay

    def execute(self, datasource: object) -> Result:
        return Result(success=True)


def body(name: str = "GOOD", payload: object = None) -> str:
    return json.dumps(
        {
            "basic_info": {"id": 7, "name": name, "base_directory": "b", "inputs": ["i"]},
            "payload_info": payload or {"n": 2},
        }
    )


def test_register_and_parse() -> None:
    registry = TaskRegistry()
    assert registry.register(Good) is Good
    task = registry.parse(body())
    assert isinstance(task, Good)
    assert task.payload == Pay(2)
    assert task.id == 7
    assert task.input_keys == ["b/i"]
    assert "GOOD" in registry and registry.names() == ["GOOD"]


def test_duplicate_names_are_rejected() -> None:
    registry = TaskRegistry()
    registry.register(Good)

    class Other(Good):
        pass

    with pytest.raises(RegistrationError, match="already registered"):
        registry.register(Other)


def test_incomplete_classes_are_rejected() -> None:
    registry = TaskRegistry()

    class NoExecute(DaemonTask):
        name = "NOEXEC"

    class NoName(DaemonTask):
        def execute(self, datasource: object) -> Result:
            return Result(True)

    class BadPayload(Good):
        name = "BAD"
        payload_type = "not a class"  # type: ignore[assignment]

    with pytest.raises(RegistrationError, match="does not implement: execute"):
        registry.register(NoExecute)
    with pytest.raises(RegistrationError, match="needs a non-empty string `name`"):
        registry.register(NoName)
    with pytest.raises(RegistrationError, match="payload_type must be a class"):
        registry.register(BadPayload)
    with pytest.raises(RegistrationError, match="not a DaemonTask subclass"):
        registry.register(dict)  # type: ignore[arg-type]


def test_unknown_task_name_lists_the_known_ones() -> None:
    registry = TaskRegistry()
    registry.register(Good)
    with pytest.raises(TaskNotRegistered, match="no task type named 'NOPE'; registered: GOOD"):
        registry.parse(body("NOPE"))


def test_bad_payload_is_a_message_error() -> None:
    registry = TaskRegistry()
    registry.register(Good)
    with pytest.raises(MessageError, match=r"payload_info\.n must be an integer"):
        registry.parse(body(payload={"n": "x"}))
