"""Does the final refit on every labelled month help? Tuned model vs refit, paired on the same test rows.

For each data set the Optuna study of ``churn train`` (same search space, budget and seed; in memory) is
run once on train -> validation for the latest test cutoff. With those parameters, for each of the latest
``--windows`` test cutoffs ``t`` (earlier ones roll the split back one cutoff at a time):

* ``tuned``: trained on the cutoffs before the validation cutoff, early-stopped on it (the model the
  project shipped before the refit);
* ``refit_scaled`` / ``refit_tuned``: the same parameters refitted on every cutoff labelled by ``t``
  (train + validation), rounds scaled by rows or kept (``training.refit.rounds``);
* ``logistic``: the logistic baseline on the tuned model's rows and on the refit's rows.

ROC-AUC is rank based, so Platt calibration does not change it and is left out. The difference
refit - tuned has a paired bootstrap 95% interval over the test rows (500 resamples, seed 0). No
model sees the test cutoff's rows or any label observed after ``t`` (``training.refit.embargoed_rows``).

    PYTHONPATH=. python benchmarks/refit_check.py --dataset demo --windows 4
    PYTHONPATH=. python benchmarks/refit_check.py --dataset socialnet7 --windows 1

Writes ``benchmarks/results/refit_check_<dataset>.json`` and prints a markdown table with the load average.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
SHARED = next((d for d in (ROOT.parent / "shared", ROOT.parent.parent / "shared") if d.is_dir()), ROOT.parent / "shared")
DATASETS = {"demo": ("default.yaml", None), "socialnet7": ("socialnet7.yaml", SHARED / "data" / "fightchurn_socialnet7" / "full")}


def _frame(dataset: str, tmp: Path) -> tuple[Any, Any, Any]:
    from churn.config import load_config
    from features.build import FeatureBuilder
    from features.contract import load_tables
    from features.timeline import training_cutoffs

    cfg_name, data = DATASETS[dataset]
    cfg = load_config(ROOT / "configs" / cfg_name)
    if data is None:
        from churn.generate import generate_demo, write_demo

        write_demo(generate_demo(n_customers=8000, seed=42), tmp / "demo")
        data = tmp / "demo"
    tables = load_tables(data, cfg)
    t = cfg.training
    cuts = training_cutoffs(tables, cfg.label, t.n_cutoffs, t.cutoff_frequency, t.min_history_days, explicit=t.cutoffs)
    return tables, cfg, FeatureBuilder(tables, cfg).build_many(cuts)


def _paired(y: np.ndarray, a: np.ndarray, b: np.ndarray, n_boot: int = 500) -> dict[str, float]:
    """AUC(a) - AUC(b) on the same rows, with a paired bootstrap 95% interval."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    diffs = []
    for _ in range(n_boot):
        i = rng.integers(0, y.size, y.size)
        if y[i].min() != y[i].max():
            diffs.append(roc_auc_score(y[i], a[i]) - roc_auc_score(y[i], b[i]))
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return {"diff": float(roc_auc_score(y, a) - roc_auc_score(y, b)), "low": float(lo), "high": float(hi)}


class _Window:
    """The rows of one split (train embargoed at the validation cutoff, refit rows embargoed at the test cutoff)."""

    def __init__(self, fs: Any, cuts: list[pd.Timestamp], tables: Any, cfg: Any, features: list[str]) -> None:
        import xgboost as xgb

        from features.timeline import label_window_days, split_cutoffs
        from model.artifact import ChurnModel
        from training.refit import embargoed_rows

        tc = cfg.training
        self.split = split_cutoffs(cuts, tc.valid_cutoffs, tc.test_cutoffs, label_window_days(cfg.label))
        frame = fs.frame[fs.frame["cutoff"] <= self.split.test[-1]]
        self.categories = {c: [str(x) for x in frame[c].cat.categories] for c in features
                           if isinstance(frame[c].dtype, pd.CategoricalDtype)}
        proto = ChurnModel(xgb.Booster(), features, self.categories, meta={"n_threads": tc.n_threads})
        sub = lambda cs: frame[frame["cutoff"].isin(cs)].reset_index(drop=True)  # noqa: E731
        self.valid, self.test = sub(self.split.valid), sub(self.split.test)
        self.train = embargoed_rows(frame, self.split.valid[0], tables, cfg)
        self.full = embargoed_rows(frame, self.split.test[0], tables, cfg)
        self.dm = {k: xgb.DMatrix(proto.prepare(df), label=df["label"], enable_categorical=True, nthread=tc.n_threads)
                   for k, df in (("train", self.train), ("valid", self.valid), ("test", self.test), ("full", self.full))}


