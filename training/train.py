"""Training pipeline: snapshots -> out-of-time split -> Optuna -> calibration -> evaluation -> MLflow.

One function, :func:`train`, assembles the steps; the steps themselves live in ``tune``,
``evaluate``, ``model`` and ``registry``.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb

from churn.config import Config
from churn.redact import redact_text, redacted_dump
from features.build import FeatureBuilder, FeatureSet
from features.catalogue import catalogue_frame
from features.contract import Tables
from features.timeline import label_window_days, split_cutoffs, training_cutoffs
from model import metrics as ev
from model.artifact import Calibrator, ChurnModel
from model.card import evaluation_card
from model.recalibration import META_KEY as RECAL_KEY
from model.recalibration import test_window_recalibration
from training import plots
from training.backtest import rolling_backtest
from training.backtest import summarize as summarize_backtest
from training.matrix import compact_features, quantile_matrix
from training.refit import (
    Refitter,
    calibration_method,
    contiguous_rows,
    cutoff_dates,
    embargoed_rows,
    evaluated_model,
    registered_model,
)
from training.sample import WEIGHT, customer_sample, needs_sample
from training.tune import TuningResult, fit_booster, tune

log = logging.getLogger(__name__)


def config_hash(cfg: Config) -> str:
    dump = cfg.model_dump(exclude={"source"})
    return hashlib.sha256(json.dumps(dump, sort_keys=True, default=str).encode()).hexdigest()


def study_name(cfg: Config, input_hash: str) -> str:
    """The Optuna study of this data, config and seed (a rerun resumes it)."""
    return f"{cfg.mlflow.model_name}-{input_hash[7:19]}-{config_hash(cfg)[:8]}-seed{cfg.training.seed}"


def study_lock(cfg: Config, input_hash: str) -> Any:
    """An exclusive lock on this training study (in its storage): a second `churn train` on it is refused (exit 75)."""
    from churn.publish import file_lock

    storage = cfg.training.tuning.storage
    where = str(Path(storage.removeprefix("sqlite:///")).absolute()) if storage and storage.startswith("sqlite:///") \
        else str(storage)
    name = study_name(cfg, input_hash)
    return file_lock(f"{where}/{name}", f"training study {name}")


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _timed(timings: dict[str, float], key: str, start: float) -> None:
    """Record a step's seconds since ``start`` and log them with the process's peak memory so far."""
    import resource

    timings[key] = time.perf_counter() - start
    log.info("step %s: %.1fs (peak RSS so far %.2f GB)", key.removesuffix("_s"), timings[key],
             resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)


def _split(fs: FeatureSet, cutoffs: list[pd.Timestamp]) -> pd.DataFrame:
    return contiguous_rows(fs.frame, fs.frame["cutoff"].isin(cutoffs).to_numpy())


def data_profile(frame: pd.DataFrame, features: list[str]) -> pd.DataFrame:
    """Per-feature summary of the training data (logged for audits and drift triage)."""
    rows = []
    for f in features:
        s = frame[f]
        if isinstance(s.dtype, pd.CategoricalDtype):
            top = s.value_counts(normalize=True)
            rows.append({"feature": f, "type": "category", "missing_share": float(s.isna().mean()),
                         "mean": np.nan, "std": np.nan, "min": np.nan, "max": np.nan,
                         "top": ", ".join(f"{k}:{v:.2f}" for k, v in top.head(4).items())})
        else:
            v = s.astype(float)
            rows.append({"feature": f, "type": "numeric", "missing_share": float(v.isna().mean()),
                         "mean": v.mean(), "std": v.std(), "min": v.min(), "max": v.max(), "top": ""})
    return pd.DataFrame(rows)


def logistic_baseline(train: pd.DataFrame, test: pd.DataFrame, features: list[str], cats: list[str], seed: int) -> np.ndarray:
    """Logistic regression on the same features (one-hot categoricals, median-imputed, scaled)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    nums = [f for f in features if f not in cats]
    pre = ColumnTransformer([
        ("num", make_pipeline(SimpleImputer(strategy="median", keep_empty_features=True), StandardScaler()), nums),
        ("cat", OneHotEncoder(handle_unknown="ignore"), cats),
    ])
    pipe = make_pipeline(pre, LogisticRegression(max_iter=2000, C=0.5, random_state=seed))

    def _x(df: pd.DataFrame) -> pd.DataFrame:
        x = df[features].copy()
        for c in cats:
            x[c] = x[c].astype(str)
        for c in nums:
            x[c] = x[c].astype(float).replace([np.inf, -np.inf], np.nan)
        return x

    pipe.fit(_x(train), train["label"].to_numpy())
    return pipe.predict_proba(_x(test))[:, 1]


