"""Population stability: has the scoring population moved away from the training population?

The Population Stability Index, ``PSI = sum_b (a_b - e_b) * ln(a_b / e_b)`` over bins ``b`` with
expected (reference) share ``e_b`` and actual (current) share ``a_b``, is the credit-scoring
industry's drift measure. Usual reading: < 0.1 stable, 0.1-0.25 worth a look, >= 0.25 drift.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from churn.errors import DataError

logger = logging.getLogger(__name__)

__all__ = ["drift_status", "drift_table", "psi"]

_MISSING = "__missing__"


def _is_categorical(s: pd.Series) -> bool:
    """Object, string, category and bool columns are binned one bin per value."""
    if ptypes.is_datetime64_any_dtype(s.dtype) or ptypes.is_timedelta64_dtype(s.dtype):
        raise TypeError(
            f"psi: datetime-like column {s.name!r}; convert it to a numeric age or duration first"
        )
    return ptypes.is_bool_dtype(s.dtype) or not ptypes.is_numeric_dtype(s.dtype)


def _psi_from_counts(expected: np.ndarray, actual: np.ndarray, eps: float) -> float:
    """PSI from per-bin counts; shares are floored at ``eps`` so empty bins don't give log(0)."""
    e = np.maximum(expected / expected.sum(), eps)
    a = np.maximum(actual / actual.sum(), eps)
    return float(np.sum((a - e) * np.log(a / e)))


