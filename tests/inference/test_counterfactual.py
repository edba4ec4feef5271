"""Counterfactuals on hand-made boosters: the candidate grid, single and paired moves, only actionable features."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from features.catalogue import FeatureSpec
from inference.counterfactual import (
    CounterfactualSearch,
    candidate_values,
    counterfactual_columns,
    match_features,
    search_for_model,
    split_thresholds,
)
from model.artifact import ChurnModel

FEATURES = ["logins_7d", "tenure_days"]
SPECS = {
    "logins_7d": FeatureSpec("logins_7d", "behavioral", "logins", "Logins in the last 7 days", "count", 7,
                             risk_direction=-1),
    "tenure_days": FeatureSpec("tenure_days", "profile", "tenure", "Days since signup", "days", risk_direction=-1),
}


def _stump(x: list[list[float]], y: list[int], rounds: int = 1, depth: int = 1) -> xgb.Booster:
    """Exact-method trees with no shrinkage or regularisation, so leaves can be computed by hand."""
    d = xgb.DMatrix(np.array(x, dtype=np.float32), label=np.array(y), feature_names=FEATURES)
    params = {"objective": "binary:logistic", "tree_method": "exact", "max_depth": depth, "eta": 1.0,
              "lambda": 0.0, "min_child_weight": 0.0, "base_score": 0.5, "seed": 0}
    return xgb.train(params, d, num_boost_round=rounds)


# churn iff fewer than 4 logins (values 1, 2, 3 vs 5, 6, 7: the exact split is at 4.0); tenure carries nothing
LOGIN_X = [[1, 100], [2, 100], [3, 100], [5, 100], [6, 100], [7, 100]]
LOGIN_Y = [1, 1, 1, 0, 0, 0]


def test_candidate_grid_straddles_each_threshold() -> None:
    # whole numbers: 3.5 -> 4 (goes right) and 3 (goes left); 10 -> 10 and 9
    np.testing.assert_array_equal(candidate_values(np.array([3.5, 10.0]), 1.0, 0.0), [3.0, 4.0, 9.0, 10.0])
    # percent grid for changes, bounded below at -100%: -0.305 -> -0.30 / -0.31; -0.999 -> -0.99 (and -1.00)
    np.testing.assert_allclose(candidate_values(np.array([-0.305, -0.999]), 0.01, -1.0), [-1.0, -0.99, -0.31, -0.30])
    assert match_features(["login_7d", "login_trend_30_60", "tenure_days"], ["login_*"]) == ["login_7d", "login_trend_30_60"]


def test_single_move_by_hand() -> None:
    # one stump, margin 0 at the root: leaf = sum(y - 0.5) / sum(0.25): left +1.5 / 0.75 = +2, right -2.
    # p(left) = sigma(2) = 0.8807971, p(right) = sigma(-2) = 0.1192029.
    booster = _stump(LOGIN_X, LOGIN_Y)
    assert {k: v.tolist() for k, v in split_thresholds(booster, FEATURES).items()} == {"logins_7d": [4.0]}
    model = ChurnModel(booster, FEATURES, {})
    rows = pd.DataFrame({"logins_7d": [1.0, 3.0], "tenure_days": [100.0, 100.0]}, index=[7, 9])
    search = search_for_model(model, SPECS, ["logins_7d"], threshold=0.5)
    out = counterfactual_columns(model, rows, model.predict_proba(rows), search, SPECS)
    assert list(out.index) == [7, 9]
    assert out.loc[7, "counterfactual"] == "If logins in the last 7 days rose from 1 to 4, the risk would fall from 88.1% to 11.9%"
    assert out.loc[7, "counterfactual_changes"] == [{"feature": "logins_7d", "from": 1.0, "to": 4.0}]
    assert out.loc[7, "counterfactual_probability"] == pytest.approx(0.1192029, abs=1e-6)
    assert bool(out.loc[9, "counterfactual_valid"])


def test_only_actionable_features_move_and_only_towards_lower_risk() -> None:
    # churn iff tenure < 150: logins never split, so with only logins actionable nothing can be proposed
    x = [[5, 100], [5, 120], [5, 140], [5, 160], [5, 180], [5, 200]]
    booster = _stump(x, LOGIN_Y)
    cf = CounterfactualSearch(booster, FEATURES, ["logins_7d"], 0.5).search(np.array([[5, 100]], dtype=np.float32))
    assert cf[0].moves == [] and not cf[0].valid
    # a model where *fewer* logins lowers risk: a feature declared "more is safer" (risk_direction -1) is only raised
    flipped = _stump(LOGIN_X, [0, 0, 0, 1, 1, 1])
    cf = CounterfactualSearch(flipped, FEATURES, ["logins_7d"], 0.5, steps={"logins_7d": 1.0},
                              directions={"logins_7d": -1}).search(np.array([[6, 100]], dtype=np.float32))
    assert cf[0].moves == [] and not cf[0].valid


def test_two_features_move_together_when_one_is_not_enough() -> None:
    # churn iff logins < 4 or tenure < 150 (here both actionable for the test): a customer low on both needs a pair
    rng = np.random.default_rng(0)
    x = rng.integers(0, 10, (400, 1)).astype(float)
    t = rng.integers(0, 300, (400, 1)).astype(float)
    X = np.hstack([x, t])
    y = ((X[:, 0] < 4) | (X[:, 1] < 150)).astype(int)
    booster = _stump(X.tolist(), y.tolist(), rounds=20, depth=2)
    search = CounterfactualSearch(booster, FEATURES, FEATURES, 0.5, steps={"logins_7d": 1.0, "tenure_days": 1.0},
                                  directions={"logins_7d": -1, "tenure_days": -1})
    cf = search.search(np.array([[1, 50]], dtype=np.float32))[0]
    assert cf.valid and sorted(m.feature for m in cf.moves) == ["logins_7d", "tenure_days"]
    moved = {m.feature: m.new for m in cf.moves}
    assert moved["logins_7d"] >= 4 and moved["tenure_days"] >= 150
    p = booster.inplace_predict(np.array([[moved["logins_7d"], moved["tenure_days"]]], dtype=np.float32))
    assert float(p[0]) == pytest.approx(cf.probability, abs=1e-6) and cf.probability < 0.5