def group_importance(model: ChurnModel, X: pd.DataFrame, specs: dict[str, Any]) -> pd.DataFrame:
    """Mean |SHAP| per feature group, in log-odds, on a sample (global importance)."""
    contrib = model.contributions(X)[:, :-1]
    df = pd.DataFrame(np.abs(contrib), columns=model.features)
    imp = df.mean().rename("mean_abs_shap").reset_index().rename(columns={"index": "feature"})
    imp["group"] = imp["feature"].map(lambda f: specs[f].group)
    imp["family"] = imp["feature"].map(lambda f: specs[f].family)
    return imp.sort_values("mean_abs_shap", ascending=False).reset_index(drop=True)


def _plot_importance(imp: pd.DataFrame, path: Path) -> None:
    from matplotlib.figure import Figure

    g = imp.groupby("group")["mean_abs_shap"].sum().sort_values().tail(15)
    fig = Figure(figsize=(7, 5))
    ax = fig.subplots()
    ax.barh(g.index, g.to_numpy(), color="#3b6ea8")
    ax.set_xlabel("mean |SHAP| (log-odds), summed per group")
    ax.set_title("Global importance by feature group")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _fit_survival(model: ChurnModel, frame: pd.DataFrame, tables: Tables, cfg: Config, cutoffs: list[pd.Timestamp],
                  test_df: pd.DataFrame, p_test: np.ndarray, metrics: dict[str, Any]) -> pd.DataFrame:
    """Attach a time-to-churn model to ``model`` and add its out-of-time metrics; returns its calibration table."""
    from training.survival import consistency, fit_and_evaluate

    if cfg.label.definition == "snapshot":
        log.info("survival: skipped (a snapshot label has no time to churn)")
        return pd.DataFrame()
    tcfg = cfg.training
    deployed, evaluated, surv_metrics, calib = fit_and_evaluate(frame, tables, cfg.label, cutoffs, model.prepare,
                                                                tcfg.survival, tcfg.seed, tcfg.n_threads)
    model.survival = deployed
    model.meta["survival_horizons_days"] = list(tcfg.survival.horizons_days)
    metrics.update(surv_metrics)
    # consistency on the classifier's own test rows, both models out of time there
    mu = evaluated.mu(model.dmatrix(test_df))
    metrics.update(consistency(evaluated, mu, p_test, label_window_days(cfg.label)))
    return calib


def _refit(frame: pd.DataFrame, split: Any, tables: Tables, cfg: Config, params: dict[str, Any],
           meta: dict[str, Any], n_tuned: int, features: list[str], categories: dict[str, list[str]],
           test_df: pd.DataFrame, default: xgb.Booster, chunked: bool = False
           ) -> tuple[ChurnModel, dict[str, Any], pd.DataFrame, np.ndarray]:
    """The refitted, cross-fit calibrated model evaluated on the test cutoff, its protocol record and rows,
    and the default-XGBoost baseline refitted on the same rows (see training/refit.py); ``chunked``: large
    tables refit on chunk-built matrices (training/matrix.py)."""
    tcfg = cfg.training
    refitter = Refitter(params, meta["best_iteration"], n_tuned, features, categories, tcfg.refit.rounds,
                        tcfg.seed, tcfg.n_threads, chunked)
    model, rows, oof = evaluated_model(frame, split.test[0], tables, cfg, refitter, meta)
    base = replace(refitter, params={"eta": 0.3, "max_depth": 6}, best_iteration=int(default.best_iteration), fits=[])
    p_default = base.fit(rows, "baseline: default XGBoost").predict_proba(test_df)
    protocol = {"refit": True, "rounds_rule": tcfg.refit.rounds, "fits": refitter.fits,
                "fitted_cutoffs": refitter.fits[0]["cutoffs"], "calibration_method": model.calibrator.method,
                "calibration_cutoffs": cutoff_dates(oof["cutoff"]),
                "include_test": tcfg.refit.include_test, "refitter": refitter, "oof": oof}
    return model, protocol, rows, p_default


