"""Measure a churn model the way the business judges it (used by training and by monitoring alike).

Ranking quality (ROC/PR AUC), calibration (ECE, reliability table), targeting value (lift and
capture at the top of the list, profit curve, expected maximum profit) and the same numbers per
segment. All functions are pure: arrays in, numbers or frames out (plots: ``training.plots``).

Ranking convention everywhere: customers are ordered by ``p`` descending with a *stable* sort on
``-p``, so ties keep their input order and results are deterministic. "Top fraction f" means the
first ``ceil(f * N)`` customers of that order.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import average_precision_score, log_loss, roc_auc_score

from churn.errors import DataError

logger = logging.getLogger(__name__)

_EMP_BLOCK_CELLS = 4_000_000  # profit-matrix cells per block in expected_maximum_profit (~32 MB)

__all__ = [
    "as_arrays",
    "best_targeting",
    "bootstrap_ci",
    "classification_metrics",
    "expected_calibration_error",
    "expected_maximum_profit",
    "has_both_classes",
    "lift_table",
    "profit_curve",
    "rank_order",
    "reliability_table",
    "segment_metrics",
]


# --------------------------------------------------------------------------- helpers


def as_arrays(y: object, p: object, *, probabilities: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Validate labels (0/1) and scores (finite; in [0, 1] when ``probabilities``) and return float arrays."""
    y_arr = np.asarray(y, dtype=float).ravel()
    p_arr = np.asarray(p, dtype=float).ravel()
    if y_arr.shape != p_arr.shape:
        raise ValueError(f"y and p must have the same length, got {y_arr.size} and {p_arr.size}")
    if y_arr.size == 0:
        raise ValueError("y and p are empty")
    if not np.isin(y_arr, (0.0, 1.0)).all():
        bad = np.unique(y_arr[~np.isin(y_arr, (0.0, 1.0))])[:5]
        raise ValueError(f"y must contain only 0 and 1, found {bad.tolist()}")
    if not np.isfinite(p_arr).all():
        raise ValueError(f"p contains {int((~np.isfinite(p_arr)).sum())} NaN or infinite values")
    if probabilities and ((p_arr < 0).any() or (p_arr > 1).any()):
        raise ValueError(f"p must lie in [0, 1], got range [{p_arr.min():.4g}, {p_arr.max():.4g}]")
    return y_arr, p_arr


def rank_order(p: np.ndarray) -> np.ndarray:
    """Indices sorting ``p`` descending; ties keep input order (stable sort on -p)."""
    return np.argsort(-p, kind="stable")


def _n_top(fraction: float, n: int) -> int:
    """Number of customers in the top ``fraction`` of ``n``: ceil(f * n), guarded against float noise."""
    return int(math.ceil(round(fraction * n, 9)))


