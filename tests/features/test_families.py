"""Feature families on the hand-made tables (see conftest.py for the story of each customer).

Every expected value below is worked out by hand from the literal rows in conftest.py, with
T = 2024-06-01: 7d = [05-25, T), 30d = [05-02, T), 90d = [03-03, T), trend baseline = [03-03, 05-02).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from churn.vocab import LIFECYCLE_STAGES
from features.behavioral import behavioral_features, event_types_before
from features.build import FeatureBuilder, stack
from features.sentiment import prepare_interactions, sentiment_features
from features.value import quintile_score, value_features, value_tiers
from tests.features.conftest import CUTOFF, KeywordScorer, make_config

NAN = np.nan
POPULATION = ["A", "B", "C", "F", "G"]  # D churned before T, E signs up after T

# expected values per feature for customers A, B, C, F, G
BEHAVIORAL = {
    "days_since_last_event": [0.5, 12.0, 29.0, 42.0, NAN],
    "events_7d": [3, 0, 0, 0, 0],
    "active_days_7d": [2, 0, 0, 0, 0],  # A: two events on 05-28 are one active day
    "events_30d": [4, 1, 1, 0, 0],
    "active_days_30d": [3, 1, 1, 0, 0],
    "events_90d": [8, 2, 6, 2, 0],  # A's 01-15 login is older than 90 days
    "active_days_90d": [7, 2, 6, 2, 0],
    # (recent / 30) / (baseline / 60) - 1: A 4 vs 4 -> +100%; C 1 vs 5 -> -60%; F 0 vs 2 -> -100%; G no baseline
    "activity_trend_30_60": [1.0, 1.0, -0.6, -1.0, NAN],
    "login_30d": [3, 1, 1, 0, 0],
    "login_trend_30_60": [1.0, 1.0, -0.5, -1.0, NAN],
    "view_30d": [1, 0, 0, 0, 0],
    "view_trend_30_60": [1.0, NAN, -1.0, -1.0, NAN],
    "value_sum_30d": [60.0, 0, 0, 0, 0],  # A: 10 + 20 + 30 minutes
    "value_avg_vs_own_30d": [20.0 / 15.0, NAN, NAN, NAN, NAN],  # 60/3 recent vs (60+30)/6 over 90 days
    "tenure_days": [517, 47, 366, 486, 486],
    "lifecycle_stage": ["active", "new", "at_risk", "dormant", "lapsed"],
}
SENTIMENT = {
    "interactions_90d": [2, 0, 2, 1, 0],
    "complaints_30d": [1, 0, 1, 0, 0],  # A billing 05-20; C cancellation 05-25
    "complaints_90d": [1, 0, 1, 1, 0],  # F: category "other" but text says "charged" (keyword)
    "days_since_last_complaint": [12.0, NAN, 7.0, 37.0, NAN],
    "sentiment_mean_90d": [-0.1, NAN, 0.0, -0.8, NAN],  # A: (-0.8 + 0.6) / 2; C's 05-25 ticket has no text
    "sentiment_min_90d": [-0.8, NAN, 0.0, -0.8, NAN],
    "negative_messages_90d": [1, 0, 0, 1, 0],
    "negative_share_90d": [0.5, NAN, 0.0, 1.0, NAN],
    "sentiment_latest": [-0.8, NAN, 0.0, -0.8, NAN],  # C: latest *scored* message is "ok" on 05-01
    "rating_latest": [2.0, NAN, 1.0, NAN, NAN],
    "rating_mean_90d": [3.5, NAN, 2.0, NAN, NAN],
}
VALUE = {
    "days_since_last_purchase": [17.0, 12.0, 22.0, 143.0, NAN],
    "purchases_90d": [3, 2, 3, 0, 0],
    "spend_30d": [50.0, 20.0, 100.0, 0, 0],
    "spend_365d": [200.0, 40.0, 300.0, 30.0, 0],
    "avg_order_value_365d": [50.0, 20.0, 100.0, 30.0, NAN],
    "spend_trend_30_60": [0.0, 1.0, 0.0, NAN, NAN],
    "purchase_trend_30_60": [0.0, 1.0, 0.0, NAN, NAN],
    # quintiles among the 5 customers of the population (no purchase = worst)
    "rfm_recency_score": [4, 5, 3, 2, 1],  # recency 17, 12, 22, 143, none
    "rfm_frequency_score": [5, 3, 4, 2, 1],  # purchases in 365 days 4, 2, 3, 1, 0
    "rfm_monetary_score": [4, 3, 5, 2, 1],  # spend in 365 days 200, 40, 300, 30, 0
    # spend in the last 90 days / billing months in them: 3, except B (tenure 47 days: 2 months, 40 / 2)
    "monthly_revenue": [50.0, 20.0, 100.0, 0.0, 0.0],
    # 5 customers, tiers 1/5/20/100%: only the top one (20%) reaches silver
    "value_tier": ["bronze", "bronze", "silver", "bronze", "bronze"],
}


@pytest.fixture
def built(tables, cfg, scorer):
    return FeatureBuilder(tables, cfg, scorer=scorer).build(CUTOFF, with_labels=True)


def _check(frame: pd.DataFrame, expected: dict[str, list]) -> None:
    for name, values in expected.items():
        got = frame[name]
        if isinstance(got.dtype, pd.CategoricalDtype):
            assert got.astype(str).tolist() == values, name
        else:
            np.testing.assert_allclose(got.to_numpy(dtype=float), np.asarray(values, dtype=float),
                                       rtol=1e-12, atol=1e-12, err_msg=name)


# --------------------------------------------------------------------------- the builder
def test_build_one_row_per_active_customer(built):
    f = built.frame
    assert f["customer_id"].tolist() == POPULATION
    assert (f["cutoff"] == CUTOFF).all()
    assert list(f.columns[:2]) == ["customer_id", "cutoff"]
    assert list(f.columns[2:-1]) == built.feature_names and f.columns[-1] == "label"
    assert len(set(built.feature_names)) == len(built.feature_names)
    assert f["label"].tolist() == [0, 0, 1, 0, 0]  # C churns 2024-06-20, within (T, T + 30d]
    assert built.categorical == ["plan", "lifecycle_stage", "value_tier"]
    for c in built.categorical:
        assert isinstance(f[c].dtype, pd.CategoricalDtype), c
    assert list(f["lifecycle_stage"].cat.categories) == list(LIFECYCLE_STAGES)
    assert list(f["value_tier"].cat.categories) == ["platinum", "gold", "silver", "bronze"]
    assert list(f["plan"].cat.categories) == ["basic", "pro"]
    assert f["seats"].tolist() == [5.0, 1.0, 2.0, 4.0, 1.0]
    assert {s.family for s in built.specs} == {"profile", "behavioral", "sentiment", "value"}


def test_behavioral_values(built):
    _check(built.frame, BEHAVIORAL)


def test_sentiment_values(built):
    _check(built.frame, SENTIMENT)


def test_value_values(built):
    _check(built.frame, VALUE)
    f = built.frame.set_index("customer_id")
    # contractual CLV: one segment, nobody churned in the year before T -> retention 1 -> CLV proportional to revenue
    assert f.loc["C", "lifetime_value"] == pytest.approx(2 * f.loc["A", "lifetime_value"])
    assert f.loc["F", "lifetime_value"] == 0.0


def test_population_can_be_given(tables, cfg, scorer):
    pop = np.array([True, False, False, True, False, False, False])  # A and D
    fs = FeatureBuilder(tables, cfg, scorer=scorer).build(CUTOFF, population=pop)
    assert fs.frame["customer_id"].tolist() == ["A", "D"]
    # rankings (RFM, tiers) are within the given population
    assert fs.frame["rfm_monetary_score"].tolist() == [5.0, 3.0]


def test_inactivity_population(tables, scorer):
    cfg = make_config(definition="inactivity")
    fs = FeatureBuilder(tables, cfg, scorer=scorer).build(CUTOFF, with_labels=True)
    assert fs.frame["customer_id"].tolist() == ["A", "B", "C", "D", "F"]
    assert fs.frame["label"].tolist() == [0, 0, 0, 1, 1]


def test_build_many_stacks_cutoffs_with_labels(tables, cfg, scorer):
    cutoffs = [pd.Timestamp("2024-03-01"), pd.Timestamp("2024-04-01"), CUTOFF]
    fs = FeatureBuilder(tables, cfg, scorer=scorer).build_many(cutoffs)
    f = fs.frame
    per_cutoff = f.groupby("cutoff")["customer_id"].apply(list).to_dict()
    assert per_cutoff == {
        pd.Timestamp("2024-03-01"): ["A", "C", "D", "F", "G"],
        pd.Timestamp("2024-04-01"): ["A", "C", "D", "F", "G"],
        CUTOFF: POPULATION,
    }
    # D churns 05-10: outside (04-01, 05-01]; C churns 06-20: inside (06-01, 07-01]
    assert f["label"].tolist() == [0] * 10 + [0, 0, 1, 0, 0]
    assert list(f.columns) == ["customer_id", "cutoff", "label"] + fs.feature_names  # keys first, then features
    for c in fs.categorical:
        assert isinstance(f[c].dtype, pd.CategoricalDtype), c
    one = FeatureBuilder(tables, cfg, scorer=scorer).build(CUTOFF, with_labels=True).frame
    pd.testing.assert_frame_equal(f[f["cutoff"] == CUTOFF].reset_index(drop=True), one[f.columns])


def test_stack_fills_feature_missing_at_one_cutoff(tables, cfg, scorer):
    fb = FeatureBuilder(tables, cfg, scorer=scorer)
    early = fb.build(pd.Timestamp("2024-03-08"), with_labels=True)  # no "view" event seen before 03-08
    assert "view_30d" not in early.frame.columns and "login_30d" in early.frame.columns
    late = fb.build(CUTOFF, with_labels=True)
    fs = stack([early, late])
    assert fs.frame.loc[fs.frame["cutoff"] == pd.Timestamp("2024-03-08"), "view_30d"].eq(0.0).all()
    assert fs.feature_names.count("view_30d") == 1
    assert isinstance(fs.frame["lifecycle_stage"].dtype, pd.CategoricalDtype)


def test_fixed_event_types_from_config(tables, scorer):
    cfg = make_config(event_types=["login", "support_call"])
    fs = FeatureBuilder(tables, cfg, scorer=scorer).build(CUTOFF)
    assert "support_call_30d" in fs.frame.columns and "view_30d" not in fs.frame.columns
    assert fs.frame["support_call_30d"].eq(0).all()


def test_noncontractual_clv_runs(tables, scorer):
    cfg = make_config(clv_method="noncontractual")
    f = FeatureBuilder(tables, cfg, scorer=scorer).build(CUTOFF).frame
    assert f["lifetime_value"].notna().all() and (f["lifetime_value"] >= 0).all()
    clv = f.set_index("customer_id")["lifetime_value"]
    # G signed up 16 months ago and never bought: worth the least (not valued like a brand-new customer)
    assert clv.idxmin() == "G" and clv["G"] < 0.5 * clv["F"]
    assert clv["C"] > clv["A"] > clv["B"] > clv["F"]
    _check(f, {k: v for k, v in VALUE.items() if k != "value_tier"})


# --------------------------------------------------------------------------- family functions
def test_event_types_before_ignores_future(tables):
    assert event_types_before(tables.events, pd.Timestamp("2024-03-08")) == ["login"]
    assert event_types_before(tables.events, CUTOFF) == ["login", "view"]
    assert event_types_before(None, CUTOFF) == []


def test_behavioral_block_covers_every_customer_row(tables, cfg):
    block = behavioral_features(tables.events, tables.customers["signup_date"], CUTOFF, cfg.features, ["login"])
    assert len(block.frame) == len(tables.customers)
    # D (churned, one login 05-01) and E (signs up after T) still get rows; E has negative tenure
    d, e = block.frame.iloc[3], block.frame.iloc[4]
    assert d["events_30d"] == 0 and d["days_since_last_event"] == 31.0
    assert e["tenure_days"] == -30 and np.isnan(e["days_since_last_event"])


def test_lifecycle_thresholds(tables):
    cfg = make_config(lifecycle={"new_days": 30, "dormant_days": 20, "lapsed_days": 40, "at_risk_drop": 0.7})
    block = behavioral_features(tables.events, tables.customers["signup_date"], CUTOFF, cfg.features, [])
    # A active; B (47 days) no longer new; C (29 days quiet) dormant at 20; F (42 days) lapsed at 40;
    # D last active 31 days ago -> dormant; E negative tenure -> new; G lapsed
    assert block.frame["lifecycle_stage"].astype(str).tolist() == [
        "active", "active", "dormant", "dormant", "new", "lapsed", "lapsed"]


def test_prepare_interactions_flags_and_scores(tables, cfg):
    out = prepare_interactions(tables.interactions, cfg.features.sentiment, KeywordScorer())
    by = out.set_index(out["timestamp"].dt.strftime("%m-%d"))
    assert by["complaint"].to_dict() == {"01-05": True, "04-10": False, "04-25": True, "05-01": False,
                                         "05-20": True, "05-25": True, "06-10": True}
    assert np.isnan(by.loc["05-25", "sentiment"])  # empty text is not scored
    assert by.loc["05-20", "sentiment"] == -0.8 and by.loc["04-10", "sentiment"] == 0.6


def test_sentiment_windows_are_configurable(tables, cfg):
    inter = prepare_interactions(tables.interactions, cfg.features.sentiment, KeywordScorer())
    block = sentiment_features(inter, len(tables.customers), CUTOFF, cfg.features.sentiment, windows=(14, 200))
    assert "complaints_14d" in block.frame.columns and "interactions_200d" in block.frame.columns
    # A: the 01-05 technical complaint is within 200 days
    assert block.frame.loc[0, "complaints_200d"] == 2 and block.frame.loc[0, "complaints_14d"] == 1


def test_value_block_without_population_members(tables, cfg):
    pop = np.zeros(len(tables.customers), dtype=bool)
    block = value_features(tables.transactions, tables.customers, pop, CUTOFF, cfg.features)
    assert block.frame["rfm_recency_score"].isna().all()
    assert block.frame["spend_30d"].tolist() == [50.0, 20.0, 100.0, 0.0, 0.0, 0.0, 0.0]


def test_quintile_score():
    values = np.array([10.0, 20.0, 30.0, 40.0, 50.0, np.nan, 99.0])
    pop = np.array([True, True, True, True, True, True, False])
    assert quintile_score(values, pop).tolist()[:6] == [2, 3, 4, 5, 5, 1]  # 6 customers: pct k/6
    assert np.isnan(quintile_score(values, pop)[6])
    low = quintile_score(values, pop, higher_is_better=False)
    assert low.tolist()[:6] == [5, 5, 4, 3, 2, 1]  # lowest value best; NaN is still the worst
    ties = quintile_score(np.array([1.0, 1.0, 1.0, 1.0, 1.0]), np.ones(5, dtype=bool))
    assert ties.tolist() == [3, 3, 3, 3, 3]


DEFAULT_TIERS = [("platinum", 0.01), ("gold", 0.05), ("silver", 0.20), ("bronze", 1.0)]


def test_value_tiers_pyramid_ten_customers():
    clv = np.array([5.0, 100.0, 7.0, 1.0, 50.0, 3.0, 2.0, 9.0, 8.0, 4.0])
    pop = np.ones(10, dtype=bool)
    # shares 10%, 20%, ... : the top 1% and 5% tiers hold nobody, the top 20% (2 customers) are silver
    tiers = value_tiers(clv, pop, DEFAULT_TIERS)
    assert tiers.tolist() == ["bronze", "silver", "bronze", "bronze", "silver",
                              "bronze", "bronze", "bronze", "bronze", "bronze"]
    assert list(tiers.categories) == ["platinum", "gold", "silver", "bronze"]
    wide = value_tiers(clv, pop, [("platinum", 0.1), ("gold", 0.3), ("silver", 0.6), ("bronze", 1.0)])
    # rank: 100 (1), 50 (4), 9 (7), 8 (8), 7 (2), 5 (0), 4 (9), 3 (5), 2 (6), 1 (3)
    assert wide.tolist() == ["silver", "platinum", "silver", "bronze", "gold",
                             "bronze", "bronze", "gold", "silver", "bronze"]


def test_value_tiers_hundred_customers_and_ties():
    clv = np.arange(100, dtype=float)[::-1]  # row 0 is the most valuable
    tiers = np.asarray(value_tiers(clv, np.ones(100, dtype=bool), DEFAULT_TIERS).astype(str))
    assert (tiers[:1] == "platinum").all() and (tiers[1:5] == "gold").all()
    assert (tiers[5:20] == "silver").all() and (tiers[20:] == "bronze").all()
    # ties are broken by row order; NaN CLV ranks last; outside the population: the last tier
    clv = np.array([1.0, 1.0, np.nan, 1.0, 5.0])
    pop = np.array([True, True, True, True, False])
    got = value_tiers(clv, pop, [("top", 0.5), ("rest", 1.0)]).tolist()
    assert got == ["top", "top", "rest", "rest", "rest"]
