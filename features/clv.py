"""Customer lifetime value, point-in-time.

Non-contractual CLV (BG/NBD for purchase counts + Gamma-Gamma for spend) and contractual CLV
(revenue x retention, discounted). Every function takes an explicit cutoff or a summary built
from data before the cutoff, so the features never see the future.

`lifetimes` is used only inside `BGNBDModel` / `GammaGammaModel`, so the estimator can be swapped.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import warnings
from collections.abc import Iterator

import numpy as np
import pandas as pd

from churn.timebase import DAYS_PER_MONTH, DAYS_PER_YEAR, NS_PER_DAY

logger = logging.getLogger(__name__)

__all__ = [
    "CLVFitError",
    "BGNBDModel",
    "GammaGammaModel",
    "rfm_summary",
    "noncontractual_clv",
    "contractual_clv",
    "segment_monthly_retention",
    "MIN_REPEAT_BUYERS",
]

MIN_REPEAT_BUYERS: int = 20
"""Below this many repeat buyers the BG/NBD + Gamma-Gamma fit is not trusted."""

# A Monday: 7-day periods then coincide with lifetimes' freq="W" (W-SUN) weeks, 1-day periods with calendar days.
_PERIOD_ORIGIN = pd.Timestamp("1970-01-05")
_SUMMARY_COLUMNS = ["frequency", "recency", "T", "monetary_value", "n_transactions", "total_amount"]
_CLV_COLUMNS = ["clv", "expected_purchases", "p_alive", "expected_spend"]


class CLVFitError(RuntimeError):
    """A CLV model could not be fitted (no convergence, degenerate data or unusable parameters)."""


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------


def _require_columns(df: pd.DataFrame, columns: list[str], table: str) -> None:
    """Fail at the edge with a message naming the table and the missing columns."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{table}: missing column(s) {missing}; got {list(df.columns)}")


def _naive(ts: pd.Timestamp) -> pd.Timestamp:
    """Drop a time zone (as UTC) so cutoffs compare with naive timestamps."""
    ts = pd.Timestamp(ts)
    return ts.tz_convert(None) if ts.tzinfo is not None else ts


def _naive_series(s: pd.Series) -> pd.Series:
    s = pd.to_datetime(s)
    return s.dt.tz_convert(None) if getattr(s.dt, "tz", None) is not None else s


def _freq_ns(freq_days: float) -> int:
    if not freq_days > 0:
        raise ValueError(f"freq_days must be > 0, got {freq_days}")
    return int(round(freq_days * NS_PER_DAY))


def _period_of(values: pd.Series | pd.Timestamp, freq_ns: int) -> np.ndarray | int:
    """Integer period number on a fixed grid (exact integer arithmetic, any datetime resolution)."""
    if isinstance(values, pd.Timestamp):
        return pd.Timedelta(values - _PERIOD_ORIGIN).as_unit("ns").value // freq_ns
    delta = (values - _PERIOD_ORIGIN).to_numpy().astype("timedelta64[ns]").astype(np.int64)
    return np.floor_divide(delta, freq_ns)


@contextlib.contextmanager
def _quiet_fit(what: str) -> Iterator[None]:
    """Route lifetimes' prints and numeric warnings during a fit to the debug log."""
    buffer = io.StringIO()
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(buffer):
        warnings.simplefilter("always")
        yield
    for w in caught:
        logger.debug("%s: %s", what, w.message)
    if buffer.getvalue().strip():
        logger.debug("%s optimiser output:\n%s", what, buffer.getvalue())


# --------------------------------------------------------------------------------------------------
# RFM summary
# --------------------------------------------------------------------------------------------------


