"""HASTE tiering worker: score each image's focus and file it into a storage tier.

The public names below are imported lazily (numpy, SQLAlchemy and Pillow load only when one
is used). See ``docs/tiering.md`` for the whole picture.

- :func:`power_log_log_slope`: CellProfiler's PLLS focus measure (``plls.py``).
- :class:`HasteTierTask`: the HASTE_TIER task type (``task.py``); :func:`make_tier_job`.
- :class:`TierConfig`, :func:`load_config`: the YAML/TOML configuration (``config.py``).
- :class:`TierPolicy`: score intervals to tiers (``policy.py``).
- :class:`LogisticScore`: the interestingness score (``score.py``).
- :class:`DefaultFeatures`, :class:`FeatureExtractor`: pluggable features (``features.py``).
- :class:`FeaturesDB`: the features database (``db.py``).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "power_log_log_slope": "plls",
    "HasteTierTask": "task",
    "make_tier_job": "task",
    "TierConfig": "config",
    "Tier": "config",
    "load_config": "config",
    "TierPolicy": "policy",
    "LogisticScore": "score",
    "DefaultFeatures": "features",
    "FeatureExtractor": "features",
    "FeaturesDB": "db",
    "ImageRejected": "images",
    "read_image": "images",
    "to_unit_float": "images",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
