"""Score, policy edges and configuration errors."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from simpletasks.errors import ConfigError
from simpletasks.tasks.tiering.config import TierConfig, load_config
from simpletasks.tasks.tiering.features import DefaultFeatures, load_extractor
from simpletasks.tasks.tiering.policy import DEFAULT_POLICY, TierPolicy
from simpletasks.tasks.tiering.score import LogisticScore, checked_score, load_score, logistic


def test_default_logistic_sharper_is_higher_and_is_half_at_x0() -> None:
    s = LogisticScore()
    assert s({"plls": -1.4}) == 0.5
    assert s({"plls": -1.0}) > 0.8 > 0.1 > s({"plls": -2.0})
    assert LogisticScore(k=-4.5)({"plls": -1.0}) < 0.5  # the deployment's sign
    assert logistic(-1e6, 4.5, 0) == 0.0 and logistic(1e6, 4.5, 0) == 1.0


def test_constant_image_plls_zero_would_land_in_tier_a() -> None:
    score = LogisticScore()({"plls": 0.0})
    assert math.isclose(score, 1 / (1 + math.exp(-6.3)))
    assert TierPolicy(DEFAULT_POLICY).tier_for(score) == "A"


@pytest.mark.parametrize(
    ("score", "tier"),
    [(0.0, "D"), (0.2499999, "D"), (0.25, "C"), (0.5, "B"), (0.7499, "B"), (0.75, "A"), (1.0, "A")],
)
def test_intervals_are_closed_below_open_above_and_the_top_holds_one(
    score: float, tier: str
) -> None:
    assert TierPolicy(DEFAULT_POLICY).tier_for(score) == tier


def test_order_of_intervals_does_not_matter_and_trash_is_a_tier() -> None:
    p = TierPolicy([[0.5, 1, "keep"], [0, 0.5, "trash"]])
    assert p.tier_for(0.49) == "trash" and p.tier_for(0.5) == "keep"
    assert p.tiers == ["trash", "keep"] and p.boundaries == [0.5]


@pytest.mark.parametrize(
    ("intervals", "message"),
    [
        ([[0, 0.4, "D"], [0.5, 1, "A"]], "gap between 0.4 and 0.5"),
        ([[0, 0.6, "D"], [0.5, 1, "A"]], "overlap"),
        ([[0.1, 1, "A"]], "gap from 0"),
        ([[0, 0.9, "A"]], "gap to 1"),
        ([[0, 1.5, "A"]], "outside"),
        ([[-0.1, 1, "A"]], "outside"),
        ([[0, 0, "D"], [0, 1, "A"]], "empty or reversed"),
        ([[0, 1]], "expected"),
        ([[0, 1, ""]], "non-empty"),
        ([[0, "x", "A"]], "must be a number"),
        ([], "no intervals"),
    ],
)
def test_bad_policies_are_rejected_clearly(intervals: list, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TierPolicy(intervals)


@pytest.mark.parametrize("score", [-0.01, 1.01, float("nan"), "0.5"])
def test_scores_outside_0_1_cannot_be_placed(score: object) -> None:
    with pytest.raises(ValueError, match="outside"):
        TierPolicy(DEFAULT_POLICY).tier_for(score)  # type: ignore[arg-type]


def brightness(features: dict) -> float:  # a user score function, loaded as module:func
    return min(1.0, features["mean"] * 2)


def out_of_range(features: dict) -> float:
    return 3.0


def test_user_score_function_and_its_checks() -> None:
    fn = load_score("test_tier_policy:brightness")
    assert checked_score(fn, {"mean": 0.2}) == 0.4
    with pytest.raises(ValueError, match="outside"):
        checked_score(load_score("test_tier_policy:out_of_range"), {})
    with pytest.raises(ConfigError, match="cannot import"):
        load_score("no_such_module_x:f")
    with pytest.raises(ConfigError, match="has no"):
        load_score("test_tier_policy:nothing")
    with pytest.raises(ConfigError, match="module:name"):
        load_score("justaname")
    with pytest.raises(KeyError, match="not among"):
        LogisticScore(feature="focus")({"plls": 1.0})


class TwoFeatures:
    names = ("a", "b")

    def extract(self, image: object) -> dict:
        return {"a": 1.0, "b": 2.0}


def test_pluggable_feature_extractor() -> None:
    assert isinstance(load_extractor("default"), DefaultFeatures)
    assert load_extractor("test_tier_policy:TwoFeatures").names == ("a", "b")
    with pytest.raises(ConfigError, match="names"):
        load_extractor("test_tier_policy:brightness")


YAML = """
database: sqlite:///x.db
policy: [[0, 0.5, trash], [0.5, 1, A]]
score: {k: -4.5}
tiers:
  A: {url: s3://fast/images, storage_class: GLACIER_IR}
"""

TOML = """
database = "sqlite:///x.db"
policy = [[0, 0.25, "D"], [0.25, 0.5, "C"], [0.5, 0.75, "B"], [0.75, 1, "A"]]
[tiers]
A = "file:///tmp/a"
B = {url = "gs://b", storage_class = "NEARLINE"}
C = {url = "s3://c", storage_class = "STANDARD_IA"}
D = {url = "mem://d"}
"""


def test_yaml_and_toml_configs(tmp_path: Path) -> None:
    (tmp_path / "t.yaml").write_text(YAML)
    c = load_config(tmp_path / "t.yaml")
    assert c.k == -4.5 and c.x0 == -1.4 and c.tier("trash") is None
    assert c.tier("A").storage_class == "GLACIER_IR"  # type: ignore[union-attr]
    (tmp_path / "t.toml").write_text(TOML)
    c = load_config(tmp_path / "t.toml")
    assert c.policy.tiers == ["D", "C", "B", "A"] and c.tiers["B"].scheme == "gs"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tiers: {A: s3://a}\npolicy: [[0, 1, B]]\n", "policy names tier 'B'"),
        ("tiers: {A: s3://a}\nscore: {kk: 1}\npolicy: [[0, 1, A]]\n", "unknown key.*score.kk"),
        ("tier: {A: s3://a}\n", "unknown key.*tier"),
        ("policy: [[0, 1, A]]\n", "missing 'tiers'"),
        ("tiers: {A: {url: s3://a, storage_class: NEARLINE}}\n", "not a s3:// storage class"),
        ("tiers: {A: {url: file:///a, storage_class: STANDARD}}\n", "no storage classes"),
        ("tiers: {A: nope}\n", "expected s3://"),
        ("tiers: {trash: s3://a}\n", "built in"),
        ("tiers: {A: s3://a}\nscore: {k: fast}\n", "score.k must be"),
        ("tiers: {A: s3://a}\nscore: {k: 0}\npolicy: [[0, 1, A]]\n", "must not be 0"),
        ("tiers: [\n", "not valid YAML"),
        ("- 1\n", "expected a mapping"),
    ],
)
def test_config_errors_name_the_file_and_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        load_config(path)
    assert "bad.yaml" in str(info.value)


def test_missing_file_and_unknown_suffix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "none.yaml")
    (tmp_path / "c.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"yaml, \.yml or \.toml"):
        load_config(tmp_path / "c.json")
    (tmp_path / "c.toml").write_text("tiers = [")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(tmp_path / "c.toml")


def test_config_object_checks() -> None:
    from simpletasks.tasks.tiering.config import Tier

    with pytest.raises(ConfigError, match="min_side"):
        TierConfig(tiers={"A": Tier("A", "mem://x")}, policy=TierPolicy([[0, 1, "A"]]), min_side=0)
