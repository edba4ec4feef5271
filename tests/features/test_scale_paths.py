"""The feature engine's fast paths and the richer behavioural / sentiment / value features.

* hand-checked values of the new features on the conftest tables (windows: see conftest's docstring);
* the vectorised paths (calendar-day bitmap, sort fallback, categorical event types, non-midnight cutoffs)
  agree with a plain per-customer reference on a dataset from the scale benchmark's generator;
* the benchmark's generator produces the shapes it promises.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from churn.vocab import REASON_FAMILIES as FAMILIES
from features import behavioral
from features.behavioral import behavioral_features
from features.build import FeatureBuilder
from features.contract import load_tables
from features.sentiment import prepare_interactions, sentiment_features
from tests.features.conftest import (
    CUTOFF,
    KeywordScorer,
    make_config,
    raw_frames,
    tables_from_frames,
)

ROOT = Path(__file__).resolve().parents[2]
DAY = pd.Timedelta(days=1)


def _bench():
    spec = importlib.util.spec_from_file_location("features_scale", ROOT / "benchmarks" / "features_scale.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _build(frames=None, **features):
    cfg = make_config(**features)
    tables = tables_from_frames(frames or raw_frames(), cfg)
    fs = FeatureBuilder(tables, cfg, scorer=KeywordScorer()).build(CUTOFF)
    return fs.frame.set_index("customer_id"), {s.name: s for s in fs.specs}


# --------------------------------------------------------------------------- hand-checked values
def test_new_behavioral_features_by_hand():
    f, specs = _build(ratios=[["view", "login"], ["login", "nope"]])
    a, b, c, g = f.loc["A"], f.loc["B"], f.loc["C"], f.loc["G"]
    # per-type counts in every window (A: logins 05-28, 05-31 in 7 days; 6 logins and 2 views in 90 days)
    assert (a["login_7d"], a["view_7d"], a["login_90d"], a["view_90d"]) == (2, 1, 6, 2)
    assert (a["login_30d"], c["login_90d"], c["view_90d"]) == (3, 5, 1)
    # usage (event value) sums per window and the usage trend: 60 min in 30 days vs 30 in the previous 60
    assert (a["value_sum_7d"], a["value_sum_30d"], a["value_sum_90d"]) == (50, 60, 90)
    assert a["value_trend_30_60"] == pytest.approx(3.0) and a["usage_low_flag"] == 0
    # ratio over the longest window; a pair with an unknown type is skipped
    assert a["view_per_login_90d"] == pytest.approx(2 / 6) and np.isnan(g["view_per_login_90d"])
    assert not any(n.startswith("login_per_nope") for n in specs)
    # mean gap = (last - first) / (k - 1): A 03-10 09:00 .. 05-31 12:00 over 7 gaps
    assert a["event_gap_mean_90d"] == pytest.approx((82 + 3 / 24) / 7)
    assert np.isnan(g["event_gap_mean_90d"])
    # longest whole-day stretch without activity: A 05-06..05-27 (22 days); B 29 days between its logins
    # (days before B's signup do not count); C the current streak (28 days); G never active: all 90 days
    assert (a["longest_inactive_days_90d"], b["longest_inactive_days_90d"]) == (22, 29)
    assert (c["longest_inactive_days_90d"], g["longest_inactive_days_90d"]) == (28, 90)
    # events per month of observed tenure: observed from the first event in the data (A: 2024-01-15 09:00)
    assert a["events_per_month"] == pytest.approx(9 / ((137 + 15 / 24) / 30.4375))
    assert g["events_per_month"] == 0
    # the existing features keep their values
    assert (a["events_7d"], a["active_days_7d"], a["days_since_last_event"]) == (3, 2, 0.5)
    for name in ("login_7d", "value_sum_90d", "usage_low_flag", "view_per_login_90d", "event_gap_mean_90d",
                 "longest_inactive_days_90d", "events_per_month"):
        s = specs[name]
        assert s.family == "behavioral" and s.reason and s.unit
    assert specs["login_7d"].group == specs["login_30d"].group == "login_activity"
    assert specs["longest_inactive_days_90d"].group == "inactivity" and specs["usage_low_flag"].risk_direction == 1


def test_usage_low_flag_fires_below_share_of_own_average():
    frames = raw_frames()
    ev = frames["events"]
    # F: 100 minutes in the baseline (0.2 a day x 60... ), 10 minutes in the last 30 days -> well below 60%
    extra = pd.DataFrame([("F", "2024-03-20 00:00", "login", 100.0), ("F", "2024-05-20 00:00", "login", 10.0)],
                         columns=ev.columns)
    frames["events"] = pd.concat([ev, extra], ignore_index=True)
    f, _ = _build(frames)
    assert f.loc["F", "value_trend_30_60"] == pytest.approx((10 / 30) / (100 / 60) - 1)
    assert f.loc["F", "usage_low_flag"] == 1 and f.loc["A", "usage_low_flag"] == 0


def test_new_sentiment_features_by_hand():
    f, specs = _build()
    a, c, fc = f.loc["A"], f.loc["C"], f.loc["F"]
    assert (a["sentiment_mean_30d"], a["sentiment_min_30d"], a["negative_share_30d"]) == (-0.8, -0.8, 1.0)
    assert a["sentiment_trend_30_60"] == pytest.approx(-0.8 - 0.6)  # 05-20 angry vs 04-10 happy
    assert np.isnan(c["sentiment_mean_30d"])  # C's only 30-day message has no text
    assert (a["days_since_last_interaction"], c["days_since_last_interaction"]) == (12, 7)
    assert (a["complaints_billing_90d"], c["complaints_cancellation_90d"], a["complaints_technical_90d"]) == (1, 1, 0)
    assert (a["mentions_billing_90d"], fc["mentions_billing_90d"], c["mentions_billing_90d"]) == (1, 1, 0)
    assert (c["escalations_90d"], a["escalations_90d"]) == (1, 0)
    # no response/resolution columns, 1-5 ratings: no support-speed or NPS features
    assert not any(n.startswith(("response_hours", "resolution_hours", "open_complaints", "nps_")) for n in specs)
    assert specs["complaints_billing_90d"].group == "complaints" and specs["escalations_90d"].group == "escalations"


def test_escalations_by_keyword():
    cfg = make_config(sentiment={"scorer": "builtin", "complaint_keywords": {"cancellation": ["cancel"]},
                                 "complaint_categories": ["billing"]})
    frames = raw_frames()
    it = frames["interactions"]
    frames["interactions"] = pd.concat([it, pd.DataFrame(
        [("B", "2024-05-30", "chat", "question", "please CANCEL my plan", None)], columns=it.columns)],
        ignore_index=True)
    tables = tables_from_frames(frames, cfg)
    f = FeatureBuilder(tables, cfg, scorer=KeywordScorer()).build(CUTOFF).frame.set_index("customer_id")
    assert f.loc["B", "escalations_90d"] == 1 and f.loc["B", "mentions_cancellation_90d"] == 1
    assert f.loc["C", "escalations_90d"] == 1  # category 'cancellation' (default escalation category)


def _with_support_times(frames: dict[str, pd.DataFrame], rating_scale_10: bool = False) -> dict[str, pd.DataFrame]:
    it = frames["interactions"].copy()
    # A's 05-20 billing complaint: response after 4 h, resolved after 12.5 days (after T); 04-10 chat: 2 h / 30 h
    it["response_hours"] = np.nan
    it["resolution_hours"] = np.nan
    it.loc[it["timestamp"].eq("2024-05-20"), ["response_hours", "resolution_hours"]] = [4.0, 300.0]
    it.loc[it["timestamp"].eq("2024-04-10"), ["response_hours", "resolution_hours"]] = [2.0, 30.0]
    # C's 05-25 cancellation: answered after 200 h (after the cutoff), never resolved
    it.loc[it["timestamp"].eq("2024-05-25"), ["response_hours"]] = [200.0]
    # F's 04-25 keyword complaint: resolved after 24 h
    it.loc[it["timestamp"].eq("2024-04-25"), ["response_hours", "resolution_hours"]] = [1.0, 24.0]
    if rating_scale_10:
        it["rating"] = it["rating"] * 2  # 2, 4, 6, 10 (A: 10 then 4)
        it.loc[it["timestamp"].eq("2024-05-01"), "rating"] = 9.0  # C: a promoter
    frames["interactions"] = it
    return frames


def test_support_speed_uses_only_what_is_known_at_the_cutoff():
    f, specs = _build(_with_support_times(raw_frames()))
    a, c, fc = f.loc["A"], f.loc["C"], f.loc["F"]
    assert a["response_hours_mean_90d"] == pytest.approx(3.0)
    assert a["resolution_hours_mean_90d"] == pytest.approx(30.0)  # the 300 h resolution ends after the cutoff
    assert np.isnan(c["response_hours_mean_90d"])  # its response came after the cutoff
    assert (a["open_complaints_90d"], c["open_complaints_90d"], fc["open_complaints_90d"]) == (1, 1, 0)
    assert fc["resolution_hours_mean_90d"] == pytest.approx(24.0)
    assert specs["open_complaints_90d"].group == "support_speed"


def test_nps_on_a_ten_point_scale_only():
    f, specs = _build(_with_support_times(raw_frames(), rating_scale_10=True))
    # A: ratings 10 (promoter) and 4 (detractor) -> 0; C: 9 (promoter) and 2 (detractor) in 90 days -> 0
    assert f.loc["A", "nps_90d"] == pytest.approx(0.0) and f.loc["C", "nps_90d"] == pytest.approx(0.0)
    assert np.isnan(f.loc["B", "nps_90d"])
    frames = _with_support_times(raw_frames(), rating_scale_10=True)
    frames["interactions"] = frames["interactions"][~frames["interactions"]["timestamp"].eq("2024-05-20")]
    f2, _ = _build(frames)
    assert f2.loc["A", "nps_90d"] == pytest.approx(1.0)
    _, specs5 = _build()
    assert "nps_90d" in specs and "nps_90d" not in specs5
    cfg = make_config(sentiment={"scorer": "builtin", "rating_scale_max": 10})
    assert "nps_90d" in {s.name for s in FeatureBuilder(tables_from_frames(raw_frames(), cfg), cfg,
                                                       scorer=KeywordScorer()).build(CUTOFF).specs}


def test_value_flags_and_rates():
    f, specs = _build()
    # B: 2 payments since its signup 47 days ago (1.54 months)
    assert f.loc["B", "purchases_per_month"] == pytest.approx(2 / (47 / 30.4375))
    assert f.loc["A", "purchase_drop_flag"] == 0
    frames = raw_frames()
    tx = frames["transactions"]
    # A: three payments in the baseline, none in the last 30 days -> purchase frequency -100%
    frames["transactions"] = tx[~tx["timestamp"].eq("2024-05-15")]
    f2, _ = _build(frames)
    assert f2.loc["A", "purchase_trend_30_60"] == -1 and f2.loc["A", "purchase_drop_flag"] == 1
    s = specs["purchase_drop_flag"]
    assert (s.family, s.group, s.risk_direction, s.unit) == ("value", "purchases", 1, "flag")
    assert "mrr" not in specs


def test_every_spec_is_complete():
    _, specs = _build(_with_support_times(raw_frames(), rating_scale_10=True))
    for s in specs.values():
        assert s.family in FAMILIES and s.group and s.unit and s.reason, s


# --------------------------------------------------------------------------- fast paths vs a reference
@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """A small dataset (2,000 customers, 100,000 events) from the scale benchmark's generator."""
    bench = _bench()
    folder = tmp_path_factory.mktemp("scale") / "raw"
    bench.generate(folder, bench._sizes(0.002))
    cfg = make_config(tables={
        "customers": {"file": "customers", "attributes": ["plan", "region"]},
        "events": {"file": "events"}, "transactions": {"file": "transactions"},
        "interactions": {"file": "interactions"},
    })
    return load_tables(folder, cfg.data), cfg, bench


