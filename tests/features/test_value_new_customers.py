"""New customers' revenue and lifetime value: a rate over the months they have been customers, and a segment
prior for those who have not paid yet (features.value.monthly_revenue_rate / first_month_prior)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.value import first_month_prior, monthly_revenue_rate

AS_OF = pd.Timestamp("2026-01-01")


def test_revenue_rate_divides_by_the_billing_months_a_customer_has_had():
    # signed up 400, 75, 40 and 10 days before the cutoff; each paid 30 in the 3-month window
    signup = pd.Series(AS_OF - pd.to_timedelta([400, 75, 40, 10], unit="D"))
    monthly = np.full(4, 30.0 / 3)  # spend in the window / 3
    got = monthly_revenue_rate(monthly, signup, AS_OF, 3)
    # billing months: 3 (capped), ceil(75/30.44)=3, ceil(40/30.44)=2, 1
    np.testing.assert_allclose(got, [10.0, 10.0, 15.0, 30.0])


def test_unpaid_first_month_customers_take_their_segment_median():
    customers = pd.DataFrame({
        "customer_id": list("ABCDEFG"),
        "signup_date": AS_OF - pd.to_timedelta([300, 300, 300, 300, 5, 5, 60], unit="D"),
        "plan": ["basic", "basic", "premium", "premium", "premium", "gold", "basic"],
    })
    monthly = np.array([8.0, 12.0, 20.0, 30.0, 0.0, 0.0, 0.0])
    population = np.ones(7, dtype=bool)
    got = first_month_prior(monthly, customers, population, AS_OF, ["plan"])
    # E: premium median 25; F: no paying gold customer -> median of all payers (8, 12, 20, 30) = 16;
    # G: 60 days in and still not paying -> a free account, stays 0
    np.testing.assert_allclose(got, [8.0, 12.0, 20.0, 30.0, 25.0, 16.0, 0.0])
    np.testing.assert_allclose(monthly, [8.0, 12.0, 20.0, 30.0, 0.0, 0.0, 0.0])  # input untouched


def test_prior_uses_only_customers_of_the_population():
    customers = pd.DataFrame({"customer_id": list("ABC"),
                              "signup_date": AS_OF - pd.to_timedelta([300, 300, 3], unit="D")})
    monthly = np.array([100.0, 10.0, 0.0])
    population = np.array([False, True, True])  # A is not scored at this cutoff
    np.testing.assert_allclose(first_month_prior(monthly, customers, population, AS_OF, []), [100.0, 10.0, 10.0])
