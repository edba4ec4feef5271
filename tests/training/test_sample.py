"""The tuning sample on a hand-made table: by customer, stratified, weighted back to the table; small tables skip it."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from churn.config import TrainingConfig
from training.sample import (
    WEIGHT,
    cell_weights,
    customer_sample,
    customer_strata,
    needs_sample,
    sample_customer_ids,
)
from training.train import tuning_rows

T1, T2 = pd.Timestamp("2025-01-01"), pd.Timestamp("2025-02-01")


def _table() -> pd.DataFrame:
    """12 customers in 4 strata (churner x first cutoff): 6 stay (both cutoffs), 2 churn at T2 (seen at T1 and T2),
    2 join at T2 and stay, 2 join at T2 and churn. Cells: (T1, 0) 8 rows, (T2, 0) 8 rows, (T2, 1) 4 rows."""
    rows = [(f"s{i}", t, 0) for i in range(6) for t in (T1, T2)]
    rows += [(f"c{i}", T1, 0) for i in range(2)] + [(f"c{i}", T2, 1) for i in range(2)]
    rows += [(f"n{i}", T2, 0) for i in range(2)] + [(f"m{i}", T2, 1) for i in range(2)]
    return pd.DataFrame(rows, columns=["customer_id", "cutoff", "label"]).assign(x=np.arange(len(rows), dtype=float))


def _stratum_counts(frame: pd.DataFrame, ids: np.ndarray) -> dict[tuple[int, str], int]:
    s = customer_strata(frame)
    s = s[s["customer_id"].isin(ids)]
    return {(int(c), t.date().isoformat()): int(n) for (c, t), n in s.groupby(["churner", "first_cutoff"]).size().items()}


def test_strata_are_churner_by_first_cutoff() -> None:
    s = customer_strata(_table()).set_index("customer_id")
    assert s.loc["s0"].tolist() == [0, T1]
    assert s.loc["c0"].tolist() == [1, T1]  # a churner at T2 is a churner customer, first seen at T1
    assert s.loc["n1"].tolist() == [0, T2]
    assert s.loc["m1"].tolist() == [1, T2]


def test_sample_is_stratified_proportionally() -> None:
    frame = _table()
    ids = sample_customer_ids(frame, 4, seed=7)
    # quotas round(N_h * 4 / 12), at least 1: 6 -> 2, 2 -> 1 (0.67 rounds up), 2 -> 1, 2 -> 1
    assert _stratum_counts(frame, ids) == {(0, "2025-01-01"): 2, (1, "2025-01-01"): 1,
                                           (0, "2025-02-01"): 1, (1, "2025-02-01"): 1}
    assert len(ids) == 5


def test_sample_is_by_customer() -> None:
    """A sampled customer keeps every one of their rows; the rest keep none (no customer on both sides)."""
    frame = _table()
    sample = customer_sample(frame, 4, seed=7)
    inside = set(sample["customer_id"])
    outside = set(frame["customer_id"]) - inside
    assert inside.isdisjoint(outside)
    full_rows = frame.groupby("customer_id").size()
    assert sample.groupby("customer_id").size().to_dict() == full_rows[sorted(inside)].to_dict()
    assert not frame[frame["customer_id"].isin(outside)]["customer_id"].isin(sample["customer_id"]).any()


def test_weights_restore_every_cutoffs_counts_and_base_rate() -> None:
    frame = _table()
    sample = customer_sample(frame, 4, seed=7)
    # sample cells: (T1, 0) 2 stayers + 1 churner-to-be = 3 rows of 8; (T2, 0) 2 stayers + 1 joiner = 3 of 8;
    # (T2, 1) 1 churner + 1 joining churner = 2 of 4
    cells = sample.groupby(["cutoff", "label"])[WEIGHT].agg(["size", "first", "min", "max"])
    assert cells["size"].tolist() == [3, 3, 2]
    np.testing.assert_allclose(cells["first"].to_numpy(), [8 / 3, 8 / 3, 2.0])
    np.testing.assert_allclose(cells["min"].to_numpy(), cells["max"].to_numpy())
    weighted = sample.assign(pos=sample["label"] * sample[WEIGHT]).groupby("cutoff")[[WEIGHT, "pos"]].sum()
    np.testing.assert_allclose(weighted[WEIGHT].to_numpy(), [8.0, 12.0])  # rows per cutoff in the table
    np.testing.assert_allclose(weighted["pos"].to_numpy(), [0.0, 4.0])  # churners per cutoff in the table
    assert sample["label"].mean() == pytest.approx(2 / 8)  # unweighted, the sample over-represents churners
    assert np.average(sample["label"], weights=sample[WEIGHT]) == pytest.approx(4 / 20)  # the table's base rate


def test_cell_weights_of_an_identical_sample_are_one() -> None:
    frame = _table()
    np.testing.assert_array_equal(cell_weights(frame, frame), np.ones(len(frame)))


def test_sample_is_seeded_and_a_large_quota_keeps_everyone() -> None:
    frame = _table()
    np.testing.assert_array_equal(sample_customer_ids(frame, 4, 7), sample_customer_ids(frame, 4, 7))
    assert sorted(sample_customer_ids(frame, 12, 7)) == sorted(frame["customer_id"].unique())


def test_small_tables_skip_sampling() -> None:
    assert not needs_sample(250_000, 250_000)
    assert needs_sample(250_001, 250_000)
    frame = _table()
    data = SimpleNamespace(train_df=frame, valid_df=frame[frame["cutoff"] == T2])
    cfg = SimpleNamespace(training=TrainingConfig())  # defaults: min_rows far above 20 rows
    train_rows, valid_rows, info = tuning_rows(data, cfg)
    assert train_rows is data.train_df and valid_rows is data.valid_df
    assert WEIGHT not in train_rows and info["sampled"] is False


def test_large_tables_tune_on_weighted_samples_of_train_and_validation() -> None:
    frame = _table()
    data = SimpleNamespace(train_df=frame, valid_df=frame[frame["cutoff"] == T2].reset_index(drop=True))
    tcfg = TrainingConfig(sampling={"min_rows": 10, "customers": 100})
    cfg = SimpleNamespace(training=tcfg.model_copy(update={"sampling": tcfg.sampling.model_copy(update={"customers": 4})}))
    train_rows, valid_rows, info = tuning_rows(data, cfg)
    assert info["sampled"] is True and info["rows_train_sample"] == len(train_rows) == 8
    assert np.average(train_rows["label"], weights=train_rows[WEIGHT]) == pytest.approx(4 / 20)
    assert np.average(valid_rows["label"], weights=valid_rows[WEIGHT]) == pytest.approx(4 / 12)
