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
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold, train_test_split

from churn.config import Config
from churn.errors import DataError
from features.build import profile_features
from features.contract import Tables
from model.artifact import ChurnModel
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


def duplicate_groups(frame: pd.DataFrame, features: list[str]) -> np.ndarray:
    """A group id per row: rows equal in every feature and the label (ids aside) share one."""
    key = pd.util.hash_pandas_object(frame[[*features, "label"]], index=False)
    return pd.factorize(key)[0]


def snapshot_folds(frame: pd.DataFrame, features: list[str], n_splits: int, seed: int,
                   duplicates: str = "group") -> tuple[pd.DataFrame, list[tuple[np.ndarray, np.ndarray]]]:
    """Stratified folds over customers; duplicated rows grouped into one fold, dropped, or kept (see config)."""
    groups = duplicate_groups(frame, features)
    n_dup = len(groups) - len(np.unique(groups))
    if n_dup:
        log.info("snapshot: %d row(s) duplicate another row in every feature and the label (duplicates: %s)",
                 n_dup, duplicates)
    if duplicates == "drop" and n_dup:
        keep = ~pd.Series(groups).duplicated().to_numpy()
        frame, groups = frame[keep].reset_index(drop=True), groups[keep]
    y = frame["label"].to_numpy()
    if duplicates == "group" and n_dup:
        splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        folds = list(splitter.split(np.zeros(len(y)), y, groups))
    else:
        folds = list(StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed).split(np.zeros(len(y)), y))
    return frame, folds


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
                   early_stopping_rounds: int = 50, duplicates: str | None = None) -> dict[str, Any]:
    """Stratified ``n_splits``-fold CV of XGBoost, a logistic regression and the prior on the snapshot label.

    Returns a JSON-ready dict: ``validation`` (why k-fold), sizes, ``xgboost`` / ``baseline_logistic`` /
    ``baseline_prior`` with ``roc_auc``, ``pr_auc``, ``log_loss`` mean and std over folds (and per fold),
    the XGBoost parameters and rounds per fold, the features used and the wall time.
    """
    t0 = time.perf_counter()
    frame, features, cats = snapshot_features(cfg, tables)
    frame, folds = snapshot_folds(frame, features, n_splits, seed, duplicates or cfg.training.snapshot.duplicates)
    y = frame["label"].to_numpy()
    n_pos = int(y.sum())
    if n_pos < n_splits or len(y) - n_pos < n_splits:
        raise DataError("customers", cfg.label.column, f"too few churners ({n_pos}) or non-churners "
                        f"({len(y) - n_pos}) for {n_splits}-fold cross-validation")
    n_threads = cfg.training.n_threads
    xgb_params = {**DEFAULT_PARAMS, **(params or {})}
    res: dict[str, list[dict[str, float]]] = {"xgboost": [], "baseline_logistic": [], "baseline_prior": []}
    rounds: list[int] = []
    for i, (tr, te) in enumerate(folds):
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


def tune_cv(frame: pd.DataFrame, features: list[str], categories: dict[str, list[str]],
            folds: list[tuple[np.ndarray, np.ndarray]], cfg: Config, study_name: str,
            on_trial: Any = None) -> dict[str, Any]:
    """Optuna over the configured search space, objective = mean ROC-AUC over the folds (``xgb.cv``).

    The DMatrix is built once; each trial early-stops on the mean fold AUC, which also gives its rounds.
    """
    from training.tune import BASE_PARAMS, make_study, suggest

    tcfg = cfg.training
    proto = ChurnModel(xgb.Booster(), features, categories, meta={"n_threads": tcfg.n_threads})
    dall = xgb.DMatrix(proto.prepare(frame), label=frame["label"], enable_categorical=True, nthread=tcfg.n_threads)
    study = make_study(tcfg.tuning, tcfg.seed, study_name, pruning=False)

    def objective(trial: Any) -> float:
        params = {**BASE_PARAMS, **suggest(trial, tcfg.tuning.search_space), "eval_metric": "auc",
                  "seed": tcfg.seed, "nthread": tcfg.n_threads}
        hist = xgb.cv(params, dall, num_boost_round=tcfg.tuning.max_boost_rounds, folds=folds,
                      early_stopping_rounds=tcfg.tuning.early_stopping_rounds, seed=tcfg.seed, verbose_eval=False)
        trial.set_user_attr("rounds", len(hist))
        value = float(hist["test-auc-mean"].iloc[-1])
        if on_trial:
            on_trial({"number": trial.number, "params": trial.params, "value": value, "rounds": len(hist)})
        return value

    done = len([t for t in study.trials if t.state.is_finished()])
    if tcfg.tuning.n_trials > done:
        study.optimize(objective, n_trials=tcfg.tuning.n_trials - done, timeout=tcfg.tuning.timeout_s)
    best = study.best_trial
    log.info("snapshot tuning: %d trial(s), best CV ROC-AUC %.4f at %d rounds", len(study.trials), best.value,
             best.user_attrs["rounds"])
    return {"params": dict(best.params), "rounds": int(best.user_attrs["rounds"]), "cv_auc": float(best.value),
            "n_trials": len(study.trials)}


