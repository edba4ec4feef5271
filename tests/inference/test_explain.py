"""SHAP contributions -> additive group impacts (probability points) -> group stories, on hand-made matrices."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.catalogue import FeatureSpec
from inference.explain import (
    explain_rows,
    global_group_importance,
    group_impacts,
    typical_values,
    within_tenure,
)


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


def test_group_impacts_walk_the_path_largest_group_first() -> None:
    # Row 0: path -1.0 (base) -> -0.2 (+ logins 0.8, the larger |phi|) -> -0.6 (+ complaints -0.4)
    #   sigma: 0.2689414 -> 0.4501660 -> 0.3543437: logins +0.1812246, complaints -0.0958223
    # Row 1: path -0.4 -> 0.2 (+ complaints 0.6 first) -> 0.0 (+ logins -0.2); sigma 0.4013123, 0.5498340, 0.5.
    #   Calibrated p is 0.25 and no calibrator is given: the path is scaled by 0.25 / 0.5 = 0.5:
    #   base 0.2006562, complaints +0.0742608, logins -0.0249170
    p_cal = np.array([sigmoid(-0.6), 0.25])
    gi = group_impacts(CONTRIB, SMALL_FEATURES, SMALL_SPECS, p_cal)
    assert gi.groups == ["logins", "complaints"]  # first-appearance order
    np.testing.assert_allclose(gi.impact, [[0.1812246, -0.0958223], [-0.0249170, 0.0742608]], atol=1e-7)
    np.testing.assert_allclose(gi.base, [0.2689414, 0.2006562], atol=1e-7)
    np.testing.assert_allclose(gi.base + gi.impact.sum(axis=1), p_cal, atol=1e-12)  # adds up exactly


def test_group_impacts_calibrate_every_point_of_the_path() -> None:
    # calibrator p -> p / 2 on row 0: base 0.1344707, logins (0.4501660 - 0.2689414) / 2 = +0.0906123,
    # complaints (0.3543437 - 0.4501660) / 2 = -0.0479112; they end at sigma(-0.6) / 2 = 0.1771718
    gi = group_impacts(CONTRIB[:1], SMALL_FEATURES, SMALL_SPECS, calibrate=lambda p: p / 2)
    np.testing.assert_allclose(gi.impact, [[0.0906123, -0.0479112]], atol=1e-7)
    np.testing.assert_allclose(gi.base + gi.impact.sum(axis=1), [0.1771718], atol=1e-7)


def test_group_impact_signs_follow_contributions_and_add_up() -> None:
    rng = np.random.default_rng(3)
    contrib = rng.normal(0, 1, (50, 4))
    p = 1 / (1 + np.exp(-contrib.sum(axis=1)))
    gi = group_impacts(contrib, SMALL_FEATURES, SMALL_SPECS, p)
    phi_g = np.column_stack([contrib[:, 0] + contrib[:, 1], contrib[:, 2]])
    assert np.all(np.sign(gi.impact) == np.sign(phi_g))
    np.testing.assert_allclose(gi.base + gi.impact.sum(axis=1), p, atol=1e-12)


def test_global_group_importance_by_hand() -> None:
    # mean |impact| over the two rows above:
    #   logins     (0.1812246 + 0.0249170) / 2 = 0.1030708
    #   complaints (0.0958223 + 0.0742608) / 2 = 0.0850416
    imp = global_group_importance(CONTRIB, np.array([sigmoid(-0.6), 0.25]), SMALL_FEATURES, SMALL_SPECS)
    assert imp["group"].tolist() == ["logins", "complaints"]
    assert imp["family"].tolist() == ["behavioral", "sentiment"]
    np.testing.assert_allclose(imp["mean_abs_impact"], [0.1030708, 0.0850416], atol=1e-7)


# --------------------------------------------------------------------------- explain_rows: 6 features, 5 groups
FEATURES = ["logins_30d", "logins_trend", "complaints_30d", "tenure_days", "spend_90d", "plan"]
SPECS = {
    "logins_30d": FeatureSpec("logins_30d", "behavioral", "logins", "Logins in the last 30 days", "count", 30,
                              reason="Logins in the last 30 days: {value} (typical customer: {typical})",
                              risk_direction=-1),
    "logins_trend": FeatureSpec("logins_trend", "behavioral", "logins", "Login trend", "rate_change", 30,
                                reason="Logins {change} {abs_pct}% vs the previous 60 days", risk_direction=-1),
    "complaints_30d": FeatureSpec("complaints_30d", "sentiment", "complaints", "Complaints", "count", 30,
                                  reason="{value} complaints in the last 30 days", risk_direction=1),
    "tenure_days": FeatureSpec("tenure_days", "profile", "tenure", "Days since signup", "days",
                               reason="Customer for {value} days", risk_direction=-1),
    "spend_90d": FeatureSpec("spend_90d", "value", "spend", "Spend in the last 90 days", "currency", 90,
                             reason="Spent {value} in the last 90 days (typical customer: {typical})", risk_direction=-1),
    "plan": FeatureSpec("plan", "profile", "plan", "Plan", "category", reason="Plan: {label}", categorical=True),
}


@pytest.fixture
def frame() -> pd.DataFrame:
    return pd.DataFrame({
        "customer_id": ["C1", "C2"],
        "logins_30d": [3.0, 14.0], "logins_trend": [-0.62, 0.05], "complaints_30d": [1.0, 0.0],
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


def test_explain_rows_stories_and_impacts_by_hand(frame: pd.DataFrame) -> None:
    # path by |phi|: base -1.5 -> tenure -2.0 -> logins -1.6 -> complaints -1.3 -> plan -1.1 -> spend -1.0
    # sigma:  0.1824255, 0.1192029, 0.1679816, 0.2141650, 0.2497399, 0.2689414
    # impacts: tenure -0.0632226, logins +0.0487787, complaints +0.0461834, plan +0.0355749, spend +0.0192015
    p = np.array([sigmoid(-1.0), sigmoid(-2.0)])
    out = explain_rows(frame, EXPLAIN_CONTRIB, p, FEATURES, SPECS, TYPICAL, top_k=3, currency="EUR")
    assert list(out.index) == [10, 11]  # aligned with the input rows
    r = out.loc[10]
    # both login features drive the group up and both are on the risky side: level vs typical, then own past
    assert r["reason_1"] == "Logins in the last 30 days: 3 (typical customer: 12); Logins fell 62% vs the previous 60 days (+4.9 pts)"
    assert r["reason_2"] == "1 complaint in the last 30 days (+4.6 pts)"  # singular
    assert r["reason_3"] == "Plan: basic (+3.6 pts)"
    assert r["protective_reason"] == "Customer for 1,460 days (-6.3 pts)"
    assert r["reason_groups"] == ["logins", "complaints", "plan"]
    assert r["reason_families"] == ["behavioral", "profile", "sentiment"]
    # other factors = spend +0.0192015; shown: 26.9 = 18.2 + 4.9 + 4.6 + 3.6 - 6.3 + 1.9
    assert r["base_probability"] == pytest.approx(0.1824255, abs=1e-7)
    assert r["other_impact"] == pytest.approx(0.0192015, abs=1e-6)
    assert r["impact_summary"] == ("base rate 18.2% +4.9 pts (logins) +4.6 pts (complaints) +3.6 pts (plan) "
                                   "-6.3 pts (tenure) +1.9 pts (other factors) = 26.9%")
    reasons = r["reasons"]
    assert [x["group"] for x in reasons] == ["logins", "complaints", "plan", "tenure"]
    assert [x["direction"] for x in reasons] == ["raises", "raises", "raises", "lowers"]
    assert reasons[0]["feature"] == "logins_30d" and reasons[0]["impact"] == 0.048779 and reasons[0]["value"] == 3.0
    assert reasons[0]["quoted"] == [{"feature": "logins_30d", "value": 3.0, "typical": 12.0, "side": 1},
                                    {"feature": "logins_trend", "value": -0.62, "typical": 0.0, "side": 1}]
    assert reasons[2]["value"] is None and reasons[2]["category"] == "basic"  # categorical: label, not number
    assert reasons[3]["feature"] == "tenure_days" and reasons[3]["impact"] == -0.063223


def test_explain_rows_without_contributions_gives_no_reasons(frame: pd.DataFrame) -> None:
    out = explain_rows(frame, EXPLAIN_CONTRIB, np.array([sigmoid(-1.0), sigmoid(-2.0)]), FEATURES, SPECS, TYPICAL)
    r = out.loc[11]
    assert (r["reason_1"], r["reason_2"], r["reason_3"], r["protective_reason"]) == ("", "", "", "")
    assert r["reasons"] == [] and r["reason_groups"] == [] and r["reason_families"] == []
    assert r["impact_summary"] == "base rate 11.9% +0.0 pts (other factors) = 11.9%"


def test_explain_rows_drops_negligible_impacts(frame: pd.DataFrame) -> None:
    # only logins raises risk (tiny plan effect below min_impact); nothing protective
    contrib = np.array([[0.25, 0.15, 0.0, 0.0, 0.0, 0.001, -1.5]] * 2)
    p = 1 / (1 + np.exp(-contrib.sum(axis=1)))
    out = explain_rows(frame, contrib, p, FEATURES, SPECS, TYPICAL, top_k=3, min_impact=0.001)
    r = out.iloc[0]
    assert r["reason_1"].startswith("Logins in the last 30 days: 3 (typical customer: 12)")
    assert r["reason_2"] == r["reason_3"] == r["protective_reason"] == ""
    # row 1: 14 logins (above typical 12) push risk up, the +5% trend is the safe side too: the reason says why
    assert out.iloc[1]["reason_1"] == ("Logins in the last 30 days: 14 (typical customer: 12) (a high level, yet with "
                                       "this customer's other values the model reads it as raising the risk) (+6.7 pts)")


# --------------------------------------------------------------------------- group stories
ACT = {
    "events_per_month": FeatureSpec("events_per_month", "behavioral", "activity", "Activities per month", "count",
                                    reason="{value} activities a month over the customer's tenure (typical customer: {typical})",
                                    risk_direction=-1),
    "activity_trend": FeatureSpec("activity_trend", "behavioral", "activity", "Change in daily activity", "rate_change", 30,
                                  reason="Activity {change} {abs_pct}% in the last 30 days", risk_direction=-1),
    "purchases_90d": FeatureSpec("purchases_90d", "value", "purchases", "Purchases", "count", 90,
                                 reason="{value} purchases in the last 90 days (typical customer: {typical})", risk_direction=-1),
    "purchase_drop_flag": FeatureSpec("purchase_drop_flag", "value", "purchases", "Purchase drop", "flag", 30,
                                      reason="Purchases down 20% or more against the customer's own past", risk_direction=1),
    "days_since_last_purchase": FeatureSpec("days_since_last_purchase", "value", "recency", "Days since last purchase",
                                            "days", reason="No purchase for {value} days", risk_direction=1),
}
ACT_FEATURES = list(ACT)
ACT_TYPICAL = {"events_per_month": 16.5, "activity_trend": 0.0, "purchases_90d": 3.0, "purchase_drop_flag": 0.0,
               "days_since_last_purchase": 20.0}


def _one(values: dict[str, float], contrib: list[float]) -> pd.Series:
    frame = pd.DataFrame({k: [v] for k, v in values.items()})
    c = np.array([contrib])
    p = 1 / (1 + np.exp(-c.sum(axis=1)))
    return explain_rows(frame, c, p, ACT_FEATURES, ACT, ACT_TYPICAL, top_k=3).iloc[0]


def test_a_fall_from_a_high_level_is_told_as_the_fall() -> None:
    # the level (33.9, above typical 16.5) carries the larger contribution, but it is the safe side: the story is the fall
    r = _one({"events_per_month": 33.9, "activity_trend": -0.71, "purchases_90d": 3.0, "purchase_drop_flag": 0.0,
              "days_since_last_purchase": 20.0}, [0.6, 0.3, 0.0, 0.0, 0.0, -2.0])
    assert r["reason_1"].startswith("Activity fell 71% in the last 30 days, from a high level: 33.9 activities a month "
                                    "over the customer's tenure (typical customer: 16.5) (+")


def test_a_window_longer_than_the_customer_s_tenure_says_so() -> None:
    """A 40-day-old customer's 90-day count is not compared with a 90-day typical silently; a customer of 120 days
    (or a frame without tenure) reads as before."""
    values = {"events_per_month": 16.5, "activity_trend": np.nan, "purchases_90d": 1.0, "purchase_drop_flag": 0.0,
              "days_since_last_purchase": np.nan}
    contrib = [0.0, 0.0, 0.5, 0.0, 0.0, -2.0]
    young = _one({**values, "tenure_days": 40.0}, contrib)
    assert young["reason_1"].startswith("1 purchase in the last 90 days, a customer for only 40 of them "
                                        "(typical customer: 3) (+")
    for old in (_one({**values, "tenure_days": 120.0}, contrib), _one(values, contrib)):
        assert old["reason_1"].startswith("1 purchase in the last 90 days (typical customer: 3) (+")
    year = FeatureSpec("spend_365d", "value", "spend", "Spend in the last 365 days", "currency", 365)
    assert within_tenure("Spent EUR 9 in the last year (typical customer: EUR 156)", year, 39.0) == \
        "Spent EUR 9 in the last year, a customer for only 39 days of it (typical customer: EUR 156)"
    assert within_tenure("Spent EUR 9 in the last year (typical customer: EUR 156)", year, 400.0) == \
        "Spent EUR 9 in the last year (typical customer: EUR 156)"


def test_a_change_against_a_baseline_before_signup_says_so() -> None:
    """A 50-day-old customer's 30-vs-60-day change compares with a baseline it was there for 20 days of."""
    values = {"events_per_month": 16.5, "activity_trend": -0.5, "purchases_90d": 3.0, "purchase_drop_flag": 0.0,
              "days_since_last_purchase": 20.0}
    spec = FeatureSpec("activity_trend_30_60", "behavioral", "activity", "Change in daily activity", "rate_change", 30,
                       reason="Activity {change} {abs_pct}% in the last 30 days compared with the previous 60")
    text = "Activity fell 50% in the last 30 days compared with the previous 60 (typical: 0%)"
    assert within_tenure(text, spec, 50.0) == ("Activity fell 50% in the last 30 days compared with the previous 60, "
                                               "a customer for only 50 of those 90 days (typical: 0%)")
    assert within_tenure(text, spec, 90.0) == text and within_tenure(text, spec, None) == text
    # a sentence that names no baseline (this test's template) is left as it is
    r = _one({**values, "tenure_days": 45.0}, [0.0, 0.5, 0.0, 0.0, 0.0, -2.0])
    assert r["reason_1"].startswith("Activity fell 50% in the last 30 days (+")


