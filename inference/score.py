"""Batch scoring: every active customer scored, alerted customers explained, playbooks attached.

Memory is bounded by scoring in chunks of ``scoring.chunk_size`` rows; explanation work (exact
TreeSHAP) is spent only on alerted customers. All outputs are staged in a temporary folder and
moved into ``--out`` only when everything succeeded.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from churn.config import Config, resolve_path
from churn.io import write_csv, write_json, write_jsonl, write_parquet
from churn.publish import fault_point, new_staging, publish
from churn.vocab import DEFAULT_VALUE_TIERS
from features.build import FeatureBuilder
from features.contract import Tables
from features.flags import active_flags
from inference import alerts as al
from inference.counterfactual import counterfactual_columns, search_for_model
from inference.explain import explain_rows, global_group_importance, typical_values

log = logging.getLogger(__name__)
_T = TypeVar("_T")


def _chunks(n: int, size: int) -> list[slice]:
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def snapshot_as_of(tables: Tables, as_of: pd.Timestamp | None) -> pd.Timestamp:
    """The date a snapshot table describes: ``--as-of``, else ``data.observed_until``, else the customers
    file's modification date (an export's date); recorded as the scores' cutoff."""
    if as_of is not None:
        return pd.Timestamp(as_of)
    if tables.observed_until is not None:
        return pd.Timestamp(tables.observed_until)
    stamp = pd.Timestamp(tables.files[0].stat().st_mtime, unit="s").normalize()
    log.info("snapshot scored as of %s, the modification date of %s (give --as-of for the export date)",
             stamp.date(), tables.files[0].name)
    return stamp


def score(tables: Tables, cfg: Config, as_of: pd.Timestamp, out_dir: str | Path, model_uri: str | None = None,
          explain_all: bool = False, log_to_mlflow: bool = True,
          publish_as: str | Path | None = None, previous: str | Path | None = None,
          mlflow_worker: Any = None) -> dict[str, Any]:
    """Score, explain, assign playbooks and write scores, alerts, report and summary into ``out_dir``.

    Everything is staged beside ``out_dir`` and published as one set (:mod:`churn.publish`); the MLflow
    scoring run is finished only after that. ``publish_as``: the path the summary names the outputs under
    when ``out_dir`` is itself inside a staging folder (``churn demo``). ``previous``: an earlier scoring run
    (its folder or MLflow run id): every alert then says how and why its score changed since
    (:mod:`inference.change`) and whether it is new. ``mlflow_worker``: a started
    :class:`model.mlflow_worker.MlflowWorker` that does the MLflow work (``churn score``); default: this process.
    """
    from model.mlflow_worker import LocalMlflow

    t0 = time.perf_counter()
    runs = mlflow_worker or LocalMlflow()
    timings: dict[str, float] = {}
    run = _open_model(cfg, model_uri, as_of)
    builder, frame, specs = _timed(timings, "features_s", _features, tables, cfg, run.model, as_of)
    p, chunks = _timed(timings, "predict_s", _predict, run.model, frame, cfg.scoring.chunk_size)
    meta_cols = {"model_name": cfg.mlflow.model_name, "model_version": str(run.version or run.uri),
                 "input_hash": tables.input_hash}
    scores = _timed(timings, "rows_s", _score_table, frame, p, cfg, run.model, chunks, as_of, meta_cols)
    alert_idx = _alert_rows(scores, cfg.scoring)
    explain_idx = np.arange(len(frame)) if explain_all else alert_idx
    reasons, contribs = _timed(timings, "explain_s", _explain, frame, p, explain_idx, run.model, specs, cfg)
    if explain_all:
        reasons = reasons.iloc[np.searchsorted(explain_idx, alert_idx)] if len(alert_idx) else reasons.iloc[:0]
    alerts = _alert_table(scores, reasons, frame, alert_idx)
    if cfg.scoring.counterfactual and len(alerts):
        alerts = _timed(timings, "counterfactual_s", add_counterfactuals, alerts, frame, p[alert_idx], alert_idx,
                        run.model, specs, cfg)
    alerts, decisions = _decide(alerts, scores, tables, cfg, run, frame, specs, alert_idx, as_of)
    changes = None
    if previous is not None:
        from inference.change import compare_with_previous

        if not Path(previous).is_dir():  # an MLflow run id: this process reads the store
            from model.registry import setup_mlflow

            setup_mlflow(cfg.mlflow)

        alerts, changes = compare_with_previous(previous, tables, cfg, run.model, frame, scores["customer_id"], as_of,
                                                alerts, specs)
    drift, drift_evidence, estimate = _monitoring(run.model, frame, p, alert_idx, cfg)
    importance = (global_group_importance(np.vstack(contribs), p[explain_idx], run.model.features, specs,
                                          run.model.calibrator.transform) if contribs else None)
    summary = _score_summary(tables, cfg, run, as_of, model_uri, scores, alerts, builder, runs) | {
        "drift_recommendation": drift_evidence.get("recommendation") if drift_evidence else None,
        "drift": drift_evidence, "performance_estimate": estimate, "score_change": changes, "decisions": decisions}
    shown = _publish_outputs(cfg, summary, Path(out_dir), scores, alerts, drift, importance, timings, t0, publish_as,
                             runs if log_to_mlflow else None)
    log.info("scored %s customers, %s alerts (%s selected, %s control) in %.1fs -> %s (report %s)",
             f"{len(frame):,}", len(alerts), summary["n_selected"], summary["n_control"], timings["total_s"], shown,
             summary["outputs"].get("report.html"))
    return summary