@dataclass
class TrainingData:
    """What every training step reads: the split, the feature table, its features and its out-of-time parts."""

    split: Any
    used: list[pd.Timestamp]
    fs: FeatureSet
    features: list[str]
    cats: list[str]
    categories: dict[str, list[str]]
    event_types: list[str]
    train_df: pd.DataFrame
    valid_df: pd.DataFrame
    test_df: pd.DataFrame

    @property
    def specs(self) -> dict[str, Any]:
        return {s.name: s for s in self.fs.specs}


@dataclass
class Tuned:
    """The tuning step's output: the study, the tuned booster and the default-XGBoost baseline fitted on its rows."""

    result: TuningResult
    booster: xgb.Booster
    default: xgb.Booster
    sampling: dict[str, Any]


@dataclass
class Fitted:
    """The model evaluated on the test cutoff, its protocol record and every test-cutoff prediction."""

    model: ChurnModel
    tuned: ChurnModel
    meta: dict[str, Any]
    protocol: dict[str, Any]
    fit_rows: pd.DataFrame
    p_valid_raw: np.ndarray
    predictions: dict[str, np.ndarray] = field(default_factory=dict)


def training_data(tables: Tables, cfg: Config) -> TrainingData:
    """Cutoffs, the out-of-time split and the feature table of every cutoff the protocol needs."""
    tcfg = cfg.training
    cutoffs = training_cutoffs(tables, cfg.label, tcfg.n_cutoffs, tcfg.cutoff_frequency, tcfg.min_history_days,
                               explicit=tcfg.cutoffs)
    split = split_cutoffs(cutoffs, tcfg.valid_cutoffs, tcfg.test_cutoffs, label_window_days(cfg.label))
    used = split.train + split.valid + split.test
    # every cutoff is built: the refit uses the ones the tuning split embargoed (training/refit.py)
    build = cutoffs if tcfg.refit.enabled or tcfg.embargo == "censor" else used
    log.info("cutoffs: train %s..%s (%d), valid %s, test %s", split.train[0].date(), split.train[-1].date(),
             len(split.train), [t.date().isoformat() for t in split.valid], [t.date().isoformat() for t in split.test])
    fs = FeatureBuilder(tables, cfg).build_many(build)
    specs = {s.name: s for s in fs.specs}
    features = [f for f in fs.feature_names if f not in set(tcfg.exclude_features)]
    fs = FeatureSet(compact_features(fs.frame, features, split.valid[0], tcfg.sampling.min_rows), fs.specs)
    cats = [f for f in features if specs[f].categorical]
    event_types = sorted({s.group.removesuffix("_activity") for s in fs.specs
                          if s.group.endswith("_activity") and s.name.endswith(f"_{cfg.features.trend_recent_days}d")})
    data = TrainingData(split, used, fs, features, cats, {c: [str(x) for x in fs.frame[c].cat.categories] for c in cats},
                        event_types, embargoed_rows(fs.frame, split.valid[0], tables, cfg),  # == split.train's rows
                        _split(fs, split.valid), _split(fs, split.test))
    for name, df in (("train", data.train_df), ("valid", data.valid_df), ("test", data.test_df)):
        if df["label"].nunique() < 2:
            from churn.errors import DataError

            raise DataError("customers", "churn_date", f"the {name} cutoffs have only one label class; "
                            "need churners and non-churners in every split (more history or a longer horizon)")
    return data


def _dmatrix(data: TrainingData, rows: pd.DataFrame, n_threads: int, chunked: bool = False) -> xgb.DMatrix:
    """An XGBoost matrix of ``rows`` with labels (and the sample's case weights when it has them); ``chunked``:
    built chunk by chunk for a large table (training/matrix.py)."""
    proto = ChurnModel(xgb.Booster(), data.features, data.categories, meta={"n_threads": n_threads})
    weight = rows[WEIGHT].to_numpy() if WEIGHT in rows else None
    if chunked:
        return quantile_matrix(rows, proto.prepare, n_threads, weight=weight)
    return xgb.DMatrix(proto.prepare(rows), label=rows["label"], weight=weight, enable_categorical=True,
                       nthread=n_threads)


