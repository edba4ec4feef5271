"""The data contract: loading, column mapping and every kind of bad input, named precisely."""

from __future__ import annotations

import logging
import re

import numpy as np
import pandas as pd
import pytest

from churn.errors import EXIT_DATA, EXIT_NO_INPUT, DataError, InputNotFoundError
from features.build import FeatureBuilder
from features.contract import load_tables
from tests.features.conftest import KeywordScorer, make_config, raw_frames, write_frames


def _load(tmp_path, frames, cfg=None, fmt="csv"):
    cfg = cfg or make_config()
    write_frames(tmp_path / "data", frames, fmt)
    return load_tables(tmp_path / "data", cfg.data)


def _raises(tmp_path, frames, table, column, count, problem, cfg=None):
    """Load ``frames`` and check the DataError names table, column, problem and (if given) the row count."""
    pattern = f"table '{table}'" + (f", column '{column}'" if column else "") + f": {re.escape(problem)}"
    with pytest.raises(DataError, match=pattern) as info:
        _load(tmp_path, frames, cfg)
    err = info.value
    assert err.table == table and err.column == column and err.count == count
    if count is not None:
        assert f"({count} row{'s' if count != 1 else ''})" in str(err)
    assert err.exit_code == EXIT_DATA
    return str(err)


# --------------------------------------------------------------------------- happy path
def test_csv_loads_canonical_sorted_tables(tmp_path):
    t = _load(tmp_path, raw_frames())
    assert list(t.customers.columns) == ["customer_id", "signup_date", "churn_date", "plan", "seats"]
    assert t.customers["signup_date"].dtype == "datetime64[ns]"
    assert t.customers["churn_date"].isna().sum() == 5
    assert t.customers["seats"].dtype == np.float64
    assert t.attributes == ["plan", "seats"]
    assert list(t.events.columns) == ["customer_id", "_code", "timestamp", "event_type", "value"]
    assert list(t.transactions.columns) == ["customer_id", "_code", "timestamp", "amount"]
    assert list(t.interactions.columns) == ["customer_id", "_code", "timestamp", "channel", "category", "text", "rating"]
    for name in ("events", "transactions", "interactions"):
        child = getattr(t, name)
        assert child["timestamp"].is_monotonic_increasing
        assert child["timestamp"].dtype == "datetime64[ns]"
        # _code is the customer's row in customers
        assert (t.customers["customer_id"].to_numpy()[child["_code"].to_numpy()] == child["customer_id"].to_numpy()).all()
    # missing text becomes ""; missing ratings stay NaN
    inter = t.interactions
    assert inter.loc[inter["customer_id"].eq("C") & inter["category"].eq("cancellation"), "text"].iloc[0] == ""
    assert inter["rating"].isna().sum() == 2
    assert len(t.files) == 4 and t.input_hash.startswith("sha256:")
    assert t.data_end == pd.Timestamp("2024-07-01")  # E's signup is the latest stamp
    assert t.data_start == pd.Timestamp("2023-12-15")


def test_csv_and_parquet_load_the_same(tmp_path):
    a = _load(tmp_path / "a", raw_frames(), fmt="csv")
    b = _load(tmp_path / "b", raw_frames(), fmt="parquet")
    assert all(p.suffix == ".parquet" for p in b.files)
    for name in ("customers", "events", "transactions", "interactions"):
        pd.testing.assert_frame_equal(getattr(a, name), getattr(b, name))


def test_column_mapping_renames_user_columns(tmp_path):
    frames = raw_frames()
    frames["customers"] = frames["customers"].rename(
        columns={"customer_id": "cust", "signup_date": "joined", "churn_date": "left_on"})
    frames["events"] = frames["events"].rename(columns={"customer_id": "user", "timestamp": "ts", "event_type": "kind"})
    cfg = make_config(tables={
        "customers": {"file": "clients", "columns": {"customer_id": "cust", "signup_date": "joined",
                                                     "churn_date": "left_on"}, "attributes": ["plan"]},
        "events": {"file": "usage", "columns": {"customer_id": "user", "timestamp": "ts", "event_type": "kind"}},
    })
    write_frames(tmp_path, frames, names={"customers": "clients", "events": "usage",
                                          "transactions": "unused_tx", "interactions": "unused_int"})
    t = load_tables(tmp_path, cfg.data)
    assert list(t.customers.columns) == ["customer_id", "signup_date", "churn_date", "plan"]
    assert t.customers["customer_id"].tolist() == list("ABCDEFG")
    assert t.customers.loc[2, "churn_date"] == pd.Timestamp("2024-06-20")
    assert list(t.events.columns) == ["customer_id", "_code", "timestamp", "event_type", "value"]
    assert t.events["value"].sum() == 110.0  # unmapped roles keep their canonical name
    assert t.events.loc[t.events["customer_id"].eq("A"), "event_type"].iloc[0] == "login"
    assert t.transactions is None and t.interactions is None


