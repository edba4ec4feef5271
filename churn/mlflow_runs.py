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
