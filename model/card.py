"""The model card: what a report reader needs to decide whether to trust the scores.

Training writes :func:`evaluation_card` into the model's JSON metadata (out-of-time metrics, a
reliability table and a lift curve), so the card travels with the model. At scoring time
:func:`model_card` adds what only the registry knows (when the run ran, which version was champion
before, and that version's metrics) and returns plain JSON for ``summary.json`` and the report.
"""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

CARD_METRICS = ("test_roc_auc", "test_pr_auc", "test_lift_top10", "test_capture_top10", "test_ece", "test_brier",
                "test_log_loss", "test_base_rate", "baseline_logistic_roc_auc", "baseline_xgb_default_roc_auc")
LIFT_FRACTIONS = tuple(round(0.05 * k, 2) for k in range(1, 21))


def _clean(x: Any) -> float | None:
    """A JSON-safe float (NaN and infinities become None)."""
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def evaluation_card(y: np.ndarray, p: np.ndarray, metrics: dict[str, Any], cutoffs: dict[str, list[str]]) -> dict:
    """Out-of-time evaluation for the model's metadata: headline metrics, reliability bins, lift curve."""
    from model import metrics as ev  # scipy / scikit-learn: training only, not the scoring's MLflow helper

    rel = ev.reliability_table(y, p, n_bins=10)
    lift = ev.lift_table(y, p, LIFT_FRACTIONS)
    return {
        "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "cutoffs": cutoffs,
        "n_test": int(len(y)),
        "metrics": {k: _clean(metrics[k]) for k in CARD_METRICS if k in metrics},
        "reliability": [{"p_mean": _clean(r.p_mean), "y_rate": _clean(r.y_rate), "count": int(r.count)}
                        for r in rel.itertuples()],
        "lift": [{"fraction": _clean(r.fraction), "lift": _clean(r.lift), "capture": _clean(r.capture)}
                 for r in lift.itertuples()],
    }


def _run_facts(client: Any, name: str, version: str | None) -> dict[str, Any]:
    """Run id, start time and card metrics of a registered version (empty when it cannot be read)."""
    from mlflow.exceptions import MlflowException

    if version is None:
        return {}
    try:
        mv = client.get_model_version(name, str(version))
        run = client.get_run(mv.run_id) if mv.run_id else None
    except MlflowException as exc:
        log.debug("model card: cannot read version %s of %s: %s", version, name, exc)
        return {}
    facts: dict[str, Any] = {"version": str(version), "run_id": mv.run_id, "aliases": sorted(mv.aliases or [])}
    if run is not None:
        facts["trained_at"] = datetime.fromtimestamp(run.info.start_time / 1000, UTC).isoformat(timespec="seconds")
        facts["metrics"] = {k: _clean(run.data.metrics[k]) for k in CARD_METRICS if k in run.data.metrics}
        facts["test_cutoffs"] = run.data.params.get("test_cutoffs")
    return facts


def _previous_champion(client: Any, name: str, version: str | None) -> str | None:
    """The version to compare with: the champion when scoring another version, else the champion before it."""
    import json

    from mlflow.exceptions import MlflowException

    from model.registry import CHAMPION, HISTORY_TAG, get_alias_version

    champion = get_alias_version(name, CHAMPION)
    if champion is not None and champion != str(version):
        return champion
    try:
        history = json.loads(client.get_registered_model(name).tags.get(HISTORY_TAG, "[]"))
    except (MlflowException, ValueError):
        return None
    for entry in reversed(history):
        if str(entry.get("version")) == str(version) and entry.get("previous"):
            return str(entry["previous"])
    return None


def model_card(meta: dict[str, Any], name: str, version: str | None, uri: str) -> dict[str, Any]:
    """Card for the report: the model's own evaluation plus registry facts and the previous champion."""
    from model.registry import mlflow_client

    card = dict(meta.get("evaluation") or {})
    card.setdefault("cutoffs", {k: meta.get(f"{k}_cutoffs", []) for k in ("train", "valid", "test")})
    card.update({"name": name, "version": version, "uri": uri,
                 "horizon_days": (meta.get("label") or {}).get("horizon_days"),
                 "training_input_hash": meta.get("input_hash")})
    client = mlflow_client()
    facts = _run_facts(client, name, version)
    card["run_id"], card["aliases"] = facts.get("run_id"), facts.get("aliases", [])
    card.setdefault("trained_at", facts.get("trained_at"))
    if not card.get("metrics"):
        card["metrics"] = facts.get("metrics", {})
    previous = _previous_champion(client, name, version)
    card["previous"] = _run_facts(client, name, previous) if previous else None
    return card
