"""The task message: its schema, strict validation and JSON form.

The format is SimpleTasks.jl's, so Julia schedulers and Python daemons interoperate::

    {"basic_info": {"id": 4, "name": "NO_OP", "base_directory": "datasets/noop_dataset",
                    "inputs": ["0_input/4.dat", "0_input/5.dat"]},
     "payload_info": "NoOp Task for 4:5"}

This is the only module that encodes or decodes task messages.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from simpletasks.errors import InvalidKey, MessageError
from simpletasks.keys import join_key, validate_key

_INFO_KEYS = {"id", "name", "base_directory", "inputs"}
_REQUIRED_INFO_KEYS = {"id", "name"}
_DECODER = json.JSONDecoder()  # json.loads's own settings


@dataclass(frozen=True, init=False)
class BasicInfo:
    """The part of a message every task type shares.

    Attributes:
        id: Numeric identifier of this task (unique within a job, by convention).
        name: Task type name; the registry maps it to a :class:`~simpletasks.task.DaemonTask`.
        base_directory: Key prefix the inputs are relative to ("" for the bucket root).
        inputs: Input keys relative to ``base_directory``.
    """

    id: int
    name: str
    base_directory: str
    inputs: tuple[str, ...] = ()

    def __init__(
        self, id: int, name: str, base_directory: str, inputs: tuple[str, ...] = ()
    ) -> None:
        # Frozen fields go straight into the instance dict: what the generated __init__ does
        # through object.__setattr__, at half the cost (the daemon builds one per task).
        fields = self.__dict__
        fields["id"] = id
        fields["name"] = name
        fields["base_directory"] = base_directory
        fields["inputs"] = inputs

    def input_keys(self) -> list[str]:
        """Return the full keys ``<base_directory>/<input>`` of the inputs, in order."""
        return [join_key(self.base_directory, i) for i in self.inputs]

    def key(self, relative: str) -> str:
        """Return the full key of ``relative`` inside this task's base directory."""
        return join_key(self.base_directory, relative)


@dataclass(frozen=True, init=False)
class TaskMessage:
    """A parsed, validated task message.

    Attributes:
        basic_info: The shared fields.
        payload_info: Any JSON value; a task type may declare a typed payload parsed from it.
        job_id: The job this task belongs to (optional top-level ``"job_id"`` string; the job
            API uses it to attribute tasks and reports). Daemons carry it into every report
            and into the follow-up tasks a task returns.
    """

    basic_info: BasicInfo
    payload_info: Any = field(default=None)
    job_id: str | None = None

    def __init__(
        self, basic_info: BasicInfo, payload_info: Any = None, job_id: str | None = None
    ) -> None:
        fields = self.__dict__  # as BasicInfo.__init__
        fields["basic_info"] = basic_info
        fields["payload_info"] = payload_info
        fields["job_id"] = job_id

    def to_dict(self) -> dict[str, Any]:
        """Return the message as plain JSON-able data."""
        info = self.basic_info
        data: dict[str, Any] = {
            "basic_info": {
                "id": info.id,
                "name": info.name,
                "base_directory": info.base_directory,
                "inputs": list(info.inputs),
            },
            "payload_info": self.payload_info,
        }
        if self.job_id is not None:
            data["job_id"] = self.job_id
        return data

    def to_json(self) -> str:
        """Return the message body to send to a queue."""
        return json.dumps(self.to_dict(), ensure_ascii=False, allow_nan=False)

    @classmethod
    def from_json(cls, body: str | bytes) -> TaskMessage:
        """Parse and validate a message body.

        Raises:
            MessageError: If the body is not UTF-8 JSON or does not match the schema; the
                message names the field and what was expected.
        """
        if isinstance(body, str):
            fast = _from_wire(body)
            if fast is not None:
                return fast
        return cls.from_dict(decode_body(body))

    @classmethod
    def from_dict(cls, data: Any) -> TaskMessage:
        """Validate already-decoded JSON data.

        Unknown top-level fields are ignored, as SimpleTasks.jl ignores them, so producers
        may add their own bookkeeping; unknown fields inside ``basic_info`` are errors.

        Raises:
            MessageError: If ``data`` does not match the schema.
        """
        if not isinstance(data, dict):
            raise MessageError(f"message must be a JSON object, got {_json_type(data)}")
        if "basic_info" not in data:
            raise MessageError("message is missing required field(s): basic_info")
        job_id = data.get("job_id")
        if job_id is not None and (not isinstance(job_id, str) or not job_id.strip()):
            raise MessageError(f"job_id must be a non-empty string, got {_json_type(job_id)}")
        info = data["basic_info"]
        if not isinstance(info, dict):
            raise MessageError(f"basic_info must be an object, got {_json_type(info)}")
        _check_keys(info, _INFO_KEYS, required=_REQUIRED_INFO_KEYS, where="basic_info")

        task_id = info["id"]
        if isinstance(task_id, bool) or not isinstance(task_id, int):
            raise MessageError(f"basic_info.id must be an integer, got {_json_type(task_id)}")
        name = info["name"]
        if not isinstance(name, str) or not name.strip():
            raise MessageError(f"basic_info.name must be a non-empty string, got {name!r}")

        base = info.get("base_directory", "")
        if not isinstance(base, str):
            raise MessageError(
                f"basic_info.base_directory must be a string, got {_json_type(base)}"
            )
        if base.rstrip("/"):
            _check_key(base.rstrip("/"), "basic_info.base_directory")

        inputs = info.get("inputs", [])
        if not isinstance(inputs, list):
            raise MessageError(
                f"basic_info.inputs must be a list of strings, got {_json_type(inputs)}"
            )
        for i, item in enumerate(inputs):
            if not isinstance(item, str):
                raise MessageError(
                    f"basic_info.inputs[{i}] must be a string, got {_json_type(item)}"
                )
            _check_key(item, f"basic_info.inputs[{i}]")

        basic = BasicInfo(id=task_id, name=name, base_directory=base, inputs=tuple(inputs))
        return cls(basic_info=basic, payload_info=data.get("payload_info"), job_id=job_id)


