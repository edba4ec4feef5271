"""Label-free performance estimate of a scoring run (confidence-based performance estimation, CBPE).

A calibrated model says customer ``i`` churns with probability ``p_i``. If that is true, the
outcomes still to come are independent draws ``y_i ~ Bernoulli(p_i)``, and every metric of the run
has a distribution we can compute now, before any label exists (NannyML's CBPE idea):

* expected ROC-AUC: the share of (churner, non-churner) pairs ranked right, each pair weighted by
  the probability that it *is* such a pair, ``sum_{i != j} p_i (1 - p_j) [s_i > s_j] / sum_{i != j}
  p_i (1 - p_j)`` (ties count half);
* precision at the alert threshold: the mean probability of the alerted customers;
* expected churners among the alerts: the sum of their probabilities.

The interval comes from simulating the outcomes ``n_draws`` times from the probabilities and
computing each metric on every draw (a Poisson-binomial resample): it says where the realised value
should fall if the model is as well calibrated as it claims. The estimate is only as good as the
calibration: it sees covariate shift (the scores move) but not concept drift (the same inputs now
mean something else); ``churn monitor`` sets it against the realised value once outcomes arrive.
Retention contacts change outcomes, so realised precision among contacted alerts is biased low.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from scipy.stats import rankdata

log = logging.getLogger(__name__)

METHOD = ("CBPE (confidence-based performance estimation): metrics expected from calibrated probabilities; "
          "interval from outcomes simulated as Bernoulli(p)")
_CELLS_PER_CHUNK = 4_000_000  # draws x rows simulated at once (memory bound, about 32 MB of float64)


def expected_roc_auc(p: np.ndarray) -> float:
    """Expected ROC-AUC of scores ``p`` if outcomes are Bernoulli(p); NaN with fewer than two rows."""
    p = np.asarray(p, dtype=float)
    if p.size < 2:
        return float("nan")
    order = np.argsort(p, kind="stable")
    ps = p[order]
    neg = 1.0 - ps
    _, start, counts = np.unique(ps, return_index=True, return_counts=True)
    # non-churner mass strictly below each tie group, and within it
    group_neg = np.add.reduceat(neg, start)
    below = np.concatenate([[0.0], np.cumsum(group_neg)[:-1]])
    grp = np.repeat(np.arange(start.size), counts)
    tie_others = group_neg[grp] - neg  # same score, other rows
    num = float(np.sum(ps * (below[grp] + 0.5 * tie_others)))
    den = float(ps.sum() * neg.sum() - np.sum(ps * neg))
    return num / den if den > 0 else float("nan")


def _simulate(p: np.ndarray, alert: np.ndarray, n_draws: int, seed: int) -> dict[str, np.ndarray]:
    """ROC-AUC, alert precision and alert churners on each of ``n_draws`` simulated outcome sets."""
    rng = np.random.default_rng(seed)
    ranks = rankdata(p)  # average ranks: ties count half
    n = p.size
    auc, prec, churners = [], [], []
    per_chunk = max(1, _CELLS_PER_CHUNK // max(n, 1))
    left = n_draws
    while left > 0:
        b = min(per_chunk, left)
        y = rng.random((b, n)) < p  # b outcome sets
        n1 = y.sum(axis=1).astype(float)
        n0 = n - n1
        rank_sum = y.astype(float) @ ranks
        with np.errstate(invalid="ignore", divide="ignore"):
            auc.append((rank_sum - n1 * (n1 + 1) / 2) / (n1 * n0))
        hits = y[:, alert].sum(axis=1).astype(float)
        churners.append(hits)
        prec.append(hits / alert.sum() if alert.any() else np.full(b, np.nan))
        left -= b
    return {"roc_auc": np.concatenate(auc), "precision": np.concatenate(prec), "churners": np.concatenate(churners)}


def _interval(draws: np.ndarray, point: float, level: float) -> dict[str, float | None]:
    ok = draws[np.isfinite(draws)]
    if not ok.size or not np.isfinite(point):
        return {"estimate": None, "low": None, "high": None}
    lo, hi = np.quantile(ok, [(1 - level) / 2, (1 + level) / 2])
    return {"estimate": float(point), "low": float(lo), "high": float(hi)}


def estimate_performance(p: np.ndarray, alert: np.ndarray, n_draws: int = 200, level: float = 0.9,
                         seed: int = 0) -> dict[str, Any]:
    """Expected ROC-AUC, precision at the alert threshold and churners among the alerts, with an interval.

    ``p``: calibrated churn probabilities of every scored customer; ``alert``: boolean mask of the
    alerted ones. Returns a JSON-ready dict: method, level, n_draws, n_scored, n_alerts,
    expected_churn_rate, and for roc_auc, precision_at_alert and churners_in_alerts an
    ``{"estimate", "low", "high"}`` triple (``None`` where undefined, e.g. no alerts).
    Deterministic for a given ``seed``.
    """
    p = np.asarray(p, dtype=float)
    alert = np.asarray(alert, dtype=bool)
    if p.shape != alert.shape:
        raise ValueError(f"p and alert must have the same shape, got {p.shape} and {alert.shape}")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    if n_draws < 10:
        raise ValueError(f"n_draws must be >= 10, got {n_draws}")
    sims = _simulate(p, alert, n_draws, seed)
    n_alerts = int(alert.sum())
    prec_point = float(p[alert].mean()) if n_alerts else float("nan")
    return {
        "method": METHOD, "level": level, "n_draws": n_draws, "n_scored": int(p.size), "n_alerts": n_alerts,
        "expected_churn_rate": float(p.mean()) if p.size else None,
        "roc_auc": _interval(sims["roc_auc"], expected_roc_auc(p), level),
        "precision_at_alert": _interval(sims["precision"], prec_point, level),
        "churners_in_alerts": _interval(sims["churners"], float(p[alert].sum()) if n_alerts else float("nan"), level),
    }
