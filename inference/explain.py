"""Turn exact TreeSHAP contributions into reasons an analyst can read, with impacts that add up.

XGBoost's ``pred_contribs`` is path-dependent TreeSHAP (identical to ``shap.TreeExplainer`` on the
booster). Contributions are summed per feature *group* so one idea ("activity fell") appears once.

Impacts add up exactly. Each customer's log-odds are walked from the model's base log-odds (the SHAP
bias) to the customer's own, adding one group's summed contribution at a time in a fixed order: groups
by decreasing absolute log-odds contribution (ties: catalogue order). Every point of the path is mapped
through ``sigmoid`` and then the calibrator, and a group's impact is the step in *calibrated*
probability it causes. So ``base rate + all groups = calibrated probability`` (a telescoping sum), and
the alert's listed groups plus "other factors" (the remainder) equal the probability it shows. One
fixed order keeps the numbers reproducible and cheap; the largest effects go first so their size does
not depend on small ones.

Each reason tells its group's story: the direction of its total contribution, the group's features
that drive that direction with the value on the risky side (for a risk-raising reason; the safe side
for a protective one), against typical customers and the customer's own past. A same-direction
feature on the other side of typical is quoted only with why it matters ("from a high level"); a
missing value is a reason only where missingness means something ("No purchase or payment on record").
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.catalogue import FeatureSpec, missing_is_meaningful, render_reason, risk_side

log = logging.getLogger(__name__)

Calibrate = Callable[[np.ndarray], np.ndarray]
TENURE = "tenure_days"  # the profile/behavioural feature: days since signup at the cutoff

# Phrases that say why a same-direction value on the other side of typical matters (checked by the demo audit).
FROM_LEVEL = ", from {level}: "
DESPITE_LEVEL = " ({level}, yet with this customer's other values the model reads it as {effect} the risk)"


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


@dataclass
class GroupImpacts:
    """Per-row, per-group effects: log-odds (``phi``) and calibrated probability steps along the path."""

    groups: list[str]
    group_of: np.ndarray  # features -> group index
    phi: np.ndarray  # rows x groups, summed log-odds contributions
    impact: np.ndarray  # rows x groups, calibrated probability points (positive raises risk)
    base: np.ndarray  # rows, calibrated probability at the base log-odds


def group_impacts(contrib: np.ndarray, features: list[str], specs: dict[str, FeatureSpec],
                  p_calibrated: np.ndarray | None = None, calibrate: Calibrate | None = None) -> GroupImpacts:
    """Sum log-odds contributions per group and walk base -> customer log-odds in the documented order.

    With ``calibrate`` every point of the path is calibrated. Without it, but with the calibrated
    probabilities, the raw-probability path is scaled by calibrated / raw so it still ends there.
    """
    phi = contrib[:, :-1]
    bias = contrib[:, -1]
    groups = list(dict.fromkeys(specs[f].group for f in features))
    gidx = np.array([groups.index(specs[f].group) for f in features], dtype=np.int64)
    n, g = phi.shape[0], len(groups)
    phi_g = np.zeros((n, g))
    np.add.at(phi_g.T, gidx, phi.T)
    order = np.argsort(-np.abs(phi_g), axis=1, kind="stable")
    steps = np.take_along_axis(phi_g, order, axis=1)
    z = np.concatenate([bias[:, None], bias[:, None] + np.cumsum(steps, axis=1)], axis=1)
    p = _sigmoid(z)
    if calibrate is not None:
        p = np.asarray(calibrate(p.ravel()), dtype=np.float64).reshape(p.shape)
    elif p_calibrated is not None:
        p = p * np.where(p[:, -1] > 0, p_calibrated / p[:, -1], 1.0)[:, None]
    impact = np.empty((n, g))
    np.put_along_axis(impact, order, np.diff(p, axis=1), axis=1)
    return GroupImpacts(groups, gidx, phi_g, impact, p[:, 0])


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


class _Values:
    """One row's feature values, read on demand from the column arrays (``values[name]``)."""

    def __init__(self, cols: dict[str, np.ndarray], i: int) -> None:
        self.cols, self.i = cols, i

    def __getitem__(self, name: str) -> object:
        return self.cols[name][self.i]


@dataclass
class _Row:
    """What the story of one row needs: its features' contributions and values."""

    contrib: np.ndarray
    values: _Values
    tenure_days: float | None = None  # days as a customer, when the frame has it (windows longer than it say so)


