"""Tests for features.clv: RFM summary, BG/NBD + Gamma-Gamma, contractual CLV, segment retention."""

from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd
import pytest

from churn.timebase import DAYS_PER_MONTH as MONTH_DAYS
from features import clv
from features.clv import (
    BGNBDModel,
    CLVFitError,
    GammaGammaModel,
    contractual_clv,
    noncontractual_clv,
    rfm_summary,
    segment_monthly_retention,
)

AS_OF = pd.Timestamp("2024-01-29")  # a Monday; weeks run Monday..Sunday


def _transactions(rows: list[tuple[str, str, float]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": [r[0] for r in rows],
            "timestamp": pd.to_datetime([r[1] for r in rows]),
            "amount": [r[2] for r in rows],
        }
    )


HAND_ROWS = [
    # A: week of Jan 1 (10 + 5 summed), week of Jan 8 (20), week of Jan 22 (30)
    ("A", "2024-01-01 09:00", 10.0),
    ("A", "2024-01-03 18:30", 5.0),
    ("A", "2024-01-09 12:00", 20.0),
    ("A", "2024-01-24 08:00", 30.0),
    # B: one purchase, week of Jan 15
    ("B", "2024-01-16 10:00", 12.0),
    # C: two purchases in the week of Jan 22 -> one period
    ("C", "2024-01-22 07:00", 8.0),
    ("C", "2024-01-28 23:59", 4.0),
]
LATE_ROWS = [
    ("A", "2024-01-29 00:00", 100.0),  # exactly at as_of: excluded
    ("B", "2024-02-05 10:00", 50.0),  # after as_of
    ("F", "2024-02-01 10:00", 70.0),  # customer seen only after as_of
]

EXPECTED_WEEKLY = pd.DataFrame(
    {
        "frequency": [2.0, 0.0, 0.0],
        "recency": [3.0, 0.0, 0.0],
        "T": [4.0, 2.0, 1.0],
        "monetary_value": [25.0, 0.0, 0.0],
        "n_transactions": [4, 1, 2],
        "total_amount": [65.0, 12.0, 12.0],
    },
    index=pd.Index(["A", "B", "C"], name="customer_id"),
)


# --------------------------------------------------------------------------------------------------
# rfm_summary
# --------------------------------------------------------------------------------------------------


def test_rfm_summary_hand_table_weekly() -> None:
    out = rfm_summary(_transactions(HAND_ROWS), AS_OF)
    pd.testing.assert_frame_equal(out, EXPECTED_WEEKLY, check_index_type=False)


def test_rfm_summary_ignores_rows_at_or_after_as_of() -> None:
    out = rfm_summary(_transactions(HAND_ROWS + LATE_ROWS), AS_OF)
    pd.testing.assert_frame_equal(out, EXPECTED_WEEKLY, check_index_type=False)


def test_rfm_summary_daily_hand_table() -> None:
    out = rfm_summary(_transactions(HAND_ROWS), AS_OF, freq_days=1.0)
    expected = pd.DataFrame(
        {
            # A: days Jan 1, 3, 9, 24; C: Jan 22 and Jan 28 are different days
            "frequency": [3.0, 0.0, 1.0],
            "recency": [23.0, 0.0, 6.0],
            "T": [28.0, 13.0, 7.0],
            "monetary_value": [(5.0 + 20.0 + 30.0) / 3, 0.0, 4.0],
            "n_transactions": [4, 1, 2],
            "total_amount": [65.0, 12.0, 12.0],
        },
        index=pd.Index(["A", "B", "C"], name="customer_id"),
    )
    pd.testing.assert_frame_equal(out, expected, check_index_type=False)


