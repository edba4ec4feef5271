"""The time model: who is active at a cutoff, what their label is, which cutoffs train and test.

Features for cutoff ``T`` see only records with timestamp ``< T``. The label is "churned within
``(T, T + horizon]``", either by an explicit churn date or by inactivity (no event or
transaction in ``(T, T + inactivity_days]``). Training uses several cutoffs and is validated
and tested out of time on the latest ones, with label windows that never reach into a later split.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from churn.config import CutoffRange, LabelConfig
from churn.errors import DataError
from churn.timebase import DAY
from features.contract import Tables

log = logging.getLogger(__name__)


def _activity_times(tables: Tables) -> list[pd.DataFrame]:
    return [t[["_code", "timestamp"]] for n in ("events", "transactions") if (t := tables.child(n)) is not None]


def last_activity_before(tables: Tables, as_of: pd.Timestamp) -> np.ndarray:
    """Per customer (row order of ``customers``): latest event or transaction strictly before ``as_of`` (NaT if none)."""
    n = len(tables.customers)
    last = np.full(n, np.iinfo(np.int64).min, dtype=np.int64)
    for t in _activity_times(tables):
        stop = t["timestamp"].searchsorted(as_of, side="left")
        if stop:
            np.maximum.at(last, t["_code"].to_numpy()[:stop], t["timestamp"].to_numpy()[:stop].astype(np.int64))
    out = last.astype("datetime64[ns]")
    out[last == np.iinfo(np.int64).min] = np.datetime64("NaT")
    return out


def active_mask(tables: Tables, as_of: pd.Timestamp, label: LabelConfig) -> np.ndarray:
    """Customers who are still customers at ``as_of`` (row order of ``customers``), by ``label.population``.

    Always: signed up before T and, with a churn_date label, not churned by T. ``auto`` then adds
    today's rule: churn_date with a subscriptions table: a subscription covers T; inactivity: active
    within the last ``inactivity_days`` (or signed up recently enough not to have lapsed).
    """
    c = tables.customers
    if label.definition == "snapshot":
        return np.ones(len(c), dtype=bool)
    rule = label.population
    if rule == "auto":
        has_subs = getattr(tables, "subscriptions", None) is not None
        rule = "active_within" if label.definition == "inactivity" else ("subscription" if has_subs else "signed_up")
    if rule == "subscription":
        if getattr(tables, "subscriptions", None) is None:
            raise DataError("subscriptions", None, "label.population 'subscription' needs a subscriptions table")
        from features.derive import subscription_active_mask

        return subscription_active_mask(tables, as_of)  # a subscription row covers T
    signed = (c["signup_date"] < as_of).to_numpy()
    if label.definition == "churn_date":
        churn = c["churn_date"].to_numpy()
        signed = signed & ~(churn <= np.datetime64(as_of))  # NaT compares False -> still active
    if rule == "signed_up":
        return signed
    last = last_activity_before(tables, as_of)
    if rule == "ever_seen":
        return signed & ~np.isnat(last)
    days = label.population_days or label.inactivity_days
    horizon_start = np.datetime64(as_of - days * DAY)
    young = c["signup_date"].to_numpy() >= horizon_start
    return signed & ((last >= horizon_start) | young)


def labels(tables: Tables, as_of: pd.Timestamp, label: LabelConfig) -> np.ndarray:
    """0/1 label per customer (row order of ``customers``): churned within ``(T, T + horizon]``.

    ``label.window_end: exclusive`` makes the window ``(T, T + horizon)``: a churn date, or for an inactivity
    label an event, exactly at ``T + horizon`` is then outside it.
    """
    c = tables.customers
    if label.definition == "snapshot":
        raise ValueError("snapshot labels have no time: use training.snapshot, not cutoffs")
    inclusive = label.window_end == "inclusive"
    if label.definition == "churn_date":
        churn = c["churn_date"].to_numpy()
        end = np.datetime64(as_of + label.horizon_days * DAY)
        inside = churn <= end if inclusive else churn < end
        return ((churn > np.datetime64(as_of)) & inside).astype(np.int8)
    end = as_of + label.inactivity_days * DAY
    seen = np.zeros(len(c), dtype=bool)
    for t in _activity_times(tables):
        ts = t["timestamp"]
        lo = ts.searchsorted(as_of, side="right")  # strictly after T
        hi = ts.searchsorted(end, side="right" if inclusive else "left")  # up to T + N, included or not
        seen[t["_code"].to_numpy()[lo:hi]] = True
    return (~seen).astype(np.int8)


def label_window_days(label: LabelConfig) -> int:
    return label.horizon_days if label.definition == "churn_date" else label.inactivity_days


def censored_labels(tables: Tables, as_of: pd.Timestamp, label: LabelConfig, edge: pd.Timestamp) -> np.ndarray | None:
    """Labels at ``as_of`` with the window cut at ``edge``: churned in ``(T, edge]``, known at ``edge``.

    None for an inactivity label: a shorter window would make more customers look inactive, so such a
    label cannot be censored (the row is dropped instead).
    """
    if label.definition != "churn_date":
        return None
    days = int((edge - as_of) / DAY)
    if days < 1:
        raise ValueError(f"censoring edge {edge.date()} must be after the cutoff {as_of.date()}")
    return labels(tables, as_of, label.model_copy(update={"horizon_days": min(days, label.horizon_days)}))


def explicit_cutoffs(tables: Tables, label: LabelConfig, spec: list | CutoffRange) -> list[pd.Timestamp]:
    """The cutoffs the config lists (``training.cutoffs``), checked: after the data's start, label window observed."""
    if isinstance(spec, CutoffRange):
        grid = list(pd.date_range(pd.Timestamp(spec.start), pd.Timestamp(spec.end), freq=spec.frequency))
    else:
        grid = sorted({pd.Timestamp(d) for d in spec})
    window = label_window_days(label) * DAY
    for t in grid:
        if t <= tables.data_start:
            raise DataError("customers", None, f"training.cutoffs: {t.date()} is not after the data's start "
                            f"({tables.data_start.date()}): no history to build features from")
        if t + window > tables.data_end:
            raise DataError("customers", None, f"training.cutoffs: the label window of {t.date()} ends "
                            f"{(t + window).date()}, after the data's end {tables.data_end.date()} (set "
                            "data.observed_until if the data is complete later, or drop this cutoff)")
    if len(grid) < 3:
        raise DataError("customers", None, f"training.cutoffs: need at least 3 cutoffs, got {len(grid)}")
    return grid