def _timed(timings: dict[str, float], name: str, step: Callable[..., _T], *args: Any) -> _T:
    """``step(*args)``, its wall time recorded as ``timings[name]``."""
    t = time.perf_counter()
    out = step(*args)
    timings[name] = time.perf_counter() - t
    return out


@dataclass(frozen=True)
class _ModelRun:
    """The model being scored with, where it came from, and the playbooks it is scored for."""

    model: Any
    uri: str
    version: str | None
    tracking_uri: str
    book: Any


def _open_model(cfg: Config, model_uri: str | None, as_of: pd.Timestamp) -> _ModelRun:
    """Validate the playbooks (before any heavy work) and load the model: the registry's alias read straight from a
    local SQLite store when it can be (no MLflow import), else through MLflow."""
    from inference.playbooks import load_playbooks
    from model.artifact import ChurnModel
    from model.registry import load_churn_model, local_alias_model, resolve_model_uri, setup_mlflow

    tier_names = [t.name for t in cfg.features.value_tiers]
    book = load_playbooks(resolve_path(cfg.scoring.playbooks), tier_names)
    name, alias = cfg.mlflow.model_name, cfg.scoring.model_alias
    local = local_alias_model(cfg.mlflow.tracking_uri, name, alias) if model_uri is None else None
    if local is not None:
        (version, folder), uri, tracking_uri = local, f"models:/{name}@{alias}", cfg.mlflow.tracking_uri
        model = ChurnModel.load(folder)
    else:
        tracking_uri = setup_mlflow(cfg.mlflow)
        uri, version = resolve_model_uri(name, model_uri, alias)
        model = load_churn_model(uri)
    log.info("model %s (version %s), cutoff %s", uri, version, as_of.date())
    return _ModelRun(model, uri, version, tracking_uri, book)


def _features(tables: Tables, cfg: Config, model: Any, as_of: pd.Timestamp) -> tuple[FeatureBuilder, pd.DataFrame,
                                                                                     dict[str, Any]]:
    """The feature table at ``as_of`` (and its specs); no active customer or a feature the model needs is an error."""
    log.info("building features at cutoff %s ...", as_of.date())
    builder = FeatureBuilder(tables, cfg, event_types=model.meta.get("event_types"))
    fs = builder.build(as_of)
    specs = {s.name: s for s in fs.specs}
    if fs.frame.empty:
        from churn.errors import no_active_customers

        raise no_active_customers(as_of)  # before the feature check: an empty window cannot produce features
    missing = [f for f in model.features if f not in specs]
    if missing:
        from churn.errors import DataError

        raise DataError("features", missing[0], f"the model needs feature(s) this data cannot produce: {missing[:8]} "
                        "(is a table missing, or was the model trained with another config?)")
    return builder, fs.frame, specs


