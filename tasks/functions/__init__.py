"""The CALL_FUNCTION task type: run an allow-listed ``module:function(parameter)``."""

from simpletasks.tasks.functions.task import FunctionTask, allowed_by, function_task

__all__ = ["FunctionTask", "allowed_by", "function_task"]
