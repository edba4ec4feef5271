"""The training protocol on hand-made tables: embargo (censor/drop), refit rounds, calibration choice, cross-fitting."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from churn.config import CutoffRange, LabelConfig
from churn.errors import DataError
from features.timeline import censored_labels, explicit_cutoffs
from tests.features.conftest import make_config, tables_from_frames
from training.refit import (
    Refitter,
    calibration_method,
    cross_fitted_predictions,
    embargoed_rows,
    evaluated_model,
    scaled_rounds,
)

D = pd.Timedelta(days=1)
JAN, FEB, MAR = pd.Timestamp("2024-01-01"), pd.Timestamp("2024-02-01"), pd.Timestamp("2024-03-01")


def _tables(churn: dict[str, str | None], label: dict | None = None):
    customers = pd.DataFrame([(c, "2023-01-01", d) for c, d in churn.items()],
                             columns=["customer_id", "signup_date", "churn_date"])
    events = pd.DataFrame([(c, "2023-06-01", "login", None) for c in churn] + [("a", "2024-06-01", "login", None)],
                          columns=["customer_id", "timestamp", "event_type", "value"])
    base = make_config(tables={"customers": {"file": "customers"}, "events": {"file": "events"}})
    cfg = base.model_copy(update={"label": LabelConfig(**(label or {"definition": "churn_date", "horizon_days": 45}))})
    return tables_from_frames({"customers": customers, "events": events}, cfg), cfg


def _frame(tables, cutoffs, label_cfg):
    from features.timeline import active_mask, labels

    parts = []
    for t in cutoffs:
        m = active_mask(tables, t, label_cfg)
        parts.append(pd.DataFrame({"customer_id": tables.customers["customer_id"].to_numpy()[m], "cutoff": t,
                                   "label": labels(tables, t, label_cfg)[m]}))
    return pd.concat(parts, ignore_index=True)


CHURNS = {"a": None, "early": "2024-01-20", "between": "2024-02-10", "late": "2024-02-20"}


def test_censored_label_only_sees_churn_up_to_the_edge():
    tables, cfg = _tables(CHURNS)
    # full 45-day window from JAN ends 02-15: early (01-20) and between (02-10) churn inside it
    from features.timeline import labels

    assert labels(tables, JAN, cfg.label).tolist() == [0, 1, 1, 0]
    # cut at FEB: only churn in (JAN, FEB] counts
    assert censored_labels(tables, JAN, cfg.label, FEB).tolist() == [0, 1, 0, 0]
    assert censored_labels(tables, JAN, LabelConfig(definition="inactivity"), FEB) is None


def test_embargo_censor_keeps_the_crossing_cutoff_and_uses_nothing_after_the_edge():
    tables, cfg = _tables(CHURNS)
    frame = _frame(tables, [JAN, FEB], cfg.label)
    rows = embargoed_rows(frame, FEB, tables, cfg)
    assert rows["cutoff"].unique().tolist() == [JAN]
    assert dict(zip(rows["customer_id"], rows["label"], strict=False)) == {"a": 0, "early": 1, "between": 0, "late": 0}
    assert rows.attrs["censored"] == [JAN]
    # leakage check: moving every churn after the edge anywhere else leaves the training rows unchanged
    moved, cfg2 = _tables({**CHURNS, "between": "2024-02-02", "late": None})
    rows2 = embargoed_rows(_frame(moved, [JAN, FEB], cfg2.label), FEB, moved, cfg2)
    pd.testing.assert_frame_equal(rows.reset_index(drop=True), rows2.reset_index(drop=True))


def test_embargo_drop_and_inactivity_drop_the_crossing_cutoff():
    tables, cfg = _tables(CHURNS)
    frame = _frame(tables, [JAN, FEB], cfg.label)
    dropped = embargoed_rows(frame, FEB, tables, cfg.model_copy(update={"training": cfg.training.model_copy(
        update={"embargo": "drop"})}))
    assert dropped.empty
    # a window that ends by the edge is kept whole
    # at MAR: JAN's window (to 02-15) ends by the edge and is kept whole; FEB's (to 03-17) is cut at MAR
    kept = embargoed_rows(frame, MAR, tables, cfg)
    got = {(t.month, c): y for t, c, y in zip(kept["cutoff"], kept["customer_id"], kept["label"], strict=False)}
    assert got == {(1, "a"): 0, (1, "early"): 1, (1, "between"): 1, (1, "late"): 0,
                   (2, "a"): 0, (2, "between"): 1, (2, "late"): 1}
    assert kept.attrs["censored"] == [FEB]
    tables_i, cfg_i = _tables(CHURNS, label={"definition": "inactivity", "inactivity_days": 45})
    frame_i = _frame(tables_i, [JAN], cfg_i.label)
    assert embargoed_rows(frame_i, FEB, tables_i, cfg_i).empty


@pytest.mark.parametrize("rule,n_rows,expected", [("scaled", 2000, 200), ("scaled", 1000, 100), ("tuned", 2000, 100),
                                                  ("scaled", 1, 1)], ids=["double", "same", "tuned", "floor-1"])
def test_scaled_rounds(rule, n_rows, expected):
    assert scaled_rounds(99, n_rows, 1000, rule) == expected


def test_isotonic_needs_enough_positives(caplog):
    y = np.array([1] * 10 + [0] * 90)
    assert calibration_method("isotonic", y, min_positives=200) == "platt"
    assert "isotonic needs at least 200" in caplog.text
    assert calibration_method("isotonic", y, min_positives=10) == "isotonic"
    assert calibration_method("platt", y, min_positives=200) == "platt"


def test_explicit_cutoffs_list_range_and_errors():
    tables, cfg = _tables(CHURNS)  # data 2023-01-01 .. 2024-06-01, window 45 days
    got = explicit_cutoffs(tables, cfg.label, [pd.Timestamp("2024-03-01").date(), JAN.date(), FEB.date()])
    assert got == [JAN, FEB, MAR]
    rng = explicit_cutoffs(tables, cfg.label, CutoffRange(start="2024-01-01", end="2024-03-15", frequency="MS"))
    assert rng == [JAN, FEB, MAR]
    with pytest.raises(DataError, match="label window of 2024-05-01 ends 2024-06-15"):
        explicit_cutoffs(tables, cfg.label, [JAN.date(), FEB.date(), pd.Timestamp("2024-05-01").date()])
    with pytest.raises(DataError, match="need at least 3 cutoffs"):
        explicit_cutoffs(tables, cfg.label, [JAN.date()])


def _five_monthly_cutoffs(seed: int) -> tuple[list[pd.Timestamp], pd.DataFrame, Any, Any, Refitter]:
    """200 customers at 5 monthly cutoffs with one informative feature x, and a small recording refitter."""
    rng = np.random.default_rng(seed)
    cutoffs = list(pd.date_range("2024-01-01", periods=5, freq="MS"))
    frame = pd.concat([pd.DataFrame({"customer_id": [f"c{i}" for i in range(200)], "cutoff": t,
                                     "x": rng.normal(size=200)}) for t in cutoffs], ignore_index=True)
    frame["label"] = (frame["x"] + rng.normal(scale=0.5, size=len(frame)) > 0.8).astype(int)
    tables, cfg = _tables(CHURNS, label={"definition": "churn_date", "horizon_days": 28})
    refitter = Refitter({"eta": 0.3, "max_depth": 2}, 9, 200, ["x"], {}, "tuned", 0, 1)
    return cutoffs, frame, tables, cfg, refitter


def test_cross_fitted_predictions_are_out_of_time():
    """Each calibration cutoff is predicted by a model fitted only on rows labelled by that cutoff."""
    cutoffs, frame, tables, cfg, refitter = _five_monthly_cutoffs(seed=0)
    oof = cross_fitted_predictions(frame, cutoffs[-1], tables, cfg, refitter)
    assert sorted(oof["cutoff"].unique()) == cutoffs[2:4]  # calibration_cutoffs: 2, before the edge
    assert [f["cutoffs"] for f in refitter.fits] == [["2024-01-01", "2024-02-01"],
                                                    ["2024-01-01", "2024-02-01", "2024-03-01"]]
    assert len(oof) == 400 and oof["p_raw"].between(0, 1).all()


def test_evaluated_model_never_trains_on_the_test_cutoff():
    """The refitted model that the test metrics come from is fitted on the cutoffs before the test cutoff only,
    and so is every calibration fold: the test rows are never seen (no leak into test_roc_auc)."""
    cutoffs, frame, tables, cfg, refitter = _five_monthly_cutoffs(seed=1)
    _, rows, oof = evaluated_model(frame, cutoffs[-1], tables, cfg, refitter, {})
    assert sorted(rows["cutoff"].unique()) == cutoffs[:4]
    assert refitter.fits[0]["cutoffs"] == ["2024-01-01", "2024-02-01", "2024-03-01", "2024-04-01"]
    assert all("2024-05-01" not in f["cutoffs"] for f in refitter.fits)
    assert "2024-05-01" not in {t.date().isoformat() for t in oof["cutoff"]}


def test_contiguous_rows_shares_a_run_of_rows_and_copies_anything_else():
    from training.refit import contiguous_rows

    frame = pd.DataFrame({"cutoff": np.repeat([1, 2, 3], 3), "x": np.arange(9, dtype=float)})
    run = contiguous_rows(frame, (frame["cutoff"] == 2).to_numpy())
    assert run["x"].tolist() == [3.0, 4.0, 5.0] and run.index.tolist() == [0, 1, 2]
    assert np.shares_memory(run["x"].to_numpy(), frame["x"].to_numpy())  # a slice, not a copy
    gaps = contiguous_rows(frame, frame["cutoff"].isin([1, 3]).to_numpy())
    assert gaps["x"].tolist() == [0.0, 1.0, 2.0, 6.0, 7.0, 8.0] and gaps.index.tolist() == list(range(6))
    assert contiguous_rows(frame, np.zeros(9, dtype=bool)).empty


def test_embargoed_rows_of_an_unordered_frame_are_ordered_by_cutoff_like_the_ordered_one():
    """The stacked training table is sliced; any other row order gives the same rows, by cutoff (stable)."""
    tables, cfg = _tables(CHURNS)
    frame = _frame(tables, [JAN, FEB, MAR], cfg.label)
    ordered = embargoed_rows(frame, MAR, tables, cfg)
    order = np.random.default_rng(0).permutation(len(frame))
    shuffled = embargoed_rows(frame.iloc[order].reset_index(drop=True), MAR, tables, cfg)
    assert ordered["cutoff"].tolist() == [JAN] * 4 + [FEB] * 3  # "early" churned before FEB
    # JAN keeps its full window (to 02-15); FEB's crosses MAR: censored at MAR, "late" (02-20) churned by then
    assert ordered["label"].tolist() == [0, 1, 1, 0, 0, 1, 1]
    assert ordered["label"].dtype == frame["label"].dtype and ordered.attrs["censored"] == [FEB]
    pd.testing.assert_frame_equal(shuffled.sort_values(["cutoff", "customer_id"]).reset_index(drop=True),
                                  ordered.sort_values(["cutoff", "customer_id"]).reset_index(drop=True))


def test_a_large_table_calibrates_on_the_latest_fold_only():
    """Once the later folds give more out-of-time predictions than ``training.sampling.min_rows``, no earlier
    fold is refitted (each fold is a fit on almost every row); below it every configured fold is kept."""
    cutoffs, frame, tables, cfg, refitter = _five_monthly_cutoffs(seed=0)
    small = cfg.model_copy(update={"training": cfg.training.model_copy(update={
        "sampling": cfg.training.sampling.model_copy(update={"min_rows": 150})})})
    oof = cross_fitted_predictions(frame, cutoffs[-1], tables, small, refitter)
    assert sorted(oof["cutoff"].unique()) == [cutoffs[3]]  # 200 rows at 2024-04-01 > 150: 2024-03-01 not fitted
    assert [f["cutoffs"] for f in refitter.fits] == [["2024-01-01", "2024-02-01", "2024-03-01"]]
    assert len(oof) == 200
    refitter.fits.clear()
    at_limit = small.model_copy(update={"training": small.training.model_copy(update={
        "sampling": small.training.sampling.model_copy(update={"min_rows": 200})})})  # 200 is not more than 200
    assert sorted(cross_fitted_predictions(frame, cutoffs[-1], tables, at_limit, refitter)["cutoff"].unique()) \
        == cutoffs[2:4]
