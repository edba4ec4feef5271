"""Default training pipeline on every public data set in ../shared/data, through configs only.

For each data set the project's own training command runs as a subprocess, from a fresh temporary working
directory (so the relative ``mlruns/`` MLflow and Optuna stores of every run are isolated and thrown away)::

    churn train --config <absolute config> --data <data set folder> --out <tmp>/out [--trials N]

and ``<tmp>/out/summary.json`` is read back. Two kinds of validation come out of the same command:

* **out of time** (``socialnet7``, event logs with dates): Optuna-tuned XGBoost, calibrated on the validation
  cutoff and scored on the latest test cutoff (``summary["metrics"]["test_roc_auc"]``, ``test_log_loss``),
  with an untuned XGBoost and a logistic regression on the same split (their log losses are read from the
  run's MLflow store, which the summary does not carry);
* **5-fold CV** (the snapshot configs: one row per customer, its own 0/1 label, no dates): stratified
  cross-validation of XGBoost, a logistic regression and the prior (``training.snapshot.cross_validate``).

Data sets (config -> folder under ../shared/data):

    socialnet7       configs/socialnet7.yaml        fightchurn_socialnet7/full   (4.4M events; a few minutes)
    telco_ibm_v11    configs/telco_ibm_v11.yaml     telco_ibm_v11_multitable     (5 joined tables)
    telco_ibm        configs/telco_ibm.yaml         telco_ibm
    bank_churn       configs/bank_churn.yaml        bank_churn_modelling
    bankchurners     configs/bankchurners.yaml      bankchurners_credit_card
    ecommerce_churn  configs/ecommerce_churn.yaml   ecommerce_churn_complaints
    telecom_bigml    configs/telecom_bigml.yaml     telecom_churn_bigml          (does not load: no customer id)

A data set that fails to load is recorded with the command's exit code and its ``error:`` line.

    /work/venv/bin/python benchmarks/training_datasets.py                  # all, the configs' budgets
    /work/venv/bin/python benchmarks/training_datasets.py --only telco_ibm # one (merged into the JSON)
    /work/venv/bin/python benchmarks/training_datasets.py --trials 5       # Optuna budget (out-of-time runs)
    /work/venv/bin/python benchmarks/training_datasets.py --diagnostics    # + what two contract gaps cost

``--diagnostics`` also measures, in-process and NOT through configs, what two missing contract features
would change: telco_ibm with ``TotalCharges`` parsed as a number, ecommerce_churn with its duplicate rows removed.

Prints a markdown table and writes ``benchmarks/results/training_datasets.json``. The machine has few,
shared cores: every run records the 1/5/15-minute load averages before, during (sampled) and after it.
The SOURCE.md numbers in ``REFERENCE`` are the data sets' reference results, not ours.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"  # ../shared/data from the repository root (read in place, never copied)
RESULTS = ROOT / "benchmarks" / "results" / "training_datasets.json"

DATASETS: dict[str, dict[str, str]] = {
    "socialnet7": {"config": "configs/socialnet7.yaml", "data": "fightchurn_socialnet7/full"},
    "telco_ibm_v11": {"config": "configs/telco_ibm_v11.yaml", "data": "telco_ibm_v11_multitable"},
    "telco_ibm": {"config": "configs/telco_ibm.yaml", "data": "telco_ibm"},
    "bank_churn": {"config": "configs/bank_churn.yaml", "data": "bank_churn_modelling"},
    "bankchurners": {"config": "configs/bankchurners.yaml", "data": "bankchurners_credit_card"},
    "ecommerce_churn": {"config": "configs/ecommerce_churn.yaml", "data": "ecommerce_churn_complaints"},
    "telecom_bigml": {"config": "configs/telecom_bigml.yaml", "data": "telecom_churn_bigml"},
}

# Reference results copied from each data set's SOURCE.md (../shared/data/<folder>/SOURCE.md). They were
# computed by whoever prepared the data, with their own feature handling; they are NOT results of this project.
REFERENCE: dict[str, dict[str, Any]] = {
    "socialnet7": {
        "source": "../shared/data/fightchurn_socialnet7/SOURCE.md",
        "roc_auc": 0.568, "log_loss": 0.0894, "prior_log_loss": 0.0848,
        "setting": "XGBoost on per-event-type 28-day counts and their change, tenure, age, channel; "
                   "train cutoffs 2020-03-01 + 2020-04-01, test 2020-05-01 (out of time)",
    },
    "telco_ibm_v11": {
        "source": "../shared/data/telco_ibm_v11_multitable/SOURCE.md",
        "roc_auc": 0.9145, "log_loss": 0.3194, "prior_log_loss": 0.5786,
        "setting": "XGBoost 5-fold CV, ids and leak columns dropped, without Satisfaction Score "
                   "(with it: ROC-AUC 0.9933, log loss 0.0868)",
    },
    "telco_ibm": {
        "source": "../shared/data/telco_ibm/SOURCE.md",
        "roc_auc": 0.8435, "log_loss": 0.4190, "prior_log_loss": 0.5786,
        "setting": "XGBoost (300 trees, depth 4, lr 0.05), 5-fold stratified CV, customerID dropped "
                   "(published, indicative: logistic regression ROC-AUC ~0.84 on an 80/20 split)",
    },
    "bank_churn": {
        "source": "../shared/data/bank_churn_modelling/SOURCE.md",
        "roc_auc": 0.8676, "log_loss": 0.3312, "prior_log_loss": 0.5055,
        "setting": "XGBoost 5-fold CV, RowNumber/CustomerId/Surname dropped (published, indicative: ensemble "
                   "5-fold CV AUC 0.889 with 27 engineered features; random forest ~0.87)",
    },
    "bankchurners": {
        "source": "../shared/data/bankchurners_credit_card/SOURCE.md",
        "roc_auc": 0.9935, "log_loss": 0.0766, "prior_log_loss": 0.4408,
        "setting": "XGBoost 5-fold CV, CLIENTNUM and the two Naive_Bayes columns dropped",
    },
    "ecommerce_churn": {
        "source": "../shared/data/ecommerce_churn_complaints/SOURCE.md",
        "roc_auc": 0.9718, "log_loss": 0.1621, "prior_log_loss": 0.4533,
        "setting": "XGBoost 5-fold CV, CustomerID dropped, the 556 duplicate rows NOT removed (folds leak)",
    },
    "telecom_bigml": {
        "source": "../shared/data/telecom_churn_bigml/SOURCE.md",
        "roc_auc": 0.92, "log_loss": None, "prior_log_loss": None,
        "setting": "XGBoost 5-fold CV on the full MLC++ data (not only these 3,333 rows): ROC-AUC 'about 0.92'",
    },
}


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover - not available on this platform
        return None


def _churn_executable() -> list[str]:
    exe = Path(sys.executable).with_name("churn")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("churn")
    if found:
        return [found]
    return [sys.executable, "-c", "from churn.cli import main; main()"]


def _mlflow_metrics(workdir: Path, run_id: str | None) -> dict[str, float]:
    """Every metric of the training run from the isolated store ``<workdir>/mlruns/mlflow.db`` (the summary
    carries only the headline ones; the baselines' log losses are here)."""
    db = workdir / "mlruns" / "mlflow.db"
    if not run_id or not db.exists():
        return {}
    with sqlite3.connect(db) as con:
        rows = con.execute("SELECT key, value FROM latest_metrics WHERE run_uuid = ?", (run_id,)).fetchall()
    return {k: float(v) for k, v in rows}


def _error_line(stderr: str) -> str | None:
    lines = [ln for ln in stderr.splitlines() if ln.startswith("error:")]
    if not lines:
        return None
    i = stderr.splitlines().index(lines[-1])
    return "\n".join(stderr.splitlines()[i:i + 8]).rstrip()


def _constant_log_loss(rate: float | None) -> float | None:
    if rate is None or not 0 < rate < 1:
        return None
    return float(-(rate * math.log(rate) + (1 - rate) * math.log(1 - rate)))


def _out_of_time_result(summary: dict[str, Any], mlm: dict[str, float]) -> dict[str, Any]:
    m = summary["metrics"]
    return {
        "validation": f"out of time: train {','.join(summary['cutoffs']['train'])}, "
                      f"valid {','.join(summary['cutoffs']['valid'])}, test {','.join(summary['cutoffs']['test'])}",
        "validation_kind": "out-of-time",
        "roc_auc": m["test_roc_auc"], "roc_auc_std": None,
        "log_loss": m.get("test_log_loss"), "log_loss_std": None,
        "pr_auc": m.get("test_pr_auc"),
        "base_rate": m.get("test_base_rate"),
        "n_features": summary.get("n_features"),
        "baselines": {
            "logistic": {"roc_auc": m.get("baseline_logistic_roc_auc"), "log_loss": mlm.get("baseline_logistic_log_loss")},
            "xgb_default": {"roc_auc": m.get("baseline_xgb_default_roc_auc"),
                            "log_loss": mlm.get("baseline_xgb_default_log_loss")},
            # training.train has no prior baseline; a constant at the *test* base rate is an oracle floor for
            # any constant prediction (the real prior, the training churn rate, can only do worse)
            "prior": {"roc_auc": 0.5, "log_loss": None, "oracle_test_rate_log_loss": _constant_log_loss(m.get("test_base_rate"))},
        },
        "backtest_roc_auc": {"mean": m.get("backtest_roc_auc_mean"), "std": m.get("backtest_roc_auc_std")},
        "tuning": summary.get("tuning"),
        "timings_s": summary.get("timings_s"),
        "baseline_verdict": summary.get("baseline_verdict"),
        "mlflow_metrics": mlm,
    }


def _snapshot_result(summary: dict[str, Any]) -> dict[str, Any]:
    x, lr, pr = summary["xgboost"], summary["baseline_logistic"], summary["baseline_prior"]
    return {
        "validation": f"{summary['n_splits']}-fold stratified CV (snapshot, no time axis)",
        "validation_kind": "cv",
        "roc_auc": x["roc_auc_mean"], "roc_auc_std": x["roc_auc_std"],
        "log_loss": x["log_loss_mean"], "log_loss_std": x["log_loss_std"],
        "pr_auc": x["pr_auc_mean"],
        "base_rate": summary["base_rate"],
        "n_customers": summary["n_customers"],
        "n_features": summary["n_features"],
        "features": summary["features"],
        "categorical": summary["categorical"],
        "rounds": x["rounds"],
        "baselines": {
            "logistic": {"roc_auc": lr["roc_auc_mean"], "log_loss": lr["log_loss_mean"]},
            "prior": {"roc_auc": pr["roc_auc_mean"], "log_loss": pr["log_loss_mean"]},
        },
        "cv_seconds": summary.get("seconds"),
    }


def run_one(name: str, trials: int | None, timeout_s: float, keep: bool = False) -> dict[str, Any]:
    spec = DATASETS[name]
    config = (ROOT / spec["config"]).resolve()
    data = DATA / spec["data"]
    rec: dict[str, Any] = {"dataset": name, "config": spec["config"], "data": f"../shared/data/{spec['data']}",
                           "reference": REFERENCE[name]}
    workdir = Path(tempfile.mkdtemp(prefix=f"churn-bench-{name}-"))
    out = workdir / "out"
    cmd = [*_churn_executable(), "train", "--config", str(config), "--data", str(data), "--out", str(out)]
    if trials is not None:
        cmd += ["--trials", str(trials)]
    rec["command"] = " ".join(["churn", "train", "--config", spec["config"], "--data", rec["data"], "--out", "<tmp>/out"]
                              + (["--trials", str(trials)] if trials is not None else []))
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONUNBUFFERED": "1"}
    samples: list[list[float]] = []
    rec["loadavg_before"] = _loadavg()
    t0 = time.perf_counter()
    print(f"[{name}] {rec['command']}  (cwd {workdir}, load {rec['loadavg_before']})", file=sys.stderr, flush=True)
    try:
        with open(workdir / "stdout.txt", "w") as so, open(workdir / "stderr.txt", "w") as se:
            proc = subprocess.Popen(cmd, cwd=workdir, stdout=so, stderr=se, env=env)
            while True:
                try:
                    rc = proc.wait(timeout=5)
                    break
                except subprocess.TimeoutExpired:
                    if (la := _loadavg()) is not None:
                        samples.append(la)
                    if time.perf_counter() - t0 > timeout_s:
                        proc.kill()
                        proc.wait()
                        rc = -9
                        break
        rec["wall_s"] = round(time.perf_counter() - t0, 1)
        rec["loadavg_after"] = _loadavg()
        if samples:
            one = [s[0] for s in samples]
            rec["loadavg_during"] = {"samples": len(samples), "mean_1min": round(sum(one) / len(one), 2),
                                     "max_1min": round(max(one), 2)}
        else:
            rec["loadavg_during"] = None
        rec["exit_code"] = rc
        stdout = (workdir / "stdout.txt").read_text(errors="replace")
        stderr = (workdir / "stderr.txt").read_text(errors="replace")
        rec["stdout"] = stdout.strip().splitlines()[-3:]
        summary_path = out / "summary.json"
        if rc != 0 or not summary_path.exists():
            rec["status"] = "timeout" if rc == -9 else "failed"
            rec["error"] = _error_line(stderr) or "\n".join(stderr.strip().splitlines()[-15:])
            return rec
        summary = json.loads(summary_path.read_text())
        rec["status"] = "ok"
        if summary.get("mode", "").startswith("snapshot"):
            rec.update(_snapshot_result(summary))
        else:
            rec.update(_out_of_time_result(summary, _mlflow_metrics(workdir, summary.get("run_id"))))
        rec["warnings"] = sorted({ln.split(": ", 1)[-1] for ln in stderr.splitlines() if " WARNING " in ln})
        return rec
    finally:
        if keep:
            rec["workdir"] = str(workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def gap_diagnostics() -> dict[str, Any]:
    """What two data-contract gaps cost, measured in-process (NOT through a config: the configs cannot say this).

    * telco_ibm ``TotalCharges``: parsed as a number (blank " " -> missing) and added as an attribute;
    * ecommerce_churn: the rows that repeat another row apart from ``CustomerID`` removed (keep the first),
      so no row has a twin in another CV fold.

    Both use ``training.snapshot.cross_validate`` with the same settings as ``churn train``.
    """
    import numpy as np
    import pandas as pd

    from churn.config import load_config
    from features.contract import Tables, load_tables
    from training.snapshot import cross_validate

    def short(res: dict[str, Any]) -> dict[str, Any]:
        x = res["xgboost"]
        return {"roc_auc": x["roc_auc_mean"], "roc_auc_std": x["roc_auc_std"], "log_loss": x["log_loss_mean"],
                "log_loss_std": x["log_loss_std"], "logistic_roc_auc": res["baseline_logistic"]["roc_auc_mean"],
                "prior_log_loss": res["baseline_prior"]["log_loss_mean"], "n_customers": res["n_customers"],
                "n_features": res["n_features"], "seconds": res["seconds"]}

    out: dict[str, Any] = {"note": "in-process, not through configs: what the missing contract features would change"}

    cfg = load_config(ROOT / DATASETS["telco_ibm"]["config"])
    folder = DATA / DATASETS["telco_ibm"]["data"]
    tables = load_tables(folder, cfg)
    raw = pd.read_csv(folder / cfg.data.tables["customers"].file)
    assert (raw["customerID"].astype(str).to_numpy() == tables.customers["customer_id"].to_numpy()).all()
    tables.customers["TotalCharges"] = pd.to_numeric(raw["TotalCharges"].str.strip().replace("", np.nan)).to_numpy()
    tables.attributes.append("TotalCharges")
    la = _loadavg()
    out["telco_ibm_with_TotalCharges"] = {**short(cross_validate(cfg, tables, n_splits=5, seed=cfg.training.seed)),
                                          "n_missing_TotalCharges": int(tables.customers["TotalCharges"].isna().sum()),
                                          "loadavg_before": la}

    cfg = load_config(ROOT / DATASETS["ecommerce_churn"]["config"])
    folder = DATA / DATASETS["ecommerce_churn"]["data"]
    tables = load_tables(folder, cfg)
    raw = pd.read_csv(folder / cfg.data.tables["customers"].file)
    assert (raw["CustomerID"].astype(str).to_numpy() == tables.customers["customer_id"].to_numpy()).all()
    keep = ~raw.drop(columns=["CustomerID"]).duplicated(keep="first").to_numpy()
    assert tables.snapshot_label is not None
    dedup = Tables(customers=tables.customers.loc[keep].reset_index(drop=True), attributes=list(tables.attributes),
                   files=tables.files, input_hash=tables.input_hash, snapshot_label=tables.snapshot_label[keep])
    la = _loadavg()
    out["ecommerce_churn_deduplicated"] = {**short(cross_validate(cfg, dedup, n_splits=5, seed=cfg.training.seed)),
                                           "n_duplicates_removed": int((~keep).sum()), "loadavg_before": la}
    return out


def _f(v: Any, nd: int = 4) -> str:
    return "n/a" if v is None else f"{v:.{nd}f}"


def _prior(prior: dict[str, Any]) -> str:
    if prior.get("log_loss") is not None:
        return _f(prior["log_loss"])
    oracle = prior.get("oracle_test_rate_log_loss")
    return "n/a" if oracle is None else f"n/a (test-rate constant {oracle:.4f})"


def table(results: dict[str, dict[str, Any]]) -> str:
    rows = ["| data set | validation | ROC-AUC | log loss | logistic ROC-AUC / log loss | prior log loss "
            "| SOURCE.md reference ROC-AUC / log loss | features | wall s | load avg 1-min (before / mean during) |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        ref = r["reference"]
        ref_s = f"{ref['roc_auc']} / {ref['log_loss'] if ref['log_loss'] is not None else 'n/a'}"
        la_b = r.get("loadavg_before")
        la_d = r.get("loadavg_during")
        load = f"{la_b[0] if la_b else 'n/a'} / {la_d['mean_1min'] if la_d else 'n/a'}"
        if r.get("status") != "ok":
            err = (r.get("error") or "").splitlines()[0] if r.get("error") else str(r.get("status"))
            err = err.split("; columns found")[0].replace("|", "\\|")
            rows.append(f"| {name} | **{r.get('status')}** (exit {r.get('exit_code')}): `{err}` | | | | | {ref_s} | "
                        f"| {r.get('wall_s', 'n/a')} | {load} |")
            continue
        kind = "out of time (test " + r["validation"].split("test ")[-1] + ")" if r["validation_kind"] == "out-of-time" \
            else "5-fold CV"
        auc = _f(r["roc_auc"]) + (f" ± {r['roc_auc_std']:.4f}" if r.get("roc_auc_std") is not None else "")
        ll = _f(r["log_loss"]) + (f" ± {r['log_loss_std']:.4f}" if r.get("log_loss_std") is not None else "")
        lr = r["baselines"]["logistic"]
        rows.append(f"| {name} | {kind} | {auc} | {ll} | {_f(lr['roc_auc'])} / {_f(lr['log_loss'])} | "
                    f"{_prior(r['baselines']['prior'])} | {ref_s} | {r.get('n_features')} | {r['wall_s']} | {load} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", choices=list(DATASETS), action="append",
                    help="run only this data set (repeatable); its entry is merged into the existing JSON")
    ap.add_argument("--trials", type=int, default=None,
                    help="Optuna trial budget for out-of-time runs (default: the config's); snapshot CV ignores it")
    ap.add_argument("--timeout-s", type=float, default=3600.0, help="kill a run after this many seconds")
    ap.add_argument("--out", type=Path, default=RESULTS, help="result JSON")
    ap.add_argument("--keep", action="store_true", help="keep each run's temporary working directory")
    ap.add_argument("--diagnostics", action="store_true",
                    help="also measure two contract gaps in-process (telco TotalCharges as a number; ecommerce "
                         "de-duplicated); stored under 'gap_diagnostics'")
    args = ap.parse_args(argv)

    names = args.only or list(DATASETS)
    t0 = time.perf_counter()
    results: dict[str, dict[str, Any]] = {}
    for name in names:
        rec = run_one(name, args.trials, args.timeout_s, keep=args.keep)
        rec["generated_at"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        results[name] = rec
        msg = f"ROC-AUC {rec['roc_auc']:.4f}" if rec.get("status") == "ok" else rec.get("error", rec.get("status"))
        print(f"[{name}] {rec.get('status')} in {rec.get('wall_s')} s: {msg}", file=sys.stderr, flush=True)

    payload: dict[str, Any] = {}
    if args.only and args.out.exists():
        payload = json.loads(args.out.read_text())
    payload.setdefault("results", {})
    if args.diagnostics:
        sys.path.insert(0, str(ROOT))
        payload["gap_diagnostics"] = {**gap_diagnostics(), "generated_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    payload["results"].update(results)
    payload["results"] = {k: payload["results"][k] for k in DATASETS if k in payload["results"]}
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                check=False).stdout.strip() or None
    except OSError:
        commit = None
    import numpy as np
    import pandas as pd
    import xgboost

    payload.update({
        "description": "churn train (the project's default training command) on every data set in ../shared/data, "
                       "through configs only; reference numbers are copied from each SOURCE.md",
        "command": "python benchmarks/training_datasets.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "last_run_wall_s": round(time.perf_counter() - t0, 1),
        "git_commit": commit,
        "machine": {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
                    "numpy": np.__version__, "pandas": pd.__version__, "xgboost": xgboost.__version__},
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    })
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str))
    tmp.replace(args.out)
    print(table(payload["results"]))
    if args.diagnostics:
        for k, v in payload["gap_diagnostics"].items():
            if isinstance(v, dict):
                print(f"{k}: ROC-AUC {v['roc_auc']:.4f} ± {v['roc_auc_std']:.4f}, log loss {v['log_loss']:.4f}, "
                      f"n={v['n_customers']} (load before {v['loadavg_before']})")
    print(f"\nresults: {args.out}")
    return 0 if all(r.get("status") == "ok" for r in results.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