def _numeric_codes(e_ok: np.ndarray, a_ok: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Bin codes of both samples, bins drawn from the reference ``e_ok``.

    Few distinct reference values (at most ``n_bins``): one bin per value plus one bin for each gap
    between and outside them, so ties and point masses never straddle an edge and unseen values land
    in a gap bin. Otherwise: every value holding at least ``1 / n_bins`` of the reference is a point
    mass with a bin of its own, and the other values get deduplicated quantile edges (right-closed,
    outer bins open-ended).
    """
    distinct = np.unique(e_ok)
    if distinct.size <= n_bins:
        def code(x: np.ndarray) -> np.ndarray:
            idx = np.searchsorted(distinct, x, side="left")
            exact = (idx < distinct.size) & (distinct[np.minimum(idx, distinct.size - 1)] == x)
            return 2 * idx + exact
        return code(e_ok), code(a_ok), 2 * distinct.size + 1
    values, counts = np.unique(e_ok, return_counts=True)
    masses = values[counts >= e_ok.size / n_bins]
    rest = e_ok[~np.isin(e_ok, masses)]
    n_rest = max(n_bins - masses.size, 1)
    inner = np.quantile(rest, np.linspace(0, 1, n_rest + 1)[1:-1]) if rest.size else np.array([])
    edges = np.unique(inner[np.isfinite(inner)])

    def code2(x: np.ndarray) -> np.ndarray:
        # bin i (after the point masses) holds (edges[i-1], edges[i]]
        out = masses.size + np.searchsorted(edges, x, side="left")
        if not masses.size:
            return out
        pos = np.searchsorted(masses, x)
        hit = (pos < masses.size) & (masses[np.minimum(pos, masses.size - 1)] == x)
        return np.where(hit, pos, out)
    return code2(e_ok), code2(a_ok), masses.size + edges.size + 1


def _numeric_counts(expected: pd.Series, actual: pd.Series, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Counts per bin (see :func:`_numeric_codes`) plus a NaN bin when either sample has missing values."""
    e, a = _floats(expected), _floats(actual)
    e_ok, a_ok = e[~np.isnan(e)], a[~np.isnan(a)]
    if e_ok.size:
        e_codes, a_codes, n_out = _numeric_codes(e_ok, a_ok, n_bins)
    else:
        e_codes, a_codes, n_out = np.zeros(0, dtype=int), np.zeros(a_ok.size, dtype=int), 1
    e_counts = np.bincount(e_codes, minlength=n_out).astype(float)
    a_counts = np.bincount(a_codes, minlength=n_out).astype(float)
    e_nan, a_nan = float(e.size - e_ok.size), float(a.size - a_ok.size)
    if e_nan or a_nan:
        e_counts = np.append(e_counts, e_nan)
        a_counts = np.append(a_counts, a_nan)
    return e_counts, a_counts


def _floats(s: pd.Series) -> np.ndarray:
    return s.to_numpy(dtype=float, na_value=np.nan)


def _categorical_counts(expected: pd.Series, actual: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Counts per category over the union of both samples; missing values are one category."""

    def _keys(s: pd.Series) -> pd.Series:
        s = s.astype(object)
        return s.where(s.notna(), _MISSING)

    e_vc = _keys(expected).value_counts()
    a_vc = _keys(actual).value_counts()
    cats = sorted(set(e_vc.index) | set(a_vc.index), key=lambda v: (type(v).__name__, str(v)))
    return (
        e_vc.reindex(cats, fill_value=0).to_numpy(dtype=float),
        a_vc.reindex(cats, fill_value=0).to_numpy(dtype=float),
    )


def _series(x: np.ndarray | pd.Series) -> pd.Series:
    return x if isinstance(x, pd.Series) else pd.Series(x)


def psi(
    expected: np.ndarray | pd.Series,
    actual: np.ndarray | pd.Series,
    n_bins: int = 10,
    eps: float = 1e-4,
) -> float:
    """Population Stability Index of ``actual`` against the ``expected`` (reference) sample.

    Numeric data: bins from the ``expected`` sample that respect ties (see :func:`_numeric_codes`:
    one bin per value when there are few, point masses as their own bins, deduplicated quantile
    edges otherwise; outer bins open-ended); NaN is a bin of its own. Object, string, category or
    bool data: one bin per category over the union of both samples. Shares are floored at ``eps``.
    0 for identical distributions; not symmetric, since the bins come from ``expected``. PSI measures
    how much the *shape* moved, not by how much: a point mass that moves slightly scores high, which
    is why :func:`drift_table` also asks for an effect size.
    """
    e, a = _series(expected), _series(actual)
    if len(e) == 0 or len(a) == 0:
        raise ValueError(f"psi needs non-empty samples, got {len(e)} expected and {len(a)} actual values")
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    if _is_categorical(e) or _is_categorical(a):
        e_counts, a_counts = _categorical_counts(e, a)
    else:
        e_counts, a_counts = _numeric_counts(e, a, n_bins)
    return _psi_from_counts(e_counts, a_counts, eps)


def effect_size(expected: np.ndarray | pd.Series, actual: np.ndarray | pd.Series) -> float:
    """How far the distribution moved, on a scale that does not depend on bins.

    Numeric: the Wasserstein-1 (earth mover's) distance between the two samples divided by the
    reference standard deviation (1 when the reference is constant), so 0.1 means "mass moved a tenth
    of a standard deviation on average"; a change in the share of missing values counts too (the
    larger of the two). Categorical: total variation distance of the category shares (0..1).
    """
    from scipy.stats import wasserstein_distance

    e, a = _series(expected), _series(actual)
    if _is_categorical(e) or _is_categorical(a):
        e_counts, a_counts = _categorical_counts(e, a)
        return float(0.5 * np.abs(e_counts / e_counts.sum() - a_counts / a_counts.sum()).sum())
    ef, af = _floats(e), _floats(a)
    e_ok, a_ok = ef[np.isfinite(ef)], af[np.isfinite(af)]
    missing_shift = abs(float(np.mean(~np.isfinite(ef))) - float(np.mean(~np.isfinite(af))))
    if not e_ok.size or not a_ok.size:
        return missing_shift
    scale = float(np.std(e_ok))
    w = wasserstein_distance(e_ok, a_ok) / (scale if scale > 0 else 1.0)
    return float(max(w, missing_shift))


def drift_status(value: float, warn: float = 0.1, alert: float = 0.25, effect: float | None = None,
                 min_effect: float = 0.0) -> str:
    """Status of a PSI value: "stable" below ``warn``, "warning" below ``alert``, else "drift".

    With an ``effect`` size below ``min_effect`` the status is "stable" whatever the PSI: the shape
    changed but nothing moved far enough to matter.
    """
    if effect is not None and effect < min_effect:
        return "stable"
    if value >= alert:
        return "drift"
    if value >= warn:
        return "warning"
    return "stable"


def drift_table(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    columns: list[str] | None = None,
    warn: float = 0.1,
    alert: float = 0.25,
    min_effect: float = 0.0,
    min_sample: int = 0,
) -> pd.DataFrame:
    """PSI, effect size and status per feature, worst first.

    A feature counts as drifted only with PSI >= ``alert`` *and* effect size >= ``min_effect``
    (:func:`effect_size`); with fewer than ``min_sample`` rows in either sample its status is
    "too_few" (a small sample's PSI is mostly noise). ``columns`` defaults to the reference columns
    also present in ``current``. Columns: feature, psi, effect, status, ref_mean, cur_mean (means are
    NaN for categorical features). Sorted by status (drift, warning, stable, too_few), then PSI;
    ties keep column order.
    """
    if warn > alert:
        raise ValueError(f"warn ({warn}) must not exceed alert ({alert})")
    if columns is None:
        columns = [c for c in reference.columns if c in current.columns]
    for name, frame in (("reference", reference), ("current", current)):
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise DataError(name, missing[0], f"column not found; missing columns: {missing}")
    small = min(len(reference), len(current)) < min_sample
    rows = [_drift_row(col, reference[col], current[col], warn, alert, min_effect, small) for col in columns]
    out = pd.DataFrame(rows, columns=DRIFT_COLUMNS)
    rank = out["status"].map({s: i for i, s in enumerate(STATUSES)})
    out = out.assign(_r=rank).sort_values(["_r", "psi"], ascending=[True, False], kind="stable")
    out = out.drop(columns="_r").reset_index(drop=True)
    n_drift = int((out["status"] == "drift").sum())
    if n_drift:
        logger.info("drift: %d of %d features at PSI >= %s with effect >= %s", n_drift, len(out), alert, min_effect)
    return out


DRIFT_COLUMNS = ["feature", "psi", "effect", "status", "ref_mean", "cur_mean"]
STATUSES = ("drift", "warning", "stable", "too_few")


def _drift_row(name: str, ref: pd.Series, cur: pd.Series, warn: float, alert: float, min_effect: float,
               small: bool) -> dict[str, Any]:
    value, effect = psi(ref, cur), effect_size(ref, cur)
    categorical = _is_categorical(ref) or _is_categorical(cur)
    status = "too_few" if small else drift_status(value, warn, alert, effect, min_effect)
    return {"feature": name, "psi": value, "effect": effect, "status": status,
            "ref_mean": np.nan if categorical else float(pd.to_numeric(ref).mean()),
            "cur_mean": np.nan if categorical else float(pd.to_numeric(cur).mean())}


# --------------------------------------------------------------------------- evidence about the model
SCORE_ROW = "churn_probability (score)"


@dataclass
class DriftSettings:
    """Thresholds of the drift check (``monitoring`` in the config)."""

    psi_warn: float = 0.1
    psi_alert: float = 0.25
    min_effect: float = 0.1
    min_sample: int = 200
    important_features: int = 10
    max_auc_drop: float = 0.03


@dataclass
class DriftAssessment:
    """The drift table (score first), whether to retrain, and the evidence behind the decision."""

    table: pd.DataFrame
    retrain: bool
    recommendation: str | None
    evidence: dict[str, Any] = field(default_factory=dict)


def booster_importance(booster: Any, features: list[str]) -> dict[str, float]:
    """Share of the booster's total gain per feature (sums to 1; empty when the booster has none)."""
    try:
        gain = booster.get_score(importance_type="total_gain")
    except Exception:  # noqa: BLE001 - an untrained or foreign booster: no importance, not an error
        return {}
    total = float(sum(gain.values()))
    return {f: float(gain.get(f, 0.0)) / total for f in features} if total > 0 else {}


def _top(importance: dict[str, float] | None, features: list[str], k: int) -> list[str]:
    if not importance:
        return list(features)
    ranked = sorted((f for f in features if importance.get(f, 0.0) > 0), key=lambda f: -importance[f])
    return ranked[:k]


def assess_scoring_drift(reference: pd.DataFrame, current: pd.DataFrame, features: list[str], p: np.ndarray,
                         importance: dict[str, float] | None = None,
                         settings: DriftSettings | None = None) -> DriftAssessment:
    """Drift of the inputs and of the score against the training reference, and a retrain decision.

    ``reference`` holds training-time features and their ``churn_probability``; ``p`` are the new
    scores; ``importance`` the model's importance per feature (e.g. :func:`booster_importance`;
    ``None``: every feature counts as important). Retraining is recommended only on evidence about
    the model: the label-free ROC-AUC estimate (:mod:`inference.estimate`) fell by at least
    ``max_auc_drop`` since the reference, or the score drifted *and* at least one of the
    ``important_features`` most important inputs drifted. One feature's PSI alone never does.
    """
    from inference.estimate import expected_roc_auc

    s = settings or DriftSettings()
    cols = [f for f in features if f in reference.columns]
    table = drift_table(reference[cols], current[cols], cols, s.psi_warn, s.psi_alert, s.min_effect, s.min_sample)
    ref_p = reference["churn_probability"].to_numpy(dtype=float)
    score = _drift_row(SCORE_ROW, pd.Series(ref_p), pd.Series(np.asarray(p, dtype=float)), s.psi_warn, s.psi_alert,
                       s.min_effect, min(len(ref_p), len(p)) < s.min_sample)
    important = _top(importance, cols, s.important_features)
    table = pd.concat([pd.DataFrame([score], columns=DRIFT_COLUMNS), table], ignore_index=True)
    table["important"] = table["feature"].isin(important)
    table["importance"] = table["feature"].map(importance or {}).astype(float)
    drifted = table.loc[(table["status"] == "drift") & (table["feature"] != SCORE_ROW), "feature"].tolist()
    drifted_important = [f for f in drifted if f in important]
    auc_ref, auc_now = expected_roc_auc(ref_p), expected_roc_auc(np.asarray(p, dtype=float))
    evidence = {"estimated_roc_auc_reference": auc_ref, "estimated_roc_auc_current": auc_now,
                "estimated_roc_auc_drop": auc_ref - auc_now, "score": {k: score[k] for k in ("psi", "effect", "status")},
                "important_features": important, "drifted_important": drifted_important,
                "drifted_other": [f for f in drifted if f not in important],
                "thresholds": {"psi_alert": s.psi_alert, "min_effect": s.min_effect, "min_sample": s.min_sample,
                               "max_auc_drop": s.max_auc_drop, "important_features": s.important_features}}
    retrain, message = _decide(evidence, s)
    evidence["retrain_recommended"], evidence["message"] = retrain, message
    return DriftAssessment(table, retrain, message if retrain else None, evidence)


def _decide(ev: dict[str, Any], s: DriftSettings) -> tuple[bool, str]:
    """Retrain or not, and one sentence saying why."""
    drop, now, ref = ev["estimated_roc_auc_drop"], ev["estimated_roc_auc_current"], ev["estimated_roc_auc_reference"]
    score_drift = ev["score"]["status"] == "drift"
    reasons = []
    if np.isfinite(drop) and drop >= s.max_auc_drop:
        reasons.append(f"the label-free ROC-AUC estimate fell from {ref:.3f} to {now:.3f} (-{drop:.3f})")
    if score_drift and ev["drifted_important"]:
        reasons.append(f"the score distribution drifted (PSI {ev['score']['psi']:.2f}, effect "
                       f"{ev['score']['effect']:.2f}) together with important input(s) "
                       f"{', '.join(ev['drifted_important'][:5])}")
    if reasons:
        return True, "Retrain recommended: " + "; ".join(reasons) + "."
    parts = [f"estimated ROC-AUC {now:.3f} vs {ref:.3f} at training" if np.isfinite(drop) else
             "no performance estimate", f"score {ev['score']['status']}"]
    moved = ev["drifted_important"] + ev["drifted_other"]
    if moved:
        parts.append(f"drifted input(s) {', '.join(moved[:5])} alone are not evidence that the model got worse")
    return False, "No retrain needed: " + "; ".join(parts) + "."


def scoring_drift(reference: pd.DataFrame, current: pd.DataFrame, features: list[str], p: np.ndarray,
                  warn: float = 0.1, alert: float = 0.25, importance: dict[str, float] | None = None,
                  settings: DriftSettings | None = None) -> tuple[pd.DataFrame, str | None]:
    """The drift table and the retrain recommendation (``None`` when none): see :func:`assess_scoring_drift`."""
    s = settings or DriftSettings(psi_warn=warn, psi_alert=alert)
    a = assess_scoring_drift(reference, current, features, p, importance, s)
    return a.table, a.recommendation
