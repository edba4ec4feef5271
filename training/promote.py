"""Controlled model promotion: the challenger replaces the champion only if it is better on the same window.

"Better" means a higher ROC-AUC on the challenger's latest out-of-time test cutoff. With ``--data``
both models are scored on that cutoff now; without it the stored test metrics are compared, which
is only allowed when both versions were tested on the same cutoff and the same input data.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from churn.config import Config
from churn.errors import ChurnError, InputNotFoundError
from model.registry import (
    CHALLENGER,
    CHAMPION,
    champion_history,
    get_alias_version,
    set_champion,
    setup_mlflow,
)

log = logging.getLogger(__name__)


class PromotionError(ChurnError):
    exit_code = 1


def _version_tags(name: str, version: str) -> dict[str, str]:
    import mlflow

    return dict(mlflow.MlflowClient().get_model_version(name, version).tags)


def _require_version(name: str, version: str) -> None:
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        mlflow.MlflowClient().get_model_version(name, version)
    except MlflowException as exc:
        raise InputNotFoundError(f"model '{name}' has no version {version}") from exc


def evaluate_on_window(cfg: Config, data_dir: str | Path, versions: list[str], cutoff: pd.Timestamp) -> dict[str, float]:
    """ROC-AUC of each version on the same cutoff, computed now from the data."""
    from features.build import FeatureBuilder
    from features.contract import load_tables
    from model.metrics import classification_metrics
    from model.registry import load_churn_model

    tables = load_tables(data_dir, cfg)
    models = {v: load_churn_model(f"models:/{cfg.mlflow.model_name}/{v}") for v in versions}
    types = sorted({t for m in models.values() for t in m.meta.get("event_types", [])})
    fs = FeatureBuilder(tables, cfg, event_types=types).build(cutoff, with_labels=True)
    y = fs.frame["label"].to_numpy()
    return {v: classification_metrics(y, m.predict_proba(fs.frame))["roc_auc"] for v, m in models.items()}


def promote(cfg: Config, version: str | None = None, force: bool = False, reason: str | None = None,
            data_dir: str | Path | None = None) -> dict[str, Any]:
    setup_mlflow(cfg.mlflow)
    name = cfg.mlflow.model_name
    challenger = version or get_alias_version(name, CHALLENGER)
    if challenger is None:
        raise InputNotFoundError(f"model '{name}' has no challenger: run `churn train` first")
    if version is not None:
        _require_version(name, str(version))
    champion = get_alias_version(name, CHAMPION)
    if champion == challenger:
        return {"promoted": False, "message": f"version {challenger} is already the champion"}
    if force:
        if not reason:
            raise PromotionError("--force needs --reason (it is recorded in the champion history)")
        set_champion(name, challenger, f"forced: {reason}")
        return {"promoted": True, "message": f"version {challenger} is champion (forced: {reason})"}
    if champion is None:
        set_champion(name, challenger, reason or "no previous champion")
        return {"promoted": True, "message": f"version {challenger} is champion (there was none)"}
    ch_tags, cp_tags = _version_tags(name, challenger), _version_tags(name, champion)
    cutoff = ch_tags.get("test_cutoff")
    if data_dir is not None and cutoff:
        aucs = evaluate_on_window(cfg, data_dir, [challenger, champion], pd.Timestamp(cutoff))
        basis = f"re-scored on cutoff {cutoff}"
    elif cutoff and cutoff == cp_tags.get("test_cutoff") and ch_tags.get("input_hash") == cp_tags.get("input_hash"):
        aucs = {challenger: float(ch_tags["test_roc_auc"]), champion: float(cp_tags["test_roc_auc"])}
        basis = f"stored test metrics on cutoff {cutoff}"
    else:
        raise PromotionError(
            f"versions {challenger} and {champion} were tested on different windows or data "
            f"({cutoff} vs {cp_tags.get('test_cutoff')}): pass --data DIR to score both on cutoff {cutoff}")
    msg = f"challenger v{challenger} ROC-AUC {aucs[challenger]:.4f} vs champion v{champion} {aucs[champion]:.4f} ({basis})"
    if aucs[challenger] > aucs[champion]:
        set_champion(name, challenger, reason or msg)
        return {"promoted": True, "message": f"promoted: {msg}", "aucs": aucs}
    return {"promoted": False, "message": f"not promoted: {msg}", "aucs": aucs}


def rollback(cfg: Config, reason: str = "rollback") -> dict[str, Any]:
    """Move the champion alias back to the version that held it before the current one."""
    setup_mlflow(cfg.mlflow)
    name = cfg.mlflow.model_name
    current = get_alias_version(name, CHAMPION)
    if current is None:
        raise InputNotFoundError(f"model '{name}' has no champion: run `churn train` first")
    history = champion_history(name)
    if not history or not history[-1].get("previous"):
        raise PromotionError(f"model '{name}' has no previous champion to roll back to")
    previous = history[-1]["previous"]
    set_champion(name, previous, f"rollback from v{current}: {reason}")
    return {"message": f"champion rolled back from v{current} to v{previous}", "version": previous}
