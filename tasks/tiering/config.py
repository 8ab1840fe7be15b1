"""The tiering configuration: one YAML or TOML file.

Example (YAML; the TOML form has the same keys)::

    database: sqlite:///haste.db        # any SQLAlchemy URL (postgresql+psycopg://...)
    db_schema: null                     # PostgreSQL schema for the table (optional)
    db_table: haste_images
    features: default                   # or module:Class (see features.py)
    score: {feature: plls, k: 4.5, x0: -1.4}   # or {function: module:func}
    policy: [[0, 0.25, D], [0.25, 0.5, C], [0.5, 0.75, B], [0.75, 1, A]]
    tiers:
      A: {url: s3://fast-bucket/images, storage_class: STANDARD}
      B: {url: s3://warm-bucket, storage_class: STANDARD_IA}
      C: {url: gs://cold-bucket, storage_class: NEARLINE}
      D: {url: file:///archive/d}
    min_side: 32
    move: false                         # true: delete the source once the copy is verified

Every tier the policy names needs an entry under ``tiers`` except ``trash``. Storage classes
are checked against the tier's backend (S3: STANDARD, STANDARD_IA, GLACIER_IR, ...; GCS:
STANDARD, NEARLINE, COLDLINE, ARCHIVE; ``file://``/``mem://``: none). Unknown keys are errors,
so a typo does not silently fall back to a default.

``move: true`` turns copying into moving: once an image's copy is verified in its tier (same
size as the source) and its row is written, the source object is deleted. Images filed in
``trash`` are never deleted: they stay in the source bucket. ``move`` must be a boolean
(``true``/``false``); a string or a number is an error. A tier that overlaps the source
bucket (the same location, or one inside the other) is refused when a task runs, since only
then is the source known (see :func:`simpletasks.tasks.tiering.tiers.overlaps`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simpletasks.errors import ConfigError
from simpletasks.tasks.tiering.plls import MIN_SIDE
from simpletasks.tasks.tiering.policy import DEFAULT_POLICY, TRASH, TierPolicy

STORAGE_CLASSES: dict[str, frozenset[str]] = {
    "s3": frozenset(
        {
            "STANDARD",
            "STANDARD_IA",
            "ONEZONE_IA",
            "INTELLIGENT_TIERING",
            "GLACIER_IR",
            "GLACIER",
            "DEEP_ARCHIVE",
            "REDUCED_REDUNDANCY",
        }
    ),
    "gs": frozenset({"STANDARD", "NEARLINE", "COLDLINE", "ARCHIVE"}),
}

_TOP = {
    "database",
    "db_schema",
    "db_table",
    "features",
    "score",
    "policy",
    "tiers",
    "min_side",
    "move",
}
_SCORE = {"feature", "k", "x0", "function"}
_TIER = {"url", "storage_class"}


@dataclass(frozen=True)
class Tier:
    """Where one tier's images go: a bucket URL and an optional storage class."""

    name: str
    url: str
    storage_class: str | None = None

    @property
    def scheme(self) -> str:
        """The URL's scheme (``s3``, ``gs``, ``file``, ``mem``)."""
        return self.url.partition("://")[0].lower()


@dataclass(frozen=True)
class TierConfig:
    """A checked tiering configuration (see the module docstring for the file format)."""

    tiers: Mapping[str, Tier]
    policy: TierPolicy = field(default_factory=lambda: TierPolicy(DEFAULT_POLICY))
    database: str = "sqlite:///haste-tiering.db"
    db_schema: str | None = None
    db_table: str = "haste_images"
    features: str = "default"
    score_feature: str = "plls"
    k: float = 4.5
    x0: float = -1.4
    score_function: str | None = None
    min_side: int = MIN_SIDE
    move: bool = False

    def __post_init__(self) -> None:
        for name in self.policy.tiers:
            if name != TRASH and name not in self.tiers:
                raise ConfigError(
                    f"policy names tier {name!r} but 'tiers' has no entry for it "
                    f"(known: {sorted(self.tiers)}; 'trash' needs none)"
                )
        if isinstance(self.min_side, bool) or not isinstance(self.min_side, int):
            raise ConfigError(f"min_side must be an integer, got {self.min_side!r}")
        if self.min_side < 1:
            raise ConfigError(f"min_side must be >= 1, got {self.min_side}")
        if not isinstance(self.move, bool):
            raise ConfigError(
                f"move must be true or false, got {self.move!r} ({type(self.move).__name__})"
            )

    def tier(self, name: str) -> Tier | None:
        """The tier called ``name``; ``None`` for ``trash``."""
        return None if name == TRASH else self.tiers[name]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = "config") -> TierConfig:
        """Build and check a configuration from parsed YAML/TOML.

        Raises:
            ConfigError: Naming ``where`` and the offending key.
        """
        try:
            return _from_dict(data)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None


