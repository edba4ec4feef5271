"""``churn refresh``: the loop a scheduler runs (cron, Airflow): score, evaluate, retrain and promote on evidence.

One call, for the latest complete data in ``--data``:

1. evaluates every earlier run in ``<state>/runs/`` whose label horizon is now over (``churn monitor``,
   written to ``<run>/monitor/``), setting the estimate recorded at scoring beside the realised value;
2. scores the latest cutoff with the champion into ``<state>/runs/<cutoff>/`` (with the score change
   since the previous run), unless that run exists already for the same data and champion;
3. retrains a challenger when the evidence says so (the scoring run's drift assessment recommends it,
   or an evaluated run's realised ROC-AUC fell below its own estimate's interval) or when
   ``monitoring.retrain_every_days`` of new labelled data have accumulated since the newest version,
   but only if there is a labelled cutoff the newest version has not seen;
4. promotes the challenger only through the gate (:func:`training.promote.promote` with ``--data``:
   a margin, several out-of-time windows) and then re-scores the cutoff with the new champion;
5. writes ``<state>/summary.json`` saying what it did and why.

Exit codes: 0 something was done and the champion is fine; 3 the evidence says the champion got
worse and no challenger was promoted (look at it); 99 nothing new to do (Airflow's BashOperator
treats 99 as "skipped"); 65/66/78 bad data / missing input / bad config, as for every command.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pandas as pd

from churn.config import Config
from churn.errors import InputNotFoundError
from churn.timebase import default_cutoff

log = logging.getLogger(__name__)

EXIT_DONE, EXIT_ATTENTION, EXIT_NOTHING_NEW = 0, 3, 99
EXIT_MEANING = {EXIT_DONE: "done", EXIT_ATTENTION: "attention: evidence of a worse champion, nothing promoted",
                EXIT_NOTHING_NEW: "nothing new to do"}


def _read_summary(folder: Path) -> dict[str, Any] | None:
    path = folder / "summary.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def evaluate_pending(runs: Path, tables: Any, cfg: Config) -> tuple[list[dict[str, Any]], list[str]]:
    """Evaluate the runs whose horizon is over and that have no ``monitor/monitor.json`` yet.

    Returns one entry per evaluated run (cutoff, realised ROC-AUC, estimate_vs_realized) and the
    cutoffs still waiting for their outcomes.
    """
    from inference.monitor import HorizonNotOverError, evaluate_alerts, write_monitor_report

    done, waiting = [], []
    for run in sorted(p for p in runs.glob("*") if (p / "summary.json").is_file()):
        if (run / "monitor" / "monitor.json").is_file():
            continue
        try:
            res = evaluate_alerts(run, tables, cfg.label, pseudonymize_key=cfg.scoring.pseudonymize_key)
        except HorizonNotOverError:
            waiting.append(run.name)
            continue
        write_monitor_report(res, run / "monitor")
        done.append({"run": str(run), "cutoff": res["cutoff"], "model_version": res["model_version"],
                     "roc_auc": (res["metrics"] or {}).get("roc_auc"),
                     "estimate_vs_realized": res.get("estimate_vs_realized")})
    return done, waiting


def retrain_reasons(drift: dict[str, Any] | None, evaluated: list[dict[str, Any]], new_label_days: int | None,
                    every_days: int | None) -> tuple[list[str], bool]:
    """Why to retrain (sentences) and whether any reason is evidence that the champion got worse.

    ``drift``: the latest scoring run's drift assessment; ``evaluated``: :func:`evaluate_pending` entries;
    ``new_label_days``: days between the newest version's test cutoff and the latest labelled cutoff.
    """
    reasons, evidence = [], False
    if drift and drift.get("retrain_recommended"):
        reasons.append(f"scoring: {drift.get('message')}")
        evidence = True
    for ev in evaluated:
        auc = next((r for r in ev.get("estimate_vs_realized") or [] if r["metric"] == "roc_auc"), None)
        if auc and auc.get("inside_interval") is False and auc["realized"] < auc["low"]:
            reasons.append(f"run {ev['cutoff']}: realised ROC-AUC {auc['realized']:.3f} below the interval "
                           f"[{auc['low']:.3f}, {auc['high']:.3f}] estimated at scoring")
            evidence = True
    if every_days is not None and new_label_days is not None and new_label_days >= every_days:
        reasons.append(f"cadence: {new_label_days} days of new labelled data since the newest version "
                       f"(monitoring.retrain_every_days {every_days})")
    return reasons, evidence


def _newest_version(name: str) -> tuple[str | None, str | None]:
    """The newest registered version of ``name`` and its test cutoff tag."""
    from model.registry import mlflow_client

    versions = mlflow_client().search_model_versions(f"name='{name}'")
    if not versions:
        return None, None
    newest = max(versions, key=lambda v: int(v.version))
    return str(newest.version), newest.tags.get("test_cutoff")


def _score_run(tables: Any, cfg: Config, as_of: pd.Timestamp, runs: Path, champion: str,
               force: bool = False) -> dict[str, Any] | None:
    """Score ``as_of`` into ``runs/<date>`` unless that run exists for the same data and champion."""
    from inference.score import score

    run_dir = runs / as_of.date().isoformat()
    old = _read_summary(run_dir)
    if not force and old and old.get("input_hash") == tables.input_hash and str(old.get("model_version")) == champion:
        return None
    earlier = sorted(p for p in runs.glob("*") if p.name < run_dir.name and (p / "summary.json").is_file())
    return score(tables, cfg, as_of, run_dir, previous=earlier[-1] if earlier else None)


def _retrain(tables: Any, cfg: Config, data_dir: str | Path, reasons: list[str]) -> dict[str, Any]:
    from training.promote import promote
    from training.train import train

    trained = train(tables, cfg, data_dir)
    version = str(trained["model_version"])
    gate = promote(cfg, version=version, data_dir=data_dir, reason="refresh: " + "; ".join(reasons)[:500])
    return {"trained_version": version, "run_id": trained["run_id"], "test_roc_auc": trained["metrics"]["test_roc_auc"],
            "promoted": gate["promoted"], "gate": gate["message"]}


def refresh(cfg: Config, data_dir: str | Path, state_dir: str | Path) -> dict[str, Any]:
    """One refresh step (see the module docstring); returns the summary it wrote, with ``exit_code``."""
    from churn.io import write_json
    from features.contract import load_tables
    from features.timeline import training_cutoffs
    from model.registry import CHAMPION, get_alias_version, setup_mlflow

    state = Path(state_dir)
    runs = state / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    tables = load_tables(data_dir, cfg)
    as_of = default_cutoff(tables.data_end)
    setup_mlflow(cfg.mlflow)
    champion = get_alias_version(cfg.mlflow.model_name, CHAMPION)
    if champion is None:
        raise InputNotFoundError(f"model '{cfg.mlflow.model_name}' has no champion: run `churn train` first")
    evaluated, waiting = evaluate_pending(runs, tables, cfg)
    scored = _score_run(tables, cfg, as_of, runs, champion)
    latest = _read_summary(runs / as_of.date().isoformat()) or {}
    newest, newest_cutoff = _newest_version(cfg.mlflow.model_name)
    labelled = training_cutoffs(tables, cfg.label, 1, cfg.training.cutoff_frequency, cfg.training.min_history_days)[-1]
    new_days = (labelled - pd.Timestamp(newest_cutoff)).days if newest_cutoff else None
    reasons, evidence = retrain_reasons(latest.get("drift"), evaluated, new_days, cfg.monitoring.retrain_every_days)
    retrain: dict[str, Any] | None = None
    if reasons and new_days is not None and new_days <= 0:
        retrain = {"skipped": f"no labelled cutoff newer than v{newest}'s test cutoff {newest_cutoff}: "
                              "a retrain would see the same data"}
    elif reasons:
        retrain = _retrain(tables, cfg, data_dir, reasons)
        if retrain["promoted"]:
            champion = retrain["trained_version"]
            scored = _score_run(tables, cfg, as_of, runs, champion, force=True) or scored
    summary = _summary(as_of, tables, champion, evaluated, waiting, scored, reasons, evidence, retrain)
    summary["outputs"] = {"summary": str(state / "summary.json"), "runs": str(runs)}
    write_json(state / "summary.json", summary)
    log.info("refresh %s: %s", summary["cutoff"], summary["message"])
    return summary


def _summary(as_of: pd.Timestamp, tables: Any, champion: str, evaluated: list[dict[str, Any]], waiting: list[str],
             scored: dict[str, Any] | None, reasons: list[str], evidence: bool,
             retrain: dict[str, Any] | None) -> dict[str, Any]:
    """What refresh did and why, with the exit code a scheduler acts on."""
    from datetime import UTC, datetime

    actions = [f"evaluated run {e['cutoff']}" for e in evaluated]
    if scored:
        actions.append(f"scored {scored['cutoff']} with v{scored['model_version']} ({scored['n_alerts']} alerts)")
    if retrain and "trained_version" in retrain:
        actions.append(f"trained v{retrain['trained_version']}: " + ("promoted" if retrain["promoted"] else
                                                                     "not promoted"))
    promoted = bool(retrain and retrain.get("promoted"))
    code = EXIT_NOTHING_NEW if not actions else (EXIT_ATTENTION if evidence and not promoted else EXIT_DONE)
    message = "; ".join(actions) if actions else f"nothing new: {as_of.date()} already scored with v{champion}"
    if reasons:
        message += " | retrain because " + "; ".join(reasons)
    if retrain and "skipped" in retrain:
        message += f" | retrain skipped: {retrain['skipped']}"
    return {"command": "refresh", "cutoff": as_of.date().isoformat(), "data_end": tables.data_end.isoformat(),
            "input_hash": tables.input_hash, "champion": champion, "actions": actions, "evaluated": evaluated,
            "waiting_for_outcomes": waiting, "scored": scored is not None,
            "scoring": {k: scored.get(k) for k in ("cutoff", "model_version", "n_scored", "n_alerts",
                                                    "drift_recommendation", "run_id")} if scored else None,
            "retrain_reasons": reasons, "retrain": retrain, "exit_code": code, "exit_meaning": EXIT_MEANING[code],
            "message": message, "generated_at": datetime.now(UTC).isoformat(timespec="seconds")}
