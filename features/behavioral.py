"""Behavioural features: recency, frequency, activity windows, trends against the customer's own past, lifecycle.

Pure functions of the events table (canonical columns, sorted by timestamp, with ``_code``) and a
cutoff; only rows strictly before the cutoff are read (``window_slice`` stops at ``as_of``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from churn.config import FeatureConfig
from churn.timebase import (
    DAY,
    DAYS_PER_MONTH,
    as_ns,
    days_since,
    first_time_before,
    last_time_before,
    window_slice,
)
from churn.vocab import LIFECYCLE_STAGES
from features.catalogue import FeatureBlock, FeatureSpec, count_by, rate_change


def _slug(s: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in s.lower()).strip("_") or "other"


def event_types_before(events: pd.DataFrame | None, as_of: pd.Timestamp) -> list[str]:
    """Event types seen strictly before ``as_of`` (sorted), so column names never depend on the future."""
    if events is None:
        return []
    sl = window_slice(events["timestamp"], pd.Timestamp.min, as_of)
    col = events["event_type"].iloc[sl]
    if isinstance(col.dtype, pd.CategoricalDtype):  # no per-row strings: categories actually present
        cats = col.cat.categories
        present = np.bincount(col.cat.codes.to_numpy()[col.cat.codes.to_numpy() >= 0], minlength=len(cats)) > 0
        return sorted(str(c) for c in cats[present])
    return sorted(pd.unique(col).tolist())


def type_codes(col: pd.Series, types: list[str]) -> np.ndarray:
    """Per row, the index of its event type in ``types`` (-1: another type); no Python string per row."""
    lookup = {t: i for i, t in enumerate(types)}
    if isinstance(col.dtype, pd.CategoricalDtype):
        inv, uniq = col.cat.codes.to_numpy(), col.cat.categories
    else:
        inv, uniq = pd.factorize(col)
    mapping = np.array([lookup.get(str(u), -1) for u in uniq] + [-1], dtype=np.int16)
    return mapping[inv]  # a missing type (code -1) picks the trailing -1


_BITMAP_MAX = 600_000_000  # cells (bytes) of the day x customer activity bitmap: ~90 days x 6.7M customers


def _day_bitmap(n: int, days: int) -> np.ndarray | None:
    """A (days x customers) activity bitmap, or None when it would be too big (then a sort-based path runs)."""
    return np.zeros((days, n), dtype=bool) if days * n <= _BITMAP_MAX else None


def behavioral_features(
    events: pd.DataFrame,
    signup: pd.Series,
    as_of: pd.Timestamp,
    cfg: FeatureConfig,
    event_types: list[str],
) -> FeatureBlock:
    """Per-customer behaviour as of ``as_of`` for every customer row (index: row code).

    Every window is a ``window_slice`` of the time-sorted table ending at ``as_of`` (exclusive). The
    largest window is sliced once; smaller windows are suffixes of it, so per-row work (event-type
    codes, day indices) is done once for the rows of the largest window only.
    """
    n = len(signup)
    ts = events["timestamp"]
    codes_all = events["_code"].to_numpy()
    value_all = events["value"].to_numpy(dtype=np.float64)
    cols: dict[str, np.ndarray] = {}
    specs: list[FeatureSpec] = []

    def add(spec: FeatureSpec, values: np.ndarray) -> None:
        cols[spec.name] = values
        specs.append(spec)

    windows = sorted(set(cfg.windows_days))
    r_days, b_days = cfg.trend_recent_days, cfg.trend_baseline_days
    gap_days = cfg.gap_window_days
    longest = max([*windows, r_days + b_days, gap_days])
    big = window_slice(ts, as_of - longest * DAY, as_of)
    t_big = as_ns(ts.to_numpy()[big])
    c_big = codes_all[big]

    def sub(days: int, end_days: int = 0) -> slice:
        """Rows of ``[as_of - days, as_of - end_days)`` as a slice into the largest window's arrays."""
        sl = window_slice(ts, as_of - days * DAY, as_of - end_days * DAY)
        return slice(sl.start - big.start, sl.stop - big.start)

    hist = window_slice(ts, pd.Timestamp.min, as_of)
    c_hist = codes_all[hist]
    last = last_time_before(c_hist, ts.to_numpy()[hist], n)
    recency = days_since(last, as_of)
    add(FeatureSpec("days_since_last_event", "behavioral", "inactivity", "Days since last activity", "days",
                    reason="No event in the activity log for {value} days (payments are counted apart; typical customer: "
                           "{typical})", risk_direction=1), recency)

    # calendar-day activity bitmap, filled window by window (each window adds the rows the previous lacked)
    as_of_day = (as_of - pd.Timedelta(1, "ns")).value // DAY.value  # the calendar day just before the cutoff
    cal = as_of_day - (t_big // DAY.value)  # 0 = that day, 1 = the day before, ...
    bitmap = _day_bitmap(n, longest + 1)
    filled = 0  # rows (from the end of the largest window) already in the bitmap
    counts: dict[int, np.ndarray] = {}
    for w in windows:
        sl = sub(w)
        c = c_big[sl]
        counts[w] = count_by(c, n)
        add(FeatureSpec(f"events_{w}d", "behavioral", "activity", f"Activities in the last {w} days", "count", w,
                        reason=f"{{value}} activities in the last {w} days (typical customer: {{typical}})",
                        risk_direction=-1), counts[w])
        if bitmap is not None:
            new = slice(sl.start, len(c_big) - filled)
            bitmap[cal[new], c_big[new]] = True
            filled = len(c_big) - sl.start
            active = np.count_nonzero(bitmap, axis=0).astype(np.float64)
        else:
            day_key = c.astype(np.int64) * (longest + 2) + cal[sl]
            active = count_by((np.unique(day_key) // (longest + 2)).astype(np.int64), n)
        add(FeatureSpec(f"active_days_{w}d", "behavioral", "activity", f"Active days in the last {w} days", "count", w,
                        reason=f"Active on {{value}} of the last {w} days (typical customer: {{typical}})",
                        risk_direction=-1), active)

    recent, base = sub(r_days), sub(r_days + b_days, r_days)
    rc, bc = c_big[recent], c_big[base]
    cnt_r, cnt_b = count_by(rc, n), count_by(bc, n)
    add(FeatureSpec(f"activity_trend_{r_days}_{b_days}", "behavioral", "activity",
                    f"Change in daily activity, last {r_days} days vs previous {b_days}", "rate_change", r_days,
                    reason=f"Activity {{change}} {{abs_pct}}% in the last {r_days} days compared with the previous {b_days}",
                    risk_direction=-1), rate_change(cnt_r, r_days, cnt_b, b_days))

    # per-type counts: one bincount of (customer, type) per window -> an (n, types) matrix
    n_types = len(event_types)
    tc_big = type_codes(events["event_type"].iloc[big], event_types) if n_types else np.zeros(len(c_big), np.int16)

    def type_matrix(sl: slice) -> np.ndarray:
        tc = tc_big[sl]
        ok = tc >= 0
        key = c_big[sl][ok].astype(np.int64) * n_types + tc[ok]
        return np.bincount(key, minlength=n * n_types).astype(np.float64).reshape(n, n_types)

    by_type: dict[int, np.ndarray] = {}
    if n_types:
        by_type[r_days] = type_matrix(recent)
        base_types = type_matrix(base)
    for i, et in enumerate(event_types):
        slug = _slug(et)
        er, eb = by_type[r_days][:, i], base_types[:, i]
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
    v_big = value_all[big]
    vr, vb = v_big[recent], v_big[base]
    has_value = ~np.isnan(value_all[hist]).all() if hist.stop > hist.start else False
    sum_r = sum_b = None
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

    # ---- per-window event-type counts and usage sums (the trend window's are above)
    for w in windows:
        if w == r_days:
            continue
        sl = sub(w)
        if n_types:
            by_type[w] = type_matrix(sl)
        for i, et in enumerate(event_types):
            slug, label = _slug(et), et.replace("_", " ")
            add(FeatureSpec(f"{slug}_{w}d", "behavioral", f"{slug}_activity", f"'{label}' events in the last {w} days",
                            "count", w, reason=f"{{value}} '{label}' events in the last {w} days (typical customer: {{typical}})",
                            risk_direction=-1), by_type[w][:, i])
        if has_value:
            add(FeatureSpec(f"value_sum_{w}d", "behavioral", "usage_time", f"Total usage (event value) in the last {w} days",
                            "minutes", w, reason=f"{{value}} minutes of use in the last {w} days (typical customer: {{typical}})",
                            risk_direction=-1), count_by(c_big[sl], n, v_big[sl]))

    # ---- early-warning flag: usage time in the recent window below a share of the customer's own baseline
    if has_value:
        usage_trend = rate_change(sum_r, r_days, sum_b, b_days)
        add(FeatureSpec(f"value_trend_{r_days}_{b_days}", "behavioral", "usage_time",
                        f"Change in daily usage (event value), last {r_days} days vs previous {b_days}", "rate_change",
                        r_days, reason=f"Usage time {{change}} {{abs_pct}}% in the last {r_days} days compared with the previous {b_days}",
                        risk_direction=-1), usage_trend)
        share = cfg.usage_low_share
        add(FeatureSpec("usage_low_flag", "behavioral", "usage_time",
                        f"Usage time in the last {r_days} days below {share:.0%} of the customer's own average", "flag",
                        r_days, reason=f"Usage time below {share:.0%} of the customer's own average (last {r_days} days vs previous {b_days})",
                        risk_direction=1), (np.nan_to_num(usage_trend, nan=0.0) < share - 1.0).astype(np.float64))

    # ---- ratios between behaviours (e.g. support views per login), over the longest configured window
    w_ratio = windows[-1]
    for num, den in cfg.ratios:
        if num not in event_types or den not in event_types:
            continue
        m = by_type[w_ratio]
        a, b = m[:, event_types.index(num)], m[:, event_types.index(den)]
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(b > 0, a / b, np.nan)
        sn, sd = _slug(num), _slug(den)
        ln, ld = num.replace("_", " "), den.replace("_", " ")
        add(FeatureSpec(f"{sn}_per_{sd}_{w_ratio}d", "behavioral", f"{sn}_per_{sd}",
                        f"'{ln}' events per '{ld}' event, last {w_ratio} days", "ratio", w_ratio,
                        reason=f"{{value}} '{ln}' events per '{ld}' in the last {w_ratio} days (typical customer: {{typical}})",
                        risk_direction=0), ratio)

    # ---- gaps between events: mean gap, longest inactive stretch (the current one included)
    gsl = sub(gap_days)
    gc, gt = c_big[gsl], t_big[gsl]
    midnight = as_of == as_of.normalize()  # then calendar days before the cutoff are the gap days
    if bitmap is not None and midnight and gsl.start < len(c_big) - filled:
        new = slice(gsl.start, len(c_big) - filled)
        bitmap[cal[new], c_big[new]] = True
    k = count_by(gc, n)
    first_g = first_time_before(gc, gt, n)
    last_g = last_time_before(gc, gt, n)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_gap = np.where(k >= 2, (last_g - first_g).astype(np.float64) / DAY.value / (k - 1), np.nan)
    add(FeatureSpec(f"event_gap_mean_{gap_days}d", "behavioral", "activity_gaps",
                    f"Average days between activities, last {gap_days} days", "days", gap_days,
                    reason=f"On average {{value}} days between activities in the last {gap_days} days (typical customer: {{typical}})",
                    risk_direction=1), mean_gap)
    data_start = ts.iloc[0] if len(ts) else as_of
    add(FeatureSpec(f"longest_inactive_days_{gap_days}d", "behavioral", "inactivity",
                    f"Longest run of days without activity, last {gap_days} days", "days", gap_days,
                    reason=f"Longest stretch without an event in the activity log in the last {gap_days} days: {{value}} days "
                           "(typical customer: {typical})",
                    risk_direction=1),
        _longest_inactive(gc, gt, n, as_of, gap_days, signup, data_start,
                          bitmap[:gap_days] if bitmap is not None and midnight else None))

    # ---- per-month rate over the observed tenure (at least one month, so a new customer's rate is not inflated)
    observed_from = np.maximum(as_ns(signup.to_numpy()), pd.Timestamp(data_start).value)
    months = np.clip((as_of.value - observed_from) / DAY.value / DAYS_PER_MONTH, 1.0, None)
    add(FeatureSpec("events_per_month", "behavioral", "activity", "Activities per month over the customer's observed tenure",
                    "count", reason="{value} activities a month over the customer's tenure (typical customer: {typical})",
                    risk_direction=-1), count_by(c_hist, n) / months)

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


def _longest_inactive(codes: np.ndarray, times_ns: np.ndarray, n: int, as_of: pd.Timestamp, days: int,
                      signup: pd.Series, data_start: pd.Timestamp, bitmap: np.ndarray | None) -> np.ndarray:
    """Longest run of whole days without activity in ``[as_of - days, as_of)``, per customer.

    Day ``j`` is ``[as_of - (j + 1) days, as_of - j days)``; days before signup or before the data starts are
    not counted as inactive (they break a run). ``bitmap`` (days x n), when given, already marks active days.
    """
    if bitmap is None:
        rel = (as_of.value - 1 - times_ns) // DAY.value
        bitmap = np.zeros((days, n), dtype=bool)
        bitmap[rel, codes] = True
    first_day = max(as_of - days * DAY, pd.Timestamp(data_start))
    observed = int(np.floor((as_of - first_day) / DAY))  # days j < observed lie inside the data
    # whole days since signup: day j counts only if it starts at or after signup
    whole = np.floor((as_of.value - as_ns(signup.to_numpy()).astype(np.float64)) / DAY.value)
    limit = np.minimum(np.nan_to_num(whole, nan=0.0), observed).astype(np.int64)
    run = np.zeros(n, dtype=np.int32)
    best = np.zeros(n, dtype=np.int32)
    for j in range(min(days, observed) - 1, -1, -1):  # oldest day first
        run += 1
        run[bitmap[j] | (limit <= j)] = 0
        np.maximum(best, run, out=best)
    return best.astype(np.float64)
