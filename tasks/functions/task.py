"""CALL_FUNCTION: distribute a Python function without writing a task class (DART's job model).

A message names the function and its parameter::

    {"basic_info": {"id": 3, "name": "CALL_FUNCTION", "base_directory": "jobs/7f3a",
                    "inputs": []},
     "payload_info": {"function": "mypkg.stats:count_words", "parameter": "some text"},
     "job_id": "7f3a"}

The worker imports ``mypkg.stats``, calls ``count_words("some text")`` (with a second
argument, the list of local input paths, when the message has inputs) and stores the return
value as JSON at ``<base_directory>/results/<id>.json``; the result's ``outputs`` name that key
and its ``message`` holds the JSON itself when it is short (``MESSAGE_LIMIT`` characters).

Only allow-listed functions run: ``FunctionTask.allowed`` (or the subclass
:func:`function_task` makes) holds patterns ``module:function`` or ``module:*``. When it is
empty, the worker reads them from ``SIMPLETASKS_ALLOWED_FUNCTIONS`` (comma-separated) when a
task runs; with neither, nothing runs. A function not allowed, not importable or returning
something JSON cannot encode is a permanent failure (no retry); an exception it raises is an
ordinary failure, retried by the daemon.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

from simpletasks.datasource import Datasource
from simpletasks.errors import PermanentFailure
from simpletasks.task import DaemonTask, Result

logger = logging.getLogger(__name__)

NAME = "CALL_FUNCTION"
ENV_ALLOWED = "SIMPLETASKS_ALLOWED_FUNCTIONS"
MESSAGE_LIMIT = 2000  # longest JSON return value also put in Result.message


@dataclass(frozen=True)
class FunctionCall:
    """The payload: which function, and its one parameter (any JSON)."""

    function: str
    parameter: Any = None


def allowed_by(path: str, patterns: Iterable[str]) -> bool:
    """Return whether ``module:function`` matches one of ``patterns``.

    A pattern is ``module:function`` (exact) or ``module:*`` (any public function of that
    module). Names starting with ``_`` never match a wildcard.
    """
    module, _, func = path.partition(":")
    for pattern in patterns:
        pattern = pattern.strip()
        p_module, _, p_func = pattern.partition(":")
        if p_module != module or not p_func:
            continue
        if p_func == func or (p_func == "*" and not func.startswith("_")):
            return True
    return False


class FunctionTask(DaemonTask):
    """Runs ``payload_info.function`` on ``payload_info.parameter`` if it is allow-listed."""

    name = NAME
    payload_type = FunctionCall
    #: Allowed ``module:function`` / ``module:*`` patterns (empty: read ``ENV_ALLOWED``).
    allowed: ClassVar[tuple[str, ...]] = ()

    def allow_list(self) -> tuple[str, ...]:
        """Return the patterns in force for this task."""
        if self.allowed:
            return tuple(self.allowed)
        return tuple(p for p in os.environ.get(ENV_ALLOWED, "").split(",") if p.strip())

    def _resolve(self) -> Any:
        path = self.payload.function
        module_name, _, func_name = path.partition(":")
        if not module_name or not func_name or "." in func_name:
            raise PermanentFailure(f"function must be 'module:function', got {path!r}")
        if not allowed_by(path, self.allow_list()):
            raise PermanentFailure(
                f"function {path!r} is not allow-listed on this worker "
                f"(set FunctionTask.allowed or {ENV_ALLOWED})"
            )
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise PermanentFailure(f"cannot import {module_name!r}: {exc}") from None
        func = getattr(module, func_name, None)
        if not callable(func):
            raise PermanentFailure(f"module {module_name!r} has no function {func_name!r}")
        return func

    def prepare(self, datasource: Datasource) -> None:
        """Check the function is allowed and importable; fetch the inputs."""
        self.func = self._resolve()
        self.input_paths = datasource.get(self.input_keys) if self.input_keys else []

    def execute(self, datasource: Datasource) -> Result:
        """Call the function and store its return value as JSON in the cache."""
        args: list[Any] = [self.payload.parameter]
        if self.input_paths:
            args.append([str(p) for p in self.input_paths])
        value = self.func(*args)
        try:
            text = json.dumps(value, ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise PermanentFailure(
                f"{self.payload.function} returned a value JSON cannot encode: {exc}"
            ) from None
        key = self.result_key()
        datasource.put(key, text.encode(), only_cache=True)
        message = text if len(text) <= MESSAGE_LIMIT else ""
        return Result(success=True, outputs=[key], message=message)

    def finalize(self, datasource: Datasource, result: Result) -> None:
        """Upload the stored return value."""
        for key in result.outputs:
            datasource.put(key)

    def result_key(self) -> str:
        """Return where this task's return value is stored."""
        return self.basic_info.key(f"results/{self.id}.json")


def function_task(allowed: Iterable[str], *, name: str = NAME) -> type[FunctionTask]:
    """Return a :class:`FunctionTask` subclass with its own allow-list (and task name)."""
    patterns = tuple(allowed)
    return type("AllowedFunctionTask", (FunctionTask,), {"name": name, "allowed": patterns})