def tuning_rows(data: TrainingData, cfg: Config) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Train and validation rows Optuna tunes on: every row, or weighted customer samples (training/sample.py)."""
    tcfg, s = cfg.training, cfg.training.sampling
    info = {"sampled": needs_sample(len(data.train_df), s.min_rows), "min_rows": s.min_rows,
            "rows_train": len(data.train_df), "rows_valid": len(data.valid_df)}
    if not info["sampled"]:
        return data.train_df, data.valid_df, info
    train_rows = customer_sample(data.train_df, s.customers, tcfg.seed)
    valid_rows = customer_sample(data.valid_df, s.customers, tcfg.seed + 1)
    info.update({"customers": s.customers, "rows_train_sample": len(train_rows),
                 "rows_valid_sample": len(valid_rows)})
    return train_rows, valid_rows, info


def tune_step(data: TrainingData, cfg: Config, study: str, on_trial: Callable[[dict[str, Any]], None]) -> Tuned:
    """Optuna on the tuning rows; the best parameters early-stopped once more, and the default-XGBoost baseline.

    On a sample, the tuned booster is refitted on every train row when no refit follows (it is then final).
    """
    tcfg = cfg.training
    train_rows, valid_rows, info = tuning_rows(data, cfg)
    dtrain, dvalid = _dmatrix(data, train_rows, tcfg.n_threads), _dmatrix(data, valid_rows, tcfg.n_threads)
    result = tune(dtrain, dvalid, tcfg.tuning, tcfg.seed, tcfg.n_threads, study, on_trial=on_trial)
    dfit = _dmatrix(data, data.train_df, tcfg.n_threads, chunked=True) if info["sampled"] and not tcfg.refit.enabled \
        else dtrain
    booster = fit_booster(result.best_params, dfit, dvalid, tcfg.tuning.max_boost_rounds,
                          tcfg.tuning.early_stopping_rounds, tcfg.seed, tcfg.n_threads)
    # baselines on the same split (refitted like the model when the refit is on)
    default = fit_booster({"eta": 0.3, "max_depth": 6}, dfit, dvalid, 200, tcfg.tuning.early_stopping_rounds,
                          tcfg.seed, tcfg.n_threads)
    return Tuned(result, booster, default, info)


def evaluation_rows(frame: pd.DataFrame, cfg: Config, tuned: Tuned) -> pd.DataFrame:
    """``frame``, or when tuning was sampled a customer sample of it (unweighted) for the steps that only evaluate
    or compare (logistic baseline, rolling backtest) and for the time-to-churn model: the churn model's refit
    keeps every row."""
    if not tuned.sampling["sampled"]:
        return frame
    return customer_sample(frame, cfg.training.sampling.customers, cfg.training.seed).drop(columns=WEIGHT)


def fit_step(data: TrainingData, tables: Tables, cfg: Config, tuned: Tuned) -> Fitted:
    """The tuned model calibrated on validation, the refit (training/refit.py) and the baselines' test predictions."""
    tcfg, test_df = cfg.training, data.test_df
    meta = {"best_iteration": int(tuned.booster.best_iteration), "n_threads": tcfg.n_threads,
            "event_types": data.event_types, "label": cfg.label.model_dump(),
            "train_cutoffs": cutoff_dates(data.train_df["cutoff"]),
            "valid_cutoffs": [t.date().isoformat() for t in data.split.valid],
            "test_cutoffs": [t.date().isoformat() for t in data.split.test], "input_hash": tables.input_hash}
    tuned_model = ChurnModel(tuned.booster, data.features, data.categories, meta=meta)
    p_valid_raw = tuned_model.predict_raw(data.valid_df)
    y_valid = data.valid_df["label"].to_numpy()
    tuned_model.calibrator = Calibrator.fit(calibration_method(tcfg.calibration, y_valid, tcfg.isotonic_min_positives),
                                            p_valid_raw, y_valid)
    p_tuned = tuned_model.predict_proba(test_df)
    default = tuned.default
    p_default = default.predict(_dmatrix(data, test_df, tcfg.n_threads), iteration_range=(0, default.best_iteration + 1))
    fit_rows = data.train_df
    model, protocol = tuned_model, {"refit": False, "fitted_cutoffs": meta["train_cutoffs"]}
    if tcfg.refit.enabled:
        model, protocol, fit_rows, p_default = _refit(data.fs.frame, data.split, tables, cfg, tuned.result.best_params,
                                                      meta, len(data.train_df), data.features, data.categories,
                                                      test_df, default, tuned.sampling["sampled"])
    protocol["censored_cutoffs"] = [t.date().isoformat() for t in fit_rows.attrs.get("censored", [])]
    p_logit = logistic_baseline(evaluation_rows(fit_rows, cfg, tuned), test_df, data.features, data.cats, tcfg.seed)
    preds = {"test_raw": model.predict_raw(test_df), "test": model.predict_proba(test_df), "tuned": p_tuned,
             "baseline_xgb_default": p_default, "baseline_logistic": p_logit}
    return Fitted(model, tuned_model, meta, protocol, fit_rows, p_valid_raw, preds)


