"""Risk tiers, expected net value, alert order and pseudonyms, on hand-made numbers (selection: test_allocate)."""

from __future__ import annotations

import hashlib
import hmac

import numpy as np
import pandas as pd

from churn.config import Economics, RiskTiers
from inference import alerts as al


def test_risk_tier_thresholds_are_inclusive() -> None:
    tiers = RiskTiers(high=0.30, medium=0.12)
    p = np.array([0.0, 0.1199, 0.12, 0.2999, 0.30, 1.0])
    assert al.risk_tier(p, tiers).tolist() == ["low", "low", "medium", "medium", "high", "high"]
    assert al.RISK_ORDER == {"low": 0, "medium": 1, "high": 2}


def test_expected_net_value_by_hand() -> None:
    econ = Economics(contact_cost=5.0, incentive_cost=20.0, acceptance_rate=0.3)
    p = np.array([0.5, 0.2, 0.9])
    clv = np.array([200.0, 10.0, -50.0])
    acceptance = np.array([0.3, 0.5, 0.4])
    cost = np.array([5.0, 1.0, 2.0])
    # P x acceptance x (max(CLV, 0) - incentive) - cost:
    #   0.5 x 0.3 x (200 - 20) - 5 = 27 - 5  = 22
    #   0.2 x 0.5 x (10 - 20)  - 1 = -1 - 1  = -2
    #   0.9 x 0.4 x (0 - 20)   - 2 = -7.2 - 2 = -9.2   (negative CLV counts as 0)
    np.testing.assert_allclose(al.expected_net_value(p, clv, acceptance, cost, econ), [22.0, -2.0, -9.2], atol=1e-12)


def test_a_contact_that_raises_churn_never_gains_the_incentive() -> None:
    """A negative retention chance (uplift says the contact makes leaving likelier) loses value and pays no
    incentive: with zero lifetime value it is just the contact cost, never a gain."""
    econ = Economics(contact_cost=5.0, incentive_cost=5.0, acceptance_rate=0.3)
    p = np.array([-0.2, -0.2, 0.2])            # change in retention: two sleeping dogs, one persuadable
    clv = np.array([0.0, 100.0, 0.0])
    # -0.2 x 0   - 0 x 5    - 0.08 = -0.08     (was +0.92: -0.2 x (0 - 5) - 0.08)
    # -0.2 x 100 - 0 x 5    - 0.08 = -20.08
    #  0.2 x 0   - 0.2 x 5  - 0.08 = -1.08     (paying the incentive to a customer worth nothing)
    got = al.expected_net_value(p, clv, np.ones(3), np.full(3, 0.08), econ)
    np.testing.assert_allclose(got, [-0.08, -20.08, -1.08], atol=1e-12)


def test_order_alerts_ranks_selected_first() -> None:
    alerts = pd.DataFrame({
        "customer_id": ["A", "B", "C", "D", "E"],
        "selected": [False, True, True, True, True],
        "expected_net_value": [50.0, 10.0, 20.0, 20.0, 20.0],
        "value_at_risk": [9.0, 1.0, 3.0, 7.0, 7.0],
    })
    out = al.order_alerts(alerts)
    # selected first (A has the best net value but is not selected), then net value, value at risk, id
    assert out["customer_id"].tolist() == ["D", "E", "C", "B", "A"]
    assert out["rank"].tolist() == [1, 2, 3, 4, 5]
    assert out.columns[0] == "rank"
    assert list(out.index) == [0, 1, 2, 3, 4]
    # same result whatever the input order
    shuffled = alerts.sample(frac=1.0, random_state=1)
    pd.testing.assert_frame_equal(al.order_alerts(shuffled), out)


def test_pseudonymize_is_deterministic_and_keyed() -> None:
    ids = pd.Series(["C0000001", "C0000002", "C0000001"], index=[5, 6, 7])
    a = al.pseudonymize(ids, "secret")
    b = al.pseudonymize(ids, "secret")
    other = al.pseudonymize(ids, "another key")
    pd.testing.assert_series_equal(a, b)
    assert list(a.index) == [5, 6, 7]
    assert a.iloc[0] == a.iloc[2] and a.iloc[0] != a.iloc[1]
    assert all(len(x) == 16 and all(c in "0123456789abcdef" for c in x) for x in a)
    assert (a != other).all(), "a different key gives different pseudonyms"
    assert not set(a) & set(ids), "raw ids never leak"
    # HMAC-SHA256 of the id under the key, first 16 hex characters
    assert a.iloc[0] == hmac.new(b"secret", b"C0000001", hashlib.sha256).hexdigest()[:16]


def test_alert_columns_schema_starts_with_rank_and_documents_each_column() -> None:
    cols = list(al.ALERT_COLUMNS)
    assert cols[:3] == ["rank", "customer_id", "cutoff"]
    assert {"churn_probability", "risk_tier", "reason_1", "reason_2", "reason_3", "protective_reason", "playbook_id",
            "playbook_rule", "selected", "control_group", "model_version", "input_hash"} <= set(cols)
    assert all(isinstance(v, str) and v for v in al.ALERT_COLUMNS.values())
