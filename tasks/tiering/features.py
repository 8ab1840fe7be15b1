"""Feature extraction: pluggable, with PLLS and a few cheap statistics by default.

A feature extractor is any object with a ``names`` tuple and an ``extract(image)`` method
that takes the image as float64 in [0, 1] (see
:func:`~simpletasks.tasks.tiering.images.to_unit_float`) and returns ``{name: float}``.
Name one in the configuration as ``module:Name`` (a class, instantiated with no arguments,
or a ready object); :func:`load_extractor` resolves it.
"""

from __future__ import annotations

import importlib
import math
from typing import Any, Protocol, runtime_checkable

import numpy as np

from simpletasks.errors import ConfigError
from simpletasks.tasks.tiering.plls import power_log_log_slope


@runtime_checkable
class FeatureExtractor(Protocol):
    """Computes named float features of one image."""

    names: tuple[str, ...]

    def extract(self, image: np.ndarray) -> dict[str, float]:
        """Return ``{name: value}`` for the 2-D float image ``image`` (values in [0, 1])."""
        ...


class DefaultFeatures:
    """``plls`` (CellProfiler's PowerLogLogSlope), ``mean``, ``std`` and ``saturated``.

    ``saturated`` is the fraction of pixels at the top of the dtype's range (scaled value
    >= 1.0), i.e. clipped by the camera.
    """

    def __init__(self) -> None:
        self.names: tuple[str, ...] = ("plls", "mean", "std", "saturated")

    def extract(self, image: np.ndarray) -> dict[str, float]:
        """Return the four features of ``image``."""
        return {
            "plls": power_log_log_slope(image),
            "mean": float(image.mean()),
            "std": float(image.std()),
            "saturated": float(np.count_nonzero(image >= 1.0)) / image.size,
        }


def load_object(spec: str, what: str) -> Any:
    """Import ``module:attribute`` and return the attribute.

    Raises:
        ConfigError: If ``spec`` is malformed, the module cannot be imported or has no such
            attribute.
    """
    module_name, sep, attr = spec.partition(":") if isinstance(spec, str) else ("", "", "")
    if not sep or not module_name or not attr:
        raise ConfigError(f"{what} must be 'module:name', got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"{what} {spec!r}: cannot import {module_name!r}: {exc}") from exc
    try:
        obj = module
        for part in attr.split("."):
            obj = getattr(obj, part)
    except AttributeError:
        raise ConfigError(f"{what} {spec!r}: module {module_name!r} has no {attr!r}") from None
    return obj


def load_extractor(spec: str | FeatureExtractor | None) -> FeatureExtractor:
    """Return the extractor ``spec`` names: ``None``/``"default"``, ``module:Name`` or one.

    Raises:
        ConfigError: If it cannot be loaded or lacks ``names``/``extract``.
    """
    if spec is None or spec == "default":
        return DefaultFeatures()
    obj = load_object(spec, "features") if isinstance(spec, str) else spec
    if isinstance(obj, type):
        obj = obj()
    if not isinstance(obj, FeatureExtractor):
        raise ConfigError(f"features {spec!r} has no 'names' tuple and 'extract(image)' method")
    return obj


def check_features(values: dict[str, Any], names: tuple[str, ...]) -> dict[str, float]:
    """Check an extractor's output: every declared name, finite floats only.

    Raises:
        ValueError: Naming the missing or non-finite feature.
    """
    out: dict[str, float] = {}
    for name in names:
        if name not in values:
            raise ValueError(f"feature extractor did not return {name!r}")
    for name, value in values.items():
        v = float(value)
        if not math.isfinite(v):
            raise ValueError(f"feature {name!r} is not finite: {value!r}")
        out[name] = v
    return out


def image_features(extractor: Any, unit: np.ndarray, pages: int = 1) -> dict[str, float]:
    """The checked features of one image in [0, 1], with ``pages`` for a multi-page file.

    Raises:
        ValueError: As :func:`check_features`.
    """
    features = check_features(extractor.extract(unit), tuple(extractor.names))
    if pages > 1:
        features["pages"] = float(pages)
    return features


__all__ = [
    "DefaultFeatures",
    "FeatureExtractor",
    "check_features",
    "image_features",
    "load_extractor",
    "load_object",
]