def evaluation_metrics(data: TrainingData, cfg: Config, fitted: Fitted) -> tuple[dict[str, Any], dict[str, Any]]:
    """Out-of-time metrics of the model and the baselines; returns them and the tables behind them (lift, profit)."""
    y_test, p_test, preds = data.test_df["label"].to_numpy(), fitted.predictions["test"], fitted.predictions
    y_valid = data.valid_df["label"].to_numpy()
    metrics = {f"test_{k}": v for k, v in ev.classification_metrics(y_test, p_test).items()}
    metrics.update({f"test_uncalibrated_{k}": v for k, v in ev.classification_metrics(y_test, preds["test_raw"]).items()
                    if k in ("log_loss", "brier", "ece")})
    metrics.update({f"valid_{k}": v for k, v in ev.classification_metrics(
        y_valid, fitted.tuned.calibrator.transform(fitted.p_valid_raw)).items() if k in ("roc_auc", "pr_auc")})
    metrics.update({f"test_norefit_{k}": v for k, v in ev.classification_metrics(y_test, preds["tuned"]).items()
                    if k in ("roc_auc", "pr_auc", "log_loss")})
    for name in ("baseline_xgb_default", "baseline_logistic"):
        m = ev.classification_metrics(y_test, preds[name])
        metrics.update({f"{name}_{k}": m[k] for k in ("roc_auc", "pr_auc", "log_loss")})
    lift = ev.lift_table(y_test, p_test)
    for row in lift.itertuples():
        pct = int(round(row.fraction * 100))
        metrics[f"test_lift_top{pct}"] = float(row.lift)
        metrics[f"test_capture_top{pct}"] = float(row.capture)
    econ, test_df = cfg.training.economics, data.test_df
    clv = test_df["lifetime_value"].to_numpy(dtype=float) if "lifetime_value" in test_df else np.full(len(y_test), 100.0)
    curve = ev.profit_curve(y_test, p_test, clv, econ.contact_cost, econ.incentive_cost, econ.acceptance_rate)
    best = ev.best_targeting(curve)
    metrics.update({"test_best_profit": best["profit"], "test_best_fraction": best["fraction"]})
    emp = ev.expected_maximum_profit(y_test, p_test, clv=float(np.nanmean(clv)), incentive_cost=econ.incentive_cost,
                                     contact_cost=econ.contact_cost)
    metrics.update({"test_emp": emp["emp"], "test_emp_fraction": emp["fraction"]})
    beats = (metrics["test_roc_auc"] > metrics["baseline_xgb_default_roc_auc"]
             and metrics["test_roc_auc"] > metrics["baseline_logistic_roc_auc"])
    verdict = ("tuned model beats both baselines out of time" if beats else
               "WARNING: tuned model does NOT beat every baseline out of time (see baseline_* metrics)")
    log.info("test ROC-AUC %.4f PR-AUC %.4f | default XGB %.4f | logistic %.4f -> %s", metrics["test_roc_auc"],
             metrics["test_pr_auc"], metrics["baseline_xgb_default_roc_auc"], metrics["baseline_logistic_roc_auc"], verdict)
    return metrics, {"lift": lift, "curve": curve, "verdict": verdict}


