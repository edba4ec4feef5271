"""Logistic recalibration measured on a labelled out-of-time window, for the label-free performance estimate.

A model calibrated on its own validation months is often over-confident the month after: its
probabilities are more spread than the outcomes (calibration slope below 1). CBPE trusts the spread,
so its ROC-AUC estimate is optimistic exactly then. The fix is the classical calibration-slope model
(Cox 1958): on the latest window whose outcomes are known and that the model did not calibrate on,
fit ``logit P(y = 1) = intercept + slope * logit(p)``, and estimate from ``sigmoid(intercept + slope *
logit(p_new))`` instead of ``p_new``. The fit is bootstrapped over the window's customers so that the
estimate's interval can carry the uncertainty of the correction.

Stored as plain data (``to_dict`` / ``from_dict``) in the model's metadata; nothing here changes the
scores the model outputs, only what the estimate assumes about them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

_EPS = 1e-6
_NEWTON_STEPS = 25


def logit(p: np.ndarray) -> np.ndarray:
    """log(p / (1 - p)) with p clipped to [1e-6, 1 - 1e-6]."""
    q = np.clip(np.asarray(p, dtype=float), _EPS, 1 - _EPS)
    return np.log(q / (1 - q))


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(z, dtype=float)))


def _logistic_fit(z: np.ndarray, y: np.ndarray, w: np.ndarray | None = None) -> tuple[float, float]:
    """Maximum-likelihood (slope, intercept) of ``y ~ sigmoid(intercept + slope * z)`` by Newton's method.

    A tiny ridge (1e-6) keeps the step finite when the classes separate.
    """
    w = np.ones_like(z) if w is None else w
    beta = np.zeros(2)  # intercept, slope
    x = np.column_stack([np.ones_like(z), z])
    for _ in range(_NEWTON_STEPS):
        mu = sigmoid(x @ beta)
        grad = x.T @ (w * (y - mu)) - 1e-6 * beta
        hess = (x * (w * mu * (1 - mu))[:, None]).T @ x + 1e-6 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        beta += step
        if np.max(np.abs(step)) < 1e-9:
            break
    return float(beta[1]), float(beta[0])


@dataclass(frozen=True)
class Recalibration:
    """A calibration slope and intercept fitted on a labelled window, their bootstrap draws, where they were measured.

    The pair the estimate applies is shrunk towards the identity (slope 1, intercept 0) by the weight
    ``max(0, 1 - var / (slope - 1)^2)``, ``var`` the bootstrap variance of the slope: a deviation the window's
    own noise explains is mostly dropped, a clear one is kept (a positive-part James-Stein weight;
    ``shrink=False`` applies the fitted pair). The draws are kept as fitted: the estimate's interval moves
    each draw's deviation from the fitted pair onto the applied pair, so it carries the correction's full
    uncertainty and is centred on the estimate.
    """

    slope: float
    intercept: float
    n: int
    churners: int
    source: str
    draws: tuple[tuple[float, float], ...] = ()  # bootstrap (slope, intercept) pairs
    shrink: bool = True

    @property
    def weight(self) -> float:
        """How much of the window's deviation from the identity is applied (1 without shrinkage)."""
        if not self.shrink or not self.draws:
            return 1.0
        var = float(np.var([d[0] for d in self.draws]))
        dev = (self.slope - 1.0) ** 2
        return max(0.0, 1.0 - var / dev) if dev > 0 else 0.0

    def effective(self) -> tuple[float, float]:
        """The (slope, intercept) the estimate applies."""
        w = self.weight
        return 1.0 + w * (self.slope - 1.0), w * self.intercept + 0.0  # + 0.0: no "-0.0" in the summary

    def apply(self, p: np.ndarray, slope: float | None = None, intercept: float | None = None) -> np.ndarray:
        """``sigmoid(intercept + slope * logit(p))``, by default with the :meth:`effective` pair."""
        a, b = self.effective()
        return sigmoid((b if intercept is None else intercept) + (a if slope is None else slope) * logit(p))

    def to_dict(self) -> dict[str, Any]:
        return {"slope": self.slope, "intercept": self.intercept, "n": self.n, "churners": self.churners,
                "source": self.source, "draws": [list(d) for d in self.draws]}

    @classmethod
    def from_dict(cls, d: Any) -> Recalibration:
        """Rebuild from :meth:`to_dict`'s plain data; ``ValueError`` naming the key when it is malformed."""
        if not isinstance(d, dict):
            raise ValueError(f"estimate_recalibration must be a mapping, got {type(d).__name__}")
        for key in ("slope", "intercept", "n", "churners"):
            if not isinstance(d.get(key), (int, float)) or not np.isfinite(d[key]):
                raise ValueError(f"estimate_recalibration.{key} must be a finite number, got {d.get(key)!r}")
        draws = d.get("draws", [])
        if not isinstance(draws, list) or not all(isinstance(x, list) and len(x) == 2 for x in draws):
            raise ValueError("estimate_recalibration.draws must be a list of [slope, intercept] pairs")
        return cls(float(d["slope"]), float(d["intercept"]), int(d["n"]), int(d["churners"]),
                   str(d.get("source", "")), tuple((float(a), float(b)) for a, b in draws))