def _predict(model: Any, frame: pd.DataFrame, chunk_size: int) -> tuple[np.ndarray, list[slice]]:
    """Calibrated churn probabilities, in chunks of ``chunk_size`` rows (bounded memory)."""
    p = np.empty(len(frame))
    chunks = _chunks(len(frame), chunk_size)
    for i, sl in enumerate(chunks, 1):
        p[sl] = model.predict_proba(frame.iloc[sl])
        if len(chunks) > 1:
            log.info("scored chunk %d/%d (%s rows)", i, len(chunks), f"{sl.stop:,}")
    return p, chunks


def _score_table(frame: pd.DataFrame, p: np.ndarray, cfg: Config, model: Any, chunks: list[slice],
                 as_of: pd.Timestamp, meta_cols: dict[str, Any]) -> pd.DataFrame:
    """One row per scored customer: :func:`score_rows` with the cutoff and the model/input identity."""
    scores = score_rows(frame, p, cfg, model, chunks)
    scores.insert(1, "cutoff", as_of)
    return scores.assign(**meta_cols)


def _alert_rows(scores: pd.DataFrame, scfg: Any) -> np.ndarray:
    """Rows at or above the alert tier, the ``max_alerts`` largest values at risk first."""
    min_rank = al.RISK_ORDER[scfg.alert_min_tier]
    alert_idx = np.flatnonzero(scores["risk_tier"].map(al.RISK_ORDER).to_numpy() >= min_rank)
    return alert_idx[top_alerts(scores["value_at_risk"].to_numpy()[alert_idx], scfg.max_alerts)]


def _explain(frame: pd.DataFrame, p: np.ndarray, explain_idx: np.ndarray, model: Any, specs: dict[str, Any],
             cfg: Config) -> tuple[pd.DataFrame, list[np.ndarray]]:
    """Reasons for the rows ``explain_idx`` (in chunks) and their raw contributions."""
    scfg = cfg.scoring
    log.info("explaining %s customers (%s) ...", f"{len(explain_idx):,}", scfg.explainer)
    typical = typical_values(frame, model.features, specs)
    reason_parts, contribs = [], []
    for sl in _chunks(len(explain_idx), 50_000):
        rows = explain_idx[sl]
        sub = frame.iloc[rows]
        contrib = model.contributions(sub, explainer=scfg.explainer)
        contribs.append(contrib)
        reason_parts.append(explain_rows(sub, contrib, p[rows], model.features, specs, typical, scfg.top_reasons,
                                         calibrate=model.calibrator.transform, currency=cfg.training.economics.currency))
        log.info("explained %s/%s customers", f"{sl.stop:,}", f"{len(explain_idx):,}")
    reasons = pd.concat(reason_parts) if reason_parts else pd.DataFrame(
        columns=["reasons", "protective_reason", "reason_families", "reason_groups"]
        + [f"reason_{k + 1}" for k in range(scfg.top_reasons)])
    return reasons, contribs


def _alert_table(scores: pd.DataFrame, reasons: pd.DataFrame, frame: pd.DataFrame, alert_idx: np.ndarray) -> pd.DataFrame:
    """The alerted score rows with their reasons and early warnings."""
    alerts = scores.iloc[alert_idx].reset_index(drop=True)
    reasons = reasons.reset_index(drop=True)
    for col in reasons.columns:
        alerts[col] = reasons[col].to_numpy() if len(alerts) else []
    alerts["early_warnings"] = active_flags(frame.iloc[alert_idx]) if len(alerts) else []
    return alerts


