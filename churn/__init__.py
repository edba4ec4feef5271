"""churn package."""