def rfm_summary(
    transactions: pd.DataFrame,
    as_of: pd.Timestamp,
    customers: pd.Index | None = None,
    freq_days: float = 7.0,
    first_purchase: pd.Series | None = None,
) -> pd.DataFrame:
    """Per-customer frequency / recency / T / monetary value from transactions strictly before `as_of`.

    Follows `lifetimes.utils.summary_data_from_transaction_data` (without its leak of rows inside the
    cutoff's period): timestamps are floored to periods of `freq_days` on a fixed grid (weeks start on
    Monday, days at midnight), purchases in the same period are summed into one, the first period is
    the "birth". frequency = periods with purchases - 1; recency = last - first period; T = cutoff's
    period - first period; monetary_value = mean of the repeat periods' sums (0 if none). Also
    n_transactions (raw rows) and total_amount (all rows, first purchase included).

    Index: customer_id; `customers` (if given) in that order, else every customer with a purchase.
    Customers without purchases get zeros, and T from `first_purchase` (e.g. signup) when given.
    """
    _require_columns(transactions, ["customer_id", "timestamp", "amount"], "transactions")
    as_of = _naive(as_of)
    freq_ns = _freq_ns(freq_days)
    asof_period = _period_of(as_of, freq_ns)

    ts = _naive_series(transactions["timestamp"])
    used = (ts < as_of).to_numpy()
    amount = pd.to_numeric(transactions["amount"]).to_numpy(dtype=float)[used]
    if (amount < 0).any():
        raise ValueError("transactions: column 'amount' has negative values")
    rows = pd.DataFrame(
        {
            "customer_id": transactions["customer_id"].to_numpy()[used],
            "period": _period_of(ts[used], freq_ns),
            "amount": amount,
        }
    )
    per = (
        rows.groupby(["customer_id", "period"], sort=True)
        .agg(amount=("amount", "sum"), n=("amount", "size"))
        .reset_index()
    )
    first_period = per.groupby("customer_id", sort=False)["period"].transform("min")
    per["repeat_amount"] = per["amount"].where(per["period"] != first_period)
    g = per.groupby("customer_id", sort=True)
    out = pd.DataFrame(
        {
            "frequency": g.size() - 1,
            "recency": g["period"].max() - g["period"].min(),
            "T": asof_period - g["period"].min(),
            "monetary_value": g["repeat_amount"].mean().fillna(0.0),
            "n_transactions": g["n"].sum(),
            "total_amount": g["amount"].sum(),
        }
    ).astype(float)
    out["n_transactions"] = out["n_transactions"].astype("int64")

    if customers is not None:
        customers = pd.Index(customers, name="customer_id")
        missing = customers.difference(out.index)
        out = out.reindex(customers)
        out.loc[missing, _SUMMARY_COLUMNS] = 0
        out["n_transactions"] = out["n_transactions"].astype("int64")
        if first_purchase is not None and len(missing):
            born = _naive_series(first_purchase.reindex(missing))
            known = born.notna() & (born < as_of)
            t_birth = np.zeros(len(missing))
            if known.any():
                t_birth[known.to_numpy()] = asof_period - _period_of(born[known], freq_ns)
            out.loc[missing, "T"] = np.clip(t_birth, 0, None)
    out.index.name = "customer_id"
    return out[_SUMMARY_COLUMNS]


# --------------------------------------------------------------------------------------------------
# Models (thin wrappers around lifetimes)
# --------------------------------------------------------------------------------------------------


class BGNBDModel:
    """BG/NBD purchase-count model (Fader, Hardie and Lee 2005) on an `rfm_summary` table.

    Learned: `params_` (dict r, alpha, a, b; alpha in the summary's time unit).
    """

    def __init__(self, penalizer: float = 0.0) -> None:
        self.penalizer = penalizer

    def fit(self, summary: pd.DataFrame) -> BGNBDModel:
        """Maximum-likelihood fit; raises CLVFitError when the optimiser fails."""
        from lifetimes import BetaGeoFitter
        from lifetimes.utils import ConvergenceError

        _require_columns(summary, ["frequency", "recency", "T"], "summary")
        if summary.empty:
            raise CLVFitError("BG/NBD: empty summary")
        fitter = BetaGeoFitter(penalizer_coef=self.penalizer)
        try:
            with _quiet_fit("BG/NBD"):
                fitter.fit(
                    summary["frequency"].to_numpy(),
                    summary["recency"].to_numpy(dtype=float),
                    summary["T"].to_numpy(dtype=float),
                )
        except (ConvergenceError, ValueError, ArithmeticError, np.linalg.LinAlgError) as exc:
            raise CLVFitError(f"BG/NBD fit failed: {exc}".strip()) from exc
        params = {k: float(v) for k, v in fitter.params_.items()}
        if not all(math.isfinite(v) and v > 0 for v in params.values()):
            raise CLVFitError(f"BG/NBD fit gave unusable parameters {params}")
        self._fitter = fitter
        self.params_ = params
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "params_"):
            raise RuntimeError("BGNBDModel is not fitted; call fit() first")

    def expected_purchases(self, summary: pd.DataFrame, periods: float) -> pd.Series:
        """Expected repeat purchases per customer in the next `periods` time units."""
        self._check_fitted()
        values = self._fitter.conditional_expected_number_of_purchases_up_to_time(
            periods,
            summary["frequency"].to_numpy(dtype=float),
            summary["recency"].to_numpy(dtype=float),
            summary["T"].to_numpy(dtype=float),
        )
        return pd.Series(np.asarray(values, dtype=float), index=summary.index, name="expected_purchases")

    def p_alive(self, summary: pd.DataFrame) -> pd.Series:
        """Probability each customer is still active at the end of the observation window."""
        self._check_fitted()
        values = self._fitter.conditional_probability_alive(
            summary["frequency"].to_numpy(dtype=float),
            summary["recency"].to_numpy(dtype=float),
            summary["T"].to_numpy(dtype=float),
        )
        return pd.Series(np.asarray(values, dtype=float), index=summary.index, name="p_alive")