def add_counterfactuals(alerts: pd.DataFrame, frame: pd.DataFrame, p_alerts: np.ndarray, alert_idx: np.ndarray,
                        model: Any, specs: dict[str, Any], cfg: Config) -> pd.DataFrame:
    """Per alert (rows ``alert_idx`` of ``frame``, probabilities ``p_alerts``), the smallest actionable change that
    brings it below the alert threshold; the search's cost scales from all of ``frame`` (both engines)."""
    scfg = cfg.scoring
    threshold = getattr(scfg.risk_tiers, "medium" if scfg.alert_min_tier == "low" else scfg.alert_min_tier)
    search = search_for_model(model, specs, scfg.actionable_features, threshold, frame)
    cf = counterfactual_columns(model, frame.iloc[alert_idx], p_alerts, search, specs, cfg.training.economics.currency)
    for col in cf.columns:
        alerts[col] = cf[col].to_numpy()
    return alerts


def _decide(alerts: pd.DataFrame, scores: pd.DataFrame, tables: Tables, cfg: Config, run: _ModelRun,
            frame: pd.DataFrame, specs: dict[str, Any], alert_idx: np.ndarray,
            as_of: pd.Timestamp) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Playbook effects (uplift model or priors) over the contact pool, the campaign history check, the
    budgeted selection, and reasons for the chosen contacts outside the alerts."""
    from features.treatments import check_history
    from inference.allocate import decision_summary
    from model.uplift import estimate_effects

    scfg, econ, book = cfg.scoring, cfg.training.economics, run.book
    effects, uplift_info = estimate_effects(cfg, scfg.model_alias, frame)
    pool_idx, cand = contact_pool(scores, alerts, alert_idx, pool_for(scfg.contact_pool, effects, uplift_info))
    if effects is not None:
        effects = effects.iloc[pool_idx].set_axis(cand.index)
    if tables.treatments is not None:
        check_history(tables.treatments, [pb.id for pb in book.playbooks], as_of)
    weight = cfg.training.uplift.effect_weight
    raw_ids = frame["customer_id"].astype(str).iloc[pool_idx].reset_index(drop=True)
    decided = decide_alerts(cand, book, econ, scfg.budget, lifetime_days(cfg), effects, raw_ids, weight)
    decisions = decision_summary(decided, book, econ, effects, uplift_info, weight)
    chosen = ~decided["customer_id"].isin(set(alerts["customer_id"])) & decided["selected"]
    if chosen.any():
        pos = pd.Index(scores["customer_id"]).get_indexer(decided.loc[chosen, "customer_id"])
        typical = typical_values(frame, run.model.features, specs)
        decided = explain_chosen(decided, chosen.to_numpy(), frame.iloc[pos], run.model, specs, typical, cfg)
    return alert_rows(decided, alerts["customer_id"]), decisions


def _score_summary(tables: Tables, cfg: Config, run: _ModelRun, as_of: pd.Timestamp, model_uri: str | None,
                   scores: pd.DataFrame, alerts: pd.DataFrame, builder: FeatureBuilder, runs: Any) -> dict[str, Any]:
    """The summary's identity, counts and totals (monitoring and decisions are added by the caller); the model card's
    registry facts come from ``runs`` (:mod:`model.mlflow_worker`)."""
    meta = run.model.meta
    return {
        "command": "score", "cutoff": as_of.date().isoformat(), "input_hash": tables.input_hash,
        "data_files": [str(f) for f in tables.files], "tracking_uri": run.tracking_uri,
        "model_name": cfg.mlflow.model_name, "model_version": run.version, "model_uri": run.uri,
        "model_alias": cfg.scoring.model_alias if model_uri is None else None,
        "horizon_days": meta.get("label", {}).get("horizon_days"),
        "n_scored": int(len(scores)), **alert_totals(alerts), "budget": cfg.scoring.budget,
        "value_at_risk_total": float(scores["value_at_risk"].sum()),
        "risk_tiers": scores["risk_tier"].value_counts().to_dict(),
        "currency": cfg.training.economics.currency,
        "time_to_churn": _timing_summary(scores, alerts, meta) if run.model.survival is not None else None,
        "complaint_disagreements": builder.complaint_checks,  # category vs content (features.sentiment)
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "model_card": runs.call("card", mlflow_cfg=cfg.mlflow.model_dump(), meta=meta, name=cfg.mlflow.model_name,
                                version=run.version, uri=run.uri),
    }


def _publish_outputs(cfg: Config, summary: dict[str, Any], out_dir: Path, scores: pd.DataFrame, alerts: pd.DataFrame,
                     drift: pd.DataFrame | None, importance: Any, timings: dict[str, float], t0: float,
                     publish_as: str | Path | None, runs: Any) -> Path:
    """Stage every output (tables, report, summary), publish them as one set and log the run; the shown path."""
    from inference.report import render_report

    staged = new_staging(out_dir)
    try:
        _write_outputs(staged, scores, alerts, drift)
        t = time.perf_counter()
        log.info("rendering the report (%s alerts) ...", f"{len(alerts):,}")
        render_report(staged / "report.html", summary=summary, scores=scores, alerts=alerts,
                      global_importance=importance, drift=drift, top_n=cfg.scoring.report_top_n,
                      drift_rows=cfg.monitoring.report_drift_rows)
        timings["report_s"] = time.perf_counter() - t
        timings["total_s"] = time.perf_counter() - t0
        shown = Path(publish_as) if publish_as is not None else out_dir
        outputs = {name: str(shown / name) for name in sorted(p.name for p in staged.iterdir())}
        outputs["summary"] = str(shown / "summary.json")
        summary.update({"outputs": outputs, "timings_s": timings})
        fault_point("staged")
        _finish(cfg, summary, staged, out_dir, runs)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    return shown


# Columns added by the explanation steps (reasons that add up, early warnings, the counterfactual), after the schema's.
EXPLAIN_COLUMNS = ["base_probability", "other_impact", "impact_summary", "early_warnings", "counterfactual",
                   "counterfactual_changes", "counterfactual_probability", "counterfactual_valid"]
_LIST_COLUMNS = ("early_warnings", "counterfactual_changes")


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


def lifetime_days(cfg: Config) -> float:
    """The CLV horizon in days: the survival model's expected lifetime is measured within it."""
    from churn.timebase import DAYS_PER_MONTH

    return cfg.features.clv.horizon_months * DAYS_PER_MONTH


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
                            lifetime_days(cfg), cfg.features.clv.discount_rate_annual, cfg.scoring.urgency_days)


