"""Evaluate a past ``churn score`` run once its label horizon is over: what really happened.

For the cutoff ``T`` of a scoring run, the realized label of each scored customer is "churned
within ``(T, T + horizon]``" (:func:`features.timeline.labels`), known only once the data covers
``T + horizon``. With it we measure

* how good the scores were (ROC/PR-AUC, log loss, Brier, calibration, lift at the top 10 %),
* how many alerts were real (alert precision, overall and per risk tier),
* whether the retention playbooks worked: churn of contacted (treated) against held-out
  (control) selected alerts, per playbook, with a confidence interval and a p-value.

Contacting a customer changes the outcome the model predicted, so metrics over the contacted
customers are biased (a playbook that works makes the model look worse). The report therefore
also gives the metrics on the untreated customers (never contacted: not alerted, alerted but
not selected, or held out as control) and, where every playbook has a control group, an
inverse-probability-weighted estimate for the whole scored population as if nobody had been
contacted (each control customer stands for the selected customers of its playbook).

Statistics of the treatment effect, per playbook and overall ("ALL"):

* ``uplift = churn_control - churn_treated`` (positive: the playbook prevented churn);
* ``ci_low``/``ci_high``: Newcombe's hybrid score interval for a difference of two proportions
  (Newcombe 1998, Statistics in Medicine 17:873-890, method 10), built from the two Wilson score
  intervals; it stays inside [-1, 1] and behaves well for small groups and rates near 0 or 1;
* ``p_value``: two-sided Fisher exact test on the 2x2 table (``scipy.stats.fisher_exact``),
  not adjusted for testing several playbooks;
* ``enough``: both groups have at least ``min_group`` (30) customers.

The pooled "ALL" row is a standardised (stratified) estimate, not a pooled 2x2 table: playbooks have
different control shares, so pooling the raw counts would weight each playbook by its control size. Each
playbook with both groups weighs by its treated customers, ``uplift = sum_g w_g (churn_control_g -
churn_treated_g)``, ``w_g = n_treated_g / sum n_treated``; its interval and p-value use the normal
approximation with ``var = sum_g w_g^2 (r_t(1-r_t)/n_t + r_c(1-r_c)/n_c)``. With a single playbook the row
equals that playbook's row.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.metrics import average_precision_score, roc_auc_score

from churn.config import LabelConfig
from churn.errors import DataError, InputNotFoundError
from churn.io import write_csv, write_json
from churn.timebase import DAY
from churn.vocab import RISK_TIERS
from features.contract import Tables
from features.timeline import active_mask, label_window_days, labels
from inference.alerts import pseudonymize
from model.metrics import classification_metrics, lift_table, reliability_table

log = logging.getLogger(__name__)

ALL = "ALL"
MIN_GROUP = 30
TREATMENT_COLUMNS = ["playbook_id", "n_treated", "n_control", "churned_treated", "churned_control",
                     "churn_treated", "churn_control", "uplift", "ci_low", "ci_high", "p_value", "enough"]
CI_METHOD = "Newcombe hybrid score interval (Wilson), Newcombe 1998 method 10"
TEST_METHOD = "two-sided Fisher exact test (scipy.stats.fisher_exact)"
MONITOR_FILES = ("monitor.json", "treatment_effect.csv")
EXIT_TEMPFAIL = 75  # sysexits EX_TEMPFAIL: "try again later"


class HorizonNotOverError(DataError):
    """The data does not cover cutoff + label window yet: not an input error, run again later (exit 75)."""

    exit_code = EXIT_TEMPFAIL


# --------------------------------------------------------------------------- realized labels


def _customer_codes(ids: pd.Series, tables: Tables, pseudonymize_key: str | None, role: str) -> np.ndarray:
    """Row position in ``tables.customers`` of each id; unknown ids are a DataError naming count and examples."""
    known = tables.customers["customer_id"].astype(str)
    if pseudonymize_key:
        known = pseudonymize(known, pseudonymize_key)
    ids = ids.astype(str)
    codes = pd.Index(known.to_numpy()).get_indexer(ids.to_numpy())
    unknown = codes < 0
    if unknown.any():
        hint = ("" if pseudonymize_key else
                "; if the scoring run pseudonymised ids (scoring.pseudonymize_key), pass the same key")
        raise DataError(role, "customer_id",
                        f"{int(unknown.sum())} scored customer(s) are not in the customers table of this data "
                        f"(is it the same data source as the scoring run?{hint})",
                        int(unknown.sum()), ids[unknown].head(5).tolist())
    return codes


def realized_outcomes(scores: pd.DataFrame, tables: Tables, label_cfg: LabelConfig, cutoff: pd.Timestamp,
                      pseudonymize_key: str | None = None) -> pd.DataFrame:
    """``scores`` with a ``churned`` column (0/1): did the customer churn within ``(cutoff, cutoff + window]``.

    The label is :func:`features.timeline.labels` at ``cutoff`` (the same definition the model was trained
    on). Raises :class:`HorizonNotOverError` (a :class:`DataError`, exit code 75) if the data does not reach
    ``cutoff + window`` yet, and :class:`DataError` if a scored customer is not in ``tables.customers`` or
    appears twice. ``pseudonymize_key``: the key the scoring run used to pseudonymise ids, if any.
    """
    cutoff = pd.Timestamp(cutoff)
    window = label_window_days(label_cfg)
    need = cutoff + window * DAY
    data_end = tables.data_end
    if data_end < need:
        raise HorizonNotOverError("customers", None,
                                  f"horizon not over yet: data ends {data_end.date()}, need {need.date()} "
                                  f"(cutoff {cutoff.date()} + {window} days, label '{label_cfg.definition}')")
    if "customer_id" not in scores.columns:
        raise DataError("scores", "customer_id", "required column is missing")
    dup = scores["customer_id"].astype(str).duplicated(keep=False)
    if dup.any():
        raise DataError("scores", "customer_id", "duplicate customer ids", int(scores.loc[dup, "customer_id"].nunique()),
                        scores.loc[dup, "customer_id"].head(5).tolist())
    codes = _customer_codes(scores["customer_id"], tables, pseudonymize_key, "customers")
    y = labels(tables, cutoff, label_cfg)
    out = scores.copy()
    out["churned"] = y[codes].astype(np.int8)
    return out


# --------------------------------------------------------------------------- treatment effect


def wilson_interval(x: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion x/n; (NaN, NaN) when n is 0."""
    if n <= 0:
        return (math.nan, math.nan)
    z = float(stats.norm.ppf(0.5 + level / 2))
    p = x / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (max(0.0, centre - half), min(1.0, centre + half))