def test_rfm_summary_customers_without_purchases() -> None:
    customers = pd.Index(["C", "A", "D", "E"])  # B dropped, D and E never bought
    first_purchase = pd.Series({"D": pd.Timestamp("2024-01-10"), "E": pd.NaT})
    out = rfm_summary(_transactions(HAND_ROWS), AS_OF, customers=customers, first_purchase=first_purchase)
    expected = pd.DataFrame(
        {
            "frequency": [0.0, 2.0, 0.0, 0.0],
            "recency": [0.0, 3.0, 0.0, 0.0],
            "T": [1.0, 4.0, 3.0, 0.0],  # D: week of Jan 8 -> week of Jan 29
            "monetary_value": [0.0, 25.0, 0.0, 0.0],
            "n_transactions": [2, 4, 0, 0],
            "total_amount": [12.0, 65.0, 0.0, 0.0],
        },
        index=pd.Index(["C", "A", "D", "E"], name="customer_id"),
    )
    pd.testing.assert_frame_equal(out, expected, check_index_type=False)


@pytest.mark.parametrize(
    ("freq_days", "lifetimes_freq", "as_of"),
    [
        (1.0, "D", AS_OF),
        (7.0, "W", AS_OF),
        (1.0, "D", pd.Timestamp("2024-01-24 12:00")),
        (7.0, "W", pd.Timestamp("2024-01-24 12:00")),
    ],
    ids=["daily", "weekly", "daily-midday-cutoff", "weekly-midweek-cutoff"],
)
def test_rfm_summary_matches_lifetimes(freq_days: float, lifetimes_freq: str, as_of: pd.Timestamp) -> None:
    from lifetimes.utils import summary_data_from_transaction_data

    tx = _transactions(HAND_ROWS + LATE_ROWS)
    ours = rfm_summary(tx, as_of, freq_days=freq_days)
    # lifetimes keeps rows inside the cutoff's period, so hand it only the rows before as_of
    ref = summary_data_from_transaction_data(
        tx[tx["timestamp"] < as_of],
        "customer_id",
        "timestamp",
        "amount",
        observation_period_end=as_of,
        freq=lifetimes_freq,
    ).sort_index()
    pd.testing.assert_frame_equal(ours[ref.columns], ref, check_index_type=False, check_names=False)


def test_rfm_summary_missing_column() -> None:
    with pytest.raises(ValueError, match=r"transactions: missing column\(s\) \['amount'\]"):
        rfm_summary(_transactions(HAND_ROWS).drop(columns="amount"), AS_OF)


# --------------------------------------------------------------------------------------------------
# BG/NBD and Gamma-Gamma on CDNOW
# --------------------------------------------------------------------------------------------------


def test_bgnbd_reproduces_cdnow_published_parameters() -> None:
    from lifetimes.datasets import load_cdnow_summary

    summary = load_cdnow_summary(index_col="ID")
    model = BGNBDModel().fit(summary)
    p = model.params_
    assert p["r"] == pytest.approx(0.243, abs=0.01)
    assert p["alpha"] == pytest.approx(4.414, abs=0.02)
    assert p["a"] == pytest.approx(0.793, abs=0.01)
    assert p["b"] == pytest.approx(2.426, abs=0.01)
    # Fader, Hardie and Lee (2005): x=2, t_x=30.43, T=38.86 -> 1.226 purchases in the next 39 weeks
    one = pd.DataFrame({"frequency": [2.0], "recency": [30.43], "T": [38.86]}, index=["x"])
    assert model.expected_purchases(one, 39).iloc[0] == pytest.approx(1.226, abs=0.01)
    alive = model.p_alive(summary)
    assert alive.index.equals(summary.index)
    assert ((alive >= 0) & (alive <= 1)).all()
    assert (alive[summary["frequency"] == 0] == 1).all()  # BG/NBD: no repeat purchase, no chance to drop out


def test_gamma_gamma_reproduces_cdnow_parameters() -> None:
    from lifetimes.datasets import load_cdnow_summary_data_with_monetary_value

    summary = load_cdnow_summary_data_with_monetary_value()
    model = GammaGammaModel().fit(summary)
    assert model.params_["p"] == pytest.approx(6.25, rel=0.01)
    assert model.params_["q"] == pytest.approx(3.74, rel=0.01)
    assert model.params_["v"] == pytest.approx(15.44, rel=0.01)
    spend = model.expected_spend(summary)
    pop = model.params_["v"] * model.params_["p"] / (model.params_["q"] - 1)
    assert spend[summary["frequency"] == 0].to_numpy() == pytest.approx(pop)


