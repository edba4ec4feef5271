"""Campaign history as data: the optional ``treatments`` table, its checks and its outcomes.

One row per customer contacted (``group`` "treated") or deliberately held out ("control") in a retention
campaign: ``customer_id``, ``timestamp`` (the contact), ``campaign_id``, ``playbook_id``, ``group``. Past
``churn score`` runs are one source (:func:`history_from_alerts`: selected customers, control flags); a
CRM export mapped in ``data.tables.treatments`` is another.

Time: a contact at time ``t`` is described by features strictly before its campaign's cutoff (the day of
the first contact of the campaign, midnight) and its outcome is the configured label strictly after the
contact: churned in ``(t, t + horizon]`` (:func:`campaign_outcomes`).
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from churn.config import LabelConfig
from churn.errors import DataError

log = logging.getLogger(__name__)

TABLE = "treatments"
GROUPS = ("treated", "control")
COLUMNS = ("customer_id", "timestamp", "campaign_id", "playbook_id", "group")


def validate_treatments(df: pd.DataFrame, customers: pd.DataFrame, fmt: str | None) -> pd.DataFrame:
    """Contract checks at load: known customers, parseable times, groups treated/control, one group per campaign.

    Returns the rows with canonical dtypes and ``_code`` (row of the customer in ``customers``), sorted by
    timestamp then customer.
    """
    from features.contract import _attach_codes, _ids, _parse_dates

    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise DataError(TABLE, missing[0], f"missing required column(s) {missing}; columns found: {list(df.columns)}")
    out = pd.DataFrame({"customer_id": _ids(df, TABLE), "timestamp": _parse_dates(df, TABLE, "timestamp", fmt, True)})
    for col in ("campaign_id", "playbook_id"):
        blank = df[col].isna() | (df[col].astype(str).str.strip() == "")
        if blank.any():
            raise DataError(TABLE, col, "missing values", int(blank.sum()), df.loc[blank].head(5))
        out[col] = df[col].astype(str).str.strip()
    group = df["group"].astype(str).str.strip().str.lower()
    bad = ~group.isin(GROUPS)
    if bad.any():
        raise DataError(TABLE, "group", f"values must be one of {list(GROUPS)}", int(bad.sum()), df.loc[bad].head(5))
    out["group"] = group
    per = out.groupby(["campaign_id", "customer_id"], sort=False)["group"].nunique()
    both = per[per > 1]
    if len(both):
        raise DataError(TABLE, "group", "customers both treated and control in one campaign", len(both),
                        [f"{c} in {k}" for k, c in both.index[:5]])
    out = out.sort_values(["timestamp", "customer_id"], kind="stable").reset_index(drop=True)
    return _attach_codes(out, TABLE, customers)


def check_history(treatments: pd.DataFrame, playbook_ids: list[str], cutoff: pd.Timestamp) -> None:
    """Checks that need the playbooks and the cutoff: known playbooks, nothing after the cutoff, some controls."""
    unknown = ~treatments["playbook_id"].isin(playbook_ids)
    if unknown.any():
        raise DataError(TABLE, "playbook_id", f"unknown playbook ids (known: {', '.join(playbook_ids)})",
                        int(unknown.sum()), treatments.loc[unknown, "playbook_id"].unique()[:5])
    late = treatments["timestamp"] >= cutoff
    if late.any():
        raise DataError(TABLE, "timestamp", f"contacts at or after the cutoff {cutoff.date()} (history must be "
                        "in the past)", int(late.sum()), treatments.loc[late].head(5))
    if len(treatments) and not (treatments["group"] == "control").any():
        raise DataError(TABLE, "group", "no control rows at all: without a held-out group no effect can be "
                        "estimated (hold out a control share in every campaign)")


def campaign_cutoffs(treatments: pd.DataFrame) -> pd.Series:
    """Per row, its campaign's cutoff: midnight of the campaign's first contact (features strictly before it)."""
    first = treatments.groupby("campaign_id")["timestamp"].transform("min")
    return first.dt.normalize()


def campaign_outcomes(tables: object, treatments: pd.DataFrame, label: LabelConfig,
                      data_end: pd.Timestamp) -> pd.DataFrame:
    """Each contact's outcome under the configured label, strictly after the contact time.

    Adds ``cutoff`` (campaign cutoff), ``active`` (still a customer at the contact), ``observed`` (the label
    window ``(t, t + horizon]`` ends by ``data_end``) and ``churned`` (0/1; NaN where not active or not observed).
    """
    from features.timeline import DAY, active_mask, label_window_days, labels

    window = label_window_days(label)
    out = treatments.assign(cutoff=campaign_cutoffs(treatments), active=False, observed=False, churned=np.nan)
    codes = out["_code"].to_numpy()
    for ts, idx in out.groupby("timestamp", sort=True).indices.items():
        t = pd.Timestamp(ts)
        out.loc[out.index[idx], "active"] = active_mask(tables, t, label)[codes[idx]]
        out.loc[out.index[idx], "observed"] = t + window * DAY <= data_end
        out.loc[out.index[idx], "churned"] = labels(tables, t, label)[codes[idx]].astype(float)
    out.loc[~(out["active"] & out["observed"]), "churned"] = np.nan
    gone = int((~out["active"]).sum())
    if gone:
        log.warning("treatments: %d contact(s) of customers no longer active at the contact time are ignored", gone)
    return out


def history_from_alerts(alerts: pd.DataFrame, campaign: str, contacted_at: pd.Timestamp) -> pd.DataFrame:
    """A finished scoring run's contacts as campaign history: selected alerts, treated or control.

    ``alerts`` must carry raw customer ids (a pseudonymised run cannot be joined back to the data).
    """
    sel = alerts[alerts["selected"].astype(bool)]
    return pd.DataFrame({
        "customer_id": sel["customer_id"].astype(str).to_numpy(),
        "timestamp": pd.Timestamp(contacted_at),
        "campaign_id": campaign,
        "playbook_id": sel["playbook_id"].astype(str).to_numpy(),
        "group": np.where(sel["control_group"].astype(bool), "control", "treated"),
    })
