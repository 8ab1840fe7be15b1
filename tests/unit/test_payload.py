"""Typed payloads parsed strictly from payload_info."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from simpletasks.errors import MessageError
from simpletasks.payload import parse_payload


@dataclass
class Window:
    low: float
    high: float


@dataclass
class Complex:
    complex_id: int
    thresholds: list[int]
    window: Window
    mode: Literal["fast", "exact"] = "fast"
    label: str | None = None
    tags: dict[str, int] = field(default_factory=dict)


def test_parses_nested_dataclasses() -> None:
    got = parse_payload(
        Complex,
        {"complex_id": 3, "thresholds": [1, 2], "window": {"low": 0, "high": 1.5}, "label": None},
    )
    assert got == Complex(3, [1, 2], Window(0.0, 1.5))
    assert isinstance(got.window.low, float)


def test_no_payload_type_passes_data_through() -> None:
    assert parse_payload(None, {"any": [1]}) == {"any": [1]}


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ("text", "payload_info must be an object (Complex)"),
        (
            {"thresholds": [], "window": {"low": 0, "high": 1}},
            "missing required field 'complex_id'",
        ),
        (
            {"complex_id": 1, "thresholds": [], "window": {"low": 0, "high": 1}, "x": 1},
            "unknown field(s) x",
        ),
        (
            {"complex_id": "1", "thresholds": [], "window": {"low": 0, "high": 1}},
            "payload_info.complex_id must be an integer",
        ),
        (
            {"complex_id": 1, "thresholds": [1, "2"], "window": {"low": 0, "high": 1}},
            "payload_info.thresholds[1] must be an integer",
        ),
        (
            {"complex_id": 1, "thresholds": [], "window": {"low": "0", "high": 1}},
            "payload_info.window.low must be a number",
        ),
        (
            {"complex_id": 1, "thresholds": [], "window": {"low": 0, "high": 1}, "mode": "slow"},
            "payload_info.mode must be one of ['fast', 'exact']",
        ),
        (
            {"complex_id": True, "thresholds": [], "window": {"low": 0, "high": 1}},
            "payload_info.complex_id must be an integer",
        ),
    ],
)
def test_wrong_payloads_name_the_field(data: object, expected: str) -> None:
    with pytest.raises(MessageError) as info:
        parse_payload(Complex, data)
    assert expected in str(info.value)
