"""Time-to-churn benchmark: the AFT model against Kaplan-Meier and Cox, out of time, on the demo and a public set.

For each data set: the project's snapshots (``training_cutoffs`` + ``FeatureBuilder``), then
``training.survival.fit_and_evaluate`` exactly as ``churn train`` runs it (tuning on the cutoff before the
evaluation cutoff, targets censored at the next split's start, evaluation at the latest cutoff whose
follow-up covers the longest horizon). Prints a markdown table (Harrell's C, Uno's C, integrated Brier
score) and writes ``benchmarks/results/survival_<dataset>.json`` with the load average.

    python benchmarks/survival.py --dataset demo                # 4,000 generated customers, seed 42
    python benchmarks/survival.py --dataset socialnet7 --full   # ../shared/data/fightchurn_socialnet7/full
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
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results"


def _load(dataset: str, full: bool, tmp: Path) -> tuple[Any, Any]:
    from churn.config import load_config
    from features.contract import load_tables

    if dataset == "demo":
        from churn.generate import generate_demo, write_demo

        write_demo(generate_demo(n_customers=4000, seed=42), tmp)
        cfg = load_config(ROOT / "configs" / "default.yaml")
        return cfg, load_tables(tmp, cfg.data)
    cfg = load_config(ROOT / "configs" / "socialnet7.yaml")
    folder = DATA / "fightchurn_socialnet7" / ("full" if full else "small")
    return cfg, load_tables(folder, cfg)


def run(dataset: str, full: bool, horizons: list[int] | None) -> dict[str, Any]:
    import xgboost as xgb

    from features.build import FeatureBuilder
    from features.timeline import training_cutoffs
    from model.artifact import ChurnModel
    from training.survival import fit_and_evaluate

    with tempfile.TemporaryDirectory() as tmp:
        cfg, tables = _load(dataset, full, Path(tmp))
        t = cfg.training
        scfg = t.survival.model_copy(update={"horizons_days": horizons}) if horizons else t.survival
        cutoffs = training_cutoffs(tables, cfg.label, t.n_cutoffs, t.cutoff_frequency, t.min_history_days)
        t0 = time.perf_counter()
        fs = FeatureBuilder(tables, cfg).build_many(cutoffs)
        features_s = time.perf_counter() - t0
        specs = {s.name: s for s in fs.specs}
        feats = [f for f in fs.feature_names if f not in set(t.exclude_features)]
        cats = {c: [str(x) for x in fs.frame[c].cat.categories] for c in feats if specs[c].categorical}
        proto = ChurnModel(xgb.Booster(), feats, cats, meta={"n_threads": t.n_threads})
        t0 = time.perf_counter()
        _, _, metrics, calib = fit_and_evaluate(fs.frame, tables, cfg.label, cutoffs, proto.prepare, scfg,
                                                t.seed, t.n_threads)
        fit_s = time.perf_counter() - t0
    return {"dataset": dataset + ("_full" if full else ""), "n_rows": len(fs.frame),
            "cutoffs": [c.date().isoformat() for c in cutoffs], "horizons_days": scfg.horizons_days,
            "metrics": metrics, "calibration": calib.to_dict("records"), "features_s": features_s,
            "survival_s": fit_s, "load_average": os.getloadavg(), "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "command": " ".join(["python", "benchmarks/survival.py", *sys.argv[1:]])}


def table(r: dict[str, Any]) -> str:
    m = r["metrics"]
    rows = [("XGBoost AFT (this project)", m["survival_test_cindex_harrell"], m["survival_test_cindex_uno"],
             m["survival_test_ibs"]),
            ("Cox (ridge, scikit-survival)", m["survival_cox_cindex_harrell"], m["survival_cox_cindex_uno"],
             m["survival_cox_ibs"]),
            ("Kaplan-Meier (one curve)", 0.5, 0.5, m["survival_km_ibs"])]
    lines = [f"{r['dataset']}: {r['n_rows']:,} snapshot rows, evaluated on {int(m['survival_n_test']):,} customers "
             f"(event rate {m['survival_test_event_rate']:.3f}, follow-up {m['survival_eval_horizon_days']:.0f} days)",
             "", "| model | Harrell's C | Uno's C | integrated Brier |", "|---|---|---|---|"]
    lines += [f"| {n} | {a:.4f} | {b:.4f} | {c:.4f} |" for n, a, b, c in rows]
    lines += ["", "| horizon | predicted churn | Kaplan-Meier observed |", "|---|---|---|"]
    lines += [f"| {c['horizon_days']} d | {c['predicted']:.4f} | {c['observed_km']:.4f} |" if c["note"] == "" else
              f"| {c['horizon_days']} d | {c['note']} | |" for c in r["calibration"]]
    lines.append(f"\nload average {tuple(round(x, 2) for x in r['load_average'])}, survival fit {r['survival_s']:.1f} s")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", choices=["demo", "socialnet7"], default="demo")
    ap.add_argument("--full", action="store_true", help="socialnet7: the full event log")
    ap.add_argument("--horizons", type=int, nargs="*", help="override training.survival.horizons_days")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    result = run(args.dataset, args.full, args.horizons)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"survival_{result['dataset']}.json").write_text(json.dumps(result, indent=2, default=str))
    print(table(result))


if __name__ == "__main__":
    main()
