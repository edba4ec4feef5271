"""The one place where configuration is loaded and validated.

A YAML file under ``configs/`` is read once, at the start of a command, into the pydantic models
below. Unknown keys are rejected so a typo never silently falls back to a default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from churn.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = Path("configs/default.yaml")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- data contract
class TableConfig(_Strict):
    """Where one table lives and how the user's column names map onto the contract's roles."""

    file: str
    columns: dict[str, str] = Field(default_factory=dict)
    attributes: list[str] = Field(default_factory=list)  # customers only: static columns used as features
    required: bool = False


CANONICAL_COLUMNS: dict[str, dict[str, bool]] = {
    # role -> {column role: required?}
    "customers": {"customer_id": True, "signup_date": True, "churn_date": False},
    "events": {"customer_id": True, "timestamp": True, "event_type": True, "value": False},
    "transactions": {"customer_id": True, "timestamp": True, "amount": True},
    "interactions": {
        "customer_id": True,
        "timestamp": True,
        "channel": False,
        "text": False,
        "rating": False,
        "category": False,
    },
}


class DataConfig(_Strict):
    tables: dict[str, TableConfig]
    date_format: str | None = None  # strftime format for all date columns; None = ISO / inferred

    @field_validator("tables")
    @classmethod
    def _known_tables(cls, v: dict[str, TableConfig]) -> dict[str, TableConfig]:
        unknown = set(v) - set(CANONICAL_COLUMNS)
        if unknown:
            raise ValueError(f"unknown table role(s) {sorted(unknown)}; known: {sorted(CANONICAL_COLUMNS)}")
        if "customers" not in v:
            raise ValueError("the 'customers' table is required")
        for role, tc in v.items():
            bad = set(tc.columns) - set(CANONICAL_COLUMNS[role])
            if bad:
                raise ValueError(
                    f"table '{role}': unknown column role(s) {sorted(bad)}; known: {sorted(CANONICAL_COLUMNS[role])}"
                )
        return v


class LabelConfig(_Strict):
    """Churned within (T, T + horizon]: by an explicit churn date, or by inactivity."""

    definition: Literal["churn_date", "inactivity"] = "churn_date"
    horizon_days: int = Field(30, ge=1)
    inactivity_days: int = Field(60, ge=1)


# --------------------------------------------------------------------------- features
class ValueTier(_Strict):
    name: str
    top_share: float = Field(gt=0, le=1)  # cumulative share of customers, ranked by lifetime value


class ClvConfig(_Strict):
    method: Literal["contractual", "noncontractual"] = "contractual"
    horizon_months: int = Field(24, ge=1)
    discount_rate_annual: float = Field(0.10, ge=0)
    margin: float = Field(1.0, gt=0, le=1)
    segment_columns: list[str] = Field(default_factory=list)  # contractual: retention estimated per segment
    revenue_months: int = Field(3, ge=1)  # contractual: monthly revenue = spend in the last N months / N


class LifecycleConfig(_Strict):
    new_days: int = 90
    dormant_days: int = 30
    lapsed_days: int = 60
    at_risk_drop: float = Field(0.5, gt=0, lt=1)  # activity rate fell by at least this share


class SentimentConfig(_Strict):
    scorer: str = "builtin"  # or "package.module:ClassName"
    negative_threshold: float = -0.3
    complaint_categories: list[str] = Field(default_factory=lambda: ["billing", "technical", "cancellation"])
    complaint_keywords: dict[str, list[str]] = Field(default_factory=dict)


class FeatureConfig(_Strict):
    windows_days: list[int] = Field(default_factory=lambda: [7, 30, 90])
    trend_recent_days: int = 30
    trend_baseline_days: int = 60
    event_types: list[str] | None = None  # None: every type seen before the cutoff
    lifecycle: LifecycleConfig = LifecycleConfig()
    sentiment: SentimentConfig = SentimentConfig()
    clv: ClvConfig = ClvConfig()
    value_tiers: list[ValueTier] = Field(
        default_factory=lambda: [
            ValueTier(name="platinum", top_share=0.01),
            ValueTier(name="gold", top_share=0.05),
            ValueTier(name="silver", top_share=0.20),
            ValueTier(name="bronze", top_share=1.0),
        ]
    )

    @model_validator(mode="after")
    def _check(self) -> FeatureConfig:
        shares = [t.top_share for t in self.value_tiers]
        if shares != sorted(shares) or shares[-1] != 1.0:
            raise ValueError("value_tiers: top_share must increase and the last tier must be 1.0")
        if max(self.windows_days) < self.trend_recent_days + self.trend_baseline_days:
            pass  # trends use their own windows
        return self


# --------------------------------------------------------------------------- training
class Economics(_Strict):
    """Retention campaign economics used by the profit curve and the alert budget."""

    contact_cost: float = Field(5.0, ge=0)
    incentive_cost: float = Field(20.0, ge=0)
    acceptance_rate: float = Field(0.3, ge=0, le=1)


class TuningConfig(_Strict):
    n_trials: int = Field(30, ge=1)
    timeout_s: float | None = 120.0
    early_stopping_rounds: int = 40
    max_boost_rounds: int = 600
    pruning: bool = True
    storage: str | None = "sqlite:///mlruns/optuna.db"  # None: in memory
    search_space: dict[str, dict[str, Any]] = Field(
        default_factory=lambda: {
            "eta": {"low": 0.01, "high": 0.3, "log": True},
            "max_depth": {"low": 2, "high": 8, "type": "int"},
            "min_child_weight": {"low": 1, "high": 50, "log": True},
            "subsample": {"low": 0.5, "high": 1.0},
            "colsample_bytree": {"low": 0.4, "high": 1.0},
            "lambda": {"low": 1e-3, "high": 30, "log": True},
            "alpha": {"low": 1e-3, "high": 10, "log": True},
            "gamma": {"low": 1e-3, "high": 5, "log": True},
        }
    )


class TrainingConfig(_Strict):
    n_cutoffs: int = Field(12, ge=3)  # monthly cutoffs ending at the latest one whose label window is observed
    cutoff_frequency: str = "MS"  # pandas offset alias: month starts
    valid_cutoffs: int = Field(1, ge=1)
    test_cutoffs: int = Field(1, ge=1)
    seed: int = 42
    calibration: Literal["isotonic", "platt", "none"] = "isotonic"
    n_threads: int = 2
    tuning: TuningConfig = TuningConfig()
    economics: Economics = Economics()
    segment_columns: list[str] = Field(default_factory=lambda: ["value_tier", "lifecycle_stage"])
    exclude_features: list[str] = Field(default_factory=list)


# --------------------------------------------------------------------------- mlflow & scoring
class MlflowConfig(_Strict):
    tracking_uri: str = "sqlite:///mlruns/mlflow.db"
    artifact_location: str = "mlruns/artifacts"
    experiment: str = "churn-early-warning"
    model_name: str = "churn-xgb"


class RiskTiers(_Strict):
    high: float = Field(0.30, gt=0, lt=1)
    medium: float = Field(0.12, gt=0, lt=1)

    @model_validator(mode="after")
    def _order(self) -> RiskTiers:
        if self.medium >= self.high:
            raise ValueError("risk_tiers: medium must be below high")
        return self


class ScoringConfig(_Strict):
    model_alias: str = "champion"
    risk_tiers: RiskTiers = RiskTiers()
    alert_min_tier: Literal["high", "medium", "low"] = "medium"
    max_alerts: int | None = None
    budget: float | None = 20000.0  # per campaign; None: contact every alert
    chunk_size: int = Field(200_000, ge=1000)
    playbooks: str = "configs/playbooks.yaml"
    top_reasons: int = 3
    report_top_n: int = 25
    pseudonymize_key: str | None = None


class Config(_Strict):
    data: DataConfig
    label: LabelConfig = LabelConfig()
    features: FeatureConfig = FeatureConfig()
    training: TrainingConfig = TrainingConfig()
    mlflow: MlflowConfig = MlflowConfig()
    scoring: ScoringConfig = ScoringConfig()
    source: str | None = None  # path the config was loaded from (filled in by load_config)


def resolve_config_path(path: str | Path | None) -> Path:
    """The config to load: ``path`` if given, else ``configs/default.yaml`` here or in the project."""
    if path is not None:
        return Path(path)
    if DEFAULT_CONFIG.exists():
        return DEFAULT_CONFIG
    return PROJECT_ROOT / DEFAULT_CONFIG


def resolve_path(path: str | Path) -> Path:
    """Resolve a path from a config: as given if it exists (relative to the working directory), else in the project."""
    p = Path(path)
    if p.is_absolute() or p.exists():
        return p
    alt = PROJECT_ROOT / p
    return alt if alt.exists() else p


def load_config(path: str | Path | None = None) -> Config:
    """Read and validate a YAML config; raise :class:`ConfigError` naming the file and the field."""
    p = resolve_config_path(path)
    if not p.exists():
        raise ConfigError(f"config file not found: {p} (pass --config FILE)")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: top level must be a mapping")
    raw["source"] = str(p)
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = ".".join(str(x) for x in err["loc"])
            lines.append(f"  {loc}: {err['msg']}")
        raise ConfigError(f"{p}: invalid configuration\n" + "\n".join(lines)) from exc
