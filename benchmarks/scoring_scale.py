"""Scoring at scale: 1M customers scored, the riskiest 10% explained, FastTreeShap against exact TreeSHAP.

Builds (or reuses, cached in ``--workdir``) a synthetic feature table shaped like the real one
(1,000,000 customers x 60 features: counts, rates, changes, currency, recencies with NaNs, three
categoricals) and a 300-tree depth-6 XGBoost model trained on a 200k sample with ~5% churners.
Then times each stage in a fresh subprocess (peak RSS from ``resource.getrusage`` in the child):

  a. score all rows in chunks of 200k (``Booster.inplace_predict`` on the pandas chunk);
  b. explain the top 10% by score with ``model.fast_shap.FastTreeShap`` (chunks of 50k, as
     ``inference/score.py`` does), plus the one-off table build;
  c. ``shap.TreeExplainer(booster).shap_values`` on the same rows, or, if a pilot predicts more
     than ``--exact-budget-s``, on a ``--exact-rows`` subset with the full time extrapolated
     (and said so); XGBoost ``pred_contribs`` on that subset;
  d. agreement of fast vs exact on the subset: max |difference|, top-3 features, and the reasons
     ``inference.explain`` would show (top-3 risk-raising groups, most protective group).

Prints a markdown table and writes ``benchmarks/results/scoring_scale.json``.

    python benchmarks/scoring_scale.py                      # full run (data + model cached in out/scoring_scale)
    python benchmarks/scoring_scale.py --rows 100000 --train-rows 20000 --trees 50   # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

# As in inference/__init__.py: OpenMP threads (XGBoost's, and numba's "omp" layer) wait passively, so a
# loaded machine does not turn their spinning into seconds of lost time. Set before those libraries load;
# the stage subprocesses inherit it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CATEGORICALS = {
    "plan": ["basic", "standard", "plus", "premium", "family", "business"],
    "region": [f"region_{i:02d}" for i in range(12)],
    "acquisition_channel": ["organic", "paid_search", "social", "referral", "partner"],
}


# ------------------------------------------------------------------------------------------ data
def _numeric_specs() -> list[tuple[str, str, str]]:
    """(name, kind, group) for the 57 numeric features; groups drive the reasons, as in the catalogue."""
    specs: list[tuple[str, str, str]] = []
    for base in ("logins", "sessions", "orders", "page_views", "support_tickets"):
        for w in (7, 30, 90):
            specs.append((f"{base}_{w}d", "count", base))
        specs.append((f"{base}_trend_30_90", "change", base))
    for i in range(8):
        specs.append((f"feature_{i}_uses_30d", "count", "product_usage"))
    specs.append(("late_payments_90d", "count", "payments"))
    for name in ("email_open_rate", "email_click_rate", "share_mobile", "share_weekend", "discount_share",
                 "refund_rate", "failed_payment_rate", "promo_response_rate"):
        specs.append((name, "rate", name.rsplit("_", 1)[0]))
    for name in ("monthly_revenue", "lifetime_value", "avg_basket", "revenue_90d", "credit_balance"):
        specs.append((name, "currency", "value"))
    specs.append(("avg_session_minutes", "currency", "sessions"))
    for name in ("days_since_login", "days_since_order", "days_since_ticket", "days_since_upgrade",
                 "days_since_payment_issue"):
        specs.append((name, "recency", name.replace("days_since_", "recency_")))
    for name in ("nps_score", "review_score", "sentiment_30d", "sentiment_90d"):
        specs.append((name, "score", "sentiment"))
    for name in ("tenure_days", "contract_months_left", "seats", "devices", "price_change_pct"):
        specs.append((name, "profile", name))
    assert len(specs) == 57, len(specs)
    return specs


def build_table(n: int, seed: int):
    """Feature table (pandas, float32 numerics + 3 categoricals) and a churn label with ~5% positives."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    engage = rng.normal(size=n).astype(np.float32)  # latent engagement: drives counts and churn
    value = rng.normal(size=n).astype(np.float32)  # latent spend
    friction = rng.gamma(1.0, 1.0, size=n).astype(np.float32)  # latent friction: tickets, failed payments
    cols: dict[str, np.ndarray] = {}
    for name, kind, _ in _numeric_specs():
        if kind == "count":
            w = int(name.rsplit("_", 1)[1][:-1])
            rate = np.exp(0.6 * engage + rng.normal(0, 0.5, n)) * (w / 7.0) * (0.1 if "ticket" in name or "payment" in name else 0.8)
            if "ticket" in name or "payment" in name:
                rate *= 1 + friction
            x = rng.poisson(rate).astype(np.float32)
        elif kind == "change":
            x = (0.35 * engage + rng.normal(0, 0.4, n)).astype(np.float32)
        elif kind == "rate":
            a = np.exp(0.4 * engage) * 2
            x = rng.beta(a, 4.0).astype(np.float32)
            if name == "failed_payment_rate":
                x = np.clip(x * 0.3 * friction, 0, 1).astype(np.float32)
        elif kind == "currency":
            x = np.exp(3.5 + 0.8 * value + rng.normal(0, 0.6, n)).astype(np.float32)
        elif kind == "recency":
            x = rng.exponential(10 * np.exp(-0.5 * engage)).astype(np.float32)
        elif kind == "score":
            x = np.clip(0.3 * engage - 0.2 * friction + rng.normal(0, 0.5, n), -1, 1).astype(np.float32)
        else:
            x = {"tenure_days": lambda: rng.gamma(2.0, 300, n), "contract_months_left": lambda: rng.integers(0, 24, n),
                 "seats": lambda: rng.geometric(0.4, n), "devices": lambda: rng.poisson(2.5, n),
                 "price_change_pct": lambda: rng.choice([0, 0, 0, 0.05, 0.1, -0.1], n)}[name]().astype(np.float32)
        miss = {"recency": 0.15, "score": 0.55, "rate": 0.08}.get(kind, 0.02)
        if name in ("days_since_ticket", "days_since_payment_issue", "nps_score"):
            miss = 0.7
        x[rng.random(n) < miss] = np.nan
        cols[name] = x
    df = pd.DataFrame(cols)
    for col, levels in CATEGORICALS.items():
        p = rng.dirichlet(np.ones(len(levels)) * 2)
        codes = rng.choice(len(levels), n, p=p)
        codes[rng.random(n) < 0.01] = -1
        df[col] = pd.Categorical.from_codes(codes, categories=levels)

    def nz(c: str) -> np.ndarray:
        return np.nan_to_num(df[c].to_numpy(dtype=np.float64), nan=0.0)

    plan = df["plan"].cat.codes.to_numpy()
    logit = (-1.1 * engage - 0.4 * value + 0.5 * friction + 2.5 * nz("failed_payment_rate")
             - 0.6 * np.log1p(nz("logins_30d")) + 0.03 * np.minimum(nz("days_since_login"), 60)
             - 0.5 * nz("logins_trend_30_90") * (nz("support_tickets_90d") > 1) + 0.4 * (nz("contract_months_left") < 2)
             + 3.0 * nz("price_change_pct") + np.where(np.isin(plan, [0, 4]), 0.4, 0.0) - 0.4 * nz("nps_score")
             + 0.3 * (df["acquisition_channel"] == "paid_search").to_numpy())
    lo, hi = -20.0, 10.0
    for _ in range(60):  # intercept for a 5% positive rate
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if (1 / (1 + np.exp(-(logit + mid)))).mean() < 0.05 else (lo, mid)
    y = (rng.random(n) < 1 / (1 + np.exp(-(logit + lo)))).astype(np.int8)
    return df, y


