"""Optuna search over XGBoost hyper-parameters on an out-of-time validation window.

Seeded TPE sampler, median pruning through XGBoost's pruning callback with early stopping, the
search space from config, a budget in trials and/or seconds, and a study stored in SQLite so it can
be resumed and opened with optuna-dashboard. The DMatrices are built once, outside the objective.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
import xgboost as xgb

from churn.config import TuningConfig

log = logging.getLogger(__name__)
OBJECTIVE_NAME = "valid_roc_auc"  # what each trial returns: ROC-AUC on the validation cutoffs

# AUC only: early stopping and pruning read it; a second metric cost a pass over the validation rows every round
BASE_PARAMS = {"objective": "binary:logistic", "eval_metric": "auc", "tree_method": "hist", "max_cat_to_onehot": 8}


def pruning_callback(trial: optuna.Trial, observation_key: str, interval: int = 10) -> xgb.callback.TrainingCallback:
    """Optuna's XGBoost pruning callback, reporting every ``interval`` rounds.

    Reporting every round writes one row per round to the study's SQLite storage, which made
    trials 20-50x slower than training itself; every 10th round prunes just as well.
    """
    from optuna_integration import XGBoostPruningCallback

    class _Sparse(XGBoostPruningCallback):
        def after_iteration(self, model: xgb.Booster, epoch: int, evals_log: dict) -> bool:
            if epoch % interval:
                return False
            return super().after_iteration(model, epoch, evals_log)

    return _Sparse(trial, observation_key)


def suggest(trial: optuna.Trial, space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Build a parameter dict from the configured search space."""
    params: dict[str, Any] = {}
    for name, spec in space.items():
        kind = spec.get("type", "float")
        if kind == "int":
            params[name] = trial.suggest_int(name, int(spec["low"]), int(spec["high"]), log=bool(spec.get("log", False)))
        elif kind == "categorical":
            params[name] = trial.suggest_categorical(name, list(spec["choices"]))  # type: ignore[arg-type]
        else:
            params[name] = trial.suggest_float(name, float(spec["low"]), float(spec["high"]), log=bool(spec.get("log", False)))
    return params


@dataclass
class TuningResult:
    best_params: dict[str, Any]
    best_iteration: int
    best_value: float
    n_trials: int
    n_pruned: int
    seconds: float
    study_name: str
    storage: str | None
    trials: list[dict[str, Any]]


def fit_booster(params: dict[str, Any], dtrain: xgb.DMatrix, dvalid: xgb.DMatrix, rounds: int,
                early_stopping: int, seed: int, n_threads: int, callbacks: list | None = None) -> xgb.Booster:
    full = {**BASE_PARAMS, **params, "seed": seed, "nthread": n_threads}
    return xgb.train(full, dtrain, num_boost_round=rounds, evals=[(dvalid, "validation")],
                     early_stopping_rounds=early_stopping, verbose_eval=False, callbacks=callbacks or [])


def make_study(cfg: TuningConfig, seed: int, study_name: str, pruning: bool | None = None) -> optuna.Study:
    """A seeded TPE study (median pruner when ``cfg.pruning``), created or resumed in ``cfg.storage``."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=seed)
    prune = cfg.pruning if pruning is None else pruning
    pruner = optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=20) if prune else optuna.pruners.NopPruner()
    study = optuna.create_study(study_name=study_name, storage=cfg.storage, sampler=sampler, pruner=pruner,
                                direction="maximize", load_if_exists=True)
    with warnings.catch_warnings():  # stable since Optuna 3.2 but still flagged experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([OBJECTIVE_NAME])  # optuna-dashboard shows this instead of "Objective 0"
    return study


def tune(dtrain: xgb.DMatrix, dvalid: xgb.DMatrix, cfg: TuningConfig, seed: int, n_threads: int,
         study_name: str, on_trial: Callable[[dict[str, Any]], None] | None = None,
         extra_params: dict[str, Any] | None = None) -> TuningResult:
    """Run (or resume) the study and return the best parameters with their early-stopped round count."""
    study = make_study(cfg, seed, study_name)
    extra = extra_params or {}
    t0 = time.perf_counter()
    trials_log: list[dict[str, Any]] = []

    def objective(trial: optuna.Trial) -> float:
        params = {**suggest(trial, cfg.search_space), **extra}
        cb = [pruning_callback(trial, "validation-auc")] if cfg.pruning else []
        booster = fit_booster(params, dtrain, dvalid, cfg.max_boost_rounds, cfg.early_stopping_rounds, seed, n_threads, cb)
        trial.set_user_attr("best_iteration", int(booster.best_iteration))
        return float(booster.best_score)

    def callback(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        rec = {"number": trial.number, "state": trial.state.name, "value": trial.value, "params": trial.params,
               "best_iteration": trial.user_attrs.get("best_iteration"),
               "seconds": (trial.duration.total_seconds() if trial.duration else None)}
        trials_log.append(rec)
        done = len(trials_log)
        log.info("trial %d/%d %s auc=%s (best %.4f)", done, cfg.n_trials, trial.state.name.lower(),
                 f"{trial.value:.4f}" if trial.value is not None else "-", study.best_value)
        if on_trial:
            on_trial(rec)

    already = len([t for t in study.trials if t.state.is_finished()])
    remaining = max(cfg.n_trials - already, 0)
    if already:
        log.info("resuming study '%s': %d finished trial(s), %d to go", study_name, already, remaining)
    if remaining:
        study.optimize(objective, n_trials=remaining, timeout=cfg.timeout_s, callbacks=[callback], gc_after_trial=False)
    best = study.best_trial
    states = [t.state for t in study.trials]
    return TuningResult(
        best_params={**best.params, **extra},
        best_iteration=int(best.user_attrs["best_iteration"]),
        best_value=float(best.value),
        n_trials=len(study.trials),
        n_pruned=sum(s == optuna.trial.TrialState.PRUNED for s in states),
        seconds=time.perf_counter() - t0,
        study_name=study_name,
        storage=cfg.storage,
        trials=trials_log,
    )


def scale_pos_weight(y: np.ndarray) -> float:
    pos = float(np.sum(y))
    return (len(y) - pos) / pos if pos else 1.0
