"""MLflow runs of killed processes: who owns a run, and marking the dead ones as KILLED.

A process killed with ``kill -9`` (or by the out-of-memory killer) never ends its MLflow run, which
would stay RUNNING forever. Every run this project starts carries the owner's host, pid and process
start time (:func:`owner_tags`); :func:`reap_dead_runs`, called when ``churn train`` / ``churn score``
starts, ends each RUNNING run of the experiment whose owner on this host is gone, with status KILLED
and a ``churn.ended_by`` tag. Nested runs (Optuna trials) of a reaped run are reaped with it. Runs
owned by another host are left alone (their process cannot be checked from here).
"""

from __future__ import annotations

import functools
import logging
import os
import socket
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

TAG_HOST, TAG_PID, TAG_START = "churn.host", "churn.pid", "churn.pid_start"


def _start_time(pid: int) -> str:
    """The process start time in clock ticks since boot (``/proc/<pid>/stat`` field 22), or "" where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[-1].split()[19]


def owner_tags() -> dict[str, str]:
    """Tags naming this process as the run's owner."""
    pid = os.getpid()
    return {TAG_HOST: socket.gethostname(), TAG_PID: str(pid), TAG_START: _start_time(pid)}


def owner_alive(tags: dict[str, str]) -> bool | None:
    """Whether the process named by a run's owner tags still runs: None when it cannot be told (other host, no tags)."""
    if tags.get(TAG_HOST) != socket.gethostname() or not tags.get(TAG_PID, "").isdigit():
        return None
    pid = int(tags[TAG_PID])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by another user
    started = tags.get(TAG_START, "")
    return not started or _start_time(pid) in ("", started)  # a reused pid started at another time


def mlflow_client() -> Any:
    """This process's one ``MlflowClient`` for the current tracking and registry URIs (made on first use).

    A command points MLflow at one store (``model.registry.setup_mlflow``), so in practice one client serves
    the whole process; a test that switches stores gets a client per store.
    """
    import mlflow

    return _client_for(mlflow.get_tracking_uri(), mlflow.get_registry_uri())


@functools.lru_cache(maxsize=8)
def _client_for(tracking_uri: str, registry_uri: str) -> Any:
    import mlflow

    return mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=registry_uri)


def reap_dead_runs(experiment: str) -> list[str]:
    """Mark the experiment's RUNNING runs whose owner process is gone as KILLED; return their ids."""
    client = mlflow_client()
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    running = client.search_runs([exp.experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=5000)
    dead = {r.info.run_id for r in running if owner_alive(r.data.tags) is False}
    dead |= {r.info.run_id for r in running if r.data.tags.get("mlflow.parentRunId") in dead}
    for run_id in sorted(dead):
        client.set_tag(run_id, "churn.ended_by", "reaped: its process was gone when the next churn command started")
        client.set_terminated(run_id, status="KILLED")
    if dead:
        log.warning("marked %d MLflow run(s) of killed processes as KILLED: %s", len(dead), sorted(dead))
    return sorted(dead)


_ALIAS_SQL = ("SELECT a.version, COALESCE(NULLIF(v.storage_location, ''), v.source) FROM registered_model_aliases a "
              "JOIN model_versions v ON v.workspace = a.workspace AND v.name = a.name AND v.version = a.version "
              "WHERE a.workspace = 'default' AND a.name = ? AND a.alias = ? AND v.current_stage != 'Deleted_Internal'")


def sqlite_alias_lookup(tracking_uri: str, name: str, alias: str) -> tuple[str | None, str | None] | None:
    """``(version, download URI)`` of ``name@alias`` read straight from a local SQLite store, without MLflow.

    ``(None, None)``: the store has no such alias. ``None``: this cannot be told here (not a local SQLite
    store, workspaces on, a schema this query does not know): ask MLflow. Read-only, one query, a few
    milliseconds against the 2 s that importing MLflow and building its SQLAlchemy store cost a process.
    Same answer as ``MlflowClient.get_model_version_by_alias`` + ``get_model_version_download_uri``.
    """
    import sqlite3
    from contextlib import closing

    if not tracking_uri.startswith("sqlite:///") or os.environ.get("MLFLOW_ENABLE_WORKSPACES", "").lower() in (
            "true", "1") or os.environ.get("MLFLOW_WORKSPACE"):
        return None
    db = Path(tracking_uri.removeprefix("sqlite:///"))
    if not db.is_file():
        return None
    try:
        with closing(sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)) as con:
            row = con.execute(_ALIAS_SQL, (name, alias)).fetchone()
    except sqlite3.Error as exc:
        log.debug("registry fast path unavailable (%s): asking MLflow", exc)
        return None
    return (str(row[0]), str(row[1])) if row else (None, None)


_RUN_COUNTS = ("n_scored", "n_alerts", "n_selected", "n_control", "value_at_risk_total", "expected_net_value")


def scoring_run_record(summary: dict[str, Any]) -> dict[str, Any]:
    """What the scoring run logs from a scoring summary (plain JSON: it may travel to the MLflow helper process)."""
    return {"cutoff": summary["cutoff"], "input_hash": summary["input_hash"], "model_uri": summary["model_uri"],
            "model_version": str(summary["model_version"]), "counts": {k: float(summary[k]) for k in _RUN_COUNTS},
            "estimate": estimate_metrics(summary.get("performance_estimate")),
            "output_dir": str(Path(summary["outputs"]["summary"]).resolve().parent)}


def log_scoring_run(record: dict[str, Any], staged: Path, owner: dict[str, str]) -> str:
    """Start the scoring batch's MLflow run (left active for the caller to end) and log the input hash, model
    version, counts, estimate and the alert and drift files of ``staged``; its run id."""
    import mlflow

    run = mlflow.start_run(run_name=f"score-{record['cutoff']}")
    try:
        mlflow.set_tags({"stage": "score", "input_hash": record["input_hash"], "model_uri": record["model_uri"],
                         "model_version": record["model_version"], "cutoff": record["cutoff"], **owner})
        mlflow.log_metrics(record["counts"])
        mlflow.log_metrics(record["estimate"])
        mlflow.set_tag("output_dir", record["output_dir"])
        for name in ("alerts.csv", "drift.csv"):
            if (staged / name).exists():
                mlflow.log_artifact(str(staged / name), artifact_path="scoring")
    except BaseException:
        mlflow.end_run(status="FAILED")
        raise
    return run.info.run_id


def estimate_metrics(estimate: dict[str, Any] | None) -> dict[str, float]:
    """The label-free estimate as flat MLflow metrics (est_roc_auc, est_roc_auc_low, ...)."""
    import math

    out: dict[str, float] = {}
    for key, name in (("roc_auc", "est_roc_auc"), ("precision_at_alert", "est_precision_at_alert"),
                      ("churners_in_alerts", "est_churners_in_alerts")):
        for part, suffix in (("estimate", ""), ("low", "_low"), ("high", "_high")):
            v = ((estimate or {}).get(key) or {}).get(part)
            if v is not None and math.isfinite(v):
                out[name + suffix] = float(v)
    extra = {"est_roc_auc_uncorrected": (estimate or {}).get("roc_auc_uncorrected"),
             "est_recalibration_slope": ((estimate or {}).get("recalibration") or {}).get("slope")}
    out.update({k: float(v) for k, v in extra.items() if isinstance(v, (int, float)) and math.isfinite(v)})
    return out
