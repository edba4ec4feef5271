"""Value features: RFM with 1-5 scores, spend levels and trends, customer lifetime value, value tier.

Future value matters more than past value, so the value tier ranks customers by expected lifetime
value (contractual: revenue x segment retention; non-contractual: BG/NBD + Gamma-Gamma), not by spend.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from churn.config import ClvConfig, FeatureConfig
from churn.errors import DataError
from churn.timebase import DAY, DAYS_PER_MONTH, days_since, last_time_before, months_observed, window_slice
from features.catalogue import FeatureBlock, Features, FeatureSpec, count_by, rate_change

log = logging.getLogger(__name__)


def quintile_score(values: np.ndarray, population: np.ndarray, higher_is_better: bool = True) -> np.ndarray:
    """1-5 score by quintile among the population (NaN counts as worst); outside the population: NaN."""
    out = np.full(len(values), np.nan)
    v = pd.Series(values[population])
    worst = -np.inf if higher_is_better else np.inf
    v = v.fillna(worst)
    pct = v.rank(method="average", pct=True, ascending=higher_is_better)
    out[population] = np.clip(np.ceil(pct.to_numpy() * 5), 1, 5)
    return out


def value_tiers(clv: np.ndarray, population: np.ndarray, tiers: list[tuple[str, float]]) -> pd.Categorical:
    """Customer pyramid: rank by CLV (ties broken by row order) and cut at cumulative shares."""
    names = [t[0] for t in tiers]
    out = np.full(len(clv), names[-1], dtype=object)
    idx = np.flatnonzero(population)
    if len(idx):
        order = idx[np.lexsort((idx, -np.nan_to_num(clv[idx], nan=-np.inf)))]
        share = (np.arange(len(order)) + 1) / len(order)
        assigned = np.full(len(order), names[-1], dtype=object)
        for name, top in reversed(tiers):
            assigned[share <= top + 1e-12] = name
        out[order] = assigned
    return pd.Categorical(out, categories=names)


def value_features(transactions: pd.DataFrame, customers: pd.DataFrame, population: np.ndarray,
                   as_of: pd.Timestamp, cfg: FeatureConfig) -> FeatureBlock:
    """Per-customer value features as of ``as_of`` (index: row code); scores and tiers rank the population.

    Each step below computes one group of features from transactions strictly before ``as_of``.
    """
    n = len(customers)
    ts = transactions["timestamp"]
    codes = transactions["_code"].to_numpy()
    amount = transactions["amount"].to_numpy(dtype=np.float64)
    hist = window_slice(ts, pd.Timestamp.min, as_of)
    recency = days_since(last_time_before(codes[hist], ts.to_numpy()[hist], n), as_of)
    windows = {w: window_slice(ts, as_of - w * DAY, as_of) for w in (30, 90, 365)}
    sums = {w: count_by(codes[sl], n, amount[sl]) for w, sl in windows.items()}
    counts = {w: count_by(codes[sl], n) for w, sl in windows.items()}
    pairs: Features = [(FeatureSpec("days_since_last_purchase", "value", "purchases",
                                    "Days since last purchase or payment", "days",
                                    reason="No purchase or payment for {value} days (typical customer: {typical})",
                                    risk_direction=1), recency)]
    pairs += _spend_levels(sums, counts)
    pairs += _spend_trends(codes, amount, ts, as_of, n, cfg.purchase_drop_threshold)
    data_start = ts.iloc[0].value if hist.stop > hist.start else as_of.value
    pairs.append((FeatureSpec("purchases_per_month", "value", "purchases",
                              "Purchases and payments per month over the observed tenure", "count",
                              reason="{value} purchases or payments a month over the customer's tenure (typical "
                                     "customer: {typical})", risk_direction=-1),
                  count_by(codes[hist], n) / months_observed(customers["signup_date"], data_start, as_of)))
    rev_months = cfg.clv.revenue_months
    sl = window_slice(ts, as_of - rev_months * 30 * DAY, as_of)
    monthly = monthly_revenue_rate(count_by(codes[sl], n, amount[sl]) / rev_months, customers["signup_date"], as_of,
                                   rev_months)
    summary = rfm_history(transactions, customers, as_of) if cfg.clv.method != "contractual" else None
    pop = population_value(recency, counts[365], sums[365], monthly, customers, population, as_of, cfg, summary)
    pairs += _population_pairs(pop, monthly, rev_months)
    return FeatureBlock.from_pairs(pairs)


def _spend_levels(sums: dict[int, np.ndarray], counts: dict[int, np.ndarray]) -> Features:
    """Purchase counts, spend and the average purchase over fixed windows."""
    with np.errstate(divide="ignore", invalid="ignore"):
        aov = np.where(counts[365] > 0, sums[365] / counts[365], np.nan)
    return [(FeatureSpec("purchases_90d", "value", "purchases", "Purchases and payments in the last 90 days", "count",
                         90, reason="{value} purchases or payments in the last 90 days (typical customer: {typical})",
                         risk_direction=-1), counts[90]),
            (FeatureSpec("spend_30d", "value", "spend", "Spend in the last 30 days", "currency", 30,
                         reason="Spent {value} in the last 30 days (typical customer: {typical})", risk_direction=-1),
             sums[30]),
            (FeatureSpec("spend_365d", "value", "spend", "Spend in the last 365 days", "currency", 365,
                         reason="Spent {value} in the last year (typical customer: {typical})", risk_direction=-1),
             sums[365]),
            (FeatureSpec("avg_order_value_365d", "value", "spend", "Average purchase or payment, last 365 days",
                         "currency", 365, reason="Average payment {value} (typical customer: {typical})",
                         risk_direction=0), aov)]


def _spend_trends(codes: np.ndarray, amount: np.ndarray, ts: pd.Series, as_of: pd.Timestamp, n: int,
                  drop: float) -> Features:
    """Spend and purchase frequency, last 30 days against the previous 60, and the early-warning flag
    practitioners use: purchase frequency down by ``drop`` (e.g. 20%) or more."""
    recent = window_slice(ts, as_of - 30 * DAY, as_of)
    base = window_slice(ts, as_of - 90 * DAY, as_of - 30 * DAY)
    s_r, s_b = count_by(codes[recent], n, amount[recent]), count_by(codes[base], n, amount[base])
    purchase_trend = rate_change(count_by(codes[recent], n), 30, count_by(codes[base], n), 60)
    return [(FeatureSpec("spend_trend_30_60", "value", "spend", "Change in daily spend, last 30 days vs previous 60",
                         "rate_change", 30, reason="Spend {change} {abs_pct}% in the last 30 days compared with the "
                                                   "previous 60", risk_direction=-1), rate_change(s_r, 30, s_b, 60)),
            (FeatureSpec("purchase_trend_30_60", "value", "purchases",
                         "Change in purchase frequency, last 30 days vs previous 60", "rate_change", 30,
                         reason="Purchase frequency {change} {abs_pct}% in the last 30 days compared with the "
                                "previous 60", risk_direction=-1), purchase_trend),
            (FeatureSpec("purchase_drop_flag", "value", "purchases",
                         f"Purchase frequency in the last 30 days down {drop:.0%} or more on the previous 60", "flag", 30,
                         reason=f"Purchases down {drop:.0%} or more against the customer's own past (last 30 days vs "
                                "previous 60)", risk_direction=1),
             (np.nan_to_num(purchase_trend, nan=0.0) <= -drop).astype(np.float64))]


def _population_pairs(pop: dict[str, np.ndarray | pd.Categorical], monthly: np.ndarray, months: int) -> Features:
    """The population-relative features (:func:`population_value`) and monthly revenue, in catalogue order."""
    return [(FeatureSpec("rfm_recency_score", "value", "rfm", "RFM recency score (5 = most recent)", "score",
                         reason="RFM recency score {value} of 5", risk_direction=-1), pop["rfm_recency_score"]),
            (FeatureSpec("rfm_frequency_score", "value", "rfm", "RFM frequency score (5 = most frequent)", "score", 365,
                         reason="RFM frequency score {value} of 5", risk_direction=-1), pop["rfm_frequency_score"]),
            (FeatureSpec("rfm_monetary_score", "value", "rfm", "RFM monetary score (5 = highest spend)", "score", 365,
                         reason="RFM monetary score {value} of 5", risk_direction=-1), pop["rfm_monetary_score"]),
            (FeatureSpec("monthly_revenue", "value", "spend", f"Average monthly revenue, last {months} months",
                         "currency", months * 30, reason="Pays {value} a month (typical customer: {typical})",
                         risk_direction=0), monthly),
            (FeatureSpec("lifetime_value", "value", "lifetime_value", "Expected customer lifetime value", "currency",
                         reason="Expected lifetime value {value} (typical customer: {typical})", risk_direction=0),
             pop["lifetime_value"]),
            (FeatureSpec("value_tier", "value", "lifetime_value", "Value tier", "category",
                         reason="Value tier: {label}", categorical=True), pop["value_tier"])]


def rfm_history(transactions: pd.DataFrame, customers: pd.DataFrame, as_of: pd.Timestamp) -> pd.DataFrame:
    """Every customer's RFM summary of the purchases before ``as_of`` (input of the non-contractual CLV fit)."""
    from features.clv import rfm_summary

    tx = transactions.iloc[window_slice(transactions["timestamp"], pd.Timestamp.min, as_of)]
    return rfm_summary(tx[["customer_id", "timestamp", "amount"]], as_of, customers=pd.Index(customers["customer_id"]),
                       first_purchase=pd.Series(customers["signup_date"].to_numpy(), index=customers["customer_id"]))


