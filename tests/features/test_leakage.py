"""Time correctness: features at cutoff T depend only on records strictly before T.

The proof has four parts, all using one checker, :func:`feature_diff`:

(a) deterministic: rows added or modified at exactly T and after T in every child table, and churn
    dates after T moved to other dates after T, leave the whole feature frame at T identical;
(b) sensitivity: a change strictly before T moves exactly the features it should;
(c) property: random future records never change any feature at T (hypothesis);
(d) the checker is not vacuous: with a window that includes the row at the cutoff (a one-character
    bug, ``side="right"``) the same scenarios are detected as leaks.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import features.behavioral
import features.sentiment
import features.value
from features.build import FeatureBuilder
from tests.features.conftest import CUTOFF, KeywordScorer, make_config, raw_frames, tables_from_frames

T = CUTOFF
KEYS = ["customer_id", "cutoff"]
ANGRY = "terrible, awful, I hate you, cancel my account, charged twice, worst service"


# --------------------------------------------------------------------------- the checker
def _cell_diffs(before: pd.DataFrame, after: pd.DataFrame) -> tuple[list[str], list[tuple[str, str, object, object]]]:
    """Structural differences (columns, population, dtypes) and differing cells (customer, column, old, new)."""
    structural: list[str] = []
    if list(before.columns) != list(after.columns):
        gone = [c for c in before.columns if c not in after.columns]
        new = [c for c in after.columns if c not in before.columns]
        structural.append(f"columns differ: removed {gone}, added {new}"
                          + ("" if gone or new else ", same set in another order"))
    if before[KEYS].astype(str).values.tolist() != after[KEYS].astype(str).values.tolist():
        b, a = set(before["customer_id"]), set(after["customer_id"])
        structural.append(f"population differs: removed {sorted(b - a)}, added {sorted(a - b)}"
                          + ("" if b != a else ", same customers in another order"))
        return structural, []
    cells: list[tuple[str, str, object, object]] = []
    ids = before["customer_id"].to_numpy()
    for col in [c for c in before.columns if c in after.columns and c not in KEYS]:
        x, y = before[col], after[col]
        if x.dtype != y.dtype:
            structural.append(f"{col}: dtype {x.dtype} -> {y.dtype}")
        xo, yo = x.astype(object).to_numpy(), y.astype(object).to_numpy()
        both_missing = pd.isna(xo) & pd.isna(yo)
        with np.errstate(invalid="ignore"):
            same = both_missing | (~pd.isna(xo) & ~pd.isna(yo) & (xo == yo))
        for i in np.flatnonzero(~same):
            cells.append((str(ids[i]), col, xo[i], yo[i]))
    return structural, cells


def feature_diff(before: pd.DataFrame, after: pd.DataFrame) -> list[str]:
    """Every difference between two feature frames of the same cutoff, as readable lines (empty: identical)."""
    structural, cells = _cell_diffs(before, after)
    return structural + [f"{col}: customer {cid}: {old!r} -> {new!r}" for cid, col, old, new in cells]


def changed_cells(before: pd.DataFrame, after: pd.DataFrame) -> set[tuple[str, str]]:
    structural, cells = _cell_diffs(before, after)
    assert not structural, structural
    return {(cid, col) for cid, col, _, _ in cells}


def test_feature_diff_reports_every_kind_of_difference():
    a = pd.DataFrame({"customer_id": ["A", "B"], "cutoff": T, "x": [1.0, np.nan],
                      "s": pd.Categorical(["new", "active"], categories=["new", "active"])})
    assert feature_diff(a, a.copy()) == []
    b = a.copy()
    b.loc[1, "x"] = 2.0
    assert feature_diff(a, b) == ["x: customer B: nan -> 2.0"]
    b = a.copy()
    b["s"] = pd.Categorical(["new", "new"], categories=["new", "active"])
    assert feature_diff(a, b) == ["s: customer B: 'active' -> 'new'"]
    b = a.copy()
    b["s"] = b["s"].cat.add_categories(["lapsed"])
    assert feature_diff(a, b) == [f"s: dtype {a['s'].dtype} -> {b['s'].dtype}"]
    assert feature_diff(a, a.assign(y=0.0)) == ["columns differ: removed [], added ['y']"]
    assert feature_diff(a, a.iloc[:1]) == ["population differs: removed ['B'], added []"]


# --------------------------------------------------------------------------- scenarios
SCENARIOS = {
    # name: (label definition, clv method, drop the events table?)
    "churn_date-contractual": ("churn_date", "contractual", False),
    "inactivity-noncontractual": ("inactivity", "noncontractual", False),
    "transactions-as-activity": ("churn_date", "contractual", True),
}


def _config(scenario: str):
    definition, clv_method, no_events = SCENARIOS[scenario]
    tables = {"customers": {"file": "customers", "attributes": ["plan", "seats"]},
              "transactions": {"file": "transactions"}, "interactions": {"file": "interactions"}}
    if not no_events:
        tables["events"] = {"file": "events"}
    return make_config(definition=definition, clv_method=clv_method, tables=tables)


def _frames(scenario: str) -> dict[str, pd.DataFrame]:
    frames = raw_frames()
    if SCENARIOS[scenario][2]:
        del frames["events"]
    return frames


def build_at(frames: dict[str, pd.DataFrame], scenario: str, cutoff: pd.Timestamp = T, with_specs: bool = False):
    cfg = _config(scenario)
    fs = FeatureBuilder(tables_from_frames(frames, cfg), cfg, scorer=KeywordScorer()).build(cutoff)
    return (fs.frame, fs.specs) if with_specs else fs.frame


@cache
def _baseline(scenario: str, cutoff: pd.Timestamp) -> pd.DataFrame:
    return build_at(_frames(scenario), scenario, cutoff)


def baseline(scenario: str, cutoff: pd.Timestamp = T) -> pd.DataFrame:
    return _baseline(scenario, cutoff).copy()


def _append(df: pd.DataFrame, rows: list[tuple]) -> pd.DataFrame:
    return pd.concat([df, pd.DataFrame(rows, columns=df.columns)], ignore_index=True)


def _modify_first_future_row(df: pd.DataFrame, cutoff: pd.Timestamp, values: dict[str, object]) -> pd.DataFrame:
    """Move the earliest pre-existing row at/after the cutoff to exactly the cutoff and change its content."""
    stamps = pd.to_datetime(df["timestamp"], format="mixed")
    future = stamps[stamps >= cutoff]
    assert len(future), "the base data should hold records after the cutoff"
    i = future.idxmin()
    df.loc[i, "timestamp"] = str(cutoff)
    for col, v in values.items():
        df.loc[i, col] = v
    return df


def future_changes(frames: dict[str, pd.DataFrame], cutoff: pd.Timestamp = T) -> dict[str, pd.DataFrame]:
    """Add and modify records at exactly the cutoff and after it in every child table; move churn dates that
    lie after the cutoff to other dates after it (a churn date at or before the cutoff changes who is a customer)."""
    out = {k: v.copy() for k, v in frames.items()}
    at_t = str(cutoff)
    later = [str(cutoff + pd.Timedelta(x)) for x in ("1ns", "1s", "1D", "45D", "150D")]
    everyone = list("ABCDEFG")
    if "events" in out:
        ev = _append(out["events"], [(c, at_t, et, 999.0) for c in everyone for et in ("login", "view", "cancel_click")])
        ev = _append(ev, [(c, t, "login", 60.0) for c in everyone for t in later])
        ev = _modify_first_future_row(ev, cutoff, {"event_type": "cancel_click", "value": 500.0})
        out["events"] = ev.sample(frac=1.0, random_state=0).reset_index(drop=True)  # file order must not matter
    tx = _append(out["transactions"], [(c, t, 1e6) for c in everyone for t in [at_t, *later]])
    tx = _modify_first_future_row(tx, cutoff, {"amount": 5000.0})
    out["transactions"] = tx.sample(frac=1.0, random_state=1).reset_index(drop=True)
    it = _append(out["interactions"], [(c, t, "phone", cat, ANGRY, 1.0) for c in everyone for t in [at_t, *later]
                                       for cat in ("cancellation", "billing")])
    it = _modify_first_future_row(it, cutoff, {"text": ANGRY + "!!", "rating": 0.0, "category": "billing"})
    out["interactions"] = it.sample(frac=1.0, random_state=2).reset_index(drop=True)
    cu = out["customers"]
    churn = pd.to_datetime(cu["churn_date"], format="mixed")
    signup = pd.to_datetime(cu["signup_date"], format="mixed")
    for i in cu.index:
        if signup[i] >= cutoff:  # not a customer yet: leave alone (a churn date must follow the signup)
            continue
        if pd.isna(churn[i]):
            if cu.loc[i, "customer_id"] in ("A", "G"):  # never churned -> churns after the cutoff
                cu.loc[i, "churn_date"] = str(cutoff + pd.Timedelta("1s") if cu.loc[i, "customer_id"] == "A"
                                              else cutoff + pd.Timedelta("365D"))
        elif churn[i] > cutoff:  # churns after the cutoff -> churns at another time after it
            cu.loc[i, "churn_date"] = str(cutoff + pd.Timedelta("200D"))
    return out


CUTOFFS = {
    "T": T,
    "early-no-events-yet": pd.Timestamp("2024-01-01"),  # every event lies after it; only A's 2023-12-15 purchase before
    "mid-day": pd.Timestamp("2024-05-15 12:00"),  # not a midnight: calendar-day features must still stop at it
}


# --------------------------------------------------------------------------- (a) deterministic
@pytest.mark.parametrize("cutoff", list(CUTOFFS.values()), ids=list(CUTOFFS))
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_records_at_and_after_cutoff_change_nothing(scenario, cutoff):
    before = baseline(scenario, cutoff)
    after = build_at(future_changes(_frames(scenario), cutoff), scenario, cutoff)
    diff = feature_diff(before, after)
    assert not diff, f"{len(diff)} feature difference(s) from records at/after the cutoff:\n" + "\n".join(diff[:25])
    pd.testing.assert_frame_equal(before, after)
    assert len(before) >= 1 and before.shape[1] > 30


def test_future_changes_do_change_labels():
    """Sanity check of the scenario itself: the future it writes is real (labels see it, features must not)."""
    cfg = _config("churn_date-contractual")
    fb_before = FeatureBuilder(tables_from_frames(raw_frames(), cfg), cfg, scorer=KeywordScorer())
    fb_after = FeatureBuilder(tables_from_frames(future_changes(raw_frames()), cfg), cfg, scorer=KeywordScorer())
    lb, la = fb_before.build(T, with_labels=True).frame, fb_after.build(T, with_labels=True).frame
    assert lb["label"].tolist() == [0, 0, 1, 0, 0] and la["label"].tolist() == [1, 0, 0, 0, 0]
    later = pd.Timestamp("2024-06-02")  # one day later the new records are history and do move features
    assert feature_diff(fb_before.build(later).frame, fb_after.build(later).frame)


# --------------------------------------------------------------------------- (b) sensitivity
def test_changes_before_cutoff_move_exactly_the_right_features():
    scenario = "churn_date-contractual"
    frames = _frames(scenario)
    frames["events"] = _append(frames["events"], [("B", "2024-05-31 00:00", "login", None)])  # 1 day before T
    frames["interactions"] = _append(frames["interactions"], [("G", "2024-05-29", "email", "billing", None, None)])
    after, specs = build_at(frames, scenario, with_specs=True)
    before = baseline(scenario)
    cells = changed_cells(before, after)
    family = {s.name: s.family for s in specs}
    # only B (the login) and G (the complaint) move, and only within the family that owns the record
    assert {cid for cid, _ in cells} == {"B", "G"}
    b_moved = {col for cid, col in cells if cid == "B"}
    g_moved = {col for cid, col in cells if cid == "G"}
    assert {family[c] for c in b_moved} == {"behavioral"}, b_moved
    assert {family[c] for c in g_moved} == {"sentiment"}, g_moved
    assert {"days_since_last_event", "events_7d", "active_days_7d", "events_30d", "active_days_30d",
            "events_90d", "active_days_90d", "activity_trend_30_60", "login_30d", "login_trend_30_60"} <= b_moved
    assert "view_30d" not in b_moved and "lifecycle_stage" not in b_moved  # B stays "new"
    assert {"interactions_90d", "complaints_30d", "complaints_90d", "days_since_last_complaint"} <= g_moved
    assert not {"sentiment_latest", "rating_latest", "sentiment_mean_90d"} & g_moved  # no text, no rating
    b, a = before.set_index("customer_id"), after.set_index("customer_id")
    assert (b.loc["B", "events_7d"], a.loc["B", "events_7d"]) == (0, 1)
    assert (b.loc["B", "login_30d"], a.loc["B", "login_30d"]) == (1, 2)
    assert (b.loc["B", "days_since_last_event"], a.loc["B", "days_since_last_event"]) == (12, 1)
    assert (b.loc["B", "activity_trend_30_60"], a.loc["B", "activity_trend_30_60"]) == (1.0, 3.0)
    assert (b.loc["G", "complaints_30d"], a.loc["G", "complaints_30d"]) == (0, 1)
    assert a.loc["G", "days_since_last_complaint"] == 3


def test_purchase_one_second_before_cutoff_counts():
    scenario = "churn_date-contractual"
    frames = _frames(scenario)
    frames["transactions"] = _append(frames["transactions"], [("F", str(T - pd.Timedelta("1s")), 30.0)])
    cells = changed_cells(baseline(scenario), build_at(frames, scenario))
    assert {("F", "spend_30d"), ("F", "purchases_90d"), ("F", "days_since_last_purchase"),
            ("F", "monthly_revenue"), ("F", "lifetime_value")} <= cells


# --------------------------------------------------------------------------- (c) property
OFFSET = st.integers(min_value=0, max_value=200 * 86400)  # seconds after T; 0 = exactly at T
CUSTOMER = st.sampled_from(list("ABCDEFG"))
TEXTS = [None, "", ANGRY, "great, thanks", "ok", "you charged me again", "取消订阅", "bad bad bad"]
EVENT_ROWS = st.tuples(CUSTOMER, OFFSET, st.sampled_from(["login", "view", "cancel_click", "support call"]),
                       st.one_of(st.none(), st.floats(0, 1e4)))
TX_ROWS = st.tuples(CUSTOMER, OFFSET, st.floats(0, 1e7))
INTER_ROWS = st.tuples(CUSTOMER, OFFSET, st.sampled_from(["email", "chat", None]),
                       st.sampled_from(["billing", "technical", "cancellation", "other", None]),
                       st.sampled_from(TEXTS), st.one_of(st.none(), st.integers(1, 5)))
CHURN_MOVES = st.dictionaries(st.sampled_from(list("ABCDEFG")), st.integers(1, 400 * 86400), max_size=3)


# No shrinking: one example costs a full table validation and build, and the failure message already lists
# every leaked feature, so a minimal example is not worth minutes of shrinking on a shared machine.
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow],
          phases=[Phase.explicit, Phase.reuse, Phase.generate])
@given(
    scenario=st.sampled_from(list(SCENARIOS)),
    cutoff=st.sampled_from(list(CUTOFFS.values())),
    events=st.lists(EVENT_ROWS, max_size=10),
    transactions=st.lists(TX_ROWS, max_size=10),
    interactions=st.lists(INTER_ROWS, max_size=10),
    churn_moves=CHURN_MOVES,
)
def test_random_future_records_never_change_features(scenario, cutoff, events, transactions, interactions,
                                                     churn_moves):
    def at(offset_s: int) -> str:
        return str(cutoff + pd.Timedelta(seconds=offset_s))

    frames = _frames(scenario)
    if "events" in frames:
        frames["events"] = _append(frames["events"], [(c, at(o), et, v) for c, o, et, v in events])
    frames["transactions"] = _append(frames["transactions"], [(c, at(o), a) for c, o, a in transactions])
    frames["interactions"] = _append(frames["interactions"],
                                     [(c, at(o), ch, cat, tx, r) for c, o, ch, cat, tx, r in interactions])
    cu = frames["customers"]
    churn = pd.to_datetime(cu["churn_date"], format="mixed")
    signup = pd.to_datetime(cu["signup_date"], format="mixed")
    for cid, offset in churn_moves.items():  # a customer still with us at the cutoff may churn at any time after it
        i = cu.index[cu["customer_id"].eq(cid)][0]
        if signup[i] < cutoff and not churn[i] <= cutoff:
            cu.loc[i, "churn_date"] = at(offset)
    diff = feature_diff(baseline(scenario, cutoff), build_at(frames, scenario, cutoff))
    assert not diff, f"{len(diff)} feature difference(s) from records at/after the cutoff:\n" + "\n".join(diff[:25])


# --------------------------------------------------------------------------- (d) the check can fail
FAMILY_MODULES = {"behavioral": features.behavioral, "sentiment": features.sentiment, "value": features.value}


def leaky_window_slice(ts: pd.Series, start: pd.Timestamp, stop: pd.Timestamp) -> slice:
    """The classic off-by-one: the row stamped exactly at the cutoff is let into the window."""
    return slice(int(ts.searchsorted(start, side="left")), int(ts.searchsorted(stop, side="right")))


def test_checker_detects_a_window_that_includes_the_cutoff(monkeypatch):
    scenario = "churn_date-contractual"
    before = baseline(scenario)  # computed with the correct windows
    for module in FAMILY_MODULES.values():
        monkeypatch.setattr(module, "window_slice", leaky_window_slice)
    diff = feature_diff(before, build_at(future_changes(_frames(scenario)), scenario))
    assert diff, "the leakage check missed a window that includes the cutoff"
    text = "\n".join(diff)
    # every family is caught, and the future-only event type shows up as a new column
    for col in ("events_7d", "complaints_30d", "sentiment_latest", "spend_30d", "days_since_last_purchase"):
        assert f"{col}: customer" in text, col
    assert "cancel_click" in diff[0]


@pytest.mark.parametrize("family", list(FAMILY_MODULES))
def test_checker_detects_a_leak_in_each_family_alone(monkeypatch, family):
    scenario = "churn_date-contractual"
    before = baseline(scenario)
    monkeypatch.setattr(FAMILY_MODULES[family], "window_slice", leaky_window_slice)
    # a single record at exactly T in the family's table is enough
    frames = _frames(scenario)
    table, row = {
        "behavioral": ("events", ("G", str(T), "login", None)),
        "sentiment": ("interactions", ("G", str(T), "email", "billing", ANGRY, 1.0)),
        "value": ("transactions", ("G", str(T), 100.0)),
    }[family]
    frames[table] = _append(frames[table], [row])
    diff = feature_diff(before, build_at(frames, scenario))
    assert diff
    expected = {"behavioral": "events_7d", "sentiment": "complaints_30d", "value": "spend_30d"}[family]
    assert f"{expected}: customer G: 0.0 -> 1" in "\n".join(diff), diff


def test_property_check_detects_the_leak_too(monkeypatch):
    """The hypothesis test body, run on one future record at exactly T, fails under the broken window."""
    baseline("churn_date-contractual")  # cached with the correct windows before breaking them
    for module in FAMILY_MODULES.values():
        monkeypatch.setattr(module, "window_slice", leaky_window_slice)
    with pytest.raises(AssertionError):
        test_random_future_records_never_change_features.hypothesis.inner_test(
            scenario="churn_date-contractual", cutoff=T, events=[("A", 0, "login", 5.0)], transactions=[],
            interactions=[], churn_moves={})
