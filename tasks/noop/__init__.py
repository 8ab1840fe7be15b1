"""NO_OP: the example task type, ported from SimpleTasks.jl (see README.md here)."""

from simpletasks.tasks.noop.task import NAME, NoOpTask, make_example_job

__all__ = ["NAME", "NoOpTask", "make_example_job"]
