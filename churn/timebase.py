"""One home for time: the day and month constants, the default cutoff, and half-open time windows.

Every feature window is ``[start, stop)`` in the events' timestamp order: a cutoff ``T`` reads only
records strictly before ``T``. Timestamps travel as ``int64`` nanoseconds in the hot paths.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

DAY = pd.Timedelta(days=1)
SECONDS_PER_DAY = 86_400
NS_PER_DAY = SECONDS_PER_DAY * 10**9
DAYS_PER_YEAR = 365.25
# The average month, in days (30.4375): the one month length of tenure months, per-month rates, the CLV
# horizon and month grid (cash-flow months, exposure months, discounting) and the demo generator.
DAYS_PER_MONTH = DAYS_PER_YEAR / 12
NO_TIME = np.iinfo(np.int64).min  # "no record before the cutoff" in int64-nanosecond arrays


def default_cutoff(data_end: pd.Timestamp) -> pd.Timestamp:
    """The cutoff used when none is given: midnight after the data's last day, so every record is before it."""
    return (pd.Timestamp(data_end) + DAY).normalize()


def months_observed(start: pd.Series, data_start: pd.Timestamp | int, as_of: pd.Timestamp) -> np.ndarray:
    """Months from each start (e.g. signup), or from the data's start if later, to ``as_of``; at least one, so
    a per-month rate of a new customer is not inflated."""
    observed_from = np.maximum(as_ns(start.to_numpy()), pd.Timestamp(data_start).value)
    return np.clip((as_of.value - observed_from) / DAY.value / DAYS_PER_MONTH, 1.0, None)


def window_slice(ts: pd.Series, start: pd.Timestamp, stop: pd.Timestamp) -> slice:
    """Positions of rows with ``start <= ts < stop`` in a timestamp-sorted column (half-open window)."""
    return slice(int(ts.searchsorted(start, side="left")), int(ts.searchsorted(stop, side="left")))


def as_ns(times: np.ndarray | pd.Series) -> np.ndarray:
    """Timestamps as int64 nanoseconds; a view (no copy) when they already are ``datetime64[ns]``."""
    arr = times.to_numpy() if isinstance(times, pd.Series) else np.asarray(times)
    if arr.dtype == np.int64:
        return arr
    if arr.dtype != np.dtype("datetime64[ns]"):
        arr = arr.astype("datetime64[ns]")
    return arr.view(np.int64)


def last_time_before(codes: np.ndarray, times: np.ndarray, n: int) -> np.ndarray:
    """Latest timestamp per customer as int64 ns (``NO_TIME`` where none)."""
    last = np.full(n, NO_TIME, dtype=np.int64)
    if len(codes):
        np.maximum.at(last, codes, as_ns(times))
    return last


def first_time_before(codes: np.ndarray, times: np.ndarray, n: int) -> np.ndarray:
    """Earliest timestamp per customer as int64 ns (INT64 max where none)."""
    first = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
    if len(codes):
        np.minimum.at(first, codes, as_ns(times))
    return first


def days_since(last_ns: np.ndarray, as_of: pd.Timestamp) -> np.ndarray:
    """Days from each timestamp (int64 ns) to ``as_of``; NaN where there is none (``NO_TIME``)."""
    out = (as_of.value - last_ns.astype(np.float64)) / DAY.value
    out[last_ns == NO_TIME] = np.nan
    return out
