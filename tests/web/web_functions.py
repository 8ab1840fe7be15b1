"""Functions the CALL_FUNCTION tests run on a worker."""

from __future__ import annotations

from pathlib import Path


def count_words(parameter: dict, paths: list[str] | None = None) -> dict:
    """Count the words of ``parameter["text"]`` and of every input file."""
    text = parameter.get("text", "")
    for path in paths or []:
        text += " " + Path(path).read_text()
    return {"words": len(text.split())}


def unencodable(parameter: object) -> object:
    return {1, 2}


def explode(parameter: object) -> object:
    raise ValueError(f"cannot handle {parameter!r}")


def _private(parameter: object) -> object:
    return "never"