def robustness_step(data: TrainingData, tables: Tables, cfg: Config, fitted: Fitted, tuned: Tuned,
                    metrics: dict[str, Any], timings: dict[str, float]) -> dict[str, pd.DataFrame]:
    """Rolling backtest and the time-to-churn model (attached to the model); adds their metrics to ``metrics``."""
    tcfg, out = cfg.training, {"backtest": pd.DataFrame(), "survival_calibration": pd.DataFrame()}
    frame = evaluation_rows(data.fs.frame, cfg, tuned)
    if tcfg.backtest_windows:
        t1 = time.perf_counter()
        out["backtest"] = rolling_backtest(frame, data.used, data.features, data.categories,
                                           tuned.result.best_params, label_window_days(cfg.label), tcfg.backtest_windows,
                                           tcfg.calibration, tcfg.tuning.max_boost_rounds,
                                           tcfg.tuning.early_stopping_rounds, tcfg.seed, tcfg.n_threads)
        metrics.update(summarize_backtest(out["backtest"]))
        _timed(timings, "backtest_s", t1)
    if tcfg.survival.enabled:
        t1 = time.perf_counter()
        out["survival_calibration"] = _fit_survival(fitted.model, frame, tables, cfg, data.used, data.test_df,
                                                    fitted.predictions["test"], metrics)
        _timed(timings, "survival_s", t1)
    seg_cols = [c for c in tcfg.segment_columns if c in data.test_df.columns]
    seg_df = data.test_df.assign(p=fitted.predictions["test"])
    out["segment_metrics"] = ev.segment_metrics(seg_df, "label", "p", seg_cols) if seg_cols else pd.DataFrame()
    return out


def final_model(data: TrainingData, cfg: Config, fitted: Fitted) -> tuple[ChurnModel, pd.DataFrame]:
    """The registered model (refitted on the test cutoff too with ``include_test``), its drift reference sample
    and its global importance table."""
    tcfg, test_df, protocol = cfg.training, data.test_df, fitted.protocol
    model, p_ref = fitted.model, fitted.predictions["test"]
    refitter, oof = protocol.pop("refitter", None), protocol.pop("oof", None)
    if refitter is not None and tcfg.refit.include_test:
        model = registered_model(data.fs.frame, model, test_df, oof, cfg, refitter)
        protocol["fitted_cutoffs"] = refitter.fits[-1]["cutoffs"]
        p_ref = model.predict_proba(test_df)
    model.meta["protocol"] = protocol
    if refitter is None or not tcfg.refit.include_test:  # the registered model was tested out of time: its own window
        model.meta[RECAL_KEY] = test_window_recalibration(p_ref, test_df["label"].to_numpy(), fitted.meta["test_cutoffs"],
                                                          tcfg.seed)
    # reference sample for drift monitoring: features and scores of the latest training-time snapshot
    ref = test_df[data.features].sample(n=min(len(test_df), 20000), random_state=tcfg.seed).sort_index()
    ref = ref.assign(churn_probability=p_ref[ref.index.to_numpy()]).reset_index(drop=True)
    model.reference = ref
    imp = group_importance(model, test_df.sample(n=min(len(test_df), 3000), random_state=tcfg.seed), data.specs)
    return model, imp


def _run_params(data: TrainingData, cfg: Config, tuned: Tuned, fitted: Fitted, model: ChurnModel) -> dict[str, Any]:
    """The MLflow run's parameters."""
    tcfg, meta, result = cfg.training, fitted.meta, tuned.result
    return {"seed": tcfg.seed, "n_features": len(data.features), "calibration": tcfg.calibration,
            "label_definition": cfg.label.definition, "horizon_days": label_window_days(cfg.label),
            "n_trials": result.n_trials, "n_pruned": result.n_pruned,
            "best_iteration": meta["best_iteration"], "refit": tcfg.refit.enabled,
            "refit_rounds": model.meta["best_iteration"] + 1, "embargo": tcfg.embargo,
            "calibration_fitted": model.calibrator.method,
            "fitted_cutoffs": ",".join(fitted.protocol["fitted_cutoffs"]),
            "train_cutoffs": ",".join(meta["train_cutoffs"]), "valid_cutoffs": ",".join(meta["valid_cutoffs"]),
            "test_cutoffs": ",".join(meta["test_cutoffs"]), "n_train": len(data.train_df),
            "n_valid": len(data.valid_df), "n_test": len(data.test_df),
            **({"tuning_sample_customers": tuned.sampling["customers"]} if tuned.sampling["sampled"] else {}),
            **{f"xgb_{k}": (round(v, 6) if isinstance(v, float) else v) for k, v in result.best_params.items()}}