def feature_groups(columns: list[str]) -> dict[str, str]:
    groups = {name: group for name, _, group in _numeric_specs()}
    groups.update({c: c for c in CATEGORICALS})
    return {c: groups[c] for c in columns}


def _train_sample(args: argparse.Namespace) -> np.ndarray:
    rng = np.random.default_rng(args.seed + 1)
    return np.sort(rng.choice(args.rows, size=min(args.train_rows, args.rows), replace=False))


def prepare(args: argparse.Namespace) -> dict:
    """Create (or reuse) the table and the model in the workdir."""
    import xgboost as xgb

    wd = Path(args.workdir)
    wd.mkdir(parents=True, exist_ok=True)
    key = {"rows": args.rows, "train_rows": args.train_rows, "trees": args.trees, "depth": args.depth,
           "seed": args.seed, "version": 1}
    meta_path = wd / "meta.json"
    if meta_path.exists() and json.loads(meta_path.read_text()).get("key") == key and not args.rebuild:
        meta = json.loads(meta_path.read_text())
        meta["reused"] = True
        return meta
    t = time.perf_counter()
    df, y = build_table(args.rows, args.seed)
    df.to_parquet(wd / "features.parquet", index=False)
    np.save(wd / "labels.npy", y)
    gen_s = time.perf_counter() - t
    sample = _train_sample(args)
    params = {"objective": "binary:logistic", "eval_metric": "auc", "max_depth": args.depth, "eta": 0.05,
              "subsample": 0.8, "colsample_bytree": 0.8, "min_child_weight": 5, "tree_method": "hist",
              "max_cat_to_onehot": 4, "nthread": args.threads, "seed": args.seed}
    t = time.perf_counter()
    dtrain = xgb.DMatrix(df.iloc[sample], label=y[sample], enable_categorical=True, nthread=args.threads)
    booster = xgb.train(params, dtrain, num_boost_round=args.trees)
    train_s = time.perf_counter() - t
    booster.save_model(wd / "model.json")
    meta = {"key": key, "generate_s": round(gen_s, 2), "train_s": round(train_s, 2),
            "positive_rate": float(y.mean()), "train_positive_rate": float(y[sample].mean()),
            "n_features": int(df.shape[1]), "categoricals": list(CATEGORICALS), "params": params,
            "missing_share": float(df.select_dtypes("number").isna().to_numpy().mean())}
    meta_path.write_text(json.dumps(meta, indent=2))
    meta["reused"] = False
    return meta


