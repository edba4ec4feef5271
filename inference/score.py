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
    from features.treatments import check_history
    from inference.allocate import allocate, decision_summary
    from training.uplift import estimate_effects
    from inference.playbooks import load_playbooks
    from inference.report import render_report
    from training.registry import load_churn_model, resolve_model_uri, setup_mlflow

    scfg = cfg.scoring
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    book = load_playbooks(resolve_path(scfg.playbooks))  # validate config before any heavy work
    tracking_uri = setup_mlflow(cfg.mlflow)
    uri, version = resolve_model_uri(cfg.mlflow.model_name, model_uri, scfg.model_alias)
    model = load_churn_model(uri)
    log.info("model %s (version %s), cutoff %s", uri, version, as_of.date())

    t = time.perf_counter()
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
    ids = frame["customer_id"].astype(str)
    out_ids = al.pseudonymize(ids, scfg.pseudonymize_key) if scfg.pseudonymize_key else ids
    meta_cols = {"model_name": cfg.mlflow.model_name, "model_version": str(version or uri),
                 "input_hash": tables.input_hash}
    scores = pd.DataFrame({
        "customer_id": out_ids.to_numpy(), "cutoff": as_of, "churn_probability": p,
        "risk_tier": al.risk_tier(p, scfg.risk_tiers),
        "value_tier": frame["value_tier"].astype(str).to_numpy() if "value_tier" in frame else "bronze",
        "lifecycle_stage": frame["lifecycle_stage"].astype(str).to_numpy() if "lifecycle_stage" in frame else "active",
        "lifetime_value": clv, "value_at_risk": p * clv, **meta_cols})

    # ------------------------------------------------------------ alerts: explain, playbooks, budget
    min_rank = al.RISK_ORDER[scfg.alert_min_tier]
    is_alert = scores["risk_tier"].map(al.RISK_ORDER).to_numpy() >= min_rank
    alert_idx = np.flatnonzero(is_alert)
    if scfg.max_alerts is not None and len(alert_idx) > scfg.max_alerts:
        keep = np.argsort(-scores["value_at_risk"].to_numpy()[alert_idx], kind="stable")[: scfg.max_alerts]
        alert_idx = np.sort(alert_idx[keep])
    explain_idx = np.arange(n) if explain_all else alert_idx
    t = time.perf_counter()
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
    effects, uplift_info = estimate_effects(cfg, scfg.model_alias, frame.iloc[alert_idx])
    if effects is not None:
        effects.index = alerts.index
    if tables.treatments is not None:
        check_history(tables.treatments, [p.id for p in book.playbooks], as_of)
    weight = cfg.training.uplift.effect_weight
    alerts = allocate(alerts, book, econ, scfg.budget, effects=effects, raw_ids=ids.iloc[alert_idx],
                      effect_weight=weight)
    decisions = decision_summary(alerts, book, econ, effects, uplift_info, weight)
    alerts = al.order_alerts(alerts)
    extra = ["reason_families", "reason_groups", "playbook_kind", "playbook_acceptance_rate"]
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
        "decisions": decisions,
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
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
    log.info("scored %s customers, %s alerts (%s selected, %s control) in %.1fs -> %s", f"{n:,}", len(alerts),
             summary["n_selected"], summary["n_control"], timings["total_s"], out_dir)
    return summary


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
