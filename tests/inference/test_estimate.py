"""The label-free performance estimate (CBPE) and its recalibration on a labelled out-of-time window."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from inference.estimate import estimate_performance, expected_roc_auc
from model.recalibration import Recalibration, fit_recalibration, logit, sigmoid


def test_expected_roc_auc_by_hand() -> None:
    # pairs (i churns, j does not), weight p_i (1 - p_j), ranked right when p_i > p_j:
    # p = (0.2, 0.5, 0.8): right pairs (2,1) .8*.5=.4, (2,0) .8*.8=.64, (1,0) .5*.8=.4 -> 1.44;
    # wrong pairs (0,1) .2*.5=.1, (0,2) .2*.2=.04, (1,2) .5*.2=.1 -> 0.24; AUC = 1.44 / 1.68
    assert expected_roc_auc(np.array([0.2, 0.5, 0.8])) == pytest.approx(1.44 / 1.68)


def test_expected_roc_auc_ranks_by_the_scores_given() -> None:
    # same probabilities, reversed scores: the right pairs become the wrong ones, AUC = 0.24 / 1.68
    p = np.array([0.2, 0.5, 0.8])
    assert expected_roc_auc(p, scores=-p) == pytest.approx(0.24 / 1.68)


def _overconfident(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True churn probabilities q, the model's over-confident p = sigmoid(2 logit q), outcomes y ~ Bernoulli(q)."""
    rng = np.random.default_rng(seed)
    q = sigmoid(rng.normal(-2.0, 0.8, n))
    return q, sigmoid(2.0 * logit(q)), (rng.random(n) < q).astype(int)


def test_fit_recalibration_recovers_a_known_miscalibration() -> None:
    _, p, y = _overconfident(40_000, seed=1)
    rec = fit_recalibration(p, y, source="2025-01-01", n_boot=20, seed=0)
    # logit q = 0.5 logit p exactly: slope 0.5, intercept 0
    assert rec.slope == pytest.approx(0.5, abs=0.03)
    assert rec.intercept == pytest.approx(0.0, abs=0.06)
    assert (rec.n, rec.churners, rec.source) == (40_000, int(y.sum()), "2025-01-01")
    assert len(rec.draws) == 20


def test_calibrated_probabilities_give_slope_one() -> None:
    q, _, y = _overconfident(40_000, seed=2)
    rec = fit_recalibration(q, y, n_boot=0)
    assert rec.slope == pytest.approx(1.0, abs=0.05)
    assert rec.intercept == pytest.approx(0.0, abs=0.12)


def test_recalibration_corrects_the_estimate_where_raw_cbpe_is_wrong() -> None:
    """p = sigmoid(2 logit q): raw CBPE trusts the spread and is optimistic; recalibrated on a labelled
    earlier window it lands on the truth (the expected ROC-AUC under q) and near the realised value."""
    _, p_window, y_window = _overconfident(20_000, seed=3)  # last month with outcomes
    q, p, y = _overconfident(20_000, seed=4)  # the month being scored; y arrives later
    truth, realised = expected_roc_auc(q, scores=p), roc_auc_score(y, p)
    rec = fit_recalibration(p_window, y_window, n_boot=50, seed=0)
    raw = estimate_performance(p, p >= 0.6, n_draws=50, seed=0)
    fixed = estimate_performance(p, p >= 0.6, n_draws=50, seed=0, recalibration=rec)
    assert raw["roc_auc"]["estimate"] - truth > 0.05  # raw CBPE is wrong by more than 0.05
    assert abs(fixed["roc_auc"]["estimate"] - truth) < 0.01
    assert abs(fixed["roc_auc"]["estimate"] - realised) < 0.02
    assert fixed["roc_auc_uncorrected"] == pytest.approx(raw["roc_auc"]["estimate"])
    assert fixed["expected_churn_rate"] == pytest.approx(p.mean())
    assert fixed["expected_churn_rate_recalibrated"] == pytest.approx(q.mean(), abs=0.005)
    assert raw["expected_churn_rate_recalibrated"] is None
    assert fixed["roc_auc"]["low"] <= realised <= fixed["roc_auc"]["high"]
    assert not raw["roc_auc"]["low"] <= realised <= raw["roc_auc"]["high"]
    # precision of the alerts: the recalibrated probabilities' mean, close to the true rate among them
    alert = p >= 0.6
    assert fixed["precision_at_alert"]["estimate"] == pytest.approx(q[alert].mean(), abs=0.02)
    assert raw["precision_at_alert"]["estimate"] - q[alert].mean() > 0.05  # over-confident at the top
    assert fixed["recalibration"]["slope_low"] < fixed["recalibration"]["slope"] < fixed["recalibration"]["slope_high"]


