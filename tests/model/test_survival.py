"""The AFT survival model's curves: a known exponential case worked out by hand, a fit, and safe storage."""

from __future__ import annotations

import math

import numpy as np
import pytest
import xgboost as xgb

from model.survival import SurvivalModel


def _exponential(mean_days: float) -> tuple[SurvivalModel, np.ndarray]:
    """AFT with the extreme-value distribution and scale 1 is exactly exponential with mean exp(mu)."""
    return SurvivalModel(xgb.Booster(), "extreme", 1.0), np.array([math.log(mean_days)])


def test_exponential_churn_probability_median_and_expected_lifetime():
    model, mu = _exponential(100.0)
    # P(T <= t) = 1 - exp(-t / 100)
    np.testing.assert_allclose(model.churn_within(mu, 30), [1 - math.exp(-0.3)], rtol=1e-9)
    np.testing.assert_allclose(model.churn_within(mu, 100), [1 - math.exp(-1)], rtol=1e-9)
    np.testing.assert_allclose(model.median_days(mu), [100 * math.log(2)], rtol=1e-9)  # 69.31 days
    # restricted mean within 365 days: 100 * (1 - exp(-3.65)) = 97.40 days (trapezoid on 48 steps)
    np.testing.assert_allclose(model.expected_days(mu, 365.0), [100 * (1 - math.exp(-3.65))], rtol=2e-3)


def test_normal_and_logistic_medians_are_exp_mu():
    mu = np.array([math.log(45.0), math.log(400.0)])
    for dist in ("normal", "logistic"):
        m = SurvivalModel(xgb.Booster(), dist, 0.7)
        np.testing.assert_allclose(m.median_days(mu), [45.0, 400.0], rtol=1e-9)
        np.testing.assert_allclose(m.churn_within(mu, [45.0, 400.0]), [0.5, 0.5], atol=1e-12)


def test_discounting_lowers_expected_lifetime():
    model, mu = _exponential(1000.0)
    plain = model.expected_days(mu, 730.0)[0]
    discounted = model.expected_days(mu, 730.0, annual_discount=0.10)[0]
    assert 0 < discounted < plain < 730.0


def test_fit_on_simulated_exponential_data_recovers_ranking_and_scale(tmp_path):
    rng = np.random.default_rng(7)
    n = 3000
    x = rng.uniform(0, 1, n)
    mean = np.exp(3.0 + 2.0 * x)  # means from 20 to 148 days
    t = rng.exponential(mean)
    censor = 120.0  # administrative censoring at the data's end
    lower = np.minimum(t, censor)
    upper = np.where(t <= censor, lower, np.inf)
    d = xgb.DMatrix(x.reshape(-1, 1))
    d.set_float_info("label_lower_bound", lower)
    d.set_float_info("label_upper_bound", upper)
    params = {"objective": "survival:aft", "aft_loss_distribution": "extreme", "aft_loss_distribution_scale": 1.0,
              "max_depth": 2, "eta": 0.1, "seed": 0, "nthread": 1}
    model = SurvivalModel(xgb.train(params, d, 200), "extreme", 1.0)
    mu = model.mu(xgb.DMatrix(np.array([[0.1], [0.9]])))
    # true medians: ln2 * exp(3.2) = 17.0 and ln2 * exp(4.8) = 84.2 days
    np.testing.assert_allclose(model.median_days(mu), [17.0, 84.2], rtol=0.25)
    model.save(tmp_path)
    again = SurvivalModel.load(tmp_path)
    assert again is not None and again.distribution == "extreme"
    np.testing.assert_allclose(again.mu(xgb.DMatrix(np.array([[0.1], [0.9]]))), mu)
    assert {p.suffix for p in tmp_path.iterdir()} == {".json"}  # nothing executable stored


def test_load_returns_none_without_a_survival_part_and_rejects_unknown_distribution(tmp_path):
    assert SurvivalModel.load(tmp_path) is None
    (tmp_path / "survival_meta.json").write_text('{"distribution": "weird", "scale": 1}')
    xgb.train({"objective": "survival:aft"}, _tiny(), 1).save_model(tmp_path / "survival_booster.json")
    with pytest.raises(ValueError, match="unknown distribution"):
        SurvivalModel.load(tmp_path)


def _tiny() -> xgb.DMatrix:
    d = xgb.DMatrix(np.array([[0.0], [1.0]]))
    d.set_float_info("label_lower_bound", np.array([1.0, 2.0]))
    d.set_float_info("label_upper_bound", np.array([1.0, np.inf]))
    return d