class GammaGammaModel:
    """Gamma-Gamma spend model (Fader, Hardie and Lee 2005b) on repeat buyers.

    Learned: `params_` (dict p, q, v).
    """

    def __init__(self, penalizer: float = 0.0) -> None:
        self.penalizer = penalizer

    def fit(self, summary: pd.DataFrame) -> GammaGammaModel:
        """Fit on customers with frequency > 0 and monetary_value > 0; raises CLVFitError on failure."""
        from lifetimes import GammaGammaFitter
        from lifetimes.utils import ConvergenceError

        _require_columns(summary, ["frequency", "monetary_value"], "summary")
        buyers = summary[(summary["frequency"] > 0) & (summary["monetary_value"] > 0)]
        if buyers.empty:
            raise CLVFitError("Gamma-Gamma: no repeat buyers with positive spend")
        fitter = GammaGammaFitter(penalizer_coef=self.penalizer)
        try:
            with _quiet_fit("Gamma-Gamma"):
                fitter.fit(
                    buyers["frequency"].to_numpy(dtype=float), buyers["monetary_value"].to_numpy(dtype=float)
                )
        except (ConvergenceError, ValueError, ArithmeticError, np.linalg.LinAlgError) as exc:
            raise CLVFitError(f"Gamma-Gamma fit failed: {exc}".strip()) from exc
        params = {k: float(v) for k, v in fitter.params_.items()}
        # q <= 1 means an infinite population mean spend: unusable.
        if not (all(math.isfinite(v) and v > 0 for v in params.values()) and params["q"] > 1):
            raise CLVFitError(f"Gamma-Gamma fit gave unusable parameters {params}")
        self.params_ = params
        return self

    @property
    def population_mean_(self) -> float:
        """Expected spend per transaction of a customer with no repeat history."""
        if not hasattr(self, "params_"):
            raise RuntimeError("GammaGammaModel is not fitted; call fit() first")
        p, q, v = self.params_["p"], self.params_["q"], self.params_["v"]
        return v * p / (q - 1)

    def expected_spend(self, summary: pd.DataFrame) -> pd.Series:
        """Conditional expected spend per transaction: own mean shrunk to the population mean.

        Customers with frequency 0 get the population mean.
        """
        pop = self.population_mean_
        p, q = self.params_["p"], self.params_["q"]
        x = summary["frequency"].to_numpy(dtype=float)
        m = summary["monetary_value"].to_numpy(dtype=float)
        w = p * x / (p * x + q - 1)
        return pd.Series((1 - w) * pop + w * m, index=summary.index, name="expected_spend")


# --------------------------------------------------------------------------------------------------
# Non-contractual CLV
# --------------------------------------------------------------------------------------------------


def _month_ends(horizon_days: float) -> np.ndarray:
    """Ends of the cash-flow months in days; the last one is cut at the horizon."""
    n = max(0, math.ceil(horizon_days / DAYS_PER_MONTH - 1e-9))
    return np.minimum(np.arange(1, n + 1) * DAYS_PER_MONTH, horizon_days)