# ------------------------------------------------------------------------------------------ stages (children)
def _load(wd: Path):
    import pandas as pd
    import xgboost as xgb

    t = time.perf_counter()
    df = pd.read_parquet(wd / "features.parquet")
    booster = xgb.Booster()
    booster.load_model(wd / "model.json")
    return df, booster, time.perf_counter() - t


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # KiB on Linux


def _explain_rows(wd: Path, args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray]:
    """Rows to explain (top fraction by score) and the fixed subset compared with exact TreeSHAP."""
    top = np.load(wd / "top_rows.npy")
    rng = np.random.default_rng(args.seed + 2)
    subset = np.sort(rng.choice(len(top), size=min(args.exact_rows, len(top)), replace=False))
    return top, subset


def stage_score(args: argparse.Namespace) -> dict:
    wd = Path(args.workdir)
    df, booster, load_s = _load(wd)
    booster.set_param({"nthread": args.threads})
    n = len(df)
    p = np.empty(n, dtype=np.float32)
    t = time.perf_counter()
    for start in range(0, n, args.chunk):
        sl = slice(start, min(n, start + args.chunk))
        p[sl] = booster.inplace_predict(df.iloc[sl])
    secs = time.perf_counter() - t
    k = int(round(args.explain_frac * n))
    top = np.sort(np.argsort(-p, kind="stable")[:k])
    np.save(wd / "scores.npy", p)
    np.save(wd / "top_rows.npy", top)
    from sklearn.metrics import roc_auc_score

    y = np.load(wd / "labels.npy")
    held_out = np.ones(n, dtype=bool)
    held_out[_train_sample(args)] = False
    auc = float(roc_auc_score(y[held_out], p[held_out]))
    return {"stage": f"a. score all customers (inplace_predict, chunks of {args.chunk:,})", "rows": n,
            "seconds": secs, "load_s": load_s, "peak_rss_gb": _peak_rss_gb(), "alert_threshold": float(p[top].min()),
            "auc_rows_not_trained_on": auc}