def test_flag_is_named_in_its_words_and_unrecorded_values_are_never_reasons() -> None:
    # purchases group: count below typical drives it, the flag is on; recency is missing and means nothing here
    r = _one({"events_per_month": 16.5, "activity_trend": np.nan, "purchases_90d": 1.0, "purchase_drop_flag": 1.0,
              "days_since_last_purchase": np.nan}, [0.0, 0.4, 0.5, 0.2, 0.3, -2.0])
    assert r["reason_1"].startswith("1 purchase in the last 90 days (typical customer: 3); Purchases down 20% or more "
                                    "against the customer's own past (+")
    assert r["reasons"][0]["flags"] == ["purchase_drop_flag"]
    # a missing recency means "never": phrased as such; the unrecorded trend is no reason, its group goes to "other"
    assert r["reason_2"].startswith("No purchase or payment on record (+")
    texts = " ".join(x["text"] for x in r["reasons"])
    assert "not recorded" not in texts and "activity" not in r["reason_groups"]
    assert r["other_impact"] > 0  # the unstated group is in "other factors", so the sum still holds


def test_typical_values_median_and_mode() -> None:
    df = pd.DataFrame({"logins_30d": [1.0, 4.0, 10.0, np.nan], "plan": ["basic", "premium", "premium", "basic"],
                       "spend_90d": [5.0, 5.0, 7.0, 9.0]})
    df["plan"] = df["plan"].astype("category")
    df.loc[0, "plan"] = "premium"
    t = typical_values(df, ["logins_30d", "plan", "spend_90d"], SPECS)
    assert t == {"logins_30d": 4.0, "plan": "premium", "spend_90d": 6.0}


def test_protective_reason_never_passes_a_risky_value_off_as_safe() -> None:
    # purchases lower the risk here, but 1 purchase (typical 3) is the risky side: said with why, not as comfort
    r = _one({"events_per_month": 16.5, "activity_trend": 0.0, "purchases_90d": 1.0, "purchase_drop_flag": 0.0,
              "days_since_last_purchase": 20.0}, [0.0, 0.0, -0.5, 0.0, 0.0, -2.0])
    assert r["protective_reason"].startswith("1 purchase in the last 90 days (typical customer: 3) (a low level, yet "
                                             "with this customer's other values the model reads it as lowering the risk) (-")
    assert r["reason_1"] == ""
