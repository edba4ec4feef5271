"""The table cache: hits equal fresh loads (values and dtypes), misses on any changed input or config, can be
switched off, stays under its size cap, and falls back to a fresh load when an entry is damaged."""

from __future__ import annotations

import logging
import os

import numpy as np
import pandas as pd
import pytest

from churn.config import Config
from features import table_cache
from features.contract import event_type_categorical, load_tables
from tests.features.conftest import make_config, raw_frames, write_frames

FRAMES = ("customers", "events", "transactions", "interactions", "subscriptions", "treatments")


def _cfg(**cache: object) -> Config:
    cfg = make_config()
    data = cfg.data.model_copy(update={"cache": cfg.data.cache.model_copy(update=cache)})
    return cfg.model_copy(update={"data": data})


def _entries(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if (p / table_cache.MANIFEST).is_file()) if folder.is_dir() else []


def _assert_same_tables(a, b) -> None:
    for name in FRAMES:
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            pd.testing.assert_frame_equal(x, y, check_exact=True)
            assert dict(x.dtypes) == dict(y.dtypes), name
    assert (a.files, a.input_hash, a.attributes, a.derived) == (b.files, b.input_hash, b.attributes, b.derived)


@pytest.fixture
def data_dir(tmp_path):
    return write_frames(tmp_path / "data", raw_frames(), "parquet")


def test_second_load_hits_the_cache_with_equal_tables(data_dir, tmp_path, caplog):
    folder = tmp_path / "cache"
    cfg = _cfg(folder=str(folder))
    fresh = load_tables(data_dir, cfg, cache=False)
    assert _entries(folder) == []  # cache=False writes nothing
    first = load_tables(data_dir, cfg)
    assert len(_entries(folder)) == 1
    with caplog.at_level(logging.INFO, logger="features.contract"):
        second = load_tables(data_dir, cfg)
    assert "read from the table cache" in caplog.text
    assert "loaded events" not in caplog.text  # nothing was read from the data files
    _assert_same_tables(fresh, first)
    _assert_same_tables(fresh, second)
    assert second.events["event_type"].dtype == fresh.events["event_type"].dtype  # categories and their dtype
    assert isinstance(second.events["event_type"].dtype, pd.CategoricalDtype)


def test_changed_input_or_config_misses(data_dir, tmp_path):
    folder = tmp_path / "cache"
    cfg = _cfg(folder=str(folder))
    load_tables(data_dir, cfg)
    frames = raw_frames()
    frames["transactions"].loc[0, "amount"] = 123.0
    write_frames(data_dir, {"transactions": frames["transactions"]}, "parquet")
    changed = load_tables(data_dir, cfg)
    assert len(_entries(folder)) == 2
    assert 123.0 in changed.transactions["amount"].to_numpy()
    limits = cfg.data.limits.model_copy(update={"rating_max": 20.0})
    load_tables(data_dir, cfg.model_copy(update={"data": cfg.data.model_copy(update={"limits": limits})}))
    assert len(_entries(folder)) == 3
    load_tables(data_dir, cfg, require_label=False)
    assert len(_entries(folder)) == 4
    # the cache settings themselves are not part of the key
    load_tables(data_dir, _cfg(folder=str(folder), max_mb=1000))
    assert len(_entries(folder)) == 4


