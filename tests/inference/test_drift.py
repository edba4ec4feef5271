"""Tests for inference.drift: PSI on hand-made samples, PSI = sum (a - e) * ln(a / e)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from churn.errors import DataError
from inference.drift import drift_status, drift_table, effect_size, psi

EPS = 1e-4
# Shares 0.5/0.5 -> 0.8/0.2: 0.3 * ln(0.8/0.5) + (-0.3) * ln(0.2/0.5) = 0.3 * (ln 1.6 + ln 2.5) = 0.3 * ln 4 = 0.41589
PSI_50_TO_80 = 0.3 * math.log(4)


def test_identical_distributions_give_zero() -> None:
    x = np.array([3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0, 5.0, 3.0])
    assert psi(x, x) == 0.0
    assert psi(x, x[::-1].copy()) == 0.0
    assert psi(pd.Series(["a", "b", "b", None]), pd.Series(["b", None, "a", "b"])) == 0.0


def test_categorical_two_bin_shift_by_hand() -> None:
    expected = np.array(["a"] * 50 + ["b"] * 50, dtype=object)
    actual = pd.Series(["a"] * 80 + ["b"] * 20)  # pandas 3 "str" dtype
    assert psi(expected, actual) == pytest.approx(PSI_50_TO_80)
    cat = pd.Series(actual, dtype="category")
    assert psi(pd.Series(expected, dtype="category"), cat) == pytest.approx(PSI_50_TO_80)


def test_categorical_new_category_and_missing_value_are_bins() -> None:
    expected = pd.Series(["a", "a", "b", "b"])
    actual = pd.Series(["a", "c", None, "b"])
    # bins a, b, c, missing: e = .5, .5, 0 -> eps, 0 -> eps; a = .25, .25, .25, .25
    by_hand = 2 * (0.25 - 0.5) * math.log(0.25 / 0.5) + 2 * (0.25 - EPS) * math.log(0.25 / EPS)
    assert psi(expected, actual) == pytest.approx(by_hand)


def test_bool_is_categorical() -> None:
    # 5/5 True/False -> 8/2: same shares as the two-bin example.
    expected = np.array([True] * 5 + [False] * 5)
    actual = np.array([True] * 8 + [False] * 2)
    assert psi(expected, actual) == pytest.approx(PSI_50_TO_80)


def test_numeric_quantile_bins_by_hand() -> None:
    expected = np.arange(10)  # two bins: median 4.5 -> (-inf, 4.5], (4.5, inf), shares .5/.5
    actual = np.array([0, 1, 2, 3, 4, 0, 1, 2, 7, 8])  # 8 of 10 <= 4.5
    assert psi(expected, actual, n_bins=2) == pytest.approx(PSI_50_TO_80)


def test_numeric_nan_is_its_own_bin() -> None:
    expected = np.arange(10, dtype=float)
    actual = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, np.nan])
    # bins (-inf, 4.5], (4.5, inf), NaN: e = .5, .5, eps; a = .5, .4, .1
    by_hand = 0 + (0.4 - 0.5) * math.log(0.4 / 0.5) + (0.1 - EPS) * math.log(0.1 / EPS)
    assert psi(expected, actual, n_bins=2) == pytest.approx(by_hand)
    # Nullable Int64 with pd.NA behaves the same.
    nullable = pd.Series([0, 1, 2, 3, 4, 5, 6, 7, 8, None], dtype="Int64")
    assert psi(pd.Series(np.arange(10), dtype="Int64"), nullable, n_bins=2) == pytest.approx(by_hand)


def test_numeric_outer_bins_are_open_ended() -> None:
    expected = np.arange(10, dtype=float)
    actual = np.full(10, 100.0)  # far above the reference range: all in the top bin
    # e = .5, .5; a = 0 -> eps, 1
    by_hand = (EPS - 0.5) * math.log(EPS / 0.5) + (1 - 0.5) * math.log(1 / 0.5)
    assert psi(expected, actual, n_bins=2) == pytest.approx(by_hand)
    below = psi(expected, np.full(10, -100.0), n_bins=2)
    assert below == pytest.approx(by_hand)


def test_duplicate_quantile_edges_are_merged() -> None:
    # Zero-inflated reference: deciles 0.1..0.5 are all 0, 0.6..0.9 are 0.4, 1.3, 2.2, 3.1
    # -> edges 0, 0.4, 1.3, 2.2, 3.1: bins (-inf,0], (0,.4], (.4,1.3], (1.3,2.2], (2.2,3.1], (3.1,inf)
    # e = .6, 0 -> eps, .1, .1, .1, .1
    expected = np.array([0, 0, 0, 0, 0, 0, 1, 2, 3, 4], dtype=float)
    assert psi(expected, expected) == 0.0
    actual = np.zeros(10)  # a = 1, eps, eps, eps, eps, eps
    by_hand = (1 - 0.6) * math.log(1 / 0.6) + 0 + 4 * (EPS - 0.1) * math.log(EPS / 0.1)
    assert psi(expected, actual) == pytest.approx(by_hand)


def test_constant_reference() -> None:
    expected = np.full(20, 5.0)  # single edge 5: (-inf, 5], (5, inf)
    assert psi(expected, np.full(7, 5.0)) == 0.0
    # all moved above: e = 1, eps; a = eps, 1 -> 2 * (1 - eps) * ln(1 / eps)
    assert psi(expected, np.full(7, 6.0)) == pytest.approx(2 * (1 - EPS) * math.log(1 / EPS))


def test_psi_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        psi(np.array([]), np.array([1.0]))
    with pytest.raises(TypeError, match="datetime"):
        psi(pd.Series(pd.to_datetime(["2024-01-01"])), pd.Series(pd.to_datetime(["2024-01-02"])))


@pytest.mark.parametrize(
    ("value", "status"),
    [
        (0.0, "stable"),
        (0.0999, "stable"),
        (0.1, "warning"),
        (0.2499, "warning"),
        (0.25, "drift"),
        (3.0, "drift"),
    ],
    ids=["zero", "below-warn", "at-warn", "below-alert", "at-alert", "far"],
)
def test_drift_status_thresholds(value: float, status: str) -> None:
    assert drift_status(value, warn=0.1, alert=0.25) == status


def test_drift_table_statuses_and_order() -> None:
    reference = pd.DataFrame(
        {
            "x": np.arange(10, dtype=float),
            "z": np.arange(10, dtype=float),
            "c60": ["a"] * 5 + ["b"] * 5,
            "c70": ["a"] * 5 + ["b"] * 5,
            "c80": ["a"] * 5 + ["b"] * 5,
            "extra": np.zeros(10),
        }
    )
    current = pd.DataFrame(
        {
            "c80": ["a"] * 8 + ["b"] * 2,  # 0.3 ln 4                      = 0.4159 -> drift
            "c70": ["a"] * 7 + ["b"] * 3,  # 0.2 ln 1.4 + 0.2 ln (5/3)     = 0.1695 -> warning
            "c60": ["a"] * 6 + ["b"] * 4,  # 0.1 ln 1.2 + 0.1 ln 1.25      = 0.0405 -> stable
            "x": np.arange(10, dtype=float)[::-1],  # same values: 0, mean 4.5
            "z": np.arange(10, dtype=float),
        }
    )
    out = drift_table(reference, current)  # "extra" is not in current: skipped by default
    assert out.columns.tolist() == ["feature", "psi", "effect", "status", "ref_mean", "cur_mean"]
    assert out["feature"].tolist() == ["c80", "c70", "c60", "x", "z"]  # psi desc; x, z tie -> column order
    assert out["psi"].tolist() == pytest.approx(
        [
            0.3 * math.log(4),
            0.2 * math.log(1.4) + 0.2 * math.log(5 / 3),
            0.1 * math.log(1.2) + 0.1 * math.log(1.25),
            0,
            0,
        ]
    )
    assert out["status"].tolist() == ["drift", "warning", "stable", "stable", "stable"]
    assert out["ref_mean"].iloc[:3].isna().all() and out["cur_mean"].iloc[:3].isna().all()
    assert out["ref_mean"].iloc[3] == 4.5 and out["cur_mean"].iloc[3] == 4.5


def test_drift_table_custom_thresholds_and_missing_column() -> None:
    reference = pd.DataFrame({"c": ["a"] * 5 + ["b"] * 5})
    current = pd.DataFrame({"c": ["a"] * 6 + ["b"] * 4})  # psi 0.0405
    assert drift_table(reference, current, warn=0.01, alert=0.04)["status"].tolist() == ["drift"]
    with pytest.raises(DataError, match="table 'current', column 'only_ref'"):
        drift_table(reference.assign(only_ref=1.0), current, columns=["c", "only_ref"])


def test_scoring_drift_adds_score_row_and_recommends_retraining() -> None:
    from inference.drift import scoring_drift

    rng = np.random.default_rng(0)
    ref = pd.DataFrame({"a": rng.normal(size=2000), "b": rng.normal(size=2000),
                        "churn_probability": rng.uniform(0, 0.2, 2000)})
    same = ref[["a", "b"]].copy()
    table, rec = scoring_drift(ref, same, ["a", "b"], ref["churn_probability"].to_numpy())
    assert table["feature"].tolist()[0] == "churn_probability (score)"
    assert set(table["feature"]) == {"churn_probability (score)", "a", "b"}
    assert (table["status"] == "stable").all() and rec is None
    shifted = same.assign(a=same["a"] + 3.0)  # one input moved far
    table, rec = scoring_drift(ref, shifted, ["a", "b"], ref["churn_probability"].to_numpy() + 0.5)
    status = dict(zip(table["feature"], table["status"], strict=True))
    assert status == {"churn_probability (score)": "drift", "a": "drift", "b": "stable"}
    assert rec is not None and rec.startswith("Retrain recommended") and "important input(s) a" in rec


def test_few_distinct_values_get_one_bin_each_and_gaps() -> None:
    expected = np.array([1, 1, 2, 2, 3, 3, 3, 3, 3, 3], dtype=float)  # bins <1, {1}, (1,2), {2}, (2,3), {3}, >3
    assert psi(expected, expected[::-1].copy()) == 0.0
    actual = np.array([1, 1, 2, 2, 3, 3, 3, 3, 2.5, 2.5])  # 2.5 is a gap bin: e = eps, a = .2; {3}: .6 -> .4
    by_hand = (0.2 - EPS) * math.log(0.2 / EPS) + (0.4 - 0.6) * math.log(0.4 / 0.6)
    assert psi(expected, actual) == pytest.approx(by_hand)


def test_point_mass_is_its_own_bin() -> None:
    # 30 of 100 reference values sit on 5.0 (a point mass); the other 70 are spread out
    rest = np.linspace(0, 10, 70)
    expected = np.concatenate([np.full(30, 5.0), rest])
    actual = np.concatenate([np.full(30, 5.0), rest])
    assert psi(expected, actual) == 0.0
    moved = np.concatenate([np.full(30, 5.01), rest])  # the mass leaves its own bin for a quantile bin
    assert psi(expected, moved) > 1.0


def test_effect_size_by_hand() -> None:
    ref = np.array([0.0, 2.0, 0.0, 2.0])  # std 1
    assert effect_size(ref, ref + 0.5) == pytest.approx(0.5)  # every unit of mass moved 0.5 sd
    assert effect_size(pd.Series(["a", "a", "b", "b"]), pd.Series(["a", "b", "b", "b"])) == pytest.approx(0.25)
    assert effect_size(np.array([1.0, 1.0, np.nan, np.nan]), np.array([1.0, 1.0, 1.0, np.nan])) == pytest.approx(0.25)


def test_tie_heavy_feature_that_barely_moves_is_stable() -> None:
    """The demo's case: ~430 customers share one contractual value on a quantile edge; it moves 152.05 -> 153.48."""
    rng = np.random.default_rng(3)
    spread = rng.gamma(2.0, 80.0, 3400)
    ref = pd.DataFrame({"lifetime_value": np.concatenate([np.full(430, 152.05), spread])})
    cur = pd.DataFrame({"lifetime_value": np.concatenate([np.full(430, 153.48), spread])})
    out = drift_table(ref, cur, min_effect=0.1, min_sample=200)
    row = out.iloc[0]
    assert row["psi"] > 0.25  # the shape moved: the point mass changed bins
    assert row["effect"] == pytest.approx(430 * 1.43 / 3830 / ref["lifetime_value"].std(ddof=0), rel=1e-6)
    assert row["status"] == "stable"