def newcombe_interval(x1: int, n1: int, x2: int, n2: int, level: float = 0.95) -> tuple[float, float]:
    """Newcombe hybrid score interval for ``x1/n1 - x2/n2`` (Newcombe 1998, method 10)."""
    if n1 <= 0 or n2 <= 0:
        return (math.nan, math.nan)
    p1, p2 = x1 / n1, x2 / n2
    l1, u1 = wilson_interval(x1, n1, level)
    l2, u2 = wilson_interval(x2, n2, level)
    d = p1 - p2
    return (d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2))


def _effect_row(key: str, treated: np.ndarray, control: np.ndarray, level: float, min_group: int) -> dict[str, Any]:
    nt, nc = int(treated.size), int(control.size)
    xt, xc = int(treated.sum()), int(control.sum())
    rt = xt / nt if nt else math.nan
    rc = xc / nc if nc else math.nan
    if nt and nc:
        lo, hi = newcombe_interval(xc, nc, xt, nt, level)
        p_value = float(stats.fisher_exact([[xt, nt - xt], [xc, nc - xc]], alternative="two-sided").pvalue)
    else:
        lo = hi = p_value = math.nan
    return {"playbook_id": key, "n_treated": nt, "n_control": nc, "churned_treated": xt, "churned_control": xc,
            "churn_treated": rt, "churn_control": rc, "uplift": rc - rt, "ci_low": lo, "ci_high": hi,
            "p_value": p_value, "enough": bool(nt >= min_group and nc >= min_group)}


