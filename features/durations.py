"""Time to churn after a cutoff, with right-censoring: the survival model's target.

For a customer active at cutoff ``T`` the duration is the number of days from ``T`` to churn, observed
only up to a censoring boundary ``B`` (the data's end, or the start of a later out-of-time split so that
training targets never look into the validation or test period). Customers who have not churned by
``B`` are censored at ``B - T``: they are *not* non-churners, they are customers whose churn we have
not seen yet.

Churn is defined exactly as the label defines it, so ``P(duration <= horizon)`` is the classifier's label:
- ``churn_date``: churn happens on the churn date (``duration = churn_date - T``).
- ``inactivity``: a silence of ``N = inactivity_days`` without any event or transaction, counted from
  the cutoff. Churn is dated when the silence is *confirmed* (``N`` days after it began), so the label
  "no activity in ``(T, T + N]``" is exactly "duration <= N": a non-contractual churn cannot be known
  earlier than ``N`` days after the last activity.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from churn.config import LabelConfig
from churn.timebase import NS_PER_DAY as DAY_NS
from features.contract import Tables

MIN_DURATION_DAYS = 0.5  # AFT needs positive times; a churn on the cutoff's own day counts as half a day


def time_to_churn(tables: Tables, as_of: pd.Timestamp, label: LabelConfig,
                  censor_at: pd.Timestamp | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per customer (row order of ``customers``): days from ``as_of`` to churn and whether it was observed.

    Nothing at or after ``censor_at`` (default: the data's end) is looked at. Durations of customers who
    had already churned at ``as_of`` are meaningless; callers use the active population only.
    """
    bound = tables.data_end if censor_at is None else min(pd.Timestamp(censor_at), tables.data_end)
    if label.definition == "churn_date":
        return _churn_date_durations(tables.customers["churn_date"].to_numpy(), as_of, bound)
    if label.definition == "inactivity":
        return _lapse_durations(tables, as_of, bound, label.inactivity_days)
    raise ValueError("a snapshot label has no time to churn: survival needs dated churn or activity")


def _churn_date_durations(churn: np.ndarray, as_of: pd.Timestamp, bound: pd.Timestamp) -> tuple[np.ndarray, np.ndarray]:
    churn_ns = churn.astype("datetime64[ns]").astype(np.int64)
    has = ~np.isnat(churn.astype("datetime64[ns]"))
    t0, b = as_of.value, bound.value
    observed = has & (churn_ns > t0) & (churn_ns <= b)
    end = np.where(observed, churn_ns, b)
    days = (end - t0) / DAY_NS
    return np.maximum(days, MIN_DURATION_DAYS), observed


def _lapse_durations(tables: Tables, as_of: pd.Timestamp, bound: pd.Timestamp,
                     lapse_days: int) -> tuple[np.ndarray, np.ndarray]:
    """First silence of ``lapse_days`` counted from ``as_of``, confirmed before ``bound``.

    The clock starts at the cutoff: with activities ``s1 < s2 < ...`` strictly after it, the first gap
    (``s1 - T``, ``s2 - s1``, ..., or the open end after the last one) longer than ``lapse_days``
    confirms churn ``lapse_days`` after its start. So "no activity in ``(T, T + N]``" (the label) is
    exactly "duration <= N", and a duration above ``N`` means the customer was seen again in time.
    """
    n = len(tables.customers)
    codes, stamps = _activity(tables, bound)
    lapse = lapse_days * DAY_NS
    t0, b = as_of.value, bound.value
    keep = stamps > t0  # as the label: activity exactly at T belongs to neither side
    c, s = codes[keep], stamps[keep]
    order = np.lexsort((s, c))
    c, s = c[order], s[order]
    first = np.ones(len(c), dtype=bool)
    first[1:] = c[1:] != c[:-1]
    prev = np.where(first, t0, np.roll(s, 1))
    confirm = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
    gap = np.flatnonzero(s - prev > lapse)
    if len(gap):
        np.minimum.at(confirm, c[gap], prev[gap] + lapse)  # each customer's earliest lapse
    last = np.full(n, t0, dtype=np.int64)
    if len(c):
        np.maximum.at(last, c, s)
    confirm = np.minimum(confirm, last + lapse)  # or the silence after the last activity
    observed = confirm < b
    days = (np.where(observed, confirm, b) - t0) / DAY_NS
    return np.maximum(days, MIN_DURATION_DAYS), observed


def _activity(tables: Tables, bound: pd.Timestamp) -> tuple[np.ndarray, np.ndarray]:
    codes, stamps = [], []
    for name in ("events", "transactions"):
        t = tables.child(name)
        if t is None:
            continue
        stop = t["timestamp"].searchsorted(bound, side="left")
        codes.append(t["_code"].to_numpy()[:stop].astype(np.int64))
        stamps.append(t["timestamp"].to_numpy()[:stop].astype("datetime64[ns]").astype(np.int64))
    if not codes:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(codes), np.concatenate(stamps)
