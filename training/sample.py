"""Tuning on a sample of customers when the training table is large (README "Training at scale").

Optuna compares parameter sets; it does not need every row to rank them. Above
``training.sampling.min_rows`` tuning rows, the train and validation rows are cut to a sample of
``training.sampling.customers`` customers each; the final refit (training/refit.py) still uses every row.

* **By customer**: a customer is in the sample with all of their rows (every cutoff) or not at all, (no customer is both
  in the sample and out of it, and one person's correlated snapshots stay together).
* **Stratified** by the customer's label history (churner in these rows or not) and first cutoff, with
  proportional allocation: every stratum keeps its share of customers, up to rounding.
* **Weighted**: each sampled row gets ``weight = N / n``, the full table's row count of its (cutoff, label)
  cell over the sample's (post-stratification). The weighted sample has exactly the table's churners and
  non-churners per cutoff, so its base rate and probabilities are the table's, and hessian sums (what
  ``min_child_weight`` and ``lambda`` act on) are on the full table's scale: parameters tuned on the sample
  carry over to the refit on all rows.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)
WEIGHT = "weight"


def needs_sample(n_rows: int, min_rows: int) -> bool:
    """Tables with more than ``min_rows`` rows are tuned on a sample; smaller ones on every row."""
    return n_rows > min_rows


def customer_strata(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per customer (sorted by id): ``churner`` (any positive label) and ``first_cutoff``, its stratum."""
    g = frame.groupby("customer_id", sort=True, observed=True)
    out = pd.DataFrame({"churner": g["label"].max().astype(int), "first_cutoff": g["cutoff"].min()})
    return out.reset_index()


def sample_customer_ids(frame: pd.DataFrame, n_customers: int, seed: int) -> np.ndarray:
    """Ids of ``n_customers`` customers drawn stratified by :func:`customer_strata` (proportional allocation).

    Each non-empty stratum keeps at least one customer; within a stratum the draw is uniform and seeded.
    """
    strata = customer_strata(frame)
    if n_customers >= len(strata):
        return strata["customer_id"].to_numpy()
    rng = np.random.default_rng(seed)
    strata["u"] = rng.random(len(strata))
    size = strata.groupby(["churner", "first_cutoff"], observed=True)["customer_id"].transform("size")
    quota = np.maximum(np.round(size.to_numpy() * n_customers / len(strata)), 1)
    rank = strata.sort_values("u", kind="stable").groupby(["churner", "first_cutoff"], observed=True).cumcount()
    keep = rank.reindex(strata.index).to_numpy() < quota
    return np.sort(strata.loc[keep, "customer_id"].to_numpy())


def cell_weights(full: pd.DataFrame, sample: pd.DataFrame) -> np.ndarray:
    """Per sampled row: rows of its (cutoff, label) cell in ``full`` over rows of that cell in ``sample``."""
    keys = ["cutoff", "label"]
    n_full = full.groupby(keys, observed=True).size().rename("n_full")
    n_sample = sample.groupby(keys, observed=True).size().rename("n_sample")
    ratio = (n_full / n_sample).rename("w")
    return sample[keys].join(ratio, on=keys)["w"].to_numpy(dtype=float)


def customer_sample(frame: pd.DataFrame, n_customers: int, seed: int) -> pd.DataFrame:
    """The rows of a stratified sample of ``n_customers`` customers, with a ``weight`` column (module doc)."""
    ids = sample_customer_ids(frame, n_customers, seed)
    out = frame[frame["customer_id"].isin(ids)].reset_index(drop=True)
    out[WEIGHT] = cell_weights(frame, out)
    log.info("tuning sample: %d of %d customers, %d of %d rows (weights %.2f..%.2f)", len(ids),
             frame["customer_id"].nunique(), len(out), len(frame), out[WEIGHT].min(), out[WEIGHT].max())
    return out

