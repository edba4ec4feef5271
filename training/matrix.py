"""XGBoost training matrices of large feature tables, built chunk by chunk (README "Training at scale").

A plain ``DMatrix`` of a pandas table needs the table's model-ready copy (``ChurnModel.prepare``) and then
holds every value again in its own float storage: at a million customers x 12 cutoffs that is several
gigabytes per refit on top of the table itself. ``quantile_matrix`` streams the rows through an
``xgboost.DataIter`` in chunks of ``chunk_rows`` (each prepared on its own and dropped after use) into a
``QuantileDMatrix``, which stores only each value's histogram bin (one byte a value at 256 bins): the
memory of one chunk plus a quarter of the float32 table.

The bins are the same quantile sketch that ``tree_method: hist`` computes from a ``DMatrix``, merged over
chunks, so the model can differ from the in-memory one in the last digits of a split threshold; the refit
uses it only above ``training.sampling.min_rows`` (the tests check both agree closely on a small table).
Above that size the feature table itself is also held as float32 (:func:`compact_features`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import xgboost as xgb

CHUNK_ROWS = 250_000


def compact_features(frame: pd.DataFrame, features: list[str], first_valid: pd.Timestamp,
                     min_rows: int) -> pd.DataFrame:
    """``frame`` with its float64 feature columns as float32 when its train cutoffs (before ``first_valid``)
    have more than ``min_rows`` rows (the tuning-sample threshold): half the memory of a large table.

    XGBoost trains and predicts on float32 values anyway, so the models do not change; only statistics computed
    on the table itself (data profile, logistic baseline) see float32 rounding. Smaller tables are returned as
    they are.
    """
    from training.sample import needs_sample

    if not needs_sample(int((frame["cutoff"] < first_valid).sum()), min_rows):
        return frame
    wide = {c: np.float32 for c in features if frame[c].dtype == np.float64}
    return frame.astype(wide) if wide else frame


class _Chunks(xgb.DataIter):
    """Consecutive row chunks of ``rows``, each prepared (features selected, cast) only when XGBoost asks."""

    def __init__(self, rows: pd.DataFrame, prepare: Callable[[pd.DataFrame], pd.DataFrame],
                 weight: np.ndarray | None, chunk_rows: int) -> None:
        self._rows, self._prepare, self._weight = rows, prepare, weight
        self._starts = list(range(0, len(rows), chunk_rows)) or [0]
        self._size, self._at = chunk_rows, 0
        super().__init__(release_data=True)

    def next(self, input_data: Callable) -> bool:
        if self._at >= len(self._starts):
            return False
        lo = self._starts[self._at]
        part = self._rows.iloc[lo: lo + self._size]
        weight = None if self._weight is None else self._weight[lo: lo + self._size]
        input_data(data=self._prepare(part), label=part["label"].to_numpy(), weight=weight)
        self._at += 1
        return True

    def reset(self) -> None:
        self._at = 0


def quantile_matrix(rows: pd.DataFrame, prepare: Callable[[pd.DataFrame], pd.DataFrame], n_threads: int,
                    weight: np.ndarray | None = None, max_bin: int | None = None,
                    chunk_rows: int | None = None) -> xgb.QuantileDMatrix:
    """A labelled ``QuantileDMatrix`` of ``rows`` built chunk by chunk (module doc; ``CHUNK_ROWS`` rows a chunk
    unless given); ``max_bin`` must be the booster's (XGBoost's default 256 when None)."""
    chunks = _Chunks(rows, prepare, weight, chunk_rows or CHUNK_ROWS)
    return xgb.QuantileDMatrix(chunks, enable_categorical=True,
                               nthread=n_threads, max_bin=max_bin)
