"""Training pipeline: snapshots -> out-of-time split -> Optuna -> calibration -> evaluation -> MLflow.

One function, :func:`train`, assembles the steps; the steps themselves live in ``tune``,
``evaluate``, ``model`` and ``registry``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb

from churn.config import Config
from features.build import FeatureBuilder, FeatureSet
from features.catalogue import catalogue_frame
from features.contract import Tables
from features.timeline import label_window_days, split_cutoffs, training_cutoffs
from training import evaluate as ev
from training.backtest import rolling_backtest
from training.backtest import summarize as summarize_backtest
from training.model import Calibrator, ChurnModel, ChurnPyfunc
from training.tune import fit_booster, tune

log = logging.getLogger(__name__)
PIP_REQUIREMENTS = ["xgboost-cpu>=3.1,<3.3", "pandas>=2.2,<3.2", "numpy>=1.26,<2.5", "scikit-learn>=1.6,<1.10"]


def config_hash(cfg: Config) -> str:
    dump = cfg.model_dump(exclude={"source"})
    return hashlib.sha256(json.dumps(dump, sort_keys=True, default=str).encode()).hexdigest()


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _split(fs: FeatureSet, cutoffs: list[pd.Timestamp]) -> pd.DataFrame:
    return fs.frame[fs.frame["cutoff"].isin(cutoffs)].reset_index(drop=True)


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


def train(tables: Tables, cfg: Config, data_dir: str | Path) -> dict[str, Any]:
    """Build snapshots, tune, calibrate, evaluate, log to MLflow and register. Returns the run summary."""
    from training.registry import register, setup_mlflow

    tcfg = cfg.training
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    cutoffs = training_cutoffs(tables, cfg.label, tcfg.n_cutoffs, tcfg.cutoff_frequency, tcfg.min_history_days)
    split = split_cutoffs(cutoffs, tcfg.valid_cutoffs, tcfg.test_cutoffs, label_window_days(cfg.label))
    used = split.train + split.valid + split.test
    log.info("cutoffs: train %s..%s (%d), valid %s, test %s", split.train[0].date(), split.train[-1].date(),
             len(split.train), [t.date().isoformat() for t in split.valid], [t.date().isoformat() for t in split.test])
    builder = FeatureBuilder(tables, cfg)
    fs = builder.build_many(used)
    timings["features_s"] = time.perf_counter() - t0

    specs = {s.name: s for s in fs.specs}
    features = [f for f in fs.feature_names if f not in set(tcfg.exclude_features)]
    cats = [f for f in features if specs[f].categorical]
    categories = {c: [str(x) for x in fs.frame[c].cat.categories] for c in cats}
    event_types = sorted({s.group.removesuffix("_activity") for s in fs.specs
                          if s.group.endswith("_activity") and s.name.endswith(f"_{cfg.features.trend_recent_days}d")})
    train_df, valid_df, test_df = (_split(fs, c) for c in (split.train, split.valid, split.test))
    for name, df in (("train", train_df), ("valid", valid_df), ("test", test_df)):
        if df["label"].nunique() < 2:
            from churn.errors import DataError

            raise DataError("customers", "churn_date", f"the {name} cutoffs have only one label class; "
                            "need churners and non-churners in every split (more history or a longer horizon)")
    proto = ChurnModel(xgb.Booster(), features, categories, meta={"n_threads": tcfg.n_threads})
    dtrain = xgb.DMatrix(proto.prepare(train_df), label=train_df["label"], enable_categorical=True, nthread=tcfg.n_threads)
    dvalid = xgb.DMatrix(proto.prepare(valid_df), label=valid_df["label"], enable_categorical=True, nthread=tcfg.n_threads)
    dtest = xgb.DMatrix(proto.prepare(test_df), label=test_df["label"], enable_categorical=True, nthread=tcfg.n_threads)

    tracking_uri = setup_mlflow(cfg.mlflow)
    import mlflow

    chash = config_hash(cfg)
    study_name = f"{cfg.mlflow.model_name}-{tables.input_hash[7:19]}-{chash[:8]}-seed{tcfg.seed}"
    with mlflow.start_run(run_name=f"train-{split.test[-1].date()}") as run:
        parent_id = run.info.run_id
        mlflow.set_tags({"stage": "train", "input_hash": tables.input_hash, "git_commit": git_commit(),
                         "config_hash": chash, "data_dir": str(data_dir), "optuna_study": study_name,
                         "optuna_storage": str(tcfg.tuning.storage)})

        def log_trial(rec: dict[str, Any]) -> None:
            with mlflow.start_run(run_name=f"trial-{rec['number']}", nested=True):
                mlflow.log_params({k: round(v, 6) if isinstance(v, float) else v for k, v in rec["params"].items()})
                mlflow.set_tag("state", rec["state"])
                if rec["value"] is not None:
                    mlflow.log_metrics({"valid_auc": rec["value"], "best_iteration": rec["best_iteration"] or 0})

        t1 = time.perf_counter()
        result = tune(dtrain, dvalid, tcfg.tuning, tcfg.seed, tcfg.n_threads, study_name, on_trial=log_trial)
        timings["tuning_s"] = time.perf_counter() - t1

        t1 = time.perf_counter()
        booster = fit_booster(result.best_params, dtrain, dvalid, tcfg.tuning.max_boost_rounds,
                              tcfg.tuning.early_stopping_rounds, tcfg.seed, tcfg.n_threads)
        meta = {"best_iteration": int(booster.best_iteration), "n_threads": tcfg.n_threads,
                "event_types": event_types, "label": cfg.label.model_dump(),
                "train_cutoffs": [t.date().isoformat() for t in split.train],
                "valid_cutoffs": [t.date().isoformat() for t in split.valid],
                "test_cutoffs": [t.date().isoformat() for t in split.test], "input_hash": tables.input_hash}
        model = ChurnModel(booster, features, categories, meta=meta)
        p_valid_raw = model.predict_raw(valid_df)
        model.calibrator = Calibrator.fit(tcfg.calibration, p_valid_raw, valid_df["label"].to_numpy())
        y_test = test_df["label"].to_numpy()
        p_test_raw = model.predict_raw(test_df)
        p_test = model.predict_proba(test_df)

        # baselines on the same split
        default = fit_booster({"eta": 0.3, "max_depth": 6}, dtrain, dvalid, 200, tcfg.tuning.early_stopping_rounds,
                              tcfg.seed, tcfg.n_threads)
        p_default = default.predict(dtest, iteration_range=(0, default.best_iteration + 1))
        p_logit = logistic_baseline(train_df, test_df, features, cats, tcfg.seed)
        timings["fit_eval_s"] = time.perf_counter() - t1

        metrics = {f"test_{k}": v for k, v in ev.classification_metrics(y_test, p_test).items()}
        metrics.update({f"test_uncalibrated_{k}": v for k, v in ev.classification_metrics(y_test, p_test_raw).items()
                        if k in ("log_loss", "brier", "ece")})
        metrics.update({f"valid_{k}": v for k, v in ev.classification_metrics(
            valid_df["label"].to_numpy(), model.calibrator.transform(p_valid_raw)).items() if k in ("roc_auc", "pr_auc")})
        for name, p in (("baseline_xgb_default", p_default), ("baseline_logistic", p_logit)):
            m = ev.classification_metrics(y_test, p)
            metrics.update({f"{name}_{k}": m[k] for k in ("roc_auc", "pr_auc", "log_loss")})
        lift = ev.lift_table(y_test, p_test)
        for row in lift.itertuples():
            pct = int(round(row.fraction * 100))
            metrics[f"test_lift_top{pct}"] = float(row.lift)
            metrics[f"test_capture_top{pct}"] = float(row.capture)
        econ = tcfg.economics
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

        backtest = pd.DataFrame()
        if tcfg.backtest_windows:
            t1 = time.perf_counter()
            backtest = rolling_backtest(fs.frame, used, features, categories, result.best_params,
                                        label_window_days(cfg.label), tcfg.backtest_windows, tcfg.calibration,
                                        tcfg.tuning.max_boost_rounds, tcfg.tuning.early_stopping_rounds, tcfg.seed,
                                        tcfg.n_threads)
            metrics.update(summarize_backtest(backtest))
            timings["backtest_s"] = time.perf_counter() - t1

        seg_cols = [c for c in tcfg.segment_columns if c in test_df.columns]
        seg_df = test_df.assign(p=p_test)
        segments = ev.segment_metrics(seg_df, "label", "p", seg_cols) if seg_cols else pd.DataFrame()

        # reference sample for drift monitoring: features and scores of the latest training-time snapshot
        ref = test_df[features].sample(n=min(len(test_df), 20000), random_state=tcfg.seed).sort_index()
        ref = ref.assign(churn_probability=p_test[ref.index.to_numpy()]).reset_index(drop=True)
        model.reference = ref
        imp = group_importance(model, test_df.sample(n=min(len(test_df), 3000), random_state=tcfg.seed), specs)

        mlflow.log_params({"seed": tcfg.seed, "n_features": len(features), "calibration": tcfg.calibration,
                           "label_definition": cfg.label.definition, "horizon_days": label_window_days(cfg.label),
                           "n_trials": result.n_trials, "n_pruned": result.n_pruned,
                           "best_iteration": meta["best_iteration"],
                           "train_cutoffs": ",".join(meta["train_cutoffs"]), "valid_cutoffs": ",".join(meta["valid_cutoffs"]),
                           "test_cutoffs": ",".join(meta["test_cutoffs"]), "n_train": len(train_df),
                           "n_valid": len(valid_df), "n_test": len(test_df),
                           **{f"xgb_{k}": (round(v, 6) if isinstance(v, float) else v) for k, v in result.best_params.items()}})
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v is not None and np.isfinite(v)})
        mlflow.set_tag("baseline_verdict", verdict)

        with tempfile.TemporaryDirectory() as tmp:
            d = Path(tmp)
            (d / "config.json").write_text(json.dumps(cfg.model_dump(), indent=2, default=str))
            if cfg.source and Path(cfg.source).exists():
                (d / "config.yaml").write_text(Path(cfg.source).read_text())
            cat = catalogue_frame(fs.specs)
            cat.to_csv(d / "feature_catalogue.csv", index=False)
            (d / "feature_catalogue.json").write_text(cat.to_json(orient="records", indent=2))
            data_profile(train_df, features).to_csv(d / "data_profile.csv", index=False)
            (d / "input.json").write_text(json.dumps({"input_hash": tables.input_hash,
                                                      "files": [str(f) for f in tables.files],
                                                      "git_commit": git_commit(), "config_hash": chash}, indent=2))
            lift.to_csv(d / "lift_table.csv", index=False)
            curve.to_csv(d / "profit_curve.csv", index=False)
            if not backtest.empty:
                backtest.to_csv(d / "backtest.csv", index=False)
            if not segments.empty:
                segments.to_csv(d / "segment_metrics.csv", index=False)
            imp.to_csv(d / "global_importance.csv", index=False)
            pd.DataFrame(result.trials).to_json(d / "optuna_trials.json", orient="records", indent=2)
            ev.plot_reliability(y_test, p_test, d / "reliability.png")
            ev.plot_lift(y_test, p_test, d / "lift_chart.png")
            ev.plot_pr_curve(y_test, p_test, d / "pr_curve.png")
            ev.plot_profit(curve, d / "profit_curve.png")
            _plot_importance(imp, d / "shap_importance.png")
            mlflow.log_artifacts(str(d), artifact_path="evaluation")

            model_dir = model.save(d / "churn_model")
            example = test_df[features].head(5).copy()
            for c in cats:
                example[c] = example[c].astype(str)
            from mlflow.models import infer_signature

            signature = infer_signature(example, p_test[:5])
            info = mlflow.pyfunc.log_model(name="model", python_model=ChurnPyfunc(), artifacts={"model_dir": str(model_dir)},
                                    signature=signature, input_example=example, pip_requirements=PIP_REQUIREMENTS)
        reg = register(info.model_uri, parent_id, cfg.mlflow.model_name,
                       tags={"input_hash": tables.input_hash, "test_cutoff": meta["test_cutoffs"][-1],
                             "test_roc_auc": f"{metrics['test_roc_auc']:.5f}", "run_id": parent_id})
        timings["total_s"] = time.perf_counter() - t0
        mlflow.log_metrics({f"time_{k}": v for k, v in timings.items()})

    t1 = time.perf_counter()
    uplift = _train_uplift(tables, cfg, model)
    timings["uplift_s"] = time.perf_counter() - t1
    headline = {k: metrics[k] for k in ("test_roc_auc", "test_pr_auc", "test_log_loss", "test_brier", "test_ece",
                                        "test_lift_top10", "test_capture_top10", "test_best_profit", "test_emp",
                                        "baseline_xgb_default_roc_auc", "baseline_logistic_roc_auc", "test_base_rate",
                                        "backtest_roc_auc_mean", "backtest_roc_auc_std")
                if k in metrics}
    return {"run_id": parent_id, "tracking_uri": tracking_uri, "experiment": cfg.mlflow.experiment, **reg,
            "metrics": headline, "baseline_verdict": verdict, "timings_s": timings,
            "cutoffs": {"train": meta["train_cutoffs"], "valid": meta["valid_cutoffs"], "test": meta["test_cutoffs"]},
            "tuning": {"n_trials": result.n_trials, "n_pruned": result.n_pruned, "best_valid_auc": result.best_value,
                       "study": study_name, "storage": tcfg.tuning.storage}, "n_features": len(features),
            "uplift": uplift}


def _train_uplift(tables: Tables, cfg: Config, churn_model: ChurnModel) -> dict[str, Any]:
    """The uplift model from the campaign history, registered next to the churn model (training.uplift)."""
    from churn.config import resolve_path
    from inference.playbooks import load_playbooks
    from training.uplift import train_uplift

    book = load_playbooks(resolve_path(cfg.scoring.playbooks))
    return train_uplift(tables, cfg, [p.id for p in book.playbooks], risk_model=churn_model)
