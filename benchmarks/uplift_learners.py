"""Benchmark: out-of-time Qini of each uplift learner on the demo's campaign history (issue 17).

Simulates the default demo (``simulate_demo``), builds the campaign data set the pipeline trains on
(:func:`training.uplift.campaign_dataset`: features at each campaign's cutoff, outcome after the contact) and
runs the pipeline's own out-of-time evaluation (:func:`training.uplift.evaluate_out_of_time`: fit on the
earlier campaigns, rank the latest ``test_campaigns``) for each learner, with the configured regularisation
and bagging. No churn model is trained (the risk ranking's Qini is in ``uplift_policy.py``), so this is quick
enough to repeat over seeds.

    python benchmarks/uplift_learners.py --seeds 42 7 --learners shift t x s r
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import yaml  # noqa: E402

from churn.config import load_config, resolve_path  # noqa: E402
from churn.generate import simulate_demo, write_demo  # noqa: E402
from features.contract import load_tables  # noqa: E402
from features.timeline import label_window_days  # noqa: E402
from training.uplift import campaign_dataset, evaluate_out_of_time  # noqa: E402

log = logging.getLogger("bench")


def run_seed(seed: int, customers: int, learners: list[str], config: str) -> list[dict[str, Any]]:
    """One demo world: the out-of-time Qini (and its bootstrap SE) of every learner on the same split."""
    cfg = load_config(config)
    ucfg = cfg.training.uplift
    book = yaml.safe_load(resolve_path(cfg.scoring.playbooks).read_text(encoding="utf-8"))
    ids = [str(pb["id"]) for pb in book["playbooks"]]  # in the file's order, as churn train passes them
    with tempfile.TemporaryDirectory() as tmp:
        tables_raw, _ = simulate_demo(n_customers=customers, seed=seed)
        write_demo(tables_raw, Path(tmp) / "data")
        tables = load_tables(Path(tmp) / "data", cfg)
        built = campaign_dataset(tables, cfg, ids, tables.data_end)
    if built is None:
        raise SystemExit("the demo has no campaign history")
    data, features, categories = built
    rows = []
    for learner in learners:
        t0 = time.perf_counter()
        ev, _ = evaluate_out_of_time(data, features, categories, ids, ucfg, cfg.training.seed,
                                     cfg.training.n_threads, label_window_days(cfg.label), None, learner)
        rec = ev.set_index("policy").loc["uplift"]
        rows.append({"seed": seed, "learner": learner, "qini": round(float(rec["qini"]), 5),
                     "qini_se": round(float(rec["qini_se"]), 5), "uplift_at_10": round(float(rec["uplift_at_10"]), 4),
                     "uplift_at_30": round(float(rec["uplift_at_30"]), 4), "n_train": int(rec["n_train"]),
                     "n_test": int(rec["n_test"]), "n_contacts": len(data), "seconds": round(time.perf_counter() - t0, 1)})
        log.warning("seed %d %s: %s", seed, learner, rows[-1])
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--customers", type=int, default=8000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[42, 7])
    ap.add_argument("--learners", nargs="+", default=["shift", "t", "x", "s", "r"])
    ap.add_argument("--config", default="configs/default.yaml")
    ap.add_argument("--out", default="benchmarks/results/uplift_learners.json")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    rows = [r for seed in args.seeds for r in run_seed(seed, args.customers, args.learners, args.config)]
    print("| seed | learner | Qini | SE | uplift@10 | uplift@30 | train / test contacts | s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['seed']} | {r['learner']} | {r['qini']:+.4f} | {r['qini_se']:.4f} | {r['uplift_at_10']:+.3f} "
              f"| {r['uplift_at_30']:+.3f} | {r['n_train']} / {r['n_test']} | {r['seconds']} |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"customers": args.customers, "rows": rows, "load_average": os.getloadavg()}, indent=2))


if __name__ == "__main__":
    main()