def score_rows(frame: pd.DataFrame, p: np.ndarray, cfg: Config, model: Any,
               chunks: list[slice] | None = None) -> pd.DataFrame:
    """Per-customer score columns (both engines): id (pseudonymised if configured), probability, tiers, value,
    and the time-to-churn columns when the model has a survival part."""
    scfg = cfg.scoring
    n = len(frame)
    timing = _survival_columns(model, frame, cfg, chunks or [slice(0, n)])
    lowest_tier = cfg.features.value_tiers[-1].name if cfg.features.value_tiers else DEFAULT_VALUE_TIERS[-1]
    if "lifetime_value" in frame:
        clv = frame["lifetime_value"].to_numpy(dtype=float)
        tier = frame["value_tier"].astype(str).to_numpy() if "value_tier" in frame else lowest_tier
    else:  # no transactions table (e.g. snapshot data): a revenue column's CLV, or the documented fallback value
        from features.value import value_without_transactions

        clv, tier = value_without_transactions(frame, cfg.features)
    if timing is not None and scfg.lifetime_value == "survival":
        from inference.timing import survival_lifetime_value

        clv = survival_lifetime_value(frame["monthly_revenue"].to_numpy(dtype=float),
                                      timing["expected_lifetime_days"].to_numpy(), cfg.features.clv.margin)
    ids = frame["customer_id"].astype(str)
    out_ids = al.pseudonymize(ids, scfg.pseudonymize_key) if scfg.pseudonymize_key else ids
    out = pd.DataFrame({
        "customer_id": out_ids.to_numpy(), "churn_probability": p, "risk_tier": al.risk_tier(p, scfg.risk_tiers),
        "value_tier": tier,
        "lifecycle_stage": frame["lifecycle_stage"].astype(str).to_numpy() if "lifecycle_stage" in frame else "active",
        "lifetime_value": clv, "value_at_risk": p * clv})
    return out if timing is None else pd.concat([out, timing.set_axis(out.index)], axis=1)