def stage_fast(args: argparse.Namespace) -> dict:
    from model.fast_shap import FastTreeShap

    wd = Path(args.workdir)
    df, booster, load_s = _load(wd)
    top, subset = _explain_rows(wd, args)
    t = time.perf_counter()
    explainer = FastTreeShap(booster, list(df.columns), n_threads=args.threads)
    init_s = time.perf_counter() - t
    explainer.shap_values(explainer.to_matrix(df.iloc[top[:64]]))  # compiled kernels load from numba's cache
    warm_s = time.perf_counter() - t - init_s
    t = time.perf_counter()
    parts = []
    for start in range(0, len(top), 50_000):  # as inference/score.py: chunks of 50k alerted rows
        parts.append(explainer.shap_values(df.iloc[top[start:start + 50_000]]))
    secs = time.perf_counter() - t
    contrib = np.vstack(parts)
    np.save(wd / "contrib_fast_subset.npy", contrib[subset])
    import xgboost as xgb

    margin = booster.predict(xgb.DMatrix(df.iloc[top[subset]], enable_categorical=True, nthread=args.threads),
                             output_margin=True)
    return {"stage": f"b. explain top {args.explain_frac:.0%} with FastTreeShap", "rows": len(top),
            "seconds": secs, "init_s": init_s, "first_call_s": warm_s, "load_s": load_s,
            "table_mb": explainer.table_bytes / 1e6, "peak_rss_gb": _peak_rss_gb(),
            "max_abs_sum_minus_margin": float(np.abs(contrib[subset].sum(axis=1) - margin).max())}


def stage_shap(args: argparse.Namespace) -> dict:
    import shap
    import xgboost as xgb

    wd = Path(args.workdir)
    df, booster, load_s = _load(wd)
    booster.set_param({"nthread": args.threads})
    top, subset = _explain_rows(wd, args)
    explainer = shap.TreeExplainer(booster)  # path-dependent: XGBoost's pred_contribs underneath
    pilot = top[: args.pilot_rows]
    t = time.perf_counter()
    explainer.shap_values(xgb.DMatrix(df.iloc[pilot], enable_categorical=True, nthread=args.threads))
    pilot_rate = len(pilot) / (time.perf_counter() - t)
    predicted_full = len(top) / pilot_rate
    full = predicted_full <= args.exact_budget_s
    rows = top if full else top[subset]
    t = time.perf_counter()
    sv = explainer.shap_values(xgb.DMatrix(df.iloc[rows], enable_categorical=True, nthread=args.threads))
    secs = time.perf_counter() - t
    np.save(wd / "contrib_shap_subset.npy", sv[subset] if full else sv)
    out = {"stage": "c. shap.TreeExplainer(booster)" + ("" if full else " on a subset"), "rows": len(rows),
           "seconds": secs, "load_s": load_s, "peak_rss_gb": _peak_rss_gb(), "pilot_rows_per_s": pilot_rate,
           "ran_all_rows": bool(full), "expected_value": float(np.ravel(explainer.expected_value)[0])}
    if not full:
        out[f"extrapolated_seconds_for_{len(top)}_rows"] = len(top) * secs / len(rows)
    return out


