"""The one home for time: the default cutoff, half-open windows and the int64-nanosecond helpers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from churn.timebase import (
    DAY,
    DAYS_PER_MONTH,
    NO_TIME,
    NS_PER_DAY,
    as_ns,
    days_since,
    default_cutoff,
    first_time_before,
    last_time_before,
    months_observed,
    window_slice,
)


@pytest.mark.parametrize(("data_end", "expected"), [
    ("2025-12-31 23:59:59", "2026-01-01"),
    ("2025-12-31 00:00:00", "2026-01-01"),  # a date-only end: its whole day is data, so the next midnight
    ("2024-02-28 12:00", "2024-02-29"),
], ids=["late-evening", "midnight", "leap-day"])
def test_default_cutoff_is_midnight_after_the_last_day(data_end: str, expected: str) -> None:
    assert default_cutoff(pd.Timestamp(data_end)) == pd.Timestamp(expected)


def test_constants() -> None:
    assert DAY == pd.Timedelta(hours=24)
    assert NS_PER_DAY == DAY.value
    assert DAYS_PER_MONTH == 365.25 / 12 == 30.4375  # the one month length: tenure, rates, CLV, demo generator


def test_months_observed_from_signup_or_data_start_at_least_one() -> None:
    as_of = pd.Timestamp("2024-07-01")
    signup = pd.Series(pd.to_datetime(["2024-01-10", "2024-06-20", "2020-01-01"]).astype("datetime64[ns]"))
    months = months_observed(signup, pd.Timestamp("2024-01-01"), as_of)
    # 173 days since signup; 11 days (at least one month); signed up before the data starts (2024-01-01): 182 days
    assert months.tolist() == pytest.approx([173 / 30.4375, 1.0, 182 / 30.4375])


def test_window_slice_is_start_inclusive_stop_exclusive():
    ts = pd.Series(pd.to_datetime(["2024-05-01", "2024-05-02", "2024-05-02", "2024-05-31 23:59:59",
                                   "2024-06-01", "2024-06-02"], format="mixed").astype("datetime64[ns]"))
    sl = window_slice(ts, pd.Timestamp("2024-05-02"), pd.Timestamp("2024-06-01"))
    assert (sl.start, sl.stop) == (1, 4)
    everything_before = window_slice(ts, pd.Timestamp.min, pd.Timestamp("2024-06-01"))
    assert (everything_before.start, everything_before.stop) == (0, 4)
    assert window_slice(ts, pd.Timestamp("2025-01-01"), pd.Timestamp("2025-02-01")) == slice(6, 6)


def test_ns_helpers_per_customer() -> None:
    times = pd.Series(pd.to_datetime(["2024-01-01", "2024-01-03", "2024-01-02"]).astype("datetime64[ns]"))
    codes = np.array([0, 0, 2])
    np.testing.assert_array_equal(as_ns(times), times.to_numpy().view(np.int64))
    last = last_time_before(codes, times, 3)
    first = first_time_before(codes, times, 3)
    assert last[0] == pd.Timestamp("2024-01-03").value and last[1] == NO_TIME
    assert first[0] == pd.Timestamp("2024-01-01").value and first[2] == pd.Timestamp("2024-01-02").value
    since = days_since(last, pd.Timestamp("2024-01-05"))
    np.testing.assert_array_equal(since[[0, 2]], [2.0, 3.0])
    assert np.isnan(since[1])  # nobody: unknown, not a huge number
