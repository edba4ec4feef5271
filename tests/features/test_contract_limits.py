"""Issue 9's odd inputs at the contract: far-future dates, Parquet dataset folders, inf/huge numbers,
ratings out of range, too many event types. Each is an error naming table and column, or read properly."""

from __future__ import annotations

import pandas as pd
import pytest

from churn.errors import EXIT_DATA, DataError
from features.contract import load_tables
from tests.features.conftest import make_config, raw_frames, write_frames


def _err(tmp_path, frames, cfg=None) -> DataError:
    write_frames(tmp_path / "data", frames)
    with pytest.raises(DataError) as info:
        load_tables(tmp_path / "data", cfg or make_config())
    assert info.value.exit_code == EXIT_DATA
    return info.value


@pytest.mark.parametrize(("table", "column", "value", "count"), [
    ("transactions", "amount", "inf", 1),
    ("transactions", "amount", "1e308", 1),
    ("events", "value", "-inf", 1),
    ("events", "value", "2e12", 1),
    ("interactions", "rating", "-5", 1),
    ("interactions", "rating", "1e9", 1),
], ids=["amount_inf", "amount_1e308", "value_minus_inf", "value_2e12", "rating_minus_5", "rating_1e9"])
def test_implausible_numbers_are_errors(tmp_path, table, column, value, count) -> None:
    frames = raw_frames()
    frames[table] = frames[table].astype({column: object})
    frames[table].loc[0, column] = value
    err = _err(tmp_path, frames)
    assert (err.table, err.column, err.count) == (table, column, count)
    assert "see data.limits" in str(err) and "examples:" in str(err)


def test_rating_limits_come_from_the_config(tmp_path) -> None:
    frames = raw_frames()
    frames["interactions"].loc[1, "rating"] = 7.0  # fine on the default [0, 10] scale
    cfg = make_config()
    cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"limits": cfg.data.limits.model_copy(
        update={"rating_max": 5.0})})})
    err = _err(tmp_path, frames, cfg)
    assert (err.table, err.column, err.count) == ("interactions", "rating", 1)
    assert "[0, 5]" in str(err)


def test_missing_rating_is_not_an_error(tmp_path) -> None:
    write_frames(tmp_path / "data", raw_frames())  # the hand-made table has two blank ratings
    t = load_tables(tmp_path / "data", make_config())
    assert int(pd.isna(t.interactions["rating"]).sum()) == 2


@pytest.mark.parametrize("stamp", ["2262-04-12", "2300-01-01", "9999-12-31"])
def test_dates_past_2262_name_table_and_column(tmp_path, stamp) -> None:
    frames = raw_frames()
    frames["events"].loc[2, "timestamp"] = stamp
    err = _err(tmp_path, frames)
    assert (err.table, err.column, err.count) == ("events", "timestamp", 1)


def test_parquet_datetime_past_2262_names_table_and_column(tmp_path) -> None:
    frames = raw_frames()
    tx = frames["transactions"]
    tx["timestamp"] = pd.to_datetime(tx["timestamp"]).astype("datetime64[us]")
    tx.loc[3, "timestamp"] = pd.Timestamp("2400-01-01")
    folder = write_frames(tmp_path / "data", {k: v for k, v in frames.items() if k != "transactions"})
    tx.to_parquet(folder / "transactions.parquet", index=False)
    with pytest.raises(DataError, match="outside the supported range") as info:
        load_tables(folder, make_config())
    assert (info.value.table, info.value.column, info.value.count) == ("transactions", "timestamp", 1)


def test_parquet_dataset_folder_reads_like_the_file(tmp_path) -> None:
    frames = raw_frames()
    write_frames(tmp_path / "flat", frames, fmt="parquet")
    ds = write_frames(tmp_path / "ds", {k: v for k, v in frames.items() if k != "events"}, fmt="parquet")
    (ds / "events.parquet").mkdir()
    frames["events"].iloc[:10].to_parquet(ds / "events.parquet" / "part-00000.parquet", index=False)
    frames["events"].iloc[10:].to_parquet(ds / "events.parquet" / "part-00001.parquet", index=False)
    (ds / "events.parquet" / "_SUCCESS").write_bytes(b"")
    flat, folder = load_tables(tmp_path / "flat", make_config()), load_tables(ds, make_config())
    pd.testing.assert_frame_equal(folder.events, flat.events)
    assert len(folder.events) == len(frames["events"]) == 23


def test_folder_without_parquet_is_an_error_not_missing(tmp_path) -> None:
    frames = raw_frames()
    folder = write_frames(tmp_path / "data", {k: v for k, v in frames.items() if k != "events"})
    (folder / "events").mkdir()
    (folder / "events" / "events.csv").write_text("customer_id,timestamp,event_type\n")
    with pytest.raises(DataError, match="folder with no Parquet part files") as info:
        load_tables(folder, make_config())
    assert info.value.table == "events"


def test_event_type_cap(tmp_path) -> None:
    frames = raw_frames()
    frames["events"]["event_type"] = [f"t{i}" for i in range(len(frames["events"]))]  # 23 distinct types
    cfg = make_config()
    capped = cfg.model_copy(update={"data": cfg.data.model_copy(update={"limits": cfg.data.limits.model_copy(
        update={"max_event_types": 20})})})
    err = _err(tmp_path, frames, capped)
    assert (err.table, err.column) == ("events", "event_type")
    assert "23 distinct event types" in str(err) and "max_event_types (20)" in str(err) and "lookups" in str(err)
    listed = capped.model_copy(update={"features": capped.features.model_copy(update={"event_types": ["t0", "t1"]})})
    assert len(load_tables(tmp_path / "data", listed).events) == 23  # listed types: the cap does not apply