def test_timezone_aware_timestamps_become_naive_utc(tmp_path):
    frames = raw_frames()
    frames["transactions"] = pd.DataFrame({
        "customer_id": ["A", "B"],
        "timestamp": ["2024-05-01T10:00:00+02:00", "2024-05-02T10:00:00+02:00"],
        "amount": [1.0, 2.0],
    })
    t = _load(tmp_path, frames)
    assert t.transactions["timestamp"].dt.tz is None
    assert t.transactions["timestamp"].tolist() == [pd.Timestamp("2024-05-01 08:00"), pd.Timestamp("2024-05-02 08:00")]


def test_mixed_utc_offsets_across_dst_become_naive_utc(tmp_path):
    """Local timestamps exported across a DST change carry two offsets (+01:00 and +02:00)."""
    frames = raw_frames()
    frames["transactions"] = pd.DataFrame({
        "customer_id": ["A", "B", "C"],
        "timestamp": ["2024-03-30T10:00:00+01:00", "2024-04-02T10:00:00+02:00", "2024-04-03T10:00:00Z"],
        "amount": [1.0, 2.0, 3.0],
    })
    t = _load(tmp_path, frames)
    assert t.transactions["timestamp"].tolist() == [
        pd.Timestamp("2024-03-30 09:00"), pd.Timestamp("2024-04-02 08:00"), pd.Timestamp("2024-04-03 10:00")]


def test_parquet_tz_aware_column_becomes_naive_utc(tmp_path):
    frames = raw_frames()
    frames["events"]["timestamp"] = pd.to_datetime(frames["events"]["timestamp"]).dt.tz_localize("America/New_York")
    t = _load(tmp_path, frames, fmt="parquet")
    assert t.events["timestamp"].dt.tz is None
    first = t.events.loc[t.events["customer_id"].eq("A")].iloc[0]
    assert first["timestamp"] == pd.Timestamp("2024-01-15 14:00")  # 09:00 EST = 14:00 UTC


# --------------------------------------------------------------------------- missing inputs
def test_missing_customers_file(tmp_path):
    frames = raw_frames()
    del frames["customers"]
    write_frames(tmp_path, frames)
    with pytest.raises(InputNotFoundError, match=r"table 'customers': no file 'customers'") as info:
        load_tables(tmp_path, make_config().data)
    assert info.value.exit_code == EXIT_NO_INPUT


def test_missing_data_folder(tmp_path):
    with pytest.raises(InputNotFoundError, match="data folder not found"):
        load_tables(tmp_path / "nope", make_config().data)


def test_missing_required_optional_table(tmp_path):
    cfg = make_config(tables={"customers": {"file": "customers"}, "events": {"file": "events", "required": True}})
    write_frames(tmp_path, {"customers": raw_frames()["customers"]})
    with pytest.raises(InputNotFoundError, match="table 'events'"):
        load_tables(tmp_path, cfg.data)


def test_missing_optional_table_warns_and_switches_family_off(tmp_path, caplog):
    frames = raw_frames()
    del frames["interactions"]
    cfg = make_config()
    write_frames(tmp_path, frames)
    with caplog.at_level(logging.WARNING, logger="features.contract"):
        t = load_tables(tmp_path, cfg.data)
    assert t.interactions is None
    assert any("interactions" in r.getMessage() and "switched off" in r.getMessage() for r in caplog.records)
    fb = FeatureBuilder(t, cfg, scorer=KeywordScorer())
    assert fb.families() == ["profile", "behavioral", "value"]
    cols = fb.build(pd.Timestamp("2024-06-01")).frame.columns
    assert "complaints_30d" not in cols and "events_30d" in cols and "spend_30d" in cols


