"""Time-to-churn columns, urgency and the analyst's sentence, with expected text written out."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import xgboost as xgb

from inference.timing import alert_timing, survival_columns, survival_lifetime_value, timing_sentence, urgency
from model.survival import SurvivalModel


def test_urgency_by_median_days():
    assert urgency(np.array([5.0, 30.0, 31.0, 90.0, 400.0]), (30, 90)).tolist() == [
        "immediate", "immediate", "soon", "soon", "later"]


def test_sentence_within_and_beyond_the_lifetime_horizon():
    assert timing_sentence(40.4, {30: 0.38, 90: 0.71}, 730.5) == (
        "Even odds of leaving within about 40 days; chance of leaving: 38% within 30 days, 71% within 90 days")
    assert timing_sentence(2000.0, {30: 0.02}, 730.5) == (
        "Likely to stay beyond 2 years; chance of leaving: 2% within 30 days")


def test_columns_for_an_exponential_customer():
    model = SurvivalModel(xgb.Booster(), "extreme", 1.0)
    cols = survival_columns(model, np.array([math.log(100.0)]), [30, 90], 365.0, 0.0, (30, 90))
    assert list(cols.columns) == ["median_days_to_churn", "churn_within_30d", "churn_within_90d",
                                  "expected_lifetime_days", "urgency"]
    row = cols.iloc[0]
    assert round(row["median_days_to_churn"], 2) == 69.31
    assert round(row["churn_within_30d"], 4) == 0.2592
    assert row["urgency"] == "soon"
    text = alert_timing(cols, [30, 90], 365.0).iloc[0]
    assert text == "Even odds of leaving within about 69 days; chance of leaving: 26% within 30 days, 59% within 90 days"


def test_lifetime_value_from_expected_lifetime():
    # 2 months of expected lifetime at 50 a month with a 0.8 margin: 80
    days = np.array([2 * 365.25 / 12, 0.0])
    np.testing.assert_allclose(survival_lifetime_value(np.array([50.0, np.nan]), days, 0.8), [80.0, 0.0])


def test_a_playbook_rule_can_route_on_urgency():
    from inference.playbooks import PlaybookBook, assign_playbooks

    pb = {"id": "{}", "name": "x", "action": "a", "channel": "email", "owner": "o", "sla_hours": 1,
          "cost_per_contact": 1.0, "kind": "preventive", "acceptance_rate": 0.1}
    book = PlaybookBook.model_validate({
        "campaign": "c", "control_fraction": 0.0, "default_playbook": "later",
        "playbooks": [{**pb, "id": "now"}, {**pb, "id": "later"}],
        "rules": [{"id": "urgent", "when": {"urgency": "immediate"}, "playbook": "now"}]})
    alerts = pd.DataFrame({"customer_id": ["a", "b"], "risk_tier": ["high", "high"], "value_tier": ["gold", "gold"],
                           "urgency": ["immediate", "later"], "churn_probability": [0.5, 0.5]})
    assert assign_playbooks(alerts, book)["playbook_id"].tolist() == ["now", "later"]