def top_alerts(value_at_risk: np.ndarray, max_alerts: int | None) -> np.ndarray:
    """Positions (in row order) of the alerts kept under ``scoring.max_alerts``: highest value at risk, stable."""
    if max_alerts is None or len(value_at_risk) <= max_alerts:
        return np.arange(len(value_at_risk))
    return np.sort(np.argsort(-value_at_risk, kind="stable")[:max_alerts])


_POOL_LIST_COLUMNS = ("reasons", "reason_families", "reason_groups", *_LIST_COLUMNS)


def contact_pool(scores: pd.DataFrame, alerts: pd.DataFrame, alert_idx: np.ndarray,
                 pool: str) -> tuple[np.ndarray, pd.DataFrame]:
    """The customers allocation chooses from (positions in ``scores``, in row order) and their rows.

    ``pool`` "alerts": the alerts as they are. "scored": every scored customer; the alerts keep their
    explanation columns, the others are not explained (empty reasons and early warnings, so only rules that
    need neither can route them: in the shipped rules, the cheap default care).
    """
    if pool == "alerts" or len(alert_idx) == len(scores):
        return alert_idx, alerts
    rest = np.setdiff1d(np.arange(len(scores)), alert_idx)
    others = scores.iloc[rest].reset_index(drop=True)
    for col in alerts.columns:
        if col not in others.columns:
            listy = col in _POOL_LIST_COLUMNS or (len(alerts) and isinstance(alerts[col].iloc[0], list | np.ndarray))
            if listy:
                others[col] = [[] for _ in range(len(others))]
            else:
                others[col] = np.nan if pd.api.types.is_float_dtype(alerts[col]) else None
    both = pd.concat([alerts, others[alerts.columns]], ignore_index=True)
    pos = np.concatenate([alert_idx, rest])
    order = np.argsort(pos, kind="stable")
    return pos[order], both.iloc[order].reset_index(drop=True)


def pool_for(pool: str, effects: pd.DataFrame | None, info: dict[str, Any]) -> str:
    """The pool actually used: without uplift effects (priors say every contact helps) only the alerts."""
    if pool == "scored" and effects is None:
        info["note"] = f"{info.get('note') or 'priors'}; contacts are chosen among the alerts only"
        return "alerts"
    return pool


def explain_chosen(decided: pd.DataFrame, chosen: np.ndarray, feats: pd.DataFrame, model: Any,
                   specs: dict[str, Any], typical: dict[str, Any], cfg: Config) -> pd.DataFrame:
    """Reasons and early warnings for the chosen contacts that were not alerts (both engines), after the choice.

    ``feats``: their feature rows, in the order of ``decided[chosen]``. Eligibility was decided without them
    (:func:`contact_pool`); the alert files then explain every listed customer.
    """
    if not chosen.any():
        return decided
    p = decided.loc[chosen, "churn_probability"].to_numpy(dtype=float)
    contrib = model.contributions(feats, explainer=cfg.scoring.explainer)
    reasons = explain_rows(feats, contrib, p, model.features, specs, typical, cfg.scoring.top_reasons,
                           calibrate=model.calibrator.transform, currency=cfg.training.economics.currency)
    reasons = reasons.assign(early_warnings=active_flags(feats))
    out = decided.copy()
    at = np.flatnonzero(chosen)
    for col in [c for c in reasons.columns if c in out.columns]:
        floats = pd.api.types.is_float_dtype(out[col]) and pd.api.types.is_float_dtype(reasons[col])
        vals = out[col].to_numpy(dtype=float if floats else object).copy()
        vals[at] = reasons[col].to_numpy(dtype=vals.dtype)
        out[col] = vals
    return out


def alert_rows(decided: pd.DataFrame, alert_ids: pd.Series) -> pd.DataFrame:
    """The alert files' rows: the alerts and every selected customer of the pool, ranks renumbered (both engines)."""
    at_risk = decided["customer_id"].isin(set(alert_ids.astype(str)))
    keep = at_risk | decided["selected"]
    out = decided[keep.to_numpy()].reset_index(drop=True)
    out["rank"] = np.arange(1, len(out) + 1)
    at = out.columns.get_loc("risk_tier") + 1 if "risk_tier" in out else len(out.columns)  # schema order
    out.insert(at, "alert_kind", np.where(at_risk[keep].to_numpy(), "at_risk", "chosen_contact"))
    n_risk = int((out["alert_kind"] == "at_risk").sum())
    log.info("control group: %d of %d selected alerts held out (%d alerts in all: %d at risk, %d chosen contacts "
             "below the alert tier)", int(out["control_group"].sum()), int(out["selected"].sum()), len(out), n_risk,
             len(out) - n_risk)
    return out


