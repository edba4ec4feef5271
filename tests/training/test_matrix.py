"""Training matrices of large tables built chunk by chunk (training/matrix.py) and the refit that uses them."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from model.artifact import ChurnModel
from model.metrics import classification_metrics
from training import matrix
from training.matrix import quantile_matrix
from training.refit import Refitter


def _table(n: int, seed: int) -> pd.DataFrame:
    """``n`` rows at 4 monthly cutoffs: two informative numeric features, one categorical, a noisy label."""
    rng = np.random.default_rng(seed)
    x, z = rng.normal(size=n), rng.normal(size=n)
    plan = rng.choice(["basic", "plus", "pro"], size=n)
    logit = 1.2 * x - 0.8 * z + np.where(plan == "basic", 0.7, 0.0) - 1.5
    return pd.DataFrame({"customer_id": [f"c{i}" for i in range(n)],
                         "cutoff": np.repeat(pd.date_range("2024-01-01", periods=4, freq="MS"), n // 4),
                         "x": x, "z": z, "plan": pd.Categorical(plan, categories=["basic", "plus", "pro"]),
                         "label": (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int8)})


FEATURES, CATS = ["x", "z", "plan"], {"plan": ["basic", "plus", "pro"]}


def _prepare(rows: pd.DataFrame) -> pd.DataFrame:
    return ChurnModel(xgb.Booster(), FEATURES, CATS).prepare(rows)


def test_quantile_matrix_streams_every_row_with_its_label_and_weight():
    rows = _table(1000, seed=0)
    weight = np.linspace(0.5, 2.0, len(rows))
    dm = quantile_matrix(rows, _prepare, 1, weight=weight, chunk_rows=300)  # 4 chunks, the last one short
    assert (dm.num_row(), dm.num_col()) == (1000, 3)
    np.testing.assert_array_equal(dm.get_label(), rows["label"].to_numpy(dtype=np.float32))
    np.testing.assert_allclose(dm.get_weight(), weight.astype(np.float32))
    assert dm.feature_names == FEATURES and dm.feature_types == ["float", "float", "c"]


def test_chunked_refit_agrees_with_the_in_memory_refit(monkeypatch):
    """The large-table path (chunked QuantileDMatrix) learns the same model up to histogram-bin details."""
    monkeypatch.setattr(matrix, "CHUNK_ROWS", 700)  # several chunks on a small table
    rows, test = _table(4000, seed=1), _table(2000, seed=2)
    params = {"eta": 0.1, "max_depth": 3, "subsample": 0.8, "colsample_bytree": 0.8}
    plain = Refitter(params, 79, len(rows), FEATURES, CATS, "tuned", 0, 1)
    chunked = replace(plain, chunked=True, fits=[])
    p_plain = plain.fit(rows, "in memory").predict_raw(test)
    p_chunked = chunked.fit(rows, "chunked").predict_raw(test)
    auc_plain = classification_metrics(test["label"].to_numpy(), p_plain)["roc_auc"]
    auc_chunked = classification_metrics(test["label"].to_numpy(), p_chunked)["roc_auc"]
    assert abs(auc_plain - auc_chunked) < 0.005
    assert np.max(np.abs(p_plain - p_chunked)) < 0.05
    assert plain.fits[0]["rounds"] == chunked.fits[0]["rounds"] == 80


@pytest.mark.parametrize("chunked", [False, True], ids=["in-memory", "chunked"])
def test_refit_matrix_drops_nothing_and_reads_the_categories(chunked):
    rows = _table(400, seed=5)
    r = Refitter({"eta": 0.3, "max_depth": 2}, 2, len(rows), FEATURES, CATS, "tuned", 0, 1, chunked=chunked)
    dm = r._matrix(rows)
    assert dm.num_row() == 400 and dm.feature_types == ["float", "float", "c"]


def test_large_tables_are_held_as_float32_and_small_ones_unchanged():
    from training.matrix import compact_features

    frame = _table(400, seed=6).assign(count=np.arange(400))  # an int feature stays as it is
    first_valid = pd.Timestamp("2024-04-01")  # 300 train rows before it
    small = compact_features(frame, FEATURES + ["count"], first_valid, min_rows=300)
    assert small is frame
    large = compact_features(frame, FEATURES + ["count"], first_valid, min_rows=299)
    assert {c: str(large[c].dtype) for c in ("x", "z", "plan", "count", "label")} == {
        "x": "float32", "z": "float32", "plan": "category", "count": "int64", "label": "int8"}
    np.testing.assert_array_equal(large["x"].to_numpy(), frame["x"].to_numpy(dtype=np.float32))
    assert frame["x"].dtype == np.float64  # the input is not changed