def out_of_fold(frame: pd.DataFrame, features: list[str], cats: list[str], categories: dict[str, list[str]],
                folds: list[tuple[np.ndarray, np.ndarray]], params: dict[str, Any], rounds: int,
                cfg: Config) -> tuple[np.ndarray, dict[str, Any]]:
    """Out-of-fold raw XGBoost predictions (tuned parameters and rounds) and per-fold metrics with baselines."""
    from training.refit import Refitter

    tcfg = cfg.training
    oof = np.zeros(len(frame))
    res: dict[str, list[dict[str, float]]] = {"xgboost": [], "baseline_logistic": [], "baseline_prior": []}
    for i, (tr, te) in enumerate(folds):
        train, test = frame.iloc[tr].reset_index(drop=True), frame.iloc[te].reset_index(drop=True)
        fitter = Refitter(params, rounds - 1, len(train), features, categories, "tuned", tcfg.seed + i, tcfg.n_threads)
        oof[te] = fitter.fit(train, f"fold {i + 1}").predict_raw(test)
        y_te = test["label"].to_numpy()
        res["xgboost"].append(_metrics(y_te, oof[te]))
        res["baseline_logistic"].append(_metrics(y_te, logistic_baseline(train, test, features, cats, tcfg.seed)))
        res["baseline_prior"].append(_metrics(y_te, np.full(len(y_te), train["label"].mean())))
    return oof, {k: _summary(v) for k, v in res.items()}


def train_snapshot(cfg: Config, tables: Tables, data_dir: str) -> dict[str, Any]:
    """Snapshot data end to end: grouped CV folds, Optuna on the CV objective, out-of-fold calibration,
    a final model on every row (rounds scaled to the row count), logged to MLflow and registered."""
    from model.registry import log_model, register, setup_mlflow
    from training.refit import Refitter, fit_calibrator
    from training.train import config_hash, git_commit

    tcfg, t0 = cfg.training, time.perf_counter()
    frame, features, cats = snapshot_features(cfg, tables)
    frame, folds = snapshot_folds(frame, features, tcfg.snapshot.n_splits, tcfg.seed, tcfg.snapshot.duplicates)
    y = frame["label"].to_numpy()
    if min(int(y.sum()), int(len(y) - y.sum())) < tcfg.snapshot.n_splits:
        raise DataError("customers", cfg.label.column, f"too few churners ({int(y.sum())}) or non-churners for "
                        f"{tcfg.snapshot.n_splits}-fold cross-validation")
    categories = {c: [str(x) for x in frame[c].cat.categories] for c in cats}
    tracking_uri = setup_mlflow(cfg.mlflow)
    import mlflow

    study = f"{cfg.mlflow.model_name}-snapshot-{tables.input_hash[7:19]}-{config_hash(cfg)[:8]}-seed{tcfg.seed}"
    with mlflow.start_run(run_name="train-snapshot") as run:
        mlflow.set_tags({"stage": "train", "mode": "snapshot", "input_hash": tables.input_hash,
                         "git_commit": git_commit(), "data_dir": str(data_dir), "optuna_study": study})
        best = tune_cv(frame, features, categories, folds, cfg, study)
        oof, cv = out_of_fold(frame, features, cats, categories, folds, best["params"], best["rounds"], cfg)
        n_fold_train = int(np.mean([len(tr) for tr, _ in folds]))
        fitter = Refitter(best["params"], best["rounds"] - 1, n_fold_train, features, categories, tcfg.refit.rounds,
                          tcfg.seed, tcfg.n_threads)
        model = fitter.fit(frame, "registered model (every row)")
        model.calibrator = fit_calibrator(pd.DataFrame({"label": y, "p_raw": oof}), cfg)
        p_oof = model.calibrator.transform(oof)
        model.meta.update({"mode": "snapshot", "label": cfg.label.model_dump(), "event_types": [],
                           "input_hash": tables.input_hash, "cv_rounds": best["rounds"],
                           "protocol": {"refit": True, "fits": fitter.fits[-1:], "duplicates": tcfg.snapshot.duplicates,
                                        "calibration_method": model.calibrator.method}})
        ref = frame[features].sample(n=min(len(frame), 20000), random_state=tcfg.seed).sort_index()
        model.reference = ref.assign(churn_probability=model.predict_proba(frame.loc[ref.index])).reset_index(drop=True)
        metrics = {f"cv_{k}": v for k, v in _metrics(y, p_oof).items()}
        metrics.update({f"cv_{k}": v for k, v in cv["xgboost"].items() if k.endswith(("_mean", "_std"))})
        metrics.update({f"baseline_logistic_cv_{k}": v for k, v in cv["baseline_logistic"].items()
                        if k.endswith("_mean")})
        mlflow.log_params({"mode": "snapshot", "n_features": len(features), "n_rows": len(frame),
                           "n_splits": tcfg.snapshot.n_splits, "duplicates": tcfg.snapshot.duplicates,
                           "final_rounds": fitter.fits[-1]["rounds"], "cv_rounds": best["rounds"],
                           "n_trials": best["n_trials"], "calibration_fitted": model.calibrator.method,
                           **{f"xgb_{k}": (round(v, 6) if isinstance(v, float) else v) for k, v in best["params"].items()}})
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if np.isfinite(v)})
        uri = log_model(model)
        reg = register(uri, run.info.run_id, cfg.mlflow.model_name,
                       tags={"input_hash": tables.input_hash, "mode": "snapshot", "run_id": run.info.run_id,
                             "cv_roc_auc": f"{metrics['cv_roc_auc_mean']:.5f}"})
    return {"mode": "snapshot", "validation": f"{tcfg.snapshot.n_splits}-fold " + VALIDATION_NOTE, "out_of_time": False,
            "run_id": run.info.run_id, "tracking_uri": tracking_uri, **reg, "metrics": metrics,
            "n_customers": len(frame), "n_churners": int(y.sum()), "n_features": len(features),
            "tuning": {"n_trials": best["n_trials"], "best_cv_auc": best["cv_auc"], "rounds": best["rounds"],
                       "study": study}, "xgboost": cv["xgboost"], "baseline_logistic": cv["baseline_logistic"],
            "baseline_prior": cv["baseline_prior"], "seconds": round(time.perf_counter() - t0, 2)}
