"""Evaluation for snapshot data: one row per customer with its own 0/1 label and no time axis.

``label.definition: snapshot`` (e.g. the IBM Telco tables) has no dates, so there are no cutoffs and no
out-of-time split: the model can only be checked by **stratified k-fold cross-validation** over customers,
which says how well it ranks customers of the *same* period, not how it will do on a later one. The
features are the static customer attributes (``profile`` family); ``training.exclude_features`` applies.

XGBoost (fixed, moderate parameters; the number of rounds is chosen by early stopping on a stratified
inner split of each training fold, then refitted on the whole fold) is compared with a logistic
regression on the same features and with predicting the training churn rate (the prior).

Use from the CLI (``churn train`` with a snapshot config)::

    from training.snapshot import cross_validate
    summary = cross_validate(cfg, tables)          # tables = load_tables(data_dir, cfg)  (the whole Config)
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb
from sklearn.metrics import average_precision_score, log_loss, roc_auc_score
from sklearn.model_selection import StratifiedKFold, train_test_split

from churn.config import Config
from churn.errors import DataError
from features.build import profile_features
from features.contract import Tables
from training.train import logistic_baseline

log = logging.getLogger(__name__)

VALIDATION_NOTE = ("stratified k-fold cross-validation over customers: snapshot data has no time axis, so there is "
                   "no out-of-time split; the scores measure ranking within the same period, not on a later one")

DEFAULT_PARAMS: dict[str, Any] = {
    "objective": "binary:logistic",
    "eval_metric": "logloss",
    "eta": 0.05,
    "max_depth": 4,
    "min_child_weight": 2,
    "subsample": 0.8,
    "colsample_bytree": 0.8,
    "lambda": 1.0,
    "max_cat_to_onehot": 8,
}


def snapshot_features(cfg: Config, tables: Tables) -> tuple[pd.DataFrame, list[str], list[str]]:
    """The feature table (one row per customer: customer_id, features, label), feature names, categoricals."""
    if tables.snapshot_label is None:
        raise DataError("customers", cfg.label.column, "no snapshot label loaded: use label.definition 'snapshot' "
                        "and load the tables with the whole Config (load_tables(data_dir, cfg))")
    block = profile_features(tables.customers, tables.attributes)
    excluded = set(cfg.training.exclude_features)
    specs = [s for s in block.specs if s.name not in excluded]
    if not specs:
        raise DataError("customers", None, "no features: the snapshot needs customer attributes (attributes: auto "
                        "or a list)")
    features = [s.name for s in specs]
    cats = [s.name for s in specs if s.categorical]
    frame = pd.concat([tables.customers[["customer_id"]].reset_index(drop=True), block.frame[features]], axis=1)
    frame["label"] = np.asarray(tables.snapshot_label, dtype=np.int8)
    return frame, features, cats


def _dmatrix(frame: pd.DataFrame, features: list[str], label: np.ndarray | None, n_threads: int) -> xgb.DMatrix:
    x = frame[features].copy()
    for c in features:
        if not isinstance(x[c].dtype, pd.CategoricalDtype):
            x[c] = pd.to_numeric(x[c], errors="coerce").astype("float32")
    return xgb.DMatrix(x, label=label, enable_categorical=True, nthread=n_threads)


def _fit_xgb(train: pd.DataFrame, test: pd.DataFrame, features: list[str], params: dict[str, Any], seed: int,
             n_threads: int, max_rounds: int, early_stopping: int) -> tuple[np.ndarray, int]:
    """Rounds by early stopping on an inner 20% split of ``train``; refit on all of ``train``; predict ``test``."""
    y = train["label"].to_numpy()
    inner_tr, inner_va = train_test_split(np.arange(len(train)), test_size=0.2, stratify=y, random_state=seed)
    p = {**params, "seed": seed, "nthread": n_threads}
    d_tr = _dmatrix(train.iloc[inner_tr], features, y[inner_tr], n_threads)
    d_va = _dmatrix(train.iloc[inner_va], features, y[inner_va], n_threads)
    probe = xgb.train(p, d_tr, num_boost_round=max_rounds, evals=[(d_va, "valid")],
                      early_stopping_rounds=early_stopping, verbose_eval=False)
    rounds = int(probe.best_iteration) + 1
    booster = xgb.train(p, _dmatrix(train, features, y, n_threads), num_boost_round=rounds)
    return booster.predict(_dmatrix(test, features, None, n_threads)), rounds


def _metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return {"roc_auc": float(roc_auc_score(y, p)), "pr_auc": float(average_precision_score(y, p)),
            "log_loss": float(log_loss(y, p, labels=[0, 1]))}


def _summary(folds: list[dict[str, float]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k in folds[0]:
        v = np.array([f[k] for f in folds], dtype=float)
        out[f"{k}_mean"] = float(v.mean())
        out[f"{k}_std"] = float(v.std(ddof=1)) if len(v) > 1 else 0.0
    out["folds"] = folds
    return out


def cross_validate(cfg: Config, tables: Tables, n_splits: int = 5, seed: int = 42,
                   params: dict[str, Any] | None = None, max_rounds: int = 2000,
                   early_stopping_rounds: int = 50) -> dict[str, Any]:
    """Stratified ``n_splits``-fold CV of XGBoost, a logistic regression and the prior on the snapshot label.

    Returns a JSON-ready dict: ``validation`` (why k-fold), sizes, ``xgboost`` / ``baseline_logistic`` /
    ``baseline_prior`` with ``roc_auc``, ``pr_auc``, ``log_loss`` mean and std over folds (and per fold),
    the XGBoost parameters and rounds per fold, the features used and the wall time.
    """
    t0 = time.perf_counter()
    frame, features, cats = snapshot_features(cfg, tables)
    y = frame["label"].to_numpy()
    n_pos = int(y.sum())
    if n_pos < n_splits or len(y) - n_pos < n_splits:
        raise DataError("customers", cfg.label.column, f"too few churners ({n_pos}) or non-churners "
                        f"({len(y) - n_pos}) for {n_splits}-fold cross-validation")
    n_threads = cfg.training.n_threads
    xgb_params = {**DEFAULT_PARAMS, **(params or {})}
    skf = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    res: dict[str, list[dict[str, float]]] = {"xgboost": [], "baseline_logistic": [], "baseline_prior": []}
    rounds: list[int] = []
    for i, (tr, te) in enumerate(skf.split(np.zeros(len(y)), y)):
        train, test = frame.iloc[tr].reset_index(drop=True), frame.iloc[te].reset_index(drop=True)
        y_te = test["label"].to_numpy()
        p_xgb, r = _fit_xgb(train, test, features, xgb_params, seed + i, n_threads, max_rounds, early_stopping_rounds)
        rounds.append(r)
        res["xgboost"].append(_metrics(y_te, p_xgb))
        res["baseline_logistic"].append(_metrics(y_te, logistic_baseline(train, test, features, cats, seed)))
        res["baseline_prior"].append(_metrics(y_te, np.full(len(y_te), train["label"].mean())))
        log.info("fold %d/%d: XGBoost ROC-AUC %.4f log loss %.4f (%d rounds)", i + 1, n_splits,
                 res["xgboost"][-1]["roc_auc"], res["xgboost"][-1]["log_loss"], r)
    out: dict[str, Any] = {
        "mode": "snapshot",
        "validation": f"{n_splits}-fold " + VALIDATION_NOTE,
        "out_of_time": False,
        "n_splits": n_splits,
        "seed": seed,
        "n_customers": int(len(y)),
        "n_churners": n_pos,
        "base_rate": float(y.mean()),
        "n_features": len(features),
        "features": features,
        "categorical": cats,
        "xgboost": {**_summary(res["xgboost"]), "params": xgb_params, "rounds": rounds},
        "baseline_logistic": _summary(res["baseline_logistic"]),
        "baseline_prior": _summary(res["baseline_prior"]),
    }
    out["seconds"] = round(time.perf_counter() - t0, 2)
    x, lr = out["xgboost"], out["baseline_logistic"]
    log.info("snapshot CV: XGBoost ROC-AUC %.4f ± %.4f, log loss %.4f | logistic ROC-AUC %.4f | prior log loss %.4f",
             x["roc_auc_mean"], x["roc_auc_std"], x["log_loss_mean"], lr["roc_auc_mean"],
             out["baseline_prior"]["log_loss_mean"])
    return out