def _pooled_row(rows: list[dict[str, Any]], treated: np.ndarray, control: np.ndarray, level: float,
                min_group: int) -> dict[str, Any]:
    """The "ALL" row: effects of the playbooks with both groups, weighted by their treated customers."""
    row = _effect_row(ALL, treated, control, level, min_group)
    both = [r for r in rows if r["n_treated"] and r["n_control"]]
    if len(both) <= 1 and len(rows) <= 1:
        return row
    if not both:
        return {**row, "churn_control": math.nan, "uplift": math.nan, "ci_low": math.nan, "ci_high": math.nan,
                "p_value": math.nan}
    w = np.array([r["n_treated"] for r in both], dtype=float)
    w /= w.sum()
    rt = np.array([r["churn_treated"] for r in both])
    rc = np.array([r["churn_control"] for r in both])
    nt = np.array([r["n_treated"] for r in both], dtype=float)
    nc = np.array([r["n_control"] for r in both], dtype=float)
    uplift = float(w @ (rc - rt))
    se = math.sqrt(float(w**2 @ (rt * (1 - rt) / nt + rc * (1 - rc) / nc)))
    z = float(stats.norm.ppf(0.5 + level / 2))
    p_value = float(2 * stats.norm.sf(abs(uplift) / se)) if se > 0 else (1.0 if uplift == 0 else 0.0)
    return {**row, "churn_treated": float(w @ rt), "churn_control": float(w @ rc), "uplift": uplift,
            "ci_low": max(-1.0, uplift - z * se), "ci_high": min(1.0, uplift + z * se), "p_value": p_value}