def test_unconfigured_table_warns(tmp_path, caplog):
    cfg = make_config(tables={"customers": {"file": "customers"}, "transactions": {"file": "transactions"}})
    write_frames(tmp_path, raw_frames())
    with caplog.at_level(logging.WARNING, logger="features.contract"):
        t = load_tables(tmp_path, cfg.data)
    msgs = " ".join(r.getMessage() for r in caplog.records)
    assert "'events' is not configured" in msgs and "'interactions' is not configured" in msgs
    fb = FeatureBuilder(t, cfg, scorer=KeywordScorer())
    # without events, behaviour is derived from transactions
    assert fb.families() == ["profile", "behavioral", "value"]
    assert fb.activity["event_type"].eq("purchase").all()


def test_only_customers_gives_profile_and_tenure(tmp_path):
    cfg = make_config(tables={"customers": {"file": "customers", "attributes": ["plan"]}})
    write_frames(tmp_path, {"customers": raw_frames()["customers"]})
    fb = FeatureBuilder(load_tables(tmp_path, cfg.data), cfg, scorer=KeywordScorer())
    assert fb.families() == ["profile"]
    fs = fb.build(pd.Timestamp("2024-06-01"))
    assert list(fs.frame.columns) == ["customer_id", "cutoff", "plan", "tenure_days"]
    assert fs.frame["tenure_days"].tolist() == [517.0, 47.0, 366.0, 486.0, 486.0]


# --------------------------------------------------------------------------- bad input
def test_customers_without_signup_date(tmp_path):
    frames = raw_frames()
    frames["customers"] = frames["customers"].drop(columns="signup_date")
    msg = _raises(tmp_path, frames, "customers", "signup_date", None, "missing required column(s) ['signup_date']")
    assert "columns found" in msg and "churn_date" in msg


def test_mapped_signup_column_missing_names_the_user_column(tmp_path):
    frames = raw_frames()
    frames["customers"] = frames["customers"].rename(columns={"customer_id": "cust"})  # no 'joined' column
    cfg = make_config(tables={"customers": {"file": "customers",
                                            "columns": {"customer_id": "cust", "signup_date": "joined"}}})
    _raises(tmp_path, frames, "customers", "joined", None, "missing required column(s) ['joined']", cfg=cfg)


def test_missing_attribute_column(tmp_path):
    frames = raw_frames()
    frames["customers"] = frames["customers"].drop(columns="seats")
    _raises(tmp_path, frames, "customers", "seats", None, "attribute column(s) ['seats'] not in the file")


def test_unparseable_dates_show_count_and_examples(tmp_path):
    frames = raw_frames()
    frames["events"].loc[3, "timestamp"] = "not a date"
    frames["events"].loc[7, "timestamp"] = "2024-13-45"
    msg = _raises(tmp_path, frames, "events", "timestamp", 2, "unparseable dates")
    assert "examples:" in msg and "not a date" in msg and "2024-13-45" in msg


def test_unparseable_signup_date(tmp_path):
    frames = raw_frames()
    frames["customers"].loc[1, "signup_date"] = "yesterday-ish"
    msg = _raises(tmp_path, frames, "customers", "signup_date", 1, "unparseable dates")
    assert "yesterday-ish" in msg


def test_missing_signup_date_value(tmp_path):
    frames = raw_frames()
    frames["customers"].loc[[1, 2], "signup_date"] = None
    _raises(tmp_path, frames, "customers", "signup_date", 2, "missing dates")


def test_duplicate_customer_ids(tmp_path):
    frames = raw_frames()
    frames["customers"].loc[1, "customer_id"] = "A"  # A appears twice: two offending rows
    msg = _raises(tmp_path, frames, "customers", "customer_id", 2, "duplicate customer ids")
    assert "2024-04-15" in msg  # the duplicate row is shown


def test_child_rows_with_unknown_customer(tmp_path):
    frames = raw_frames()
    frames["transactions"].loc[[0, 4, 5], "customer_id"] = ["X1", "X2", "X2"]
    msg = _raises(tmp_path, frames, "transactions", "customer_id", 3, "rows whose customer is not in the customers table")
    assert "X1" in msg and "X2" in msg


def test_negative_amounts(tmp_path):
    frames = raw_frames()
    frames["transactions"].loc[2, "amount"] = -5.0
    msg = _raises(tmp_path, frames, "transactions", "amount", 1, "negative amounts")
    assert "-5.0" in msg