def test_small_samples_are_not_judged() -> None:
    ref = pd.DataFrame({"x": np.arange(50, dtype=float)})
    out = drift_table(ref, ref + 100.0, min_effect=0.1, min_sample=200)
    assert out["status"].tolist() == ["too_few"]


def _ref(n: int = 2000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=n), rng.normal(size=n)
    return pd.DataFrame({"a": a, "b": b, "churn_probability": 1 / (1 + np.exp(-(a - 3)))})


def test_one_drifted_feature_alone_does_not_recommend_retraining() -> None:
    from inference.drift import assess_scoring_drift

    ref = _ref()
    cur = ref[["a", "b"]].assign(b=ref["b"] + 2.0)  # b drifted far, but the score does not depend on it
    res = assess_scoring_drift(ref, cur, ["a", "b"], ref["churn_probability"].to_numpy(), {"a": 0.9, "b": 0.1})
    status = dict(zip(res.table["feature"], res.table["status"], strict=True))
    assert status["b"] == "drift" and status["churn_probability (score)"] == "stable"
    assert not res.retrain and res.recommendation is None
    assert res.evidence["drifted_important"] == ["b"]  # important, yet alone it is no evidence
    assert res.evidence["message"].startswith("No retrain needed") and "b" in res.evidence["message"]


def test_score_and_important_feature_drift_together_recommend_retraining() -> None:
    from inference.drift import assess_scoring_drift

    ref = _ref()
    cur = ref[["a", "b"]].assign(a=ref["a"] + 1.5)
    p = 1 / (1 + np.exp(-(cur["a"].to_numpy() - 3)))
    res = assess_scoring_drift(ref, cur, ["a", "b"], p, {"a": 0.9, "b": 0.1})
    assert res.retrain and res.evidence["drifted_important"] == ["a"]
    assert "score distribution drifted" in res.recommendation
