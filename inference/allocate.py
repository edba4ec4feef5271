"""Choose whom to contact, and with which playbook, by expected incremental value under the budget.

The playbook rules define which playbooks a customer is ELIGIBLE for
(:func:`inference.playbooks.eligible_playbooks`); this module makes the choice. For every alert and eligible
playbook ``j``::

    estimated_effect   = change in P(churn over the horizon) if contacted with j   (negative = retained)
    incremental value  = -estimated_effect x (max(lifetime value, 0) - incentive) - cost_per_contact(j)

The effect comes from the uplift model when one is given (``effects``), else from the playbook's configured
prior, ``-P(churn) x acceptance_rate`` (then the value equals the former expected net value). The incentive
is paid only by the customers the contact retains, hence its product with the effect.

Choosing at most one playbook per customer to maximise the total value under the budget is a
multiple-choice knapsack. :func:`choose_options` solves it

* exactly when the best option of every customer fits the budget (nothing binds);
* exactly by dynamic programming on cost in cents when customers x budget cents <= ``DP_MAX_CELLS``;
* otherwise by the LP relaxation (Sinha & Zoltners 1979: per customer the upper convex hull of its
  (cost, value) options, upgrades taken by decreasing value per unit cost) with a greedy repair: an upgrade
  that no longer fits closes that customer and the remaining money keeps filling the others. The LP bound
  is within one upgrade of this solution.

Everything is deterministic (ties: customer order, then cheaper, then playbook file order). Only options
worth more than nothing are ever chosen, and each alert's ``decision`` says why it was or was not contacted.
:func:`allocate` is the one selection step both engines call.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from churn.config import Economics
from inference.alerts import expected_net_value
from inference.playbooks import (
    PLAYBOOK_COLUMNS,
    PlaybookBook,
    assign_control_group,
    eligible_playbooks,
)

log = logging.getLogger(__name__)

DP_MAX_CELLS = 4_000_000
ALLOCATION_COLUMNS: tuple[str, ...] = ("estimated_effect", "effect_source", "runner_up_playbook",
                                       "runner_up_value", "decision")
_ATTRS = {"playbook_name": "name", "playbook_action": "action", "playbook_channel": "channel",
          "playbook_owner": "owner", "playbook_sla_hours": "sla_hours", "playbook_cost": "cost_per_contact",
          "playbook_kind": "kind", "playbook_acceptance_rate": "acceptance_rate"}


def option_values(alerts: pd.DataFrame, book: PlaybookBook, econ: Economics,
                  effects: pd.DataFrame | None = None, effect_weight: float = 1.0) -> pd.DataFrame:
    """Every eligible (alert, playbook) with its cost, estimated effect and expected incremental value.

    ``effects``: optional uplift estimates, index aligned with ``alerts``, one column per playbook id, values
    the change in churn probability if contacted; missing columns or NaN cells fall back to the prior.
    Where both exist the effect is ``effect_weight x uplift + (1 - effect_weight) x prior`` (shrinkage of
    noisy per-playbook estimates towards the prior).
    Columns: row, playbook_id, playbook_rule, cost, effect, effect_source ("uplift" or "prior"), value.
    """
    opts = eligible_playbooks(alerts, book)
    rows = opts["row"].to_numpy()
    pbs = {p.id: p for p in book.playbooks}
    pid = opts["playbook_id"].to_numpy(dtype=object)
    cost = np.array([pbs[k].cost_per_contact for k in pid], dtype=np.float64)
    accept = np.array([pbs[k].acceptance_rate for k in pid], dtype=np.float64)
    p = pd.to_numeric(alerts["churn_probability"]).to_numpy(dtype=np.float64)[rows]
    clv = pd.to_numeric(alerts["lifetime_value"]).to_numpy(dtype=np.float64)[rows]
    effect = -p * accept
    source = np.full(len(opts), "prior", dtype=object)
    if effects is not None:
        est = np.full(len(opts), np.nan)
        table = effects.reindex(index=alerts.index)
        for k in sorted(set(pid.tolist()) & set(table.columns)):
            at = pid == k
            est[at] = table[k].to_numpy(dtype=np.float64)[rows[at]]
        have = ~np.isnan(est)
        effect = np.where(have, effect_weight * est + (1 - effect_weight) * effect, effect)
        source[have] = "uplift"
    value = expected_net_value(-effect, clv, np.ones(len(opts)), cost, econ)
    return opts.assign(cost=cost, effect=effect, effect_source=source, value=value)


def choose_options(row: np.ndarray, value: np.ndarray, cost: np.ndarray, n_rows: int,
                   budget: float | None) -> np.ndarray:
    """Multiple-choice knapsack: per row the index of the chosen option (into the option arrays) or -1.

    Maximises the summed value of chosen options with total cost <= ``budget`` (None: unlimited), at most one
    option per row, only options with value > 0. See the module docstring for the method.
    """
    order = np.lexsort((np.arange(len(row)), cost, -value, row))  # per row: best value, then cheaper
    best = np.full(n_rows, -1, dtype=np.int64)
    for i in order[::-1].tolist():
        if value[i] > 0:
            best[row[i]] = i
    if budget is None:
        return best
    taken = best[best >= 0]
    if cost[taken].sum() <= budget + 1e-9:
        return best
    keep = np.flatnonzero(value > 0)
    cents = np.round(cost * 100).astype(np.int64)
    cap = int(np.floor(budget * 100 + 1e-6))
    n_live = len(set(row[keep].tolist()))
    if n_live * (cap + 1) <= DP_MAX_CELLS:
        return _knapsack_dp(row, value, cents, keep, n_rows, cap)
    return _knapsack_lp_greedy(row, value, cost, keep, n_rows, float(budget))


def _groups(row: np.ndarray, keep: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """(row, option indices) for rows with a positive option, in row order."""
    kept = keep[np.argsort(row[keep], kind="stable")]
    bounds = np.flatnonzero(np.diff(row[kept])) + 1
    return [(int(row[g[0]]), g) for g in np.split(kept, bounds) if len(g)]


def _knapsack_dp(row: np.ndarray, value: np.ndarray, cents: np.ndarray, keep: np.ndarray, n_rows: int,
                 cap: int) -> np.ndarray:
    """Exact dynamic programme over budget cents: dp[b] = best value with spend <= b."""
    groups = _groups(row, keep)
    dp = np.zeros(cap + 1)
    choice = np.full((len(groups), cap + 1), -1, dtype=np.int32)
    for gi, (_, opts) in enumerate(groups):
        new = dp.copy()
        for i in opts.tolist():
            c = int(cents[i])
            if c > cap:
                continue
            cand = np.full(cap + 1, -np.inf)
            cand[c:] = dp[: cap + 1 - c] + value[i]
            better = cand > new + 1e-12
            new[better] = cand[better]
            choice[gi, better] = i
        dp = new
    out = np.full(n_rows, -1, dtype=np.int64)
    b = cap
    for gi in range(len(groups) - 1, -1, -1):
        i = int(choice[gi, b])
        if i >= 0:
            out[row[i]] = i
            b -= int(cents[i])
    return out


def _hull(opts: np.ndarray, value: np.ndarray, cost: np.ndarray) -> list[int]:
    """Upper convex hull of a row's (cost, value) options from the no-contact point (0, 0), cheapest first."""
    pts: list[tuple[float, float, int]] = [(0.0, 0.0, -1)]
    for i in sorted(opts.tolist(), key=lambda i: (cost[i], -value[i], i)):
        c, v = float(cost[i]), float(value[i])
        if v <= pts[-1][1]:
            continue
        if c <= pts[-1][0]:  # same cost, higher value (only at zero cost after sorting): replace
            pts[-1] = (c, v, i)
            continue
        while len(pts) >= 2 and ((pts[-1][1] - pts[-2][1]) * (c - pts[-1][0])
                                 <= (v - pts[-1][1]) * (pts[-1][0] - pts[-2][0])):
            pts.pop()
        pts.append((c, v, i))
    return [i for _, _, i in pts]