def fit_recalibration(p: np.ndarray, y: np.ndarray, source: str = "", n_boot: int = 200, seed: int = 0,
                      max_boot_rows: int = 50_000) -> Recalibration:
    """Calibration slope and intercept of probabilities ``p`` against outcomes ``y``, with ``n_boot`` bootstrap draws.

    ``p`` must be out of time for the calibrator (not the rows it was fitted on), or the slope is 1 by
    construction. The bootstrap resamples at most ``max_boot_rows`` customers (a seeded sample of a larger
    window: the draws then overstate the spread a little, never understate it). Raises ``ValueError`` when
    the window lacks one of the two classes.
    """
    p = np.asarray(p, dtype=float)
    y = np.asarray(y, dtype=float)
    if p.shape != y.shape or p.ndim != 1:
        raise ValueError(f"p and y must be 1-d arrays of the same length, got {p.shape} and {y.shape}")
    if y.size == 0 or y.min() == y.max():
        raise ValueError(f"recalibration window needs churners and non-churners, got {int(y.sum())} of {y.size}")
    z = logit(p)
    slope, intercept = _logistic_fit(z, y)
    n, churners = int(y.size), int(y.sum())
    rng = np.random.default_rng(seed)
    if y.size > max_boot_rows:
        keep = rng.choice(y.size, max_boot_rows, replace=False)
        z, y = z[keep], y[keep]
    draws = []
    for _ in range(n_boot):
        w = np.bincount(rng.integers(0, y.size, y.size), minlength=y.size).astype(float)
        draws.append(_logistic_fit(z, y, w))
    log.info("recalibration on %s: slope %.3f intercept %.3f (%d rows, %d churners)", source or "window", slope,
             intercept, n, churners)
    return Recalibration(slope, intercept, n, churners, source, tuple(draws))


META_KEY = "estimate_recalibration"  # the key in a model's metadata (model_meta.json -> meta)


def test_window_recalibration(p: np.ndarray, y: np.ndarray, cutoffs: list[str], seed: int = 0) -> dict[str, Any] | None:
    """The model's own out-of-time test window as plain data for its metadata, or ``None`` (one class only).

    Named "training test window <dates>" (not "cutoff <date>"): the report's cutoff is the scoring run's.
    """
    try:
        return fit_recalibration(p, y, source="training test window " + ", ".join(cutoffs), seed=seed).to_dict()
    except ValueError as exc:
        log.warning("no recalibration for the performance estimate: %s", exc)
        return None


def model_recalibration(meta: dict[str, Any]) -> Recalibration | None:
    """The recalibration a model carries in its metadata (``None`` for models trained before it existed).

    Raises ``ValueError`` naming the key when the stored data is malformed.
    """
    d = meta.get(META_KEY)
    return None if d is None else Recalibration.from_dict(d)