def test_switched_off_by_config_and_environment(data_dir, tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    load_tables(data_dir, _cfg(folder=str(folder), enabled=False))
    assert not folder.exists()
    monkeypatch.setenv("CHURN_NO_CACHE", "1")
    load_tables(data_dir, _cfg(folder=str(folder)))
    assert not folder.exists()
    monkeypatch.delenv("CHURN_NO_CACHE")
    monkeypatch.setenv("CHURN_CACHE_DIR", str(tmp_path / "from_env"))
    load_tables(data_dir, make_config())  # folder: null -> $CHURN_CACHE_DIR
    assert len(_entries(tmp_path / "from_env")) == 1


def test_size_cap_evicts_least_recently_used(data_dir, tmp_path):
    folder = tmp_path / "cache"
    cfg = _cfg(folder=str(folder))
    load_tables(data_dir, cfg)
    (first,) = _entries(folder)
    size_mb = sum(f.stat().st_size for f in (folder / first).iterdir()) / 2**20
    os.utime(folder / first / table_cache.MANIFEST, (1_000_000, 1_000_000))  # long unused
    other = load_tables(data_dir, cfg, require_label=False)
    assert len(_entries(folder)) == 2 and other is not None
    removed = table_cache.evict(folder, max_mb=size_mb * 1.5)  # room for one entry: the older one goes
    assert [p.name for p in removed] == [first]
    assert len(_entries(folder)) == 1 and first not in _entries(folder)
    # a store above the cap evicts right away (here: everything but nothing fits, so the cache ends empty)
    load_tables(data_dir, _cfg(folder=str(folder), max_mb=size_mb / 10))
    assert _entries(folder) == []


@pytest.mark.parametrize("damage", ["garbage", "truncated", "manifest"])
def test_damaged_entry_warns_and_loads_afresh(data_dir, tmp_path, caplog, damage):
    folder = tmp_path / "cache"
    cfg = _cfg(folder=str(folder))
    fresh = load_tables(data_dir, cfg)
    (key,) = _entries(folder)
    target = folder / key / ("events.arrow" if damage != "manifest" else table_cache.MANIFEST)
    if damage == "truncated":
        target.write_bytes(target.read_bytes()[:100])
    else:
        target.write_bytes(b"not an arrow file or json {")
    with caplog.at_level(logging.WARNING):
        again = load_tables(data_dir, cfg)
    assert "unreadable" in caplog.text and "loading afresh" in caplog.text
    _assert_same_tables(fresh, again)
    assert _entries(folder) == [key]  # rewritten by the fresh load
    _assert_same_tables(fresh, load_tables(data_dir, cfg))


def test_loader_warnings_are_repeated_on_a_hit(tmp_path, caplog):
    frames = raw_frames()
    del frames["interactions"]
    data_dir = write_frames(tmp_path / "data", frames, "parquet")
    cfg = _cfg(folder=str(tmp_path / "cache"))
    load_tables(data_dir, cfg)
    with caplog.at_level(logging.WARNING, logger="features.contract"):
        load_tables(data_dir, cfg)
    assert "table 'interactions' not found" in caplog.text and "(cached load)" in caplog.text


def test_cache_entry_holds_no_pickle(data_dir, tmp_path):
    folder = tmp_path / "cache"
    load_tables(data_dir, _cfg(folder=str(folder)))
    (key,) = _entries(folder)
    names = sorted(p.name for p in (folder / key).iterdir())
    assert names == ["customers.arrow", "events.arrow", "interactions.arrow", "manifest.json", "transactions.arrow"]
    for p in (folder / key).glob("*.arrow"):
        assert p.read_bytes()[:6] == b"ARROW1"


@pytest.mark.parametrize("values, categories", [
    (["login", "session", "login", "alpha"], None),
    ([3, 1, 3, 2], None),
    (["b", "a", "b"], ["c", "b", "a", "unused"]),
], ids=["text", "integer-categories", "unsorted-with-unused"])
def test_event_type_categorical_equals_the_text_round_trip(values, categories):
    cat = pd.Series(pd.Categorical(values, categories=categories))
    expected = pd.Categorical(cat.astype(str))
    got = event_type_categorical(cat)
    assert list(got.categories) == list(expected.categories)
    assert got.categories.dtype == expected.categories.dtype
    np.testing.assert_array_equal(got.codes, expected.codes)
    pd.testing.assert_series_equal(pd.Series(got), pd.Series(expected))


def test_cli_no_cache_switch(demo_data_dir, tmp_path, monkeypatch):
    from tests.conftest import run_cli

    folder = tmp_path / "cli_cache"
    monkeypatch.setenv("CHURN_CACHE_DIR", str(folder))
    args = ["features", "--data", demo_data_dir, "--as-of", "2025-06-01", "--out", tmp_path / "f.parquet"]
    monkeypatch.setattr(os, "environ", os.environ.copy())  # the switch sets CHURN_NO_CACHE for the process
    assert run_cli(["--no-cache", *args]).exit_code == 0
    assert _entries(folder) == []
    del os.environ["CHURN_NO_CACHE"]
    assert run_cli(args).exit_code == 0
    assert len(_entries(folder)) == 1


@pytest.mark.parametrize("unit", [10**9, 1], ids=["whole-seconds-key", "nanoseconds-arrow"])
def test_time_order_equals_lexsort(unit):
    from features.contract import _time_order

    rng = np.random.default_rng(3)
    ts = rng.integers(0, 50, 400).astype(np.int64) * unit + 1_700_000_000 * 10**9
    codes = rng.integers(0, 7, 400).astype(np.int32)  # many exact (timestamp, code) ties: stability matters
    np.testing.assert_array_equal(_time_order(ts, codes), np.lexsort((codes, ts)))
    assert _time_order(np.sort(ts), np.zeros(400, dtype=np.int32)) is None  # already in order
