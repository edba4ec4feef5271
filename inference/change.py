"""Why did this customer's score change since the last run?

For each alerted customer the previous run's recorded probability is set beside the current one, and
the feature groups whose SHAP contributions moved most between the two cutoffs explain the change in
words: "risk rose from 12% to 35% since 2025-11-01, mostly because 'login' events in the last 7 days
fell (9 -> 2) and complaints in the last 30 days rose (0 -> 1)".

Contributions at the previous cutoff are recomputed with the *current* model from the same data (the
features at the previous cutoff use only records before it), so the difference measures how the
customer's inputs moved, not how the model changed; the previous probability shown is the one the
previous run recorded (with another model it may differ from the recomputed one, and then the groups
explain the input part of the change only). Customers alerted now but not in the previous run's
alerts are marked new.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from churn.errors import InputNotFoundError
from features.catalogue import FeatureSpec
from inference.explain import group_impacts

log = logging.getLogger(__name__)

CHANGE_COLUMNS = ["previous_probability", "probability_change", "new_alert", "change_groups", "change_reason"]


@dataclass
class RowContributions:
    """SHAP contributions (log-odds, bias last) of some customers, their feature values and probabilities."""

    ids: pd.Series
    contrib: np.ndarray
    values: pd.DataFrame
    p: np.ndarray


def _pct(x: float) -> str:
    return f"{x * 100:.0f}%"


def _value(v: Any) -> str:
    if _missing(v) or (isinstance(v, float) and not np.isfinite(v)):
        return "none"
    if isinstance(v, (int, float, np.number)):
        v = float(v)
        return f"{int(v):,}" if v.is_integer() else f"{v:,.2f}".rstrip("0").rstrip(".")
    return str(v)


def _missing(v: Any) -> bool:
    return v is None or (not isinstance(v, str) and bool(pd.isna(v)))


def _moved(before: Any, after: Any) -> bool:
    """Did the value change between the two cutoffs (missing to missing is no change)?"""
    if _missing(before) or _missing(after):
        return _missing(before) != _missing(after)
    return str(before) != str(after) if isinstance(before, str) or isinstance(after, str) else before != after


def _phrase(spec: FeatureSpec, before: Any, after: Any) -> str:
    """'<description> fell (9 -> 2)' from the lead feature's values at the two cutoffs."""
    text = spec.description[:1].lower() + spec.description[1:] if spec.description else spec.name
    try:
        b, a = float(before), float(after)
        verb = "rose" if a > b else "fell" if a < b else "changed"
    except (TypeError, ValueError):
        verb = "changed"
    return f"{text} {verb} ({_value(before)} -> {_value(after)})"


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def change_reasons(cur: RowContributions, prev: RowContributions, features: list[str],
                   specs: dict[str, FeatureSpec], k: int = 3) -> pd.DataFrame:
    """Per customer of ``cur`` found in ``prev``: the ``k`` groups whose impact moved most in the direction of
    the change, with the lead feature's before/after values. Index: ``cur.ids``; columns change_groups
    (list of group names) and change_because (text after "mostly because"); customers missing from ``prev``
    get an empty list and "".
    """
    gi_cur = group_impacts(cur.contrib, features, specs, cur.p)
    pos = pd.Index(prev.ids.to_numpy()).get_indexer(cur.ids.to_numpy())
    found = pos >= 0
    groups_out: list[list[str]] = [[] for _ in range(len(cur.ids))]
    text_out = [""] * len(cur.ids)
    if found.any():
        gi_prev = group_impacts(prev.contrib[pos[found]], features, specs, prev.p[pos[found]])
        # log-odds group contributions are additive and independent of the order the reasons' path takes,
        # so their difference is what each group moved between the two runs
        delta = gi_cur.phi[found] - gi_prev.phi
        dphi = cur.contrib[found, :-1] - prev.contrib[pos[found], :-1]
        gidx = np.array([gi_cur.groups.index(specs[f].group) for f in features])
        direction = np.sign(cur.p[found] - prev.p[pos[found]])
        for row, i in enumerate(np.flatnonzero(found)):
            signed = delta[row] * (direction[row] if direction[row] != 0 else 1.0)
            named, parts = [], []
            for j in np.argsort(-signed, kind="stable"):
                if len(parts) == k or signed[j] <= 1e-4:
                    break
                # the group's lead: the feature whose value changed and whose contribution moved most
                cols = [c for c in np.flatnonzero(gidx == j)
                        if _moved(prev.values[features[c]].iloc[pos[i]], cur.values[features[c]].iloc[i])]
                if not cols:
                    continue  # the group moved through interactions only: no input of its own changed
                f = features[cols[int(np.argmax(np.abs(dphi[row, cols])))]]
                named.append(gi_cur.groups[j])
                parts.append(_phrase(specs[f], prev.values[f].iloc[pos[i]], cur.values[f].iloc[i]))
            groups_out[i] = named
            text_out[i] = _join(parts) if parts else ""
    return pd.DataFrame({"change_groups": groups_out, "change_because": text_out}, index=cur.ids.to_numpy())


def change_sentence(p_now: float, p_before: float | None, since: str, because: str) -> str:
    """'risk rose from 12% to 35% since 2025-11-01, mostly because ...' (or 'new since ...')."""
    if p_before is None or not np.isfinite(p_before):
        return f"new since {since} (not scored then); risk now {_pct(p_now)}"
    verb = "rose" if p_now > p_before else "fell" if p_now < p_before else "unchanged"
    head = (f"risk {verb} from {_pct(p_before)} to {_pct(p_now)} since {since}" if verb != "unchanged"
            else f"risk unchanged at {_pct(p_now)} since {since}")
    return f"{head}, mostly because {because}" if because and verb != "unchanged" else head


