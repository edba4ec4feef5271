"""Retention playbooks: route each alert to one primary playbook, and hold out a control group.

Playbooks and routing rules live in ``configs/playbooks.yaml`` so the retention team can change who gets
which action without touching code. Rules are evaluated in file order and the first match wins; alerts
no rule matches get the default playbook, so no alert is ever dropped.

Control groups are drawn from a hash of ``campaign:playbook:customer_id`` (the raw id, never the pseudonym),
not from a random generator, so the same customer is held out in every run of a campaign whatever the row
order or the other rows, and the uplift of each playbook can be measured against customers it was deliberately not applied to.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from churn.errors import ConfigError, DataError
from churn.io import stable_uniform
from churn.vocab import (
    DEFAULT_VALUE_TIERS,
    LIFECYCLE_STAGES,
    RISK_TIERS,
    URGENCIES,
    LifecycleStage,
    ReasonFamily,
    RiskTier,
    Urgency,
)

logger = logging.getLogger(__name__)

EarlyWarning = Literal["purchase_drop_flag", "usage_low_flag", "complaints_over_3_flag", "negative_text_recent_flag"]


def _known_value_tier(name: str, info: ValidationInfo) -> str:
    """Value tiers are configurable (``features.value_tiers``): check against the names in force."""
    tiers = (info.context or {}).get("value_tiers", DEFAULT_VALUE_TIERS)
    if name not in tiers:
        raise ValueError(f"'{name}' is not a value tier (configured tiers: {', '.join(tiers)})")
    return name


ValueTier = Annotated[str, AfterValidator(_known_value_tier)]

Slug = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]*$", max_length=64)]
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
Fraction = Annotated[float, Field(ge=0.0, lt=1.0, allow_inf_nan=False)]

# Columns assign_playbooks adds, in this order.
PLAYBOOK_COLUMNS: tuple[str, ...] = (
    "playbook_id",
    "playbook_name",
    "playbook_action",
    "playbook_channel",
    "playbook_owner",
    "playbook_sla_hours",
    "playbook_cost",
    "playbook_kind",
    "playbook_acceptance_rate",
    "playbook_rule",
)
DEFAULT_RULE = "default"

_ALERTS = "alerts"
_REQUIRED_COLUMNS = ("risk_tier", "value_tier")
_CATEGORY_FIELDS = ("risk_tier", "value_tier", "lifecycle_stage", "urgency")
_LIST_FIELDS = ("reason_families", "reason_groups", "early_warnings")
_THRESHOLD_FIELDS = {"min_probability": "churn_probability", "min_value_at_risk": "value_at_risk"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Playbook(_Strict):
    """One retention action: what is done, by whom, how fast, at what cost and how well it works."""

    id: Slug
    name: Text
    action: Text
    channel: Text
    owner: Text
    sla_hours: Annotated[float, Field(gt=0, allow_inf_nan=False)]
    cost_per_contact: Annotated[float, Field(ge=0, allow_inf_nan=False)]
    kind: Literal["preventive", "remedial"]
    acceptance_rate: Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
    control_fraction: Fraction | None = None
    description: str = ""


class RuleCondition(_Strict):
    """Conditions that must all hold for a rule to match; an omitted condition matches everything.

    List conditions on tiers and stage match when the alert's value is in the list; ``reason_families``
    and ``reason_groups`` match when any of the alert's reasons is in the list, ``early_warnings`` when any of
    the alert's early-warning flags is on (e.g. ``purchase_drop_flag``). Thresholds are inclusive.
    """

    risk_tier: Annotated[list[RiskTier], Field(min_length=1)] | None = None
    value_tier: Annotated[list[ValueTier], Field(min_length=1)] | None = None
    lifecycle_stage: Annotated[list[LifecycleStage], Field(min_length=1)] | None = None
    urgency: Annotated[list[Urgency], Field(min_length=1)] | None = None  # needs a model with a survival part
    reason_families: Annotated[list[ReasonFamily], Field(min_length=1)] | None = None
    reason_groups: Annotated[list[Slug], Field(min_length=1)] | None = None
    early_warnings: Annotated[list[EarlyWarning], Field(min_length=1)] | None = None
    min_probability: Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)] | None = None
    min_value_at_risk: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] | None = None

    @field_validator("risk_tier", "value_tier", "lifecycle_stage", "urgency", "reason_families", "reason_groups",
                     "early_warnings",
                     mode="before")
    @classmethod
    def _scalar_to_list(cls, v: Any) -> Any:
        """Accept ``value_tier: gold`` as shorthand for ``value_tier: [gold]``."""
        return [v] if isinstance(v, str) else v

    def is_catch_all(self) -> bool:
        """True when no condition is set, so the rule matches every alert."""
        return all(getattr(self, name) is None for name in type(self).model_fields)


class Rule(_Strict):
    """Send alerts matching ``when`` to ``playbook``."""

    id: Slug
    playbook: Slug
    when: RuleCondition


class PlaybookBook(_Strict):
    """The whole playbooks file: campaign, default control fraction, playbooks and ordered rules."""

    campaign: Text
    control_fraction: Fraction
    default_playbook: Slug
    # kind routing: remedial (win-back) playbooks only reach customers whose stage says they left or are leaving
    remedial_stages: Annotated[list[LifecycleStage], Field(min_length=1)] = ["dormant", "lapsed"]
    playbooks: Annotated[list[Playbook], Field(min_length=1)]
    rules: list[Rule] = Field(default_factory=list)
    _value_tiers: tuple[str, ...] = PrivateAttr(default=DEFAULT_VALUE_TIERS)  # the names the rules were checked against

    def known_values(self, field: str) -> tuple[str, ...]:
        """The values an alert column can take that rules may name (tiers, stages)."""
        return {"risk_tier": RISK_TIERS, "value_tier": self._value_tiers, "lifecycle_stage": LIFECYCLE_STAGES,
                "urgency": URGENCIES}[field]

    @model_validator(mode="after")
    def _check_references(self) -> PlaybookBook:
        problems: list[str] = []
        problems += _duplicates("playbook", [p.id for p in self.playbooks])
        problems += _duplicates("rule", [r.id for r in self.rules])
        known = [p.id for p in self.playbooks]
        known_text = ", ".join(known)
        for rule in self.rules:
            if rule.playbook not in known:
                problems.append(
                    f"rule '{rule.id}' field 'playbook': unknown playbook '{rule.playbook}' (known: {known_text})"
                )
        if self.default_playbook not in known:
            problems.append(
                f"field 'default_playbook': unknown playbook '{self.default_playbook}' (known: {known_text})"
            )
        elif self.playbook(self.default_playbook).kind != "preventive":
            problems.append(f"field 'default_playbook': '{self.default_playbook}' is remedial; the default reaches "
                            "customers of every stage, so it must be preventive")
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def playbook(self, id: str) -> Playbook:
        """The playbook with this id; KeyError naming the known ids otherwise."""
        for p in self.playbooks:
            if p.id == id:
                return p
        raise KeyError(f"unknown playbook '{id}' (known: {', '.join(p.id for p in self.playbooks)})")

    def control_fraction_for(self, playbook_id: str) -> float:
        """Hold-out share for a playbook: its own override, else the book's default."""
        own = self.playbook(playbook_id).control_fraction
        return self.control_fraction if own is None else own


