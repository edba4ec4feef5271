"""One home for the shared names: risk tiers, value tiers, lifecycle stages and reason families.

Features produce these values, playbook rules match on them, alerts and the report show them; every
module takes the names from here so a rule can never name a stage or tier the features do not write.
"""

from __future__ import annotations

from typing import Literal

# Risk tiers, highest first. Their names are fixed; ``scoring.risk_tiers`` sets the thresholds of the top two.
RiskTier = Literal["high", "medium", "low"]
RISK_TIERS: tuple[str, ...] = ("high", "medium", "low")
RISK_ORDER: dict[str, int] = {"low": 0, "medium": 1, "high": 2}  # rank for "at least this tier"

# Value tiers, most valuable first: the names of ``features.value_tiers`` by default. They are configurable:
# code that must know them takes them from the config; these are the defaults.
DEFAULT_VALUE_TIERS: tuple[str, ...] = ("platinum", "gold", "silver", "bronze")

# Lifecycle stages in lifecycle order; this is also the category order of the ``lifecycle_stage`` feature
# (the model's categorical codes), so do not reorder it without retraining.
LifecycleStage = Literal["new", "active", "at_risk", "dormant", "lapsed"]
LIFECYCLE_STAGES: tuple[str, ...] = ("new", "active", "at_risk", "dormant", "lapsed")

# Families of reasons (and of features): what kind of signal a reason comes from.
ReasonFamily = Literal["behavioral", "sentiment", "value", "profile"]
REASON_FAMILIES: tuple[str, ...] = ("behavioral", "sentiment", "value", "profile")


# Urgency of an alert: its median time to churn (survival model) against ``scoring.urgency_days``.
Urgency = Literal["immediate", "soon", "later"]
URGENCIES: tuple[str, ...] = ("immediate", "soon", "later")