def _write_evaluation(d: Path, tables: Tables, cfg: Config, data: TrainingData, tuned: Tuned, fitted: Fitted,
                      extra: dict[str, Any], imp: pd.DataFrame) -> pd.DataFrame:
    """Every evaluation artifact into ``d``; returns the feature catalogue."""
    (d / "config.json").write_text(json.dumps(redacted_dump(cfg), indent=2, default=str))
    if cfg.source and Path(cfg.source).exists():
        (d / "config.yaml").write_text(redact_text(Path(cfg.source).read_text(), cfg))
    cat = catalogue_frame(data.fs.specs)
    cat.to_csv(d / "feature_catalogue.csv", index=False)
    (d / "feature_catalogue.json").write_text(cat.to_json(orient="records", indent=2))
    data_profile(data.train_df, data.features).to_csv(d / "data_profile.csv", index=False)
    (d / "input.json").write_text(json.dumps({"input_hash": tables.input_hash,
                                              "files": [str(f) for f in tables.files],
                                              "git_commit": git_commit(), "config_hash": config_hash(cfg)}, indent=2))
    extra["lift"].to_csv(d / "lift_table.csv", index=False)
    extra["curve"].to_csv(d / "profit_curve.csv", index=False)
    for name in ("backtest", "segment_metrics", "survival_calibration"):
        if not extra[name].empty:
            extra[name].to_csv(d / f"{name}.csv", index=False)
    imp.to_csv(d / "global_importance.csv", index=False)
    pd.DataFrame(tuned.result.trials).to_json(d / "optuna_trials.json", orient="records", indent=2)
    y_test, p_test = data.test_df["label"].to_numpy(), fitted.predictions["test"]
    plots.plot_reliability(y_test, p_test, d / "reliability.png")
    plots.plot_lift(y_test, p_test, d / "lift_chart.png")
    plots.plot_pr_curve(y_test, p_test, d / "pr_curve.png")
    plots.plot_profit(extra["curve"], d / "profit_curve.png")
    _plot_importance(imp, d / "shap_importance.png")
    return cat


def _log_trial(rec: dict[str, Any]) -> None:
    """One nested MLflow run per Optuna trial."""
    import mlflow

    with mlflow.start_run(run_name=f"trial-{rec['number']}", nested=True):
        mlflow.log_params({k: round(v, 6) if isinstance(v, float) else v for k, v in rec["params"].items()})
        mlflow.set_tag("state", rec["state"])
        if rec["value"] is not None:
            mlflow.log_metrics({"valid_auc": rec["value"], "best_iteration": rec["best_iteration"] or 0})