def test_bootstrap_draws_widen_the_interval() -> None:
    _, p_window, y_window = _overconfident(3_000, seed=5)
    _, p, _ = _overconfident(3_000, seed=6)
    rec = replace(fit_recalibration(p_window, y_window, n_boot=200, seed=0), shrink=False)
    point_only = replace(rec, draws=())
    alert = p >= 0.3
    wide = estimate_performance(p, alert, n_draws=400, seed=0, recalibration=rec)["roc_auc"]
    narrow = estimate_performance(p, alert, n_draws=400, seed=0, recalibration=point_only)["roc_auc"]
    assert wide["estimate"] == narrow["estimate"]
    assert wide["high"] - wide["low"] > 1.2 * (narrow["high"] - narrow["low"])


def test_without_recalibration_the_estimate_trusts_p() -> None:
    p = np.array([0.1, 0.2, 0.3, 0.6, 0.9, 0.05, 0.4, 0.7])
    est = estimate_performance(p, p >= 0.5, n_draws=20, seed=0)
    assert est["recalibration"] is None and est["roc_auc_uncorrected"] is None
    assert est["roc_auc"]["estimate"] == pytest.approx(expected_roc_auc(p))
    assert est["precision_at_alert"]["estimate"] == pytest.approx((0.6 + 0.9 + 0.7) / 3)
    assert est["churners_in_alerts"]["estimate"] == pytest.approx(2.2)
    assert est["expected_churn_rate"] == pytest.approx(p.mean())


def test_recalibration_round_trips_as_plain_data() -> None:
    rec = Recalibration(0.8, -0.1, 100, 12, "2025-06-01", ((0.7, -0.2), (0.9, 0.0)))
    assert Recalibration.from_dict(rec.to_dict()) == rec


