"""Behavioural features: recency, frequency, activity windows, trends against the customer's own past, lifecycle.

Pure functions of the events table (canonical columns, sorted by timestamp, with ``_code``) and a
cutoff; only rows strictly before the cutoff are read (``window_slice`` stops at ``as_of``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from churn.config import FeatureConfig, LifecycleConfig
from churn.timebase import (
    DAY,
    as_ns,
    days_since,
    first_time_before,
    last_time_before,
    months_observed,
    window_slice,
)
from churn.vocab import LIFECYCLE_STAGES
from features.catalogue import FeatureBlock, Features, FeatureSpec, count_by, rate_change


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


@dataclass(frozen=True)
class _Window:
    """The rows of the largest window ``[as_of - longest days, as_of)``, read once.

    Every smaller window is a suffix of it, so per-row work (codes, times, calendar days, values) is done once
    for these rows only; :meth:`sub` gives any window as a slice into these arrays.
    """

    n: int
    as_of: pd.Timestamp
    ts: pd.Series
    big: slice
    longest: int
    codes: np.ndarray  # customer row codes
    times: np.ndarray  # int64 ns
    values: np.ndarray  # event values (float64)
    cal: np.ndarray  # calendar day before the cutoff: 0 = the day just before it, 1 = the day before that, ...

    def sub(self, days: int, end_days: int = 0) -> slice:
        """Rows of ``[as_of - days, as_of - end_days)`` as a slice into the largest window's arrays."""
        sl = window_slice(self.ts, self.as_of - days * DAY, self.as_of - end_days * DAY)
        return slice(sl.start - self.big.start, sl.stop - self.big.start)


