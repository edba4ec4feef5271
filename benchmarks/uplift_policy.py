"""Benchmark: true incremental value of uplift-based allocation against risk-ranked targeting (issue 17).

On the default demo (``simulate_demo``) with the ground truth the pipeline never reads
(``data/_truth/treatment_effects.parquet``, read here only): train (churn + uplift model), score, then for
the customers the allocation chose from (every scored customer: scoring.contact_pool), compare at the SAME
spend (the uplift policy's selected contacts):

* ``allocation``: the pipeline's choice (allocation by expected incremental value over every eligible
  playbook; effects from the uplift model when its out-of-time gate passes, else the priors: see
  ``effects_source`` in the result);
* ``risk``: highest churn probability first, rule-routed playbook;
* ``var_per_cost``: highest value at risk (probability x lifetime value) per unit cost, rule-routed.

True incremental value retained = sum over contacts of (-true_effect x lifetime value) - contact costs.
Also: the top 10 % of each ranking (``top10pct``; :data:`TOP10_DEFINITION`), with its sleeping dogs (true
effect > 0) and mean true effect, the out-of-time Qini of the uplift model with its bootstrap SE (from
training) and the time the uplift model adds to training and scoring.

    python benchmarks/uplift_policy.py --customers 8000 --trials 25
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

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from churn.config import load_config, resolve_path  # noqa: E402
from churn.generate import TRUTH_FILE, simulate_demo, write_demo  # noqa: E402
from features.contract import load_tables  # noqa: E402
from inference.allocate import ranked_policy  # noqa: E402
from inference.playbooks import load_playbooks  # noqa: E402
from inference.score import score  # noqa: E402
from training.train import train  # noqa: E402

log = logging.getLogger("bench")


def _true_value(alerts: pd.DataFrame, truth: pd.DataFrame, playbook: np.ndarray, contacted: np.ndarray,
                cost: np.ndarray) -> dict[str, Any]:
    key = pd.MultiIndex.from_arrays([alerts["customer_id"].astype(str).to_numpy(), playbook])
    te = truth.set_index(["customer_id", "playbook_id"])["true_effect"].reindex(key).to_numpy()
    clv = np.maximum(alerts["lifetime_value"].to_numpy(dtype=float), 0.0)
    c = contacted & ~np.isnan(te)
    retained = float((-te[c] * clv[c]).sum())
    return {"contacted": int(c.sum()), "spent": round(float(cost[c].sum()), 2),
            "true_value_retained": round(retained, 2), "true_net_value": round(retained - float(cost[c].sum()), 2),
            "sleeping_dogs_contacted": int((te[c] > 0).sum()), "mean_true_effect": float(np.nanmean(te[c]))
            if c.any() else float("nan"),
            # spread over the contacted customers: the standard error of their mean true effect
            "se_mean_true_effect": float(np.std(te[c], ddof=1) / np.sqrt(c.sum())) if c.sum() > 1 else float("nan"),
            "missing_truth": int((contacted & np.isnan(te)).sum())}


def candidate_pool(scores: pd.DataFrame, alerts: pd.DataFrame, pool: str) -> pd.DataFrame:
    """The customers the allocation chose from, with its choice: every scored customer (``contact_pool``
    "scored"; those not in the alert files were not selected and carry no reasons) or the alerts."""
    if pool == "alerts":
        return alerts.reset_index(drop=True)
    rest = scores[~scores["customer_id"].isin(set(alerts["customer_id"]))].reset_index(drop=True)
    for col in ("reason_families", "reason_groups", "early_warnings"):
        rest[col] = [[] for _ in range(len(rest))]
    rest = rest.assign(selected=False, control_group=False, expected_net_value=np.nan, playbook_cost=0.0,
                       playbook_id="none")
    keep = [c for c in alerts.columns if c in rest.columns]
    return pd.concat([alerts[keep], rest[keep]], ignore_index=True)


TOP10_DEFINITION = (
    "the same number of customers (10% of the contact pool) from each ranking: risk = highest churn probability, "
    "rule-routed playbook; uplift = most negative estimated effect of the customer's best eligible playbook (the "
    "registered uplift model's mean + pessimism_z x sd, as scoring decides), with that playbook; uplift_mean = the "
    "same at the replicates' mean (z = 0); allocation_order = "
    "highest expected net value among the alert files' rows, with the chosen playbook (customers outside them last)")


def best_estimated_option(pool: pd.DataFrame, cfg: Any, book: Any,
                          frame: pd.DataFrame, z: float | None = None) -> pd.DataFrame:
    """Per pool row (index aligned): the eligible playbook with the most negative estimated effect, as scoring
    estimates it (the registered uplift model at ``z`` sd, default the configured pessimism, else the priors),
    its effect and cost, and the best option's expected value."""
    from inference.allocate import option_values
    from model.uplift import estimate_effects

    if z is not None:
        up = cfg.training.uplift.model_copy(update={"pessimism_z": z})
        cfg = cfg.model_copy(update={"training": cfg.training.model_copy(update={"uplift": up})})
    effects, _ = estimate_effects(cfg, cfg.scoring.model_alias, frame)
    if effects is not None:
        effects = effects.set_axis(frame["customer_id"].astype(str)).reindex(pool["customer_id"].astype(str))
        effects = effects.set_axis(pool.index)
    opts = option_values(pool, book, cfg.training.economics, effects, cfg.training.uplift.effect_weight)
    first = opts.sort_values(["row", "effect"], kind="stable").drop_duplicates("row")
    out = first.set_index("row").reindex(np.arange(len(pool)))
    best_value = opts.groupby("row")["value"].max().reindex(np.arange(len(pool)))
    return pd.DataFrame({"playbook_id": out["playbook_id"].to_numpy(dtype=object),
                         "effect": out["effect"].fillna(np.inf).to_numpy(dtype=float),
                         "cost": out["cost"].fillna(0.0).to_numpy(dtype=float),
                         "best_value": best_value.fillna(-np.inf).to_numpy(dtype=float)}, index=pool.index)


