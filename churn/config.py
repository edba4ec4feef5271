"""The one place where configuration is loaded and validated.

A YAML file under ``configs/`` is read once, at the start of a command, into the pydantic models
below. Unknown keys are rejected so a typo never silently falls back to a default.
"""

from __future__ import annotations

from datetime import date
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
class LookupConfig(_Strict):
    """Replace the codes in one column by names read from a small lookup file (e.g. event_type_id -> name).

    ``file`` is found like a table (exact name or stem + known suffix) in the data folder.
    ``on_missing``: a code absent from the lookup is an error, is kept as the code itself, or becomes missing.
    """

    file: str
    key: str
    value: str
    on_missing: Literal["error", "keep", "missing"] = "error"


class JoinConfig(_Strict):
    """Another file whose columns are added to the customers table (a many-to-one left join).

    ``key``: key column(s) present in the table assembled so far; ``right_key``: their names in the joined
    file when they differ. (Not ``on``: YAML reads a bare ``on`` as ``true``.) Keys are matched as text,
    so 90001 (int) matches "90001". ``columns``: the columns to take (default: all but the key); a column
    the assembled table already has is kept from the earlier file. Every row must find a match unless
    ``allow_missing`` (then its new columns are missing).
    """

    file: str
    key: str | list[str]
    right_key: str | list[str] | None = None
    columns: list[str] | None = None
    allow_missing: bool = False

    @property
    def left_keys(self) -> list[str]:
        return [self.key] if isinstance(self.key, str) else list(self.key)

    @property
    def right_keys(self) -> list[str]:
        if self.right_key is None:
            return self.left_keys
        return [self.right_key] if isinstance(self.right_key, str) else list(self.right_key)

    @model_validator(mode="after")
    def _check(self) -> JoinConfig:
        if not self.left_keys or len(self.left_keys) != len(self.right_keys):
            raise ValueError("join: 'key' and 'right_key' need the same, non-zero number of key columns")
        return self


class DerivedColumn(_Strict):
    """A numeric customer attribute computed from a date column, e.g. age from a date of birth.

    Exactly one of ``years_since`` / ``days_since`` names the date column; ``as_of`` is a date or
    ``data_start`` / ``data_end`` (of the loaded tables). Years are whole years (like an age). The value is
    static, so it is computed once; a date at ``as_of`` keeps features point-in-time.
    """

    years_since: str | None = None
    days_since: str | None = None
    as_of: date | Literal["data_start", "data_end"] = "data_start"

    @property
    def source(self) -> str:
        return self.years_since or self.days_since or ""

    @model_validator(mode="after")
    def _one_source(self) -> DerivedColumn:
        if (self.years_since is None) == (self.days_since is None):
            raise ValueError("derived column: give exactly one of 'years_since' or 'days_since'")
        return self


class SubscriptionDerive(_Strict):
    """What the loader derives from the ``subscriptions`` table.

    Each flag: ``null`` (default) = derive only when the data lacks it (no signup_date / churn_date
    column in customers, no transactions table); ``true`` = always derive (replacing the data's);
    ``false`` = never. Rows whose start is within ``renewal_grace_days`` of the end of the customer's
    earlier rows continue one subscription run (a renewal, not a churn).
    """

    signup_date: bool | None = None  # first start_date
    churn_date: bool | None = None  # end of the final run, if it ends before the data's end
    transactions: bool | None = None  # one payment of `amount` at every start_date
    renewal_grace_days: int = Field(30, ge=0)