def test_non_numeric_amounts(tmp_path):
    frames = raw_frames()
    frames["transactions"]["amount"] = frames["transactions"]["amount"].astype(object)
    frames["transactions"].loc[[1, 3], "amount"] = ["12,50 EUR", "abc"]
    msg = _raises(tmp_path, frames, "transactions", "amount", 2, "non-numeric values")
    assert "12,50 EUR" in msg and "abc" in msg


def test_missing_amounts(tmp_path):
    frames = raw_frames()
    frames["transactions"].loc[1, "amount"] = None
    _raises(tmp_path, frames, "transactions", "amount", 1, "missing amounts")


def test_missing_event_type(tmp_path):
    frames = raw_frames()
    frames["events"].loc[[0, 1, 2], "event_type"] = None
    _raises(tmp_path, frames, "events", "event_type", 3, "missing event types")


def test_non_numeric_rating(tmp_path):
    frames = raw_frames()
    frames["interactions"]["rating"] = frames["interactions"]["rating"].astype(object)
    frames["interactions"].loc[1, "rating"] = "five stars"
    _raises(tmp_path, frames, "interactions", "rating", 1, "non-numeric values")


def test_empty_customers_table(tmp_path):
    frames = raw_frames()
    frames["customers"] = frames["customers"].iloc[:0]
    _raises(tmp_path, frames, "customers", None, None, "table is empty")


def test_empty_child_table(tmp_path):
    frames = raw_frames()
    frames["events"] = frames["events"].iloc[:0]
    _raises(tmp_path, frames, "events", None, None, "table is empty")


def test_churn_date_before_signup(tmp_path):
    frames = raw_frames()
    frames["customers"].loc[[0, 5], "churn_date"] = ["2022-12-31", "2023-01-15"]
    msg = _raises(tmp_path, frames, "customers", "churn_date", 2, "churn date before signup date")
    assert "2022-12-31" in msg


def test_unreadable_file(tmp_path):
    write_frames(tmp_path, raw_frames())
    (tmp_path / "events.csv").unlink()
    (tmp_path / "events.parquet").write_bytes(b"this is not parquet")
    with pytest.raises(DataError, match=r"table 'events': cannot read .*events.parquet"):
        load_tables(tmp_path, make_config().data)


# --------------------------------------------------------------------------- fast path == reference
def _reference_child(raw: pd.DataFrame, customers: pd.DataFrame, extra: list[str]) -> pd.DataFrame:
    """What the loader must return, spelled out: codes by explicit lookup, then a stable (timestamp, code) sort."""
    pos = {cid: i for i, cid in enumerate(customers["customer_id"])}
    ref = pd.DataFrame({"customer_id": raw["customer_id"].astype(str).to_numpy(),
                        "_code": np.array([pos[c] for c in raw["customer_id"]], dtype=np.int32),
                        "timestamp": pd.to_datetime(raw["timestamp"]).astype("datetime64[ns]").to_numpy()})
    for col in extra:
        ref[col] = raw[col].to_numpy()
    return ref.sort_values(["timestamp", "_code"], kind="stable").reset_index(drop=True)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
@pytest.mark.parametrize("presorted", [False, True])
def test_child_tables_match_explicit_sort_reference(tmp_path, fmt, presorted):
    """Shuffled rows, many duplicate timestamps (ties broken by customer code, then file order)."""
    rng = np.random.default_rng(7)
    customers = pd.DataFrame({"customer_id": [f"K{i:03d}" for i in rng.permutation(40)],
                              "signup_date": "2023-01-01", "churn_date": None, "plan": "basic", "seats": 1})
    n = 600
    stamps = pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 12, n), unit="h")  # ~50 rows per stamp
    ids = rng.choice(customers["customer_id"].to_numpy(), n)
    events = pd.DataFrame({"customer_id": ids, "timestamp": stamps.strftime("%Y-%m-%d %H:%M:%S"),
                           "event_type": rng.choice(["login", "export", "share"], n), "value": np.arange(n, dtype=float)})
    tx = pd.DataFrame({"customer_id": ids, "timestamp": stamps.strftime("%Y-%m-%d %H:%M:%S"),
                       "amount": np.arange(n, dtype=float)})
    if presorted:  # already in (timestamp, code) order: the sort is skipped, the result is the same
        code = customers.reset_index().set_index("customer_id")["index"]
        key = events.assign(_c=code.reindex(ids).to_numpy(), _t=stamps)
        keep = key.sort_values(["_t", "_c"], kind="stable").index
        events, tx = events.loc[keep].reset_index(drop=True), tx.loc[keep].reset_index(drop=True)
    t = _load(tmp_path, {"customers": customers, "events": events, "transactions": tx}, fmt=fmt)

    ref = _reference_child(events, t.customers, ["event_type", "value"])
    got = t.events.assign(event_type=t.events["event_type"].astype(str))
    pd.testing.assert_frame_equal(got, ref)
    assert isinstance(t.events["event_type"].dtype, pd.CategoricalDtype)
    assert t.events["customer_id"].dtype == t.customers["customer_id"].dtype == "str"
    pd.testing.assert_frame_equal(t.transactions, _reference_child(tx, t.customers, ["amount"]))
    # the values column (row numbers) shows ties keep file order within a (timestamp, customer)
    dup = ref.duplicated(["timestamp", "_code"], keep=False)
    assert dup.any() and ref.loc[dup].groupby(["timestamp", "_code"])["value"].apply(
        lambda v: v.is_monotonic_increasing).all()