def treatment_effect(alerts_with_outcome: pd.DataFrame, by: str = "playbook_id", level: float = 0.95,
                     min_group: int = MIN_GROUP) -> pd.DataFrame:
    """Churn of treated against control among the SELECTED alerts, per ``by`` value and overall ("ALL").

    treated = selected and not control_group (contacted); control = selected and control_group (held out).
    Alerts that were not selected are ignored (they were not randomised). One row per value of ``by``
    (sorted), then the "ALL" row; columns :data:`TREATMENT_COLUMNS` (the first one named ``by``). uplift,
    ci_low, ci_high and p_value are NaN where a group is empty. See the module docstring for the methods.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    need = [by, "selected", "control_group", "churned"]
    missing = [c for c in need if c not in alerts_with_outcome.columns]
    if missing:
        raise DataError("alerts", missing[0], f"required column(s) missing: {missing}")
    a = alerts_with_outcome
    sel = a["selected"].fillna(False).astype(bool).to_numpy()
    ctrl = a["control_group"].fillna(False).astype(bool).to_numpy()
    y = a["churned"].to_numpy(dtype=float)
    if np.isnan(y[sel]).any():
        raise DataError("alerts", "churned", "missing outcomes for selected alerts", int(np.isnan(y[sel]).sum()))
    keys = a[by].astype(str).to_numpy()
    treated, control = sel & ~ctrl, sel & ctrl
    rows = [_effect_row(k, y[treated & (keys == k)], y[control & (keys == k)], level, min_group)
            for k in sorted(set(keys[sel].tolist()))]
    rows.append(_pooled_row(rows, y[treated], y[control], level, min_group))
    out = pd.DataFrame(rows, columns=TREATMENT_COLUMNS)
    return out.rename(columns={"playbook_id": by}) if by != "playbook_id" else out


# --------------------------------------------------------------------------- evaluation of a scoring run


def _read_run(scores_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    if not scores_dir.is_dir():
        raise InputNotFoundError(f"scoring output folder not found: {scores_dir}")
    paths = {name: scores_dir / name for name in ("scores.parquet", "alerts.parquet", "summary.json")}
    missing = [n for n, p in paths.items() if not p.exists()]
    if missing:
        raise InputNotFoundError(f"{scores_dir} is not a `churn score` output: missing {', '.join(missing)}")
    try:
        summary = json.loads(paths["summary.json"].read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError("summary", None, f"cannot read {paths['summary.json']}: {exc}") from exc
    frames = []
    for name in ("scores.parquet", "alerts.parquet"):
        try:
            frames.append(pd.read_parquet(paths[name]))
        except Exception as exc:  # noqa: BLE001 - any reader failure is a data problem for the user
            raise DataError(name.split(".")[0], None, f"cannot read {paths[name]}: {exc}") from exc
    scores, alerts = frames
    for role, df, cols in (("scores", scores, ("customer_id", "churn_probability", "risk_tier")),
                           ("alerts", alerts, ("customer_id", "risk_tier", "playbook_id", "selected", "control_group"))):
        miss = [c for c in cols if c not in df.columns]
        if miss:
            raise DataError(role, miss[0], f"required column(s) missing: {miss}")
    return scores, alerts, summary


def read_scoring_run(scores_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """scores.parquet, alerts.parquet and summary.json of a ``churn score`` output folder, checked."""
    return _read_run(Path(scores_dir))


def _run_cutoff(scores: pd.DataFrame, summary: dict[str, Any]) -> pd.Timestamp:
    cutoffs = pd.to_datetime(scores["cutoff"]).dropna().unique() if "cutoff" in scores.columns else []
    if len(cutoffs) > 1:
        raise DataError("scores", "cutoff", f"one scoring run has one cutoff, found {len(cutoffs)}", len(cutoffs),
                        [pd.Timestamp(c).date().isoformat() for c in cutoffs[:5]])
    if summary.get("cutoff"):
        cutoff = pd.Timestamp(summary["cutoff"])
        if len(cutoffs) and pd.Timestamp(cutoffs[0]) != cutoff:
            raise DataError("scores", "cutoff", f"scores.parquet cutoff {pd.Timestamp(cutoffs[0]).date()} "
                            f"differs from summary.json cutoff {cutoff.date()}")
        return cutoff
    if len(cutoffs):
        return pd.Timestamp(cutoffs[0])
    raise DataError("summary", "cutoff", "no cutoff in summary.json or scores.parquet")


def _finite(x: Any) -> Any:
    """NaN/inf -> None, numpy scalars -> Python, recursively (so monitor.json is strict JSON)."""
    if isinstance(x, dict):
        return {str(k): _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _metrics_or_none(y: np.ndarray, p: np.ndarray) -> dict[str, float] | None:
    return classification_metrics(y, p) if y.size else None


def _precision(y: np.ndarray) -> dict[str, Any]:
    return {"n": int(y.size), "churned": int(y.sum()), "precision": float(y.mean()) if y.size else math.nan}


def _ipw_untreated(df: pd.DataFrame) -> tuple[dict[str, Any] | None, str | None]:
    """Metrics for the whole scored population as if nobody had been contacted.

    Non-selected customers weigh 1; each control customer of playbook g weighs n_selected(g) / n_control(g)
    (control customers are a random draw of the selected ones), treated customers are left out.
    Not possible when a playbook with contacted customers has no control customer.
    """
    sel, ctrl = df["selected"].to_numpy(), df["control_group"].to_numpy()
    if not sel.any():
        return None, None
    g = df["playbook_id"].astype(str).to_numpy()
    w = np.where(sel, 0.0, 1.0)
    uncovered = []
    for k in sorted(set(g[sel].tolist())):
        n_sel, n_ctrl = int((sel & (g == k)).sum()), int((ctrl & sel & (g == k)).sum())
        if n_ctrl == 0:
            uncovered.append(k)
        else:
            w[sel & ctrl & (g == k)] = n_sel / n_ctrl
    if uncovered:
        return None, (f"no population-level untreated estimate: playbook(s) {', '.join(uncovered)} had no control "
                      "group, so their selected customers' untreated outcome is unknown")
    y, p = df["churned"].to_numpy(dtype=float), df["churn_probability"].to_numpy(dtype=float)
    keep = w > 0
    y, p, w = y[keep], p[keep], w[keep]
    both = 0 < y.sum() < y.size
    return {"roc_auc": float(roc_auc_score(y, p, sample_weight=w)) if both else math.nan,
            "pr_auc": float(average_precision_score(y, p, sample_weight=w)) if both else math.nan,
            "brier": float(np.average((p - y) ** 2, weights=w)),
            "base_rate": float(np.average(y, weights=w)), "n": int(y.size), "weight_total": float(w.sum())}, None


def evaluate_alerts(scores_dir: str | Path, tables: Tables, label_cfg: LabelConfig,
                    pseudonymize_key: str | None = None, level: float = 0.95) -> dict[str, Any]:
    """Realized performance of a past ``churn score`` output folder (scores.parquet, alerts.parquet, summary.json).

    The label window is the scoring model's: with ``definition: churn_date`` the ``horizon_days`` recorded in
    summary.json wins over ``label_cfg`` (a note says so). Returns a JSON-ready dict (NaN -> None) with
    cutoff, horizon_days, model_version, n_scored, realized_churn_rate, metrics, metrics_untreated,
    metrics_untreated_ipw, reliability, lift_top10, alert_precision, treatment_effect and notes.
    """
    scores_dir = Path(scores_dir)
    scores, alerts, summary = _read_run(scores_dir)
    cutoff = _run_cutoff(scores, summary)
    notes: list[str] = []
    label_cfg = _run_label_config(label_cfg, summary, notes)
    realized = realized_outcomes(scores, tables, label_cfg, cutoff, pseudonymize_key)
    codes = _customer_codes(realized["customer_id"], tables, pseudonymize_key, "customers")
    inactive = ~active_mask(tables, cutoff, label_cfg)[codes]
    if inactive.any():
        notes.append(f"{int(inactive.sum())} scored customer(s) were not active at the cutoff according to this data "
                     "(churned or lapsed already; was the data corrected since scoring?): their label is 0")
    a, per_customer = _alert_outcomes(realized, alerts)
    ipw, ipw_note = _ipw_untreated(per_customer)
    effect = treatment_effect(a, "playbook_id", level)
    treated = (per_customer["selected"] & ~per_customer["control_group"]).to_numpy()
    notes += _outcome_notes(int(treated.sum()), ipw_note, effect, level)
    parts = {
        "command": "monitor", "scores_dir": str(scores_dir), "cutoff": cutoff.date().isoformat(),
        **_run_identity(label_cfg, tables, summary),
        **_outcome_metrics(per_customer, a, treated),
        "metrics_untreated_ipw": ipw,
        "treatment_effect": effect.to_dict("records"),
        "treatment_effect_method": {"uplift": "churn_control - churn_treated", "ci": CI_METHOD, "level": level,
                                    "p_value": TEST_METHOD, "min_group": MIN_GROUP},
        "notes": notes,
    }
    result = {key: parts[key] for key in _RESULT_ORDER}  # the monitor.json key order
    result["realized_calibration"] = realized_calibration(per_customer)
    result["estimate_vs_realized"] = estimate_vs_realized(summary.get("performance_estimate"), result)
    log.info("monitor %s: %s scored, realized churn %.3f, ROC-AUC %s", result["cutoff"], f"{len(per_customer):,}",
             result["realized_churn_rate"], (result["metrics"] or {}).get("roc_auc"))
    return _finite(result)


_RESULT_ORDER = ("command", "scores_dir", "cutoff", "horizon_days", "label", "data_end", "model_name", "model_version",
                 "input_hash_scoring", "input_hash_outcomes", "n_scored", "n_alerts", "n_selected", "n_treated",
                 "n_control", "n_untreated", "realized_churn_rate", "metrics", "metrics_untreated",
                 "metrics_untreated_ipw", "reliability", "lift_top10", "alert_precision", "treatment_effect",
                 "treatment_effect_method", "notes")


def _run_label_config(label_cfg: LabelConfig, summary: dict[str, Any], notes: list[str]) -> LabelConfig:
    """The label rule of the scoring run: its model's horizon wins over the config's (a note says so)."""
    run_horizon = summary.get("horizon_days")
    if label_cfg.definition == "churn_date" and run_horizon and int(run_horizon) != label_cfg.horizon_days:
        notes.append(f"label horizon taken from the scoring run's model ({int(run_horizon)} days), not from the "
                     f"config ({label_cfg.horizon_days} days)")
        return label_cfg.model_copy(update={"horizon_days": int(run_horizon)})
    return label_cfg


def _alert_outcomes(realized: pd.DataFrame, alerts: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The alerts with their realized outcome, and per scored customer: churned, probability, selected, control,
    playbook (untreated = never contacted). Alerted customers missing from the scores, or alerted twice, are errors."""
    ids = realized["customer_id"].astype(str)
    alert_ids = alerts["customer_id"].astype(str)
    pos = pd.Index(ids.to_numpy()).get_indexer(alert_ids.to_numpy())
    if (pos < 0).any():
        raise DataError("alerts", "customer_id", "alerted customers missing from scores.parquet",
                        int((pos < 0).sum()), alert_ids[pos < 0].head(5).tolist())
    if alert_ids.duplicated().any():
        raise DataError("alerts", "customer_id", "duplicate customer ids", int(alert_ids.duplicated().sum()),
                        alert_ids[alert_ids.duplicated()].head(5).tolist())
    y_all = realized["churned"].to_numpy(dtype=float)
    a = alerts.assign(churned=y_all[pos].astype(np.int8),
                      selected=alerts["selected"].fillna(False).astype(bool),
                      control_group=alerts["control_group"].fillna(False).astype(bool))
    n = len(realized)
    sel = np.zeros(n, dtype=bool)
    ctrl = np.zeros(n, dtype=bool)
    book = np.full(n, "", dtype=object)
    sel[pos] = a["selected"].to_numpy()
    ctrl[pos] = a["control_group"].to_numpy() & sel[pos]
    book[pos] = a["playbook_id"].astype(str).to_numpy()
    per_customer = pd.DataFrame({"churned": y_all, "churn_probability": realized["churn_probability"].to_numpy(dtype=float),
                                 "selected": sel, "control_group": ctrl, "playbook_id": book})
    return a, per_customer