def contact_plan(alerts: pd.DataFrame, book: Any, econ: Any) -> pd.DataFrame:
    """Playbook routing and the expected net value of contacting each alert (per row, both engines)."""
    from inference.playbooks import assign_playbooks

    alerts = assign_playbooks(alerts, book)
    alerts["expected_net_value"] = al.expected_net_value(alerts["churn_probability"].to_numpy(),
                                                         alerts["lifetime_value"].to_numpy(),
                                                         alerts["playbook_acceptance_rate"].to_numpy(dtype=float),
                                                         alerts["playbook_cost"].to_numpy(dtype=float), econ)
    return alerts


def decide_alerts(alerts: pd.DataFrame, book: Any, econ: Any, budget: float | None, lifetime_days: float,
                  effects: pd.DataFrame | None = None, raw_ids: pd.Series | None = None,
                  effect_weight: float = 1.0) -> pd.DataFrame:
    """Playbook choice and contacts by expected incremental value under the budget (:func:`inference.allocate.
    allocate`), control groups, rank and the alert schema: the one population step of both engines.

    ``alerts`` in the customers table's row order (ties in the selection keep it); ``effects``: the uplift
    model's per-playbook effects (None: the playbooks' priors); ``raw_ids``: un-pseudonymised ids for the
    control draw (None: the ids in ``alerts``).
    """
    from inference.allocate import allocate

    alerts = allocate(alerts, book, econ, budget, effects=effects, raw_ids=raw_ids, effect_weight=effect_weight)
    alerts = al.order_alerts(alerts)
    extra = ["reason_families", "reason_groups", "playbook_kind", "playbook_acceptance_rate", *EXPLAIN_COLUMNS]
    horizons = sorted(int(c[len("churn_within_"):-1]) for c in alerts.columns if c.startswith("churn_within_"))
    if horizons:
        from inference.timing import alert_timing

        alerts["timing"] = alert_timing(alerts, horizons, lifetime_days) if len(alerts) else []
        extra += ["timing", "urgency", "median_days_to_churn", *[f"churn_within_{h}d" for h in horizons],
                  "expected_lifetime_days"]
    return alerts[[c for c in al.ALERT_COLUMNS if c in alerts.columns] + [c for c in extra if c in alerts.columns]]


def alert_totals(alerts: pd.DataFrame) -> dict[str, Any]:
    """The summary's alert counts and totals (contacted = selected and not held out)."""
    treated = alerts["selected"] & ~alerts["control_group"]
    return {"n_alerts": int(len(alerts)), "n_selected": int(alerts["selected"].sum()),
            "n_control": int(alerts["control_group"].sum()),
            "budget_spent": float(alerts.loc[treated, "playbook_cost"].sum()),
            "expected_net_value": float(alerts.loc[treated, "expected_net_value"].sum()),
            "value_at_risk_alerts": float(alerts["value_at_risk"].sum())}


def write_alert_files(folder: Path, alerts: pd.DataFrame) -> None:
    """alerts.parquet, alerts.csv (reasons as JSON, lists joined with |) and alerts.jsonl into ``folder``."""
    write_parquet(folder / "alerts.parquet", alerts)
    flat = alerts.drop(columns=["reasons"]).assign(
        reason_families=alerts["reason_families"].map(lambda x: "|".join(x)),
        reason_groups=alerts["reason_groups"].map(lambda x: "|".join(x)),
        **({"change_groups": alerts["change_groups"].map(lambda x: "|".join(x))} if "change_groups" in alerts else {}),
        **{c: alerts[c].map(lambda x: json.dumps(list(x), sort_keys=True)) for c in _LIST_COLUMNS if c in alerts},
        reasons_json=alerts["reasons"].map(lambda x: json.dumps(list(x), ensure_ascii=False, sort_keys=True)))
    write_csv(folder / "alerts.csv", flat)
    write_jsonl(folder / "alerts.jsonl", _records(alerts))


