#!/usr/bin/env python3
"""Write the NO_OP example's inputs to a bucket and schedule its 9 tasks.

A thin wrapper around ``simpletasks schedule --example noop``; the logic lives in
``simpletasks.tasks.noop.make_example_job`` and ``simpletasks.scheduler.schedule``.

Usage: send_example_task.py QUEUE_URL BUCKET_URL
"""

from __future__ import annotations

import sys

from simpletasks.cli import main

if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(["schedule", "--queue", sys.argv[1], "--bucket", sys.argv[2], "--example", "noop"])
