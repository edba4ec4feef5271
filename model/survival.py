"""Time to churn: an XGBoost accelerated-failure-time model and the curves it implies.

AFT models the log of the time to churn as ``ln T = mu(x) + sigma * Z``, with ``mu`` the booster's
margin and ``Z`` normal, logistic or extreme-value (XGBoost's ``survival:aft``). Every per-customer
quantity follows from the one fitted distribution, so they never contradict each other:
``P(churn within h days) = F_Z((ln h - mu) / sigma)``, the median time, and the expected
(optionally discounted) lifetime within a horizon, ``integral_0^H S(t) d(t) dt``.

Stored as XGBoost JSON plus a JSON side file; nothing executable is loaded.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import xgboost as xgb
from scipy.special import ndtr, ndtri

from churn.timebase import DAYS_PER_YEAR

DISTRIBUTIONS = ("normal", "logistic", "extreme")
_GRID_POINTS = 48


def _cdf_z(z: np.ndarray, distribution: str) -> np.ndarray:
    if distribution == "normal":
        return ndtr(z)
    if distribution == "logistic":
        return 1.0 / (1.0 + np.exp(-z))
    if distribution == "extreme":  # XGBoost's extreme: pdf e^z exp(-e^z), a Gumbel for the minimum
        return -np.expm1(-np.exp(np.minimum(z, 50.0)))
    raise ValueError(f"unknown AFT distribution {distribution!r} (known: {DISTRIBUTIONS})")


def _quantile_z(q: float, distribution: str) -> float:
    if distribution == "normal":
        return float(ndtri(q))
    if distribution == "logistic":
        return math.log(q / (1 - q))
    if distribution == "extreme":
        return math.log(-math.log(1 - q))
    raise ValueError(f"unknown AFT distribution {distribution!r} (known: {DISTRIBUTIONS})")


@dataclass
class SurvivalModel:
    """A ``survival:aft`` booster with its noise distribution and scale."""

    booster: xgb.Booster
    distribution: str = "normal"
    scale: float = 1.0
    best_iteration: int | None = None

    def mu(self, dmatrix: xgb.DMatrix) -> np.ndarray:
        """Predicted mean of log time to churn (days), one per row."""
        rng = (0, self.best_iteration + 1) if self.best_iteration is not None else (0, 0)
        return self.booster.predict(dmatrix, output_margin=True, iteration_range=rng).astype(float)

    def churn_within(self, mu: np.ndarray, days: float | np.ndarray) -> np.ndarray:
        """``P(T <= days)``; ``days`` a scalar or an array broadcast against ``mu``."""
        t = np.maximum(np.asarray(days, dtype=float), 1e-9)
        return _cdf_z((np.log(t) - mu) / self.scale, self.distribution)

    def median_days(self, mu: np.ndarray) -> np.ndarray:
        return np.exp(mu + self.scale * _quantile_z(0.5, self.distribution))

    def expected_days(self, mu: np.ndarray, horizon_days: float, annual_discount: float = 0.0) -> np.ndarray:
        """Expected days as a customer within ``horizon_days`` (restricted mean survival time), optionally discounted."""
        grid = np.linspace(0.0, horizon_days, _GRID_POINTS + 1)
        surv = 1.0 - self.churn_within(mu[:, None], grid[None, :])
        weight = (1.0 + annual_discount) ** (-grid / DAYS_PER_YEAR)
        return np.trapezoid(surv * weight[None, :], grid, axis=1)

    def curve(self, mu: np.ndarray, days: np.ndarray) -> np.ndarray:
        """Survival probability ``S(t)`` per row (rows) at each of ``days`` (columns)."""
        return 1.0 - self.churn_within(mu[:, None], np.asarray(days, dtype=float)[None, :])

    def summarize(self, mu: np.ndarray, horizons: list[int], lifetime_days: float,
                  annual_discount: float = 0.0) -> pd.DataFrame:
        """Per-customer columns: median days to churn, churn probability per horizon, expected lifetime."""
        cols: dict[str, np.ndarray] = {"median_days_to_churn": self.median_days(mu)}
        for h in horizons:
            cols[f"churn_within_{h}d"] = self.churn_within(mu, h)
        cols["expected_lifetime_days"] = self.expected_days(mu, lifetime_days, annual_discount)
        return pd.DataFrame(cols)

    # ---------------------------------------------------------------- persistence (JSON only)
    def save(self, directory: str | Path) -> Path:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self.booster.save_model(d / "survival_booster.json")
        meta = {"distribution": self.distribution, "scale": self.scale, "best_iteration": self.best_iteration}
        (d / "survival_meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
        return d

    @classmethod
    def load(cls, directory: str | Path) -> SurvivalModel | None:
        """The survival model stored in ``directory``, or None when the model has none."""
        d = Path(directory)
        if not (d / "survival_meta.json").exists():
            return None
        booster = xgb.Booster()
        booster.load_model(d / "survival_booster.json")
        meta = json.loads((d / "survival_meta.json").read_text())
        if meta.get("distribution") not in DISTRIBUTIONS:
            raise ValueError(f"survival_meta.json: unknown distribution {meta.get('distribution')!r}")
        return cls(booster, meta["distribution"], float(meta["scale"]), meta.get("best_iteration"))
