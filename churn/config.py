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
from churn.vocab import DEFAULT_VALUE_TIERS, RiskTier

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


class UnionFile(_Strict):
    """One more file whose rows are appended to the table (a row union, e.g. an 80% and a 20% export).

    ``rename``: its column name -> the first file's name, for headers that differ. After renaming it must
    have exactly the first file's columns.
    """

    file: str
    rename: dict[str, str] = Field(default_factory=dict)


COLUMN_TYPES = ("numeric", "category", "text", "date")


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
    # the file's column name -> the name the config uses, applied first (a name absent from the file is skipped,
    # so one config reads exports whose headers vary, e.g. "International plan" vs "International_plan")
    rename: dict[str, str] = Field(default_factory=dict)
    union: list[UnionFile] = Field(default_factory=list)  # more files appended to this one (row union)
    # raw column -> numeric | category | text | date | date:<strftime format>; checked on load (a value that is
    # not a number in a numeric column is an error naming it); category/text keep codes like 0042 or 415 as text
    types: dict[str, str] = Field(default_factory=dict)
    na_values: list[str] = Field(default_factory=list)  # tokens meaning missing in any column, e.g. [" ", "?"]
    # events/transactions only: more columns as features. numeric -> sum and mean per window; a list of values
    # -> count of rows per value and window (e.g. {quantity: numeric, product: [shoes, bags]})
    extra_columns: dict[str, Literal["numeric"] | list[str]] = Field(default_factory=dict)

    @property
    def auto_attributes(self) -> bool:
        return self.attributes == "auto"

    @model_validator(mode="after")
    def _check(self) -> TableConfig:
        bad = {c: t for c, t in self.types.items() if t.split(":", 1)[0] not in COLUMN_TYPES
               or (":" in t and not t.startswith("date:"))}
        if bad:
            raise ValueError(f"types: unknown type(s) {bad}; known: {list(COLUMN_TYPES)} or 'date:<format>'")
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


class DataLimits(_Strict):
    """Plausibility limits the loader checks (``features/contract.py``); a value outside them is a DataError."""

    max_abs_amount: float = Field(1e12, gt=0)  # amounts, event values, hours: beyond this is a unit/export error
    rating_min: float = 0.0  # interaction ratings must lie in [rating_min, rating_max]
    rating_max: float = 10.0
    max_event_types: int = Field(200, ge=1)  # distinct event types (each becomes ~15 features)


class TableCacheConfig(_Strict):
    """The cache of validated, sorted tables (:mod:`features.table_cache`): Arrow IPC files, no pickle.

    Keyed by the input files' hash, the data/label config and the loader's code version; ``folder`` None:
    ``$CHURN_CACHE_DIR``, else ``$XDG_CACHE_HOME/churn/tables`` (``~/.cache/churn/tables``). ``churn --no-cache``
    or ``CHURN_NO_CACHE=1`` turn it off for one command. The oldest entries are evicted above ``max_mb``.
    """

    enabled: bool = True
    folder: str | None = None
    max_mb: float = Field(4096, gt=0)


class DataConfig(_Strict):
    tables: dict[str, TableConfig]
    limits: DataLimits = DataLimits()
    cache: TableCacheConfig = TableCacheConfig()
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
            if tc.extra_columns and role not in ("events", "transactions"):
                raise ValueError(f"table '{role}': 'extra_columns' is only supported on events and transactions")
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
    # who is scored (and trained on) at a cutoff T, separately from the label rule. Everyone signed up before T
    # (and, with churn_date, not churned by T) and: auto = today's rule (churn_date: nothing more, or a
    # subscription covering T when there is a subscriptions table; inactivity: active_within inactivity_days);
    # active_within = an event/transaction in [T - population_days, T) or signed up within it; ever_seen = any
    # event/transaction before T; signed_up = nothing more; subscription = a subscription row covers T
    population: Literal["auto", "active_within", "ever_seen", "signed_up", "subscription"] = "auto"
    population_days: int | None = Field(None, ge=1)  # active_within (default: inactivity_days)
    # the label window's end: inclusive = (T, T + N], a churn (inactivity: an event) exactly at T + N is inside it;
    # exclusive = (T, T + N), it is not (then an event exactly at T + N does not keep a customer)
    window_end: Literal["inclusive", "exclusive"] = "inclusive"
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
    # Without a transactions table (e.g. snapshot data), see features.value.value_without_transactions: the
    # lifetime value is the contractual CLV of this customers attribute of monthly revenue (e.g. MonthlyCharges)
    # with monthly retention ``revenue_retention`` (1: the value if the customer stays; the churn risk enters
    # through value_at_risk = P(churn) x lifetime value); with no such column every customer gets
    # ``fallback_value`` (a warning says so), so churn risk alone ranks the alerts.
    revenue_column: str | None = None
    revenue_retention: float = Field(1.0, ge=0, le=1)
    fallback_value: float = Field(1000.0, gt=0)  # in the playbooks' currency; should exceed contact costs
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
        default_factory=lambda: [ValueTier(name=name, top_share=share)
                                 for name, share in zip(DEFAULT_VALUE_TIERS, (0.01, 0.05, 0.20, 1.0), strict=True)]
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
    currency: str = Field("EUR", min_length=1, max_length=8)  # shown with every amount in reasons and the report


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


