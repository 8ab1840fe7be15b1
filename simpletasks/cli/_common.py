"""What the command modules share: environment variable names and logging set-up."""

from __future__ import annotations

import logging
import sys

DEFAULT_CACHE = "~/.cache/simpletasks"


def env_name(name: str) -> str:
    """Return the environment variable that can set option ``name``."""
    return f"SIMPLETASKS_{name}"


def setup_logging(level: str) -> None:
    """Log to stderr at ``level``; keep the cloud SDKs' chatter at warnings."""
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer", "pika", "google"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.root.level))