def _outcome_metrics(per_customer: pd.DataFrame, a: pd.DataFrame, treated: np.ndarray) -> dict[str, Any]:
    """Counts, realized metrics (all and never-contacted), reliability, lift and alert precision."""
    y_all = per_customer["churned"].to_numpy(dtype=float)
    p_all = per_customer["churn_probability"].to_numpy(dtype=float)
    n, untreated = len(per_customer), ~treated
    ya = a["churned"].to_numpy(dtype=float)
    untreated_alert = ~(a["selected"] & ~a["control_group"]).to_numpy()
    tier_of = a["risk_tier"].astype(str)
    tiers = sorted(tier_of.unique(), key=lambda t: RISK_TIERS.index(t) if t in RISK_TIERS else len(RISK_TIERS))
    return {
        "n_scored": int(n), "n_alerts": int(len(a)), "n_selected": int(per_customer["selected"].sum()),
        "n_treated": int(treated.sum()), "n_control": int(per_customer["control_group"].sum()),
        "n_untreated": int(untreated.sum()),
        "realized_churn_rate": float(y_all.mean()) if n else math.nan,
        "metrics": _metrics_or_none(y_all, p_all),
        "metrics_untreated": _metrics_or_none(y_all[untreated], p_all[untreated]),
        "reliability": reliability_table(y_all, p_all).to_dict("records") if n else [],
        "lift_top10": lift_table(y_all, p_all, (0.10,)).to_dict("records")[0] if n else None,
        "alert_precision": {**_precision(ya),
                            "by_risk_tier": {t: _precision(ya[(tier_of == t).to_numpy()]) for t in tiers},
                            "untreated": _precision(ya[untreated_alert])},
    }