def _model_clv(
    summary: pd.DataFrame, month_ends: np.ndarray, discount: np.ndarray, freq_days: float, penalizer: float
) -> pd.DataFrame:
    """BG/NBD x Gamma-Gamma CLV with monthly discounted cash flows (before margin)."""
    n_repeat = int(((summary["frequency"] > 0) & (summary["monetary_value"] > 0)).sum())
    if n_repeat < MIN_REPEAT_BUYERS:
        raise CLVFitError(f"only {n_repeat} repeat buyers (< {MIN_REPEAT_BUYERS})")
    bg = BGNBDModel(penalizer).fit(summary)
    gg = GammaGammaModel(penalizer).fit(summary)
    with np.errstate(all="ignore"):
        cumulative = np.column_stack(
            [np.zeros(len(summary))]
            + [bg.expected_purchases(summary, t / freq_days).to_numpy() for t in month_ends]
        )
        p_alive = bg.p_alive(summary).to_numpy()
        spend = gg.expected_spend(summary).to_numpy()
    if not (np.isfinite(cumulative).all() and np.isfinite(p_alive).all() and np.isfinite(spend).all()):
        raise CLVFitError("non-finite predictions from the fitted models")
    per_month = np.clip(np.diff(cumulative, axis=1), 0, None)
    logger.info("CLV models fitted: BG/NBD %s, Gamma-Gamma %s", bg.params_, gg.params_)
    return pd.DataFrame(
        {
            "clv": spend * (per_month @ discount),
            "expected_purchases": cumulative[:, -1],
            "p_alive": np.clip(p_alive, 0, 1),
            "expected_spend": spend,
        },
        index=summary.index,
    )


def _empirical_clv(
    summary: pd.DataFrame, month_ends: np.ndarray, discount: np.ndarray, freq_days: float
) -> pd.DataFrame:
    """Model-free CLV: shrunk historical purchase rate x recency decay x mean spend (before margin).

    rate = (repeat purchases + one month of pseudo-exposure at the pooled rate) / (T + one month);
    p_alive-like decay = exp(-rate x periods since the last purchase).
    """
    f = summary["frequency"].to_numpy(dtype=float)
    recency = summary["recency"].to_numpy(dtype=float)
    T = summary["T"].to_numpy(dtype=float)
    m = summary["monetary_value"].to_numpy(dtype=float)

    pooled_rate = f.sum() / T.sum() if T.sum() > 0 else 0.0
    pseudo = DAYS_PER_MONTH / freq_days
    rate = (f + pooled_rate * pseudo) / (T + pseudo)
    alive = np.clip(np.exp(-rate * np.clip(T - recency, 0, None)), 0, 1)

    repeaters = (f > 0) & (m > 0)
    if repeaters.any():
        pop_spend = float(m[repeaters].mean())
    elif {"total_amount", "n_transactions"} <= set(summary.columns) and summary["n_transactions"].sum() > 0:
        pop_spend = float(summary["total_amount"].sum() / summary["n_transactions"].sum())
    else:
        pop_spend = 0.0
    spend = np.where(repeaters, m, pop_spend)

    per_month = np.diff(np.concatenate([[0.0], month_ends])) / freq_days  # periods per cash-flow month
    horizon_periods = per_month.sum()
    return pd.DataFrame(
        {
            "clv": spend * rate * alive * float(per_month @ discount),
            "expected_purchases": rate * alive * horizon_periods,
            "p_alive": alive,
            "expected_spend": spend,
        },
        index=summary.index,
    )


def noncontractual_clv(
    summary: pd.DataFrame,
    horizon_days: float = 365,
    discount_rate_annual: float = 0.10,
    margin: float = 1.0,
    freq_days: float = 7.0,
    penalizer: float = 0.001,
) -> pd.DataFrame:
    """Discounted expected margin over the next `horizon_days` per customer (non-contractual setting).

    Fits BG/NBD and Gamma-Gamma on `summary` (an `rfm_summary` built before the cutoff, same
    `freq_days`), splits the horizon into months, takes expected purchases per month as differences
    of the BG/NBD cumulative expectation and discounts each month's cash flow at its end.
    With fewer than MIN_REPEAT_BUYERS repeat buyers or a failed fit it logs a warning and uses
    `_empirical_clv` instead; it never raises for data reasons. `attrs["clv_method"]` says which.

    Returns index customer_id; columns clv, expected_purchases, p_alive, expected_spend.
    """
    _require_columns(summary, ["frequency", "recency", "T", "monetary_value"], "summary")
    _freq_ns(freq_days)
    if summary.empty:
        out = pd.DataFrame({c: pd.Series(dtype=float) for c in _CLV_COLUMNS}, index=summary.index)
        out.attrs["clv_method"] = "empty"
        return out

    month_ends = _month_ends(horizon_days)
    discount = (1 + discount_rate_annual) ** (-month_ends / DAYS_PER_YEAR)
    try:
        out = _model_clv(summary, month_ends, discount, freq_days, penalizer)
        method = "bgnbd_gamma_gamma"
    except CLVFitError as exc:
        logger.warning("CLV: BG/NBD + Gamma-Gamma not usable (%s); falling back to empirical estimate", exc)
        out = _empirical_clv(summary, month_ends, discount, freq_days)
        method = "empirical"
    out["clv"] = margin * out["clv"]
    out.index.name = "customer_id"
    out.attrs["clv_method"] = method
    return out[_CLV_COLUMNS]


