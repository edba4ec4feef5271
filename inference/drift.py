"""Population stability: has the scoring population moved away from the training population?

The Population Stability Index, ``PSI = sum_b (a_b - e_b) * ln(a_b / e_b)`` over bins ``b`` with
expected (reference) share ``e_b`` and actual (current) share ``a_b``, is the credit-scoring
industry's drift measure. Usual reading: < 0.1 stable, 0.1-0.25 worth a look, >= 0.25 drift.
"""

from __future__ import annotations

import logging

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


def _numeric_counts(expected: pd.Series, actual: pd.Series, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Counts in quantile bins of ``expected`` (right-closed, outer bins open-ended) plus a NaN bin."""
    e = expected.to_numpy(dtype=float, na_value=np.nan)
    a = actual.to_numpy(dtype=float, na_value=np.nan)
    e_ok, a_ok = e[~np.isnan(e)], a[~np.isnan(a)]
    if e_ok.size:
        inner = np.quantile(e_ok, np.linspace(0, 1, n_bins + 1)[1:-1])
        edges = np.unique(inner[np.isfinite(inner)])
    else:
        edges = np.array([])
    # Bin i holds (edges[i-1], edges[i]]: zero-inflated features keep their point mass in one bin.
    n_out = edges.size + 1
    e_counts = np.bincount(np.searchsorted(edges, e_ok, side="left"), minlength=n_out).astype(float)
    a_counts = np.bincount(np.searchsorted(edges, a_ok, side="left"), minlength=n_out).astype(float)
    e_nan, a_nan = float(e.size - e_ok.size), float(a.size - a_ok.size)
    if e_nan or a_nan:
        e_counts = np.append(e_counts, e_nan)
        a_counts = np.append(a_counts, a_nan)
    return e_counts, a_counts


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


def psi(
    expected: np.ndarray | pd.Series,
    actual: np.ndarray | pd.Series,
    n_bins: int = 10,
    eps: float = 1e-4,
) -> float:
    """Population Stability Index of ``actual`` against the ``expected`` (reference) sample.

    Numeric data: bins at the ``expected`` quantiles (duplicate edges merged, so at most ``n_bins``
    bins; the outer bins are open-ended so new extremes still count); NaN is a bin of its own.
    Object, string, category or bool data: one bin per category over the union of both samples.
    Shares are floored at ``eps``. 0 for identical distributions; not symmetric, since the bins
    come from ``expected``.
    """
    e = pd.Series(expected) if not isinstance(expected, pd.Series) else expected
    a = pd.Series(actual) if not isinstance(actual, pd.Series) else actual
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


def drift_status(value: float, warn: float = 0.1, alert: float = 0.25) -> str:
    """Status of a PSI value: "stable" below ``warn``, "warning" below ``alert``, else "drift"."""
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
) -> pd.DataFrame:
    """PSI and status per feature, worst first.

    ``columns`` defaults to the reference columns also present in ``current``. Columns: feature,
    psi, status, ref_mean, cur_mean (means are NaN for categorical features). Ties keep column order.
    """
    if warn > alert:
        raise ValueError(f"warn ({warn}) must not exceed alert ({alert})")
    if columns is None:
        columns = [c for c in reference.columns if c in current.columns]
    for name, frame in (("reference", reference), ("current", current)):
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise DataError(name, missing[0], f"column not found; missing columns: {missing}")
    rows = []
    for col in columns:
        ref, cur = reference[col], current[col]
        value = psi(ref, cur)
        categorical = _is_categorical(ref) or _is_categorical(cur)
        rows.append(
            {
                "feature": col,
                "psi": value,
                "status": drift_status(value, warn, alert),
                "ref_mean": np.nan if categorical else float(ref.mean()),
                "cur_mean": np.nan if categorical else float(cur.mean()),
            }
        )
    out = pd.DataFrame(rows, columns=["feature", "psi", "status", "ref_mean", "cur_mean"])
    out = out.sort_values("psi", ascending=False, kind="stable").reset_index(drop=True)
    n_drift = int((out["status"] == "drift").sum())
    if n_drift:
        logger.warning("drift: %d of %d features at PSI >= %s", n_drift, len(out), alert)
    return out


def scoring_drift(reference: pd.DataFrame, current: pd.DataFrame, features: list[str], p: np.ndarray,
                  warn: float = 0.1, alert: float = 0.25) -> tuple[pd.DataFrame, str | None]:
    """Drift of the model's inputs and of its score against the training reference, plus a recommendation.

    ``reference`` holds training-time features and their ``churn_probability``; ``p`` are the new scores.
    Returns the table (score first, then features by PSI) and a retrain recommendation when any row drifted.
    """
    cols = [f for f in features if f in reference.columns]
    table = drift_table(reference[cols], current[cols], cols, warn=warn, alert=alert)
    score_psi = psi(reference["churn_probability"].to_numpy(), p)
    score_row = pd.DataFrame([{"feature": "churn_probability (score)", "psi": score_psi,
                               "status": drift_status(score_psi, warn, alert),
                               "ref_mean": float(reference["churn_probability"].mean()), "cur_mean": float(np.mean(p))}])
    table = pd.concat([score_row, table], ignore_index=True)
    drifted = table.loc[table["status"] == "drift", "feature"]
    recommendation = None
    if len(drifted):
        recommendation = (f"{len(drifted)} input(s) drifted past PSI {alert} since training "
                          f"({', '.join(drifted.head(5))}): retrain the model.")
    return table, recommendation
