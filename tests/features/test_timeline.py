"""The time model: who is active at T, labels over (T, T + horizon], training cutoffs and out-of-time splits."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from churn.config import LabelConfig
from churn.errors import DataError
from features.timeline import (
    active_mask,
    label_window_days,
    labels,
    last_activity_before,
    split_cutoffs,
    training_cutoffs,
)
from tests.features.conftest import CUTOFF, make_config, tables_from_frames

T = CUTOFF
S = pd.Timedelta(seconds=1)
D = pd.Timedelta(days=1)
CHURN = LabelConfig(definition="churn_date", horizon_days=30)
INACTIVE = LabelConfig(definition="inactivity", inactivity_days=60)


def _tables(customers, events=None, transactions=None):
    frames = {"customers": pd.DataFrame(customers, columns=["customer_id", "signup_date", "churn_date"])}
    if events is not None:
        frames["events"] = pd.DataFrame(
            [(c, str(t), "login", None) for c, t in events], columns=["customer_id", "timestamp", "event_type", "value"])
    if transactions is not None:
        frames["transactions"] = pd.DataFrame(
            [(c, str(t), 1.0) for c, t in transactions], columns=["customer_id", "timestamp", "amount"])
    cfg = make_config(tables={"customers": {"file": "customers"}})
    return tables_from_frames(frames, cfg)


# --------------------------------------------------------------------------- active population
def test_active_mask_churn_date():
    t = _tables([
        ("old", "2023-01-01", None),  # active
        ("churn_at_T", "2023-01-01", str(T)),  # churned exactly at T: gone
        ("churn_1s_after", "2023-01-01", str(T + S)),  # still a customer at T
        ("churn_1s_before", "2023-01-01", str(T - S)),  # gone
        ("signup_at_T", str(T), None),  # not yet a customer (signup must be < T)
        ("signup_1s_before", str(T - S), None),  # a customer
        ("future", "2024-07-01", None),
    ])
    assert active_mask(t, T, CHURN).tolist() == [True, False, True, False, False, True, False]


def test_active_mask_on_hand_made_tables(tables):
    # A B C D(churned 05-10) E(signs up 07-01) F G
    assert active_mask(tables, T, CHURN).tolist() == [True, True, True, False, False, True, True]
    # inactivity: G never active (and not young) drops out; D was active on 05-01 so counts as a customer
    assert active_mask(tables, T, INACTIVE).tolist() == [True, True, True, True, False, True, False]


def test_active_mask_inactivity():
    lim = T - 60 * D
    t = _tables(
        [
            ("edge", "2023-01-01", None),  # last activity exactly T - 60d: active
            ("lapsed", "2023-01-01", None),  # last activity 1s before T - 60d: inactive
            ("only_at_T", "2023-01-01", None),  # activity exactly at T is not "before T": inactive
            ("young", str(lim), None),  # signed up exactly T - 60d, never active: active (cannot have lapsed)
            ("young_old", str(lim - S), None),  # signed up 1s earlier, never active: inactive
            ("buyer", "2023-01-01", None),  # only a transaction 10 days ago: active
            ("future", str(T), None),  # signs up at T: not a customer yet
        ],
        events=[("edge", lim), ("lapsed", lim - S), ("only_at_T", T), ("future", T + D)],
        transactions=[("buyer", T - 10 * D)],
    )
    assert active_mask(t, T, INACTIVE).tolist() == [True, False, False, True, False, True, False]
    last = last_activity_before(t, T)
    assert last[0] == np.datetime64(lim) and np.isnat(last[2]) and last[5] == np.datetime64(T - 10 * D)


# --------------------------------------------------------------------------- labels
def test_labels_churn_date_window_is_T_exclusive_T_plus_h_inclusive():
    h = 30 * D
    t = _tables([
        ("at_T", "2023-01-01", str(T)),
        ("just_after_T", "2023-01-01", str(T + S)),
        ("at_T_plus_h", "2023-01-01", str(T + h)),
        ("after_window", "2023-01-01", str(T + h + S)),
        ("never", "2023-01-01", None),
        ("before", "2023-01-01", str(T - D)),
    ])
    assert labels(t, T, CHURN).tolist() == [0, 1, 1, 0, 0, 0]
    assert labels(t, T, CHURN).dtype == np.int8


def test_labels_inactivity():
    n = 60 * D
    t = _tables(
        [(c, "2023-01-01", None) for c in
         ("seen_1s_after", "seen_at_T_plus_n", "seen_after_n", "seen_only_at_T", "silent", "bought")],
        events=[("seen_1s_after", T + S), ("seen_at_T_plus_n", T + n), ("seen_after_n", T + n + S),
                ("seen_only_at_T", T), ("silent", T - D)],
        transactions=[("bought", T + 5 * D)],
    )
    # activity at exactly T is neither a feature (< T) nor "after T": only (T, T + n] counts
    assert labels(t, T, INACTIVE).tolist() == [0, 0, 1, 1, 1, 0]


@pytest.mark.parametrize(("window_end", "churn_expected", "inactive_expected"), [
    ("inclusive", [1, 1, 0], [0, 0, 1]),  # (T, T + N]: the default, today's behaviour
    ("exclusive", [1, 0, 0], [0, 1, 1]),  # (T, T + N): a churn (an event) exactly at T + N is outside
], ids=["inclusive", "exclusive"])
def test_label_window_end_decides_the_moment_T_plus_n(window_end, churn_expected, inactive_expected):
    h, n = 30 * D, 60 * D
    churns = _tables([("1s_before_end", "2023-01-01", str(T + h - S)), ("at_end", "2023-01-01", str(T + h)),
                      ("1s_after_end", "2023-01-01", str(T + h + S))])
    churn = LabelConfig(definition="churn_date", horizon_days=30, window_end=window_end)
    assert labels(churns, T, churn).tolist() == churn_expected
    # inactivity: the only event after T is 1 s before the end, exactly at the end, or 1 s after it
    events = _tables([(c, "2023-01-01", None) for c in ("seen_1s_before_end", "seen_at_end", "seen_1s_after_end")],
                     events=[("seen_1s_before_end", T + n - S), ("seen_at_end", T + n),
                             ("seen_1s_after_end", T + n + S)])
    inactive = LabelConfig(definition="inactivity", inactivity_days=60, window_end=window_end)
    assert labels(events, T, inactive).tolist() == inactive_expected


def test_label_window_end_default_and_bad_value():
    assert LabelConfig().window_end == "inclusive"
    with pytest.raises(ValueError, match="window_end"):
        LabelConfig(window_end="both")


def test_labels_on_hand_made_tables(tables):
    assert labels(tables, T, CHURN).tolist() == [0, 0, 1, 0, 0, 0, 0]  # C churns 2024-06-20
    # after T: A (event 06-05, purchase 06-15), B (06-10), C (06-15) are seen; D, E, F, G are not
    assert labels(tables, T, INACTIVE).tolist() == [0, 0, 0, 1, 1, 1, 1]


def test_label_window_days():
    assert label_window_days(CHURN) == 30
    assert label_window_days(INACTIVE) == 60


# --------------------------------------------------------------------------- training cutoffs
def _span(first: str, last: str):
    """Tables whose activity spans [first, last] (data_start = first, data_end = last)."""
    return _tables([("a", "2020-01-01", None)], events=[("a", pd.Timestamp(first)), ("a", pd.Timestamp(last))])


def test_training_cutoffs_month_starts_with_observed_label_window():
    t = _span("2023-01-01", "2024-05-31")
    assert t.data_start == pd.Timestamp("2023-01-01") and t.data_end == pd.Timestamp("2024-05-31")
    cuts = training_cutoffs(t, CHURN, n_cutoffs=12)
    assert len(cuts) == 12
    assert all(c == c.normalize() and c.day == 1 for c in cuts)
    assert cuts[-1] == pd.Timestamp("2024-05-01")  # 2024-05-01 + 30d == data_end: fully observed
    assert cuts[0] == pd.Timestamp("2023-06-01")
    assert all(c + 30 * D <= t.data_end for c in cuts)
    assert cuts == sorted(set(cuts))


def test_training_cutoffs_drop_partially_observed_window():
    t = _span("2023-01-01", "2024-05-30 23:59:59")
    assert training_cutoffs(t, CHURN, n_cutoffs=12)[-1] == pd.Timestamp("2024-04-01")


def test_training_cutoffs_keep_history_before_first_cutoff():
    t = _span("2023-01-15", "2024-05-31")
    cuts = training_cutoffs(t, CHURN, n_cutoffs=100)
    assert cuts[0] == pd.Timestamp("2023-05-01")  # first month start on/after data_start + 90 days (2023-04-15)
    assert len(cuts) == 13


def test_training_cutoffs_inactivity_uses_inactivity_window():
    t = _span("2023-01-01", "2024-05-31")
    cuts = training_cutoffs(t, INACTIVE, n_cutoffs=12)
    assert cuts[-1] == pd.Timestamp("2024-04-01")  # 2024-04-01 + 60d = 2024-05-31
    assert all(c + 60 * D <= t.data_end for c in cuts)


def test_training_cutoffs_too_short_history():
    t = _span("2024-01-01", "2024-06-15")
    with pytest.raises(DataError, match=r"history too short for training: need at least 3 cutoffs"):
        training_cutoffs(t, CHURN, n_cutoffs=12)


# --------------------------------------------------------------------------- out-of-time split
def _months(n: int, start: str = "2024-01-01"):
    return list(pd.date_range(start, periods=n, freq="MS"))


def _no_overlap(split, window_days):
    w = window_days * D
    assert all(t + w <= split.valid[0] for t in split.train)
    assert all(t + w <= split.test[0] for t in split.valid)
    assert max(split.train) < min(split.valid) <= max(split.valid) < min(split.test)


def test_split_cutoffs_monthly():
    cuts = _months(8)
    split = split_cutoffs(list(reversed(cuts)), n_valid=1, n_test=1, window_days=30)
    assert split.test == [pd.Timestamp("2024-08-01")]
    assert split.valid == [pd.Timestamp("2024-07-01")]
    assert split.train == cuts[:6]
    _no_overlap(split, 30)


def test_split_cutoffs_drop_train_cutoff_whose_window_reaches_valid():
    cuts = [pd.Timestamp(x) for x in ("2024-01-01", "2024-03-01", "2024-04-15", "2024-05-01", "2024-06-01")]
    split = split_cutoffs(cuts, n_valid=1, n_test=1, window_days=30)
    assert split.train == [pd.Timestamp("2024-01-01"), pd.Timestamp("2024-03-01")]  # 04-15 + 30d > 05-01
    assert split.valid == [pd.Timestamp("2024-05-01")]
    _no_overlap(split, 30)


def test_split_cutoffs_long_window_drops_several():
    cuts = _months(12)
    split = split_cutoffs(cuts, n_valid=2, n_test=2, window_days=60)
    # test: Nov, Dec; valid candidates Sep, Oct: Oct 1 + 60d > Nov 1 -> dropped;
    # train candidates Jan..Aug: Aug 1 + 60d > Sep 1 -> dropped
    assert split.test == cuts[-2:]
    assert split.valid == [pd.Timestamp("2024-09-01")]
    assert split.train == cuts[:7]
    _no_overlap(split, 60)


def test_split_cutoffs_errors():
    with pytest.raises(ValueError, match="need more than 2 cutoffs, got 2"):
        split_cutoffs(_months(2), n_valid=1, n_test=1, window_days=30)
    # February cutoff's window (Feb 1 + 30d = Mar 2) reaches the March test cutoff: no valid split left
    with pytest.raises(ValueError, match="too close together"):
        split_cutoffs(_months(3), n_valid=1, n_test=1, window_days=30)
    with pytest.raises(ValueError, match="too close together"):
        split_cutoffs(_months(6), n_valid=1, n_test=1, window_days=200)


# --------------------------------------------------------------------------- population rules (label.population)
@pytest.mark.parametrize("population,days,expected", [
    ("auto", None, [True, False, False, True, False]),           # inactivity default: active within 60 days
    ("active_within", 10, [True, False, False, False, False]),   # only the buyer of 5 days ago
    ("ever_seen", None, [True, True, False, False, False]),      # everyone who ever bought
    ("signed_up", None, [True, True, True, True, False]),
], ids=["auto", "active-10d", "ever-seen", "signed-up"])
def test_population_rules_separate_from_the_label(population, days, expected):
    t = _tables(
        [("recent", "2023-01-01", None), ("lapsed", "2023-01-01", None), ("never_bought", "2023-01-01", None),
         ("young", str(T - 20 * D), None), ("future", str(T + D), None)],
        transactions=[("recent", T - 5 * D), ("lapsed", T - 200 * D)],
    )
    label = LabelConfig(definition="inactivity", inactivity_days=60, population=population, population_days=days)
    assert active_mask(t, T, label).tolist() == expected


def test_population_churn_date_still_excludes_churned_and_subscription_needs_the_table():
    t = _tables([("gone", "2023-01-01", str(T - D)), ("silent", "2023-01-01", None), ("seen", "2023-01-01", None)],
                events=[("gone", T - 3 * D), ("seen", T - 3 * D)])
    label = LabelConfig(definition="churn_date", population="ever_seen")
    assert active_mask(t, T, label).tolist() == [False, False, True]
    with pytest.raises(DataError, match="needs a subscriptions table"):
        active_mask(t, T, LabelConfig(definition="churn_date", population="subscription"))
