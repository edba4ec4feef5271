"""The feature catalogue: reason sentences, rate changes and the spec/column agreement."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.catalogue import (
    FeatureBlock,
    FeatureSpec,
    catalogue_frame,
    count_by,
    rate_change,
    render_reason,
    specs_from_frame,
)

EVENTS_30D = FeatureSpec("events_30d", "behavioral", "activity", "Activities in the last 30 days", "count", 30,
                         reason="{value} activities in the last 30 days (typical customer: {typical})", risk_direction=-1)
TREND = FeatureSpec("activity_trend_30_60", "behavioral", "activity", "Change in daily activity", "rate_change", 30,
                    reason="Activity {change} {abs_pct}% in the last 30 days compared with the previous 60")
SPEND = FeatureSpec("spend_30d", "value", "spend", "Spend in the last 30 days", "currency", 30,
                    reason="Spent {value} in the last 30 days (typical customer: {typical})")
STAGE = FeatureSpec("lifecycle_stage", "behavioral", "lifecycle", "Lifecycle stage", "category",
                    reason="Lifecycle stage: {label}", categorical=True)


def test_render_count():
    assert render_reason(EVENTS_30D, 3.0, 12.5) == "3 activities in the last 30 days (typical customer: 12.5)"
    assert render_reason(EVENTS_30D, 1234, 2000) == "1,234 activities in the last 30 days (typical customer: 2,000)"


def test_render_rate_change():
    assert render_reason(TREND, -0.4) == "Activity fell 40% in the last 30 days compared with the previous 60"
    assert render_reason(TREND, 0.25) == "Activity rose 25% in the last 30 days compared with the previous 60"
    assert render_reason(TREND, -1.0) == "Activity fell 100% in the last 30 days compared with the previous 60"


def test_render_currency_share_score():
    assert render_reason(SPEND, 1234.4, 99.6) == "Spent 1,234 in the last 30 days (typical customer: 100)"
    share = FeatureSpec("negative_share_90d", "sentiment", "s", "Share negative", "share",
                        reason="{value} of messages were negative")
    assert render_reason(share, 0.5) == "50% of messages were negative"
    score = FeatureSpec("sentiment_latest", "sentiment", "s", "Tone", "score", reason="Latest message scored {value}")
    assert render_reason(score, -0.8) == "Latest message scored -0.8"
    assert render_reason(score, 0.125) == "Latest message scored 0.12"


def test_render_nan_and_missing_typical():
    assert render_reason(EVENTS_30D, np.nan, 3) == "Activities in the last 30 days: not recorded"
    assert render_reason(EVENTS_30D, None) == "Activities in the last 30 days: not recorded"
    complaint = FeatureSpec("days_since_last_complaint", "sentiment", "complaints", "Days since last complaint", "days")
    assert render_reason(complaint, np.nan) == "No complaint on record"
    assert render_reason(EVENTS_30D, 2, np.nan) == "2 activities in the last 30 days (typical customer: n/a)"


def test_render_categorical_and_default_template():
    assert render_reason(STAGE, "at_risk") == "Lifecycle stage: at_risk"
    bare = FeatureSpec("plan", "profile", "plan", "Plan", "category", categorical=True)
    assert render_reason(bare, "pro") == "Plan: pro"
    plain = FeatureSpec("tenure_days", "profile", "tenure", "Days since signup", "days")
    assert render_reason(plain, 47, 300.5) == "Days since signup: 47 (typical customer: 300.5)"


def test_spec_rejects_unknown_family():
    with pytest.raises(ValueError, match="unknown family"):
        FeatureSpec("x", "magic", "g", "X", "count")


def test_feature_block_columns_must_match_specs():
    specs = [EVENTS_30D, SPEND]
    FeatureBlock(pd.DataFrame({"events_30d": [1.0], "spend_30d": [2.0]}), specs)
    with pytest.raises(AssertionError, match="do not match specs"):
        FeatureBlock(pd.DataFrame({"spend_30d": [2.0], "events_30d": [1.0]}), specs)  # order matters
    with pytest.raises(AssertionError, match="do not match specs"):
        FeatureBlock(pd.DataFrame({"events_30d": [1.0]}), specs)
    with pytest.raises(AssertionError, match="do not match specs"):
        FeatureBlock(pd.DataFrame({"events_30d": [1.0], "spend_30d": [2.0], "extra": [0.0]}), specs)


def test_catalogue_round_trip():
    specs = [EVENTS_30D, TREND, SPEND, STAGE, FeatureSpec("tenure_days", "profile", "tenure", "Tenure", "days")]
    frame = catalogue_frame(specs)
    assert list(frame["name"]) == [s.name for s in specs]
    assert specs_from_frame(frame) == specs
    # survives a CSV round trip (NaN window, empty reason)
    import io

    buf = io.StringIO()
    frame.to_csv(buf, index=False)
    buf.seek(0)
    assert specs_from_frame(pd.read_csv(buf)) == specs


def test_rate_change():
    recent = np.array([4.0, 1.0, 0.0, 3.0, 2.0])
    base = np.array([4.0, 5.0, 2.0, 0.0, np.nan])
    out = rate_change(recent, 30, base, 60)
    np.testing.assert_allclose(out[:3], [1.0, -0.6, -1.0])
    assert np.isnan(out[3])  # no baseline: unknown, not infinite
    assert np.isnan(out[4])


def test_count_by():
    codes = np.array([0, 2, 2, 3])
    np.testing.assert_array_equal(count_by(codes, 5), [1, 0, 2, 1, 0])
    np.testing.assert_array_equal(count_by(codes, 5, np.array([1.5, np.nan, 2.0, 4.0])), [1.5, 0, 2.0, 4.0, 0])
    assert count_by(np.array([], dtype=np.int64), 3).tolist() == [0.0, 0.0, 0.0]


def test_render_currency_plural_and_risk_side():
    from features.catalogue import risk_side

    assert render_reason(SPEND, 316.0, 156.0, currency="EUR") == "Spent EUR 316 in the last 30 days (typical customer: EUR 156)"
    one = FeatureSpec("view_7d", "behavioral", "view_activity", "'view' events", "count", 7,
                      reason="{value} 'support view' events in the last 7 days (typical customer: {typical})", risk_direction=-1)
    assert render_reason(one, 1.0, 0.0) == "1 'support view' event in the last 7 days (typical customer: 0)"
    assert render_reason(one, 2.0, 1.0) == "2 'support view' events in the last 7 days (typical customer: 1)"
    # fewer events than typical is the risky side of a risk_direction -1 feature; more is the safe side
    assert (risk_side(one, 1.0, 5.0), risk_side(one, 9.0, 5.0), risk_side(one, 5.0, 5.0)) == (1, -1, 0)
    assert risk_side(TREND, -0.4, 0.3) == 0  # no risk direction declared
    trend = FeatureSpec("t", "behavioral", "activity", "Change", "rate_change", 30, risk_direction=-1)
    assert (risk_side(trend, -0.4, -0.6), risk_side(trend, 0.1, 0.5)) == (1, -1)  # against own past, not typical
    flag = FeatureSpec("purchase_drop_flag", "value", "purchases", "Drop", "flag", 30, risk_direction=1)
    assert (risk_side(flag, 1.0, 0.0), risk_side(flag, 0.0, 0.0)) == (1, 0)
    never = FeatureSpec("days_since_last_purchase", "value", "purchases", "Days since purchase", "days", risk_direction=1)
    assert risk_side(never, np.nan, 12.0) == 1 and render_reason(never, np.nan) == "No purchase or payment on record"
