"""When, not only whether: per-customer time-to-churn columns from the survival model.

Pure functions over the survival model's predictions: the churn probability within each configured
horizon, the median time to churn, the expected (discounted) lifetime within the CLV horizon, an
urgency a playbook rule can route on, and one sentence an analyst can read.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from churn.timebase import DAYS_PER_MONTH
from churn.vocab import URGENCIES as URGENCY
from model.survival import SurvivalModel


def urgency(median_days: np.ndarray, thresholds: tuple[int, int]) -> np.ndarray:
    """``immediate`` when the median time to churn is within the first threshold, ``soon`` within the second."""
    first, second = thresholds
    return np.select([median_days <= first, median_days <= second], [URGENCY[0], URGENCY[1]], URGENCY[2])


def timing_sentence(median_days: float, p_by_horizon: dict[int, float], lifetime_days: float) -> str:
    """E.g. "Even odds of leaving within about 40 days; chance of leaving: 38% within 30 days, 71% within 90 days"."""
    chances = ", ".join(f"{p:.0%} within {h} days" for h, p in sorted(p_by_horizon.items()))
    if median_days > lifetime_days:
        return f"Likely to stay beyond {_horizon(lifetime_days)}; chance of leaving: {chances}"
    return f"Even odds of leaving within about {_days(median_days)}; chance of leaving: {chances}"


def _horizon(days: float) -> str:
    months = int(round(days / DAYS_PER_MONTH))
    return f"{months // 12} years" if months % 12 == 0 and months >= 24 else f"{months} months"


def _days(d: float) -> str:
    d = max(1, int(round(d)))
    return "1 day" if d == 1 else f"{d} days"


def survival_columns(model: SurvivalModel, mu: np.ndarray, horizons: list[int], lifetime_days: float,
                     annual_discount: float, urgency_days: tuple[int, int]) -> pd.DataFrame:
    """The scores' time-to-churn columns, one row per customer in the order of ``mu``."""
    out = model.summarize(mu, horizons, lifetime_days, annual_discount)
    out["urgency"] = urgency(out["median_days_to_churn"].to_numpy(), urgency_days)
    return out


def alert_timing(cols: pd.DataFrame, horizons: list[int], lifetime_days: float) -> pd.Series:
    """One sentence per row of ``cols`` (survival columns of the alerted customers)."""
    return pd.Series([timing_sentence(r["median_days_to_churn"], {h: r[f"churn_within_{h}d"] for h in horizons},
                                      lifetime_days) for _, r in cols.iterrows()], index=cols.index, dtype=object)


def survival_lifetime_value(monthly_revenue: np.ndarray, expected_days: np.ndarray, margin: float) -> np.ndarray:
    """Lifetime value from the survival model: margin x monthly revenue x expected (discounted) months as a customer."""
    return margin * np.nan_to_num(monthly_revenue, nan=0.0) * expected_days / DAYS_PER_MONTH
