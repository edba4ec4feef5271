"""Time to churn with censoring, on hand-made tables (expected durations worked out by hand)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from churn.config import LabelConfig
from features.durations import MIN_DURATION_DAYS, time_to_churn
from tests.features.conftest import make_config, tables_from_frames

T = pd.Timestamp("2024-06-01")


def _tables(customers: list[tuple], events: list[tuple] | None = None):
    frames = {"customers": pd.DataFrame(customers, columns=["customer_id", "signup_date", "churn_date"])}
    if events is not None:
        frames["events"] = pd.DataFrame(events, columns=["customer_id", "timestamp", "event_type"])
    cfg = make_config(tables={"customers": {"file": "customers"}, "events": {"file": "events"}})
    return tables_from_frames(frames, cfg)


def test_churn_dates_observed_and_censored_at_the_data_end():
    tables = _tables([
        ("A", "2023-01-01", "2024-06-11"),  # churns 10 days after T
        ("B", "2023-01-01", None),  # never churns: censored at the data's end
        ("C", "2023-01-01", "2024-08-01"),  # churns on the data's last day: observed
        ("D", "2023-01-01", "2024-06-01 12:00"),  # half a day after T
    ])
    assert tables.data_end == pd.Timestamp("2024-08-01")
    dur, obs = time_to_churn(tables, T, LabelConfig(definition="churn_date"))
    np.testing.assert_allclose(dur, [10.0, 61.0, 61.0, MIN_DURATION_DAYS])
    assert obs.tolist() == [True, False, True, True]


def test_churn_dates_after_an_earlier_censoring_boundary_are_not_seen():
    """A training target censored at a later split's start cannot see a churn inside that split."""
    tables = _tables([("A", "2023-01-01", "2024-06-11"), ("B", "2023-01-01", "2024-07-20"),
                      ("C", "2023-01-01", None)] + [("Z", "2023-01-01", "2024-09-01")])
    dur, obs = time_to_churn(tables, T, LabelConfig(definition="churn_date"), censor_at=pd.Timestamp("2024-07-01"))
    np.testing.assert_allclose(dur[:3], [10.0, 30.0, 30.0])
    assert obs[:3].tolist() == [True, False, False]


def test_inactivity_lapse_counted_from_the_cutoff_matches_the_label():
    """With N = 10: churn is confirmed N days into the first silence longer than N that starts at or after T."""
    label = LabelConfig(definition="inactivity", inactivity_days=10)
    tables = _tables(
        [("A", "2023-01-01", None), ("B", "2023-01-01", None), ("C", "2023-01-01", None),
         ("D", "2023-01-01", None)],
        [
            ("A", "2024-05-30", "login"),  # before T: ignored by the clock
            ("A", "2024-06-05", "login"),  # gap 4 from T
            ("A", "2024-06-12", "login"),  # gap 7
            ("A", "2024-06-30", "login"),  # gap 18 > 10: lapse began 06-12, confirmed 06-22 -> 21 days
            ("B", "2024-06-20", "login"),  # first gap 19 > 10 from T: confirmed at T + 10 -> 10 days (label 1)
            ("C", "2024-06-03", "login"),  # then silence to the end: confirmed 06-13 -> 12 days
            ("D", "2024-06-02", "login"),
            ("D", "2024-06-09", "login"),
            ("D", "2024-06-16", "login"),
            ("D", "2024-06-23", "login"),
            ("D", "2024-06-30", "login"),  # active every week: last 06-30, confirmation 07-10 after data end
        ],
    )
    dur, obs = time_to_churn(tables, T, label)
    assert tables.data_end == pd.Timestamp("2024-06-30")
    np.testing.assert_allclose(dur, [21.0, 10.0, 12.0, 29.0])
    assert obs.tolist() == [True, True, True, False]
    # the classifier's label "no activity in (T, T + 10]" is exactly "duration <= 10"
    from features.timeline import labels

    assert (labels(tables, T, label) == (obs & (dur <= 10))).all()


def test_a_customer_with_no_events_lapses_n_days_after_the_cutoff():
    label = LabelConfig(definition="inactivity", inactivity_days=10)
    tables = _tables([("A", "2023-01-01", None), ("B", "2023-01-01", None)], [("B", "2024-07-15", "login")])
    dur, obs = time_to_churn(tables, T, label)
    np.testing.assert_allclose(dur[0], 10.0)
    assert obs[0]


def test_records_at_or_after_the_boundary_do_not_change_durations():
    label = LabelConfig(definition="inactivity", inactivity_days=10)
    base = [("A", "2024-06-05", "login"), ("B", "2024-06-25", "login"), ("Z", "2024-09-01", "login")]
    customers = [("A", "2023-01-01", None), ("B", "2023-01-01", None), ("Z", "2023-01-01", None)]
    bound = pd.Timestamp("2024-07-01")
    before = time_to_churn(_tables(customers, base), T, label, censor_at=bound)
    later = base + [("A", "2024-07-01", "login"), ("A", "2024-07-05", "login"), ("B", "2024-08-01", "login")]
    after = time_to_churn(_tables(customers, later), T, label, censor_at=bound)
    for x, y in zip(before, after, strict=True):
        np.testing.assert_array_equal(x[:2], y[:2])


def test_snapshot_labels_have_no_time():
    tables = _tables([("A", "2023-01-01", None)])
    with pytest.raises(ValueError, match="snapshot"):
        time_to_churn(tables, T, LabelConfig(definition="snapshot", column="x"))
