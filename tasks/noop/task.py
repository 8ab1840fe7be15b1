"""The NO_OP task: copy each input to ``<base_directory>/0_output/<basename>``.

It exercises the whole data path: ``prepare`` fetches the inputs into the cache,
``execute`` copies them to output keys in the cache, ``finalize`` uploads the outputs.
"""

from __future__ import annotations

import io
import logging
import posixpath

from simpletasks.buckets import BucketService
from simpletasks.datasource import Datasource
from simpletasks.message import BasicInfo, TaskMessage
from simpletasks.task import DaemonTask, Result

logger = logging.getLogger(__name__)

NAME = "NO_OP"
OUTPUT_FOLDER = "0_output"


class NoOpTask(DaemonTask):
    """Copies its inputs to ``<base_directory>/0_output/<basename of input>``."""

    name = NAME

    def prepare(self, datasource: Datasource) -> None:
        """Fetch every input into the cache."""
        self.input_paths = datasource.get(self.input_keys) if self.input_keys else []

    def execute(self, datasource: Datasource) -> Result:
        """Copy each cached input to its output key, in the cache only."""
        outputs = []
        for key, path in zip(self.input_keys, self.input_paths, strict=True):
            out = self.basic_info.key(f"{OUTPUT_FOLDER}/{posixpath.basename(key)}")
            datasource.put(out, path, only_cache=True)
            outputs.append(out)
        return Result(success=True, outputs=outputs, message=str(self.payload or ""))

    def finalize(self, datasource: Datasource, result: Result) -> None:
        """Upload the outputs from the cache to the bucket."""
        for key in result.outputs:
            datasource.put(key)


def make_example_job(
    bucket: BucketService,
    *,
    base_directory: str = "datasets/noop_dataset",
    n_files: int = 10,
) -> list[TaskMessage]:
    """Write ``n_files`` input files to ``bucket`` and return one NO_OP task per pair.

    The port of SimpleTasks.jl's ``awsscheduler``: inputs ``0_input/1.dat`` ...
    ``0_input/{n}.dat``; task ``i`` reads ``i.dat`` and ``{i+1}.dat``.
    """
    for i in range(1, n_files + 1):
        key = f"{base_directory}/0_input/{i}.dat"
        bucket.upload_fileobj(io.BytesIO(f"input file {i}\n".encode()), key)
    return [
        TaskMessage(
            basic_info=BasicInfo(
                id=i,
                name=NAME,
                base_directory=base_directory,
                inputs=(f"0_input/{i}.dat", f"0_input/{i + 1}.dat"),
            ),
            payload_info=f"NoOp Task for {i}:{i + 1}",
        )
        for i in range(1, n_files)
    ]