def explain_rows(frame: pd.DataFrame, contrib: np.ndarray, p_calibrated: np.ndarray, features: list[str],
                 specs: dict[str, FeatureSpec], typical: dict[str, object], top_k: int = 3,
                 min_impact: float = 0.001, calibrate: Calibrate | None = None, currency: str = "") -> pd.DataFrame:
    """Reasons per row: the ``top_k`` risk-raising groups and the strongest protective one.

    Returns columns reasons (list of dicts), reason_1..reason_k, protective_reason, reason_families,
    reason_groups (of the risk-raising reasons, for playbook rules), base_probability, other_impact and
    impact_summary ("base 3.2% +24.2 pts ... + other factors +1.1 pts = 46.8%"; the shown numbers add up).
    A group with nothing worth stating (e.g. only unrecorded values) is not listed: it counts in "other".
    """
    gi = group_impacts(contrib, features, specs, p_calibrated, calibrate)
    members = [np.flatnonzero(gi.group_of == j) for j in range(len(gi.groups))]
    cols = {f: frame[f].to_numpy() for f in features}
    tenure = frame[TENURE].to_numpy(dtype=float) if TENURE in frame else None
    rows = []
    for i in range(len(frame)):
        row = _Row(contrib[i, :-1], _Values(cols, i), None if tenure is None else float(tenure[i]))
        reasons = _pick(gi, i, members, row, features, specs, typical, currency, top_k, min_impact, +1)
        prot = _pick(gi, i, members, row, features, specs, typical, currency, 1, min_impact, -1)
        rows.append(_row_record(reasons, prot, float(gi.base[i]), float(p_calibrated[i]), top_k))
    return pd.DataFrame(rows, index=frame.index)


def _pick(gi: GroupImpacts, i: int, members: list[np.ndarray], row: _Row, features: list[str],
          specs: dict[str, FeatureSpec], typical: dict[str, object], currency: str, k: int, min_impact: float,
          sign: int) -> list[dict[str, object]]:
    """Up to ``k`` groups with impact of ``sign`` above ``min_impact``, strongest first, each with a story."""
    out: list[dict[str, object]] = []
    for j in np.argsort(-sign * gi.impact[i], kind="stable"):
        imp = float(gi.impact[i, j])
        if len(out) >= k or sign * imp < min_impact:
            break
        story = _story(members[j], row, features, specs, typical, currency, sign)
        if story is not None:
            out.append(_reason(gi.groups[j], imp, story, specs, sign))
    return out


def _story(cols: np.ndarray, row: _Row, features: list[str], specs: dict[str, FeatureSpec],
           typical: dict[str, object], currency: str, sign: int) -> dict[str, object] | None:
    """One sentence for a group whose total contribution has ``sign``; None when nothing is worth stating."""
    main: list[int] = []
    neutral: list[int] = []
    context: list[int] = []
    sides: dict[int, int] = {}
    for c in sorted(cols.tolist(), key=lambda c: -abs(row.contrib[c])):
        spec, v = specs[features[c]], row.values[features[c]]
        if row.contrib[c] * sign <= 0 or not _quotable(spec, v):
            continue
        sides[c] = side = risk_side(spec, v, typical.get(spec.name))
        (main if side == sign else neutral if side == 0 else context).append(c)
    drivers = len(main)  # on the group's side; the neutral ones (no side, or equal to typical) come after
    main += neutral
    if not main and not context:
        return None

    def clause(c: int) -> str:
        f = features[c]
        return within_tenure(render_reason(specs[f], row.values[f], typical.get(f), currency), specs[f],
                             row.tenure_days)

    def level(c: int) -> str:
        v, t = row.values[features[c]], typical.get(features[c])
        if specs[features[c]].unit == "rate_change":
            return "a rise" if float(v) > 0 else "a fall"  # type: ignore[arg-type]
        return "a high level" if float(v) > float(t) else "a low level"  # type: ignore[arg-type]

    levels = [c for c in context if specs[features[c]].unit != "rate_change"]

    if main:
        quoted = main[:1]
        text = clause(main[0])
        if specs[features[main[0]]].unit == "rate_change" and levels:
            text += FROM_LEVEL.format(level=level(levels[0])) + clause(levels[0])
            quoted.append(levels[0])
        elif drivers > 1:
            text += "; " + clause(main[1])
            quoted.append(main[1])
    else:
        quoted = context[:1]
        effect = "raising" if sign > 0 else "lowering"
        text = clause(context[0]) + DESPITE_LEVEL.format(level=level(context[0]), effect=effect)
    # an early-warning flag that is on is named in a risk-raising reason of its group, whatever its own share
    flags = [c for c in cols.tolist() if c not in quoted and specs[features[c]].unit == "flag"
             and specs[features[c]].risk_direction > 0 and _quotable(specs[features[c]], row.values[features[c]])]
    if sign > 0 and flags:
        text += "; early-warning sign: " + "; ".join(_lower_first(clause(c)) for c in flags)
    lead = features[quoted[0]]
    return {"text": text, "feature": lead, "value": row.values[lead],
            "quoted": [{"feature": features[c], "value": _num(row.values[features[c]]),
                        "typical": _num(typical.get(features[c])), "side": sides[c]} for c in quoted],
            "flags": [features[c] for c in quoted + flags if specs[features[c]].unit == "flag"]}