# --------------------------------------------------------------------------------------------------
# Contractual CLV
# --------------------------------------------------------------------------------------------------


def contractual_clv(
    monthly_revenue: pd.Series,
    monthly_retention: pd.Series | float,
    horizon_months: int = 24,
    discount_rate_annual: float = 0.10,
    margin: float = 1.0,
) -> pd.Series:
    """sum_{t=1..H} margin * revenue * r^t / (1 + d_m)^t, with d_m = (1 + d)^(1/12) - 1.

    Closed-form geometric sum; `monthly_retention` is a float or a Series aligned on the revenue index.
    """
    if horizon_months < 0:
        raise ValueError(f"horizon_months must be >= 0, got {horizon_months}")
    if isinstance(monthly_retention, pd.Series):
        r = monthly_retention.reindex(monthly_revenue.index).to_numpy(dtype=float)
    else:
        r = np.full(len(monthly_revenue), float(monthly_retention))
    if np.any((r < 0) | (r > 1)):
        raise ValueError("monthly_retention must lie in [0, 1]")
    d_m = (1 + discount_rate_annual) ** (1 / 12) - 1
    x = r / (1 + d_m)
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = np.where(np.abs(1 - x) < 1e-12, float(horizon_months), x * (1 - x**horizon_months) / (1 - x))
    revenue = monthly_revenue.to_numpy(dtype=float)
    return pd.Series(margin * revenue * factor, index=monthly_revenue.index, name="clv")


def segment_monthly_retention(
    customers: pd.DataFrame,
    as_of: pd.Timestamp,
    segment_cols: list[str],
    lookback_days: int = 365,
    min_exposure_months: float = 50.0,
) -> pd.Series:
    """Point-in-time monthly retention per customer from their segment's recent churn rate.

    Window [as_of - lookback_days, as_of). Churn dates at or after `as_of` are unknown at `as_of`
    and are blanked before anything else (the customer counts as active up to `as_of`).
    rate = churns / customer-months of exposure in the window, shrunk toward the overall rate by
    `min_exposure_months` of pseudo-exposure; retention = 1 - rate, clipped to [0, 1].
    Returns a Series indexed by customer_id for every input row (callers filter to active customers).
    """
    _require_columns(customers, ["customer_id", "signup_date", "churn_date", *segment_cols], "customers")
    as_of = _naive(as_of)
    start = as_of - pd.Timedelta(days=lookback_days)

    signup = _naive_series(customers["signup_date"])
    churn = _naive_series(customers["churn_date"])
    churn = churn.where(churn < as_of)  # the future is not known at as_of

    begin = signup.mask(signup < start, start)
    end = churn.fillna(as_of)
    exposure = ((end - begin) / pd.Timedelta(days=DAYS_PER_MONTH)).clip(lower=0).fillna(0.0)
    event = churn.notna() & (churn >= start) & signup.notna() & (churn >= signup)

    frame = customers[segment_cols].copy()
    frame["_events"] = event.astype(float).to_numpy()
    frame["_exposure"] = exposure.to_numpy()
    total_events, total_exposure = frame["_events"].sum(), frame["_exposure"].sum()
    if total_exposure > 0:
        overall = total_events / total_exposure
    else:
        logger.warning("segment_monthly_retention: no exposure in the window before %s; using rate 0", as_of)
        overall = 0.0
    if segment_cols:
        grouped = frame.groupby(segment_cols, dropna=False, sort=False)
        seg_events = grouped["_events"].transform("sum").to_numpy()
        seg_exposure = grouped["_exposure"].transform("sum").to_numpy()
    else:
        seg_events = np.full(len(frame), total_events)
        seg_exposure = np.full(len(frame), total_exposure)

    k = float(min_exposure_months)
    with np.errstate(divide="ignore", invalid="ignore"):
        rate = (seg_events + k * overall) / (seg_exposure + k)
    rate = np.where(seg_exposure + k > 0, rate, overall)
    retention = np.clip(1 - rate, 0, 1)
    return pd.Series(
        retention, index=pd.Index(customers["customer_id"], name="customer_id"), name="monthly_retention"
    )