def training_cutoffs(tables: Tables, label: LabelConfig, n_cutoffs: int, freq: str = "MS",
                     min_history_days: int = 90, explicit: list | CutoffRange | None = None) -> list[pd.Timestamp]:
    """The latest ``n_cutoffs`` cutoffs (month starts by default) whose whole label window is observed.

    The first cutoff is at least ``min_history_days`` after the data's start, so features have history.
    ``explicit`` (``training.cutoffs``) replaces the grid: every listed cutoff is used, or an error says why not.
    """
    if explicit is not None:
        return explicit_cutoffs(tables, label, explicit)
    window = label_window_days(label) * DAY
    last_ok = tables.data_end - window
    first = tables.data_start + pd.Timedelta(days=min_history_days)
    grid = pd.date_range(first.normalize(), last_ok, freq=freq)
    grid = [t for t in grid if t + window <= tables.data_end]
    if len(grid) < 3:
        raise DataError(
            "customers", None,
            f"history too short for training: need at least 3 cutoffs ({freq}) between {first.date()} "
            f"and {last_ok.date()} (data ends {tables.data_end.date()}, label window {window.days} days)",
        )
    return list(grid[-n_cutoffs:])


@dataclass(frozen=True)
class CutoffSplit:
    train: list[pd.Timestamp]
    valid: list[pd.Timestamp]
    test: list[pd.Timestamp]


def split_cutoffs(cutoffs: list[pd.Timestamp], n_valid: int, n_test: int, window_days: int) -> CutoffSplit:
    """Out-of-time split: test = latest cutoffs, valid = the ones before, train = the rest.

    Earlier cutoffs whose label window ``(T, T + window]`` reaches past the next split's first
    cutoff are dropped, so no label of an earlier split is observed inside a later split's window.
    """
    cutoffs = sorted(cutoffs)
    if len(cutoffs) < n_valid + n_test + 1:
        raise ValueError(f"need more than {n_valid + n_test} cutoffs, got {len(cutoffs)}")
    test = cutoffs[-n_test:]
    valid = [t for t in cutoffs[-(n_test + n_valid) : -n_test] if t + window_days * DAY <= test[0]]
    rest = cutoffs[: -(n_test + n_valid)]
    bound = valid[0] if valid else test[0]
    train = [t for t in rest if t + window_days * DAY <= bound]
    if not valid or not train:
        raise ValueError("cutoffs too close together for a non-overlapping out-of-time split")
    dropped = len(cutoffs) - len(train) - len(valid) - len(test)
    if dropped:
        log.info("dropped %d cutoff(s) whose label window overlapped the next split", dropped)
    return CutoffSplit(train=train, valid=valid, test=test)
