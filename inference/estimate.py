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

from model.recalibration import Recalibration, logit, model_recalibration, sigmoid

log = logging.getLogger(__name__)

METHOD = ("CBPE (confidence-based performance estimation): metrics expected from calibrated probabilities; "
          "interval from outcomes simulated as Bernoulli(p)")
METHOD_RECALIBRATED = ("CBPE on recalibrated probabilities: the calibration slope and intercept measured on the "
                       "latest labelled out-of-time window applied before the estimate; interval from outcomes "
                       "simulated under bootstrap draws of that recalibration")
_CELLS_PER_CHUNK = 4_000_000  # draws x rows simulated at once (memory bound, about 32 MB of float64)


def expected_roc_auc(p: np.ndarray, scores: np.ndarray | None = None) -> float:
    """Expected ROC-AUC of ``scores`` (default ``p``) if outcomes are Bernoulli(p); NaN with fewer than two rows."""
    p = np.asarray(p, dtype=float)
    s = p if scores is None else np.asarray(scores, dtype=float)
    if p.size < 2:
        return float("nan")
    order = np.argsort(s, kind="stable")
    ps, ss = p[order], s[order]
    neg = 1.0 - ps
    _, start, counts = np.unique(ss, return_index=True, return_counts=True)
    # non-churner mass strictly below each tie group, and within it
    group_neg = np.add.reduceat(neg, start)
    below = np.concatenate([[0.0], np.cumsum(group_neg)[:-1]])
    grp = np.repeat(np.arange(start.size), counts)
    tie_others = group_neg[grp] - neg  # same score, other rows
    num = float(np.sum(ps * (below[grp] + 0.5 * tie_others)))
    den = float(ps.sum() * neg.sum() - np.sum(ps * neg))
    return num / den if den > 0 else float("nan")


def _outcome_probabilities(p: np.ndarray, rec: Recalibration | None, first: int, b: int) -> np.ndarray:
    """Outcome probabilities of draws ``first .. first + b``: ``p`` itself, or ``p`` under each draw's bootstrap
    recalibration (b x n), so that the simulated outcomes carry the uncertainty of the correction."""
    if rec is None:
        return p
    if not rec.draws:
        return np.broadcast_to(rec.apply(p), (b, p.size))
    pairs = np.array([rec.draws[(first + k) % len(rec.draws)] for k in range(b)])
    # each draw's deviation from the fitted pair, around the pair applied: the full spread of the correction,
    # centred on the estimate (so the interval contains it whatever the shrinkage)
    pairs += np.array(rec.effective()) - np.array([rec.slope, rec.intercept])
    return sigmoid(pairs[:, 1:2] + pairs[:, 0:1] * logit(p)[None, :])