def _read_window(events: pd.DataFrame, n: int, as_of: pd.Timestamp, cfg: FeatureConfig) -> _Window:
    """Slice the largest window any behavioural feature reads, and precompute its per-row arrays."""
    ts = events["timestamp"]
    longest = max([*cfg.windows_days, cfg.trend_recent_days + cfg.trend_baseline_days, cfg.gap_window_days])
    big = window_slice(ts, as_of - longest * DAY, as_of)
    times = as_ns(ts.to_numpy()[big])
    as_of_day = (as_of - pd.Timedelta(1, "ns")).value // DAY.value  # the calendar day just before the cutoff
    return _Window(n=n, as_of=as_of, ts=ts, big=big, longest=longest, codes=events["_code"].to_numpy()[big],
                   times=times, values=events["value"].to_numpy(dtype=np.float64)[big],
                   cal=as_of_day - (times // DAY.value))


def behavioral_features(
    events: pd.DataFrame,
    signup: pd.Series,
    as_of: pd.Timestamp,
    cfg: FeatureConfig,
    event_types: list[str],
) -> FeatureBlock:
    """Per-customer behaviour as of ``as_of`` for every customer row (index: row code).

    Every window is a ``window_slice`` of the time-sorted table ending at ``as_of`` (exclusive); the steps
    below each compute one group of features, in catalogue order.
    """
    n = len(signup)
    ts = events["timestamp"]
    win = _read_window(events, n, as_of, cfg)
    windows = sorted(set(cfg.windows_days))
    r_days, b_days = cfg.trend_recent_days, cfg.trend_baseline_days
    hist = window_slice(ts, pd.Timestamp.min, as_of)
    c_hist = events["_code"].to_numpy()[hist]
    recency = days_since(last_time_before(c_hist, ts.to_numpy()[hist], n), as_of)
    has_value = ~np.isnan(events["value"].to_numpy(dtype=np.float64)[hist]).all() if hist.stop > hist.start else False
    tenure = ((as_of - signup).dt.days).to_numpy(dtype=np.float64)
    data_start = ts.iloc[0] if len(ts) else as_of
    by_type, base_types = _type_matrices(win, events["event_type"].iloc[win.big], event_types,
                                         [r_days, *windows], (r_days + b_days, r_days))

    pairs: Features = [(_RECENCY_SPEC, recency)]
    activity, bitmap, filled = _activity_windows(win, windows)
    pairs += activity
    trend = _activity_trend(win, r_days, b_days)
    pairs += trend
    pairs += _type_trends(event_types, by_type.get(r_days), base_types, r_days, b_days)
    usage, sums = _usage_recent(win, r_days, b_days) if has_value else ([], None)
    pairs += usage
    pairs += _window_type_counts(win, event_types, by_type, windows, r_days, has_value)
    if sums is not None:
        pairs += _usage_trend(*sums, r_days, b_days, cfg.usage_low_share)
    pairs += _ratios(by_type.get(windows[-1]), event_types, cfg.ratios, windows[-1])
    pairs += _gaps(win, cfg.gap_window_days, bitmap, filled, signup, data_start)
    pairs.append(_events_per_month(c_hist, signup, data_start, as_of, n))
    pairs.append((_TENURE_SPEC, tenure))
    pairs.append(_lifecycle(trend[0][1], recency, tenure, cfg.lifecycle))
    return FeatureBlock.from_pairs(pairs)


_RECENCY_SPEC = FeatureSpec(
    "days_since_last_event", "behavioral", "inactivity", "Days since last activity", "days",
    reason="No event in the activity log for {value} days (payments are counted apart; typical customer: {typical})",
    risk_direction=1)
_TENURE_SPEC = FeatureSpec("tenure_days", "profile", "tenure", "Days since signup", "days",
                           reason="Customer for {value} days (typical customer: {typical})", risk_direction=-1)


def _activity_windows(win: _Window, windows: list[int]) -> tuple[Features, np.ndarray | None, int]:
    """Activities and active calendar days per window; also the day x customer bitmap the gap step reuses.

    The bitmap is filled window by window (each adds the rows the previous lacked); ``filled`` counts the rows
    (from the end of the largest window) already in it. Too many customers for a bitmap: a sort-based count.
    """
    n, c_big = win.n, win.codes
    bitmap = _day_bitmap(n, win.longest + 1)
    filled = 0
    pairs: Features = []
    for w in windows:
        sl = win.sub(w)
        c = c_big[sl]
        pairs.append((FeatureSpec(f"events_{w}d", "behavioral", "activity", f"Activities in the last {w} days", "count",
                                  w, reason=f"{{value}} activities in the last {w} days (typical customer: {{typical}})",
                                  risk_direction=-1), count_by(c, n)))
        if bitmap is not None:
            new = slice(sl.start, len(c_big) - filled)
            bitmap[win.cal[new], c_big[new]] = True
            filled = len(c_big) - sl.start
            active = np.count_nonzero(bitmap, axis=0).astype(np.float64)
        else:
            day_key = c.astype(np.int64) * (win.longest + 2) + win.cal[sl]
            active = count_by((np.unique(day_key) // (win.longest + 2)).astype(np.int64), n)
        pairs.append((FeatureSpec(f"active_days_{w}d", "behavioral", "activity", f"Active days in the last {w} days",
                                  "count", w,
                                  reason=f"Active on {{value}} of the last {w} days (typical customer: {{typical}})",
                                  risk_direction=-1), active))
    return pairs, bitmap, filled


def _activity_trend(win: _Window, r_days: int, b_days: int) -> Features:
    """Daily activity in the recent window against the baseline window before it."""
    cnt_r = count_by(win.codes[win.sub(r_days)], win.n)
    cnt_b = count_by(win.codes[win.sub(r_days + b_days, r_days)], win.n)
    return [(FeatureSpec(f"activity_trend_{r_days}_{b_days}", "behavioral", "activity",
                         f"Change in daily activity, last {r_days} days vs previous {b_days}", "rate_change", r_days,
                         reason=f"Activity {{change}} {{abs_pct}}% in the last {r_days} days compared with the previous "
                                f"{b_days}", risk_direction=-1), rate_change(cnt_r, r_days, cnt_b, b_days))]


def _type_matrices(win: _Window, types_col: pd.Series, event_types: list[str], windows: list[int],
                   base: tuple[int, int]) -> tuple[dict[int, np.ndarray], np.ndarray | None]:
    """Per window, an (n, types) matrix of event counts by type (one bincount each); and the baseline window's."""
    n_types = len(event_types)
    if not n_types:
        return {}, None
    tc_big = type_codes(types_col, event_types)

    def matrix(sl: slice) -> np.ndarray:
        tc = tc_big[sl]
        ok = tc >= 0
        key = win.codes[sl][ok].astype(np.int64) * n_types + tc[ok]
        return np.bincount(key, minlength=win.n * n_types).astype(np.float64).reshape(win.n, n_types)

    return {w: matrix(win.sub(w)) for w in windows}, matrix(win.sub(*base))


def _type_trends(event_types: list[str], recent: np.ndarray | None, base: np.ndarray | None,
                 r_days: int, b_days: int) -> Features:
    """Per event type: its count in the recent window and its daily rate against the baseline."""
    pairs: Features = []
    for i, et in enumerate(event_types):
        slug, label = _slug(et), et.replace("_", " ")
        er, eb = recent[:, i], base[:, i]
        pairs.append((FeatureSpec(f"{slug}_{r_days}d", "behavioral", f"{slug}_activity",
                                  f"'{label}' events in the last {r_days} days", "count", r_days,
                                  reason=f"{{value}} '{label}' events in the last {r_days} days (typical customer: "
                                         "{typical})", risk_direction=-1), er))
        pairs.append((FeatureSpec(f"{slug}_trend_{r_days}_{b_days}", "behavioral", f"{slug}_activity",
                                  f"Change in daily '{label}' events, last {r_days} days vs previous {b_days}",
                                  "rate_change", r_days,
                                  reason=f"'{label.capitalize()}' events {{change}} {{abs_pct}}% in the last {r_days} "
                                         f"days compared with the previous {b_days}", risk_direction=-1),
                      rate_change(er, r_days, eb, b_days)))
    return pairs


def _usage_recent(win: _Window, r_days: int, b_days: int) -> tuple[Features, tuple[np.ndarray, np.ndarray]]:
    """Numeric event values (e.g. session minutes): recent total, and the recent level against the customer's own
    average over recent + baseline; also the (recent, baseline) sums the usage trend needs."""
    n = win.n
    recent, base = win.sub(r_days), win.sub(r_days + b_days, r_days)
    rc, bc, vr, vb = win.codes[recent], win.codes[base], win.values[recent], win.values[base]
    sum_r, sum_b = count_by(rc, n, vr), count_by(bc, n, vb)
    n_r, n_b = count_by(rc[~np.isnan(vr)], n), count_by(bc[~np.isnan(vb)], n)
    with np.errstate(divide="ignore", invalid="ignore"):
        avg_r = np.where(n_r > 0, sum_r / n_r, np.nan)
        avg_all = np.where(n_r + n_b > 0, (sum_r + sum_b) / (n_r + n_b), np.nan)
        rel = avg_r / avg_all
    rel[~np.isfinite(rel)] = np.nan
    own = r_days + b_days
    return [(_usage_sum_spec(r_days), sum_r),
            (FeatureSpec(f"value_avg_vs_own_{r_days}d", "behavioral", "usage_time",
                         f"Average usage per event, last {r_days} days vs own {own}-day average", "ratio", r_days,
                         reason=f"Usage per session is {{value}}x the customer's own {own}-day average",
                         risk_direction=-1), rel)], (sum_r, sum_b)


def _usage_sum_spec(w: int) -> FeatureSpec:
    return FeatureSpec(f"value_sum_{w}d", "behavioral", "usage_time", f"Total usage (event value) in the last {w} days",
                       "minutes", w, reason=f"{{value}} minutes of use in the last {w} days (typical customer: {{typical}})",
                       risk_direction=-1)


def _window_type_counts(win: _Window, event_types: list[str], by_type: dict[int, np.ndarray], windows: list[int],
                        r_days: int, has_value: bool) -> Features:
    """Per window other than the trend window: event counts by type, and the usage total."""
    pairs: Features = []
    for w in windows:
        if w == r_days:
            continue
        for i, et in enumerate(event_types):
            slug, label = _slug(et), et.replace("_", " ")
            pairs.append((FeatureSpec(f"{slug}_{w}d", "behavioral", f"{slug}_activity",
                                      f"'{label}' events in the last {w} days", "count", w,
                                      reason=f"{{value}} '{label}' events in the last {w} days (typical customer: "
                                             "{typical})", risk_direction=-1), by_type[w][:, i]))
        if has_value:
            sl = win.sub(w)
            pairs.append((_usage_sum_spec(w), count_by(win.codes[sl], win.n, win.values[sl])))
    return pairs


def _usage_trend(sum_r: np.ndarray, sum_b: np.ndarray, r_days: int, b_days: int, share: float) -> Features:
    """Daily usage time against the baseline, and the early-warning flag: below a share of the customer's own."""
    usage_trend = rate_change(sum_r, r_days, sum_b, b_days)
    return [(FeatureSpec(f"value_trend_{r_days}_{b_days}", "behavioral", "usage_time",
                         f"Change in daily usage (event value), last {r_days} days vs previous {b_days}", "rate_change",
                         r_days, reason=f"Usage time {{change}} {{abs_pct}}% in the last {r_days} days compared with "
                                        f"the previous {b_days}", risk_direction=-1), usage_trend),
            (FeatureSpec("usage_low_flag", "behavioral", "usage_time",
                         f"Usage time in the last {r_days} days below {share:.0%} of the customer's own average", "flag",
                         r_days, reason=f"Usage time below {share:.0%} of the customer's own average (last {r_days} "
                                        f"days vs previous {b_days})", risk_direction=1),
             (np.nan_to_num(usage_trend, nan=0.0) < share - 1.0).astype(np.float64))]


def _ratios(counts: np.ndarray | None, event_types: list[str], ratios: list[tuple[str, str]], w: int) -> Features:
    """Ratios between behaviours (e.g. support views per login) over the longest configured window."""
    pairs: Features = []
    for num, den in ratios:
        if num not in event_types or den not in event_types:
            continue
        a, b = counts[:, event_types.index(num)], counts[:, event_types.index(den)]
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(b > 0, a / b, np.nan)
        sn, sd = _slug(num), _slug(den)
        ln, ld = num.replace("_", " "), den.replace("_", " ")
        pairs.append((FeatureSpec(f"{sn}_per_{sd}_{w}d", "behavioral", f"{sn}_per_{sd}",
                                  f"'{ln}' events per '{ld}' event, last {w} days", "ratio", w,
                                  reason=f"{{value}} '{ln}' events per '{ld}' in the last {w} days (typical customer: "
                                         "{typical})", risk_direction=0), ratio))
    return pairs


def _gaps(win: _Window, gap_days: int, bitmap: np.ndarray | None, filled: int, signup: pd.Series,
          data_start: pd.Timestamp) -> Features:
    """Gaps between events in the gap window: the mean gap and the longest inactive stretch (the current one too).

    Adds the gap window's rows the activity step did not put into ``bitmap``, then reuses it when the cutoff is
    at midnight (then calendar days before the cutoff are the gap days).
    """
    n, as_of = win.n, win.as_of
    gsl = win.sub(gap_days)
    gc, gt = win.codes[gsl], win.times[gsl]
    midnight = as_of == as_of.normalize()
    if bitmap is not None and midnight and gsl.start < len(win.codes) - filled:
        new = slice(gsl.start, len(win.codes) - filled)
        bitmap[win.cal[new], win.codes[new]] = True
    k = count_by(gc, n)
    first_g, last_g = first_time_before(gc, gt, n), last_time_before(gc, gt, n)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_gap = np.where(k >= 2, (last_g - first_g).astype(np.float64) / DAY.value / (k - 1), np.nan)
    longest = _longest_inactive(gc, gt, n, as_of, gap_days, signup, data_start,
                                bitmap[:gap_days] if bitmap is not None and midnight else None)
    return [(FeatureSpec(f"event_gap_mean_{gap_days}d", "behavioral", "activity_gaps",
                         f"Average days between activities, last {gap_days} days", "days", gap_days,
                         reason=f"On average {{value}} days between activities in the last {gap_days} days (typical "
                                "customer: {typical})", risk_direction=1), mean_gap),
            (FeatureSpec(f"longest_inactive_days_{gap_days}d", "behavioral", "inactivity",
                         f"Longest run of days without activity, last {gap_days} days", "days", gap_days,
                         reason=f"Longest stretch without an event in the activity log in the last {gap_days} days: "
                                "{value} days (typical customer: {typical})", risk_direction=1), longest)]


def _events_per_month(c_hist: np.ndarray, signup: pd.Series, data_start: pd.Timestamp, as_of: pd.Timestamp,
                      n: int) -> tuple[FeatureSpec, np.ndarray]:
    """Activities per month over the observed tenure."""
    return (FeatureSpec("events_per_month", "behavioral", "activity",
                        "Activities per month over the customer's observed tenure", "count",
                        reason="{value} activities a month over the customer's tenure (typical customer: {typical})",
                        risk_direction=-1), count_by(c_hist, n) / months_observed(signup, data_start, as_of))


def _lifecycle(trend: np.ndarray, recency: np.ndarray, tenure: np.ndarray,
               lc: LifecycleConfig) -> tuple[FeatureSpec, pd.Categorical]:
    """Lifecycle stage from tenure, the activity trend and inactivity (later rules override earlier ones)."""
    stage = np.full(len(tenure), "active", dtype=object)
    stage[np.nan_to_num(trend, nan=0.0) <= -lc.at_risk_drop] = "at_risk"
    stage[tenure < lc.new_days] = "new"
    inactive_for = np.where(np.isnan(recency), tenure, recency)
    stage[inactive_for >= lc.dormant_days] = "dormant"
    stage[inactive_for >= lc.lapsed_days] = "lapsed"
    return (FeatureSpec("lifecycle_stage", "behavioral", "lifecycle", "Lifecycle stage", "category",
                        reason="Lifecycle stage: {label}", categorical=True),
            pd.Categorical(stage, categories=LIFECYCLE_STAGES))


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