def _reference_behavioral(events: pd.DataFrame, signup: pd.Series, as_of: pd.Timestamp, types: list[str],
                          windows: list[int], gap_days: int) -> pd.DataFrame:
    """Per-customer loops over plain Python values: the definitions, not the vectorised code."""
    data_start = events["timestamp"].iloc[0]
    longest = max([*windows, gap_days])
    recent = events[(events["timestamp"] >= as_of - longest * DAY) & (events["timestamp"] < as_of)]
    stamps = recent["timestamp"].tolist()
    kinds = recent["event_type"].astype(str).tolist()
    out = {}
    for code, rows in recent.groupby("_code").indices.items():
        rows = [(stamps[i], kinds[i]) for i in rows]
        row = {}
        for w in windows:
            inw = [(t, k) for t, k in rows if t >= as_of - w * DAY]
            row[f"active_days_{w}d"] = float(len({t.date() for t, _ in inw}))
            for ty in types:
                row[f"{ty}_{w}d"] = float(sum(k == ty for _, k in inw))
        g = sorted(t for t, _ in rows if t >= as_of - gap_days * DAY)
        row[f"event_gap_mean_{gap_days}d"] = (
            float(np.mean([(b - a) / DAY for a, b in zip(g, g[1:], strict=False)])) if len(g) >= 2 else np.nan)
        active = {int((as_of - t - pd.Timedelta(1, "ns")) // DAY) for t in g}
        tenure_whole = int((as_of - signup.iloc[code]) // DAY)
        observed = int((as_of - max(as_of - gap_days * DAY, data_start)) // DAY)
        run = best = 0
        for j in range(min(gap_days, observed) - 1, -1, -1):
            run = 0 if (j in active or j >= min(tenure_whole, observed)) else run + 1
            best = max(best, run)
        row[f"longest_inactive_days_{gap_days}d"] = float(best)
        out[code] = row
    ref = pd.DataFrame.from_dict(out, orient="index")
    ref.index = ref.index.astype(np.int64)
    return ref


@pytest.mark.parametrize("as_of", ["2025-06-01", "2025-06-01 13:30"], ids=["midnight", "afternoon"])
def test_vectorised_behavioral_matches_reference(generated, as_of):
    tables, cfg, _ = generated
    as_of = pd.Timestamp(as_of)
    types = behavioral.event_types_before(tables.events, as_of)
    fcfg = cfg.features
    block = behavioral_features(tables.events, tables.customers["signup_date"], as_of, fcfg, types)
    ref = _reference_behavioral(tables.events, tables.customers["signup_date"], as_of, types,
                                list(fcfg.windows_days), fcfg.gap_window_days)
    got = block.frame.loc[ref.index, ref.columns]
    pd.testing.assert_frame_equal(got, ref, check_dtype=False, rtol=1e-9)
    # customers without history: zero counts, NaN gaps
    quiet = np.setdiff1d(np.arange(len(tables.customers)), ref.index)
    assert (block.frame.loc[quiet, "active_days_90d"] == 0).all()
    assert block.frame.loc[quiet, "event_gap_mean_90d"].isna().all()


@pytest.mark.parametrize("as_of", ["2025-06-01", "2025-06-01 13:30"], ids=["midnight", "afternoon"])
def test_bitmap_and_sort_fallback_agree(generated, as_of, monkeypatch):
    tables, cfg, _ = generated
    as_of = pd.Timestamp(as_of)
    types = behavioral.event_types_before(tables.events, as_of)
    args = (tables.events, tables.customers["signup_date"], as_of, cfg.features, types)
    fast = behavioral_features(*args).frame
    monkeypatch.setattr(behavioral, "_BITMAP_MAX", 0)  # too many customers for the bitmap: sort-based path
    slow = behavioral_features(*args).frame
    pd.testing.assert_frame_equal(fast, slow)


def test_categorical_and_string_event_types_agree(generated):
    tables, cfg, _ = generated
    as_of = pd.Timestamp("2025-09-01")
    ev_cat = tables.events.assign(event_type=tables.events["event_type"].astype("category"))
    assert isinstance(ev_cat["event_type"].dtype, pd.CategoricalDtype)
    types = behavioral.event_types_before(tables.events, as_of)
    assert behavioral.event_types_before(ev_cat, as_of) == types
    a = behavioral_features(tables.events, tables.customers["signup_date"], as_of, cfg.features, types)
    b = behavioral_features(ev_cat, tables.customers["signup_date"], as_of, cfg.features, types)
    pd.testing.assert_frame_equal(a.frame, b.frame)
    # a fixed type list that names a type absent from the data gives zeros, not an error
    c = behavioral_features(ev_cat, tables.customers["signup_date"], as_of, cfg.features, [*types, "zzz"])
    assert (c.frame["zzz_90d"] == 0).all()


def test_sentiment_on_generated_data(generated):
    tables, cfg, _ = generated
    inter = prepare_interactions(tables.interactions, cfg.features.sentiment, KeywordScorer())
    as_of = pd.Timestamp("2025-09-01")
    block = sentiment_features(inter, len(tables.customers), as_of, cfg.features.sentiment)
    f = block.frame
    lw = inter[(inter["timestamp"] >= as_of - 90 * DAY) & (inter["timestamp"] < as_of)]
    assert f["interactions_90d"].sum() == len(lw)
    assert f["complaints_billing_90d"].sum() == (lw["category"] == "billing").sum()
    if "response_hours" in inter:  # the contract maps the optional support-time columns
        assert {"response_hours_mean_90d", "resolution_hours_mean_90d", "open_complaints_90d"} <= set(f.columns)
        done = lw[lw["timestamp"] + pd.to_timedelta(lw["response_hours"], unit="h") < as_of]
        ref = done.groupby("_code")["response_hours"].mean()
        np.testing.assert_allclose(f.loc[ref.index, "response_hours_mean_90d"], ref.to_numpy())


# --------------------------------------------------------------------------- the benchmark's generator
def test_benchmark_generator_shapes(generated):
    tables, _, bench = generated
    sizes = bench._sizes(0.002)
    assert len(tables.customers) == sizes["customers"]
    assert len(tables.events) == sizes["events"] and len(tables.transactions) == sizes["transactions"]
    assert len(tables.interactions) == sizes["interactions"]
    assert sorted(tables.events["event_type"].unique()) == sorted(bench.EVENT_TYPES)
    span = tables.events["timestamp"].iloc[-1] - tables.events["timestamp"].iloc[0]
    assert pd.Timedelta(days=700) < span <= pd.Timedelta(days=731)
    assert tables.interactions["text"].nunique() > 1000
    assert tables.customers["churn_date"].notna().mean() > 0.1