def _bin_index(p: np.ndarray, n_bins: int) -> np.ndarray:
    """Equal-width bin of each probability: [k/n, (k+1)/n), the last bin closed at 1.

    Rounding before ``floor`` keeps decimal edges where people expect them (0.3 * 10 is 2.999...).
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    idx = np.floor(np.round(p * n_bins, 9)).astype(int)
    return np.clip(idx, 0, n_bins - 1)


def has_both_classes(y: np.ndarray) -> bool:
    return bool(0 < y.sum() < y.size)


# --------------------------------------------------------------------------- calibration


def reliability_table(y: np.ndarray, p: np.ndarray, n_bins: int = 10) -> pd.DataFrame:
    """Mean predicted probability against observed churn rate per equal-width bin (empty bins dropped).

    Columns: ``bin`` (0-based index of [bin/n_bins, (bin+1)/n_bins)), ``p_mean``, ``y_rate``, ``count``.
    """
    y_arr, p_arr = as_arrays(y, p)
    idx = _bin_index(p_arr, n_bins)
    count = np.bincount(idx, minlength=n_bins)
    p_sum = np.bincount(idx, weights=p_arr, minlength=n_bins)
    y_sum = np.bincount(idx, weights=y_arr, minlength=n_bins)
    keep = count > 0
    return pd.DataFrame(
        {
            "bin": np.arange(n_bins)[keep],
            "p_mean": p_sum[keep] / count[keep],
            "y_rate": y_sum[keep] / count[keep],
            "count": count[keep].astype(int),
        }
    )


def expected_calibration_error(y: np.ndarray, p: np.ndarray, n_bins: int = 10) -> float:
    """ECE: sum over equal-width bins of (bin size / N) * |observed rate - mean prediction|.

    Tells whether a "30 % risk" really means 30 % of such customers churn, which the retention
    budget maths (profit curves) relies on.
    """
    table = reliability_table(y, p, n_bins)
    weights = table["count"].to_numpy() / table["count"].sum()
    return float(np.sum(weights * np.abs(table["y_rate"].to_numpy() - table["p_mean"].to_numpy())))


# --------------------------------------------------------------------------- targeting


def lift_table(y: np.ndarray, p: np.ndarray, fractions: Sequence[float] = (0.05, 0.10, 0.20)) -> pd.DataFrame:
    """Precision, lift and capture when the top ``fraction`` of customers by ``p`` is contacted.

    Columns: fraction, n_targeted (ceil(f * N)), churners_caught, precision, lift (precision / base
    rate; NaN if there are no churners), capture (share of all churners caught; NaN if none).
    """
    y_arr, p_arr = as_arrays(y, p, probabilities=False)
    n = y_arr.size
    caught_cum = np.concatenate([[0.0], np.cumsum(y_arr[rank_order(p_arr)])])
    total_pos = float(y_arr.sum())
    base_rate = total_pos / n
    rows = []
    for f in fractions:
        if not 0 < f <= 1:
            raise ValueError(f"fractions must lie in (0, 1], got {f}")
        k = _n_top(f, n)
        caught = float(caught_cum[k])
        precision = caught / k
        rows.append(
            {
                "fraction": float(f),
                "n_targeted": k,
                "churners_caught": int(caught),
                "precision": precision,
                "lift": precision / base_rate if total_pos > 0 else np.nan,
                "capture": caught / total_pos if total_pos > 0 else np.nan,
            }
        )
    return pd.DataFrame(
        rows, columns=["fraction", "n_targeted", "churners_caught", "precision", "lift", "capture"]
    )


def profit_curve(
    y: np.ndarray,
    p: np.ndarray,
    clv: float | np.ndarray,
    contact_cost: float,
    incentive_cost: float,
    acceptance_rate: float,
    n_points: int = 101,
) -> pd.DataFrame:
    """Realised expected campaign profit when targeting the top fraction f of customers, f in [0, 1].

    Per targeted customer (Neslin et al. 2006; Verbraken, Verbeke and Baesens 2013):
    a churner is worth ``acceptance_rate * (clv_i - incentive_cost) - contact_cost``; a non-churner
    costs ``incentive_cost + contact_cost`` (they take the offer although they would have stayed).
    ``clv`` is a scalar or one value per customer. Columns: fraction, n_targeted, profit,
    profit_per_customer (profit / N, N = all customers).
    """
    y_arr, p_arr = as_arrays(y, p, probabilities=False)
    n = y_arr.size
    if n_points < 2:
        raise ValueError(f"n_points must be >= 2, got {n_points}")
    if not 0 <= acceptance_rate <= 1:
        raise ValueError(f"acceptance_rate must lie in [0, 1], got {acceptance_rate}")
    clv_arr = np.broadcast_to(np.asarray(clv, dtype=float), (n,))
    gain = np.where(
        y_arr == 1,
        acceptance_rate * (clv_arr - incentive_cost) - contact_cost,
        -(incentive_cost + contact_cost),
    )
    cum = np.concatenate([[0.0], np.cumsum(gain[rank_order(p_arr)])])
    fractions = np.linspace(0.0, 1.0, n_points)
    k = np.array([_n_top(f, n) for f in fractions], dtype=int)
    profit = cum[k]
    return pd.DataFrame(
        {"fraction": fractions, "n_targeted": k, "profit": profit, "profit_per_customer": profit / n}
    )


def best_targeting(curve: pd.DataFrame) -> dict[str, float]:
    """Point of maximum profit on a :func:`profit_curve` (the smallest fraction if several tie)."""
    if curve.empty:
        raise ValueError("profit curve is empty")
    row = curve.loc[curve["profit"].idxmax()]
    return {
        "fraction": float(row["fraction"]),
        "n_targeted": int(row["n_targeted"]),
        "profit": float(row["profit"]),
    }


def expected_maximum_profit(
    y: np.ndarray,
    p: np.ndarray,
    clv: float,
    incentive_cost: float,
    contact_cost: float,
    alpha: float = 6.0,
    beta: float = 14.0,
    n_grid: int = 200,
) -> dict[str, float]:
    """Expected maximum profit (EMP) for customer churn, per customer.

    Verbraken, T., Verbeke, W. and Baesens, B. (2013), "A Novel Profit Maximizing Metric for
    Measuring Classification Performance of Customer Churn Prediction Models", IEEE TKDE 25(5),
    961-973. The acceptance rate gamma of the retention offer is uncertain, gamma ~ Beta(alpha,
    beta); CLV is constant. For each gamma the campaign targets the profit-maximising top of the
    ranking, with per-customer profit
    ``(TP * (gamma * (clv - incentive_cost) - contact_cost) - FP * (incentive_cost + contact_cost)) / N``,
    and EMP is that maximum averaged over gamma's density. Numerically: gamma on ``n_grid`` equal
    cells of [0, 1], evaluated at cell midpoints and weighted by the exact Beta mass of each cell;
    the maximum is over every distinct threshold of ``p`` (tied scores are targeted together),
    including targeting nobody, so EMP >= 0. Paper defaults: alpha=6, beta=14, clv=200,
    incentive_cost=10, contact_cost=1.

    Returns ``{"emp": ..., "fraction": ...}``: the EMP per customer and the expected share of
    customers targeted at the optimum.
    """
    y_arr, p_arr = as_arrays(y, p, probabilities=False)
    if alpha <= 0 or beta <= 0:
        raise ValueError(f"alpha and beta must be > 0, got {alpha}, {beta}")
    if n_grid < 1:
        raise ValueError(f"n_grid must be >= 1, got {n_grid}")
    n = y_arr.size
    order = rank_order(p_arr)
    p_sorted, y_sorted = p_arr[order], y_arr[order]
    # Cut points: after the last member of each tie group, plus "nobody" (0).
    group_end = np.flatnonzero(np.append(p_sorted[1:] != p_sorted[:-1], True)) + 1
    cuts = np.concatenate([[0], group_end])
    tp = np.concatenate([[0.0], np.cumsum(y_sorted)])[cuts]
    fp = cuts - tp

    edges = np.linspace(0.0, 1.0, n_grid + 1)
    weights = np.diff(stats.beta.cdf(edges, alpha, beta))
    gamma = (edges[:-1] + edges[1:]) / 2
    # profit[g, c]: per-customer profit at acceptance rate gamma[g] and cut c. Computed in blocks of
    # gamma so a million distinct scores never needs a (n_grid x N) matrix at once.
    best = np.empty(n_grid, dtype=int)
    best_profit = np.empty(n_grid)
    block = max(1, _EMP_BLOCK_CELLS // cuts.size)
    for start in range(0, n_grid, block):
        g = gamma[start : start + block]
        profit = (
            np.outer(g * (clv - incentive_cost) - contact_cost, tp) - (incentive_cost + contact_cost) * fp
        ) / n
        arg = np.argmax(profit, axis=1)  # first maximum = smallest campaign among equals
        best[start : start + block] = arg
        best_profit[start : start + block] = profit[np.arange(g.size), arg]
    emp = float(np.sum(weights * best_profit))
    fraction = float(np.sum(weights * cuts[best] / n))
    logger.debug("EMP %.4f per customer, expected targeted fraction %.4f", emp, fraction)
    return {"emp": emp, "fraction": fraction}


# --------------------------------------------------------------------------- summary metrics


def classification_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """Ranking, probability and calibration metrics in one dict.

    Keys: roc_auc, pr_auc (average precision), log_loss, brier, ece, base_rate, n, n_positive.
    roc_auc and pr_auc are NaN, not an error, when only one class is present (e.g. a small segment).
    """
    y_arr, p_arr = as_arrays(y, p)
    both = has_both_classes(y_arr)
    return {
        "roc_auc": float(roc_auc_score(y_arr, p_arr)) if both else float("nan"),
        "pr_auc": float(average_precision_score(y_arr, p_arr)) if both else float("nan"),
        "log_loss": float(log_loss(y_arr, p_arr, labels=[0, 1])),
        "brier": float(np.mean((p_arr - y_arr) ** 2)),
        "ece": expected_calibration_error(y_arr, p_arr),
        "base_rate": float(y_arr.mean()),
        "n": int(y_arr.size),
        "n_positive": int(y_arr.sum()),
    }


def segment_metrics(
    df: pd.DataFrame, y_col: str, p_col: str, segment_cols: list[str], min_rows: int = 50
) -> pd.DataFrame:
    """Metrics per value of each segment column, so a model that fails one customer group is seen.

    One row per (segment column, value), in ``segment_cols`` order then sorted value (missing
    values form their own segment). Columns: segment, value, n, base_rate, roc_auc, pr_auc, brier,
    lift_at_10, reliable. Segments with fewer than ``min_rows`` rows are kept with ``reliable`` False.
    """
    missing = [c for c in [y_col, p_col, *segment_cols] if c not in df.columns]
    if missing:
        raise DataError("evaluation", missing[0], f"column not found; missing columns: {missing}")
    columns = ["segment", "value", "n", "base_rate", "roc_auc", "pr_auc", "brier", "lift_at_10", "reliable"]
    rows = []
    for col in segment_cols:
        for value, part in df.groupby(col, sort=True, dropna=False, observed=True):
            y_arr, p_arr = as_arrays(part[y_col].to_numpy(), part[p_col].to_numpy())
            both = has_both_classes(y_arr)
            rows.append(
                {
                    "segment": col,
                    "value": value,
                    "n": int(y_arr.size),
                    "base_rate": float(y_arr.mean()),
                    "roc_auc": float(roc_auc_score(y_arr, p_arr)) if both else np.nan,
                    "pr_auc": float(average_precision_score(y_arr, p_arr)) if both else np.nan,
                    "brier": float(np.mean((p_arr - y_arr) ** 2)),
                    "lift_at_10": float(lift_table(y_arr, p_arr, (0.10,))["lift"].iloc[0]),
                    "reliable": bool(y_arr.size >= min_rows),
                }
            )
    out = pd.DataFrame(rows, columns=columns)
    out["value"] = out["value"].astype(object)
    return out


def bootstrap_ci(
    y: np.ndarray,
    p: np.ndarray,
    metric: Callable[[np.ndarray, np.ndarray], float],
    n_boot: int = 200,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of ``metric(y, p)`` (rows resampled with replacement).

    Resamples where the metric is undefined (NaN, or a ValueError such as one class for AUC) are
    skipped; (NaN, NaN) if none is usable.
    """
    y_arr, p_arr = as_arrays(y, p, probabilities=False)
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    rng = np.random.default_rng(seed)
    n = y_arr.size
    values = np.full(n_boot, np.nan)
    with warnings.catch_warnings():
        # A resample with one class is expected now and then; it is skipped, not worth a warning each.
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        for b in range(n_boot):
            idx = rng.integers(0, n, size=n)
            try:
                values[b] = float(metric(y_arr[idx], p_arr[idx]))
            except ValueError:
                continue
    ok = values[np.isfinite(values)]
    if ok.size < n_boot:
        logger.debug("bootstrap: %d of %d resamples gave no metric value", n_boot - ok.size, n_boot)
    if ok.size == 0:
        return (float("nan"), float("nan"))
    tail = (1 - level) / 2
    lo, hi = np.quantile(ok, [tail, 1 - tail])
    return (float(lo), float(hi))
