"""Snapshot CV folds: duplicated rows (every feature and the label equal, ids aside) never straddle folds."""

from __future__ import annotations

import numpy as np
import pandas as pd

from training.snapshot import duplicate_groups, snapshot_folds


def _frame() -> pd.DataFrame:
    # rows 0-2 are one duplicated customer profile, 3-4 another; the rest are distinct
    x = [1.0, 1.0, 1.0, 2.0, 2.0] + [float(10 + i) for i in range(15)]
    y = [1, 1, 1, 0, 0] + [i % 2 for i in range(15)]
    return pd.DataFrame({"customer_id": [f"c{i}" for i in range(20)], "x": x, "label": y})


def test_duplicate_groups():
    g = duplicate_groups(_frame(), ["x"])
    assert g[0] == g[1] == g[2] and g[3] == g[4] and len(set(g)) == 17


def test_grouped_folds_keep_duplicates_together():
    frame, folds = snapshot_folds(_frame(), ["x"], n_splits=3, seed=0, duplicates="group")
    assert len(frame) == 20
    for _, test in folds:
        held = set(test.tolist())
        assert {0, 1, 2} <= held or not {0, 1, 2} & held
        assert {3, 4} <= held or not {3, 4} & held
    assert sorted(np.concatenate([te for _, te in folds]).tolist()) == list(range(20))


def test_drop_keeps_one_row_per_duplicate_group():
    frame, folds = snapshot_folds(_frame(), ["x"], n_splits=3, seed=0, duplicates="drop")
    assert frame["customer_id"].tolist() == ["c0", "c3"] + [f"c{i}" for i in range(5, 20)]
    assert sum(len(te) for _, te in folds) == 17