def run(customers: int, seed: int, trials: int | None, config: str) -> dict[str, Any]:
    cfg = load_config(config)
    if trials is not None:
        tuning = cfg.training.tuning.model_copy(update={"n_trials": trials})
        cfg = cfg.model_copy(update={"training": cfg.training.model_copy(update={"tuning": tuning})})
    book = load_playbooks(resolve_path(cfg.scoring.playbooks))
    econ = cfg.training.economics
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)  # a fresh MLflow store (mlruns/) for this run
        tables_raw, truth = simulate_demo(n_customers=customers, seed=seed)
        write_demo(tables_raw, Path(tmp) / "data", truth=truth)
        tables = load_tables(Path(tmp) / "data", cfg)
        t0 = time.perf_counter()
        trained = train(tables, cfg, Path(tmp) / "data")
        t_train = time.perf_counter() - t0
        as_of = (tables.data_end + pd.Timedelta(days=1)).normalize()
        t0 = time.perf_counter()
        summary = score(tables, cfg, as_of, Path(tmp) / "scoring", log_to_mlflow=False)
        t_score = time.perf_counter() - t0
        alerts = pd.read_parquet(Path(tmp) / "scoring" / "alerts.parquet")
        scores = pd.read_parquet(Path(tmp) / "scoring" / "scores.parquet")
        pool = candidate_pool(scores, alerts, cfg.scoring.contact_pool)
        from features.build import FeatureBuilder

        frame = FeatureBuilder(tables, cfg).build(as_of).frame  # the scored features, for the effects
        best = best_estimated_option(pool, cfg, book, frame)  # while the MLflow store exists
        best_mean = best_estimated_option(pool, cfg, book, frame, z=0.0)
        truth = pd.read_parquet(Path(tmp) / "data" / TRUTH_FILE)  # the benchmark, not the pipeline, reads it
    sel = pool["selected"].to_numpy(dtype=bool)
    spend = float(pool.loc[sel, "playbook_cost"].sum())
    policies = {"allocation": _true_value(pool, truth, pool["playbook_id"].to_numpy(dtype=object), sel,
                                      pool["playbook_cost"].to_numpy(dtype=float))}
    risk = ranked_policy(pool, book, econ, spend, pool["churn_probability"].to_numpy(dtype=float))
    var = pool["value_at_risk"].to_numpy(dtype=float) / np.maximum(risk["cost"].to_numpy(), 1e-9)
    per_cost = ranked_policy(pool, book, econ, spend, var)
    for name, pol in (("risk", risk), ("var_per_cost", per_cost)):
        policies[name] = _true_value(pool, truth, pol["playbook_id"].to_numpy(dtype=object),
                                     pol["contacted"].to_numpy(), pol["cost"].to_numpy())
    best_baseline = max(policies["risk"]["true_net_value"], policies["var_per_cost"]["true_net_value"])
    mine = policies["allocation"]["true_net_value"]
    top = max(1, int(round(0.10 * len(pool))))
    risk_top = np.zeros(len(pool), dtype=bool)
    risk_top[np.argsort(-pool["churn_probability"].to_numpy(), kind="stable")[:top]] = True
    uplift_top = np.zeros(len(pool), dtype=bool)
    uplift_top[np.argsort(best["effect"].to_numpy(), kind="stable")[:top]] = True
    mean_top = np.zeros(len(pool), dtype=bool)
    mean_top[np.argsort(best_mean["effect"].to_numpy(), kind="stable")[:top]] = True
    alloc_top = np.zeros(len(pool), dtype=bool)
    alloc_top[np.argsort(-pool["expected_net_value"].fillna(-np.inf).to_numpy(), kind="stable")[:top]] = True
    by_tier = {str(t): int(n) for t, n in pool.loc[sel & ~pool["control_group"].to_numpy(dtype=bool),
                                                   "value_tier"].value_counts().sort_index().items()}
    up = trained.get("uplift", {})
    return {
        "customers": customers, "seed": seed, "n_alerts": len(alerts), "n_pool": len(pool),
        "contact_pool": cfg.scoring.contact_pool, "spend": round(spend, 2), "contacted_by_value_tier": by_tier,
        # customers whose best eligible option is worth more than nothing (the allocation's own estimates)
        "positive_option_by_value_tier": {str(t): int(n) for t, n in pool.loc[best["best_value"].to_numpy() > 0,
                                                                             "value_tier"].value_counts().sort_index().items()},
        "n_selected": int(sel.sum()), "n_control": int(pool["control_group"].sum()),
        "budget": cfg.scoring.budget, "policies": policies,
        "effects_source": (summary.get("decisions") or {}).get("effects_source"),
        # a relative gain only means something over a baseline that retains value; else report the difference
        "allocation_vs_best_baseline": (mine - best_baseline) / best_baseline if best_baseline > 0 else None,
        "allocation_minus_best_baseline": mine - best_baseline,
        "top10pct": {"definition": TOP10_DEFINITION, "n": top,
                     "risk": _true_value(pool, truth, risk["playbook_id"].to_numpy(dtype=object), risk_top,
                                         risk["cost"].to_numpy()),
                     "uplift": _true_value(pool, truth, best["playbook_id"].to_numpy(dtype=object), uplift_top,
                                           best["cost"].to_numpy()),
                     "uplift_mean": _true_value(pool, truth, best_mean["playbook_id"].to_numpy(dtype=object),
                                                mean_top, best_mean["cost"].to_numpy()),
                     "allocation_order": _true_value(pool, truth, pool["playbook_id"].to_numpy(dtype=object),
                                                     alloc_top, pool["playbook_cost"].to_numpy(dtype=float))},
        "uplift_model": {k: up.get(k) for k in ("status", "learner", "n_contacts", "metrics", "evaluation",
                                                 "calibration", "seconds", "use_for_decisions", "gate")},
        "decisions": summary.get("decisions"),
        "timings_s": {"train_total": round(t_train, 1), "train_uplift": trained.get("timings_s", {}).get("uplift_s"),
                      "score_total": round(t_score, 2),
                      "score_uplift": (summary.get("decisions") or {}).get("uplift_s")},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--customers", type=int, default=8000)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--trials", type=int, default=None, help="Optuna trials (default: the config's)")
    ap.add_argument("--config", default="configs/default.yaml")
    ap.add_argument("--out", default="benchmarks/results/uplift_policy.json")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    config, out = str(Path(args.config).resolve()), Path(args.out).resolve()
    cwd = os.getcwd()
    try:
        res = run(args.customers, args.seed, args.trials, config)
    finally:
        os.chdir(cwd)
    res["load_average"] = os.getloadavg()
    res["machine"] = {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()}
    print("| policy | contacted | spent | true value retained | true net value | sleeping dogs |")
    print("|---|---|---|---|---|---|")
    for name, p in res["policies"].items():
        print(f"| {name} | {p['contacted']} | {p['spent']} | {p['true_value_retained']} | {p['true_net_value']} "
              f"| {p['sleeping_dogs_contacted']} |")
    print(json.dumps({k: res[k] for k in ("effects_source", "allocation_vs_best_baseline", "allocation_minus_best_baseline", "top10pct", "timings_s", "load_average")},
                     indent=1, default=str))
    print("uplift model:", json.dumps(res["uplift_model"].get("metrics"), indent=1))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2, default=str))


if __name__ == "__main__":
    main()