def _knapsack_lp_greedy(row: np.ndarray, value: np.ndarray, cost: np.ndarray, keep: np.ndarray, n_rows: int,
                        budget: float) -> np.ndarray:
    """LP relaxation order (upgrades by value per unit cost along each row's hull) with greedy repair."""
    out = np.full(n_rows, -1, dtype=np.int64)
    steps: list[tuple[float, int, int, int]] = []  # (-efficiency, row, step, option)
    for r, opts in _groups(row, keep):
        hull = _hull(opts, value, cost)
        prev = hull[0]
        if prev >= 0:  # a free option worth something: always taken
            out[r] = prev
        for k, i in enumerate(hull[1:], 1):
            dc = cost[i] - (cost[prev] if prev >= 0 else 0.0)
            dv = value[i] - (value[prev] if prev >= 0 else 0.0)
            steps.append((-dv / dc, r, k, i))
            prev = i
    left = budget + 1e-9
    closed: set[int] = set()
    for _, r, _, i in sorted(steps):
        if r in closed:
            continue
        now = out[r]
        dc = cost[i] - (cost[now] if now >= 0 else 0.0)
        if dc <= left:
            out[r] = i
            left -= dc
        else:
            closed.add(r)
    return out


def allocate(alerts: pd.DataFrame, book: PlaybookBook, econ: Economics, budget: float | None,
             effects: pd.DataFrame | None = None, raw_ids: pd.Series | None = None,
             effect_weight: float = 1.0) -> pd.DataFrame:
    """THE selection step (both engines): choose playbook and contacts, hold out control groups.

    Returns a copy of ``alerts`` with the playbook columns of the chosen option (for customers not contacted:
    their best option), ``expected_net_value`` (its expected incremental value), :data:`ALLOCATION_COLUMNS`,
    ``selected`` and ``control_group`` (drawn from ``raw_ids``, the un-pseudonymised ids aligned with
    ``alerts``; see :func:`inference.playbooks.assign_control_group`).
    """
    n = len(alerts)
    opts = option_values(alerts, book, econ, effects, effect_weight)
    row, value, cost = opts["row"].to_numpy(), opts["value"].to_numpy(), opts["cost"].to_numpy()
    chosen = choose_options(row, value, cost, n, budget)
    order = np.lexsort((np.arange(len(row)), cost, -value, row))
    first = np.full(n, -1, dtype=np.int64)
    second = np.full(n, -1, dtype=np.int64)
    for i in order[::-1].tolist():  # walks each row from its worst option to its best
        second[row[i]], first[row[i]] = first[row[i]], i
    shown = np.where(chosen >= 0, chosen, first)
    second = np.where((chosen >= 0) & (chosen != first), first, second)
    out = alerts.copy()
    pbs = {p.id: p for p in book.playbooks}
    pid = opts["playbook_id"].to_numpy(dtype=object)[shown]
    out["playbook_id"] = pid
    for col, attr in _ATTRS.items():
        vals = [getattr(pbs[k], attr) for k in pid]
        out[col] = pd.Series(vals, index=alerts.index, dtype="float64" if col in _FLOAT_COLUMNS else object)
    out["playbook_rule"] = opts["playbook_rule"].to_numpy(dtype=object)[shown]
    out["expected_net_value"] = value[shown] if n else np.zeros(0)
    out["estimated_effect"] = opts["effect"].to_numpy()[shown] if n else np.zeros(0)
    out["effect_source"] = opts["effect_source"].to_numpy(dtype=object)[shown]
    out["runner_up_playbook"] = np.where(second >= 0, opts["playbook_id"].to_numpy(dtype=object)[second], None)
    out["runner_up_value"] = np.where(second >= 0, value[second], np.nan) if n else np.zeros(0)
    out["selected"] = chosen >= 0
    held = assign_control_group(out, book, raw_ids).to_numpy() if n else np.zeros(0, dtype=bool)
    out["control_group"] = held & out["selected"].to_numpy()
    out["decision"] = _decisions(out)
    added = (*PLAYBOOK_COLUMNS, "expected_net_value", *ALLOCATION_COLUMNS, "selected", "control_group")
    out = out[list(alerts.columns) + [c for c in added if c not in alerts.columns]]
    _log_allocation(out, budget)
    return out


