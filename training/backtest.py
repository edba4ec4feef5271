"""Rolling-origin backtest: refit the tuned configuration on successive out-of-time windows.

For each of the last ``n_windows`` cutoffs as a test origin, train on the cutoffs whose label
windows end before the validation cutoff, early-stop and calibrate on the cutoff just before the
origin, and evaluate on the origin. The spread of each metric across windows says how much a single
test window can be trusted.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb

from features.timeline import split_cutoffs
from model import metrics as ev
from model.artifact import Calibrator, ChurnModel
from training.tune import fit_booster

log = logging.getLogger(__name__)


def fit_window(frame: pd.DataFrame, upto: list[pd.Timestamp], features: list[str],
               categories: dict[str, list[str]], params: dict[str, Any], window_days: int,
               calibration: str = "isotonic", rounds: int = 500, early_stopping: int = 40, seed: int = 42,
               n_threads: int = 2, min_train_cutoffs: int = 2) -> tuple[pd.Timestamp, np.ndarray, np.ndarray] | None:
    """Train on ``upto`` but its last cutoff, calibrate on the one before; return (test cutoff, labels, probabilities).

    ``None`` when the window has too little history or a split has one label class only.
    """
    fitted = fit_window_model(frame, upto, features, categories, params, window_days, calibration, rounds,
                              early_stopping, seed, n_threads, min_train_cutoffs)
    if fitted is None:
        return None
    model, test_cutoff, test = fitted
    return test_cutoff, test["label"].to_numpy(), model.predict_proba(test)


def fit_window_model(frame: pd.DataFrame, upto: list[pd.Timestamp], features: list[str],
                     categories: dict[str, list[str]], params: dict[str, Any], window_days: int,
                     calibration: str = "isotonic", rounds: int = 500, early_stopping: int = 40, seed: int = 42,
                     n_threads: int = 2,
                     min_train_cutoffs: int = 2) -> tuple[ChurnModel, pd.Timestamp, pd.DataFrame] | None:
    """:func:`fit_window`'s model itself, with its test cutoff and test rows (to score later cutoffs with it)."""
    try:
        split = split_cutoffs(sorted(upto), 1, 1, window_days)
    except ValueError:
        return None
    if len(split.train) < min_train_cutoffs:
        return None
    parts = [frame[frame["cutoff"].isin(c)] for c in (split.train, split.valid, split.test)]
    if any(p["label"].nunique() < 2 for p in parts):
        return None
    proto = ChurnModel(xgb.Booster(), features, categories, meta={"n_threads": n_threads})
    dm = [xgb.DMatrix(proto.prepare(p), label=p["label"], enable_categorical=True, nthread=n_threads) for p in parts]
    booster = fit_booster(params, dm[0], dm[1], rounds, early_stopping, seed, n_threads)
    model = ChurnModel(booster, features, categories, meta={"best_iteration": booster.best_iteration,
                                                             "n_threads": n_threads})
    model.calibrator = Calibrator.fit(calibration, model.predict_raw(parts[1]), parts[1]["label"].to_numpy())
    return model, split.test[0], parts[2]


def rolling_backtest(frame: pd.DataFrame, cutoffs: list[pd.Timestamp], features: list[str],
                     categories: dict[str, list[str]], params: dict[str, Any], window_days: int,
                     n_windows: int = 3, calibration: str = "isotonic", rounds: int = 500,
                     early_stopping: int = 40, seed: int = 42, n_threads: int = 2,
                     min_train_cutoffs: int = 2) -> pd.DataFrame:
    """One row per test window with its metrics; windows without enough history are skipped."""
    cutoffs = sorted(cutoffs)
    rows = []
    for k in range(n_windows - 1, -1, -1):
        res = fit_window(frame, cutoffs[: len(cutoffs) - k], features, categories, params, window_days, calibration,
                         rounds, early_stopping, seed, n_threads, min_train_cutoffs)
        if res is None:
            continue
        test_cutoff, y, p = res
        n_train = len(split_cutoffs(cutoffs[: len(cutoffs) - k], 1, 1, window_days).train)
        m = ev.classification_metrics(y, p)
        lift = ev.lift_table(y, p, fractions=(0.1,))
        rows.append({"test_cutoff": test_cutoff.date().isoformat(), "n_train_cutoffs": n_train,
                     "n_test": int(m["n"]), "base_rate": m["base_rate"], "roc_auc": m["roc_auc"],
                     "pr_auc": m["pr_auc"], "log_loss": m["log_loss"], "brier": m["brier"], "ece": m["ece"],
                     "lift_top10": float(lift["lift"].iloc[0])})
        log.info("backtest window %s: ROC-AUC %.4f PR-AUC %.4f", rows[-1]["test_cutoff"], m["roc_auc"], m["pr_auc"])
    return pd.DataFrame(rows)


def summarize(bt: pd.DataFrame) -> dict[str, float]:
    """Mean and standard deviation of each metric across windows (MLflow metric names)."""
    out: dict[str, float] = {}
    if bt.empty:
        return out
    for col in ("roc_auc", "pr_auc", "log_loss", "brier", "ece", "lift_top10"):
        v = bt[col].astype(float)
        out[f"backtest_{col}_mean"] = float(v.mean())
        out[f"backtest_{col}_std"] = float(v.std(ddof=1)) if len(v) > 1 else 0.0
        out[f"backtest_{col}_min"] = float(v.min())
    out["backtest_windows"] = float(len(bt))
    return out
