"""Benchmark: how close does the default Optuna budget get to a 10x longer study, and how fast is it?

Builds the demo data's training snapshots once, then runs the default study (configs/default.yaml
``training.tuning.n_trials``) and a study with ``--factor`` times more trials, each in memory with
the same seed, and compares validation ROC-AUC, out-of-time test ROC-AUC (calibrated) and wall time.

    python benchmarks/training_budget.py --customers 8000 --factor 10
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import xgboost as xgb

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from churn.config import load_config  # noqa: E402
from churn.generate import generate_demo, write_demo  # noqa: E402
from features.build import FeatureBuilder  # noqa: E402
from features.contract import load_tables  # noqa: E402
from features.timeline import label_window_days, split_cutoffs, training_cutoffs  # noqa: E402
from model import metrics as ev  # noqa: E402
from model.artifact import Calibrator, ChurnModel  # noqa: E402
from training.tune import fit_booster, tune  # noqa: E402

log = logging.getLogger("bench")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--customers", type=int, default=8000)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--factor", type=int, default=10)
    ap.add_argument("--config", default="configs/default.yaml")
    ap.add_argument("--out", default="benchmarks/results/training_budget.json")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    cfg = load_config(args.config)
    tcfg = cfg.training
    with tempfile.TemporaryDirectory() as tmp:
        write_demo(generate_demo(n_customers=args.customers, seed=args.seed), tmp)
        tables = load_tables(tmp, cfg.data)
        cutoffs = training_cutoffs(tables, cfg.label, tcfg.n_cutoffs, tcfg.cutoff_frequency)
        split = split_cutoffs(cutoffs, tcfg.valid_cutoffs, tcfg.test_cutoffs, label_window_days(cfg.label))
        t0 = time.perf_counter()
        fs = FeatureBuilder(tables, cfg).build_many(split.train + split.valid + split.test)
        t_features = time.perf_counter() - t0
    specs = {s.name: s for s in fs.specs}
    feats = fs.feature_names
    cats = {c: [str(x) for x in fs.frame[c].cat.categories] for c in feats if specs[c].categorical}
    parts = [fs.frame[fs.frame["cutoff"].isin(c)] for c in (split.train, split.valid, split.test)]
    proto = ChurnModel(xgb.Booster(), feats, cats)
    dtrain, dvalid = (xgb.DMatrix(proto.prepare(p), label=p["label"], enable_categorical=True) for p in parts[:2])

    rows = []
    for label, n_trials in (("default", tcfg.tuning.n_trials), (f"{args.factor}x", tcfg.tuning.n_trials * args.factor)):
        tc = tcfg.tuning.model_copy(update={"n_trials": n_trials, "timeout_s": None, "storage": None})
        t0 = time.perf_counter()
        res = tune(dtrain, dvalid, tc, tcfg.seed, tcfg.n_threads, f"bench-{label}")
        t_tune = time.perf_counter() - t0
        booster = fit_booster(res.best_params, dtrain, dvalid, tc.max_boost_rounds, tc.early_stopping_rounds,
                              tcfg.seed, tcfg.n_threads)
        model = ChurnModel(booster, feats, cats, meta={"best_iteration": booster.best_iteration})
        model.calibrator = Calibrator.fit(tcfg.calibration, model.predict_raw(parts[1]), parts[1]["label"].to_numpy())
        m = ev.classification_metrics(parts[2]["label"].to_numpy(), model.predict_proba(parts[2]))
        rows.append({"budget": label, "n_trials": n_trials, "n_pruned": res.n_pruned, "tune_seconds": round(t_tune, 1),
                     "best_valid_auc": round(res.best_value, 4), "test_roc_auc": round(m["roc_auc"], 4),
                     "test_pr_auc": round(m["pr_auc"], 4), "test_log_loss": round(m["log_loss"], 4)})
        log.info("%s", rows[-1])
    table = pd.DataFrame(rows)
    result = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "load_avg_at_end": os.getloadavg()},
              "customers": args.customers, "train_rows": len(parts[0]), "valid_rows": len(parts[1]),
              "test_rows": len(parts[2]), "features_seconds": round(t_features, 1), "rows": rows,
              "default_time_fraction": round(rows[0]["tune_seconds"] / rows[1]["tune_seconds"], 3),
              "valid_auc_gap": round(rows[1]["best_valid_auc"] - rows[0]["best_valid_auc"], 4),
              "test_auc_gap": round(rows[1]["test_roc_auc"] - rows[0]["test_roc_auc"], 4)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    cols = list(table.columns)
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for rec in table.itertuples(index=False):
        print("| " + " | ".join(str(v) for v in rec) + " |")
    print(f"default budget uses {result['default_time_fraction']:.1%} of the long study's tuning time; "
          f"validation AUC gap {result['valid_auc_gap']:+.4f}, test AUC gap {result['test_auc_gap']:+.4f}")


if __name__ == "__main__":
    main()
