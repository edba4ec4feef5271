"""Risk tiers, value at risk, alert order and the stable alert schema.

Retention money goes first where it saves the most value: which playbook each alert gets and which
alerts are contacted under the budget is decided by expected incremental value in
:mod:`inference.allocate` (a multiple-choice knapsack). Control-group customers are marked, never contacted.
"""

from __future__ import annotations

import hashlib
import hmac

import numpy as np
import pandas as pd

from churn.config import Economics, RiskTiers
from churn.vocab import RISK_ORDER  # noqa: F401  (the tier ranking lives in churn.vocab; al.RISK_ORDER is its alias here)

ALERT_COLUMNS: dict[str, str] = {
    # column -> description (the documented, stable schema; README "Alert schema")
    "rank": "1 = act first; alerts ordered by expected net value of contacting",
    "customer_id": "customer id (pseudonymised if scoring.pseudonymize_key is set)",
    "cutoff": "scoring cutoff: features use data strictly before it",
    "churn_probability": "calibrated P(churn within the horizon)",
    "risk_tier": "high, medium or low (scoring.risk_tiers thresholds)",
    "alert_kind": "at_risk: risk tier at or above scoring.alert_min_tier; chosen_contact: a customer below it chosen "
                  "for a contact because it pays (scoring.contact_pool: scored)",
    "value_tier": "customer pyramid tier by lifetime value",
    "lifecycle_stage": "new, active, at_risk, dormant or lapsed",
    "lifetime_value": "expected lifetime value (features.clv)",
    "value_at_risk": "churn_probability x lifetime_value",
    "expected_net_value": "expected incremental value of the chosen playbook: -estimated_effect x (lifetime value - incentive) - cost",
    "reason_1": "strongest risk-raising reason (sentence)",
    "reason_2": "second reason",
    "reason_3": "third reason",
    "protective_reason": "strongest risk-lowering reason",
    "reasons": "structured reasons: list of {group, family, feature, text, impact (probability points, + raises risk), value, category, direction}",
    "playbook_id": "chosen retention playbook (for customers not contacted: their best eligible one)",
    "playbook_name": "playbook name",
    "playbook_action": "what to do",
    "playbook_channel": "channel",
    "playbook_owner": "owning team",
    "playbook_sla_hours": "service-level time to act, hours",
    "playbook_cost": "cost per contact",
    "playbook_rule": "id of the rule that made the chosen playbook eligible (or 'default')",
    "estimated_effect": "estimated change in P(churn) if contacted with the chosen playbook (negative = retained)",
    "effect_source": "where the effect comes from: 'uplift' (model) or 'prior' (playbook acceptance_rate)",
    "runner_up_playbook": "second-best eligible playbook (null if only one was eligible)",
    "runner_up_value": "expected incremental value of the runner-up playbook",
    "decision": "why the alert is or is not contacted, e.g. 'no playbook pays: best is survey-followup at -0.40'",
    "selected": "chosen for contact under the budget (multiple-choice knapsack on expected incremental value)",
    "control_group": "held out at random for measurement: do NOT contact",
    "model_name": "registered model name",
    "model_version": "registered model version",
    "input_hash": "sha256 of the input tables",
}


def risk_tier(p: np.ndarray, tiers: RiskTiers) -> np.ndarray:
    out = np.full(len(p), "low", dtype=object)
    out[p >= tiers.medium] = "medium"
    out[p >= tiers.high] = "high"
    return out


def expected_net_value(p: np.ndarray, clv: np.ndarray, acceptance: np.ndarray, cost: np.ndarray,
                       econ: Economics) -> np.ndarray:
    """Expected value saved by contacting minus its cost (incentive paid only when accepted).

    ``p x acceptance`` is the chance the contact retains the customer; with an uplift estimate it can be negative
    (a "sleeping dog": the contact makes leaving likelier). Then the contact loses that share of the lifetime
    value and pays no incentive: nobody is retained, so a negative chance never turns the incentive into a gain.
    """
    retained = p * acceptance
    saved = retained * np.maximum(clv, 0.0) - np.maximum(retained, 0.0) * econ.incentive_cost
    return saved - cost


def pseudonymize(ids: pd.Series, key: str) -> pd.Series:
    """Keyed hash (HMAC-SHA256, 16 hex chars) so outputs can be shared without raw ids."""
    k = key.encode()
    return ids.astype(str).map(lambda s: hmac.new(k, s.encode(), hashlib.sha256).hexdigest()[:16])


def order_alerts(alerts: pd.DataFrame) -> pd.DataFrame:
    """Rank: selected-and-treated first, then by expected net value, value at risk, customer id."""
    a = alerts.assign(_sel=(alerts["selected"]).astype(int))
    a = a.sort_values(["_sel", "expected_net_value", "value_at_risk", "customer_id"],
                      ascending=[False, False, False, True], kind="stable").drop(columns="_sel")
    a.insert(0, "rank", np.arange(1, len(a) + 1))
    return a.reset_index(drop=True)