def test_models_refuse_to_predict_before_fit() -> None:
    one = pd.DataFrame({"frequency": [1.0], "recency": [1.0], "T": [2.0], "monetary_value": [5.0]})
    with pytest.raises(RuntimeError, match="not fitted"):
        BGNBDModel().p_alive(one)
    with pytest.raises(RuntimeError, match="not fitted"):
        GammaGammaModel().expected_spend(one)


def test_gamma_gamma_without_repeat_buyers_raises_fit_error() -> None:
    summary = pd.DataFrame({"frequency": [0.0, 0.0], "monetary_value": [0.0, 0.0]})
    with pytest.raises(CLVFitError, match="no repeat buyers"):
        GammaGammaModel().fit(summary)


# --------------------------------------------------------------------------------------------------
# noncontractual_clv
# --------------------------------------------------------------------------------------------------


def _simulate_transactions(n_customers: int, seed: int) -> tuple[pd.DataFrame, pd.Timestamp]:
    """BG/NBD-like purchases over 52 weeks: births in the first 20 weeks, Poisson buying, geometric dropout."""
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2023-01-02")
    rows: list[tuple[str, pd.Timestamp, float]] = []
    for i in range(n_customers):
        lam = rng.gamma(2.0, 0.15)  # purchases per week
        p_drop = rng.beta(1.0, 6.0)
        mean_spend = rng.gamma(4.0, 8.0)
        t = rng.uniform(0, 20)
        while t < 52:
            rows.append((f"c{i:03d}", start + pd.Timedelta(weeks=t), float(rng.gamma(5.0, mean_spend / 5.0))))
            if rng.random() < p_drop:
                break
            t += rng.exponential(1 / lam)
    return _transactions([(c, str(ts), a) for c, ts, a in rows]), start + pd.Timedelta(weeks=52)


@pytest.fixture(scope="module")
def simulated_summary() -> pd.DataFrame:
    tx, as_of = _simulate_transactions(300, seed=7)
    customers = pd.Index(sorted(tx["customer_id"].unique()) + ["never1", "never2"])
    first_purchase = pd.Series(
        {"never1": as_of - pd.Timedelta(days=30), "never2": as_of - pd.Timedelta(days=1)}
    )
    return rfm_summary(tx, as_of, customers=customers, first_purchase=first_purchase)


def test_noncontractual_clv_on_simulated_data(
    simulated_summary: pd.DataFrame, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="features.clv"):
        out = noncontractual_clv(simulated_summary)
    assert not caplog.records
    assert out.attrs["clv_method"] == "bgnbd_gamma_gamma"
    assert list(out.columns) == ["clv", "expected_purchases", "p_alive", "expected_spend"]
    assert out.index.equals(simulated_summary.index)
    assert np.isfinite(out.to_numpy()).all()
    assert (out["clv"] >= 0).all()
    assert ((out["p_alive"] >= 0) & (out["p_alive"] <= 1)).all()
    assert out.loc[["never1", "never2"], "clv"].gt(0).all()


def test_noncontractual_clv_discount_and_margin(simulated_summary: pd.DataFrame) -> None:
    flat = noncontractual_clv(simulated_summary, discount_rate_annual=0.0)
    # undiscounted: monthly purchases telescope back to the horizon total
    np.testing.assert_allclose(flat["clv"], flat["expected_spend"] * flat["expected_purchases"], rtol=1e-9)
    discounted = noncontractual_clv(simulated_summary, discount_rate_annual=0.10, margin=0.3)
    ratio = discounted["clv"] / (0.3 * flat["clv"])
    assert ratio.between(1 / 1.10, 1.0).all()


