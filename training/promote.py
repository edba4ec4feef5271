"""Controlled model promotion: the challenger replaces the champion only if it is better out of time.

"Better" means a mean ROC-AUC gain of at least ``monitoring.promotion_margin`` over
``monitoring.promotion_windows`` cutoffs that neither model was fitted on, and a win on most of them.
With ``--data`` both models are scored on those cutoffs now; without it only the stored test metrics of
one shared window can be compared (same cutoff and input data), still with the margin.
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
    from model.registry import mlflow_client

    return dict(mlflow_client().get_model_version(name, version).tags)


def _require_version(name: str, version: str) -> None:
    from mlflow.exceptions import MlflowException

    from model.registry import mlflow_client

    try:
        mlflow_client().get_model_version(name, version)
    except MlflowException as exc:
        raise InputNotFoundError(f"model '{name}' has no version {version}") from exc


def evaluate_on_windows(cfg: Config, data_dir: str | Path, versions: list[str],
                        cutoffs: list[pd.Timestamp]) -> dict[str, dict[str, float]]:
    """ROC-AUC of each version on each cutoff (``{version: {cutoff: auc}}``), computed now from the data."""
    from features.build import FeatureBuilder
    from features.contract import load_tables
    from model.metrics import classification_metrics
    from model.registry import load_churn_model

    tables = load_tables(data_dir, cfg)
    models = {v: load_churn_model(f"models:/{cfg.mlflow.model_name}/{v}") for v in versions}
    types = sorted({t for m in models.values() for t in m.meta.get("event_types", [])})
    out: dict[str, dict[str, float]] = {v: {} for v in versions}
    for cutoff in cutoffs:
        fs = FeatureBuilder(tables, cfg, event_types=types).build(cutoff, with_labels=True)
        y = fs.frame["label"].to_numpy()
        for v, m in models.items():
            out[v][cutoff.date().isoformat()] = classification_metrics(y, m.predict_proba(fs.frame))["roc_auc"]
    return out


def evaluate_on_window(cfg: Config, data_dir: str | Path, versions: list[str], cutoff: pd.Timestamp) -> dict[str, float]:
    """ROC-AUC of each version on the same cutoff, computed now from the data."""
    res = evaluate_on_windows(cfg, data_dir, versions, [cutoff])
    return {v: aucs[cutoff.date().isoformat()] for v, aucs in res.items()}


def gate_windows(challenger_meta: dict[str, Any], champion_meta: dict[str, Any], n: int) -> list[pd.Timestamp]:
    """The latest ``n`` cutoffs out of time for both models: the challenger's test and validation cutoffs
    that the champion neither trained nor calibrated on (the challenger early-stopped and calibrated on its
    validation cutoffs, a small edge the gate's margin is there to absorb)."""
    seen = set(champion_meta.get("train_cutoffs", [])) | set(champion_meta.get("valid_cutoffs", []))
    mine = list(challenger_meta.get("valid_cutoffs", [])) + list(challenger_meta.get("test_cutoffs", []))
    return [pd.Timestamp(c) for c in sorted(set(mine) - seen)[-n:]]


def gate_decision(challenger: dict[str, float], champion: dict[str, float], margin: float,
                  min_windows: int) -> tuple[bool, str]:
    """Promote only with at least ``min_windows`` windows, a mean ROC-AUC gain >= ``margin`` and a win on most windows."""
    windows = sorted(set(challenger) & set(champion))
    gains = [challenger[w] - champion[w] for w in windows]
    if len(windows) < min_windows:
        return False, f"only {len(windows)} window(s) out of time for both models; the gate needs {min_windows}"
    mean_gain = sum(gains) / len(gains)
    wins = sum(g > 0 for g in gains)
    detail = f"mean gain {mean_gain:+.4f} (margin {margin}), better on {wins} of {len(windows)} window(s)"
    return (mean_gain >= margin and wins * 2 > len(windows)), detail


def promote(cfg: Config, version: str | None = None, force: bool = False, reason: str | None = None,
            data_dir: str | Path | None = None) -> dict[str, Any]:
    """Move the champion alias to the challenger if it passes the gate (see README, "Promotion gate").

    With ``data_dir`` both models are re-scored on ``monitoring.promotion_windows`` cutoffs out of time for
    both (:func:`gate_windows`) and :func:`gate_decision` decides; without it the stored test ROC-AUC of one
    shared window is compared, and the challenger must still beat the champion by ``monitoring.promotion_margin``.
    """
    setup_mlflow(cfg.mlflow)
    name = cfg.mlflow.model_name
    margin, n_windows = cfg.monitoring.promotion_margin, cfg.monitoring.promotion_windows
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
        from model.registry import load_churn_model

        metas = [load_churn_model(f"models:/{name}/{v}").meta for v in (challenger, champion)]
        windows = gate_windows(metas[0], metas[1], n_windows) or [pd.Timestamp(cutoff)]
        per_window = evaluate_on_windows(cfg, data_dir, [challenger, champion], windows)
        ok, detail = gate_decision(per_window[challenger], per_window[champion], margin, min(n_windows, 2))
        aucs = {v: sum(a.values()) / len(a) for v, a in per_window.items()}
        others = [w.date().isoformat() for w in windows if w.date().isoformat() != cutoff]
        basis = f"re-scored on cutoff {cutoff}" + (f" and {', '.join(others)}" if others else "") + f"; {detail}"
    elif cutoff and cutoff == cp_tags.get("test_cutoff") and ch_tags.get("input_hash") == cp_tags.get("input_hash"):
        aucs = {challenger: float(ch_tags["test_roc_auc"]), champion: float(cp_tags["test_roc_auc"])}
        per_window = {v: {cutoff: a} for v, a in aucs.items()}
        ok = aucs[challenger] - aucs[champion] >= max(margin, 1e-12)
        basis = f"stored test metrics on cutoff {cutoff}; margin {margin}"
    else:
        raise PromotionError(
            f"versions {challenger} and {champion} were tested on different windows or data "
            f"({cutoff} vs {cp_tags.get('test_cutoff')}): pass --data DIR to score both on cutoff {cutoff}")
    msg = f"challenger v{challenger} ROC-AUC {aucs[challenger]:.4f} vs champion v{champion} {aucs[champion]:.4f} ({basis})"
    if ok:
        set_champion(name, challenger, reason or msg)
        return {"promoted": True, "message": f"promoted: {msg}", "aucs": aucs, "per_window": per_window}
    return {"promoted": False, "message": f"not promoted: {msg}", "aucs": aucs, "per_window": per_window}


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
