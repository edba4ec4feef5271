"""Batch scoring: every active customer scored, alerted customers explained, playbooks attached.

Memory is bounded by scoring in chunks of ``scoring.chunk_size`` rows; explanation work (exact
TreeSHAP) is spent only on alerted customers. All outputs are staged in a temporary folder and
moved into ``--out`` only when everything succeeded.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from churn.config import Config, resolve_path
from churn.io import write_csv, write_json, write_jsonl, write_parquet
from features.build import FeatureBuilder
from features.contract import Tables
from inference import alerts as al
from inference.explain import explain_rows, global_group_importance, typical_values

log = logging.getLogger(__name__)


def _chunks(n: int, size: int) -> list[slice]:
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def score(tables: Tables, cfg: Config, as_of: pd.Timestamp, out_dir: str | Path, model_uri: str | None = None,
          explain_all: bool = False, log_to_mlflow: bool = True) -> dict[str, Any]:
    """Score, explain, assign playbooks and write scores, alerts, report and summary into ``out_dir``."""
    from inference.drift import scoring_drift
    from inference.playbooks import assign_control_group, assign_playbooks, load_playbooks
    from inference.report import render_report
    from model.card import model_card
    from model.registry import load_churn_model, resolve_model_uri, setup_mlflow

    scfg = cfg.scoring
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    tier_names = [t.name for t in cfg.features.value_tiers]
    book = load_playbooks(resolve_path(scfg.playbooks), tier_names)  # validate config before any heavy work
    tracking_uri = setup_mlflow(cfg.mlflow)
    uri, version = resolve_model_uri(cfg.mlflow.model_name, model_uri, scfg.model_alias)
    model = load_churn_model(uri)
    log.info("model %s (version %s), cutoff %s", uri, version, as_of.date())

    t = time.perf_counter()
    log.info("building features at cutoff %s ...", as_of.date())
    builder = FeatureBuilder(tables, cfg, event_types=model.meta.get("event_types"))
    fs = builder.build(as_of)
    frame = fs.frame
    specs = {s.name: s for s in fs.specs}
    missing = [f for f in model.features if f not in specs]
    if missing:
        from churn.errors import DataError

        raise DataError("features", missing[0], f"the model needs feature(s) this data cannot produce: {missing[:8]} "
                        "(is a table missing, or was the model trained with another config?)")
    timings["features_s"] = time.perf_counter() - t
    n = len(frame)
    if n == 0:
        from churn.errors import DataError

        raise DataError("customers", None, f"no customer is active at {as_of.date()}")

    t = time.perf_counter()
    p = np.empty(n)
    chunks = _chunks(n, scfg.chunk_size)
    for i, sl in enumerate(chunks, 1):
        p[sl] = model.predict_proba(frame.iloc[sl])
        if len(chunks) > 1:
            log.info("scored chunk %d/%d (%s rows)", i, len(chunks), f"{sl.stop:,}")
    timings["predict_s"] = time.perf_counter() - t

    econ = cfg.training.economics
    clv = frame["lifetime_value"].to_numpy(dtype=float) if "lifetime_value" in frame else np.zeros(n)
    t = time.perf_counter()
    timing = _survival_columns(model, frame, cfg, chunks)
    if timing is not None and scfg.lifetime_value == "survival":
        from inference.timing import survival_lifetime_value

        clv = survival_lifetime_value(frame["monthly_revenue"].to_numpy(dtype=float),
                                      timing["expected_lifetime_days"].to_numpy(), cfg.features.clv.margin)
    timings["survival_s"] = time.perf_counter() - t
    ids = frame["customer_id"].astype(str)
    out_ids = al.pseudonymize(ids, scfg.pseudonymize_key) if scfg.pseudonymize_key else ids
    meta_cols = {"model_name": cfg.mlflow.model_name, "model_version": str(version or uri),
                 "input_hash": tables.input_hash}
    scores = pd.DataFrame({
        "customer_id": out_ids.to_numpy(), "cutoff": as_of, "churn_probability": p,
        "risk_tier": al.risk_tier(p, scfg.risk_tiers),
        "value_tier": frame["value_tier"].astype(str).to_numpy() if "value_tier" in frame else tier_names[-1],
        "lifecycle_stage": frame["lifecycle_stage"].astype(str).to_numpy() if "lifecycle_stage" in frame else "active",
        "lifetime_value": clv, "value_at_risk": p * clv, **meta_cols})
    if timing is not None:
        scores = pd.concat([scores, timing.set_axis(scores.index)], axis=1)

    # ------------------------------------------------------------ alerts: explain, playbooks, budget
    min_rank = al.RISK_ORDER[scfg.alert_min_tier]
    is_alert = scores["risk_tier"].map(al.RISK_ORDER).to_numpy() >= min_rank
    alert_idx = np.flatnonzero(is_alert)
    if scfg.max_alerts is not None and len(alert_idx) > scfg.max_alerts:
        keep = np.argsort(-scores["value_at_risk"].to_numpy()[alert_idx], kind="stable")[: scfg.max_alerts]
        alert_idx = np.sort(alert_idx[keep])
    explain_idx = np.arange(n) if explain_all else alert_idx
    t = time.perf_counter()
    log.info("explaining %s customers (%s) ...", f"{len(explain_idx):,}", scfg.explainer)
    typical = typical_values(frame, model.features, specs)
    reason_parts = []
    contribs = []
    for sl in _chunks(len(explain_idx), 50_000):
        rows = explain_idx[sl]
        sub = frame.iloc[rows]
        contrib = model.contributions(sub, explainer=scfg.explainer)
        contribs.append(contrib)
        reason_parts.append(explain_rows(sub, contrib, p[rows], model.features, specs, typical, scfg.top_reasons))
        log.info("explained %s/%s customers", f"{sl.stop:,}", f"{len(explain_idx):,}")
    timings["explain_s"] = time.perf_counter() - t
    reasons = pd.concat(reason_parts) if reason_parts else pd.DataFrame(
        columns=["reasons", "protective_reason", "reason_families", "reason_groups"]
        + [f"reason_{k + 1}" for k in range(scfg.top_reasons)])
    if explain_all:
        reasons = reasons.iloc[np.searchsorted(explain_idx, alert_idx)] if len(alert_idx) else reasons.iloc[:0]

    alerts = scores.iloc[alert_idx].reset_index(drop=True)
    reasons = reasons.reset_index(drop=True)
    for col in reasons.columns:
        alerts[col] = reasons[col].to_numpy() if len(alerts) else []
    alerts = assign_playbooks(alerts, book)
    cost = alerts["playbook_cost"].to_numpy(dtype=float)
    alerts["expected_net_value"] = al.expected_net_value(alerts["churn_probability"].to_numpy(),
                                                         alerts["lifetime_value"].to_numpy(),
                                                         alerts["playbook_acceptance_rate"].to_numpy(dtype=float),
                                                         cost, econ)
    alerts["selected"] = al.select_under_budget(alerts["expected_net_value"].to_numpy(), cost, scfg.budget)
    alerts["control_group"] = (assign_control_group(alerts, book).to_numpy() & alerts["selected"].to_numpy()
                               if len(alerts) else np.zeros(0, dtype=bool))
    log.info("control group: %d of %d selected alerts held out (%d alerts in all)", int(alerts["control_group"].sum()),
             int(alerts["selected"].sum()), len(alerts))
    alerts = al.order_alerts(alerts)
    extra = ["reason_families", "reason_groups", "playbook_kind", "playbook_acceptance_rate"]
    if timing is not None:
        from inference.timing import alert_timing

        horizons = model.meta.get("survival_horizons_days", [])
        alerts["timing"] = alert_timing(alerts, horizons, _lifetime_days(cfg)) if len(alerts) else []
        extra += ["timing", "urgency", "median_days_to_churn", *[f"churn_within_{h}d" for h in horizons],
                  "expected_lifetime_days"]
    alerts = alerts[[c for c in al.ALERT_COLUMNS if c in alerts.columns] + [c for c in extra if c in alerts.columns]]

    # ------------------------------------------------------------ monitoring: drift against training reference
    drift = None
    recommendation = None
    if model.reference is not None:
        drift, recommendation = scoring_drift(model.reference, frame, model.features, p)
    importance = (global_group_importance(np.vstack(contribs), p[explain_idx], model.features, specs)
                  if contribs else None)

    # ------------------------------------------------------------ write everything atomically
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {
        "command": "score", "cutoff": as_of.date().isoformat(), "input_hash": tables.input_hash,
        "data_files": [str(f) for f in tables.files], "tracking_uri": tracking_uri,
        "model_name": cfg.mlflow.model_name, "model_version": version, "model_uri": uri,
        "model_alias": scfg.model_alias if model_uri is None else None,
        "horizon_days": model.meta.get("label", {}).get("horizon_days"),
        "n_scored": int(n), "n_alerts": int(len(alerts)), "n_selected": int(alerts["selected"].sum()),
        "n_control": int(alerts["control_group"].sum()), "budget": scfg.budget,
        "budget_spent": float(alerts.loc[alerts["selected"] & ~alerts["control_group"], "playbook_cost"].sum()),
        "expected_net_value": float(alerts.loc[alerts["selected"] & ~alerts["control_group"], "expected_net_value"].sum()),
        "value_at_risk_total": float(scores["value_at_risk"].sum()),
        "value_at_risk_alerts": float(alerts["value_at_risk"].sum()),
        "risk_tiers": scores["risk_tier"].value_counts().to_dict(),
        "drift_recommendation": recommendation,
        "time_to_churn": _timing_summary(scores, alerts, model.meta) if timing is not None else None,
        "complaint_disagreements": builder.complaint_checks,  # category vs content (features.sentiment)
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "currency": scfg.currency,
        "model_card": model_card(model.meta, cfg.mlflow.model_name, version, uri),
    }
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".staging-") as tmp:
        st = Path(tmp)
        write_parquet(st / "scores.parquet", scores)
        write_parquet(st / "alerts.parquet", alerts)
        flat = alerts.drop(columns=["reasons"]).assign(
            reason_families=alerts["reason_families"].map(lambda x: "|".join(x)),
            reason_groups=alerts["reason_groups"].map(lambda x: "|".join(x)),
            reasons_json=alerts["reasons"].map(lambda x: json.dumps(list(x), ensure_ascii=False, sort_keys=True)))
        write_csv(st / "alerts.csv", flat)
        write_jsonl(st / "alerts.jsonl", _records(alerts))
        if drift is not None:
            write_csv(st / "drift.csv", drift)
        t = time.perf_counter()
        log.info("rendering the report (%s alerts) ...", f"{len(alerts):,}")
        render_report(st / "report.html", summary=summary, scores=scores, alerts=alerts,
                      global_importance=importance, drift=drift, top_n=scfg.report_top_n)
        timings["report_s"] = time.perf_counter() - t
        timings["total_s"] = time.perf_counter() - t0
        outputs = {name: str(out_dir / name) for name in sorted(p.name for p in st.iterdir())}
        outputs["summary"] = str(out_dir / "summary.json")
        summary.update({"outputs": outputs, "timings_s": timings})
        if log_to_mlflow:
            summary["run_id"] = _log_scoring_run(cfg, summary, st)
        write_json(st / "summary.json", summary)
        for f in sorted(st.iterdir()):
            shutil.move(str(f), out_dir / f.name)
    log.info("scored %s customers, %s alerts (%s selected, %s control) in %.1fs -> %s (report %s)", f"{n:,}",
             len(alerts), summary["n_selected"], summary["n_control"], timings["total_s"], out_dir,
             outputs.get("report.html"))
    return summary


def _timing_summary(scores: pd.DataFrame, alerts: pd.DataFrame, meta: dict[str, Any]) -> dict[str, Any]:
    """Urgency counts and how far the survival model's horizon probability is from the classifier's."""
    h = meta.get("label", {}).get("horizon_days") if meta.get("label", {}).get("definition") == "churn_date" \
        else meta.get("label", {}).get("inactivity_days")
    out: dict[str, Any] = {"alerts_by_urgency": alerts["urgency"].value_counts().sort_index().to_dict()
                           if len(alerts) else {},
                           "median_days_to_churn_alerts": float(alerts["median_days_to_churn"].median())
                           if len(alerts) else None}
    col = f"churn_within_{h}d"
    if col in scores:
        diff = scores[col].to_numpy() - scores["churn_probability"].to_numpy()
        out.update({"horizon_days": h, "mean_survival_probability": float(scores[col].mean()),
                    "mean_classifier_probability": float(scores["churn_probability"].mean()),
                    "mean_abs_disagreement": float(np.abs(diff).mean())})
    return out


def _lifetime_days(cfg: Config) -> float:
    from churn.timebase import CLV_DAYS_PER_MONTH

    return cfg.features.clv.horizon_months * CLV_DAYS_PER_MONTH


def _survival_columns(model: Any, frame: pd.DataFrame, cfg: Config, chunks: list[slice]) -> pd.DataFrame | None:
    """Time-to-churn columns per scored customer, or None when the model has no survival part."""
    from churn.errors import ConfigError

    if model.survival is None:
        if cfg.scoring.lifetime_value == "survival":
            raise ConfigError("scoring.lifetime_value is 'survival' but this model has no survival part "
                              "(retrain with training.survival.enabled: true)")
        return None
    if cfg.scoring.lifetime_value == "survival" and "monthly_revenue" not in frame:
        raise ConfigError("scoring.lifetime_value is 'survival' but there is no monthly_revenue feature "
                          "(it needs a transactions table)")
    from inference.timing import survival_columns

    mu = np.empty(len(frame))
    for sl in chunks:
        mu[sl] = model.survival.mu(model.dmatrix(frame.iloc[sl]))
    return survival_columns(model.survival, mu, model.meta.get("survival_horizons_days", [30, 90, 180]),
                            _lifetime_days(cfg), cfg.features.clv.discount_rate_annual, cfg.scoring.urgency_days)


def _records(alerts: pd.DataFrame) -> list[dict[str, Any]]:
    recs = []
    for rec in alerts.to_dict("records"):
        rec["cutoff"] = pd.Timestamp(rec["cutoff"]).date().isoformat()
        rec["reasons"] = list(rec["reasons"])
        rec["reason_families"] = list(rec["reason_families"])
        rec["reason_groups"] = list(rec["reason_groups"])
        for k, v in rec.items():
            if isinstance(v, float) and not np.isfinite(v):
                rec[k] = None
        recs.append(rec)
    return recs


def _log_scoring_run(cfg: Config, summary: dict[str, Any], staged: Path) -> str:
    """Audit trail: one MLflow run per scoring batch with its input hash, model version and outputs."""
    import mlflow

    with mlflow.start_run(run_name=f"score-{summary['cutoff']}") as run:
        mlflow.set_tags({"stage": "score", "input_hash": summary["input_hash"], "model_uri": summary["model_uri"],
                         "model_version": str(summary["model_version"]), "cutoff": summary["cutoff"]})
        mlflow.log_metrics({k: float(summary[k]) for k in ("n_scored", "n_alerts", "n_selected", "n_control",
                                                            "value_at_risk_total", "expected_net_value")})
        for name in ("alerts.csv", "drift.csv"):
            if (staged / name).exists():
                mlflow.log_artifact(str(staged / name), artifact_path="scoring")
        return run.info.run_id