def _monitoring(model: Any, frame: pd.DataFrame, p: np.ndarray, alert_idx: np.ndarray,
                cfg: Config) -> tuple[pd.DataFrame | None, dict[str, Any] | None, dict[str, Any]]:
    """Label-free performance estimate of this run, and drift evidence against the training reference."""
    from inference.drift import DriftSettings, assess_scoring_drift, booster_importance
    from inference.estimate import estimate_performance, recalibration_for

    m = cfg.monitoring
    alert = np.zeros(len(p), dtype=bool)
    alert[alert_idx] = True
    estimate = estimate_performance(p, alert, m.estimate_draws, m.estimate_level, seed=cfg.training.seed,
                                    recalibration=recalibration_for(model, m.estimate_recalibration))
    if model.reference is None:
        return None, None, estimate
    settings = DriftSettings(psi_warn=m.psi_warn, psi_alert=m.psi_alert, min_effect=m.min_effect,
                             min_sample=m.min_sample, important_features=m.important_features,
                             max_auc_drop=m.max_auc_drop)
    a = assess_scoring_drift(model.reference, frame, model.features, p,
                             booster_importance(model.booster, model.features), settings)
    evidence = {**a.evidence, "recommendation": a.recommendation,
                "n_drifted": int((a.table["status"] == "drift").sum())}
    return a.table, evidence, estimate


def _records(alerts: pd.DataFrame) -> list[dict[str, Any]]:
    recs = []
    for rec in alerts.to_dict("records"):
        rec["cutoff"] = pd.Timestamp(rec["cutoff"]).date().isoformat()
        rec["reasons"] = list(rec["reasons"])
        rec["reason_families"] = list(rec["reason_families"])
        rec["reason_groups"] = list(rec["reason_groups"])
        for c in ("change_groups", *_LIST_COLUMNS):
            if c in rec:
                rec[c] = list(rec[c])
        for k, v in rec.items():
            if isinstance(v, float) and not np.isfinite(v):
                rec[k] = None
        recs.append(rec)
    return recs


def _write_outputs(st: Path, scores: pd.DataFrame, alerts: pd.DataFrame, drift: pd.DataFrame | None) -> None:
    """Write the data outputs (scores, alerts in three formats, drift) into the staging folder ``st``."""
    write_parquet(st / "scores.parquet", scores)
    write_alert_files(st, alerts)
    if drift is not None:
        write_csv(st / "drift.csv", drift)


def _finish(cfg: Config, summary: dict[str, Any], staged: Path, out_dir: Path, runs: Any) -> None:
    """Write summary.json and publish the staged set; with MLflow (``runs``), the run ends (FINISHED) only after
    publication."""
    if runs is None:
        write_json(staged / "summary.json", summary)
        publish(staged, out_dir)
        return
    with _scoring_run(cfg, summary, staged, runs):
        write_json(staged / "summary.json", summary)
        publish(staged, out_dir)


@contextmanager
def _scoring_run(cfg: Config, summary: dict[str, Any], staged: Path, runs: Any = None) -> Iterator[str]:
    """The scoring batch's MLflow run (input hash, model version, counts, estimate, alert and drift files), open
    while the caller publishes; ``summary["run_id"]`` is set before the caller writes the summary. ``runs``: where
    the MLflow requests go (:mod:`model.mlflow_worker`; default: this process)."""
    from churn.mlflow_runs import owner_tags, scoring_run_record
    from model.mlflow_worker import LocalMlflow

    runs = runs or LocalMlflow()
    summary["run_id"] = runs.call("start", mlflow_cfg=cfg.mlflow.model_dump(), record=scoring_run_record(summary),
                                  staged=str(staged), owner=owner_tags())
    try:
        yield summary["run_id"]
    except BaseException:
        runs.call("end", status="FAILED")
        raise
    runs.call("end", status="FINISHED")