def train(tables: Tables, cfg: Config, data_dir: str | Path) -> dict[str, Any]:
    """Build snapshots, tune, calibrate, evaluate, log to MLflow and register. Returns the run summary."""
    from model.registry import log_model, register, setup_mlflow

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    data = training_data(tables, cfg)
    _timed(timings, "features_s", t0)
    tracking_uri = setup_mlflow(cfg.mlflow)
    import mlflow

    from churn.mlflow_runs import owner_tags, reap_dead_runs

    reap_dead_runs(cfg.mlflow.experiment)
    study = study_name(cfg, tables.input_hash)
    with mlflow.start_run(run_name=f"train-{data.split.test[-1].date()}") as run:
        mlflow.set_tags({"stage": "train", "input_hash": tables.input_hash, "git_commit": git_commit(),
                         "config_hash": config_hash(cfg), "data_dir": str(data_dir), "optuna_study": study,
                         "optuna_storage": str(cfg.training.tuning.storage), **owner_tags()})
        t1 = time.perf_counter()
        tuned = tune_step(data, cfg, study, _log_trial)
        _timed(timings, "tuning_s", t1)
        t1 = time.perf_counter()
        fitted = fit_step(data, tables, cfg, tuned)
        _timed(timings, "fit_eval_s", t1)
        metrics, extra = evaluation_metrics(data, cfg, fitted)
        extra.update(robustness_step(data, tables, cfg, fitted, tuned, metrics, timings))
        model, imp = final_model(data, cfg, fitted)
        mlflow.log_params(_run_params(data, cfg, tuned, fitted, model))
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v is not None and np.isfinite(v)})
        mlflow.set_tag("baseline_verdict", extra["verdict"])
        with tempfile.TemporaryDirectory() as tmp:
            cat = _write_evaluation(Path(tmp), tables, cfg, data, tuned, fitted, extra, imp)
            mlflow.log_artifacts(tmp, artifact_path="evaluation")
        model.catalogue = json.loads(cat.to_json(orient="records"))
        meta = fitted.meta
        model.meta["evaluation"] = evaluation_card(data.test_df["label"].to_numpy(), fitted.predictions["test"], metrics, {
            "train": meta["train_cutoffs"], "valid": meta["valid_cutoffs"], "test": meta["test_cutoffs"]})  # model card
        reg = register(log_model(model), run.info.run_id, cfg.mlflow.model_name,
                       tags={"input_hash": tables.input_hash, "test_cutoff": meta["test_cutoffs"][-1],
                             "test_roc_auc": f"{metrics['test_roc_auc']:.5f}", "run_id": run.info.run_id})
        _timed(timings, "total_s", t0)
        mlflow.log_metrics({f"time_{k}": v for k, v in timings.items()})
    summary = _summary(run.info.run_id, tracking_uri, cfg, reg, metrics, extra["verdict"], timings, fitted, tuned,
                       study, len(data.features), {})
    del data, fitted, tuned, extra  # the training table: the uplift model builds its own (memory at scale)
    gc.collect()
    t1 = time.perf_counter()
    summary["uplift"] = _train_uplift(tables, cfg, model)
    _timed(timings, "uplift_s", t1)
    return summary


HEADLINE = ("test_roc_auc", "test_pr_auc", "test_log_loss", "test_brier", "test_ece", "test_lift_top10",
            "test_capture_top10", "test_best_profit", "test_emp", "baseline_xgb_default_roc_auc",
            "baseline_logistic_roc_auc", "test_base_rate", "backtest_roc_auc_mean", "backtest_roc_auc_std",
            "test_norefit_roc_auc", "survival_test_cindex_harrell", "survival_test_cindex_uno", "survival_test_ibs",
            "survival_cox_cindex_harrell", "survival_cox_ibs", "survival_km_ibs", "survival_vs_classifier_mean_abs_diff")


def _summary(run_id: str, tracking_uri: str, cfg: Config, reg: dict[str, Any], metrics: dict[str, Any], verdict: str,
             timings: dict[str, float], fitted: Fitted, tuned: Tuned, study: str, n_features: int,
             uplift: dict[str, Any]) -> dict[str, Any]:
    """The run summary `churn train` prints and writes."""
    meta, result = fitted.meta, tuned.result
    return {"run_id": run_id, "tracking_uri": tracking_uri, "experiment": cfg.mlflow.experiment, **reg,
            "metrics": {k: metrics[k] for k in HEADLINE if k in metrics}, "baseline_verdict": verdict,
            "timings_s": timings,
            "cutoffs": {"train": meta["train_cutoffs"], "valid": meta["valid_cutoffs"], "test": meta["test_cutoffs"]},
            "protocol": {k: v for k, v in fitted.protocol.items() if k != "fits"},
            "tuning": {"n_trials": result.n_trials, "n_pruned": result.n_pruned, "best_valid_auc": result.best_value,
                       "study": study, "storage": cfg.training.tuning.storage, "sample": tuned.sampling},
            "n_features": n_features, "uplift": uplift}


def _train_uplift(tables: Tables, cfg: Config, churn_model: ChurnModel) -> dict[str, Any]:
    """The uplift model from the campaign history, registered next to the churn model (training.uplift)."""
    import yaml

    from churn.config import resolve_path
    from training.uplift import train_uplift

    # the playbook ids only (training never imports inference; scoring validates the file in full)
    raw = yaml.safe_load(resolve_path(cfg.scoring.playbooks).read_text(encoding="utf-8")) or {}
    ids = [str(pb["id"]) for pb in raw.get("playbooks", []) if isinstance(pb, dict) and "id" in pb]
    return train_uplift(tables, cfg, ids, risk_model=churn_model)