def _compare(w: _Window, params: dict[str, Any], cfg: Any, features: list[str], cats: list[str]) -> dict[str, Any]:
    import xgboost as xgb
    from sklearn.metrics import roc_auc_score

    from training.refit import scaled_rounds
    from training.train import logistic_baseline
    from training.tune import BASE_PARAMS, fit_booster

    tc = cfg.training
    bst = fit_booster(params, w.dm["train"], w.dm["valid"], tc.tuning.max_boost_rounds, tc.tuning.early_stopping_rounds,
                      tc.seed, tc.n_threads)
    full = {**BASE_PARAMS, **params, "seed": tc.seed, "nthread": tc.n_threads}
    rounds = {"refit_scaled": scaled_rounds(bst.best_iteration, len(w.full), len(w.train), "scaled"),
              "refit_tuned": bst.best_iteration + 1}
    p = {"tuned": bst.predict(w.dm["test"], iteration_range=(0, bst.best_iteration + 1))}
    for k, n in rounds.items():
        p[k] = xgb.train(full, w.dm["full"], num_boost_round=n, verbose_eval=False).predict(w.dm["test"])
    p["logistic_tuned_rows"] = logistic_baseline(w.train, w.test, features, cats, tc.seed)
    p["logistic_refit_rows"] = logistic_baseline(w.full, w.test, features, cats, tc.seed)
    y = w.test["label"].to_numpy()
    return {"test_cutoff": w.split.test[0].date().isoformat(), "n_test": int(y.size), "churners": int(y.sum()),
            "train_rows": len(w.train), "refit_rows": len(w.full), "tuned_rounds": bst.best_iteration + 1,
            "refit_rounds": rounds["refit_scaled"], "refit_cutoffs": sorted({str(t.date()) for t in w.full["cutoff"]}),
            "roc_auc": {k: float(roc_auc_score(y, v)) for k, v in p.items()},
            "refit_scaled_minus_tuned": _paired(y, p["refit_scaled"], p["tuned"]),
            "refit_tuned_minus_tuned": _paired(y, p["refit_tuned"], p["tuned"])}


def run(dataset: str, windows: int, trials: int | None) -> dict[str, Any]:
    import tempfile

    from training.tune import tune

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tables, cfg, fs = _frame(dataset, Path(tmp))
    features = [f for f in fs.feature_names if f not in set(cfg.training.exclude_features)]
    specs = {s.name: s for s in fs.specs}
    cats = [f for f in features if specs[f].categorical]
    cuts = sorted(set(fs.frame["cutoff"]))
    tc = cfg.training
    latest = _Window(fs, cuts, tables, cfg, features)
    tcfg = tc.tuning.model_copy(update={"storage": None, **({"n_trials": trials} if trials else {})})
    study = tune(latest.dm["train"], latest.dm["valid"], tcfg, tc.seed, tc.n_threads, f"refit-check-{dataset}")
    rows = []
    for k in range(windows):
        w = latest if k == 0 else _Window(fs, cuts[: len(cuts) - k], tables, cfg, features)
        rows.append(_compare(w, study.best_params, cfg, features, cats))
        logging.getLogger("refit_check").info("%s: %s", rows[-1]["test_cutoff"], rows[-1]["roc_auc"])
    return {"dataset": dataset, "params": study.best_params, "n_trials": study.n_trials,
            "best_valid_auc": study.best_value, "rows": rows, "seconds": round(time.perf_counter() - t0, 1),
            "load_average": [round(x, 2) for x in os.getloadavg()]}


def _table(res: dict[str, Any]) -> str:
    out = [f"### {res['dataset']} ({res['n_trials']} trials, load average {res['load_average']})",
           "| test cutoff | churners | tuned | refit (scaled rounds) | refit (tuned rounds) | refit - tuned [95%] "
           "| logistic tuned rows | logistic refit rows | rounds tuned -> refit |", "|" + "---|" * 9]
    for r in res["rows"]:
        a, d = r["roc_auc"], r["refit_scaled_minus_tuned"]
        out.append(f"| {r['test_cutoff']} | {r['churners']} | {a['tuned']:.4f} | {a['refit_scaled']:.4f} | "
                   f"{a['refit_tuned']:.4f} | {d['diff']:+.4f} [{d['low']:+.3f}, {d['high']:+.3f}] | "
                   f"{a['logistic_tuned_rows']:.4f} | {a['logistic_refit_rows']:.4f} | "
                   f"{r['tuned_rounds']} -> {r['refit_rounds']} |")
    diffs = [r["refit_scaled_minus_tuned"]["diff"] for r in res["rows"]]
    out.append(f"\nmean refit - tuned over {len(diffs)} test cutoff(s): {np.mean(diffs):+.4f}; {res['seconds']}s")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", choices=sorted(DATASETS), default="demo")
    ap.add_argument("--windows", type=int, default=4, help="latest test cutoffs to compare on (default 4)")
    ap.add_argument("--trials", type=int, default=None, help="Optuna trials (default: the config's)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("features", "training", "churn"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    res = run(args.dataset, args.windows, args.trials)
    res["command"] = f"PYTHONPATH=. python benchmarks/refit_check.py --dataset {args.dataset} --windows {args.windows}"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"refit_check_{args.dataset}.json").write_text(json.dumps(res, indent=2) + "\n")
    sys.stdout.write(_table(res) + "\n")


if __name__ == "__main__":
    main()