def _from_wire(body: str) -> TaskMessage | None:
    """The usual valid body, decoded and type-checked by msgspec; ``None`` for anything else.

    ``None`` means "not sure": :meth:`TaskMessage.from_dict` over ``json.loads`` then decides
    and words the error, so this path changes no result, only the time (a no-op task's
    message: 5.7 -> 3.1 µs on a slow host).
    """
    global _WIRE
    if _WIRE is None:
        from simpletasks._message_wire import DECODER

        _WIRE = DECODER
    try:
        wire = _WIRE.decode(body)
    except Exception:  # malformed, mistyped, too deep...: the full path says what is wrong
        return None
    info, job_id = wire.basic_info, wire.job_id
    name, base, inputs = info.name, info.base_directory, info.inputs
    if not name.strip() or (job_id is not None and not job_id.strip()):
        return None
    try:
        if base.rstrip("/"):
            validate_key(base.rstrip("/"))
        for item in inputs:
            validate_key(item)
    except InvalidKey:
        return None
    basic = BasicInfo(id=info.id, name=name, base_directory=base, inputs=tuple(inputs))
    return TaskMessage(basic_info=basic, payload_info=wire.payload_info, job_id=job_id)


_WIRE: Any = None  # the msgspec decoder, imported on the first parse


def peek_basic_info(body: str | bytes) -> tuple[Any, Any] | None:
    """The ``basic_info`` name and id of ``body`` as they are, unvalidated; cheap, never raises.

    For observers that only label a message (metrics, logs) before or without parsing it:
    msgspec decodes these two fields and skips the rest (~0.3 µs against ~3 µs for
    ``json.loads``); what it refuses goes through :func:`decode_body`, so the answer is
    ``json.loads``'s. A missing field is ``None``.

    Returns:
        ``(name, id)``, or ``None`` if ``body`` is not a JSON object with a ``basic_info``
        object.
    """
    global _PEEK
    if _PEEK is None:
        from simpletasks._message_wire import PEEK

        _PEEK = PEEK
    try:
        peeked = _PEEK.decode(body).basic_info
    except Exception:  # what msgspec refuses: the slow way decides (NaN, lone surrogates...)
        try:
            info = decode_body(body)["basic_info"]
        except (MessageError, KeyError, TypeError):
            return None
        return (info.get("name"), info.get("id")) if isinstance(info, dict) else None
    return peeked.name, peeked.id


_PEEK: Any = None  # its msgspec decoder, imported on the first peek


def decode_body(body: str | bytes) -> Any:
    """Decode a message body as JSON, raising :class:`MessageError` with the reason."""
    if isinstance(body, bytes):
        try:
            body = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MessageError(f"message body is not UTF-8: {exc}") from None
    try:  # the usual body is one document and nothing else: parse it without json.loads's
        value, end = _DECODER.raw_decode(body)  # whitespace handling (1.6 -> 0.7 µs)
        if end == len(body):
            return value
    except (ValueError, RecursionError):
        pass  # json.loads below says why, as it always did
    try:
        return json.loads(body)
    except RecursionError:
        raise MessageError("message body is not JSON: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, or an integer too long to convert to int
        raise MessageError(f"message body is not JSON: {exc}") from None


def _check_keys(data: dict[str, Any], allowed: set[str], *, required: set[str], where: str) -> None:
    keys = data.keys()
    if keys >= required and keys <= allowed:  # the usual case, without building messages
        return
    missing = sorted(required - data.keys())
    if missing:
        raise MessageError(f"{where} is missing required field(s): {', '.join(missing)}")
    unknown = sorted(str(k) for k in data.keys() - allowed)
    if unknown:
        raise MessageError(
            f"{where} has unknown field(s): {', '.join(unknown)}; "
            f"expected only {', '.join(sorted(allowed))}"
        )


def _check_key(key: str, what: str) -> None:
    try:
        validate_key(key, what=what)
    except InvalidKey as exc:
        raise MessageError(str(exc)) from None


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    if type(value) in names:
        return names[type(value)]
    return "number" if isinstance(value, int | float) else type(value).__name__
