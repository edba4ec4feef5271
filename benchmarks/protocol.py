"""The training protocol on the public data sets, through the CLI only (issue 12, "Done when").

* dated data sets (``socialnet7``): ``churn train`` then ``churn score``; the out-of-time test ROC-AUC of the
  final refitted model (``test_roc_auc``) and of the tuned model without the refit (``test_norefit_roc_auc``,
  the model the project shipped before the refit), both from the same run's summary;
* snapshot data sets: the file is split 80/20 (stratified on the label, seed 0; ``telecom_bigml`` uses its own
  80 and 20 files), ``churn train`` on the 80% part (CV ROC-AUC of the tuned model, out of fold) registers a
  model, ``churn score`` scores the held-out 20% and its ROC-AUC against the held-out labels is computed here.

Every run happens in a fresh temporary working directory (its own ``mlruns/``). Records load averages.

    PYTHONPATH=. /work/main/.venv/bin/python benchmarks/protocol.py [--only telco_ibm] [--trials 10]

Writes ``benchmarks/results/protocol.json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
if not DATA.exists():
    DATA = Path("/work/shared/data")
RESULTS = ROOT / "benchmarks" / "results" / "protocol.json"

# name -> (config, data folder, customers file, label column, held-out file or None)
DATASETS: dict[str, tuple[str, str, str, str, str | None]] = {
    "socialnet7": ("socialnet7.yaml", "fightchurn_socialnet7/full", "", "", None),
    "telco_ibm": ("telco_ibm.yaml", "telco_ibm", "WA_Fn-UseC_-Telco-Customer-Churn.csv", "Churn", None),
    "bank_churn": ("bank_churn.yaml", "bank_churn_modelling", "Churn_Modelling.csv", "Exited", None),
    "bankchurners": ("bankchurners.yaml", "bankchurners_credit_card", "BankChurners.csv", "Attrition_Flag", None),
    "ecommerce_churn": ("ecommerce_churn.yaml", "ecommerce_churn_complaints", "ecommerce_churn.csv", "Churn", None),
    "telco_ibm_v11": ("telco_ibm_v11.yaml", "telco_ibm_v11_multitable", "Telco_customer_churn_demographics.csv",
                      "", None),
    "telecom_bigml": ("telecom_bigml.yaml", "telecom_churn_bigml", "churn-bigml-80.csv", "Churn",
                      "churn-bigml-20.csv"),
}


def _churn(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("churn")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-c", "from churn.cli import main; main()"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(cmd + args, cwd=cwd, capture_output=True, text=True, env=env)


def _check(res: subprocess.CompletedProcess, what: str) -> None:
    if res.returncode != 0:
        tail = [ln for ln in res.stderr.splitlines() if ln.startswith("error")] or res.stderr.splitlines()[-3:]
        raise RuntimeError(f"{what} exited {res.returncode}: {' | '.join(tail)}")


def _split_snapshot(src: Path, dst_train: Path, dst_hold: Path, file: str, label: str, held: str | None) -> None:
    """Copy the data set twice; the customers file is split 80/20, stratified on ``label`` when the file has it
    (telco_ibm_v11's label is in a joined file: a plain random 20%), or the data set's own held-out file."""
    for d in (dst_train, dst_hold):
        shutil.copytree(src, d, ignore=shutil.ignore_patterns("SOURCE.md"))
    if held is not None:
        shutil.copy(src / held, dst_hold / file)
        return
    raw = pd.read_csv(src / file, dtype=str, keep_default_na=False)
    rng = np.random.default_rng(0)
    strata = raw[label] if label in raw.columns else pd.Series(0, index=raw.index)
    hold = np.zeros(len(raw), dtype=bool)
    for idx in strata.groupby(strata).indices.values():
        hold[rng.choice(idx, size=int(round(0.2 * len(idx))), replace=False)] = True
    raw[~hold].to_csv(dst_train / file, index=False)
    raw[hold].to_csv(dst_hold / file, index=False)


def _held_out_labels(cfg_path: Path, hold: Path) -> pd.Series:
    """The held-out customers' 0/1 labels by customer id, read with the project's own loader."""
    from churn.config import load_config
    from features.contract import load_tables

    t = load_tables(hold, load_config(cfg_path))
    return pd.Series(t.snapshot_label, index=t.customers["customer_id"].astype(str))


def run_snapshot(name: str, trials: int) -> dict[str, Any]:
    cfg_name, folder, file, label, held = DATASETS[name]
    cfg_path = ROOT / "configs" / cfg_name
    with tempfile.TemporaryDirectory() as tmp:
        w = Path(tmp)
        _split_snapshot(DATA / folder, w / "train", w / "hold", file, label, held)
        t0 = time.perf_counter()
        _check(_churn(["train", "--config", str(cfg_path), "--data", "train", "--trials", str(trials),
                       "--out", "t"], w), "churn train")
        train_s = time.perf_counter() - t0
        s = json.loads((w / "t" / "summary.json").read_text())
        _check(_churn(["score", "--config", str(cfg_path), "--data", "hold", "--as-of", "2024-01-01",
                       "--out", "s"], w), "churn score")
        scores = pd.read_parquet(w / "s" / "scores.parquet")
        y = _held_out_labels(cfg_path, w / "hold").reindex(scores["customer_id"].astype(str)).to_numpy()
        return {"kind": "snapshot", "n_train": s["n_customers"], "n_held_out": len(scores),
                "cv_roc_auc": s["metrics"]["cv_roc_auc_mean"], "cv_roc_auc_std": s["metrics"]["cv_roc_auc_std"],
                "cv_logistic_roc_auc": s["metrics"].get("baseline_logistic_cv_roc_auc_mean"),
                "held_out_roc_auc": float(roc_auc_score(y, scores["churn_probability"])),
                "model_version": s["model_version"], "train_s": round(train_s, 1), "trials": trials}


def run_dated(name: str, trials: int) -> dict[str, Any]:
    cfg_name, folder, *_ = DATASETS[name]
    with tempfile.TemporaryDirectory() as tmp:
        w = Path(tmp)
        t0 = time.perf_counter()
        _check(_churn(["train", "--config", str(ROOT / "configs" / cfg_name), "--data", str(DATA / folder),
                       "--trials", str(trials), "--out", "t"], w), "churn train")
        train_s = time.perf_counter() - t0
        s = json.loads((w / "t" / "summary.json").read_text())
        _check(_churn(["score", "--config", str(ROOT / "configs" / cfg_name), "--data", str(DATA / folder),
                       "--out", "s"], w), "churn score")
        n_scored = json.loads((w / "s" / "summary.json").read_text())["n_scored"]
        m = s["metrics"]
        return {"kind": "dated", "test_roc_auc_refit": m["test_roc_auc"], "test_roc_auc_no_refit": m["test_norefit_roc_auc"],
                "baseline_logistic_roc_auc": m["baseline_logistic_roc_auc"], "cutoffs": s["cutoffs"],
                "fitted_cutoffs": s["protocol"]["fitted_cutoffs"], "calibration": s["protocol"].get("calibration_method"),
                "model_version": s["model_version"], "n_scored": n_scored, "train_s": round(train_s, 1),
                "trials": trials}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", default=None, choices=sorted(DATASETS))
    ap.add_argument("--trials", type=int, default=10)
    args = ap.parse_args(argv)
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    for name in args.only or list(DATASETS):
        before = os.getloadavg()
        try:
            res = (run_dated if DATASETS[name][0] == "socialnet7.yaml" else run_snapshot)(name, args.trials)
        except RuntimeError as exc:
            res = {"error": str(exc)}
        res["loadavg_before"], res["loadavg_after"] = [round(x, 2) for x in before], [round(x, 2) for x in os.getloadavg()]
        results[name] = res
        print(name, json.dumps(res), flush=True)
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(results, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