def population_value(recency: np.ndarray, purchases_365d: np.ndarray, spend_365d: np.ndarray, monthly: np.ndarray,
                     customers: pd.DataFrame, population: np.ndarray, as_of: pd.Timestamp, cfg: FeatureConfig,
                     summary: pd.DataFrame | None = None) -> dict[str, np.ndarray | pd.Categorical]:
    """The population-relative value features from per-customer inputs (one entry per customers row).

    ``monthly`` is each customer's monthly revenue (:func:`monthly_revenue_rate`). RFM quintile scores, lifetime value (segment retention or the BG/NBD + Gamma-Gamma fit over every
    customer's ``summary``, see :func:`rfm_history`) and the value tier. Both engines call this one function:
    the default engine inside :func:`value_features`, the Spark engine on the collected per-customer inputs.
    """
    from features.clv import contractual_clv, noncontractual_clv, segment_monthly_retention

    clv_cfg = cfg.clv
    ids = pd.Index(customers["customer_id"])
    if clv_cfg.method == "contractual":
        retention = segment_monthly_retention(customers, as_of, list(clv_cfg.segment_columns))
        revenue = first_month_prior(monthly, customers, population, as_of, list(clv_cfg.segment_columns))
        clv = contractual_clv(pd.Series(revenue, index=ids),
                              pd.Series(retention.reindex(ids).fillna(retention.mean()).to_numpy(), index=ids),
                              horizon_months=clv_cfg.horizon_months, discount_rate_annual=clv_cfg.discount_rate_annual,
                              margin=clv_cfg.margin).to_numpy(dtype=np.float64)
    else:
        res = noncontractual_clv(summary, horizon_days=clv_cfg.horizon_months * DAYS_PER_MONTH,
                                 discount_rate_annual=clv_cfg.discount_rate_annual, margin=clv_cfg.margin)
        clv = res["clv"].reindex(ids).fillna(0.0).to_numpy(dtype=np.float64)
    tiers = [(t.name, t.top_share) for t in cfg.value_tiers]
    return {"rfm_recency_score": quintile_score(-recency, population, higher_is_better=True),
            "rfm_frequency_score": quintile_score(purchases_365d, population),
            "rfm_monetary_score": quintile_score(spend_365d, population),
            "lifetime_value": clv, "value_tier": value_tiers(clv, population, tiers)}


