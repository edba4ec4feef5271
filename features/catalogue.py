"""Feature catalogue: every feature's name, family, window, unit, reason template and risk direction.

Each family module returns its specs together with the values it computed (a :class:`FeatureBlock`),
so the catalogue is generated from the code that computes the features and cannot drift from it.
The catalogue is logged with every model and drives the plain-language reasons in alerts.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from churn.vocab import REASON_FAMILIES


@dataclass(frozen=True)
class FeatureSpec:
    """What one feature means and how to say it to an analyst."""

    name: str
    family: str
    group: str  # one idea (e.g. all login windows): explanations show a group once
    description: str
    unit: str  # count | days | rate_change | currency | score | share | category | minutes | ratio | rating | hours | flag
    window_days: int | None = None
    reason: str = ""  # template; fields: {value} {typical} {change} {abs_pct} {label}
    risk_direction: int = 0  # +1: higher raises risk; -1: higher lowers risk; 0: depends
    categorical: bool = False

    def __post_init__(self) -> None:
        if self.family not in REASON_FAMILIES:
            raise ValueError(f"feature {self.name}: unknown family {self.family}")


@dataclass
class FeatureBlock:
    """Values (index: customer row codes) and the specs describing each column."""

    frame: pd.DataFrame
    specs: list[FeatureSpec] = field(default_factory=list)

    def __post_init__(self) -> None:
        names = [s.name for s in self.specs]
        if list(self.frame.columns) != names:
            raise AssertionError(f"feature columns {list(self.frame.columns)} do not match specs {names}")


def catalogue_frame(specs: list[FeatureSpec]) -> pd.DataFrame:
    """The catalogue as a table (logged to MLflow as CSV and JSON)."""
    return pd.DataFrame([asdict(s) for s in specs])


def specs_from_frame(df: pd.DataFrame) -> list[FeatureSpec]:
    out = []
    for rec in df.to_dict("records"):
        rec = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in rec.items()}
        if rec.get("window_days") is not None:
            rec["window_days"] = int(rec["window_days"])
        rec["risk_direction"] = int(rec.get("risk_direction") or 0)
        rec["categorical"] = bool(rec.get("categorical"))
        rec["reason"] = rec.get("reason") or ""
        out.append(FeatureSpec(**rec))
    return out


def _fmt(value: float, unit: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if unit == "currency":
        return f"{value:,.0f}"
    if unit in ("share", "rate_change"):
        return f"{value * 100:.0f}%"
    if unit in ("score", "rating", "ratio"):
        return f"{value:.2f}".rstrip("0").rstrip(".") if abs(value) < 100 else f"{value:,.0f}"
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.1f}"


# What an empty value means, for features where "no value" is itself the story.
MISSING_REASONS = {
    "days_since_last_event": "No activity on record",
    "days_since_last_complaint": "No complaint on record",
    "days_since_last_interaction": "No support contact on record",
    "days_since_last_purchase": "No purchase or payment on record",
    "sentiment_latest": "No written message on record",
    "rating_latest": "No satisfaction rating on record",
}


def render_reason(spec: FeatureSpec, value: object, typical: object | None = None) -> str:
    """Fill a spec's template with one customer's value and the typical (median) customer's value."""
    if spec.categorical or isinstance(value, str):
        text = spec.reason or f"{spec.description}: {{label}}"
        return text.format(label=value, value=value, typical=typical, change="", abs_pct="")
    v = float(value) if value is not None and not pd.isna(value) else float("nan")
    t = float(typical) if typical is not None and not pd.isna(typical) else float("nan")
    if not math.isfinite(v):
        return MISSING_REASONS.get(spec.name, f"{spec.description}: not recorded")
    change = "fell" if v < 0 else "rose"
    template = spec.reason or f"{spec.description}: {{value}} (typical customer: {{typical}})"
    return template.format(
        value=_fmt(v, spec.unit),
        typical=_fmt(t, spec.unit),
        change=change,
        abs_pct=f"{abs(v) * 100:.0f}",
        label=_fmt(v, spec.unit),
    )


def count_by(codes: np.ndarray, n: int, weights: np.ndarray | None = None) -> np.ndarray:
    """Per-customer count (or weighted sum) via bincount; NaN weights count as 0."""
    if weights is not None:
        weights = np.nan_to_num(weights.astype(np.float64))
    return np.bincount(codes, weights=weights, minlength=n).astype(np.float64)


def rate_change(recent: np.ndarray, recent_days: int, base: np.ndarray, base_days: int) -> np.ndarray:
    """Per-day rate in the recent window relative to the baseline window, minus 1 (NaN if no baseline)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        r = (recent / recent_days) / (base / base_days) - 1.0
    r[base <= 0] = np.nan
    return r