class SurvivalConfig(_Strict):
    """Time-to-churn model (XGBoost ``survival:aft``) trained next to the classifier on the same snapshots."""

    enabled: bool = True  # ignored (off) for snapshot labels, which have no time
    horizons_days: list[int] = Field(default_factory=lambda: [30, 90, 180], min_length=1)
    n_trials: int = Field(12, ge=1)
    timeout_s: float | None = 60.0
    max_boost_rounds: int = Field(400, ge=10)
    early_stopping_rounds: int = Field(30, ge=1)
    distributions: list[Literal["normal", "logistic", "extreme"]] = Field(
        default_factory=lambda: ["normal", "logistic", "extreme"], min_length=1)

    @field_validator("horizons_days")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if any(h <= 0 for h in v):
            raise ValueError("horizons must be positive numbers of days")
        return sorted(set(v))


class RefitConfig(_Strict):
    """The final model, after tuning on train -> validation (see ``training/refit.py``).

    ``enabled``: refit on every cutoff labelled before the test cutoff (train + validation + the cutoffs the
    tuning split embargoed); false keeps the tuned model (train cutoffs only, early-stopped on validation).
    ``rounds``: ``scaled`` = tuned best rounds x (rows refitted / rows tuned on); ``tuned`` = the tuned count.
    ``calibration_cutoffs``: the latest N labelled cutoffs before the test cutoff each get out-of-time
    predictions from a model fitted on the cutoffs labelled before it; the calibrator is fitted on them.
    ``include_test``: the registered model is refitted once more, on the test cutoff(s) too (its test metrics
    are then those of its sibling that had not seen them); false registers the evaluated model itself.
    """

    enabled: bool = True
    rounds: Literal["scaled", "tuned"] = "scaled"
    calibration_cutoffs: int = Field(2, ge=1)
    include_test: bool = False


class SamplingConfig(_Strict):
    """Tuning on a stratified, weighted sample of customers when the tuning table is large (training/sample.py).

    ``min_rows``: tuning (train-split) rows above which Optuna tunes on a sample; at or below it every row is
    used. ``customers``: customers in the sample, drawn from the train rows and, separately, from the
    validation rows (early stopping and the trial's AUC). The final model is always refitted on every row.
    """

    min_rows: int = Field(250_000, ge=1)
    customers: int = Field(25_000, ge=100)


class CutoffRange(_Strict):
    """Cutoffs from ``start`` to ``end`` (inclusive) every ``frequency`` (a pandas offset alias, e.g. MS, W-MON)."""

    start: date
    end: date
    frequency: str = "MS"


class SnapshotTrainingConfig(_Strict):
    """Snapshot data (``label.definition: snapshot``): cross-validated tuning and the registered model.

    ``duplicates``: rows identical in every feature and the label (an exported table's repeated rows):
    ``group`` keeps them but always in the same fold (no leak across folds), ``drop`` keeps one of each,
    ``keep`` treats them as independent (optimistic CV scores).
    """

    n_splits: int = Field(5, ge=2)
    duplicates: Literal["group", "drop", "keep"] = "group"