_BASELINE = re.compile(r"compared with the previous (\d+)")


def within_tenure(text: str, spec: FeatureSpec, tenure_days: float | None) -> str:
    """A window longer than the customer has been one says so, where the sentence names it: "Active on 13 of the
    last 90 days, a customer for only 22 of them (typical customer: 36)" (the typical customer had all 90); a
    change against a baseline the customer was there for only in part too ("... compared with the previous 60, a
    customer for only 36 of those 90 days": the baseline's daily rate counts the days before signup as quiet)."""
    w = spec.window_days
    if not w or tenure_days is None or not math.isfinite(tenure_days):
        return text
    days = max(int(tenure_days), 0)
    if days < w:
        phrases = {f"last {w} days": "of them", **({"last year": "days of it"} if w == 365 else {})}
        for key, part in phrases.items():
            if key in text:
                return text.replace(key, f"{key}, a customer for only {days} {part}", 1)
    base = _BASELINE.search(text) if spec.unit == "rate_change" else None
    if base is not None and days < w + int(base.group(1)):
        return text[:base.end()] + f", a customer for only {days} of those {w + int(base.group(1))} days" \
            + text[base.end():]
    return text


def _quotable(spec: FeatureSpec, value: object) -> bool:
    """A value worth stating: recorded (or missing where that means something), and a flag only when on."""
    if spec.categorical or isinstance(value, str):
        return value is not None
    if value is None or pd.isna(value):
        return missing_is_meaningful(spec)
    return spec.unit != "flag" or float(value) >= 0.5  # type: ignore[arg-type]


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def _num(v: object) -> float | None:
    if v is None or isinstance(v, str) or pd.isna(v):
        return None
    return float(v)  # type: ignore[arg-type]


def _reason(group: str, impact: float, story: dict[str, object], specs: dict[str, FeatureSpec],
            sign: int) -> dict[str, object]:
    f = str(story["feature"])
    spec, v = specs[f], story["value"]
    pts = round(impact * 100, 1)
    # numeric value and category label in separate fields so the structured column has one type per field
    is_cat = spec.categorical or isinstance(v, str)
    return {"group": group, "family": spec.family, "feature": f,
            "text": f"{story['text']} ({pts:+.1f} pts)",
            "impact": round(impact, 6), "impact_pts": pts, "value": None if is_cat else _num(v),
            "category": str(v) if is_cat and v is not None and not pd.isna(v) else None,
            "direction": "raises" if sign > 0 else "lowers", "quoted": story["quoted"], "flags": story["flags"]}


def _row_record(reasons: list[dict[str, object]], prot: list[dict[str, object]], base: float, p: float,
                top_k: int) -> dict[str, object]:
    """The alert columns for one row; the shown points add up (other = shown probability - shown terms)."""
    listed = reasons + prot
    other = p - base - sum(float(r["impact"]) for r in listed)  # type: ignore[arg-type]
    shown = round(p * 100, 1) - round(base * 100, 1) - sum(float(r["impact_pts"]) for r in listed)  # type: ignore[arg-type]
    terms = " ".join(f"{float(r['impact_pts']):+.1f} pts ({r['group']})" for r in listed)  # type: ignore[arg-type]
    summary = f"base rate {base * 100:.1f}% {terms} {round(shown, 1):+.1f} pts (other factors) = {p * 100:.1f}%"
    rec: dict[str, object] = {
        "reasons": listed, "protective_reason": prot[0]["text"] if prot else "",
        "reason_families": sorted({str(r["family"]) for r in reasons}),
        "reason_groups": [str(r["group"]) for r in reasons],
        "base_probability": base, "other_impact": other, "impact_summary": " ".join(summary.split())}
    for k in range(top_k):
        rec[f"reason_{k + 1}"] = reasons[k]["text"] if k < len(reasons) else ""
    return rec


def global_group_importance(contrib: np.ndarray, p: np.ndarray, features: list[str], specs: dict[str, FeatureSpec],
                            calibrate: Calibrate | None = None) -> pd.DataFrame:
    """Mean absolute impact (probability points) per group over the explained rows."""
    gi = group_impacts(contrib, features, specs, p, calibrate)
    fam = {specs[f].group: specs[f].family for f in features}
    df = pd.DataFrame({"group": gi.groups, "mean_abs_impact": np.abs(gi.impact).mean(axis=0)})
    df["family"] = df["group"].map(fam)
    return df.sort_values("mean_abs_impact", ascending=False).reset_index(drop=True)