def test_unknown_customers_in_a_large_shuffled_table(tmp_path):
    frames = raw_frames()
    ev = frames["events"]
    big = pd.concat([ev] * 50, ignore_index=True).sample(frac=1.0, random_state=3).reset_index(drop=True)
    big.loc[[5, 77, 310], "customer_id"] = ["Z9", "Z9", "Q1"]
    frames["events"] = big
    msg = _raises(tmp_path, frames, "events", "customer_id", 3, "rows whose customer is not in the customers table")
    assert "Z9" in msg and "Q1" in msg


def test_typed_columns_with_bad_values_are_still_reported(tmp_path):
    """Parquet keeps types: a datetime timestamp column skips the text check; a text amount column reports
    exactly the rows that are neither numbers nor blank."""
    frames = raw_frames()
    frames["events"]["timestamp"] = pd.to_datetime(frames["events"]["timestamp"])
    amount = frames["transactions"]["amount"].astype(str)
    amount.loc[[0, 2]] = ["n/a", "  "]  # blank is missing, not non-numeric
    frames["transactions"]["amount"] = amount
    write_frames(tmp_path / "data", frames, "parquet")
    with pytest.raises(DataError, match="non-numeric values") as info:
        load_tables(tmp_path / "data", make_config().data)
    assert info.value.count == 1 and "n/a" in str(info.value)


def test_a_customer_subset_keeps_their_rows_and_their_features():
    """``Tables.subset``: the kept customers' child rows, codes renumbered to the new customer rows, the data's end
    unchanged; features built on the subset equal the full set's rows of those customers."""
    from tests.features.conftest import CUTOFF, tables_from_frames

    cfg = make_config()
    tables = tables_from_frames(raw_frames(), cfg)
    ids = tables.customers["customer_id"].astype(str).tolist()
    keep = np.isin(ids, ["A", "C", "F"])
    sub = tables.subset(keep)
    assert sub.customers["customer_id"].astype(str).tolist() == ["A", "C", "F"]
    assert sub.data_end == tables.data_end
    for role in ("events", "transactions", "interactions"):
        full, part = getattr(tables, role), getattr(sub, role)
        kept = full[full["customer_id"].astype(str).isin(["A", "C", "F"])].reset_index(drop=True)
        assert part["customer_id"].astype(str).tolist() == kept["customer_id"].astype(str).tolist()  # order kept
        assert (sub.customers["customer_id"].astype(str).to_numpy()[part["_code"]] == part["customer_id"].astype(str)
                ).all()
    f_full = FeatureBuilder(tables, cfg, scorer=KeywordScorer()).build(CUTOFF).frame.set_index("customer_id")
    f_sub = FeatureBuilder(sub, cfg, scorer=KeywordScorer()).build(CUTOFF).frame.set_index("customer_id")
    f_full = f_full.loc[f_sub.index]
    differ = [c for c in f_sub.columns if not f_sub[c].astype(str).equals(f_full[c].astype(str))]
    # relative to the customer base by design (a quintile, a fitted retention curve, value tiers by quantile)
    assert differ == ["rfm_recency_score", "lifetime_value", "value_tier"]
    same = [c for c in f_sub.columns if c not in differ]
    pd.testing.assert_frame_equal(f_sub[same], f_full[same], check_dtype=False, check_categorical=False)
