"""Tests for model.metrics: hand-made arrays with expected values worked out in comments."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, log_loss, roc_auc_score

from churn.errors import DataError
from model.metrics import (
    best_targeting,
    bootstrap_ci,
    classification_metrics,
    expected_calibration_error,
    expected_maximum_profit,
    lift_table,
    profit_curve,
    reliability_table,
    segment_metrics,
)

# --------------------------------------------------------------------------- calibration

# Bins of width 0.1: 0.05 -> bin 0; 0.15, 0.15 -> bin 1; 0.85 -> bin 8; 0.95 -> bin 9.
Y_CAL = np.array([0, 0, 1, 1, 1])
P_CAL = np.array([0.05, 0.15, 0.15, 0.85, 0.95])


def test_reliability_table_drops_empty_bins() -> None:
    expected = pd.DataFrame(
        {
            "bin": [0, 1, 8, 9],
            "p_mean": [0.05, 0.15, 0.85, 0.95],
            "y_rate": [0.0, 0.5, 1.0, 1.0],
            "count": [1, 2, 1, 1],
        }
    )
    pd.testing.assert_frame_equal(reliability_table(Y_CAL, P_CAL), expected, check_dtype=False)


def test_expected_calibration_error_by_hand() -> None:
    # |gap| per bin: 0.05, 0.35, 0.15, 0.05; weights 1/5, 2/5, 1/5, 1/5
    # ECE = (0.05 + 2 * 0.35 + 0.15 + 0.05) / 5 = 0.95 / 5 = 0.19
    assert expected_calibration_error(Y_CAL, P_CAL) == pytest.approx(0.19)


def test_bin_edges_are_left_closed_and_one_is_in_last_bin() -> None:
    # 0.3 belongs to [0.3, 0.4) despite 0.3 * 10 == 2.9999999999999996; 1.0 belongs to the last bin.
    table = reliability_table(np.array([0, 1]), np.array([0.3, 1.0]))
    assert table["bin"].tolist() == [3, 9]
    # Perfectly calibrated two-bin example: ECE 0 with 2 bins.
    assert expected_calibration_error(np.array([0, 1, 0, 1]), np.array([0.5, 0.5, 0.5, 0.5]), n_bins=2) == 0.0


def test_invalid_inputs_raise() -> None:
    with pytest.raises(ValueError, match="same length"):
        expected_calibration_error(np.array([0, 1]), np.array([0.5]))
    with pytest.raises(ValueError, match="only 0 and 1"):
        expected_calibration_error(np.array([0, 2]), np.array([0.5, 0.5]))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        expected_calibration_error(np.array([0, 1]), np.array([0.5, 1.5]))
    with pytest.raises(ValueError, match="NaN"):
        lift_table(np.array([0, 1]), np.array([np.nan, 0.5]))


# --------------------------------------------------------------------------- lift

# 10 customers; ranked by p descending the labels are 1, 1, 0, 1, 0, 0, 1, 0, 0, 0 (4 churners, base rate 0.4).
P_LIFT = np.array([0.30, 0.90, 0.05, 0.60, 0.80, 0.20, 0.50, 0.70, 0.10, 0.40])
Y_LIFT = np.array([1, 1, 0, 1, 1, 0, 0, 0, 0, 0])


def test_lift_table_ten_rows() -> None:
    table = lift_table(Y_LIFT, P_LIFT, fractions=(0.05, 0.10, 0.20, 0.50, 1.0))
    # f=0.05 -> ceil(0.5)=1 row: 1 churner; precision 1, lift 1/0.4 = 2.5, capture 1/4
    # f=0.10 -> 1 row: same
    # f=0.20 -> 2 rows: 2 churners; precision 1, lift 2.5, capture 0.5
    # f=0.50 -> 5 rows (labels 1,1,0,1,0): 3 churners; precision 0.6, lift 1.5, capture 0.75
    # f=1.00 -> 10 rows: 4 churners; precision 0.4, lift 1, capture 1
    expected = pd.DataFrame(
        {
            "fraction": [0.05, 0.10, 0.20, 0.50, 1.0],
            "n_targeted": [1, 1, 2, 5, 10],
            "churners_caught": [1, 1, 2, 3, 4],
            "precision": [1.0, 1.0, 1.0, 0.6, 0.4],
            "lift": [2.5, 2.5, 2.5, 1.5, 1.0],
            "capture": [0.25, 0.25, 0.5, 0.75, 1.0],
        }
    )
    pd.testing.assert_frame_equal(table, expected, check_dtype=False)


def test_lift_table_ties_keep_input_order() -> None:
    # All scores tie: the stable sort keeps row order, so the top 2 of 4 are rows 0 and 1 (labels 0, 1).
    table = lift_table(np.array([0, 1, 1, 0]), np.array([0.5, 0.5, 0.5, 0.5]), fractions=(0.25, 0.5))
    assert table["churners_caught"].tolist() == [0, 1]


def test_lift_table_no_churners_gives_nan_lift() -> None:
    table = lift_table(np.zeros(4), np.array([0.1, 0.2, 0.3, 0.4]), fractions=(0.5,))
    assert table["precision"].iloc[0] == 0.0
    assert math.isnan(table["lift"].iloc[0]) and math.isnan(table["capture"].iloc[0])


def test_lift_table_rejects_bad_fraction() -> None:
    with pytest.raises(ValueError, match="fractions"):
        lift_table(Y_LIFT, P_LIFT, fractions=(0.0,))


# --------------------------------------------------------------------------- profit


def test_profit_curve_four_customers() -> None:
    y = np.array([1, 0, 1, 0])
    p = np.array([0.9, 0.8, 0.3, 0.1])
    clv = np.array([100.0, 50.0, 200.0, 80.0])
    # contact 1, incentive 10, acceptance 0.5. Gain per customer in rank order:
    #   row 0 churner:     0.5 * (100 - 10) - 1 = 44
    #   row 1 non-churner: -(10 + 1)            = -11
    #   row 2 churner:     0.5 * (200 - 10) - 1 = 94
    #   row 3 non-churner:                        -11
    # cumulative profit for 0..4 targeted: 0, 44, 33, 127, 116; per customer (/4): 0, 11, 8.25, 31.75, 29
    curve = profit_curve(y, p, clv, contact_cost=1.0, incentive_cost=10.0, acceptance_rate=0.5, n_points=5)
    expected = pd.DataFrame(
        {
            "fraction": [0.0, 0.25, 0.5, 0.75, 1.0],
            "n_targeted": [0, 1, 2, 3, 4],
            "profit": [0.0, 44.0, 33.0, 127.0, 116.0],
            "profit_per_customer": [0.0, 11.0, 8.25, 31.75, 29.0],
        }
    )
    pd.testing.assert_frame_equal(curve, expected, check_dtype=False)
    assert best_targeting(curve) == {"fraction": 0.75, "n_targeted": 3, "profit": 127.0}


def test_profit_curve_scalar_clv_and_fraction_rounding() -> None:
    # 5 customers, scalar clv 50, contact 2, incentive 5, acceptance 0.4.
    # churner gain 0.4 * (50 - 5) - 2 = 16; non-churner gain -7. Rank order labels: 1, 1, 0, 0, 1.
    # cumulative: 0, 16, 32, 25, 18, 34. With 3 points f = 0, 0.5, 1 -> n = 0, ceil(2.5)=3, 5.
    y = np.array([0, 1, 1, 0, 1])
    p = np.array([0.6, 0.9, 0.8, 0.5, 0.1])
    curve = profit_curve(y, p, 50.0, contact_cost=2.0, incentive_cost=5.0, acceptance_rate=0.4, n_points=3)
    assert curve["n_targeted"].tolist() == [0, 3, 5]
    assert curve["profit"].tolist() == pytest.approx([0.0, 25.0, 34.0])
    assert best_targeting(curve) == {"fraction": 1.0, "n_targeted": 5, "profit": 34.0}


def test_best_targeting_prefers_smallest_campaign_on_ties() -> None:
    curve = pd.DataFrame({"fraction": [0.0, 0.5, 1.0], "n_targeted": [0, 1, 2], "profit": [0.0, 0.0, -3.0]})
    assert best_targeting(curve) == {"fraction": 0.0, "n_targeted": 0, "profit": 0.0}


# --------------------------------------------------------------------------- EMP

Y_EMP = np.array([1, 1, 1, 1, 1, 0, 0, 0, 0, 0])


def test_emp_perfect_ranking_matches_closed_form() -> None:
    # Perfect ranking: target exactly the churners whenever gamma * (200 - 10) - 1 > 0, i.e. gamma > 1/190,
    # which holds for essentially all of Beta(6, 14) (mass below 1/190 is ~1e-10).
    # EMP = pi_churn * E[190 * gamma - 1] = 0.5 * (190 * 6/20 - 1) = 0.5 * 56 = 28; targeted fraction 0.5.
    p = np.linspace(0.9, 0.0, 10)
    out = expected_maximum_profit(Y_EMP, p, clv=200.0, incentive_cost=10.0, contact_cost=1.0)
    assert out["emp"] == pytest.approx(28.0, rel=1e-3)
    assert out["fraction"] == pytest.approx(0.5, abs=1e-6)


def test_emp_perfect_beats_random_and_is_non_negative() -> None:
    perfect = expected_maximum_profit(
        Y_EMP, np.linspace(0.9, 0.0, 10), clv=200.0, incentive_cost=10.0, contact_cost=1.0
    )
    # A constant score cannot separate anyone: the only choices are "nobody" and "everybody".
    # Everybody: 0.5 * (190 * gamma - 1) - 0.5 * 11 = 95 * gamma - 6 > 0 for gamma > 0.063: EMP ~ 95 * 0.3 - 6 = 22.5.
    constant = expected_maximum_profit(
        Y_EMP, np.full(10, 0.5), clv=200.0, incentive_cost=10.0, contact_cost=1.0
    )
    assert constant["emp"] == pytest.approx(22.5, rel=1e-2)
    assert perfect["emp"] > constant["emp"] >= 0.0
    # Incentive so costly that no campaign pays: EMP is exactly 0 (target nobody).
    hopeless = expected_maximum_profit(
        Y_EMP, np.full(10, 0.5), clv=200.0, incentive_cost=500.0, contact_cost=1.0
    )
    assert hopeless == {"emp": 0.0, "fraction": 0.0}


# --------------------------------------------------------------------------- summary metrics

Y_CLS = np.array([0, 0, 1, 1, 0, 1, 0, 0])
P_CLS = np.array([0.1, 0.4, 0.35, 0.8, 0.2, 0.9, 0.6, 0.05])


def test_classification_metrics_match_sklearn() -> None:
    m = classification_metrics(Y_CLS, P_CLS)
    # AUC by hand: positives {0.35, 0.8, 0.9} vs negatives {0.1, 0.4, 0.2, 0.6, 0.05}:
    # 0.35 beats 3 of 5, 0.8 and 0.9 beat all 5 -> 13 / 15.
    assert m["roc_auc"] == pytest.approx(13 / 15)
    assert m["roc_auc"] == pytest.approx(roc_auc_score(Y_CLS, P_CLS))
    assert m["pr_auc"] == pytest.approx(average_precision_score(Y_CLS, P_CLS))
    assert m["log_loss"] == pytest.approx(log_loss(Y_CLS, P_CLS))
    # Brier: (0.01 + 0.16 + 0.4225 + 0.04 + 0.04 + 0.01 + 0.36 + 0.0025) / 8 = 1.045 / 8
    assert m["brier"] == pytest.approx(1.045 / 8)
    assert m["ece"] == pytest.approx(expected_calibration_error(Y_CLS, P_CLS))
    assert m["base_rate"] == pytest.approx(3 / 8)
    assert m["n"] == 8 and m["n_positive"] == 3


def test_classification_metrics_one_class_gives_nan_auc() -> None:
    m = classification_metrics(np.zeros(4), np.array([0.1, 0.2, 0.3, 0.4]))
    assert math.isnan(m["roc_auc"]) and math.isnan(m["pr_auc"])
    # Brier (0.01 + 0.04 + 0.09 + 0.16) / 4 = 0.075; log loss -mean(ln(1 - p)) is finite.
    assert m["brier"] == pytest.approx(0.075)
    assert m["log_loss"] == pytest.approx(-np.mean(np.log([0.9, 0.8, 0.7, 0.6])))
    assert m["n_positive"] == 0 and m["base_rate"] == 0.0


# --------------------------------------------------------------------------- segments


def _segment_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "plan": ["A"] * 6 + ["B"] * 4,
            "region": ["north"] * 10,
            "y": [1, 0, 1, 0, 0, 0, 1, 0, 0, 1],
            "p": [0.9, 0.1, 0.8, 0.3, 0.2, 0.4, 0.6, 0.7, 0.2, 0.5],
        }
    )


def test_segment_metrics_rows_and_reliable_flag() -> None:
    out = segment_metrics(_segment_frame(), "y", "p", ["plan", "region"], min_rows=5)
    assert out.columns.tolist() == [
        "segment",
        "value",
        "n",
        "base_rate",
        "roc_auc",
        "pr_auc",
        "brier",
        "lift_at_10",
        "reliable",
    ]
    assert list(zip(out["segment"], out["value"], strict=True)) == [
        ("plan", "A"),
        ("plan", "B"),
        ("region", "north"),
    ]
    a, b = out.iloc[0], out.iloc[1]
    # Plan A: y 1,0,1,0,0,0 with p .9,.1,.8,.3,.2,.4 -> perfect ranking: AUC 1, AP 1.
    # Brier (.01 + .01 + .04 + .09 + .04 + .16) / 6 = .35 / 6; top ceil(0.6)=1 is a churner: lift 1 / (2/6) = 3.
    assert (a["n"], a["base_rate"], a["roc_auc"], a["pr_auc"]) == (6, pytest.approx(2 / 6), 1.0, 1.0)
    assert a["brier"] == pytest.approx(0.35 / 6)
    assert a["lift_at_10"] == pytest.approx(3.0)
    assert bool(a["reliable"]) is True
    # Plan B: y 1,0,0,1 with p .6,.7,.2,.5. AUC: (.6>.7 no, .6>.2 yes, .5>.7 no, .5>.2 yes) = 2/4.
    # AP: ranked labels 0,1,1,0 -> (1/2 + 2/3) / 2 = 7/12. Brier (.16 + .49 + .04 + .25) / 4 = .235.
    # Top ceil(0.4)=1 customer (p .7) did not churn: lift 0. Only 4 rows < 5 -> unreliable, kept.
    assert (b["n"], b["base_rate"], b["roc_auc"]) == (4, 0.5, 0.5)
    assert b["pr_auc"] == pytest.approx(7 / 12)
    assert b["brier"] == pytest.approx(0.235)
    assert b["lift_at_10"] == 0.0
    assert bool(b["reliable"]) is False
    assert out.iloc[2]["n"] == 10 and bool(out.iloc[2]["reliable"]) is True


def test_segment_metrics_single_class_segment_and_missing_column() -> None:
    df = pd.DataFrame({"seg": ["x", "x", "y", "y"], "y": [0, 0, 1, 0], "p": [0.2, 0.3, 0.7, 0.1]})
    out = segment_metrics(df, "y", "p", ["seg"], min_rows=1)
    assert math.isnan(out.iloc[0]["roc_auc"]) and math.isnan(out.iloc[0]["lift_at_10"])
    assert out.iloc[1]["roc_auc"] == 1.0
    with pytest.raises(DataError, match="nope"):
        segment_metrics(df, "y", "p", ["nope"])


# --------------------------------------------------------------------------- bootstrap


def test_bootstrap_ci_brackets_point_and_is_deterministic() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 200)
    p = np.clip(0.3 * y + rng.uniform(0, 0.7, 200), 0, 1)
    point = roc_auc_score(y, p)
    lo, hi = bootstrap_ci(y, p, roc_auc_score, n_boot=100, seed=3)
    assert lo < point < hi
    assert (lo, hi) == bootstrap_ci(y, p, roc_auc_score, n_boot=100, seed=3)
    narrow = bootstrap_ci(y, p, roc_auc_score, n_boot=100, seed=3, level=0.5)
    assert lo <= narrow[0] <= narrow[1] <= hi


def test_bootstrap_ci_constant_metric_and_undefined_metric() -> None:
    y = np.array([0, 1, 0, 1])
    # p == y: Brier is 0 on every resample -> (0, 0).
    assert bootstrap_ci(y, y.astype(float), lambda a, b: float(np.mean((a - b) ** 2)), n_boot=20) == (
        0.0,
        0.0,
    )
    # AUC is undefined on a single-class sample: every resample raises -> (NaN, NaN).
    lo, hi = bootstrap_ci(np.zeros(4), np.array([0.1, 0.2, 0.3, 0.4]), roc_auc_score, n_boot=10)
    assert math.isnan(lo) and math.isnan(hi)


def test_emp_blocked_computation_matches(monkeypatch: pytest.MonkeyPatch) -> None:
    import model.metrics as ev

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 50)
    p = rng.uniform(size=50)
    whole = expected_maximum_profit(y, p, clv=200.0, incentive_cost=10.0, contact_cost=1.0)
    monkeypatch.setattr(ev, "_EMP_BLOCK_CELLS", 120)  # 2 gamma cells per block with 51 cuts
    assert expected_maximum_profit(y, p, clv=200.0, incentive_cost=10.0, contact_cost=1.0) == pytest.approx(
        whole
    )