def _from_dict(data: Mapping[str, Any]) -> TierConfig:
    if not isinstance(data, Mapping):
        raise ConfigError(f"expected a mapping at the top, got {type(data).__name__}")
    _no_unknown(data, _TOP, "")
    if "tiers" not in data:
        raise ConfigError("missing 'tiers' (name -> {url, storage_class})")
    tiers_raw = data["tiers"]
    if not isinstance(tiers_raw, Mapping):
        raise ConfigError("'tiers' must map tier names to {url, storage_class}")
    tiers = {str(name): _tier(str(name), spec) for name, spec in tiers_raw.items()}
    if TRASH in tiers:
        raise ConfigError("'trash' is built in (stored nowhere); do not configure it in 'tiers'")
    score = data.get("score") or {}
    if not isinstance(score, Mapping):
        raise ConfigError("'score' must be a mapping with feature/k/x0 or function")
    _no_unknown(score, _SCORE, "score.")
    kwargs: dict[str, Any] = {
        "tiers": tiers,
        "policy": TierPolicy(data.get("policy", DEFAULT_POLICY)),
        "score_feature": score.get("feature", "plls"),
        "k": _number(score.get("k", 4.5), "score.k"),
        "x0": _number(score.get("x0", -1.4), "score.x0"),
        "score_function": score.get("function"),
    }
    if kwargs["k"] == 0:
        raise ConfigError("score.k must not be 0 (every image would score 0.5)")
    for key in ("database", "db_schema", "db_table", "features"):
        if data.get(key) is not None:
            if not isinstance(data[key], str) or not data[key]:
                raise ConfigError(f"'{key}' must be a non-empty string, got {data[key]!r}")
            kwargs[key] = data[key]
    if "min_side" in data:
        kwargs["min_side"] = data["min_side"]
    if "move" in data:
        kwargs["move"] = data["move"]
    return TierConfig(**kwargs)


def _tier(name: str, spec: Any) -> Tier:
    if isinstance(spec, str):
        spec = {"url": spec}
    if not isinstance(spec, Mapping):
        raise ConfigError(f"tiers.{name}: expected a URL or {{url, storage_class}}, got {spec!r}")
    _no_unknown(spec, _TIER, f"tiers.{name}.")
    url = spec.get("url")
    if not isinstance(url, str) or "://" not in url:
        raise ConfigError(f"tiers.{name}.url: expected s3://, gs:// or file:// URL, got {url!r}")
    tier = Tier(name, url, spec.get("storage_class"))
    if tier.storage_class is not None:
        allowed = STORAGE_CLASSES.get(tier.scheme)
        if allowed is None:
            raise ConfigError(
                f"tiers.{name}: {tier.scheme}:// buckets have no storage classes "
                f"(got {tier.storage_class!r})"
            )
        if tier.storage_class not in allowed:
            raise ConfigError(
                f"tiers.{name}.storage_class: {tier.storage_class!r} is not a {tier.scheme}:// "
                f"storage class; one of {sorted(allowed)}"
            )
    return tier


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{what} must be a finite number, got {value!r}")
    return float(value)


def _no_unknown(data: Mapping[str, Any], known: set[str], prefix: str) -> None:
    unknown = sorted(str(k) for k in data if k not in known)
    if unknown:
        raise ConfigError(
            f"unknown key(s) {', '.join(prefix + k for k in unknown)}; known: "
            f"{', '.join(sorted(known))}"
        )


def load_config(path: str | Path) -> TierConfig:
    """Read and check a YAML (``.yaml``/``.yml``) or TOML (``.toml``) configuration file.

    Raises:
        ConfigError: If the file is missing, unparsable or invalid; the message names the file.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read tiering config {path}: {exc.strerror or exc}") from None
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        elif suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            raise ConfigError(f"{path}: use a .yaml, .yml or .toml file (got {suffix or 'none'})")
    except ConfigError:
        raise
    except Exception as exc:  # yaml.YAMLError, tomllib.TOMLDecodeError
        raise ConfigError(f"{path}: not valid {suffix[1:].upper()}: {exc}") from None
    return TierConfig.from_dict(data if data is not None else {}, where=str(path))


__all__ = ["STORAGE_CLASSES", "Tier", "TierConfig", "load_config"]