def _run_identity(label_cfg: LabelConfig, tables: Tables, summary: dict[str, Any]) -> dict[str, Any]:
    """What the evaluation is of: label window, data end, model and the input hashes of both runs."""
    window = label_window_days(label_cfg)
    return {"horizon_days": int(window), "label": {**label_cfg.model_dump(), "window_days": int(window)},
            "data_end": tables.data_end.isoformat(), "model_name": summary.get("model_name"),
            "model_version": summary.get("model_version"), "input_hash_scoring": summary.get("input_hash"),
            "input_hash_outcomes": tables.input_hash or None}


def _outcome_notes(n_treated: int, ipw_note: str | None, effect: pd.DataFrame, level: float) -> list[str]:
    """What a reader of the realized metrics must know: treated customers bias them, small effect groups."""
    notes: list[str] = []
    if n_treated:
        notes.append(f"{n_treated} alerted customer(s) were contacted (treated); a retention action changes the outcome "
                     "the model predicted, so 'metrics', 'reliability', 'lift_top10' and 'alert_precision' (which include "
                     "them) are biased - a playbook that works makes the model look worse. 'metrics_untreated' uses only "
                     "never-contacted customers (not alerted, alerted but not selected, control), which under-represents "
                     "the highest risks; 'metrics_untreated_ipw' reweights the control group to stand for all selected "
                     "customers.")
    if ipw_note:
        notes.append(ipw_note)
    all_row = effect.iloc[-1]
    if int(all_row["n_control"]) == 0 and int(all_row["n_treated"]) > 0:
        notes.append("no control group among the selected alerts: the effect of the playbooks cannot be measured")
    small = effect.loc[~effect["enough"] & (effect["n_treated"] + effect["n_control"] > 0), "playbook_id"].tolist()
    if small:
        notes.append(f"treatment effect rows with fewer than {MIN_GROUP} treated or control customers are not reliable: "
                     f"{', '.join(map(str, small))}")
    notes.append(f"uplift = churn_control - churn_treated (positive: the playbook prevented churn); "
                 f"{level:.0%} CI: {CI_METHOD}; p-value: {TEST_METHOD}, not adjusted for testing several playbooks")
    return notes


