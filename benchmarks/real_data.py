"""Real-data benchmark: load two public data sets *by configuration only* and compare with their reference results.

* ``socialnet7`` (``configs/socialnet7.yaml``; ChurnSim event logs, ../shared/data/fightchurn_socialnet7):
  account + subscription + 4.4M events (``--full``; default: the 0.9M-event ``small/`` folder). The loader
  maps ``event_type_id`` to names, derives signup/churn dates and payments from the subscriptions and an
  age from the date of birth. Population at a cutoff C = accounts with a subscription row covering C
  (``start <= C < end``, SOURCE.md's recipe; ``--population timeline`` uses the project's
  ``active_mask`` instead), label = churn date in (C, C + 30 days]. Features: the project's
  ``FeatureBuilder`` (profile, behavioural, value). XGBoost trained on cutoffs 2020-03-01 and 2020-04-01,
  tested out of time on 2020-05-01 (as SOURCE.md's reference); the number of rounds is chosen out of time
  (train 03-01, validate 04-01, early stopping) and the model refitted on both training cutoffs.
  Also: the same model on a reference-like feature subset (per-event-type counts in the last 28 days and
  their change against the 28 days before, tenure, age, channel), a logistic regression, and the prior
  (the training churn rate).
* ``telco`` (``configs/telco_ibm_v11.yaml``; IBM Telco v11, 5 tables, ../shared/data/telco_ibm_v11_multitable):
  customers assembled from 5 files, snapshot label ``Churn Value``, leak and id columns excluded;
  stratified 5-fold CV (``training.snapshot.cross_validate``) without and with ``Satisfaction Score``.

    /work/venv/bin/python benchmarks/real_data.py --dataset socialnet7 --full
    /work/venv/bin/python benchmarks/real_data.py --dataset socialnet7          # small/ (quick)
    /work/venv/bin/python benchmarks/real_data.py --dataset telco

Prints a markdown table (reference numbers from SOURCE.md beside ours) and writes
``benchmarks/results/real_data_<dataset>.json`` (``real_data_socialnet7_small.json`` without ``--full``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

DATA = ROOT.parent / "shared" / "data"  # ../shared/data relative to the repo root (read-only; never copied)
SOCIALNET_DIR = DATA / "fightchurn_socialnet7"
TELCO_DIR = DATA / "telco_ibm_v11_multitable"
RESULTS = ROOT / "benchmarks" / "results"

REFERENCE = {  # SOURCE.md, "computed on this data, not published"
    "socialnet7": {"roc_auc": 0.568, "log_loss": 0.0894, "prior_log_loss": 0.0848,
                   "counts": {"2020-03-01": (67, 2599), "2020-04-01": (73, 2805), "2020-05-01": (49, 3034)}},
    "telco_without_satisfaction": {"roc_auc": 0.9145, "log_loss": 0.3194, "prior_log_loss": 0.5786},
    "telco_with_satisfaction": {"roc_auc": 0.9933, "log_loss": 0.0868, "prior_log_loss": 0.5786},
}
TRAIN_CUTOFFS = [pd.Timestamp("2020-03-01"), pd.Timestamp("2020-04-01")]
TEST_CUTOFF = pd.Timestamp("2020-05-01")
SOCIALNET_PARAMS: dict[str, Any] = {"objective": "binary:logistic", "eval_metric": "logloss", "eta": 0.03,
                                    "max_depth": 3, "min_child_weight": 5, "subsample": 0.8,
                                    "colsample_bytree": 0.8, "lambda": 5.0, "max_cat_to_onehot": 8}


def _metrics(y: np.ndarray, p: np.ndarray, ci: bool = False) -> dict[str, Any]:
    from sklearn.metrics import average_precision_score, log_loss, roc_auc_score

    p = np.clip(p, 1e-7, 1 - 1e-7)
    out: dict[str, Any] = {"roc_auc": float(roc_auc_score(y, p)), "pr_auc": float(average_precision_score(y, p)),
                           "log_loss": float(log_loss(y, p, labels=[0, 1])), "n": int(len(y)),
                           "n_positive": int(y.sum())}
    if ci:  # few churners in one test cutoff: say how uncertain the AUC is
        from model.metrics import bootstrap_ci

        out["roc_auc_ci95"] = list(bootstrap_ci(y, p, roc_auc_score, n_boot=500, seed=0))
    return out


# --------------------------------------------------------------------------- socialnet7
def _xgb_out_of_time(frames: dict[pd.Timestamp, pd.DataFrame], features: list[str], n_threads: int,
                     seed: int) -> tuple[np.ndarray, int]:
    """Rounds from train 03-01 -> valid 04-01 (early stopping); refit on 03-01 + 04-01; predict 05-01."""
    import xgboost as xgb

    from training.snapshot import _dmatrix

    params = {**SOCIALNET_PARAMS, "seed": seed, "nthread": n_threads}
    a, b = (frames[t] for t in TRAIN_CUTOFFS)
    probe = xgb.train(params, _dmatrix(a, features, a["label"].to_numpy(), n_threads), num_boost_round=2000,
                      evals=[(_dmatrix(b, features, b["label"].to_numpy(), n_threads), "valid")],
                      early_stopping_rounds=100, verbose_eval=False)
    rounds = int(probe.best_iteration) + 1
    train = pd.concat([a, b], ignore_index=True)
    booster = xgb.train(params, _dmatrix(train, features, train["label"].to_numpy(), n_threads),
                        num_boost_round=rounds)
    test = frames[TEST_CUTOFF]
    return booster.predict(_dmatrix(test, features, None, n_threads)), rounds


def run_socialnet7(full: bool, population: str, data_dir: Path | None, seed: int) -> dict[str, Any]:
    from churn.config import load_config
    from features.build import FeatureBuilder, stack
    from features.contract import load_tables
    from features.derive import subscription_active_mask
    from features.timeline import active_mask
    from training.snapshot import _fit_logistic

    cfg = load_config(ROOT / "configs" / "socialnet7.yaml")
    folder = data_dir or SOCIALNET_DIR / ("full" if full else "small")
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    tables = load_tables(folder, cfg)
    timings["load_s"] = time.perf_counter() - t0

    counts: dict[str, dict[str, int]] = {}
    t = time.perf_counter()
    builder = FeatureBuilder(tables, cfg)
    frames: dict[pd.Timestamp, pd.DataFrame] = {}
    sets = []
    for c in [*TRAIN_CUTOFFS, TEST_CUTOFF]:
        cover = subscription_active_mask(tables, c)
        timeline = active_mask(tables, c, cfg.label)
        from features.timeline import labels

        y = labels(tables, c, cfg.label)
        counts[c.date().isoformat()] = {"coverage_churners": int(y[cover].sum()), "coverage_active": int(cover.sum()),
                                        "timeline_churners": int(y[timeline].sum()),
                                        "timeline_active": int(timeline.sum())}
        fs = builder.build(c, population=cover if population == "coverage" else timeline, with_labels=True)
        sets.append(fs)
    fs = stack(sets)
    for c in [*TRAIN_CUTOFFS, TEST_CUTOFF]:
        frames[c] = fs.frame[fs.frame["cutoff"] == c].reset_index(drop=True)
    timings["features_s"] = time.perf_counter() - t

    specs = {s.name: s for s in fs.specs}
    features = [f for f in fs.feature_names if f not in set(cfg.training.exclude_features)]
    cats = [f for f in features if specs[f].categorical]
    r = cfg.features.trend_recent_days
    b = cfg.features.trend_baseline_days
    reference_like = [f for f in features if specs[f].group.endswith("_activity")
                      and (f.endswith(f"_{r}d") or f.endswith(f"_trend_{r}_{b}"))] + ["tenure_days", "age", "channel"]

    t = time.perf_counter()
    test = frames[TEST_CUTOFF]
    y_test = test["label"].to_numpy()
    train = pd.concat([frames[c] for c in TRAIN_CUTOFFS], ignore_index=True)
    models: dict[str, dict[str, Any]] = {}
    p, rounds = _xgb_out_of_time(frames, features, cfg.training.n_threads, seed)
    models["xgboost_all_features"] = {**_metrics(y_test, p, ci=True), "rounds": rounds, "n_features": len(features)}
    p, rounds = _xgb_out_of_time(frames, reference_like, cfg.training.n_threads, seed)
    models["xgboost_reference_like_features"] = {**_metrics(y_test, p, ci=True), "rounds": rounds,
                                                 "n_features": len(reference_like)}
    p = _fit_logistic(train, test, features, cats, seed)
    models["logistic_all_features"] = {**_metrics(y_test, p, ci=True), "n_features": len(features)}
    models["prior"] = _metrics(y_test, np.full(len(y_test), train["label"].mean()))
    timings["models_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t0
    return {
        "dataset": "socialnet7", "data": str(folder), "folder": folder.name, "config": "configs/socialnet7.yaml",
        "population": population, "validation": "out of time: train cutoffs 2020-03-01, 2020-04-01; test 2020-05-01",
        "events": int(len(tables.events)) if tables.events is not None else 0,
        "customers": int(len(tables.customers)), "derived": tables.derived,
        "data_end": str(tables.data_end.date()), "counts": counts,
        "n_train": int(len(train)), "n_test": int(len(test)),
        "train_churn_rate": float(train["label"].mean()), "features": features,
        "reference_like_features": reference_like, "params": SOCIALNET_PARAMS, "models": models,
        "reference": REFERENCE["socialnet7"], "timings_s": {k: round(v, 2) for k, v in timings.items()},
    }


def socialnet7_table(res: dict[str, Any]) -> str:
    ref = res["reference"]
    rows = ["| model (socialnet7, test 2020-05-01) | ROC-AUC (95% bootstrap CI) | log loss | PR-AUC | features "
            "| SOURCE.md reference |", "|---|---|---|---|---|---|"]
    for name, m in res["models"].items():
        note = ""
        if name.startswith("xgboost"):
            note = f"ROC-AUC {ref['roc_auc']} / log loss {ref['log_loss']}"
        elif name == "prior":
            note = f"log loss {ref['prior_log_loss']}"
        ci = f" ({m['roc_auc_ci95'][0]:.3f}-{m['roc_auc_ci95'][1]:.3f})" if "roc_auc_ci95" in m else ""
        rows.append(f"| {name} | {m['roc_auc']:.4f}{ci} | {m['log_loss']:.4f} | {m['pr_auc']:.4f} | "
                    f"{m.get('n_features', '')} | {note} |")
    rows += ["", "| cutoff | churners / active (coverage: start <= C < end) | timeline active_mask | SOURCE.md |",
             "|---|---|---|---|"]
    for c, v in res["counts"].items():
        rc = ref["counts"][c]
        rows.append(f"| {c} | {v['coverage_churners']} / {v['coverage_active']:,} | {v['timeline_churners']} / "
                    f"{v['timeline_active']:,} | {rc[0]} / {rc[1]:,} |")
    t = res["timings_s"]
    rows += ["", f"data `{res['folder']}/` ({res['events']:,} events), population: {res['population']}; wall time "
             f"{t['total_s']:.1f}s (load {t['load_s']:.1f}s, features {t['features_s']:.1f}s, models {t['models_s']:.1f}s)"]
    return "\n".join(rows)


# --------------------------------------------------------------------------- telco
def run_telco(data_dir: Path | None, seed: int) -> dict[str, Any]:
    from churn.config import load_config
    from features.contract import load_tables
    from training.snapshot import cross_validate

    folder = data_dir or TELCO_DIR
    base = load_config(ROOT / "configs" / "telco_ibm_v11.yaml")
    out: dict[str, Any] = {"dataset": "telco", "data": str(folder), "config": "configs/telco_ibm_v11.yaml",
                           "runs": {}}
    t_all = time.perf_counter()
    for name, with_sat in (("without_satisfaction", False), ("with_satisfaction", True)):
        cust = base.data.tables["customers"]
        exclude = [c for c in cust.exclude if c != "Satisfaction Score"] if with_sat else list(cust.exclude)
        tables_cfg = {**base.data.tables, "customers": cust.model_copy(update={"exclude": exclude})}
        cfg = base.model_copy(update={"data": base.data.model_copy(update={"tables": tables_cfg})})
        t0 = time.perf_counter()
        tables = load_tables(folder, cfg)
        load_s = time.perf_counter() - t0
        res = cross_validate(cfg, tables, n_splits=5, seed=seed)
        res["load_s"] = round(load_s, 2)
        res["wall_s"] = round(time.perf_counter() - t0, 2)
        res["excluded_columns"] = exclude
        res["reference"] = REFERENCE[f"telco_{name}"]
        assert ("Satisfaction Score" in res["features"]) == with_sat
        out["runs"][name] = res
    out["wall_s"] = round(time.perf_counter() - t_all, 2)
    return out


def telco_table(res: dict[str, Any]) -> str:
    rows = ["| telco, 5-fold CV | ROC-AUC (XGBoost) | log loss | SOURCE.md ROC-AUC / log loss | logistic ROC-AUC "
            "| prior log loss | features | wall s |", "|---|---|---|---|---|---|---|---|"]
    for name, r in res["runs"].items():
        x, ref = r["xgboost"], r["reference"]
        rows.append(f"| {name.replace('_', ' ')} | {x['roc_auc_mean']:.4f} ± {x['roc_auc_std']:.4f} | "
                    f"{x['log_loss_mean']:.4f} ± {x['log_loss_std']:.4f} | {ref['roc_auc']} / {ref['log_loss']} | "
                    f"{r['baseline_logistic']['roc_auc_mean']:.4f} | {r['baseline_prior']['log_loss_mean']:.4f} | "
                    f"{r['n_features']} | {r['wall_s']:.1f} |")
    rows += ["", "No out-of-time split: the data is a single snapshot without dates (stratified 5-fold CV over customers)."]
    return "\n".join(rows)


# --------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", choices=["socialnet7", "telco"], required=True)
    ap.add_argument("--full", action="store_true", help="socialnet7: the full/ folder (4.4M events) instead of small/")
    ap.add_argument("--population", choices=["coverage", "timeline"], default="coverage",
                    help="socialnet7: who is scored at a cutoff (default: subscription covers the cutoff)")
    ap.add_argument("--data", type=Path, default=None, help="override the data folder")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--out", type=Path, default=None, help="result JSON (default: benchmarks/results/...)")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", datefmt="%H:%M:%S")
    t0 = time.perf_counter()
    if args.dataset == "socialnet7":
        res = run_socialnet7(args.full, args.population, args.data, args.seed)
        table = socialnet7_table(res)
        name = "real_data_socialnet7" + ("" if args.full or args.data else "_small")
    else:
        res = run_telco(args.data, args.seed)
        table = telco_table(res)
        name = "real_data_telco"
    res["command"] = "python benchmarks/real_data.py " + " ".join(argv if argv is not None else sys.argv[1:])
    res["wall_s_total"] = round(time.perf_counter() - t0, 2)
    res["machine"] = {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
                      "numpy": np.__version__, "pandas": pd.__version__,
                      "xgboost": __import__("xgboost").__version__}
    res["generated_at"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    out = args.out or RESULTS / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(res, indent=2, default=str))
    tmp.replace(out)
    print(table)
    print(f"\nresults: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
