"""Columns the loader derives instead of reading: customer dates and payments from subscriptions, ages.

Subscription data (one row per billing period or contract: customer, start, end, amount) says when a
customer joined and left without a customers file that records it:

* rows are grouped into **runs**: a row whose start is at most ``renewal_grace_days`` after the latest
  end of the customer's earlier rows continues the run (a renewal, even a late one, is not a churn);
* ``signup_date`` = the customer's first ``start_date``;
* ``churn_date`` = the end of the customer's final run, if that end is before the data's end
  (``observed_until``; default: the latest ``start_date``, the last moment a renewal could be seen).
  Runs that end at or after it, or are open-ended (empty end), are censored: no churn date;
* transactions = one payment of ``amount`` at every ``start_date``.

Caveat of the censoring rule: a final run ending less than ``renewal_grace_days`` before
``observed_until`` counts as churned even though a late renewal after ``observed_until`` could not be seen.
With immediate renewals (as in ChurnSim) this never matters; otherwise set ``observed_until`` earlier.

A customer who churned and came back later has one signup (first start) and one churn date (end of the
final run): the contract holds one churn per customer, so the earlier gap is not labelled. The exact
"covered by a subscription" population is :func:`subscription_active_mask`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from churn.timebase import DAY

if TYPE_CHECKING:
    from features.contract import Tables

_OPEN = np.iinfo(np.int64).max  # an open-ended subscription (no end date) ends "never"


def subscription_runs(subs: pd.DataFrame, grace_days: int) -> pd.DataFrame:
    """``subs`` (customer_id, start_date, end_date) sorted by customer and start, with a ``run`` number per row.

    ``run`` counts from 0 within each customer; a row starts a new run when its start is more than
    ``grace_days`` after the latest end of the customer's earlier rows.
    """
    s = subs.sort_values(["customer_id", "start_date"], kind="stable").reset_index(drop=True)
    if s.empty:
        return s.assign(run=pd.Series(dtype=np.int64))
    end = s["end_date"].to_numpy(dtype="datetime64[ns]").astype(np.int64)
    end = np.where(pd.isna(s["end_date"]).to_numpy(), _OPEN, end)
    start = s["start_date"].to_numpy(dtype="datetime64[ns]").astype(np.int64)
    cust = s["customer_id"].to_numpy()
    first = np.ones(len(s), dtype=bool)
    first[1:] = cust[1:] != cust[:-1]
    reach = pd.Series(end).groupby(pd.Series(cust)).cummax().to_numpy()  # latest end so far, per customer
    prev_reach = np.empty_like(reach)
    prev_reach[0] = 0
    prev_reach[1:] = reach[:-1]
    grace = np.int64(grace_days) * DAY.value
    with np.errstate(over="ignore"):
        limit = np.where(prev_reach == _OPEN, _OPEN, prev_reach + grace)
    new_run = first | (start > limit)
    run_global = np.cumsum(new_run)
    first_run = pd.Series(run_global).groupby(pd.Series(cust)).transform("min").to_numpy()
    return s.assign(run=(run_global - first_run).astype(np.int64))


def customer_dates_from_subscriptions(subs: pd.DataFrame, grace_days: int,
                                      observed_until: pd.Timestamp | None = None) -> pd.DataFrame:
    """Per customer (index ``customer_id``): ``signup_date``, ``churn_date``, ``last_end``, ``n_runs``.

    ``observed_until`` defaults to the latest ``start_date``; a final run ending at or after it (or open)
    has no churn date.
    """
    runs = subscription_runs(subs, grace_days)
    if observed_until is None:
        observed_until = subs["start_date"].max()
    g = runs.groupby("customer_id", sort=False)
    signup = g["start_date"].min()
    open_ended = g["end_date"].apply(lambda e: bool(e.isna().any()))
    last_end = g["end_date"].max().where(~open_ended)
    churn = last_end.where(last_end < pd.Timestamp(observed_until))
    out = pd.DataFrame({"signup_date": signup, "churn_date": churn, "last_end": last_end,
                        "n_runs": g["run"].max() + 1})
    out.index.name = "customer_id"
    return out


def transactions_from_subscriptions(subs: pd.DataFrame) -> pd.DataFrame:
    """One payment per subscription row: ``customer_id``, ``timestamp`` (= start_date), ``amount``."""
    return pd.DataFrame({"customer_id": subs["customer_id"].to_numpy(),
                         "timestamp": subs["start_date"].to_numpy(),
                         "amount": subs["amount"].to_numpy(dtype=np.float64)})


def subscription_active_mask(tables: Tables, as_of: pd.Timestamp) -> np.ndarray:
    """Customers (row order of ``customers``) with a subscription row covering ``as_of``: start <= T < end.

    An empty end is open-ended. This is the recipe of the fightchurn data (population at a cutoff);
    ``features.timeline.active_mask`` with derived dates gives the same customers except those whose
    first subscription starts exactly at ``as_of`` (no history yet) and those between two runs.
    Pass it to ``FeatureBuilder.build(as_of, population=...)``.
    """
    subs = tables.subscriptions
    if subs is None:
        raise ValueError("no subscriptions table loaded")
    t = np.datetime64(pd.Timestamp(as_of))
    start = subs["start_date"].to_numpy()
    end = subs["end_date"].to_numpy()
    covers = (start <= t) & ((end > t) | np.isnat(end))
    mask = np.zeros(len(tables.customers), dtype=bool)
    mask[subs["_code"].to_numpy()[covers]] = True
    return mask


def whole_years_between(dates: pd.Series, as_of: pd.Timestamp) -> np.ndarray:
    """Completed years from each date to ``as_of`` (an age); NaN where the date is missing."""
    as_of = pd.Timestamp(as_of)
    d = pd.to_datetime(dates)
    before_birthday = (d.dt.month > as_of.month) | ((d.dt.month == as_of.month) & (d.dt.day > as_of.day))
    years = as_of.year - d.dt.year - before_birthday.astype(float)
    return years.to_numpy(dtype=np.float64)


def days_between(dates: pd.Series, as_of: pd.Timestamp) -> np.ndarray:
    """Days from each date to ``as_of`` (fractional); NaN where the date is missing."""
    d = pd.to_datetime(dates)
    return ((pd.Timestamp(as_of) - d) / DAY).to_numpy(dtype=np.float64)
