"""Lifetime value when the data has no transactions table (snapshot tables such as Telco): from a configured
monthly-revenue column (contractual CLV), else a documented fallback value with a warning, never a silent zero."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from churn.config import FeatureConfig
from churn.errors import DataError
from features.value import value_without_transactions

# A snapshot's feature frame (profile features only): monthly charges, a text attribute, no value family.
FRAME = pd.DataFrame({"customer_id": ["a", "b", "c", "d"], "MonthlyCharges": [100.0, 50.0, 20.0, np.nan],
                      "Contract": pd.Categorical(["Two year", "Month-to-month", "One year", "Month-to-month"])})


def _cfg(**clv: object) -> FeatureConfig:
    return FeatureConfig.model_validate({"clv": {"horizon_months": 2, "discount_rate_annual": 0.0, "margin": 0.5,
                                                 **clv}})


def test_revenue_column_gives_the_contractual_clv():
    clv, tier = value_without_transactions(FRAME.iloc[:3], _cfg(revenue_column="MonthlyCharges"))
    # retention 1, no discount, 2 months, margin 0.5: 0.5 x revenue x 2
    assert clv.tolist() == pytest.approx([100.0, 50.0, 20.0])
    assert tier.tolist() == ["bronze", "bronze", "bronze"]  # 3 rows: the top one is 33% > silver's 20%


def test_value_tiers_rank_the_scored_rows_by_lifetime_value():
    frame = pd.DataFrame({"customer_id": list("abcde"), "rev": [10.0, 40.0, 30.0, 20.0, 50.0]})
    _, tier = value_without_transactions(frame, _cfg(revenue_column="rev"))
    assert tier.tolist() == ["bronze", "bronze", "bronze", "bronze", "silver"]  # top 20% (1 of 5): silver


def test_revenue_retention_and_discount_follow_the_contractual_formula():
    clv, _ = value_without_transactions(FRAME.iloc[:1], _cfg(revenue_column="MonthlyCharges", revenue_retention=0.9,
                                                             discount_rate_annual=0.1))
    d_m = 1.1 ** (1 / 12) - 1
    x = 0.9 / (1 + d_m)
    assert clv[0] == pytest.approx(0.5 * 100.0 * (x + x**2))


def test_missing_revenue_takes_the_median_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="features.value"):
        clv, _ = value_without_transactions(FRAME, _cfg(revenue_column="MonthlyCharges"))
    assert clv.tolist() == pytest.approx([100.0, 50.0, 20.0, 50.0])  # d: median monthly charge 50
    assert "1 of 4" in caplog.text and "MonthlyCharges" in caplog.text


def test_no_value_column_falls_back_to_the_documented_value_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="features.value"):
        clv, tier = value_without_transactions(FRAME, _cfg(fallback_value=250.0))
    assert clv.tolist() == [250.0, 250.0, 250.0, 250.0]  # never zero: risk alone ranks the alerts
    assert "features.clv.revenue_column" in caplog.text and "250" in caplog.text
    assert len(tier) == 4


@pytest.mark.parametrize(("column", "match"), [("Monthly", "not a column"), ("Contract", "not numeric")],
                         ids=["absent", "text"])
def test_bad_revenue_column_is_an_error_naming_table_and_column(column, match):
    with pytest.raises(DataError, match=match) as err:
        value_without_transactions(FRAME, _cfg(revenue_column=column))
    assert err.value.table == "customers" and err.value.column == column


def test_fallback_value_must_be_positive():
    with pytest.raises(ValueError, match="fallback_value"):
        _cfg(fallback_value=0)