class TableConfig(_Strict):
    """Where one table lives and how the user's column names map onto the contract's roles."""

    file: str
    columns: dict[str, str] = Field(default_factory=dict)
    # customers only: static columns used as features; "auto" = every column that is not a role column,
    # the snapshot label, excluded, a derived column's source, constant, or identifier-like text
    attributes: list[str] | Literal["auto"] = Field(default_factory=list)
    required: bool = False
    date_format: str | None = None  # this table's strftime format (default: data.date_format)
    lookups: dict[str, LookupConfig] = Field(default_factory=dict)  # raw column -> code lookup
    joins: list[JoinConfig] = Field(default_factory=list)  # customers only: files joined onto it, in order
    exclude: list[str] = Field(default_factory=list)  # raw columns dropped on load (leaks, identifiers)
    derived: dict[str, DerivedColumn] = Field(default_factory=dict)  # customers only: new numeric attributes
    derive: SubscriptionDerive | None = None  # subscriptions only: derive signup/churn dates, transactions

    @property
    def auto_attributes(self) -> bool:
        return self.attributes == "auto"

    @model_validator(mode="after")
    def _check(self) -> TableConfig:
        if not self.auto_attributes:
            both = sorted(set(self.attributes) & set(self.exclude))
            if both:
                raise ValueError(f"column(s) {both} are both attributes and excluded")
            clash = sorted(set(self.attributes) & set(self.derived))
            if clash:
                raise ValueError(f"derived column(s) {clash} clash with attributes of the same name")
        return self


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
        "response_hours": False,  # hours to first response (non-negative)
        "resolution_hours": False,  # hours to resolution (non-negative)
    },
    # one row per billing period (or contract); end_date may be empty for an open-ended subscription
    "subscriptions": {"customer_id": True, "start_date": True, "end_date": True, "amount": False},
    # campaign history (features.treatments): one row per contacted or held-out customer; group treated|control
    "treatments": {"customer_id": True, "timestamp": True, "campaign_id": True, "playbook_id": True, "group": True},
}


class DataConfig(_Strict):
    tables: dict[str, TableConfig]
    date_format: str | None = None  # strftime format for all date columns; None = ISO / inferred
    # the moment up to which the data is complete (e.g. a simulation's end, an export date): overrides
    # the latest record as Tables.data_end (so training cutoffs keep T + horizon <= it), and subscriptions
    # ending at or after it are censored (no churn date)
    observed_until: date | None = None

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
            if role != "customers":
                for key in ("joins", "derived"):
                    if getattr(tc, key):
                        raise ValueError(f"table '{role}': '{key}' is only supported on the customers table")
                if tc.auto_attributes:
                    raise ValueError(f"table '{role}': 'attributes: auto' is only supported on the customers table")
            if tc.derive is not None and role != "subscriptions":
                raise ValueError(f"table '{role}': 'derive' is only supported on the subscriptions table")
        return v


class LabelConfig(_Strict):
    """Churned within (T, T + horizon]: by an explicit churn date, or by inactivity.

    ``snapshot``: the data carries its own 0/1 label (``column``, a customers column, after joins) and
    has no time axis: no cutoffs, no out-of-time split (see ``training.snapshot``). Text labels count as
    churn when they are in ``positive_values`` (default: yes / true / 1 / churned, any case).
    """

    definition: Literal["churn_date", "inactivity", "snapshot"] = "churn_date"
    horizon_days: int = Field(30, ge=1)
    inactivity_days: int = Field(60, ge=1)
    column: str | None = None  # snapshot only: the label column
    positive_values: list[str] | None = None  # snapshot only: text values meaning "churned"

    @model_validator(mode="after")
    def _snapshot(self) -> LabelConfig:
        if self.definition == "snapshot" and not self.column:
            raise ValueError("label.definition 'snapshot' needs label.column (the 0/1 churn column)")
        if self.definition != "snapshot" and (self.column is not None or self.positive_values is not None):
            raise ValueError("label.column / label.positive_values are only used with definition 'snapshot'")
        return self


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
    # interactions in these categories, or matching these complaint_keywords groups, count as escalations
    escalation_categories: list[str] = Field(default_factory=lambda: ["cancellation"])
    rating_scale_max: int | None = None  # None: 10 when any rating before the cutoff is above 5, else 5