_FLOAT_COLUMNS = ("playbook_sla_hours", "playbook_cost", "playbook_acceptance_rate")


def _decisions(a: pd.DataFrame) -> list[str]:
    """One line per alert saying why it is, or is not, contacted."""
    out = []
    for pid, v, c, sel, ctrl in zip(a["playbook_id"], a["expected_net_value"], a["playbook_cost"], a["selected"],
                                    a["control_group"], strict=True):
        if sel and ctrl:
            out.append(f"control: held out at random to measure {pid}")
        elif sel:
            out.append(f"contact: {pid} ({v:+.2f} expected)")
        elif v <= 0:
            out.append(f"no playbook pays: best is {pid} at {v:.2f}")
        else:
            out.append(f"budget: {pid} ({v:+.2f} for {c:.2f}) did not fit")
    return out


def _log_allocation(a: pd.DataFrame, budget: float | None) -> None:
    contacted = a["selected"] & ~a["control_group"]
    log.info("allocation: %d of %d alerts selected (%d control), spend %.2f of %s, expected value %.2f",
             int(a["selected"].sum()), len(a), int(a["control_group"].sum()),
             float(a.loc[contacted, "playbook_cost"].sum()), "unlimited" if budget is None else f"{budget:.2f}",
             float(a.loc[contacted, "expected_net_value"].sum()))