def stage_xgb(args: argparse.Namespace) -> dict:
    import xgboost as xgb

    wd = Path(args.workdir)
    df, booster, load_s = _load(wd)
    booster.set_param({"nthread": args.threads})
    top, subset = _explain_rows(wd, args)
    rows = top[subset]
    t = time.perf_counter()
    contrib = booster.predict(xgb.DMatrix(df.iloc[rows], enable_categorical=True, nthread=args.threads),
                              pred_contribs=True)
    secs = time.perf_counter() - t
    np.save(wd / "contrib_xgb_subset.npy", contrib)
    out = {"stage": "c'. XGBoost pred_contribs on the subset", "rows": len(rows), "seconds": secs,
           "load_s": load_s, "peak_rss_gb": _peak_rss_gb()}
    if len(rows) < len(top):
        out[f"extrapolated_seconds_for_{len(top)}_rows"] = len(top) * secs / len(rows)
    return out


def stage_pair(args: argparse.Namespace) -> dict:
    """Side by side in one process, interleaved, on the same rows: robust to load drifting between stages."""
    import shap
    import xgboost as xgb

    from model.fast_shap import FastTreeShap

    wd = Path(args.workdir)
    df, booster, _ = _load(wd)
    booster.set_param({"nthread": args.threads})
    top, subset = _explain_rows(wd, args)
    rows = df.iloc[top[subset[: args.pair_rows]]]
    fast = FastTreeShap(booster, list(df.columns), n_threads=args.threads)
    exact = shap.TreeExplainer(booster)
    fast.shap_values(rows.iloc[:64])
    rates: dict[str, list[float]] = {"fast": [], "shap": []}
    for _ in range(args.pair_reps):
        t = time.perf_counter()
        fast.shap_values(rows)
        rates["fast"].append(len(rows) / (time.perf_counter() - t))
        t = time.perf_counter()
        exact.shap_values(xgb.DMatrix(rows, enable_categorical=True, nthread=args.threads))
        rates["shap"].append(len(rows) / (time.perf_counter() - t))
    med = {k: float(np.median(v)) for k, v in rates.items()}
    return {"stage": f"e. side by side, interleaved x{args.pair_reps} (FastTreeShap / shap.TreeExplainer)",
            "rows": len(rows), "fast_rows_per_s": rates["fast"], "shap_rows_per_s": rates["shap"],
            "median_speedup": med["fast"] / med["shap"], "peak_rss_gb": _peak_rss_gb()}


def stage_agree(args: argparse.Namespace) -> dict:
    import pandas as pd

    from features.catalogue import FeatureSpec
    from inference.explain import group_impacts

    wd = Path(args.workdir)
    columns = list(pd.read_parquet(wd / "features.parquet", columns=None).columns)
    fast = np.load(wd / "contrib_fast_subset.npy")
    exact = np.load(wd / "contrib_xgb_subset.npy")
    shap_sv = np.load(wd / "contrib_shap_subset.npy")
    groups = feature_groups(columns)
    specs = {c: FeatureSpec(name=c, family="behavioral", group=groups[c], description=c, unit="count",
                            categorical=c in CATEGORICALS) for c in columns}
    p = 1 / (1 + np.exp(-exact.sum(axis=1)))

    def reasons(contrib: np.ndarray, top_k: int = 3, min_impact: float = 0.001) -> tuple[list, np.ndarray]:
        gi = group_impacts(contrib, columns, specs, p)  # the same arithmetic as inference.explain.explain_rows
        order = np.argsort(-gi.impact, axis=1, kind="stable")[:, :top_k]
        raise_ = [tuple(int(j) for j in row if gi.impact[i, j] >= min_impact) for i, row in enumerate(order)]
        prot = np.where(gi.impact.min(axis=1) <= -min_impact, np.argmin(gi.impact, axis=1), -1)
        return raise_, prot

    top3 = lambda c: np.argsort(-c[:, : len(columns)], axis=1, kind="stable")[:, :3]  # noqa: E731
    r_f, p_f = reasons(fast)
    r_e, p_e = reasons(exact)
    return {"stage": "d. agreement on the subset", "rows": len(fast),
            "max_abs_diff_vs_pred_contribs": float(np.abs(fast - exact).max()),
            "max_abs_diff_vs_shap": float(np.abs(fast[:, :-1] - shap_sv).max()),
            "top3_features_identical": float((top3(fast) == top3(exact)).all(axis=1).mean()),
            "top3_features_identical_vs_shap": float((top3(fast) == top3(shap_sv)).all(axis=1).mean()),
            "top3_reason_groups_identical": float(np.mean([a == b for a, b in zip(r_f, r_e, strict=True)])),
            "protective_group_identical": float((p_f == p_e).mean()), "peak_rss_gb": _peak_rss_gb()}


