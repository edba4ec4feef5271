"""The contact pool: every scored customer is a candidate, the alert files keep the alerts and the chosen."""

from __future__ import annotations

import numpy as np
import pandas as pd

from inference.score import alert_rows, contact_pool

SCORES = pd.DataFrame({"customer_id": ["a", "b", "c", "d"], "churn_probability": [0.05, 0.5, 0.02, 0.4],
                       "risk_tier": ["low", "high", "low", "high"], "lifetime_value": [100.0, 50.0, 80.0, 20.0]})


def _alerts() -> pd.DataFrame:
    a = SCORES.iloc[[1, 3]].reset_index(drop=True)
    return a.assign(reason_families=[["behavioral"], ["value"]], early_warnings=[["usage_low_flag"], []],
                    reason_1=["fewer logins", "lower spend"], base_probability=[0.1, 0.2])


def test_scored_pool_holds_everyone_in_row_order_with_alert_explanations_only() -> None:
    pos, cand = contact_pool(SCORES, _alerts(), np.array([1, 3]), "scored")
    assert pos.tolist() == [0, 1, 2, 3]
    assert cand["customer_id"].tolist() == ["a", "b", "c", "d"]
    assert cand["reason_families"].tolist() == [[], ["behavioral"], [], ["value"]]
    assert cand["early_warnings"].tolist() == [[], ["usage_low_flag"], [], []]
    assert cand["reason_1"].tolist() == [None, "fewer logins", None, "lower spend"]
    assert cand["base_probability"].isna().tolist() == [True, False, True, False]
    assert cand["base_probability"].dtype == np.float64


def test_alerts_pool_is_the_alerts_unchanged() -> None:
    alerts = _alerts()
    pos, cand = contact_pool(SCORES, alerts, np.array([1, 3]), "alerts")
    assert pos.tolist() == [1, 3]
    pd.testing.assert_frame_equal(cand, alerts)


def test_alert_rows_keep_alerts_and_selected_and_renumber_ranks() -> None:
    decided = pd.DataFrame({"rank": [1, 2, 3, 4], "customer_id": ["c", "b", "a", "d"],
                            "selected": [True, True, False, False], "control_group": [False, True, False, False]})
    out = alert_rows(decided, pd.Series(["b", "d"]))
    assert out["customer_id"].tolist() == ["c", "b", "d"]   # c chosen though not an alert; a neither: dropped
    assert out["rank"].tolist() == [1, 2, 3]
    assert out["alert_kind"].tolist() == ["chosen_contact", "at_risk", "at_risk"]


def test_scored_pool_without_any_alert_has_empty_explanations() -> None:
    empty = _alerts().iloc[:0].assign(reasons=pd.Series([], dtype=object))
    pos, cand = contact_pool(SCORES, empty, np.array([], dtype=np.int64), "scored")
    assert pos.tolist() == [0, 1, 2, 3]
    assert cand["reasons"].tolist() == [[], [], [], []]
    assert cand["reason_families"].tolist() == [[], [], [], []]