class UpliftConfig(_Strict):
    """The uplift model learned from the campaign history (training.uplift); see README "Decisions"."""

    enabled: bool = True  # train it when the data has a treatments table
    # shift (two-stage log-odds shift), two-model, X-learner (cross-fitted), single-model or R-learner; see README
    learner: Literal["shift", "t", "x", "s", "r"] = "shift"
    test_campaigns: int = Field(3, ge=1)  # latest campaigns held out for the out-of-time evaluation
    min_group: int = Field(100, ge=1)  # fewer treated or control outcomes than this: priors, with a warning
    rounds: int = Field(200, ge=10)  # boosting rounds per model (fixed, regularised parameters)
    effect_weight: float = Field(1.0, ge=0.0, le=1.0)  # scoring: weight x uplift + (1 - weight) x prior
    n_boot: int = Field(8, ge=0)  # bootstrap replicates (by customer): bagged effects and their uncertainty
    pessimism_z: float = Field(1.0, ge=0.0)  # scoring: decide on mean + z x sd of the replicates' effects
    # more contacted customers than this: the model learns from a seeded uniform sample of them (a random
    # sample of customers keeps the campaigns' randomisation; training time stays bounded at scale)
    max_customers: int | None = Field(25_000, ge=100)


class TrainingConfig(_Strict):
    # explicit cutoffs (a list of dates, or start/end/frequency); None: the latest n_cutoffs of the grid below
    cutoffs: list[date] | CutoffRange | None = None
    n_cutoffs: int = Field(12, ge=3)  # monthly cutoffs ending at the latest one whose label window is observed
    min_history_days: int = Field(90, ge=0)  # the first cutoff is at least this long after the data's start
    cutoff_frequency: str = "MS"  # pandas offset alias: month starts
    valid_cutoffs: int = Field(1, ge=1)
    test_cutoffs: int = Field(1, ge=1)
    seed: int = 42
    calibration: Literal["isotonic", "platt", "none"] = "platt"  # platt keeps the ranking
    isotonic_min_positives: int = Field(200, ge=1)  # fewer churners to calibrate on: isotonic falls back to platt
    # training rows whose label window (T, T+N] crosses a later split's first cutoff: "censor" keeps them with
    # the window cut at that cutoff (churn_date labels only; inactivity rows are dropped), "drop" drops the cutoff
    embargo: Literal["censor", "drop"] = "censor"
    refit: RefitConfig = RefitConfig()
    snapshot: SnapshotTrainingConfig = SnapshotTrainingConfig()
    n_threads: int = Field(2, ge=0)  # XGBoost threads; 0: every CPU of the machine (os.cpu_count())
    sampling: SamplingConfig = SamplingConfig()
    tuning: TuningConfig = TuningConfig()
    economics: Economics = Economics()
    segment_columns: list[str] = Field(default_factory=lambda: ["value_tier", "lifecycle_stage"])
    backtest_windows: int = Field(3, ge=0)  # rolling-origin test windows (0: off)
    exclude_features: list[str] = Field(default_factory=list)
    survival: SurvivalConfig = SurvivalConfig()
    uplift: UpliftConfig = UpliftConfig()

    @field_validator("n_threads")
    @classmethod
    def _all_cpus(cls, v: int) -> int:
        import os

        return v or (os.cpu_count() or 1)


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


# Activity, usage, recency of activity and open tickets: what a retention action can move. Never tenure, age,
# demographics, plan history, spend or value (outcomes, not levers).
DEFAULT_ACTIONABLE: tuple[str, ...] = (
    "events_*d", "active_days_*d", "activity_trend_*", "days_since_last_event", "longest_inactive_days_*",
    "event_gap_mean_*", "login_*", "session_*", "feature_use_*", "value_sum_*d", "value_trend_*", "open_complaints_*",
)


class ScoringConfig(_Strict):
    model_alias: str = "champion"
    risk_tiers: RiskTiers = RiskTiers()
    alert_min_tier: RiskTier = "medium"
    max_alerts: int | None = None
    budget: float | None = 20000.0  # per campaign; None: contact every alert
    # whom allocation chooses from: every scored customer (alerts are explained; the others are eligible for the
    # rules that need no reasons) or only the alerts (the earlier behaviour)
    contact_pool: Literal["scored", "alerts"] = "scored"
    chunk_size: int = Field(200_000, ge=1000)
    playbooks: str = "configs/playbooks.yaml"
    top_reasons: int = 3
    explainer: Literal["fast", "xgboost"] = "fast"  # exact TreeSHAP either way; fast = precomputed tables
    report_top_n: int = 25
    # secret: redacted in every artifact, log and summary (churn.redact)
    pseudonymize_key: str | None = Field(None, json_schema_extra={"secret": True})
    # value at risk from: the lifetime_value feature (features.clv) or monthly revenue x the survival model's
    # expected (discounted) lifetime within features.clv.horizon_months
    lifetime_value: Literal["features", "survival"] = "features"
    urgency_days: tuple[int, int] = (30, 90)  # median days to churn: <= first "immediate", <= second "soon", else "later"
    # features a retention action can change, as names or fnmatch patterns (counterfactuals move only these)
    actionable_features: list[str] = Field(default_factory=lambda: list(DEFAULT_ACTIONABLE))
    counterfactual: bool = True  # one "what would lower the risk" per alert (inference/counterfactual.py)


