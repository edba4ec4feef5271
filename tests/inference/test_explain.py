"""SHAP contributions -> group impacts in probability points -> readable reasons, on hand-made matrices."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.catalogue import FeatureSpec
from inference.explain import explain_rows, global_group_importance, group_impacts, typical_values


def sigmoid(z: float) -> float:
    return float(1.0 / (1.0 + np.exp(-z)))


# --------------------------------------------------------------------------- group_impacts: 3 features, 2 groups
SMALL_FEATURES = ["logins_7d", "logins_30d", "complaints_30d"]
SMALL_SPECS = {
    "logins_7d": FeatureSpec("logins_7d", "behavioral", "logins", "Logins in the last 7 days", "count", 7),
    "logins_30d": FeatureSpec("logins_30d", "behavioral", "logins", "Logins in the last 30 days", "count", 30),
    "complaints_30d": FeatureSpec("complaints_30d", "sentiment", "complaints", "Complaints", "count", 30),
}
# columns: logins_7d, logins_30d, complaints_30d, bias (log-odds)
CONTRIB = np.array([
    [0.5, 0.3, -0.4, -1.0],  # margin -0.6; logins +0.8, complaints -0.4
    [0.0, -0.2, 0.6, -0.4],  # margin  0.0; logins -0.2, complaints +0.6
])


def test_group_impacts_by_hand() -> None:
    # Row 0: margin m = 0.5 + 0.3 - 0.4 - 1.0 = -0.6, p_raw = sigma(-0.6) = 0.3543437; calibrated = raw (scale 1).
    #   logins     (phi = 0.8):  sigma(-0.6) - sigma(-0.6 - 0.8) = 0.3543437 - sigma(-1.4) = 0.3543437 - 0.1978161 = +0.1565276
    #   complaints (phi = -0.4): sigma(-0.6) - sigma(-0.6 + 0.4) = 0.3543437 - sigma(-0.2) = 0.3543437 - 0.4501660 = -0.0958223
    # Row 1: m = 0, p_raw = 0.5; calibrated 0.25, so every impact is scaled by 0.25 / 0.5 = 0.5.
    #   logins     (phi = -0.2): (0.5 - sigma(0.2)) * 0.5  = (0.5 - 0.5498340) * 0.5 = -0.0249170
    #   complaints (phi = 0.6):  (0.5 - sigma(-0.6)) * 0.5 = (0.5 - 0.3543437) * 0.5 = +0.0728282
    p_cal = np.array([sigmoid(-0.6), 0.25])
    gi = group_impacts(CONTRIB, SMALL_FEATURES, SMALL_SPECS, p_cal)
    assert gi.groups == ["logins", "complaints"]  # first-appearance order
    np.testing.assert_allclose(gi.impact, [[0.1565276, -0.0958223], [-0.0249170, 0.0728282]], atol=1e-7)
    # the feature that carries each group: largest |phi| within the group
    # row 0 logins: |0.5| > |0.3| -> logins_7d (0); row 1 logins: |0.0| < |-0.2| -> logins_30d (1)
    np.testing.assert_array_equal(gi.lead_feature, [[0, 2], [1, 2]])


def test_group_impact_signs_follow_contributions_and_are_bounded() -> None:
    rng = np.random.default_rng(3)
    contrib = rng.normal(0, 1, (50, 4))
    p = 1 / (1 + np.exp(-contrib.sum(axis=1)))
    gi = group_impacts(contrib, SMALL_FEATURES, SMALL_SPECS, p)
    phi_g = np.column_stack([contrib[:, 0] + contrib[:, 1], contrib[:, 2]])
    assert np.all(np.sign(gi.impact) == np.sign(phi_g))
    assert np.all(np.abs(gi.impact) < 1)


def test_global_group_importance_by_hand() -> None:
    # mean |impact| over the two rows above:
    #   logins     (0.1565276 + 0.0249170) / 2 = 0.0907223
    #   complaints (0.0958223 + 0.0728282) / 2 = 0.0843252
    imp = global_group_importance(CONTRIB, np.array([sigmoid(-0.6), 0.25]), SMALL_FEATURES, SMALL_SPECS)
    assert imp["group"].tolist() == ["logins", "complaints"]
    assert imp["family"].tolist() == ["behavioral", "sentiment"]
    np.testing.assert_allclose(imp["mean_abs_impact"], [0.0907223, 0.0843252], atol=1e-7)


# --------------------------------------------------------------------------- explain_rows: 6 features, 5 groups
FEATURES = ["logins_30d", "logins_trend", "complaints_30d", "tenure_days", "spend_90d", "plan"]
SPECS = {
    "logins_30d": FeatureSpec("logins_30d", "behavioral", "logins", "Logins in the last 30 days", "count", 30,
                              reason="Logins in the last 30 days: {value} (typical customer: {typical})"),
    "logins_trend": FeatureSpec("logins_trend", "behavioral", "logins", "Login trend", "rate_change", 30,
                                reason="Logins {change} {abs_pct}% vs the previous 60 days"),
    "complaints_30d": FeatureSpec("complaints_30d", "sentiment", "complaints", "Complaints", "count", 30,
                                  reason="{value} complaints in the last 30 days"),
    "tenure_days": FeatureSpec("tenure_days", "profile", "tenure", "Days since signup", "days",
                               reason="Customer for {value} days"),
    "spend_90d": FeatureSpec("spend_90d", "value", "spend", "Spend in the last 90 days", "currency", 90,
                             reason="Spent {value} in the last 90 days (typical customer: {typical})"),
    "plan": FeatureSpec("plan", "profile", "plan", "Plan", "category", reason="Plan: {label}", categorical=True),
}


@pytest.fixture
def frame() -> pd.DataFrame:
    return pd.DataFrame({
        "customer_id": ["C1", "C2"],
        "logins_30d": [3.0, 14.0], "logins_trend": [-0.62, 0.05], "complaints_30d": [2.0, 0.0],
        "tenure_days": [1460.0, 200.0], "spend_90d": [45.0, 80.0],
        "plan": pd.Categorical(["basic", "premium"], categories=["basic", "premium"]),
    }, index=[10, 11])


TYPICAL = {"logins_30d": 12.0, "logins_trend": 0.0, "complaints_30d": 0.0, "tenure_days": 400.0,
           "spend_90d": 80.0, "plan": "premium"}
# row 0: logins 0.25 + 0.15 = 0.4, complaints 0.3, tenure -0.5, spend 0.1, plan 0.2; bias -1.5 -> margin -1.0
# row 1: nothing but the bias
EXPLAIN_CONTRIB = np.array([
    [0.25, 0.15, 0.3, -0.5, 0.1, 0.2, -1.5],
    [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -2.0],
])


def test_explain_rows_top3_and_protective_by_hand(frame: pd.DataFrame) -> None:
    # margin -1.0, p = sigma(-1) = 0.2689414 (calibrated = raw); impact of a group = sigma(-1) - sigma(-1 - phi_g):
    #   logins      +0.4 -> 0.2689414 - sigma(-1.4) = 0.2689414 - 0.1978161 = +0.0711253  (+7.1 pts)
    #   complaints  +0.3 -> 0.2689414 - sigma(-1.3) = 0.2689414 - 0.2141650 = +0.0547764  (+5.5 pts)
    #   plan        +0.2 -> 0.2689414 - sigma(-1.2) = 0.2689414 - 0.2314752 = +0.0374662  (+3.7 pts)
    #   spend       +0.1 -> 0.2689414 - sigma(-1.1) = 0.2689414 - 0.2497399 = +0.0192015  (4th: not shown)
    #   tenure      -0.5 -> 0.2689414 - sigma(-0.5) = 0.2689414 - 0.3775407 = -0.1085992  (protective, -10.9 pts)
    p = np.array([sigmoid(-1.0), sigmoid(-2.0)])
    out = explain_rows(frame, EXPLAIN_CONTRIB, p, FEATURES, SPECS, TYPICAL, top_k=3)
    assert list(out.index) == [10, 11]  # aligned with the input rows
    r = out.loc[10]
    # the logins group is carried by logins_30d (|0.25| > |0.15|) and quotes the customer's value 3 and the typical 12
    assert r["reason_1"] == "Logins in the last 30 days: 3 (typical customer: 12) (+7.1 pts)"
    assert r["reason_2"] == "2 complaints in the last 30 days (+5.5 pts)"
    assert r["reason_3"] == "Plan: basic (+3.7 pts)"
    assert r["protective_reason"] == "Customer for 1,460 days (-10.9 pts)"
    assert r["reason_groups"] == ["logins", "complaints", "plan"]
    assert r["reason_families"] == ["behavioral", "profile", "sentiment"]
    reasons = r["reasons"]
    assert [x["group"] for x in reasons] == ["logins", "complaints", "plan", "tenure"]
    assert [x["direction"] for x in reasons] == ["raises", "raises", "raises", "lowers"]
    assert reasons[0] == {"group": "logins", "family": "behavioral", "feature": "logins_30d",
                          "text": r["reason_1"], "impact": 0.071125, "value": 3.0, "category": None,
                          "direction": "raises"}
    assert reasons[2]["value"] is None and reasons[2]["category"] == "basic"  # categorical: label, not number
    assert reasons[3]["feature"] == "tenure_days" and reasons[3]["impact"] == -0.108599
    assert reasons[3]["value"] == 1460.0


def test_explain_rows_without_contributions_gives_no_reasons(frame: pd.DataFrame) -> None:
    out = explain_rows(frame, EXPLAIN_CONTRIB, np.array([sigmoid(-1.0), sigmoid(-2.0)]), FEATURES, SPECS, TYPICAL)
    r = out.loc[11]
    assert (r["reason_1"], r["reason_2"], r["reason_3"], r["protective_reason"]) == ("", "", "", "")
    assert r["reasons"] == [] and r["reason_groups"] == [] and r["reason_families"] == []


def test_explain_rows_drops_negligible_impacts(frame: pd.DataFrame) -> None:
    # only logins raises risk (tiny plan effect below min_impact); nothing protective
    contrib = np.array([[0.25, 0.15, 0.0, 0.0, 0.0, 0.001, -1.5]] * 2)
    p = 1 / (1 + np.exp(-contrib.sum(axis=1)))
    out = explain_rows(frame, contrib, p, FEATURES, SPECS, TYPICAL, top_k=3, min_impact=0.001)
    r = out.iloc[0]
    assert r["reason_1"].startswith("Logins in the last 30 days: 3 (typical customer: 12)")
    assert r["reason_2"] == r["reason_3"] == r["protective_reason"] == ""
    assert out.iloc[1]["reason_1"].startswith("Logins in the last 30 days: 14 (typical customer: 12)")


def test_typical_values_median_and_mode() -> None:
    df = pd.DataFrame({"logins_30d": [1.0, 4.0, 10.0, np.nan], "plan": ["basic", "premium", "premium", "basic"],
                       "spend_90d": [5.0, 5.0, 7.0, 9.0]})
    df["plan"] = df["plan"].astype("category")
    df.loc[0, "plan"] = "premium"
    t = typical_values(df, ["logins_30d", "plan", "spend_90d"], SPECS)
    assert t == {"logins_30d": 4.0, "plan": "premium", "spend_90d": 6.0}
