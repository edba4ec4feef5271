"""PNG plots of a training run's evaluation (reliability, cumulative gains, precision-recall, profit).

The numbers behind them live in :mod:`model.metrics`; the same ranking convention applies.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.metrics import average_precision_score, precision_recall_curve

from churn.io import write_atomic
from model.metrics import (
    as_arrays,
    best_targeting,
    expected_calibration_error,
    has_both_classes,
    rank_order,
    reliability_table,
)

logger = logging.getLogger(__name__)

__all__ = ["plot_lift", "plot_pr_curve", "plot_profit", "plot_reliability"]


def _save_png(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as PNG atomically (temp file then rename)."""
    return write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))


# --------------------------------------------------------------------------- plots


def plot_reliability(
    y: np.ndarray, p: np.ndarray, path: str | Path, n_bins: int = 10, label: str = "model"
) -> Path:
    """Reliability diagram (observed churn rate against mean prediction per bin) with the diagonal."""
    table = reliability_table(y, p, n_bins)
    ece = expected_calibration_error(y, p, n_bins)
    fig = Figure(figsize=(5.5, 5.0))
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfectly calibrated")
    ax.plot(table["p_mean"], table["y_rate"], marker="o", label=f"{label} (ECE {ece:.3f})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("mean predicted churn probability")
    ax.set_ylabel("observed churn rate")
    ax.set_title("Reliability")
    ax.legend(loc="upper left")
    return _save_png(fig, path)


def plot_lift(y: np.ndarray, p: np.ndarray, path: str | Path) -> Path:
    """Cumulative gains: share of churners caught against share of customers contacted."""
    y_arr, p_arr = as_arrays(y, p, probabilities=False)
    n = y_arr.size
    total = y_arr.sum()
    caught = np.concatenate([[0.0], np.cumsum(y_arr[rank_order(p_arr)])])
    capture = caught / total if total > 0 else np.zeros_like(caught)
    frac = np.arange(n + 1) / n
    base = total / n
    fig = Figure(figsize=(5.5, 5.0))
    ax = fig.add_subplot()
    ax.plot(frac, capture, label="model")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="random")
    if total > 0:
        ax.plot([0, base, 1], [0, 1, 1], linestyle=":", color="black", linewidth=1, label="perfect")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("share of customers contacted (highest risk first)")
    ax.set_ylabel("share of churners caught")
    ax.set_title("Cumulative gains")
    ax.legend(loc="lower right")
    return _save_png(fig, path)


def plot_pr_curve(y: np.ndarray, p: np.ndarray, path: str | Path) -> Path:
    """Precision-recall curve with the base-rate (random) line and average precision in the legend."""
    y_arr, p_arr = as_arrays(y, p, probabilities=False)
    base = float(y_arr.mean())
    fig = Figure(figsize=(5.5, 5.0))
    ax = fig.add_subplot()
    if has_both_classes(y_arr):
        precision, recall, _ = precision_recall_curve(y_arr, p_arr)
        ap = average_precision_score(y_arr, p_arr)
        ax.step(recall, precision, where="post", label=f"model (AP {ap:.3f})")
    else:
        logger.warning("plot_pr_curve: only one class present, drawing the baseline only")
    ax.axhline(base, linestyle="--", color="grey", linewidth=1, label=f"random ({base:.3f})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall (share of churners caught)")
    ax.set_ylabel("precision")
    ax.set_title("Precision-recall")
    ax.legend(loc="upper right")
    return _save_png(fig, path)


def plot_profit(curve: pd.DataFrame, path: str | Path) -> Path:
    """Profit against share of customers targeted, with the best point marked."""
    best = best_targeting(curve)
    fig = Figure(figsize=(6.0, 4.5))
    ax = fig.add_subplot()
    ax.plot(curve["fraction"], curve["profit"], label="expected profit")
    ax.axhline(0, color="grey", linewidth=1)
    ax.plot(
        [best["fraction"]],
        [best["profit"]],
        marker="o",
        color="red",
        linestyle="none",
        label=f"best: top {best['fraction']:.0%} ({best['n_targeted']} customers), {best['profit']:,.0f}",
    )
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of customers targeted (highest risk first)")
    ax.set_ylabel("campaign profit")
    ax.set_title("Profit curve")
    ax.legend(loc="best")
    return _save_png(fig, path)
