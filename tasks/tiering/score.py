"""Interestingness: a score in [0, 1] from an image's features.

The default is the paper's logistic on PLLS, ``1 / (1 + exp(-k (x - x0)))`` with ``k = 4.5``
and ``x0 = -1.4``: sharper images (higher PLLS) score higher, so tier A holds the most
in-focus images, as the paper's text says. (The published HASTE deployment configuration
used ``k = -4.5``, which puts *blurred* images in tier A; set ``k`` negative for that.)

A user function ``module:func`` can replace it: it gets the features as a dict and returns a
float in [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from simpletasks.errors import ConfigError
from simpletasks.tasks.tiering.features import load_object

ScoreFunction = Callable[[Mapping[str, float]], float]


def logistic(x: float, k: float, x0: float) -> float:
    """Return ``1 / (1 + exp(-k (x - x0)))`` without overflow for any finite input."""
    z = k * (x - x0)
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


@dataclass(frozen=True)
class LogisticScore:
    """The logistic of one feature (default: PLLS, k = 4.5, x0 = -1.4)."""

    feature: str = "plls"
    k: float = 4.5
    x0: float = -1.4

    def __post_init__(self) -> None:
        for name in ("k", "x0"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"score.{name} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise ConfigError(f"score.{name} must be finite, got {value!r}")
        if self.k == 0:
            raise ConfigError("score.k must not be 0 (every image would score 0.5)")

    def __call__(self, features: Mapping[str, float]) -> float:
        """Return the score of ``features``.

        Raises:
            KeyError: If the feature is missing (names the ones present).
        """
        if self.feature not in features:
            raise KeyError(
                f"score feature {self.feature!r} not among the features {sorted(features)}"
            )
        return logistic(float(features[self.feature]), self.k, self.x0)


def load_score(spec: str | ScoreFunction | None, **logistic_args: object) -> ScoreFunction:
    """Return the score function: a ``module:func`` spec, a callable, or the logistic.

    Raises:
        ConfigError: If the function cannot be loaded or is not callable.
    """
    if spec is None:
        return LogisticScore(**logistic_args)  # type: ignore[arg-type]
    fn = load_object(spec, "score.function") if isinstance(spec, str) else spec
    if not callable(fn):
        raise ConfigError(f"score.function {spec!r} is not callable")
    return fn


def checked_score(fn: ScoreFunction, features: Mapping[str, float]) -> float:
    """Call ``fn`` and check its answer is a number in [0, 1].

    Raises:
        ValueError: If it is not (the policy cannot place such a score).
    """
    value = fn(features)
    try:
        score = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"score function returned {value!r}, not a number") from None
    if not 0.0 <= score <= 1.0:  # also rejects NaN
        raise ValueError(f"score function returned {score!r}, outside [0, 1]")
    return score


__all__ = ["LogisticScore", "ScoreFunction", "checked_score", "load_score", "logistic"]