class FeatureConfig(_Strict):
    windows_days: list[int] = Field(default_factory=lambda: [7, 30, 90])
    trend_recent_days: int = 30
    trend_baseline_days: int = 60
    event_types: list[str] | None = None  # None: every type seen before the cutoff
    # [numerator, denominator] event types: one ratio feature per pair whose types both exist
    ratios: list[tuple[str, str]] = Field(default_factory=lambda: [("support_view", "login")])
    gap_window_days: int = Field(90, ge=2)  # mean gap between events and longest inactive stretch
    usage_low_share: float = Field(0.6, gt=0, lt=1)  # flag: recent usage time below this share of own average
    purchase_drop_threshold: float = Field(0.2, gt=0, lt=1)  # flag: purchase frequency fell by more than this
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
            "eta": {"low": 0.01, "high": 0.2, "log": True},
            "max_depth": {"low": 2, "high": 6, "type": "int"},
            "min_child_weight": {"low": 5, "high": 200, "log": True},
            "subsample": {"low": 0.5, "high": 1.0},
            "colsample_bytree": {"low": 0.3, "high": 1.0},
            "lambda": {"low": 1e-2, "high": 100, "log": True},
            "alpha": {"low": 1e-3, "high": 10, "log": True},
            "gamma": {"low": 1e-3, "high": 5, "log": True},
        }
    )


class UpliftConfig(_Strict):
    """The uplift model learned from the campaign history (training.uplift); see README "Decisions"."""

    enabled: bool = True  # train it when the data has a treatments table
    learner: Literal["t", "x", "s"] = "t"  # two-model, X-learner (cross-fitted) or single-model; see README
    test_campaigns: int = Field(3, ge=1)  # latest campaigns held out for the out-of-time evaluation
    min_group: int = Field(100, ge=1)  # fewer treated or control outcomes than this: priors, with a warning
    rounds: int = Field(200, ge=10)  # boosting rounds per model (fixed, regularised parameters)
    effect_weight: float = Field(1.0, ge=0.0, le=1.0)  # scoring: weight x uplift + (1 - weight) x prior


class TrainingConfig(_Strict):
    n_cutoffs: int = Field(12, ge=3)  # monthly cutoffs ending at the latest one whose label window is observed
    min_history_days: int = Field(90, ge=0)  # the first cutoff is at least this long after the data's start
    cutoff_frequency: str = "MS"  # pandas offset alias: month starts
    valid_cutoffs: int = Field(1, ge=1)
    test_cutoffs: int = Field(1, ge=1)
    seed: int = 42
    calibration: Literal["isotonic", "platt", "none"] = "isotonic"
    n_threads: int = 2
    tuning: TuningConfig = TuningConfig()
    economics: Economics = Economics()
    segment_columns: list[str] = Field(default_factory=lambda: ["value_tier", "lifecycle_stage"])
    backtest_windows: int = Field(3, ge=0)  # rolling-origin test windows (0: off)
    exclude_features: list[str] = Field(default_factory=list)
    uplift: UpliftConfig = UpliftConfig()


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
    explainer: Literal["fast", "xgboost"] = "fast"  # exact TreeSHAP either way; fast = precomputed tables
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

    @model_validator(mode="before")
    @classmethod
    def _exclude_snapshot_label(cls, raw: Any) -> Any:
        """A snapshot label column is added to the customers ``exclude`` list, so it can never become an
        attribute, even when the tables are loaded with the ``data`` section alone (the loader reads the
        label itself when given the whole Config)."""
        if not isinstance(raw, dict) or raw.get("data") is None:
            return raw
        label = raw.get("label")
        if isinstance(label, LabelConfig):
            definition, column = label.definition, label.column
        elif isinstance(label, dict):
            definition, column = label.get("definition"), label.get("column")
        else:
            return raw
        if definition != "snapshot" or not column:
            return raw
        data = raw["data"]
        data = data.model_dump() if isinstance(data, DataConfig) else dict(data)
        tables = dict(data.get("tables") or {})
        customers = tables.get("customers")
        if isinstance(customers, TableConfig):
            customers = customers.model_dump()
        if not isinstance(customers, dict):
            return raw
        exclude = list(customers.get("exclude") or [])
        if column not in exclude:
            tables["customers"] = {**customers, "exclude": [*exclude, column]}
            data["tables"] = tables
            raw = {**raw, "data": data}
        return raw


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