def test_noncontractual_clv_falls_back_with_few_repeat_buyers(caplog: pytest.LogCaptureFixture) -> None:
    summary = pd.DataFrame(
        {
            "frequency": [2.0, 1.0, 3.0] + [0.0] * 7,
            "recency": [8.0, 3.0, 20.0] + [0.0] * 7,
            "T": [10.0, 12.0, 30.0, 5.0, 8.0, 0.0, 15.0, 20.0, 25.0, 30.0],
            "monetary_value": [20.0, 15.0, 40.0] + [0.0] * 7,
        },
        index=pd.Index([f"k{i}" for i in range(10)], name="customer_id"),
    )
    with caplog.at_level(logging.WARNING, logger="features.clv"):
        out = noncontractual_clv(summary)
    assert any(
        "only 3 repeat buyers" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records
    )
    assert out.attrs["clv_method"] == "empirical"
    assert np.isfinite(out.to_numpy()).all()
    assert (out["clv"] >= 0).all()
    assert out["expected_spend"].tolist() == [20.0, 15.0, 40.0] + [25.0] * 7  # population mean for one-timers


def test_empirical_fallback_hand_computed(caplog: pytest.LogCaptureFixture) -> None:
    summary = pd.DataFrame(
        {"frequency": [2.0, 0.0], "recency": [8.0, 0.0], "T": [10.0, 10.0], "monetary_value": [20.0, 0.0]},
        index=pd.Index(["A", "B"], name="customer_id"),
    )
    with caplog.at_level(logging.WARNING, logger="features.clv"):
        out = noncontractual_clv(summary, horizon_days=70, discount_rate_annual=0.0)
    # pooled rate 2/20 = 0.1 per week; one month of pseudo-exposure = 30.4375 / 7 weeks
    pseudo = 30.4375 / 7
    rate_a = (2 + 0.1 * pseudo) / (10 + pseudo)
    rate_b = (0 + 0.1 * pseudo) / (10 + pseudo)
    alive_a, alive_b = math.exp(-rate_a * 2), math.exp(-rate_b * 10)
    assert out["p_alive"].tolist() == pytest.approx([alive_a, alive_b])
    assert out["expected_purchases"].tolist() == pytest.approx([rate_a * alive_a * 10, rate_b * alive_b * 10])
    assert out["expected_purchases"].tolist() == pytest.approx([1.208576, 0.223821], abs=1e-6)
    assert out["clv"].tolist() == pytest.approx([20 * 1.208576, 20 * 0.223821], abs=1e-4)


