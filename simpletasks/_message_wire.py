"""The message schema as msgspec types: decodes and type-checks a usual body in one C call.

:meth:`simpletasks.message.TaskMessage.from_json` tries this first and falls back to its own
decoding and validation for anything it does not accept, so every error (and every body only
``json.loads`` reads, such as ``NaN`` or a lone surrogate escape) keeps the message it always
had. Imported on the first parse, not with :mod:`simpletasks.message`.
"""

from __future__ import annotations

from typing import Any

import msgspec


class WireInfo(msgspec.Struct, forbid_unknown_fields=True):
    """``basic_info``: unknown fields are errors here, as in the full validation."""

    id: int  # msgspec refuses booleans and floats for int, as the validation does
    name: str
    base_directory: str = ""
    inputs: list[str] = []


class Wire(msgspec.Struct):
    """The whole message: unknown top-level fields are ignored, as SimpleTasks.jl does."""

    basic_info: WireInfo
    payload_info: Any = None
    job_id: str | None = None


DECODER = msgspec.json.Decoder(Wire)


class PeekInfo(msgspec.Struct):
    """``basic_info``'s name and id as they are, for observers that only label a message."""

    name: Any = None
    id: Any = None


class Peek(msgspec.Struct):
    """A message's ``basic_info`` alone; everything else is skipped unread."""

    basic_info: PeekInfo


PEEK = msgspec.json.Decoder(Peek)