def describe_changes(alerts: pd.DataFrame, previous_scores: pd.DataFrame, previous_alert_ids: set[str],
                     reasons: pd.DataFrame, since: str) -> pd.DataFrame:
    """``alerts`` (customer_id, churn_probability) with :data:`CHANGE_COLUMNS` added.

    ``previous_scores``: the previous run's customer_id and churn_probability; ``reasons``: the output
    of :func:`change_reasons`, indexed by the same customer ids as ``alerts``.
    """
    ids = alerts["customer_id"].astype(str)
    prev_p = previous_scores.assign(customer_id=previous_scores["customer_id"].astype(str)).set_index(
        "customer_id")["churn_probability"]
    before = ids.map(prev_p).astype(float).to_numpy()
    now = alerts["churn_probability"].to_numpy(dtype=float)
    because = reasons.reindex(ids.to_numpy())["change_because"].fillna("").to_numpy()
    groups = reasons.reindex(ids.to_numpy())["change_groups"].to_numpy()
    out = alerts.copy()
    out["previous_probability"] = before
    out["probability_change"] = now - before
    out["new_alert"] = ~ids.isin(previous_alert_ids).to_numpy()
    out["change_groups"] = [list(g) if isinstance(g, (list, np.ndarray)) else [] for g in groups]
    out["change_reason"] = [change_sentence(n, b, since, c) for n, b, c in zip(now, before, because, strict=True)]
    return out


def resolve_previous(previous: str | Path) -> Path:
    """A previous scoring run's folder, given the folder or the MLflow run id of the scoring run."""
    path = Path(previous)
    if path.is_dir():
        return path
    from mlflow.exceptions import MlflowException

    from model.registry import mlflow_client

    try:
        tags = mlflow_client().get_run(str(previous)).data.tags
    except MlflowException as exc:
        raise InputNotFoundError(f"--previous {previous}: neither a folder nor an MLflow run id ({exc.message})") \
            from exc
    folder = tags.get("output_dir")
    if not folder or not Path(folder).is_dir():
        raise InputNotFoundError(f"--previous {previous}: the scoring run's output folder {folder!r} is gone")
    return Path(folder)


def _rows(model: Any, frame: pd.DataFrame, ids: pd.Series, explainer: str) -> RowContributions:
    return RowContributions(ids=ids.reset_index(drop=True), contrib=model.contributions(frame, explainer=explainer),
                            values=frame[model.features].reset_index(drop=True), p=model.predict_proba(frame))


def compare_with_previous(previous: str | Path, tables: Any, cfg: Any, model: Any, frame: pd.DataFrame,
                          out_ids: pd.Series, cutoff: pd.Timestamp, alerts: pd.DataFrame,
                          specs: dict[str, FeatureSpec]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """``alerts`` with :data:`CHANGE_COLUMNS`, and a summary of the comparison with the ``previous`` run.

    ``frame``: this run's feature rows (row order of ``out_ids``, the ids as written in the outputs).
    Features at the previous cutoff are rebuilt from ``tables`` for the alerted customers.
    """
    from churn.errors import DataError
    from features.build import FeatureBuilder
    from inference.alerts import pseudonymize
    from inference.monitor import read_scoring_run

    folder = resolve_previous(previous)
    prev_scores, prev_alerts, prev_summary = read_scoring_run(folder)
    since = pd.Timestamp(prev_summary.get("cutoff") or pd.to_datetime(prev_scores["cutoff"]).iloc[0])
    if since >= cutoff:
        raise DataError("summary", "cutoff", f"--previous run {folder} has cutoff {since.date()}, not before this "
                        f"run's {cutoff.date()}")
    key = cfg.scoring.pseudonymize_key
    wanted = set(alerts["customer_id"].astype(str))
    pos_now = pd.Index(out_ids.astype(str).to_numpy()).get_indexer(alerts["customer_id"].astype(str).to_numpy())
    cur = _rows(model, frame.iloc[pos_now], alerts["customer_id"].astype(str), cfg.scoring.explainer)
    prev_frame = FeatureBuilder(tables, cfg, event_types=model.meta.get("event_types")).build(since).frame
    raw = prev_frame["customer_id"].astype(str)
    prev_ids = pseudonymize(raw, key) if key else raw
    keep = prev_ids.isin(wanted).to_numpy()
    prev = _rows(model, prev_frame.loc[keep], prev_ids[keep], cfg.scoring.explainer) if keep.any() else None
    reasons = (change_reasons(cur, prev, model.features, specs, cfg.monitoring.change_groups) if prev is not None
               else pd.DataFrame({"change_groups": [[]] * len(cur.ids), "change_because": ""}, index=cur.ids))
    out = describe_changes(alerts, prev_scores, set(prev_alerts["customer_id"].astype(str)), reasons,
                           since.date().isoformat())
    info = {"previous_run": str(folder), "previous_cutoff": since.date().isoformat(),
            "previous_model_version": prev_summary.get("model_version"), "n_new_alerts": int(out["new_alert"].sum()),
            "n_rose": int((out["probability_change"] > 0).sum()), "n_fell": int((out["probability_change"] < 0).sum())}
    log.info("compared with %s (%s): %d new alert(s)", folder, info["previous_cutoff"], info["n_new_alerts"])
    return out, info
