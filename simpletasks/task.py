"""Task types: the base class users subclass, and the result of an execution.

A task type is a subclass of :class:`DaemonTask` with a unique ``name`` and three hooks that
the daemon calls in order with a datasource: ``prepare`` (fetch inputs), ``execute`` (compute;
returns a :class:`Result`) and ``finalize`` (publish outputs). Delivery is at least once, so
hooks must be safe to repeat: write outputs whole, to deterministic keys.

``self.context`` (a :class:`~simpletasks.context.TaskContext`) tells a task its attempt
number and job, gives it the worker's resources, and lets a long task poll for cancellation.
A task hands work to the next stage of a pipeline by returning follow-up task messages in
:attr:`Result.followups`; the daemon sends them before it acks the task's own message.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from simpletasks.context import ResourceFactory, TaskContext
from simpletasks.message import BasicInfo, TaskMessage
from simpletasks.payload import parse_payload

if TYPE_CHECKING:
    from simpletasks.datasource import Datasource


@dataclass(frozen=True)
class Result:
    """What ``execute`` returns.

    Attributes:
        success: Whether the task did its job. ``False`` counts as a failure of the execute
            phase: the daemon reports it and lets the queue retry; ``finalize`` is skipped.
        outputs: Keys the task produced (reported in the done report).
        message: A short human-readable note (the reason, on failure).
        followups: Task messages for the next stage (:class:`TaskMessage` objects or their
            dict form). The daemon checks them, gives them this task's ``job_id`` unless they
            name their own, and sends them to its follow-up queue before it acks this task:
            a crash may send a follow-up twice but never loses one.
    """

    success: bool
    outputs: list[str] = field(default_factory=list)
    message: str = ""
    followups: list[TaskMessage | Mapping[str, Any]] = field(default_factory=list)


class DaemonTask(ABC):
    """Base class of every task type.

    Subclasses set ``name`` (the ``basic_info.name`` their messages carry) and implement
    :meth:`execute`; :meth:`prepare` and :meth:`finalize` default to doing nothing. Set
    ``payload_type`` to a dataclass to receive ``payload_info`` parsed and checked into it.

    Example::

        @dataclass
        class Blur:
            sigma: float

        class BlurTask(DaemonTask):
            name = "BLUR"
            payload_type = Blur

            def prepare(self, ds):
                self.paths = ds.get(self.input_keys)

            def execute(self, ds):
                ...
                return Result(success=True, outputs=[out_key])
    """

    name: ClassVar[str]
    payload_type: ClassVar[type | None] = None

    def __init__(self, message: TaskMessage, context: TaskContext | None = None) -> None:
        self.message = message
        self.basic_info: BasicInfo = message.basic_info
        self.payload: Any = parse_payload(self.payload_type, message.payload_info)
        self.context = context or TaskContext(job_id=message.job_id)

    @classmethod
    def resources(cls) -> Mapping[str, ResourceFactory]:
        """Per-worker resources this task type needs by default (name → factory).

        A daemon running this type provides them to ``self.context.resources``; resources
        passed to the daemon under the same name take precedence (for example to point a
        database session at another URL). Default: none.
        """
        return {}

    @property
    def id(self) -> int:
        """The task's ``basic_info.id``."""
        return self.basic_info.id

    @property
    def input_keys(self) -> list[str]:
        """Full bucket keys of the inputs: ``<base_directory>/<input>``."""
        return self.basic_info.input_keys()

    def prepare(self, datasource: Datasource) -> None:  # noqa: B027 - optional hook
        """Fetch what ``execute`` needs (default: nothing)."""

    @abstractmethod
    def execute(self, datasource: Datasource) -> Result:
        """Do the work and return a :class:`Result`."""

    def finalize(self, datasource: Datasource, result: Result) -> None:  # noqa: B027
        """Publish the outputs after a successful ``execute`` (default: nothing)."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} id={self.id}>"