@pytest.mark.parametrize("bad, match", [
    ({"slope": "x", "intercept": 0, "n": 1, "churners": 1}, "estimate_recalibration.slope"),
    ({"slope": 1.0, "intercept": float("nan"), "n": 1, "churners": 1}, "estimate_recalibration.intercept"),
    ({"slope": 1.0, "intercept": 0.0, "n": 1, "churners": 1, "draws": [[1.0]]}, "draws"),
    ([1, 2], "must be a mapping"),
], ids=["slope-not-a-number", "intercept-nan", "draw-not-a-pair", "not-a-mapping"])
def test_recalibration_from_bad_data_names_the_key(bad: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Recalibration.from_dict(bad)


def test_recalibration_window_needs_both_classes() -> None:
    with pytest.raises(ValueError, match="churners and non-churners"):
        fit_recalibration(np.array([0.1, 0.2, 0.3]), np.array([0, 0, 0]))


def test_a_window_that_ranks_backwards_is_not_applied() -> None:
    # slope <= 0: the scores did not rank that window's outcomes; no monotone correction describes it
    p = np.array([0.1, 0.2, 0.3, 0.6, 0.9, 0.05, 0.4, 0.7])
    backwards = Recalibration(-0.5, 0.0, 100, 10, "2020-04-01", ((-0.6, 0.0), (-0.4, 0.0)))
    est = estimate_performance(p, p >= 0.5, n_draws=20, seed=0, recalibration=backwards)
    assert est["recalibration"]["applied"] is False and est["recalibration"]["window_slope"] == -0.5
    assert est["roc_auc"] == estimate_performance(p, p >= 0.5, n_draws=20, seed=0)["roc_auc"]


def test_shrinkage_by_hand() -> None:
    # slope 0.8, bootstrap slopes 0.7 and 0.9: var 0.01, (0.8 - 1)^2 = 0.04, weight 1 - 0.01 / 0.04 = 0.75
    rec = Recalibration(0.8, -0.4, 100, 10, "w", ((0.7, -0.2), (0.9, -0.6)))
    assert rec.weight == pytest.approx(0.75)
    assert rec.effective() == (pytest.approx(0.85), pytest.approx(-0.3))
    assert rec.apply(np.array([0.5]))[0] == pytest.approx(sigmoid(-0.3))
    assert replace(rec, shrink=False).effective() == (0.8, -0.4)
    # a deviation within the window's noise is dropped entirely; no draws: nothing to shrink by
    assert Recalibration(0.95, 0.1, 100, 10, "w", ((0.7, 0.0), (1.2, 0.0))).effective() == (1.0, 0.0)
    assert Recalibration(0.8, -0.4, 100, 10, "w").effective() == (0.8, -0.4)


def test_a_malformed_recalibration_in_a_model_is_a_model_format_error() -> None:
    from types import SimpleNamespace

    from inference.estimate import recalibration_for
    from model.artifact import ModelFormatError

    model = SimpleNamespace(meta={"estimate_recalibration": {"slope": "steep", "intercept": 0, "n": 1, "churners": 1}})
    with pytest.raises(ModelFormatError, match="meta.estimate_recalibration.slope must be a finite number"):
        recalibration_for(model)
    assert recalibration_for(model, enabled=False) is None
    assert recalibration_for(SimpleNamespace(meta={})) is None  # a model trained before the recalibration existed


def test_the_report_sentence_says_what_the_estimate_did() -> None:
    from inference.estimate import describe_recalibration

    noise = {"applied": True, "window": "training test window 2025-12-01", "churners": 124, "window_slope": 0.957,
             "slope": 1.0, "shrinkage_weight": 0.0, "slope_low": 0.86, "slope_high": 1.08}
    assert describe_recalibration({"recalibration": noise, "roc_auc_uncorrected": 0.795}) == (
        "Checked against the model's labelled out-of-time window (training test window 2025-12-01, 124 churners): "
        "calibration slope 0.96 there (90% range 0.86-1.08), within the window's noise, so no correction. "
        "The interval includes the correction's uncertainty.")
    shrunk = {**noise, "window_slope": 0.8, "slope": 0.94, "shrinkage_weight": 0.3}
    assert "applied as 0.94 (shrunk towards 1 by the window's noise); ROC-AUC 0.702 before the correction" in \
        describe_recalibration({"recalibration": shrunk, "roc_auc_uncorrected": 0.702})
    assert describe_recalibration({"recalibration": None}).startswith("The probabilities were taken as calibrated")
    assert describe_recalibration(None) is None


def test_the_interval_is_centred_on_the_estimate_whatever_the_shrinkage() -> None:
    # a window with a noisy slope (dropped: weight 0) and a large fitted intercept: the interval must still
    # contain the estimate, which uses the applied (identity) pair
    rng = np.random.default_rng(7)
    p = sigmoid(rng.normal(-2.0, 1.0, 2_000))
    draws = tuple((float(a), float(b)) for a, b in zip(rng.normal(0.95, 0.2, 100), rng.normal(0.8, 0.1, 100), strict=True))
    rec = Recalibration(0.95, 0.8, 500, 40, "w", draws)
    assert rec.weight == 0.0
    est = estimate_performance(p, p >= 0.3, n_draws=200, seed=0, recalibration=rec)
    for key in ("roc_auc", "precision_at_alert", "churners_in_alerts"):
        assert est[key]["low"] <= est[key]["estimate"] <= est[key]["high"], key
    assert est["precision_at_alert"]["estimate"] == pytest.approx(p[p >= 0.3].mean())
