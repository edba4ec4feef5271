"""Is the label-free performance estimate (CBPE, ``inference.estimate``) right? A rolling backtest.

For every monthly cutoff ``T`` with enough history before it, a model is trained on the cutoffs whose
label windows end before the validation cutoff (month starts, plus the first day with enough history;
a month whose previous month is shorter than the label horizon, e.g. March after February with a 30-day
horizon, has no clean validation cutoff and is skipped), calibrated (isotonic) on the cutoff just before ``T``
(``training.backtest.fit_window``, the production backtest step) and scores ``T``. The estimate is
computed from those probabilities alone, as ``churn score`` does; the realised value comes from the
labels of ``(T, T + horizon]``. Metrics: ROC-AUC, precision of the alerts (probability >= the config's
``alert_min_tier`` threshold) and churners among them.

    python benchmarks/performance_estimate.py --dataset demo         # generate_demo(8000, seed 42), 12 months
    python benchmarks/performance_estimate.py --dataset socialnet7   # ../shared/data/fightchurn_socialnet7/full

Prints a markdown table with the load average and writes ``benchmarks/results/performance_estimate_<dataset>.json``.
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

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
# ../shared/data from the repository root (or from a worktree one level deeper)
SOCIALNET_DIR = next((d for d in (ROOT.parent / "shared", ROOT.parent.parent / "shared") if d.is_dir()),
                     ROOT.parent / "shared") / "data" / "fightchurn_socialnet7" / "full"
PARAMS: dict[str, Any] = {"objective": "binary:logistic", "eval_metric": "logloss", "eta": 0.05, "max_depth": 3,
                          "min_child_weight": 10, "subsample": 0.8, "colsample_bytree": 0.8, "lambda": 5.0}
log = logging.getLogger("performance_estimate")


def _load(dataset: str, tmp: Path, customers: int = 8000) -> tuple[Any, Any, str]:
    from churn.config import load_config
    from features.contract import load_tables

    if dataset == "demo":
        from churn.generate import generate_demo, write_demo

        cfg = load_config(ROOT / "configs" / "default.yaml")
        write_demo(generate_demo(n_customers=customers, seed=42), tmp / "demo")
        return load_tables(tmp / "demo", cfg), cfg, f"generate_demo(n_customers={customers}, seed=42)"
    cfg = load_config(ROOT / "configs" / "socialnet7.yaml")
    # 28 days of history before the first cutoff (config: 60) so that two months can be tested out of time
    cfg = cfg.model_copy(update={"training": cfg.training.model_copy(update={"min_history_days": 28})})
    return load_tables(SOCIALNET_DIR, cfg), cfg, str(SOCIALNET_DIR)


def _realised(y: np.ndarray, p: np.ndarray, alert: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import roc_auc_score

    return {"roc_auc": float(roc_auc_score(y, p)), "precision_at_alert": float(y[alert].mean()) if alert.any()
            else float("nan"), "churners_in_alerts": float(y[alert].sum())}


def realised_auc_interval(y: np.ndarray, p: np.ndarray, n_boot: int = 500, level: float = 0.95,
                          seed: int = 0) -> tuple[float, float]:
    """Bootstrap interval of the realised ROC-AUC (customers resampled with replacement): its sampling error."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_boot):
        i = rng.integers(0, y.size, y.size)
        if y[i].min() != y[i].max():
            draws.append(roc_auc_score(y[i], p[i]))
    lo, hi = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def calibration_check(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """Calibration on the monitored month: expected vs realised churners, and the calibration slope.

    The slope is the coefficient of a logistic regression of the outcomes on logit(p): 1 when the
    probabilities are as spread as the outcomes, below 1 when they are over-confident (too spread),
    which is what makes the label-free ROC-AUC estimate optimistic.
    """
    from sklearn.linear_model import LogisticRegression

    z = np.log(np.clip(p, 1e-6, 1 - 1e-6) / (1 - np.clip(p, 1e-6, 1 - 1e-6))).reshape(-1, 1)
    slope = float(LogisticRegression(C=1e6).fit(z, y).coef_[0, 0])
    return {"expected_churners": float(p.sum()), "calibration_slope": slope}


def _row(test_cutoff: pd.Timestamp, y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, Any]:
    from inference.estimate import estimate_performance

    alert = p >= threshold
    est = estimate_performance(p, alert, n_draws=500, level=0.9, seed=0)
    real = _realised(y, p, alert)
    row: dict[str, Any] = {"cutoff": test_cutoff.date().isoformat(), "n": int(y.size), "churners": int(y.sum()),
                           "n_alerts": int(alert.sum())}
    for key in ("roc_auc", "precision_at_alert", "churners_in_alerts"):
        cell = est[key]
        row[f"{key}_est"], row[f"{key}_low"], row[f"{key}_high"] = cell["estimate"], cell["low"], cell["high"]
        row[f"{key}_real"] = real[key]
    row["auc_error"] = row["roc_auc_est"] - row["roc_auc_real"]
    row["roc_auc_real_ci95"] = realised_auc_interval(y, p)
    row["est_in_real_ci95"] = bool(row["roc_auc_real_ci95"][0] <= row["roc_auc_est"] <= row["roc_auc_real_ci95"][1])
    row.update(calibration_check(y, p))
    row["auc_in_interval"] = bool(row["roc_auc_low"] <= row["roc_auc_real"] <= row["roc_auc_high"])
    return row


VARIANTS = ("raw", "full", "pretest", "shrunk")


def recal_variants(rec: Any) -> dict[str, Any]:
    """The recalibrations measured side by side: none (raw CBPE), the fitted pair (full), the fitted pair only when
    its 90% bootstrap interval excludes slope 1 (pretest), shrunk towards 1 by the window's noise (shrunk: what
    ``churn score`` applies, :class:`model.recalibration.Recalibration`)."""
    from dataclasses import replace

    lo, hi = np.quantile([d[0] for d in rec.draws], [0.05, 0.95])
    full = replace(rec, shrink=False)
    return {"raw": None, "full": full, "pretest": None if lo <= 1 <= hi else full, "shrunk": rec}


def product_row(model: Any, window: tuple[pd.Timestamp, np.ndarray, np.ndarray], target: pd.DataFrame,
                threshold: float) -> dict[str, Any]:
    """The product's situation: a model whose out-of-time test window ``window`` (cutoff, labels, probabilities) is
    labelled scores a later month ``target``; CBPE raw and recalibrated on that window, against the realised value."""
    from inference.estimate import auc_standard_error, estimate_performance
    from model.recalibration import fit_recalibration

    c0, y0, p0 = window
    y, p = target["label"].to_numpy(), model.predict_proba(target)
    rec = fit_recalibration(p0, y0, source=c0.date().isoformat(), n_boot=200, seed=0)
    row = _row(pd.Timestamp(target["cutoff"].iloc[0]), y, p, threshold)
    row.update({"model_test_cutoff": rec.source, "window_slope": rec.slope, "window_intercept": rec.intercept,
                "realised_se_hanley_mcneil": auc_standard_error(row["roc_auc_real"], int(y.sum()),
                                                                int(y.size - y.sum()))})
    lo, hi = row["roc_auc_real_ci95"]
    for name, r in recal_variants(rec).items():
        est = estimate_performance(p, p >= threshold, n_draws=500, level=0.9, seed=0, recalibration=r)
        cell = est["roc_auc"]
        row[name] = {"estimate": cell["estimate"], "low": cell["low"], "high": cell["high"],
                     "error": cell["estimate"] - row["roc_auc_real"], "applied": r is not None,
                     "slope": None if r is None else r.effective()[0],
                     "est_in_real_ci95": bool(lo <= cell["estimate"] <= hi),
                     "real_in_interval": bool(cell["low"] <= row["roc_auc_real"] <= cell["high"]),
                     "expected_churners": (est["expected_churn_rate_recalibrated"] or est["expected_churn_rate"])
                     * row["n"]}
    return row


def variant_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per variant: max and mean |error|, months within 0.03, estimate inside the realised 95% CI, coverage."""
    from scipy.stats import norm

    se = np.array([r["realised_se_hanley_mcneil"] for r in rows])
    out: dict[str, Any] = {
        "rms_realised_se": float(np.sqrt(np.mean(se**2))) if rows else None,
        # if an estimate equalled the true expected AUC every month, the chance that every realised value
        # still lands within 0.03 of it (normal approximation with the realised SEs)
        "p_all_within_0.03_if_exact": float(np.prod(2 * norm.cdf(0.03 / se) - 1)) if rows else None}
    for name in VARIANTS:
        err = np.abs([r[name]["error"] for r in rows])
        out[name] = {"max_abs_error": float(err.max()) if rows else None,
                     "mean_abs_error": float(err.mean()) if rows else None,
                     "rmse": float(np.sqrt(np.mean(err**2))) if rows else None,
                     "within_0.03": int((err <= 0.03).sum()), "months": len(rows),
                     "est_in_real_ci95": int(sum(r[name]["est_in_real_ci95"] for r in rows)),
                     "interval_coverage": float(np.mean([r[name]["real_in_interval"] for r in rows])) if rows else None}
    return out


def refit_window(fs: Any, upto: list[pd.Timestamp], tables: Any, cfg: Any, features: list[str],
                 categories: dict[str, list[str]]) -> tuple[Any, pd.Timestamp, pd.DataFrame, dict[str, Any]] | None:
    """The shipped protocol (``training.refit``): rounds early-stopped on train -> validation, refitted on every
    cutoff labelled by the test cutoff, calibrated on cross-fitted out-of-time predictions of the latest
    labelled cutoffs (no calibration month was used to pick the rounds of the model that predicts it)."""
    import xgboost as xgb

    from features.timeline import label_window_days, split_cutoffs
    from model.artifact import ChurnModel
    from training.refit import Refitter, embargoed_rows, evaluated_model
    from training.tune import fit_booster

    try:
        split = split_cutoffs(sorted(upto), 1, 1, label_window_days(cfg.label))
    except ValueError:
        return None
    frame = fs.frame[fs.frame["cutoff"] <= split.test[0]]
    train = embargoed_rows(frame, split.valid[0], tables, cfg)
    valid, test = (frame[frame["cutoff"].isin(c)].reset_index(drop=True) for c in (split.valid, split.test))
    if train.empty or any(p["label"].nunique() < 2 for p in (train, valid, test)):
        return None
    tc = cfg.training
    proto = ChurnModel(xgb.Booster(), features, categories, meta={"n_threads": tc.n_threads})
    dm = [xgb.DMatrix(proto.prepare(p), label=p["label"], enable_categorical=True, nthread=tc.n_threads)
          for p in (train, valid)]
    params = {k: v for k, v in PARAMS.items() if k not in ("objective", "eval_metric")}
    bst = fit_booster(params, dm[0], dm[1], 400, 40, tc.seed, tc.n_threads)
    refitter = Refitter(params, int(bst.best_iteration), len(train), features, categories, tc.refit.rounds, tc.seed,
                        tc.n_threads)
    model, _, oof = evaluated_model(frame, split.test[0], tables, cfg, refitter, {})
    from sklearn.metrics import roc_auc_score

    y = test["label"].to_numpy()
    cal = model.calibrator
    diag = {"raw_roc_auc": float(roc_auc_score(y, model.predict_raw(test))), "calibrator": cal.method,
            "platt_a": cal.a, "platt_b": cal.b,
            "calibration_folds": {str(c.date()): [int(len(g)), int(g["label"].sum())] for c, g in oof.groupby("cutoff")},
            "fits": [{k: f[k] for k in ("purpose", "rows", "rounds")} for f in refitter.fits]}
    log.info("refit %s: raw ROC-AUC %.3f, calibrator %s a=%.3f b=%.3f, folds %s", split.test[0].date(),
             diag["raw_roc_auc"], cal.method, cal.a, cal.b, diag["calibration_folds"])
    return model, split.test[0], test, diag


def _fitted_windows(fs: Any, cutoffs: list[pd.Timestamp], months: int, tables: Any, cfg: Any, protocol: str,
                    calibration: str | None, features: list[str],
                    categories: dict[str, list[str]]) -> list[tuple[Any, pd.Timestamp, pd.DataFrame, dict[str, Any]]]:
    """(model, test cutoff, test rows, diagnostics) for each of the latest ``months`` test cutoffs that can be fitted."""
    from features.timeline import label_window_days
    from training.backtest import fit_window_model

    out = []
    for k in range(min(months, len(cutoffs)) - 1, -1, -1):
        upto = cutoffs[: len(cutoffs) - k]
        if protocol == "refit":
            res = refit_window(fs, upto, tables, cfg, features, categories)
        else:
            fitted = fit_window_model(fs.frame, upto, features, categories, PARAMS, label_window_days(cfg.label),
                                      calibration or cfg.training.calibration, 400, 40, cfg.training.seed,
                                      cfg.training.n_threads, 1)
            res = None if fitted is None else (*fitted, {})
        if res is not None:
            out.append(res)
    return out


def backtest(dataset: str, months: int, calibration: str | None = None, protocol: str = "window",
             customers: int = 8000) -> dict[str, Any]:
    from features.build import FeatureBuilder
    from features.timeline import label_window_days, training_cutoffs

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tables, cfg, source = _load(dataset, Path(tmp), customers)
        cutoffs = training_cutoffs(tables, cfg.label, 36, cfg.training.cutoff_frequency, cfg.training.min_history_days)
        # plus the first day with enough history: a training cutoff for the earliest test month (socialnet7: April)
        first = (tables.data_start + pd.Timedelta(days=cfg.training.min_history_days)).normalize()
        cutoffs = sorted({first, *cutoffs})
        fs = FeatureBuilder(tables, cfg).build_many(cutoffs)
    t_features = time.perf_counter() - t0
    specs = {s.name: s for s in fs.specs}
    features = [f for f in fs.feature_names if f not in set(cfg.training.exclude_features)]
    categories = {c: [str(x) for x in fs.frame[c].cat.categories] for c in features if specs[c].categorical}
    threshold = getattr(cfg.scoring.risk_tiers, cfg.scoring.alert_min_tier) if cfg.scoring.alert_min_tier != "low" \
        else 0.0
    horizon = pd.Timedelta(days=label_window_days(cfg.label))
    rows, product = [], []
    for model, cutoff, test, diag in _fitted_windows(fs, cutoffs, months, tables, cfg, protocol, calibration,
                                                     features, categories):
        y, p = test["label"].to_numpy(), model.predict_proba(test)
        rows.append({**_row(cutoff, y, p, threshold), "diagnostics": diag})
        later = [c for c in cutoffs if c >= cutoff + horizon]  # the next month whose outcomes are also in the data
        if later:
            product.append(product_row(model, (cutoff, y, p), fs.frame[fs.frame["cutoff"] == later[0]], threshold))
            log.info("model tested %s scores %s: raw %.3f full %.3f realised %.3f", cutoff.date(), later[0].date(),
                     product[-1]["raw"]["estimate"], product[-1]["full"]["estimate"], product[-1]["roc_auc_real"])
    err = np.abs([r["auc_error"] for r in rows])
    return {"dataset": dataset, "data": source, "protocol": protocol,
            "calibration": calibration or cfg.training.calibration,
            "alert_threshold": threshold, "params": PARAMS, "rows": rows,
            "max_abs_auc_error": float(err.max()) if err.size else None,
            "mean_abs_auc_error": float(err.mean()) if err.size else None,
            "months_within_0.03": int((err <= 0.03).sum()), "months": len(rows),
            "months_est_in_real_ci95": int(sum(r["est_in_real_ci95"] for r in rows)),
            "mean_real_ci95_width": float(np.mean([r["roc_auc_real_ci95"][1] - r["roc_auc_real_ci95"][0] for r in rows]))
            if rows else None,
            "auc_interval_coverage": float(np.mean([r["auc_in_interval"] for r in rows])) if rows else None,
            "product_rows": product, "product_summary": variant_summary(product),
            "seconds": {"features": round(t_features, 1), "total": round(time.perf_counter() - t0, 1)},
            "load_average": os.getloadavg()}


def _table(res: dict[str, Any]) -> str:
    head = (f"### {res['dataset']} ({res['data']}), protocol {res['protocol']}, {res['calibration']} calibration, "
            f"alerts: p >= {res['alert_threshold']}")
    lines = [head, "", "Model fitted for the month, raw CBPE (no labelled out-of-time window exists for it):", "",
             "| cutoff | n | churners | realised [95% bootstrap CI] | raw est [90%] | error | slope on month |",
             "|" + "---|" * 7]
    for r in res["rows"]:
        lines.append(f"| {r['cutoff']} | {r['n']} | {r['churners']} | {r['roc_auc_real']:.3f} "
                     f"[{r['roc_auc_real_ci95'][0]:.3f}, {r['roc_auc_real_ci95'][1]:.3f}] | {r['roc_auc_est']:.3f} "
                     f"[{r['roc_auc_low']:.3f}, {r['roc_auc_high']:.3f}] | {r['auc_error']:+.3f} | "
                     f"{r['calibration_slope']:.2f} |")
    lines.append(f"\n{res['months_within_0.03']}/{res['months']} within 0.03, max |error| {res['max_abs_auc_error']:.3f}")
    lines += ["", "Product: the model tested on the month before scores the month; CBPE raw and recalibrated on its "
              "own test window (shrunk = what `churn score` applies):", "",
              "| cutoff | churners | model tested | window slope (applied) | realised [95% CI] (SE) | raw est (error) | "
              "full (error) | pretest (error) | shrunk est [90%] (error) | in real CI | slope on month |",
              "|" + "---|" * 11]
    for r in res["product_rows"]:
        f = r["shrunk"]
        lines.append(f"| {r['cutoff']} | {r['churners']} | {r['model_test_cutoff']} | {r['window_slope']:.2f} "
                     f"({f['slope']:.2f}) | {r['roc_auc_real']:.3f} [{r['roc_auc_real_ci95'][0]:.3f}, "
                     f"{r['roc_auc_real_ci95'][1]:.3f}] ({r['realised_se_hanley_mcneil']:.3f}) | "
                     f"{r['raw']['estimate']:.3f} ({r['raw']['error']:+.3f}) | {r['full']['estimate']:.3f} "
                     f"({r['full']['error']:+.3f}) | {r['pretest']['estimate']:.3f} ({r['pretest']['error']:+.3f}) | "
                     f"{f['estimate']:.3f} [{f['low']:.3f}, {f['high']:.3f}] ({f['error']:+.3f}) | "
                     f"{'yes' if f['est_in_real_ci95'] else 'no'} | {r['calibration_slope']:.2f} |")
    lines.append("")
    ps = res["product_summary"]
    if res["product_rows"]:
        lines.append(f"realised ROC-AUC's own sampling SE (Hanley-McNeil, rms over months) {ps['rms_realised_se']:.3f}; "
                     f"an exact estimate would have all months within 0.03 with probability "
                     f"{ps['p_all_within_0.03_if_exact']:.2f}")
    for name in VARIANTS:
        v = ps[name]
        if v["months"]:
            lines.append(f"{name}: {v['within_0.03']}/{v['months']} within 0.03, max |error| {v['max_abs_error']:.3f}, "
                         f"mean {v['mean_abs_error']:.3f}, rmse {v['rmse']:.3f}, estimate inside the realised 95% CI "
                         f"{v['est_in_real_ci95']}/{v['months']}, realised inside the 90% interval "
                         f"{v['interval_coverage']:.0%}")
    lines.append(f"{res['seconds']['total']}s, load average {tuple(round(x, 2) for x in res['load_average'])}")
    return "\n".join(lines)


def _f(x: float | None, spec: str = ".3f") -> str:
    return "n/a" if x is None or not np.isfinite(x) else format(x, spec)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", choices=["demo", "socialnet7"], default="demo")
    ap.add_argument("--months", type=int, default=12, help="latest test months (default 12)")
    ap.add_argument("--calibration", choices=["isotonic", "platt"], default=None,
                    help="calibration of each window's model (default: the config's training.calibration)")
    ap.add_argument("--protocol", choices=["window", "refit"], default="window",
                    help="window: early-stopped and calibrated on the month before (training.backtest.fit_window); "
                         "refit: the shipped protocol, refit + cross-fitted calibration (training.refit)")
    ap.add_argument("--customers", type=int, default=8000,
                    help="demo: customers generated (more customers, more churners a month, a smaller realised SE)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("features", "training", "churn"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    res = backtest(args.dataset, args.months, args.calibration, args.protocol, args.customers)
    res["command"] = (f"python benchmarks/performance_estimate.py --dataset {args.dataset} --months {args.months}"
                      + (f" --calibration {args.calibration}" if args.calibration else "")
                      + (f" --protocol {args.protocol}" if args.protocol != "window" else "")
                      + (f" --customers {args.customers}" if args.customers != 8000 else ""))
    RESULTS.mkdir(parents=True, exist_ok=True)
    suffix = ((f"_{args.calibration}" if args.calibration else "") + ("_refit" if args.protocol == "refit" else "")
              + (f"_{args.customers}" if args.customers != 8000 else ""))
    (RESULTS / f"performance_estimate_{args.dataset}{suffix}.json").write_text(json.dumps(res, indent=2) + "\n")
    sys.stdout.write(_table(res) + "\n")


if __name__ == "__main__":
    main()