class MonitoringConfig(_Strict):
    """Drift thresholds, the label-free performance estimate, score changes and the refresh loop (issue 13)."""

    psi_warn: float = Field(0.1, ge=0)
    psi_alert: float = Field(0.25, ge=0)
    min_effect: float = Field(0.1, ge=0)  # Wasserstein / reference sd (numeric) or total variation (categorical)
    min_sample: int = Field(200, ge=0)  # fewer rows in either sample: no drift verdict
    important_features: int = Field(10, ge=1)  # the model's top features by gain that count as important
    max_auc_drop: float = Field(0.03, gt=0)  # estimated ROC-AUC drop since training that calls for a retrain
    estimate_draws: int = Field(200, ge=10)  # simulated outcome sets for the estimate's interval
    estimate_level: float = Field(0.9, gt=0, lt=1)
    # recalibrate the estimate on the model's own labelled out-of-time test window (model.recalibration)
    estimate_recalibration: bool = True
    report_drift_rows: int = Field(8, ge=1)  # drift rows shown in the report (the full table is drift.csv)
    change_groups: int = Field(3, ge=1, le=5)  # groups named in a score-change sentence
    retrain_every_days: int | None = Field(90, ge=1)  # refresh: retrain on this cadence (None: on evidence only)
    promotion_margin: float = Field(0.005, ge=0)  # challenger's mean ROC-AUC gain needed to be promoted
    promotion_windows: int = Field(2, ge=1)  # out-of-time cutoffs the gate compares both models on

    @model_validator(mode="after")
    def _order(self) -> MonitoringConfig:
        if self.psi_warn > self.psi_alert:
            raise ValueError("monitoring: psi_warn must not exceed psi_alert")
        return self


class Config(_Strict):
    data: DataConfig
    label: LabelConfig = LabelConfig()
    features: FeatureConfig = FeatureConfig()
    training: TrainingConfig = TrainingConfig()
    mlflow: MlflowConfig = MlflowConfig()
    scoring: ScoringConfig = ScoringConfig()
    monitoring: MonitoringConfig = MonitoringConfig()
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


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The config section (pydantic model) that the location ``loc`` (without its last key) points into."""
    import typing

    model: type[BaseModel] | None = Config
    for key in loc:
        if model is None or not isinstance(key, str) or key not in model.model_fields:
            continue  # list indexes and dict keys keep the current section
        todo, model = [model.model_fields[key].annotation], None
        while todo and model is None:
            t = todo.pop()
            if isinstance(t, type) and issubclass(t, BaseModel):
                model = t
            else:
                todo.extend(typing.get_args(t))
    return model


def _did_you_mean(err: Any) -> str:
    """' (did you mean 'horizon_days'?)' for an unknown key close to a known one, else ''."""
    import difflib

    if err.get("type") != "extra_forbidden" or not err.get("loc"):
        return ""
    *parent, key = err["loc"]
    model = _model_at(tuple(parent))
    if model is None:
        return ""
    names = list(model.model_fields)
    close = difflib.get_close_matches(str(key), names, n=1, cutoff=0.6)
    if not close:
        close = [n for n in names if n.startswith(str(key)) or str(key).startswith(n)][:1]
    return f" (did you mean '{close[0]}'?)" if close else f" (known keys: {', '.join(names)})"


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
        cfg = Config.model_validate(raw)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = ".".join(str(x) for x in err["loc"])
            lines.append(f"  {loc}: {err['msg']}{_did_you_mean(err)}")
        raise ConfigError(f"{p}: invalid configuration\n" + "\n".join(lines)) from exc
    from churn.redact import register

    register(cfg)
    return cfg