def estimate_vs_realized(estimate: dict[str, Any] | None, result: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The label-free estimate recorded at scoring time beside the realised value, per metric.

    ROC-AUC is realised on every scored customer (``metrics``); precision and churners on the alerts
    (``alert_precision``, which includes contacted customers: a retention action that works lowers them).
    ``None`` when the scoring run recorded no estimate (runs from before the estimate existed).
    """
    if not isinstance(estimate, dict):
        return None
    realised = {"roc_auc": (result.get("metrics") or {}).get("roc_auc"),
                "precision_at_alert": (result.get("alert_precision") or {}).get("precision"),
                "churners_in_alerts": (result.get("alert_precision") or {}).get("churned")}
    rows = []
    for key, value in realised.items():
        cell = estimate.get(key) or {}
        est, lo, hi = cell.get("estimate"), cell.get("low"), cell.get("high")
        ok = value is not None and est is not None and math.isfinite(float(value))
        rows.append({"metric": key, "estimate": est, "low": lo, "high": hi, "realized": value,
                     "error": float(est) - float(value) if ok else None,
                     "inside_interval": bool(lo <= value <= hi) if ok and lo is not None else None})
    rows[0].update(_realized_auc_sampling(rows[0], result))
    return rows


def _realized_auc_sampling(row: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    """The realised ROC-AUC's own sampling error (Hanley-McNeil), its 95% range, and whether the estimate lies
    inside it: an error smaller than that range is as close as one month's outcomes can check."""
    from inference.estimate import auc_standard_error

    n, rate = result.get("n_scored") or 0, result.get("realized_churn_rate")
    if row["realized"] is None or rate is None or not math.isfinite(float(rate)):
        return {"realized_se": None, "realized_ci95": None, "estimate_inside_realized_ci95": None}
    n_pos = int(round(float(rate) * n))
    se = auc_standard_error(float(row["realized"]), n_pos, n - n_pos)
    if not math.isfinite(se):
        return {"realized_se": None, "realized_ci95": None, "estimate_inside_realized_ci95": None}
    lo, hi = max(0.0, float(row["realized"]) - 1.96 * se), min(1.0, float(row["realized"]) + 1.96 * se)
    inside = None if row["estimate"] is None else bool(lo <= float(row["estimate"]) <= hi)
    return {"realized_se": se, "realized_ci95": [lo, hi], "estimate_inside_realized_ci95": inside}


def realized_calibration(per_customer: pd.DataFrame) -> dict[str, Any] | None:
    """Calibration slope and intercept of the run's probabilities on its realised outcomes
    (:func:`model.recalibration.fit_recalibration`): a slope below 1 says the scores were over-confident, the
    reason a label-free estimate of the next run is optimistic. ``None`` without both classes."""
    from model.recalibration import fit_recalibration

    y = per_customer["churned"].to_numpy(dtype=float)
    p = per_customer["churn_probability"].to_numpy(dtype=float)
    if not len(y) or y.min() == y.max():
        return None
    rec = fit_recalibration(p, y, n_boot=0)
    return {"slope": rec.slope, "intercept": rec.intercept, "n": rec.n, "churners": rec.churners}


def write_monitor_report(result: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """Write ``monitor.json`` and ``treatment_effect.csv`` (each atomically) into ``out_dir``; return their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    effect = pd.DataFrame(result.get("treatment_effect") or [], columns=TREATMENT_COLUMNS)
    return [write_json(out_dir / MONITOR_FILES[0], _finite(result)),
            write_csv(out_dir / MONITOR_FILES[1], effect)]
