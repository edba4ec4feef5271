"""The loader's lean paths give the frames of the plain ones.

* :func:`read_parquet` returns ``pd.read_parquet``'s frame, except the columns it is told to read as
  categoricals (same text) or as nanoseconds (same instants; kept when nanoseconds cannot hold them);
* Parquet child tables (categorical ids and event types, nanosecond timestamps) load into exactly the tables
  the CSV files of the same rows give, and a declared type (which keeps a column as the file has it) changes
  nothing either;
* the packed two-pass sort and the sliced, threaded gather equal NumPy's stable argsort and fancy indexing;
* validation leaves the caller's frame as it was, and a categorical id column gives the same error as text ids.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from churn.errors import DataError
from features.contract import _sort_packed, load_tables, read_parquet, take_rows, validate_child
from tests.features.conftest import make_config, raw_frames, write_frames

CHILDREN = ("events", "transactions", "interactions")


def _assert_same(a, b) -> None:
    for name in ("customers", *CHILDREN):
        x, y = getattr(a, name), getattr(b, name)
        pd.testing.assert_frame_equal(x, y, check_exact=True)
        assert dict(x.dtypes) == dict(y.dtypes), name


def test_read_parquet_is_pandas_frame_but_for_the_named_columns(tmp_path):
    path = tmp_path / "t.parquet"
    stamps = pd.to_datetime(["2024-01-02 03:04:05.123456", None, "2023-12-31"], format="ISO8601").astype("datetime64[us]")
    df = pd.DataFrame({"id": ["b", None, "a"], "t": stamps, "x": [1.5, np.nan, 3.0], "n": [1, 2, 3],
                       "s": ["u", "v", "u"], "far": pd.Series(["2300-01-01"] * 3, dtype="datetime64[us]")})
    df.to_parquet(path, index=False)
    plain = pd.read_parquet(path)
    pd.testing.assert_frame_equal(read_parquet(path), plain, check_exact=True)
    lean = read_parquet(path, categorical=["id", "absent"], nanoseconds=["t", "far", "x"])
    assert isinstance(lean["id"].dtype, pd.CategoricalDtype)
    assert lean["id"].astype(object).tolist() == plain["id"].astype(object).tolist() == ["b", np.nan, "a"]
    assert lean["t"].dtype == "datetime64[ns]"
    pd.testing.assert_series_equal(lean["t"], plain["t"].astype("datetime64[ns]"))
    assert lean["far"].dtype == "datetime64[us]"  # beyond 2262: left for the loader's range check to report
    pd.testing.assert_frame_equal(lean[["x", "n", "s", "far"]], plain[["x", "n", "s", "far"]], check_exact=True)


def _typed(frames: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """The frames with real timestamp columns (as a Parquet export has them)."""
    out = {k: v.copy() for k, v in frames.items()}
    for name in CHILDREN:
        out[name]["timestamp"] = pd.to_datetime(out[name]["timestamp"]).astype("datetime64[us]")
    return out


@pytest.mark.parametrize("types", [None, {"events": {"event_type": "category"}}], ids=["lean", "declared-type"])
def test_parquet_child_tables_load_like_csv(tmp_path, types):
    cfg = make_config()
    if types:
        tables = {n: tc.model_copy(update={"types": types.get(n, {})}) for n, tc in cfg.data.tables.items()}
        cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"tables": tables})})
    csv = load_tables(write_frames(tmp_path / "csv", raw_frames(), "csv"), cfg, cache=False)
    pq = load_tables(write_frames(tmp_path / "pq", _typed(raw_frames()), "parquet"), cfg, cache=False)
    _assert_same(csv, pq)
    assert isinstance(pq.events["event_type"].dtype, pd.CategoricalDtype)


def test_sort_packed_is_a_stable_argsort():
    rng = np.random.default_rng(5)
    keys = rng.integers(0, 30, 5000)  # many ties: their rows must stay in row order
    np.testing.assert_array_equal(_sort_packed(keys, 13), np.argsort(keys, kind="stable"))


@pytest.mark.parametrize("dtype", ["int64", "float64", "int8", "datetime64[ns]", "object"])
def test_take_rows_equals_fancy_indexing(dtype):
    n = (1 << 21) * 2 + 7  # three slices, the last one short
    rng = np.random.default_rng(2)
    values = rng.integers(-100, 100, n).astype(dtype) if dtype != "object" else np.arange(n).astype(object)
    order = rng.permutation(n)
    np.testing.assert_array_equal(take_rows(values, order), values[order])


def _events() -> pd.DataFrame:
    return _typed(raw_frames())["events"]


def test_validate_child_leaves_the_callers_frame_as_it_was():
    from tests.features.conftest import tables_from_frames

    customers = tables_from_frames(raw_frames()).customers
    ev = _events()
    before = ev.copy()
    out = validate_child(ev, "events", customers, None)
    pd.testing.assert_frame_equal(ev, before, check_exact=True)
    assert out["timestamp"].is_monotonic_increasing and len(out) == len(before)


def test_categorical_ids_report_unknown_customers_like_text_ids():
    from tests.features.conftest import tables_from_frames

    customers = tables_from_frames(raw_frames()).customers
    ev = _events()
    ev.loc[[1, 4], "customer_id"] = "ZZ9"
    messages = []
    for ids in (ev["customer_id"], ev["customer_id"].astype("category")):
        with pytest.raises(DataError) as info:
            validate_child(ev.assign(customer_id=ids), "events", customers, None)
        messages.append(str(info.value))
    assert messages[0] == messages[1]
    assert "2 rows" in messages[0] and "ZZ9" in messages[0]
