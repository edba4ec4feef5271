"""Feature catalogue: every feature's name, family, window, unit, reason template and risk direction.

Each family module returns its specs together with the values it computed (a :class:`FeatureBlock`),
so the catalogue is generated from the code that computes the features and cannot drift from it.
The catalogue is logged with every model and drives the plain-language reasons in alerts.
"""

from __future__ import annotations

import math
import re
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

    @classmethod
    def from_pairs(cls, pairs: Features) -> FeatureBlock:
        """A block from a family's ``(spec, values)`` pairs, in column order."""
        return cls(pd.DataFrame({spec.name: values for spec, values in pairs}), [spec for spec, _ in pairs])


# What a family's named step returns: its features as ``(spec, values)`` pairs (values: one per customer row).
Features = list[tuple[FeatureSpec, "np.ndarray | pd.Categorical"]]


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


def format_value(value: float, unit: str, currency: str = "") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if unit == "currency":
        amount = f"{value:,.0f}"
        return f"{currency} {amount}" if currency else amount
    if unit in ("share", "rate_change"):
        return f"{value * 100:.0f}%"
    if unit in ("score", "rating", "ratio"):
        return f"{value:.2f}".rstrip("0").rstrip(".") if abs(value) < 100 else f"{value:,.0f}"
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.1f}"


# What an empty value means, for features where "no value" is itself the story. Only these features may
# give a reason when their value is missing; any other missing value ("not recorded") is never a reason.
MISSING_REASONS = {
    "days_since_last_event": "No event in the activity log on record",
    "days_since_last_complaint": "No complaint on record",
    "days_since_last_interaction": "No support contact on record",
    "days_since_last_purchase": "No purchase or payment on record",
    "sentiment_latest": "No written message on record",
    "rating_latest": "No satisfaction rating on record",
}

# Plural nouns the templates put after a count, and their singular (for "1 event", "1 activity").
_SINGULAR = {"activities": "activity", "days": "day", "events": "event", "complaints": "complaint",
             "messages": "message", "contacts": "contact", "escalations": "escalation", "hours": "hour",
             "minutes": "minute", "purchases": "purchase", "payments": "payment", "sessions": "session",
             "logins": "login", "tickets": "ticket"}
_ONE_NOUN = re.compile(r"(?<![\d.,])\b1 ((?:'[^']*' )?)(\w+)( or (\w+))?")


def singular_after_one(text: str) -> str:
    """'1 events' -> '1 event', "1 'login' events" -> "1 'login' event", '1 purchases or payments' -> '1 purchase or payment'."""
    def fix(m: re.Match[str]) -> str:
        head = _SINGULAR.get(m.group(2), m.group(2))
        tail = f" or {_SINGULAR.get(m.group(4), m.group(4))}" if m.group(3) else ""
        return f"1 {m.group(1)}{head}{tail}"

    return _ONE_NOUN.sub(fix, text)


def missing_is_meaningful(spec: FeatureSpec) -> bool:
    """True when an empty value of this feature is itself a fact worth stating ("no purchase on record")."""
    return spec.name in MISSING_REASONS


def _is_missing(value: object) -> bool:
    return value is None or (not isinstance(value, str) and bool(pd.isna(value)))


def risk_side(spec: FeatureSpec, value: object, typical: object | None) -> int:
    """+1 when the value is on the risky side (of typical, of the customer's own past for a change, of zero for a
    flag), -1 on the safe side, 0 when the feature has no risky side or the value equals the reference.

    A meaningful missing ``days_since_*`` value means "never", i.e. an infinitely long time.
    """
    d = spec.risk_direction
    if d == 0 or spec.categorical or isinstance(value, str):
        return 0
    if _is_missing(value):
        return d if spec.unit == "days" and missing_is_meaningful(spec) else 0
    v = float(value)  # type: ignore[arg-type]
    if spec.unit == "flag":
        return d if v >= 0.5 else 0
    if spec.unit == "rate_change":
        ref = 0.0  # a change is read against the customer's own past: up or down
    elif _is_missing(typical):
        return 0
    else:
        ref = float(typical)  # type: ignore[arg-type]
    return int(np.sign(v - ref)) * d


def render_reason(spec: FeatureSpec, value: object, typical: object | None = None, currency: str = "") -> str:
    """Fill a spec's template with one customer's value and the typical (median) customer's value.

    Amounts (unit ``currency``) carry ``currency`` (``training.economics.currency``); a count of 1 takes the
    singular noun.
    """
    if spec.categorical or isinstance(value, str):
        text = spec.reason or f"{spec.description}: {{label}}"
        return text.format(label=value, value=value, typical=typical, change="", abs_pct="")
    v = float(value) if not _is_missing(value) else float("nan")  # type: ignore[arg-type]
    t = float(typical) if not _is_missing(typical) else float("nan")  # type: ignore[arg-type]
    if not math.isfinite(v):
        return MISSING_REASONS.get(spec.name, f"{spec.description}: not recorded")
    change = "fell" if v < 0 else "rose"
    template = spec.reason or f"{spec.description}: {{value}} (typical customer: {{typical}})"
    return singular_after_one(template.format(
        value=format_value(v, spec.unit, currency),
        typical=format_value(t, spec.unit, currency),
        change=change,
        abs_pct=f"{abs(v) * 100:.0f}",
        label=format_value(v, spec.unit, currency),
    ))


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
