"""Typed payloads: turn a message's ``payload_info`` JSON into a task's dataclass.

A task type sets ``payload_type`` to a dataclass; its fields are filled from the JSON object
with strict checks (unknown or missing fields, wrong types), so a bad payload is reported as
a malformed message before any hook runs. Nested dataclasses, ``list[...]``,
``dict[str, ...]``, ``tuple[..., ...]``, ``Optional``/``X | None``, ``Literal`` and the JSON
scalars are understood; any other annotation is passed through unchecked.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from typing import Any

from simpletasks.errors import MessageError


def parse_payload(payload_type: type | None, data: Any, *, where: str = "payload_info") -> Any:
    """Return ``data`` converted to ``payload_type`` (or unchanged if it is ``None``).

    Raises:
        MessageError: If ``data`` does not fit; the message names the field path.
    """
    if payload_type is None:
        return data
    return _convert(payload_type, data, where)


def _convert(tp: Any, value: Any, where: str) -> Any:
    if tp is Any or tp is object:
        return value
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return _to_dataclass(tp, value, where)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union or origin is types.UnionType:
        errors = []
        for option in args:
            try:
                return _convert(option, value, where)
            except MessageError as exc:
                errors.append(str(exc))
        raise MessageError(f"{where}: no alternative of {_name(tp)} fits: {'; '.join(errors)}")
    if origin is typing.Literal:
        if value not in args:
            raise MessageError(f"{where} must be one of {list(args)!r}, got {value!r}")
        return value
    if origin is list:
        _expect(isinstance(value, list), where, "an array", value)
        item = args[0] if args else Any
        return [_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is tuple:
        _expect(isinstance(value, list), where, "an array", value)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise MessageError(f"{where} must have {len(args)} items, got {len(value)}")
        return tuple(
            _convert(a, v, f"{where}[{i}]")
            for i, (a, v) in enumerate(zip(args, value, strict=True))
        )
    if origin is dict:
        _expect(isinstance(value, dict), where, "an object", value)
        item = args[1] if len(args) == 2 else Any
        return {k: _convert(item, v, f"{where}.{k}") for k, v in value.items()}
    if tp is type(None):
        _expect(value is None, where, "null", value)
        return None
    if tp is bool:
        _expect(isinstance(value, bool), where, "a boolean", value)
        return value
    if tp is int:
        _expect(isinstance(value, int) and not isinstance(value, bool), where, "an integer", value)
        return value
    if tp is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        _expect(ok, where, "a number", value)
        return float(value)
    if tp is str:
        _expect(isinstance(value, str), where, "a string", value)
        return value
    if tp in (list, dict):
        _expect(isinstance(value, tp), where, "an array" if tp is list else "an object", value)
        return value
    return value


@functools.lru_cache(maxsize=512)
def _fields_of(cls: type) -> tuple[dict[str, Any], dict[str, dataclasses.Field[Any]]]:
    """The resolved type hints and the ``__init__`` fields of dataclass ``cls`` (once per
    class: resolving hints is most of the cost of a small payload)."""
    return typing.get_type_hints(cls), {f.name: f for f in dataclasses.fields(cls) if f.init}


def _to_dataclass(cls: type, value: Any, where: str) -> Any:
    _expect(isinstance(value, dict), where, f"an object ({cls.__name__})", value)
    hints, fields = _fields_of(cls)
    unknown = sorted(set(value) - set(fields))
    if unknown:
        raise MessageError(
            f"{where} has unknown field(s) {', '.join(unknown)}; "
            f"{cls.__name__} has {', '.join(fields) or 'no fields'}"
        )
    kwargs = {}
    for name, f in fields.items():
        if name in value:
            kwargs[name] = _convert(hints.get(name, Any), value[name], f"{where}.{name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise MessageError(f"{where} is missing required field {name!r} of {cls.__name__}")
    return cls(**kwargs)


def _expect(ok: bool, where: str, expected: str, value: Any) -> None:
    if not ok:
        raise MessageError(f"{where} must be {expected}, got {type(value).__name__} {value!r:.60}")


def _name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp)