def monthly_revenue_rate(monthly: np.ndarray, signup: pd.Series, as_of: pd.Timestamp, months: int) -> np.ndarray:
    """Monthly revenue over the billing months a customer has had in the window, not over the whole window.

    ``monthly`` = spend in the last ``months`` months / ``months``. A customer who signed up 40 days ago has had two
    billing months in a 3-month window: dividing by 3 would value every new customer at a fraction of what they
    pay. Billing months = the months since signup rounded up, between 1 and ``months``.
    """
    tenure = months_observed(signup, 0, as_of)  # at least one month
    billing_months = np.clip(np.ceil(tenure - 1e-9), 1, months)
    return monthly * (months / billing_months)


def first_month_prior(monthly: np.ndarray, customers: pd.DataFrame, population: np.ndarray, as_of: pd.Timestamp,
                      segments: list[str]) -> np.ndarray:
    """Revenue for the contractual lifetime value: a customer in their first month with no payment yet takes the
    median monthly revenue of the paying customers in the same segment (all paying customers without segments).

    Future value matters more than past value: a customer who signed up last week is not worth 0. Customers
    past their first month who pay nothing keep 0 (free accounts).
    """
    signup = customers["signup_date"]
    first_month = np.asarray((as_of - signup).dt.days < DAYS_PER_MONTH, dtype=bool)
    unpaid = population & first_month & (np.nan_to_num(monthly, nan=0.0) <= 0)
    if not unpaid.any():
        return monthly
    paying = population & (monthly > 0)
    if not paying.any():
        return monthly
    cols = [c for c in segments if c in customers.columns]
    key = (customers.groupby(cols, dropna=False, observed=True, sort=False).ngroup().to_numpy() if cols
           else np.zeros(len(customers), dtype=np.int64))  # segment number per row (vectorised, no text per row)
    medians = pd.Series(monthly[paying]).groupby(key[paying]).median()
    prior = pd.Series(key[unpaid]).map(medians).fillna(float(np.median(monthly[paying]))).to_numpy()
    log.info("lifetime value: %d customers in their first month have not paid yet; they take the median monthly "
             "revenue of paying customers in their segment (%s)", int(unpaid.sum()), ", ".join(cols) or "all")
    out = monthly.copy()
    out[unpaid] = prior
    return out