STAGES = {"score": stage_score, "fast": stage_fast, "shap": stage_shap, "xgb": stage_xgb, "agree": stage_agree,
          "pair": stage_pair}


# ------------------------------------------------------------------------------------------ driver
def _run_child(stage: str, argv: list[str]) -> dict:
    la0 = os.getloadavg()[0]
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--stage", stage, *argv],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"stage {stage} failed ({proc.returncode})")
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    res = json.loads(line[len("RESULT "):])
    res["load_avg_1m"] = [round(la0, 2), round(os.getloadavg()[0], 2)]
    return res


def _fmt_rows(results: list[dict]) -> str:
    lines = ["| stage | rows | seconds | rows/s | peak RSS GB |", "|---|---:|---:|---:|---:|"]
    for r in results:
        if r["stage"].startswith(("d.", "e.")):
            continue
        rate = r["rows"] / r["seconds"] if r["seconds"] > 0 else float("inf")
        lines.append(f"| {r['stage']} | {r['rows']:,} | {r['seconds']:.1f} | {rate:,.0f} | {r['peak_rss_gb']:.2f} |")
        for k, v in r.items():
            if k.startswith("extrapolated_seconds"):
                n = int(k.rsplit("_", 2)[-2])
                lines.append(f"| {r['stage'].split('.')[0]}. extrapolated to {n:,} rows (not run) | {n:,} | "
                             f"{v:.0f} | {rate:,.0f} | - |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", default=str(ROOT / "out" / "scoring_scale"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "scoring_scale.json"))
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--train-rows", type=int, default=200_000)
    ap.add_argument("--trees", type=int, default=300)
    ap.add_argument("--depth", type=int, default=6)
    ap.add_argument("--chunk", type=int, default=200_000)
    ap.add_argument("--explain-frac", type=float, default=0.10)
    ap.add_argument("--exact-rows", type=int, default=5_000, help="subset for exact TreeSHAP and the agreement check")
    ap.add_argument("--exact-budget-s", type=float, default=600.0,
                    help="run shap.TreeExplainer on all explained rows only if a pilot predicts less than this")
    ap.add_argument("--pilot-rows", type=int, default=300)
    ap.add_argument("--pair-rows", type=int, default=2_000, help="rows for the interleaved side-by-side timing")
    ap.add_argument("--pair-reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rebuild", action="store_true", help="regenerate the table and retrain the model")
    ap.add_argument("--prepare-only", action="store_true", help="build/reuse the table and model, time nothing")
    ap.add_argument("--stage", choices=sorted(STAGES), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.stage:  # child process: one stage, result as the last stdout line
        import numba

        numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
        print("RESULT " + json.dumps(STAGES[args.stage](args)), flush=True)
        return

    child_argv = [a for a in (argv if argv is not None else sys.argv[1:]) if a not in ("--rebuild", "--prepare-only")]
    load_start = os.getloadavg()
    t0 = time.perf_counter()
    print(f"load average at start: {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f} "
          f"on {os.cpu_count()} CPUs", flush=True)
    meta = prepare(args)
    print(f"data+model: {'reused' if meta['reused'] else 'built'} in {args.workdir} "
          f"(generate {meta['generate_s']} s, train {meta['train_s']} s, positives {meta['positive_rate']:.3%})",
          flush=True)
    if args.prepare_only:
        return
    results = []
    for stage in ("score", "fast", "shap", "xgb", "agree", "pair"):
        res = _run_child(stage, child_argv)
        results.append(res)
        print(f"  {res['stage']}: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                              for k, v in res.items() if k != "stage"), flush=True)
    score, fast, shp, xgbr, agree, pair = results
    fast_rate = fast["rows"] / fast["seconds"]
    shap_rate = shp["rows"] / shp["seconds"]
    xgb_rate = xgbr["rows"] / xgbr["seconds"]
    pipeline_s = score["seconds"] + fast["init_s"] + fast["seconds"]
    summary = {
        "score_plus_explain_seconds": pipeline_s,
        "score_plus_explain_with_loading_seconds": pipeline_s + score["load_s"],
        "target_under_600s_met": pipeline_s + score["load_s"] < 600,
        "speedup_vs_shap_per_row": fast_rate / shap_rate,
        "speedup_vs_pred_contribs_per_row": fast_rate / xgb_rate,
        "speedup_vs_shap_side_by_side_median": pair["median_speedup"],
        "target_3x_met": min(fast_rate / shap_rate, pair["median_speedup"]) >= 3,
        "top3_agreement": agree["top3_reason_groups_identical"],
    }
    load_end = os.getloadavg()
    table = _fmt_rows(results)
    print()
    print(table)
    print()
    print(f"score everyone + explain top {args.explain_frac:.0%}: {pipeline_s:.1f} s "
          f"({pipeline_s + score['load_s']:.1f} s with reading the table; target < 600 s: "
          f"{'met' if summary['target_under_600s_met'] else 'NOT met'})")
    print(f"FastTreeShap {fast_rate:,.0f} rows/s vs shap.TreeExplainer {shap_rate:,.0f} rows/s: "
          f"{summary['speedup_vs_shap_per_row']:.1f}x (target >= 3x: {'met' if summary['target_3x_met'] else 'NOT met'}); "
          f"vs pred_contribs {summary['speedup_vs_pred_contribs_per_row']:.1f}x")
    print(f"agreement on {agree['rows']:,} rows: max |fast - pred_contribs| {agree['max_abs_diff_vs_pred_contribs']:.2e}, "
          f"top-3 features {agree['top3_features_identical']:.2%}, top-3 reason groups "
          f"{agree['top3_reason_groups_identical']:.2%}, protective group {agree['protective_group_identical']:.2%}")
    print(f"side by side on {pair['rows']:,} rows, interleaved: FastTreeShap "
          f"{', '.join(f'{x:,.0f}' for x in pair['fast_rows_per_s'])} rows/s, shap.TreeExplainer "
          f"{', '.join(f'{x:,.0f}' for x in pair['shap_rows_per_s'])} rows/s: median {pair['median_speedup']:.1f}x")
    if not shp["ran_all_rows"]:
        print(f"note: shap.TreeExplainer ran on {shp['rows']:,} of {fast['rows']:,} rows (a pilot predicted "
              f"{fast['rows'] / shp['pilot_rows_per_s']:.0f} s for all); its full time is extrapolated")
    print(f"load average at end: {load_end[0]:.2f} {load_end[1]:.2f} {load_end[2]:.2f}")

    import numba
    import pandas as pd
    import shap
    import xgboost as xgb

    report = {
        "benchmark": "scoring_scale", "generated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "wall_seconds": time.perf_counter() - t0,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "processor": platform.processor()},
        "versions": {"xgboost": xgb.__version__, "shap": shap.__version__, "numba": numba.__version__,
                     "numpy": np.__version__, "pandas": pd.__version__},
        "load_average": {"start": list(load_start), "end": list(load_end)},
        "config": {k: v for k, v in vars(args).items() if k not in ("stage", "rebuild")},
        "data_model": meta, "stages": results, "summary": summary, "markdown": table,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=float) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