def test_noncontractual_clv_falls_back_when_fit_fails(
    simulated_summary: pd.DataFrame, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing_fit(self: BGNBDModel, summary: pd.DataFrame) -> BGNBDModel:
        raise CLVFitError("BG/NBD fit failed: did not converge")

    monkeypatch.setattr(clv.BGNBDModel, "fit", failing_fit)
    with caplog.at_level(logging.WARNING, logger="features.clv"):
        out = noncontractual_clv(simulated_summary)
    assert any("did not converge" in r.getMessage() for r in caplog.records)
    assert out.attrs["clv_method"] == "empirical"
    assert np.isfinite(out.to_numpy()).all()
    assert (out["clv"] >= 0).all()


# --------------------------------------------------------------------------------------------------
# contractual_clv
# --------------------------------------------------------------------------------------------------


def test_contractual_clv_hand_computed() -> None:
    revenue = pd.Series([100.0, 40.0, 10.0], index=pd.Index(["a", "b", "c"], name="customer_id"))
    retention = pd.Series({"c": 1.0, "a": 0.9, "b": 0.5})  # different order: aligned on the index
    # no discounting: 100 * (0.9 + 0.81 + 0.729); 40 * (0.5 + 0.25 + 0.125); 10 * 3
    out = contractual_clv(revenue, retention, horizon_months=3, discount_rate_annual=0.0)
    pd.testing.assert_series_equal(out, pd.Series([243.9, 35.0, 30.0], index=revenue.index, name="clv"))
    # with 10 % a year and 50 % margin: 50 * (0.9 / 1.1**(1/12) + 0.81 / 1.1**(2/12) + 0.729 / 1.1**(3/12))
    discounted = contractual_clv(revenue, 0.9, horizon_months=3, discount_rate_annual=0.10, margin=0.5)
    assert discounted["a"] == pytest.approx(120.097493, abs=1e-6)
    assert discounted["c"] == pytest.approx(120.097493 / 10, abs=1e-6)


def test_contractual_clv_rejects_bad_retention() -> None:
    with pytest.raises(ValueError, match=r"monthly_retention must lie in \[0, 1\]"):
        contractual_clv(pd.Series([1.0]), 1.2)


# --------------------------------------------------------------------------------------------------
# segment_monthly_retention
# --------------------------------------------------------------------------------------------------

RET_AS_OF = pd.Timestamp("2024-01-01")  # window [2023-01-01, 2024-01-01): 365 days


def _customers() -> pd.DataFrame:
    rows = [
        # id, plan, signup, churn  -> days of exposure in window, churn event?
        ("c1", "basic", "2022-06-01", None),  # 365, no
        ("c2", "basic", "2023-07-04", None),  # 181, no
        ("c3", "basic", "2022-01-01", "2023-03-02"),  # 60, yes
        ("c4", "basic", "2021-01-01", "2022-12-01"),  # 0 (churned before window), no
        ("c5", "premium", "2022-01-01", "2024-03-01"),  # 365, no (churn after as_of is unknown)
        ("c6", "premium", "2023-11-02", "2023-12-02"),  # 30, yes
        ("c7", "premium", "2024-02-01", None),  # 0 (signs up after as_of)
        ("c8", "premium", "2023-10-02", "2024-01-01"),  # 91, no (churn exactly at as_of)
    ]
    return pd.DataFrame(
        {
            "customer_id": [r[0] for r in rows],
            "plan": [r[1] for r in rows],
            "signup_date": pd.to_datetime([r[2] for r in rows]),
            "churn_date": pd.to_datetime([r[3] for r in rows]),
        }
    )


def test_segment_monthly_retention_without_shrinkage() -> None:
    out = segment_monthly_retention(_customers(), RET_AS_OF, ["plan"], min_exposure_months=0.0)
    basic = 1 - 1 / (606 / 30.4375)  # 1 churn over 365 + 181 + 60 days
    premium = 1 - 1 / (486 / 30.4375)  # 1 churn over 365 + 30 + 91 days
    expected = pd.Series(
        [basic] * 4 + [premium] * 4,
        index=pd.Index([f"c{i}" for i in range(1, 9)], name="customer_id"),
        name="monthly_retention",
    )
    pd.testing.assert_series_equal(out, expected, check_index_type=False)
    assert basic == pytest.approx(0.949773, abs=1e-6)
    assert premium == pytest.approx(0.937371, abs=1e-6)


def test_segment_monthly_retention_shrinks_toward_overall() -> None:
    out = segment_monthly_retention(_customers(), RET_AS_OF, ["plan"], min_exposure_months=10.0)
    overall = 2 / (1092 / MONTH_DAYS)
    basic = 1 - (1 + 10 * overall) / (606 / MONTH_DAYS + 10)
    premium = 1 - (1 + 10 * overall) / (486 / MONTH_DAYS + 10)
    assert out["c1"] == pytest.approx(basic)
    assert out["c5"] == pytest.approx(premium)
    assert 1 - 1 / (606 / MONTH_DAYS) > basic > 1 - overall  # pulled toward the overall rate
    no_segments = segment_monthly_retention(_customers(), RET_AS_OF, [], min_exposure_months=10.0)
    assert no_segments.to_numpy() == pytest.approx([1 - overall] * 8)


def test_segment_monthly_retention_never_uses_future_churn_dates() -> None:
    base = segment_monthly_retention(_customers(), RET_AS_OF, ["plan"])
    moved = _customers()
    moved.loc[moved["customer_id"] == "c5", "churn_date"] = pd.Timestamp("2026-05-17")  # was 2024-03-01
    moved.loc[moved["customer_id"] == "c8", "churn_date"] = pd.Timestamp("2024-01-02")  # was exactly as_of
    moved.loc[moved["customer_id"] == "c1", "churn_date"] = pd.Timestamp("2024-06-30")  # was never
    pd.testing.assert_series_equal(segment_monthly_retention(moved, RET_AS_OF, ["plan"]), base)
    # sanity: the same move to a date before as_of does change the result
    past = _customers()
    past.loc[past["customer_id"] == "c5", "churn_date"] = pd.Timestamp("2023-12-01")
    assert segment_monthly_retention(past, RET_AS_OF, ["plan"])["c5"] < base["c5"]
