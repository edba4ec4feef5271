"""Turn exact TreeSHAP contributions into reasons an analyst can read.

XGBoost's ``pred_contribs`` is path-dependent TreeSHAP (identical to ``shap.TreeExplainer`` on the
booster). Contributions are summed per feature *group* so one idea ("logins fell") appears once,
converted to probability points, and rendered with the catalogue's sentence templates using the
customer's own value and the typical (median) customer's value.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.catalogue import FeatureSpec, render_reason

log = logging.getLogger(__name__)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


@dataclass
class GroupImpacts:
    """Per-row, per-group impact in probability points, and the feature that carries each group."""

    groups: list[str]
    impact: np.ndarray  # rows x groups, probability points (positive raises risk)
    lead_feature: np.ndarray  # rows x groups, index into features


def group_impacts(contrib: np.ndarray, features: list[str], specs: dict[str, FeatureSpec],
                  p_calibrated: np.ndarray) -> GroupImpacts:
    """Sum log-odds contributions per group and express each group's effect in probability points.

    A group's impact is the drop in probability if its log-odds contribution were removed,
    sigma(m) - sigma(m - phi_g), scaled by calibrated/raw probability so it reads on the same scale
    as the calibrated score the analyst sees.
    """
    phi = contrib[:, :-1]
    margin = contrib.sum(axis=1)
    groups = list(dict.fromkeys(specs[f].group for f in features))
    gidx = np.array([groups.index(specs[f].group) for f in features])
    n, g = phi.shape[0], len(groups)
    phi_g = np.zeros((n, g))
    np.add.at(phi_g.T, gidx, phi.T)
    p_raw = _sigmoid(margin)
    scale = np.where(p_raw > 0, p_calibrated / p_raw, 1.0)[:, None]
    impact = (p_raw[:, None] - _sigmoid(margin[:, None] - phi_g)) * scale
    lead = np.zeros((n, g), dtype=np.int64)
    absphi = np.abs(phi)
    for j in range(g):
        cols = np.flatnonzero(gidx == j)
        lead[:, j] = cols[np.argmax(absphi[:, cols], axis=1)]
    return GroupImpacts(groups, impact, lead)


def typical_values(frame: pd.DataFrame, features: list[str], specs: dict[str, FeatureSpec]) -> dict[str, object]:
    """Median (numeric) or most common (categorical) value per feature across the scored population."""
    out: dict[str, object] = {}
    for f in features:
        s = frame[f]
        if specs[f].categorical:
            vc = s.value_counts()
            out[f] = vc.index[0] if len(vc) else None
        else:
            out[f] = float(pd.to_numeric(s, errors="coerce").median())
    return out


def explain_rows(frame: pd.DataFrame, contrib: np.ndarray, p_calibrated: np.ndarray, features: list[str],
                 specs: dict[str, FeatureSpec], typical: dict[str, object], top_k: int = 3,
                 min_impact: float = 0.001) -> pd.DataFrame:
    """Reasons per row: the ``top_k`` risk-raising groups and the strongest protective one.

    Returns columns reasons (list of dicts), reason_1..reason_k, protective_reason, reason_families,
    reason_groups (the families/groups of the risk-raising reasons, for playbook rules).
    """
    gi = group_impacts(contrib, features, specs, p_calibrated)
    order = np.argsort(-gi.impact, axis=1, kind="stable")
    values = {f: frame[f].to_numpy() for f in features}
    rows = []
    for i in range(len(frame)):
        reasons = []
        for j in order[i, :top_k]:
            imp = float(gi.impact[i, j])
            if imp < min_impact:
                break
            reasons.append(_reason(i, j, imp, gi, features, specs, values, typical, "raises"))
        j_min = int(np.argmin(gi.impact[i]))
        prot = None
        if gi.impact[i, j_min] <= -min_impact:
            prot = _reason(i, j_min, float(gi.impact[i, j_min]), gi, features, specs, values, typical, "lowers")
        rec = {"reasons": reasons + ([prot] if prot else []),
               "protective_reason": prot["text"] if prot else "",
               "reason_families": sorted({r["family"] for r in reasons}),
               "reason_groups": [r["group"] for r in reasons]}
        for k in range(top_k):
            rec[f"reason_{k + 1}"] = reasons[k]["text"] if k < len(reasons) else ""
        rows.append(rec)
    return pd.DataFrame(rows, index=frame.index)


def _reason(i: int, j: int, impact: float, gi: GroupImpacts, features: list[str], specs: dict[str, FeatureSpec],
            values: dict[str, np.ndarray], typical: dict[str, object], direction: str) -> dict[str, object]:
    f = features[int(gi.lead_feature[i, j])]
    spec = specs[f]
    v = values[f][i]
    text = render_reason(spec, v, typical.get(f))
    pts = abs(impact) * 100
    text = f"{text} ({'+' if impact > 0 else '-'}{pts:.1f} pts)"
    # numeric value and category label in separate fields so the structured column has one type per field
    is_cat = spec.categorical or isinstance(v, str)
    num = None if is_cat or v is None or pd.isna(v) else float(v)
    label = str(v) if is_cat and v is not None and not pd.isna(v) else None
    return {"group": gi.groups[j], "family": spec.family, "feature": f, "text": text,
            "impact": round(impact, 6), "value": num, "category": label, "direction": direction}


def global_group_importance(contrib: np.ndarray, p: np.ndarray, features: list[str],
                            specs: dict[str, FeatureSpec]) -> pd.DataFrame:
    """Mean absolute impact (probability points) per group over the explained rows."""
    gi = group_impacts(contrib, features, specs, p)
    fam = {specs[f].group: specs[f].family for f in features}
    df = pd.DataFrame({"group": gi.groups, "mean_abs_impact": np.abs(gi.impact).mean(axis=0)})
    df["family"] = df["group"].map(fam)
    return df.sort_values("mean_abs_impact", ascending=False).reset_index(drop=True)
