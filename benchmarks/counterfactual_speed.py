"""Counterfactual speed and validity on a 300-tree depth-6 model: median time per alert (target <= 50 ms).

Trains a 300-tree, depth-6 XGBoost model (no early stopping) on a synthetic table shaped like the real
features (counts, recencies, changes, spend, tenure, a categorical), with a Platt calibrator, puts the
alert line at the 90th percentile of the calibrated scores and searches a counterfactual for ``--alerts``
alerted rows over 20 actionable features. Times:

  * per alert, the search alone (``CounterfactualSearch.search`` on one row: every candidate scored with
    the booster and calibrator, single moves then the beam) -- the counterfactual itself;
  * per alert, one alert per call: ``inference.counterfactual.counterfactual_columns`` on a one-row frame
    (adds pandas preparation, the confirming re-score through ``ChurnModel.predict_proba`` and the
    sentence; ``churn score`` does this part once for all alerts);
  * all alerts in one batch (as ``churn score`` runs it), divided by the number of alerts.

Validity: share of alerts whose confirmed probability is below the line; and that only actionable features
changed. Prints a markdown table and writes ``benchmarks/results/counterfactual_speed.json`` with the load
average (``os.getloadavg()``) before and after.

    PYTHONPATH=. python benchmarks/counterfactual_speed.py              # 300 alerts
    PYTHONPATH=. python benchmarks/counterfactual_speed.py --alerts 50  # quick
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd
import xgboost as xgb

from features.catalogue import FeatureSpec
from inference.counterfactual import counterfactual_columns, search_for_model
from model.artifact import Calibrator, ChurnModel

log = logging.getLogger(__name__)


def synthetic(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray, dict[str, FeatureSpec], list[str]]:
    """A feature table of 60 columns (20 actionable) and labels that depend on activity, recency and tenure."""
    rng = np.random.default_rng(seed)
    cols: dict[str, np.ndarray] = {}
    specs: dict[str, FeatureSpec] = {}
    actionable = []

    def add(name: str, values: np.ndarray, unit: str, direction: int, act: bool) -> None:
        cols[name] = values
        specs[name] = FeatureSpec(name, "behavioral", name, name.replace("_", " "), unit, risk_direction=direction)
        if act:
            actionable.append(name)

    level = rng.gamma(2.0, 6.0, n)
    for i in range(8):  # activity counts per type and window
        add(f"type{i}_30d", rng.poisson(level * (1 + i % 3) / 3), "count", -1, True)
    for i in range(4):
        add(f"type{i}_trend_30_60", np.clip(rng.normal(-0.1, 0.4, n), -1, 3), "rate_change", -1, True)
    add("days_since_last_event", rng.exponential(8, n).round(1), "days", 1, True)
    add("longest_inactive_days_90d", rng.exponential(10, n).round(), "days", 1, True)
    add("open_complaints_90d", rng.poisson(0.3, n).astype(float), "count", 1, True)
    for i in range(5):
        add(f"active_days_{7 * (i + 1)}d", np.minimum(rng.poisson(level / 2), 7 * (i + 1)).astype(float), "count", -1, True)
    for i in range(20):  # value, sentiment, profile: not actionable
        add(f"other_{i}", rng.normal(0, 1, n), "score", 0, False)
    add("tenure_days", rng.integers(10, 2000, n).astype(float), "days", -1, False)
    for i in range(19):
        add(f"spend_{i}", rng.gamma(2, 30, n), "currency", -1, False)
    frame = pd.DataFrame(cols)
    z = (-2.2 - 0.08 * frame["type0_30d"] - 0.05 * frame["type1_30d"] + 0.06 * frame["days_since_last_event"]
         - 0.8 * frame["type0_trend_30_60"] + 0.5 * frame["open_complaints_90d"] - 0.0006 * frame["tenure_days"]
         + 0.3 * frame["other_0"])
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(int)
    return frame, y, specs, actionable


def train(frame: pd.DataFrame, y: np.ndarray, trees: int, depth: int, seed: int) -> ChurnModel:
    """Booster on the first 70% of rows, Platt calibrator on the other 30%."""
    cut = int(len(frame) * 0.7)
    d = xgb.DMatrix(frame.iloc[:cut].astype(np.float32), label=y[:cut], nthread=2)
    params = {"objective": "binary:logistic", "tree_method": "hist", "max_depth": depth, "eta": 0.05,
              "subsample": 0.8, "colsample_bytree": 0.8, "seed": seed, "nthread": 2}
    booster = xgb.train(params, d, num_boost_round=trees)
    model = ChurnModel(booster, list(frame.columns), {}, meta={"n_threads": 2})
    model.calibrator = Calibrator.fit("platt", model.predict_raw(frame.iloc[cut:]), y[cut:])
    return model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=10_000)
    ap.add_argument("--trees", type=int, default=300)
    ap.add_argument("--depth", type=int, default=6)
    ap.add_argument("--alerts", type=int, default=300)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/counterfactual_speed.json"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    load_before = os.getloadavg()
    frame, y, specs, actionable = synthetic(args.rows, args.seed)
    t = time.perf_counter()
    model = train(frame, y, args.trees, args.depth, args.seed)
    train_s = time.perf_counter() - t
    p = model.predict_proba(frame)
    threshold = float(np.quantile(p, 0.9))
    alerts = frame.iloc[np.flatnonzero(p >= threshold)[: args.alerts]]
    pa = model.predict_proba(alerts)
    search = search_for_model(model, specs, actionable, threshold, frame)

    per_alert, per_alert_cpu, search_only, search_cpu = [], [], [], []
    for i in range(len(alerts)):
        row = alerts.iloc[i:i + 1]
        t, c = time.perf_counter(), time.process_time()
        counterfactual_columns(model, row, pa[i:i + 1], search, specs)
        per_alert.append(time.perf_counter() - t)
        per_alert_cpu.append(time.process_time() - c)
        x = model.prepare(row).to_numpy(dtype=np.float32)
        t, c = time.perf_counter(), time.process_time()
        search.search(x)
        search_only.append(time.perf_counter() - t)
        search_cpu.append(time.process_time() - c)
    t = time.perf_counter()
    out = counterfactual_columns(model, alerts, pa, search, specs)
    batch_s = time.perf_counter() - t
    changed = {c["feature"] for cell in out["counterfactual_changes"] for c in cell}
    res = {
        "model": {"trees": model.booster.num_boosted_rounds(), "depth": args.depth, "features": frame.shape[1],
                  "actionable": len(actionable), "train_s": round(train_s, 1)},
        "alerts": len(alerts), "threshold": round(threshold, 4),
        "median_ms_per_alert_full": round(1000 * float(np.median(per_alert)), 2),
        "p90_ms_per_alert_full": round(1000 * float(np.quantile(per_alert, 0.9)), 2),
        # CPU seconds of this process (all its threads): what the wall time would be on an idle machine, at most
        "median_cpu_ms_per_alert_full": round(1000 * float(np.median(per_alert_cpu)), 2),
        "median_ms_per_alert_search_only": round(1000 * float(np.median(search_only)), 2),
        "p90_ms_per_alert_search_only": round(1000 * float(np.quantile(search_only, 0.9)), 2),
        "median_cpu_ms_per_alert_search_only": round(1000 * float(np.median(search_cpu)), 2),
        "batch_ms_per_alert": round(1000 * batch_s / max(len(alerts), 1), 2),
        "valid_share": float(out["counterfactual_valid"].mean()),
        "non_actionable_changed": sorted(changed - set(actionable)),
        "moves_per_alert": float(np.mean([len(c) for c in out["counterfactual_changes"]])),
        "load_average_before": load_before, "load_average_after": os.getloadavg(),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "xgboost": xgb.__version__},
    }
    print("| measure | value |\n|---|---|")
    for k, v in res.items():
        print(f"| {k} | {v} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