# ---------------------------------------------------------------------- comparison with risk-ranked targeting


def ranked_policy(alerts: pd.DataFrame, book: PlaybookBook, econ: Economics, spend: float, key: np.ndarray,
                  effects: pd.DataFrame | None = None, effect_weight: float = 1.0) -> pd.DataFrame:
    """Today's kind of targeting, for comparison: the rule-routed playbook (first match), contacts by ``key``.

    Alerts are taken in decreasing ``key`` (ties: input order) while their cost fits ``spend``; a contact that
    does not fit is skipped and cheaper ones after it still use the rest. Returns, per alert (index of
    ``alerts``): playbook_id, cost, effect, value (under the same estimates as :func:`allocate`), contacted.
    """
    from inference.playbooks import assign_playbooks

    routed = assign_playbooks(alerts, book)["playbook_id"].to_numpy(dtype=object)
    opts = option_values(alerts, book, econ, effects, effect_weight)
    at = pd.MultiIndex.from_arrays([opts["row"].to_numpy(), opts["playbook_id"].to_numpy(dtype=object)])
    pos = at.get_indexer(pd.MultiIndex.from_arrays([np.arange(len(alerts)), routed]))
    chosen = opts.iloc[pos]
    cost = chosen["cost"].to_numpy()
    contacted = np.zeros(len(alerts), dtype=bool)
    left = float(spend) + 1e-9
    for i in np.argsort(-np.asarray(key, dtype=float), kind="stable").tolist():
        if cost[i] <= left:
            contacted[i] = True
            left -= cost[i]
    return pd.DataFrame({"playbook_id": routed, "cost": cost, "effect": chosen["effect"].to_numpy(),
                         "value": chosen["value"].to_numpy(), "contacted": contacted}, index=alerts.index)


def _tier_rows(tier: pd.Series, contacted: np.ndarray, cost: np.ndarray, effect: np.ndarray, value: np.ndarray,
               clv: np.ndarray) -> dict[str, dict[str, float]]:
    df = pd.DataFrame({"tier": tier.to_numpy(), "n": contacted.astype(int), "spent": np.where(contacted, cost, 0.0),
                       "retained": np.where(contacted, -effect * np.maximum(clv, 0.0), 0.0),
                       "net": np.where(contacted, value, 0.0)})
    g = df.groupby("tier", sort=True).sum()
    return {str(t): {"contacted": int(r.n), "spent": round(float(r.spent), 2),
                     "expected_value_retained": round(float(r.retained), 2),
                     "expected_net_value": round(float(r.net), 2)} for t, r in g.iterrows()}


def decision_summary(alerts: pd.DataFrame, book: PlaybookBook, econ: Economics, effects: pd.DataFrame | None,
                     info: dict[str, Any], effect_weight: float = 1.0) -> dict[str, Any]:
    """For summary.json and the report: per value tier contacted / spent / expected value retained, for the
    chosen contacts and for risk-ranked targeting (highest churn probability first) at the same spend.

    Both count every selected alert (control customers included: the hold-out is common to both policies).
    """
    sel = alerts["selected"].to_numpy(dtype=bool)
    cost = alerts["playbook_cost"].to_numpy(dtype=float)
    clv = alerts["lifetime_value"].to_numpy(dtype=float)
    spend = float(cost[sel].sum())
    risk = ranked_policy(alerts, book, econ, spend, alerts["churn_probability"].to_numpy(dtype=float), effects,
                         effect_weight)
    chosen = _tier_rows(alerts["value_tier"], sel, cost, alerts["estimated_effect"].to_numpy(dtype=float),
                        alerts["expected_net_value"].to_numpy(dtype=float), clv)
    ranked = _tier_rows(alerts["value_tier"], risk["contacted"].to_numpy(), risk["cost"].to_numpy(),
                        risk["effect"].to_numpy(), risk["value"].to_numpy(), clv)
    notes = [info["note"]] if info.get("note") else []
    return {**{k: v for k, v in info.items() if k != "note"}, "notes": notes, "spend_selected": round(spend, 2),
            "by_value_tier": chosen, "risk_ranked_same_spend": ranked,
            "expected_net_value_total": round(float(alerts.loc[sel, "expected_net_value"].sum()), 2),
            "risk_ranked_expected_net_value_total": round(float(risk.loc[risk["contacted"], "value"].sum()), 2)}
