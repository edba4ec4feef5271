"""Behavioural features: recency, frequency, activity windows, trends against the customer's own past, lifecycle.

Pure functions of the events table (canonical columns, sorted by timestamp, with ``_code``) and a
cutoff; only rows strictly before the cutoff are read (``window_slice`` stops at ``as_of``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from churn.config import FeatureConfig
from features.catalogue import FeatureBlock, FeatureSpec, count_by, rate_change, window_slice

DAY = pd.Timedelta(days=1)
LIFECYCLE_STAGES = ["new", "active", "at_risk", "dormant", "lapsed"]


def _slug(s: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in s.lower()).strip("_") or "other"


def event_types_before(events: pd.DataFrame | None, as_of: pd.Timestamp) -> list[str]:
    """Event types seen strictly before ``as_of`` (sorted), so column names never depend on the future."""
    if events is None:
        return []
    sl = window_slice(events["timestamp"], pd.Timestamp.min, as_of)
    return sorted(pd.unique(events["event_type"].iloc[sl]).tolist())


def last_time_before(codes: np.ndarray, times: np.ndarray, n: int) -> np.ndarray:
    """Latest timestamp per customer as int64 ns (INT64 min where none)."""
    last = np.full(n, np.iinfo(np.int64).min, dtype=np.int64)
    if len(codes):
        np.maximum.at(last, codes, times.astype(np.int64))
    return last


def days_since(last_ns: np.ndarray, as_of: pd.Timestamp) -> np.ndarray:
    out = (as_of.value - last_ns.astype(np.float64)) / DAY.value
    out[last_ns == np.iinfo(np.int64).min] = np.nan
    return out


def behavioral_features(
    events: pd.DataFrame,
    signup: pd.Series,
    as_of: pd.Timestamp,
    cfg: FeatureConfig,
    event_types: list[str],
) -> FeatureBlock:
    """Per-customer behaviour as of ``as_of`` for every customer row (index: row code)."""
    n = len(signup)
    ts = events["timestamp"]
    codes_all = events["_code"].to_numpy()
    etype_all = events["event_type"].to_numpy()
    value_all = events["value"].to_numpy(dtype=np.float64)
    cols: dict[str, np.ndarray] = {}
    specs: list[FeatureSpec] = []

    def add(spec: FeatureSpec, values: np.ndarray) -> None:
        cols[spec.name] = values
        specs.append(spec)

    hist = window_slice(ts, pd.Timestamp.min, as_of)
    last = last_time_before(codes_all[hist], ts.to_numpy()[hist], n)
    recency = days_since(last, as_of)
    add(FeatureSpec("days_since_last_event", "behavioral", "inactivity", "Days since last activity", "days",
                    reason="No activity for {value} days (typical customer: {typical})", risk_direction=1), recency)

    for w in sorted(cfg.windows_days):
        sl = window_slice(ts, as_of - w * DAY, as_of)
        c = codes_all[sl]
        add(FeatureSpec(f"events_{w}d", "behavioral", "activity", f"Activities in the last {w} days", "count", w,
                        reason=f"{{value}} activities in the last {w} days (typical customer: {{typical}})",
                        risk_direction=-1), count_by(c, n))
        day_key = c.astype(np.int64) * 100_000 + (ts.to_numpy()[sl].astype("datetime64[D]").astype(np.int64) % 100_000)
        uniq = np.unique(day_key)
        add(FeatureSpec(f"active_days_{w}d", "behavioral", "activity", f"Active days in the last {w} days", "count", w,
                        reason=f"Active on {{value}} of the last {w} days (typical customer: {{typical}})",
                        risk_direction=-1), count_by((uniq // 100_000).astype(np.int64), n))

    r_days, b_days = cfg.trend_recent_days, cfg.trend_baseline_days
    recent = window_slice(ts, as_of - r_days * DAY, as_of)
    base = window_slice(ts, as_of - (r_days + b_days) * DAY, as_of - r_days * DAY)
    rc, bc = codes_all[recent], codes_all[base]
    cnt_r, cnt_b = count_by(rc, n), count_by(bc, n)
    add(FeatureSpec(f"activity_trend_{r_days}_{b_days}", "behavioral", "activity",
                    f"Change in daily activity, last {r_days} days vs previous {b_days}", "rate_change", r_days,
                    reason=f"Activity {{change}} {{abs_pct}}% in the last {r_days} days compared with the previous {b_days}",
                    risk_direction=-1), rate_change(cnt_r, r_days, cnt_b, b_days))

    et_r, et_b = etype_all[recent], etype_all[base]
    for et in event_types:
        slug = _slug(et)
        mr, mb = et_r == et, et_b == et
        er, eb = count_by(rc[mr], n), count_by(bc[mb], n)
        label = et.replace("_", " ")
        add(FeatureSpec(f"{slug}_{r_days}d", "behavioral", f"{slug}_activity", f"'{label}' events in the last {r_days} days",
                        "count", r_days,
                        reason=f"{{value}} '{label}' events in the last {r_days} days (typical customer: {{typical}})",
                        risk_direction=-1), er)
        add(FeatureSpec(f"{slug}_trend_{r_days}_{b_days}", "behavioral", f"{slug}_activity",
                        f"Change in daily '{label}' events, last {r_days} days vs previous {b_days}", "rate_change", r_days,
                        reason=f"'{label.capitalize()}' events {{change}} {{abs_pct}}% in the last {r_days} days compared with the previous {b_days}",
                        risk_direction=-1), rate_change(er, r_days, eb, b_days))

    # numeric event values (e.g. session minutes): recent level against the customer's own 90-day average
    vr, vb = value_all[recent], value_all[base]
    has_value = ~np.isnan(value_all[hist]).all() if hist.stop > hist.start else False
    if has_value:
        sum_r = count_by(rc, n, vr)
        n_r = count_by(rc[~np.isnan(vr)], n)
        sum_b = count_by(bc, n, vb)
        n_b = count_by(bc[~np.isnan(vb)], n)
        with np.errstate(divide="ignore", invalid="ignore"):
            avg_r = np.where(n_r > 0, sum_r / n_r, np.nan)
            avg_all = np.where(n_r + n_b > 0, (sum_r + sum_b) / (n_r + n_b), np.nan)
            rel = avg_r / avg_all
        rel[~np.isfinite(rel)] = np.nan
        add(FeatureSpec(f"value_sum_{r_days}d", "behavioral", "usage_time", f"Total usage (event value) in the last {r_days} days",
                        "minutes", r_days, reason=f"{{value}} minutes of use in the last {r_days} days (typical customer: {{typical}})",
                        risk_direction=-1), sum_r)
        add(FeatureSpec(f"value_avg_vs_own_{r_days}d", "behavioral", "usage_time",
                        f"Average usage per event, last {r_days} days vs own {r_days + b_days}-day average", "ratio", r_days,
                        reason=f"Usage per session is {{value}}x the customer's own {r_days + b_days}-day average",
                        risk_direction=-1), rel)

    tenure = ((as_of - signup).dt.days).to_numpy(dtype=np.float64)
    add(FeatureSpec("tenure_days", "profile", "tenure", "Days since signup", "days",
                    reason="Customer for {value} days (typical customer: {typical})", risk_direction=-1), tenure)

    lc = cfg.lifecycle
    trend = cols[f"activity_trend_{r_days}_{b_days}"]
    stage = np.full(n, "active", dtype=object)
    stage[np.nan_to_num(trend, nan=0.0) <= -lc.at_risk_drop] = "at_risk"
    stage[tenure < lc.new_days] = "new"
    inactive_for = np.where(np.isnan(recency), tenure, recency)
    stage[inactive_for >= lc.dormant_days] = "dormant"
    stage[inactive_for >= lc.lapsed_days] = "lapsed"
    add(FeatureSpec("lifecycle_stage", "behavioral", "lifecycle", "Lifecycle stage", "category",
                    reason="Lifecycle stage: {label}", categorical=True),
        pd.Categorical(stage, categories=LIFECYCLE_STAGES))

    frame = pd.DataFrame(cols)
    return FeatureBlock(frame, specs)