def _simulate(p: np.ndarray, alert: np.ndarray, n_draws: int, seed: int,
              rec: Recalibration | None = None) -> dict[str, np.ndarray]:
    """ROC-AUC, alert precision and alert churners of scores ``p`` on each of ``n_draws`` simulated outcome sets."""
    rng = np.random.default_rng(seed)
    ranks = rankdata(p)  # average ranks: ties count half
    n = p.size
    auc, prec, churners = [], [], []
    per_chunk = max(1, _CELLS_PER_CHUNK // max(n, 1))
    done = 0
    while done < n_draws:
        b = min(per_chunk, n_draws - done)
        y = rng.random((b, n)) < _outcome_probabilities(p, rec, done, b)  # b outcome sets
        n1 = y.sum(axis=1).astype(float)
        n0 = n - n1
        rank_sum = y.astype(float) @ ranks
        with np.errstate(invalid="ignore", divide="ignore"):
            auc.append((rank_sum - n1 * (n1 + 1) / 2) / (n1 * n0))
        hits = y[:, alert].sum(axis=1).astype(float)
        churners.append(hits)
        prec.append(hits / alert.sum() if alert.any() else np.full(b, np.nan))
        done += b
    return {"roc_auc": np.concatenate(auc), "precision": np.concatenate(prec), "churners": np.concatenate(churners)}


def _interval(draws: np.ndarray, point: float, level: float) -> dict[str, float | None]:
    ok = draws[np.isfinite(draws)]
    if not ok.size or not np.isfinite(point):
        return {"estimate": None, "low": None, "high": None}
    lo, hi = np.quantile(ok, [(1 - level) / 2, (1 + level) / 2])
    return {"estimate": float(point), "low": float(lo), "high": float(hi)}


def estimate_performance(p: np.ndarray, alert: np.ndarray, n_draws: int = 200, level: float = 0.9,
                         seed: int = 0, recalibration: Recalibration | None = None) -> dict[str, Any]:
    """Expected ROC-AUC, precision at the alert threshold and churners among the alerts, with an interval.

    ``p``: calibrated churn probabilities of every scored customer; ``alert``: boolean mask of the
    alerted ones; ``recalibration``: the calibration slope and intercept measured on the latest labelled
    out-of-time window (:mod:`model.recalibration`), or ``None`` to trust ``p`` as it is. With it, the
    metrics are expected under the recalibrated probabilities (the ranking is still ``p``'s), and the
    interval mixes the bootstrap draws of the correction into the simulated outcomes.
    Returns a JSON-ready dict: method, level, n_draws, n_scored, n_alerts, expected_churn_rate (the mean of
    ``p``), expected_churn_rate_recalibrated (the mean after the correction, ``None`` without one),
    recalibration (``None`` or the pair applied, the pair fitted on the window, the shrinkage weight, the
    window and the bootstrap range), for roc_auc, precision_at_alert and churners_in_alerts an
    ``{"estimate", "low", "high"}`` triple (``None`` where undefined, e.g. no alerts), and
    ``roc_auc_uncorrected`` (the estimate from ``p`` itself, ``None`` without a correction).
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
    rec = _usable(recalibration)
    q = p if rec is None else rec.apply(p)
    sims = _simulate(p, alert, n_draws, seed, rec)
    n_alerts = int(alert.sum())
    prec_point = float(q[alert].mean()) if n_alerts else float("nan")
    return {
        "method": METHOD if rec is None else METHOD_RECALIBRATED, "level": level, "n_draws": n_draws,
        "n_scored": int(p.size), "n_alerts": n_alerts,
        "expected_churn_rate": float(p.mean()) if p.size else None,
        "expected_churn_rate_recalibrated": float(q.mean()) if rec is not None and p.size else None,
        "recalibration": None if recalibration is None else _recalibration_record(recalibration, level, rec is not None),
        "roc_auc": _interval(sims["roc_auc"], expected_roc_auc(q, p), level),
        "roc_auc_uncorrected": expected_roc_auc(p) if rec is not None else None,
        "precision_at_alert": _interval(sims["precision"], prec_point, level),
        "churners_in_alerts": _interval(sims["churners"], float(q[alert].sum()) if n_alerts else float("nan"), level),
    }


def _usable(rec: Recalibration | None) -> Recalibration | None:
    """The recalibration, unless its slope is not positive: then the window ranked against the model's scores
    (or not at all), and a monotone correction cannot describe it; the estimate trusts ``p`` and says so."""
    if rec is not None and rec.slope <= 0:
        log.warning("performance estimate: recalibration slope %.3f <= 0 on %s: not applied (the scores did not rank "
                    "that window's outcomes); the estimate trusts the probabilities as they are", rec.slope, rec.source)
        return None
    return rec


def _recalibration_record(rec: Recalibration, level: float, applied: bool) -> dict[str, Any]:
    """What the summary says about the correction: the pair applied, the one fitted on the window, the shrinkage
    weight between them, the window, and the fitted slope's bootstrap range."""
    slope, intercept = rec.effective()
    out: dict[str, Any] = {"applied": applied, "slope": slope, "intercept": intercept, "window_slope": rec.slope,
                           "window_intercept": rec.intercept, "shrinkage_weight": rec.weight, "window": rec.source,
                           "n": rec.n, "churners": rec.churners}
    if rec.draws:
        lo, hi = np.quantile([d[0] for d in rec.draws], [(1 - level) / 2, (1 + level) / 2])
        out.update({"slope_low": float(lo), "slope_high": float(hi)})
    return out


def recalibration_for(model: Any, enabled: bool = True) -> Recalibration | None:
    """The recalibration the scoring model carries (its own labelled out-of-time test window), if enabled.

    A malformed record in the model's metadata is a :class:`model.artifact.ModelFormatError` naming the key.
    """
    if not enabled:
        return None
    from model.artifact import META_FILE, ModelFormatError

    try:
        return model_recalibration(model.meta)
    except ValueError as exc:
        raise ModelFormatError(f"model {META_FILE}: meta.{exc}") from exc


def auc_standard_error(auc: float, n_pos: int, n_neg: int) -> float:
    """Sampling standard error of a realised ROC-AUC (Hanley & McNeil 1982), NaN without both classes.

    It is what "the estimate is within x of the realised value" is measured against: with 50 churners
    among 3,000 customers and an AUC of 0.65 it is about 0.04, so a perfect estimator still misses the
    realised value by more than 0.03 in about half of such months.
    """
    if n_pos < 1 or n_neg < 1 or not np.isfinite(auc):
        return float("nan")
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    var = (auc * (1 - auc) + (n_pos - 1) * (q1 - auc**2) + (n_neg - 1) * (q2 - auc**2)) / (n_pos * n_neg)
    return float(np.sqrt(max(var, 0.0)))


def describe_recalibration(estimate: dict[str, Any] | None) -> str | None:
    """One sentence for the report on how the estimate treated the probabilities (None: no estimate)."""
    if not isinstance(estimate, dict):
        return None
    rec = estimate.get("recalibration")
    if not isinstance(rec, dict):
        return ("The probabilities were taken as calibrated (the model carries no labelled out-of-time window): "
                "the estimate is optimistic if the model is over-confident on new months.")
    if not rec.get("applied"):
        return (f"Not recalibrated: on its window ({rec.get('window')}) the model's scores did not rank the outcomes "
                f"(slope {rec.get('window_slope', float('nan')):.2f}); the estimate trusts the probabilities as they are.")
    raw = estimate.get("roc_auc_uncorrected")
    rng = f" (90% range {rec['slope_low']:.2f}-{rec['slope_high']:.2f})" if "slope_low" in rec else ""
    before = f"; ROC-AUC {raw:.3f} before the correction" if isinstance(raw, (int, float)) else ""
    applied = ("within the window's noise, so no correction" if rec.get("shrinkage_weight") == 0 else
               f"applied as {rec['slope']:.2f} (shrunk towards 1 by the window's noise){before}")
    return (f"Checked against the model's labelled out-of-time window ({rec.get('window')}, {rec.get('churners')} "
            f"churners): calibration slope {rec['window_slope']:.2f} there{rng}, {applied}. The interval includes "
            "the correction's uncertainty.")