def value_without_transactions(frame: pd.DataFrame, cfg: FeatureConfig) -> tuple[np.ndarray, np.ndarray]:
    """Lifetime value and value tier per row of a feature frame that has no value family (no transactions table).

    With ``features.clv.revenue_column`` (a numeric customers attribute of monthly revenue, e.g. Telco's
    MonthlyCharges) the value is the contractual CLV (:func:`features.clv.contractual_clv`) of that revenue over
    ``horizon_months`` with monthly retention ``revenue_retention``; a missing revenue takes the median of the
    others (a warning counts them). Without it every row gets ``fallback_value`` and a warning: never a silent
    zero, which would make every contact worthless to the value-based allocation. Tiers rank the given rows.
    """
    clv_cfg = cfg.clv
    revenue = _monthly_revenue(frame, clv_cfg)
    if revenue is None:
        clv = np.full(len(frame), clv_cfg.fallback_value, dtype=np.float64)
    else:
        from features.clv import contractual_clv

        clv = contractual_clv(pd.Series(revenue), clv_cfg.revenue_retention, horizon_months=clv_cfg.horizon_months,
                              discount_rate_annual=clv_cfg.discount_rate_annual,
                              margin=clv_cfg.margin).to_numpy(dtype=np.float64)
    tiers = [(t.name, t.top_share) for t in cfg.value_tiers]
    return clv, np.asarray(value_tiers(clv, np.ones(len(frame), dtype=bool), tiers).astype(str), dtype=object)


def _monthly_revenue(frame: pd.DataFrame, clv_cfg: ClvConfig) -> np.ndarray | None:
    """The configured monthly revenue column as numbers (missing: the median), or None (fallback value)."""
    col = clv_cfg.revenue_column
    if col is None:
        log.warning("no transactions table and no features.clv.revenue_column: every customer's lifetime value is "
                    "the fallback value %s (features.clv.fallback_value), so churn risk alone ranks the alerts; set "
                    "revenue_column to a monthly revenue attribute for value-based selection", clv_cfg.fallback_value)
        return None
    if col not in frame:
        raise DataError("customers", col, "features.clv.revenue_column is not a column of the customers features "
                        "(it must be one of the table's attributes)")
    if not pd.api.types.is_numeric_dtype(frame[col]):
        raise DataError("customers", col, "features.clv.revenue_column is not numeric (declare it with "
                        "types: {column: numeric} or choose a column of monthly revenue)")
    revenue = frame[col].to_numpy(dtype=np.float64)
    missing = np.isnan(revenue)
    if missing.all():
        raise DataError("customers", col, "features.clv.revenue_column has no value in any row", int(missing.sum()))
    if missing.any():
        median = float(np.median(revenue[~missing]))
        log.warning("features.clv.revenue_column '%s': %d of %d rows have no revenue; they take the median %.2f",
                    col, int(missing.sum()), len(revenue), median)
        revenue = np.where(missing, median, revenue)
    return revenue