def _duplicates(kind: str, ids: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    problems = []
    for i, id_ in enumerate(ids):
        if id_ in seen:
            problems.append(f"{kind} '{id_}' field 'id': duplicate id (entries #{seen[id_] + 1} and #{i + 1})")
        else:
            seen[id_] = i
    return problems


# --------------------------------------------------------------------------------------------- loading


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects repeated keys, which plain YAML silently resolves to the last one."""


def _construct_unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    keys: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in keys:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping", node.start_mark, f"found duplicate key '{key}'", key_node.start_mark
            )
        keys.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def load_playbooks(path: str | Path, value_tiers: Sequence[str] = DEFAULT_VALUE_TIERS) -> PlaybookBook:
    """Read and validate a playbooks file; every problem becomes a ConfigError naming file, entry and field.

    ``value_tiers``: the configured value tier names (``features.value_tiers``) rules may name.
    """
    path = Path(path)
    where = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{where}: playbooks file not found") from None
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read playbooks file: {exc}") from exc
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: invalid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping with campaign, playbooks and rules, got {type(raw).__name__}")
    try:
        book = PlaybookBook.model_validate(raw, context={"value_tiers": tuple(value_tiers)})
    except ValidationError as exc:
        lines = _describe_errors(exc, raw)
        raise ConfigError("\n".join(f"{where}: {line}" for line in lines)) from None
    book._value_tiers = tuple(value_tiers)
    _warn_unreachable(book, where)
    logger.info("loaded %d playbooks and %d rules from %s", len(book.playbooks), len(book.rules), where)
    return book


def _describe_errors(exc: ValidationError, raw: dict[str, Any]) -> list[str]:
    """Turn pydantic's errors into lines like ``rule 'x' field 'when.value_tier[0]': ...``."""
    lines: list[str] = []
    for err in exc.errors():
        loc = err["loc"]
        if err["type"] == "value_error" and not loc:
            # Cross-reference checks from PlaybookBook: already phrased per entry and field.
            lines.extend(str(err["ctx"]["error"]).splitlines())
            continue
        owner = ""
        rest = list(loc)
        if len(loc) >= 2 and loc[0] in ("playbooks", "rules") and isinstance(loc[1], int):
            kind = "playbook" if loc[0] == "playbooks" else "rule"
            owner = _entry_name(kind, raw.get(loc[0]), loc[1]) + " "
            rest = list(loc[2:])
        field = _format_loc(rest) if rest else loc[0] if loc else "?"
        lines.append(f"{owner}field '{field}': {_error_message(err)}")
    return lines


def _entry_name(kind: str, entries: Any, index: int) -> str:
    entry = entries[index] if isinstance(entries, list) and index < len(entries) else None
    if isinstance(entry, dict) and isinstance(entry.get("id"), str):
        return f"{kind} '{entry['id']}'"
    return f"{kind} #{index + 1} (no id)"


def _format_loc(parts: list[Any]) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _error_message(err: Any) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        name = str(err["loc"][-1])
        close = difflib.get_close_matches(name, _ALL_FIELDS, n=1)
        return f"unknown field (did you mean '{close[0]}'?)" if close else "unknown field"
    if kind == "missing":
        return "required field is missing"
    msg = str(err["msg"])
    if kind in ("literal_error", "string_pattern_mismatch", "greater_than", "greater_than_equal", "less_than",
                "less_than_equal", "finite_number", "too_short"):
        msg += f", got {err['input']!r}"
    return msg


_ALL_FIELDS = sorted(
    {f for model in (PlaybookBook, Playbook, Rule, RuleCondition) for f in model.model_fields}
)


def _warn_unreachable(book: PlaybookBook, where: str) -> None:
    """Log rules after a catch-all and playbooks nothing routes to: legal, but almost always a mistake."""
    for i, rule in enumerate(book.rules):
        if rule.when.is_catch_all() and i + 1 < len(book.rules):
            later = ", ".join(r.id for r in book.rules[i + 1 :])
            logger.warning("%s: rule '%s' matches everything, so later rules never apply: %s", where, rule.id, later)
            break
    used = {r.playbook for r in book.rules} | {book.default_playbook}
    unused = [p.id for p in book.playbooks if p.id not in used]
    if unused:
        logger.warning("%s: no rule routes to playbook(s): %s", where, ", ".join(unused))


# --------------------------------------------------------------------------------------------- routing


def assign_playbooks(alerts: pd.DataFrame, book: PlaybookBook) -> pd.DataFrame:
    """Return a copy of ``alerts`` with the primary playbook of each alert and the rule that chose it.

    ``risk_tier`` and ``value_tier`` are required. ``lifecycle_stage``, ``churn_probability``,
    ``value_at_risk``, ``reason_families``, ``reason_groups`` and ``early_warnings`` (cells: lists of strings)
    are optional: when one is missing, or a cell is null, conditions on it do not match.

    Routing uses each playbook's ``kind``: a rule whose playbook is remedial (win-back) matches only alerts
    whose ``lifecycle_stage`` is in the book's ``remedial_stages`` (they left or are leaving); other alerts
    fall through to the next rule, so early signs get preventive playbooks.
    """
    missing = [c for c in _REQUIRED_COLUMNS if c not in alerts.columns]
    if missing:
        raise DataError(_ALERTS, missing[0], "required column is missing for playbook routing")
    n = len(alerts)
    _warn_unknown_values(alerts, book)
    _warn_missing_columns(alerts, book)

    pb_index = {p.id: i for i, p in enumerate(book.playbooks)}
    chosen = np.full(n, pb_index[book.default_playbook], dtype=np.int64)
    rule_ids = np.full(n, DEFAULT_RULE, dtype=object)
    open_ = np.ones(n, dtype=bool)
    cache: dict[str, Any] = {}
    for rule in book.rules:
        if not open_.any():
            break
        hit = _rule_mask(rule.when, alerts, cache) & open_ & _kind_mask(book, rule.playbook, alerts)
        chosen[hit] = pb_index[rule.playbook]
        rule_ids[hit] = rule.id
        open_ &= ~hit

    out = alerts.copy()
    attrs = {
        "playbook_id": "id",
        "playbook_name": "name",
        "playbook_action": "action",
        "playbook_channel": "channel",
        "playbook_owner": "owner",
        "playbook_sla_hours": "sla_hours",
        "playbook_cost": "cost_per_contact",
        "playbook_kind": "kind",
        "playbook_acceptance_rate": "acceptance_rate",
    }
    for col, attr in attrs.items():
        values = [getattr(p, attr) for p in book.playbooks]
        table = np.array(values, dtype=np.float64 if isinstance(values[0], float) else object)
        out[col] = pd.Series(table[chosen], index=alerts.index, dtype=None if table.dtype == object else "float64")
    out["playbook_rule"] = pd.Series(rule_ids, index=alerts.index)
    if n:
        counts = out["playbook_id"].value_counts().to_dict()
        logger.info("assigned playbooks to %d alerts: %s", n, counts)
    return out


def _kind_mask(book: PlaybookBook, playbook_id: str, alerts: pd.DataFrame) -> np.ndarray:
    """Alerts the playbook's kind allows: all for preventive, the remedial stages for remedial."""
    if book.playbook(playbook_id).kind == "preventive":
        return np.ones(len(alerts), dtype=bool)
    if "lifecycle_stage" not in alerts.columns:
        return np.zeros(len(alerts), dtype=bool)
    return alerts["lifecycle_stage"].isin(book.remedial_stages).to_numpy(dtype=bool)


def eligible_playbooks(alerts: pd.DataFrame, book: PlaybookBook) -> pd.DataFrame:
    """Every playbook the rules allow for each alert, for allocation to choose from (rules define eligibility).

    One row per (alert, playbook): ``row`` (position in ``alerts``), ``playbook_id`` and ``playbook_rule``, the
    first rule in file order routing that alert to that playbook. The default playbook is eligible for every
    alert (``playbook_rule`` "default" unless a rule also routes to it), so cheap care is always an option.
    Sorted by row, then the playbooks' file order.
    """
    missing = [c for c in _REQUIRED_COLUMNS if c not in alerts.columns]
    if missing:
        raise DataError(_ALERTS, missing[0], "required column is missing for playbook routing")
    n = len(alerts)
    pb_index = {p.id: i for i, p in enumerate(book.playbooks)}
    rule_of = np.full((n, len(book.playbooks)), None, dtype=object)
    cache: dict[str, Any] = {}
    for rule in book.rules:
        col = pb_index[rule.playbook]
        hit = (_rule_mask(rule.when, alerts, cache) & _kind_mask(book, rule.playbook, alerts)
               & np.equal(rule_of[:, col], None))
        rule_of[hit, col] = rule.id
    default = pb_index[book.default_playbook]
    rule_of[np.equal(rule_of[:, default], None), default] = DEFAULT_RULE
    rows, cols = np.nonzero(np.not_equal(rule_of, None))
    ids = np.array([p.id for p in book.playbooks], dtype=object)
    return pd.DataFrame({"row": rows.astype(np.int64), "playbook_id": ids[cols],
                         "playbook_rule": rule_of[rows, cols]})


def _rule_mask(cond: RuleCondition, alerts: pd.DataFrame, cache: dict[str, Any]) -> np.ndarray:
    """Boolean array (positional) of the alerts that meet every condition of ``cond``."""
    n = len(alerts)
    mask = np.ones(n, dtype=bool)
    for field in _CATEGORY_FIELDS:
        wanted = getattr(cond, field)
        if wanted is not None:
            if field not in alerts.columns:
                return np.zeros(n, dtype=bool)
            mask &= alerts[field].isin(wanted).to_numpy(dtype=bool)
    for field in _LIST_FIELDS:
        wanted = getattr(cond, field)
        if wanted is not None:
            if field not in alerts.columns:
                return np.zeros(n, dtype=bool)
            if field not in cache:
                cache[field] = pd.Series(alerts[field].to_numpy(dtype=object), index=np.arange(n)).explode()
            exploded: pd.Series = cache[field]
            hit = np.zeros(n, dtype=bool)
            hit[exploded.index.to_numpy()[exploded.isin(wanted).to_numpy(dtype=bool)]] = True
            mask &= hit
    for field, column in _THRESHOLD_FIELDS.items():
        threshold = getattr(cond, field)
        if threshold is not None:
            if column not in alerts.columns:
                return np.zeros(n, dtype=bool)
            if column not in cache:
                cache[column] = _numeric(alerts[column], column)
            with np.errstate(invalid="ignore"):
                mask &= cache[column] >= threshold  # NaN compares False
    return mask


def _numeric(col: pd.Series, name: str) -> np.ndarray:
    values = pd.to_numeric(col, errors="coerce")
    bad = values.isna() & col.notna()
    if bad.any():
        raise DataError(_ALERTS, name, "non-numeric values", count=int(bad.sum()), examples=col[bad].unique())
    return values.to_numpy(dtype=np.float64, na_value=np.nan)


def _warn_unknown_values(alerts: pd.DataFrame, book: PlaybookBook) -> None:
    for field in _CATEGORY_FIELDS:
        known = book.known_values(field)
        if field in alerts.columns:
            col = alerts[field]
            bad = col.notna() & ~col.isin(known)
            if bad.any():
                logger.warning(
                    "alerts column '%s': %d value(s) outside %s never match a rule, e.g. %s",
                    field, int(bad.sum()), list(known), list(col[bad].unique()[:5]),
                )


def _warn_missing_columns(alerts: pd.DataFrame, book: PlaybookBook) -> None:
    columns = {f: f for f in (*_CATEGORY_FIELDS, *_LIST_FIELDS)} | _THRESHOLD_FIELDS
    for field, column in columns.items():
        if column in alerts.columns:
            continue
        users = [r.id for r in book.rules if getattr(r.when, field) is not None]
        if users:
            logger.warning("alerts lack column '%s': rule(s) %s never match", column, ", ".join(users))


# --------------------------------------------------------------------------------------------- control group


def control_draw(customer_ids: pd.Series, campaign: str) -> pd.Series:
    """Deterministic uniform draw in [0, 1) per customer: first 8 bytes of sha256("campaign:id") / 2**64.

    Integral float ids (e.g. 123.0 after a CSV round trip) are hashed as integers ("123") so the draw does
    not depend on how the id column was read. Null ids are a data error.
    """
    nulls = customer_ids.isna()
    if nulls.any():
        raise DataError(_ALERTS, "customer_id", "null customer ids cannot be assigned a control draw",
                        count=int(nulls.sum()))
    ids = customer_ids
    if pd.api.types.is_float_dtype(ids) and bool((ids == np.floor(ids)).all()):
        ids = ids.astype(np.int64)
    draws = stable_uniform(ids.tolist(), campaign)
    return pd.Series(draws, index=customer_ids.index, name="control_draw", dtype="float64")


def assign_control_group(alerts: pd.DataFrame, book: PlaybookBook, raw_ids: pd.Series | None = None) -> pd.Series:
    """True where the customer is held out (not contacted) to measure the playbook's uplift.

    A customer is held out when its draw, ``control_draw(raw id, "campaign:playbook")``, is below the fraction of
    its playbook (override or book default). The draw depends only on campaign, playbook and the RAW customer
    id (``raw_ids``, aligned with ``alerts``; default ``alerts["customer_id"]``), so the split is stable across
    runs and row orders and does not change when outputs are pseudonymised.
    """
    for column in ("customer_id", "playbook_id"):
        if column not in alerts.columns:
            raise DataError(_ALERTS, column, "required column is missing for control-group assignment")
    fractions = {p.id: book.control_fraction_for(p.id) for p in book.playbooks}
    fraction = alerts["playbook_id"].map(fractions)
    unknown = fraction.isna()
    if unknown.any():
        raise DataError(_ALERTS, "playbook_id", f"unknown playbook ids (known: {', '.join(fractions)})",
                        count=int(unknown.sum()), examples=alerts.loc[unknown, "playbook_id"].unique())
    ids = alerts["customer_id"] if raw_ids is None else pd.Series(raw_ids.to_numpy(), index=alerts.index)
    draws = np.ones(len(alerts))
    pids = alerts["playbook_id"].to_numpy(dtype=object)
    for pid in sorted(set(pids.tolist())):
        at = pids == pid
        draws[at] = control_draw(ids[at], f"{book.campaign}:{pid}").to_numpy()
    held = pd.Series(draws < fraction.to_numpy(dtype=np.float64), index=alerts.index, name="control_group",
                     dtype=bool)
    # debug only: the caller keeps just the selected ones, and logs the count that reaches the files
    logger.debug("control draw for campaign '%s': %d of %d alerts below their control fraction", book.campaign,
                 int(held.sum()), len(held))
    return held
