"""The input data contract: find, load, rename and validate the raw tables.

A data folder holds ``customers`` (required) and optionally ``events``, ``transactions``,
``interactions`` and ``subscriptions`` as CSV or Parquet. The config maps the user's file and column
names onto the contract's roles, and can also

* replace codes by names from a lookup file (``lookups``, e.g. ``event_type_id`` -> ``event_type.csv``),
* assemble the customers table from several files (``joins``) and drop columns (``exclude``),
* take every usable customers column as an attribute (``attributes: auto``) and compute numeric
  attributes from dates (``derived``, e.g. an age from a date of birth),
* derive signup/churn dates and transactions from a ``subscriptions`` table (``derive``; see
  :mod:`features.derive`),
* read a snapshot 0/1 label (``label.definition: snapshot``; pass the whole ``Config`` to
  :func:`load_tables`), in which case signup dates are optional.
 Everything is checked here, at the edge, so feature code can trust its inputs:
a violation raises :class:`~churn.errors.DataError` naming the table, column, count and examples.

Child tables come back sorted by timestamp with an ``_code`` column (the row position of the
customer in ``customers``), which lets feature code slice time windows with ``searchsorted``
and aggregate with ``np.bincount``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from churn.config import CANONICAL_COLUMNS, Config, DataConfig, DataLimits, LabelConfig, TableConfig
from churn.errors import DataError, InputNotFoundError
from churn.io import hash_files

log = logging.getLogger(__name__)

ROW_NUMBER_ID = "__row_number__"  # customers.columns.customer_id value meaning "use the row number"
SUFFIXES = (".parquet", ".pq", ".csv", ".csv.gz", ".tsv")
CHILD_TABLES = ("events", "transactions", "interactions")


@dataclass
class Tables:
    """Validated raw tables in canonical column names."""

    customers: pd.DataFrame
    events: pd.DataFrame | None = None
    transactions: pd.DataFrame | None = None
    interactions: pd.DataFrame | None = None
    attributes: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    input_hash: str = ""
    # subscription rows (customer_id, _code, start_date, end_date, amount), sorted by start_date
    subscriptions: pd.DataFrame | None = None
    # snapshot label (label.definition: snapshot): 0/1 per customers row, else None
    snapshot_label: np.ndarray | None = None
    # data.observed_until: when set, it is the data's end (see data_end)
    observed_until: pd.Timestamp | None = None
    # what the loader derived instead of reading, e.g. {"churn_date": "subscriptions"}
    derived: dict[str, str] = field(default_factory=dict)
    # campaign history (features.treatments): customer_id, _code, timestamp, campaign_id, playbook_id, group
    treatments: pd.DataFrame | None = None

    def child(self, name: str) -> pd.DataFrame | None:
        return getattr(self, name)

    @property
    def data_end(self) -> pd.Timestamp:
        """The latest moment observed in any table (labels can only be known up to here).

        ``data.observed_until`` overrides it (e.g. the end of a simulation whose later records are artefacts).
        NaT when nothing is dated (a snapshot without dates).
        """
        if self.observed_until is not None:
            return self.observed_until
        stamps = [self.customers["signup_date"].max()]
        if "churn_date" in self.customers:
            stamps.append(self.customers["churn_date"].max())
        for name in CHILD_TABLES:
            t = self.child(name)
            if t is not None and len(t):
                stamps.append(t["timestamp"].iloc[-1])
        stamps = [s for s in stamps if pd.notna(s)]
        return max(stamps) if stamps else pd.NaT

    @property
    def data_start(self) -> pd.Timestamp:
        stamps = [t["timestamp"].iloc[0] for n in CHILD_TABLES if (t := self.child(n)) is not None and len(t)]
        return min(stamps) if stamps else self.customers["signup_date"].min()

    def subset(self, keep: np.ndarray) -> Tables:
        """The tables of the customers where ``keep`` (one bool per customers row) is true, every child row of
        theirs with its ``_code`` renumbered, child order kept; the data's end stays this set's (a sample of
        customers was observed for as long as all of them were), so labels are the same."""
        keep = np.asarray(keep, dtype=bool)
        new_code = np.cumsum(keep, dtype=np.int64) - 1

        def rows(df: pd.DataFrame | None) -> pd.DataFrame | None:
            if df is None:
                return None
            mask = keep[df["_code"].to_numpy()]
            out = df[mask].reset_index(drop=True)
            return out.assign(_code=new_code[df["_code"].to_numpy()[mask]].astype(df["_code"].dtype))

        return Tables(customers=self.customers[keep].reset_index(drop=True), events=rows(self.events),
                      transactions=rows(self.transactions), interactions=rows(self.interactions),
                      attributes=list(self.attributes), files=list(self.files), input_hash=self.input_hash,
                      subscriptions=rows(self.subscriptions),
                      snapshot_label=None if self.snapshot_label is None else self.snapshot_label[keep],
                      observed_until=self.data_end if pd.notna(self.data_end) else None, derived=dict(self.derived),
                      treatments=rows(self.treatments))


def find_table_file(data_dir: Path, tc: TableConfig | str) -> Path | None:
    """Locate a table's file (``tc`` or a file name): the exact name if it exists, else the stem with a known suffix.

    A folder (a Parquet dataset as Spark writes it, e.g. ``events.parquet/part-*.parquet``) counts too;
    :func:`read_table` reads it or says why not: a table is never silently missing because it is a folder.
    """
    name = tc if isinstance(tc, str) else tc.file
    exact = data_dir / name
    if exact.is_file():
        return exact
    for suffix in SUFFIXES:
        cand = data_dir / f"{name}{suffix}"
        if cand.is_file():
            return cand
    for cand in (exact, *(data_dir / f"{name}{suffix}" for suffix in SUFFIXES)):
        if cand.is_dir():
            return cand
    return None


def read_table(path: Path, role: str, text_columns: list[str] | tuple[str, ...] = (),
               categorical: Sequence[str] = (), nanoseconds: Sequence[str] = ()) -> pd.DataFrame:
    """Read CSV, Parquet or a Parquet dataset folder into a DataFrame; unreadable files become a DataError.

    ``text_columns`` (ids) are read from CSV as text, so "0001495" keeps its leading zeros.
    Parquet only (see :func:`read_parquet`): ``categorical`` text columns come back as categoricals and
    ``nanoseconds`` timestamp columns as ``datetime64[ns]``.
    """
    if path.is_dir() and not dataset_files(path):
        raise DataError(role, None, f"{path} is a folder with no Parquet part files (*.parquet): "
                        "give the table as one CSV/Parquet file or a Parquet dataset folder")
    try:
        if path.is_dir() or path.name.endswith((".parquet", ".pq")):
            return read_parquet(path, categorical, nanoseconds)
        sep = "\t" if path.name.endswith(".tsv") else ","
        return pd.read_csv(path, sep=sep, low_memory=False, dtype={c: str for c in text_columns})
    except Exception as exc:  # noqa: BLE001 - any reader failure is a data problem for the user
        raise DataError(role, None, f"cannot read {path}: {exc}") from exc


def read_parquet(path: Path, categorical: Sequence[str] = (), nanoseconds: Sequence[str] = ()) -> pd.DataFrame:
    """``pd.read_parquet(path)`` with less memory: the frame pandas gives, except for the columns named.

    Text columns in ``categorical`` are read as Parquet dictionaries and come back as pandas categoricals of
    the same text (a code per row, no string per row); timestamp columns in ``nanoseconds`` are converted to
    ``datetime64[ns]`` in Arrow (left as they are when nanoseconds cannot hold them: the date checks report
    that). Arrow's buffers are released column by column as pandas takes them over.
    """
    import pyarrow.parquet as pq

    table = pq.read_table(path, read_dictionary=list(categorical) or None, use_pandas_metadata=True)
    for name in nanoseconds:
        i = table.schema.get_field_index(name)
        kind = table.schema.field(i).type if i >= 0 else None
        if kind is not None and pa.types.is_timestamp(kind) and kind.unit != "ns":
            try:
                table = table.set_column(i, name, pc.cast(table.column(i), pa.timestamp("ns", kind.tz)))
            except pa.ArrowInvalid:  # outside 1677..2262: kept, so the loader's range check names the rows
                pass
    return table.to_pandas(self_destruct=True, split_blocks=True)


def _lean_columns(role: str, tc: TableConfig) -> tuple[list[str], list[str]]:
    """The file columns of a child table :func:`read_parquet` reads as categoricals / nanoseconds.

    The event type (a few names repeated on every row) and the customer id become categoricals, the
    timestamp nanoseconds; only columns no declared type, lookup, missing-value token or union file touches
    (those steps keep the column as the file has it).
    """
    if role not in CHILD_TABLES or tc.union or tc.na_values:
        return [], []
    file_name = {new: old for old, new in tc.rename.items()}
    untouched = [r for r in ("customer_id", "event_type", "timestamp") if tc.columns.get(r, r) not in tc.types
                 and tc.columns.get(r, r) not in tc.lookups]
    names = {r: file_name.get(tc.columns.get(r, r), tc.columns.get(r, r)) for r in untouched}
    categorical = [names[r] for r in ("customer_id", "event_type") if r in names and (r != "event_type" or role == "events")]
    return categorical, [names["timestamp"]] if "timestamp" in names else []


def dataset_files(folder: Path) -> list[Path]:
    """The Parquet part files of a dataset folder (hidden and ``_`` files such as ``_SUCCESS`` left out)."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in (".parquet", ".pq")
                  and not any(part.startswith((".", "_")) for part in p.relative_to(folder).parts))


def load_tables(data_dir: str | Path, cfg: DataConfig | Config, require_label: bool = True,
                cache: bool | None = None) -> Tables:
    """Load and validate every configured table found in ``data_dir`` (from the table cache when it holds them).

    ``cfg`` is the ``data`` section, or the whole :class:`~churn.config.Config`: the latter is needed for a
    snapshot label (``label.definition: snapshot``), which the loader reads from the customers table.
    ``cache``: use the table cache (:mod:`features.table_cache`); None follows ``data.cache`` and ``CHURN_NO_CACHE``.
    """
    from features import table_cache

    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise InputNotFoundError(f"data folder not found: {data_dir}")
    data_cfg = cfg if isinstance(cfg, DataConfig) else cfg.data
    folder = table_cache.cache_folder(data_cfg.cache, cache)
    files = input_files(data_dir, data_cfg) if folder is not None else None
    if folder is None or files is None:  # no cache, or a missing file the fresh load reports
        tables = _load_fresh(data_dir, cfg, require_label)
        tables.input_hash = hash_files(tables.files)
        return tables
    input_hash = hash_files(files)
    key = table_cache.entry_key(input_hash, _config_fingerprint(cfg, require_label))
    hit = table_cache.fetch(folder, key)
    if hit is not None:
        log.info("tables of %s read from the table cache %s (input %s)", data_dir, folder / key, input_hash[:19])
        return tables_from_cache(*hit, files=files, input_hash=input_hash)
    with _captured_warnings() as warnings:
        tables = _load_fresh(data_dir, cfg, require_label)
    tables.input_hash = input_hash
    if tables.files == files:
        table_cache.store(folder, key, *tables_to_cache(tables, warnings), max_mb=data_cfg.cache.max_mb)
    else:  # the planned file list missed a file the loader read: never cache what the key does not cover
        log.warning("table cache: the loader read %s, not the planned %s: tables not cached", tables.files, files)
    return tables


def input_files(data_dir: Path, cfg: DataConfig) -> list[Path] | None:
    """The files :func:`load_tables` reads, in its order (tables, unions, lookups, joins); None if one is missing."""
    files: list[Path] = []
    for role, tc in cfg.tables.items():
        path = find_table_file(data_dir, tc)
        if path is None:
            if role == "customers" or tc.required:
                return None
            continue
        more = [find_table_file(data_dir, name) for name in
                (*(u.file for u in tc.union), *(lk.file for lk in tc.lookups.values()), *(j.file for j in tc.joins))]
        if any(p is None for p in more):
            return None
        files += [path, *(p for p in more if p is not None)]
    return files


def _config_fingerprint(cfg: DataConfig | Config, require_label: bool) -> str:
    """Everything in the config that changes what the loader returns (the cache settings do not)."""
    if isinstance(cfg, DataConfig):
        return cfg.model_dump_json(exclude={"cache"})
    return "\n".join([cfg.data.model_dump_json(exclude={"cache"}), cfg.label.model_dump_json(),
                      json.dumps(cfg.features.event_types), f"require_label={require_label}"])


@contextmanager
def _captured_warnings() -> Iterator[list[str]]:
    """Collect the warnings the loader logs, so a cache hit can repeat them (the data did not get better)."""
    messages: list[str] = []

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    handler = _Collect(logging.WARNING)
    loggers = [logging.getLogger(n) for n in ("features.contract", "features.derive", "features.treatments")]
    for lg in loggers:
        lg.addHandler(handler)
    try:
        yield messages
    finally:
        for lg in loggers:
            lg.removeHandler(handler)


def tables_to_cache(tables: Tables, warnings: list[str]) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """The frames and metadata a cache entry holds; child tables leave out ``customer_id`` (rebuilt from ``_code``)."""
    frames = {"customers": tables.customers}
    for name in (*CHILD_TABLES, "subscriptions", "treatments"):
        df = tables.child(name)
        if df is not None:
            frames[name] = df.drop(columns="customer_id") if name in CHILD_TABLES else df
    if tables.snapshot_label is not None:
        frames["snapshot_label"] = pd.DataFrame({"label": tables.snapshot_label})
    observed = None if tables.observed_until is None else tables.observed_until.isoformat()
    meta = {"attributes": tables.attributes, "derived": tables.derived, "observed_until": observed,
            "warnings": warnings}
    return frames, meta


def tables_from_cache(frames: dict[str, pd.DataFrame], meta: dict[str, Any], files: list[Path],
                      input_hash: str) -> Tables:
    """:class:`Tables` from a cache entry (the inverse of :func:`tables_to_cache`); its warnings are logged again."""
    for message in meta["warnings"]:
        log.warning("%s (cached load)", message)
    customers = frames["customers"]
    tables = Tables(customers=customers, attributes=list(meta["attributes"]), files=list(files), input_hash=input_hash,
                    derived=dict(meta["derived"]), subscriptions=frames.get("subscriptions"),
                    treatments=frames.get("treatments"),
                    observed_until=None if meta["observed_until"] is None else pd.Timestamp(meta["observed_until"]))
    if "snapshot_label" in frames:
        tables.snapshot_label = frames["snapshot_label"]["label"].to_numpy(dtype=np.int8)
    for name in CHILD_TABLES:
        if name in frames:
            df = frames[name]
            df.insert(0, "customer_id", _customer_id_column(customers, df["_code"].to_numpy()))
            setattr(tables, name, df)
    return tables


@dataclass
class _Read:
    """What reading the configured files gives, before validation."""

    frames: dict[str, pd.DataFrame] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)
    attributes: list[str] = field(default_factory=list)
    snapshot_label: np.ndarray | None = None
    derived_sources: pd.DataFrame = field(default_factory=pd.DataFrame)


def _load_fresh(data_dir: Path, cfg: DataConfig | Config, require_label: bool) -> Tables:
    """Read, assemble and validate the tables (no cache): the loader's pipeline of named steps."""
    label: LabelConfig | None = None
    limits = cfg.limits if isinstance(cfg, DataConfig) else cfg.data.limits
    if isinstance(cfg, Config):
        if cfg.features.event_types is not None:  # only the listed types become features: no cap needed
            limits = limits.model_copy(update={"max_event_types": 2**31 - 1})
        label, cfg = cfg.label, cfg.data
    snapshot = label is not None and label.definition == "snapshot"
    subs_tc = cfg.tables.get("subscriptions")
    derive = subs_tc.derive if subs_tc is not None else None
    read = _read_tables(data_dir, cfg, label if snapshot else None, require_label)
    derived_tx = derive is not None and "subscriptions" in read.frames and (
        derive.transactions is True or (derive.transactions is None and "transactions" not in read.frames))
    for role in CHILD_TABLES:
        if role not in cfg.tables and not (role == "transactions" and derived_tx):
            log.warning("table '%s' is not configured: its feature family is switched off", role)
    observed = pd.Timestamp(cfg.observed_until) if cfg.observed_until is not None else None
    subs, cust_raw, derived = _subscription_dates(read.frames, cfg, derive, limits, observed)
    if "signup_date" not in cust_raw.columns and not snapshot:
        mapped = cfg.tables["customers"].columns.get("signup_date", "signup_date")
        raise DataError("customers", mapped, f"missing required column(s) ['{mapped}'] (and no subscriptions table "
                        f"to derive it from); columns found: {list(cust_raw.columns)[:20]}")
    customers = validate_customers(cust_raw, read.attributes, _date_format(cfg, "customers"),
                                   signup_required=not (snapshot or "signup_date" in derived))
    tables = Tables(customers=customers, attributes=list(read.attributes), files=read.files,
                    snapshot_label=read.snapshot_label, observed_until=observed, derived=derived)
    _validate_children(tables, read.frames, cfg, limits)
    if subs is not None:
        _attach_subscriptions(tables, subs, derive if derived_tx else None, limits)
    _add_derived_columns(tables, cfg.tables["customers"], read.derived_sources, _date_format(cfg, "customers"))
    return tables


def _date_format(cfg: DataConfig, role: str) -> str | None:
    return cfg.tables[role].date_format or cfg.date_format


def _read_tables(data_dir: Path, cfg: DataConfig, snapshot: LabelConfig | None, require_label: bool) -> _Read:
    """Read every configured table found (with unions, types, lookups, joins) and map it onto the contract.

    ``snapshot``: the label config when the label is a snapshot column of the customers table.
    """
    subs_tc = cfg.tables.get("subscriptions")
    derive = subs_tc.derive if subs_tc is not None else None
    signup_optional = snapshot is not None or (derive is not None and derive.signup_date is not False)
    read = _Read()
    for role, tc in cfg.tables.items():
        path = find_table_file(data_dir, tc)
        if path is None:
            _report_missing_table(role, tc, data_dir)
            continue
        raw = read_table(path, role, _text_columns(tc), *_lean_columns(role, tc))
        read.files.append(path)
        log.info("loaded %s: %s rows from %s", role, f"{len(raw):,}", path.name)
        raw = raw.rename(columns=tc.rename)
        raw = _apply_types(_read_union(raw, path, role, tc, data_dir, read.files), role, tc)
        raw = _apply_lookups(raw, role, tc, data_dir, read.files)
        role_cols = {tc.columns.get(r, r) for r in CANONICAL_COLUMNS[role]}
        if role == "customers":
            raw = _apply_joins(raw, tc, data_dir, read.files)
            read.frames[role] = _customers_frame(raw, tc, role_cols, snapshot, require_label, signup_optional, read)
        else:
            raw = _exclude(raw, role, tc, keep=role_cols)
            read.frames[role] = _apply_mapping(raw, role, tc, attributes=list(tc.extra_columns))
    return read


def _report_missing_table(role: str, tc: TableConfig, data_dir: Path) -> None:
    """A required table's missing file is an error; an optional one's a warning saying what is switched off."""
    if role == "customers" or tc.required:
        raise InputNotFoundError(f"table '{role}': no file '{tc.file}' (tried {', '.join(SUFFIXES)}) in {data_dir}")
    what = "nothing is derived from it" if role == "subscriptions" else "its feature family is switched off"
    if role == "treatments":
        what = "no campaign history: playbook effects come from the configured priors"
    log.warning("table '%s' not found in %s: %s", role, data_dir, what)


def _customers_frame(raw: pd.DataFrame, tc: TableConfig, role_cols: set[str], snapshot: LabelConfig | None,
                     require_label: bool, signup_optional: bool, read: _Read) -> pd.DataFrame:
    """The assembled customers table mapped onto the contract; the snapshot label, attributes and the sources of
    derived columns go into ``read``."""
    role = "customers"
    if snapshot is not None:
        assert snapshot.column is not None
        if require_label or snapshot.column in raw.columns:
            read.snapshot_label = _snapshot_label(raw, snapshot)
        else:  # scoring current customers: no label yet (the column stays out of the features)
            raw = raw.assign(**{snapshot.column: pd.NA})
    sources = [d.source for d in tc.derived.values()]
    missing_src = [c for c in sources if c not in raw.columns]
    if missing_src:
        raise DataError(role, missing_src[0], f"date column(s) {missing_src} for derived attributes not in "
                        f"the file; columns found: {list(raw.columns)[:20]}")
    read.derived_sources = raw[sources].reset_index(drop=True)
    skip = set(sources) | ({snapshot.column} if snapshot is not None and snapshot.column else set())
    raw = _exclude(raw, role, tc, keep=role_cols | skip)
    read.attributes = _resolve_attributes(raw, tc, role_cols, skip)
    if snapshot is not None and snapshot.column in read.attributes:
        raise DataError(role, snapshot.column, "the label column cannot also be an attribute")
    optional = {"signup_date"} if signup_optional else set()
    return _apply_mapping(raw, role, tc, attributes=read.attributes, optional=optional)


def _subscription_dates(frames: dict[str, pd.DataFrame], cfg: DataConfig, derive: Any, limits: DataLimits,
                        observed: pd.Timestamp | None) -> tuple[pd.DataFrame | None, pd.DataFrame, dict[str, str]]:
    """Checked subscriptions (or None), the customers frame with dates derived from them, and what was derived."""
    cust_raw = frames["customers"]
    derived: dict[str, str] = {}
    if "subscriptions" not in frames:
        return None, cust_raw, derived
    subs = prepare_subscriptions(frames["subscriptions"], _date_format(cfg, "subscriptions"), limits)
    if derive is None:
        return subs, cust_raw, derived
    from features.derive import customer_dates_from_subscriptions

    dates = customer_dates_from_subscriptions(subs, derive.renewal_grace_days, observed)
    ids = _ids(cust_raw, "customers")
    cust_raw = cust_raw.copy()
    for col in ("signup_date", "churn_date"):
        flag = getattr(derive, col)
        if flag is True or (flag is None and col not in cust_raw.columns):
            cust_raw[col] = dates[col].reindex(ids.to_numpy()).to_numpy()
            derived[col] = "subscriptions"
    if "signup_date" in derived:
        n_none = int(pd.isna(cust_raw["signup_date"]).sum())
        if n_none:
            log.warning("%d customer(s) have no subscription: no signup date, never in a population", n_none)
    log.info("derived %s from %s subscription rows (renewal grace %d days, churn observed until %s)",
             ", ".join(derived) or "nothing", f"{len(subs):,}", derive.renewal_grace_days,
             (observed or subs["start_date"].max()).date())
    return subs, cust_raw, derived


def _validate_children(tables: Tables, frames: dict[str, pd.DataFrame], cfg: DataConfig, limits: DataLimits) -> None:
    """Validate the child tables and the campaign history against the validated customers.

    Each raw child frame leaves ``frames`` as it is validated, so its memory is freed before the next one.
    """
    for role in CHILD_TABLES:
        if role in frames:
            setattr(tables, role, validate_child(frames.pop(role), role, tables.customers, _date_format(cfg, role), limits,
                                                 extra=cfg.tables[role].extra_columns))
    if "treatments" in frames:
        from features.treatments import validate_treatments

        tables.treatments = validate_treatments(frames["treatments"], tables.customers, _date_format(cfg, "treatments"))


def _attach_subscriptions(tables: Tables, subs: pd.DataFrame, derive: Any, limits: DataLimits) -> None:
    """Attach the subscriptions; ``derive`` (when transactions are derived): payments become the transactions."""
    tables.subscriptions = _attach_codes(subs, "subscriptions", tables.customers)
    if derive is None:
        return
    if subs["amount"].isna().all():
        if derive.transactions:
            raise DataError("subscriptions", "amount", "derive.transactions needs an amount column "
                            "(map it with columns: {amount: <column>})")
        log.warning("subscriptions have no amount: no transactions derived (value features off)")
        return
    from features.derive import transactions_from_subscriptions

    if tables.transactions is not None:
        log.warning("derive.transactions: the transactions table is replaced by subscription payments")
    tables.transactions = validate_child(transactions_from_subscriptions(subs), "transactions",
                                         tables.customers, None, limits)
    tables.derived["transactions"] = "subscriptions"


def _apply_mapping(raw: pd.DataFrame, role: str, tc: TableConfig, attributes: list[str] | None = None,
                   optional: set[str] | frozenset[str] = frozenset()) -> pd.DataFrame:
    """Rename the user's columns to the contract's roles; keep attributes; check required columns.

    ``attributes`` overrides ``tc.attributes`` (resolved ``auto``); roles in ``optional`` may be absent.
    """
    roles = CANONICAL_COLUMNS[role]
    attrs = list(tc.attributes) if attributes is None else list(attributes)
    mapping = {r: tc.columns.get(r, r) for r in roles}
    if role == "customers" and mapping["customer_id"] == ROW_NUMBER_ID and ROW_NUMBER_ID not in raw.columns:
        # data without any identifier (a snapshot export): the 1-based row number is the id
        raw = raw.assign(**{ROW_NUMBER_ID: [f"row{i:07d}" for i in range(1, len(raw) + 1)]})
    missing_required = [f"{mapping[r]}" for r, req in roles.items()
                        if req and r not in optional and mapping[r] not in raw.columns]
    if missing_required:
        raise DataError(
            role,
            missing_required[0],
            f"missing required column(s) {missing_required}; columns found: {list(raw.columns)[:20]}",
        )
    missing_attrs = [a for a in attrs if a not in raw.columns]
    if missing_attrs:
        raise DataError(role, missing_attrs[0], f"attribute column(s) {missing_attrs} not in the file")
    keep = {mapping[r]: r for r in roles if mapping[r] in raw.columns}
    out = raw[list(keep) + [a for a in attrs if a not in keep]].rename(columns=keep)
    return out


# --------------------------------------------------------------------------- unions, declared types
def _text_columns(tc: TableConfig) -> list[str]:
    """Columns read from CSV as text: the customer id and every column declared category or text."""
    return [tc.columns.get("customer_id", "customer_id")] + [c for c, t in tc.types.items() if t in ("category", "text")]


def _read_union(first: pd.DataFrame, path: Path, role: str, tc: TableConfig, data_dir: Path,
                files: list[Path]) -> pd.DataFrame:
    """Append ``tc.union`` files (renamed to the first file's header) to the rows of the first file."""
    if not tc.union:
        return first
    frames = [first]
    for u in tc.union:
        p = find_table_file(data_dir, u.file)
        if p is None:
            raise InputNotFoundError(f"table '{role}': union file '{u.file}' (tried {', '.join(SUFFIXES)}) not in {data_dir}")
        text = _text_columns(tc)
        renames = {**tc.rename, **u.rename}
        f = read_table(p, role, text_columns=[k for k, v in renames.items() if v in text] + text).rename(columns=renames)
        missing, extra = sorted(set(first.columns) - set(f.columns)), sorted(set(f.columns) - set(first.columns))
        if missing or extra:
            raise DataError(role, (missing or extra)[0], f"union file {p.name}: columns differ from {path.name} "
                            f"after rename: missing {missing[:10]}, extra {extra[:10]} (map them with rename)")
        frames.append(f[list(first.columns)])
        files.append(p)
        log.info("loaded %s: %s more rows from %s (union)", role, f"{len(f):,}", p.name)
    return pd.concat(frames, ignore_index=True)


def _apply_types(raw: pd.DataFrame, role: str, tc: TableConfig) -> pd.DataFrame:
    """Missing-value tokens (``tc.na_values``, any column) and declared column types (``tc.types``)."""
    if not tc.na_values and not tc.types:
        return raw
    raw = raw.copy()
    tokens = {t.strip() for t in tc.na_values}
    if tokens:
        for col in raw.columns:
            if not pd.api.types.is_numeric_dtype(raw[col]) and not pd.api.types.is_datetime64_any_dtype(raw[col]):
                raw[col] = raw[col].mask(raw[col].astype("string").str.strip().isin(tokens))
    for col, kind in tc.types.items():
        if col not in raw.columns:
            raise DataError(role, col, f"declared type '{kind}' for a column not in the file; columns found: "
                            f"{list(raw.columns)[:20]}")
        s = raw[col]
        if kind == "numeric":
            num = pd.to_numeric(s, errors="coerce").astype("float64")
            bad = _unparsed(s, num)
            if bad is not None:
                raise DataError(role, col, "declared numeric, but some values are not numbers (list missing-value "
                                "tokens in na_values)", int(bad.sum()), raw.loc[bad].head(5))
            raw[col] = num
        elif kind in ("category", "text"):
            raw[col] = key_text(s).astype(object).where(s.notna().to_numpy(), None)
        else:
            fmt = kind.split(":", 1)[1] if ":" in kind else tc.date_format
            raw[col] = _parse_dates(raw, role, col, fmt, required=False)
    return raw


# --------------------------------------------------------------------------- lookups, joins, columns
def key_text(values: pd.Series | pd.Index | np.ndarray) -> pd.Series:
    """Key values as text for matching across files: 90001, 90001.0 and "90001" all become "90001"."""
    s = pd.Series(values)
    if pd.api.types.is_bool_dtype(s):
        return s.astype("string")
    if pd.api.types.is_integer_dtype(s):
        return s.astype("string")
    if pd.api.types.is_float_dtype(s):
        f = s.astype("float64")
        ok = f.dropna()
        if len(ok) == 0 or bool((ok % 1 == 0).all() and ok.abs().max() < 2**53):
            return f.astype("Int64").astype("string")
        return f.astype("string")
    return s.astype("string").str.strip()


def _composite_key(df: pd.DataFrame, keys: list[str]) -> pd.Series:
    parts = [key_text(df[k]).reset_index(drop=True) for k in keys]
    if len(parts) == 1:
        return parts[0]
    out = parts[0]
    for p in parts[1:]:
        out = out + "\x1f" + p  # NA in any part -> NA
    return out


def _apply_lookups(raw: pd.DataFrame, role: str, tc: TableConfig, data_dir: Path, files: list[Path]) -> pd.DataFrame:
    """Replace coded columns by the names in their lookup files (``tc.lookups``)."""
    if not tc.lookups:
        return raw
    raw = raw.copy()
    for col, lk in tc.lookups.items():
        if col not in raw.columns:
            raise DataError(role, col, f"lookup column not in the file; columns found: {list(raw.columns)[:20]}")
        path = find_table_file(data_dir, lk.file)
        if path is None:
            raise InputNotFoundError(f"table '{role}': lookup file '{lk.file}' for column '{col}' "
                                     f"(tried {', '.join(SUFFIXES)}) not in {data_dir}")
        lut = read_table(path, role)
        files.append(path)
        for c in (lk.key, lk.value):
            if c not in lut.columns:
                raise DataError(role, col, f"lookup file {path.name} has no column '{c}'; "
                                f"columns found: {list(lut.columns)[:20]}")
        keys = key_text(lut[lk.key])
        dup = keys.duplicated(keep=False) & keys.notna()
        if dup.any():
            raise DataError(role, col, f"lookup file {path.name}: repeated keys in '{lk.key}'", int(dup.sum()),
                            lut.loc[dup.to_numpy()].head(5))
        table = pd.Series(lut[lk.value].to_numpy(), index=keys.to_numpy())[keys.notna().to_numpy()]
        codes, uniques = pd.factorize(raw[col], use_na_sentinel=True)
        names = table.reindex(key_text(pd.Series(uniques)).to_numpy()).to_numpy(dtype=object)
        unmapped = pd.isna(names)
        if unmapped.any():
            rows = np.isin(codes, np.flatnonzero(unmapped))
            if lk.on_missing == "error":
                raise DataError(role, col, f"codes not in lookup file {path.name} (set on_missing: keep or missing "
                                f"to accept them)", int(rows.sum()), raw.loc[rows].head(5))
            if lk.on_missing == "keep":
                names[unmapped] = key_text(pd.Series(uniques[unmapped])).to_numpy(dtype=object)
            log.warning("table '%s', column '%s': %d row(s) with codes not in %s (%s)", role, col, int(rows.sum()),
                        path.name, "kept as codes" if lk.on_missing == "keep" else "set missing")
        name_codes, name_levels = pd.factorize(pd.Series(names, dtype="string"), use_na_sentinel=True)
        final = np.where(codes >= 0, name_codes[np.maximum(codes, 0)], -1)  # -1: missing
        raw[col] = pd.Categorical.from_codes(final, categories=pd.Index(name_levels.astype(str)))
    return raw


def _apply_joins(base: pd.DataFrame, tc: TableConfig, data_dir: Path, files: list[Path]) -> pd.DataFrame:
    """Left-join ``tc.joins`` onto the customers table, in order, checking keys and matches."""
    for j in tc.joins:
        path = find_table_file(data_dir, j.file)
        if path is None:
            raise InputNotFoundError(f"table 'customers': join file '{j.file}' (tried {', '.join(SUFFIXES)}) "
                                     f"not in {data_dir}")
        id_col = tc.columns.get("customer_id", "customer_id")
        right = read_table(path, "customers", text_columns=[r for k, r in zip(j.left_keys, j.right_keys, strict=True)
                                                          if k == id_col])
        files.append(path)
        for k in j.left_keys:
            if k not in base.columns:
                raise DataError("customers", k, f"join key missing in the customers table assembled before joining "
                                f"{path.name}; columns found: {list(base.columns)[:20]}")
        for k in j.right_keys:
            if k not in right.columns:
                raise DataError("customers", k, f"join key missing in {path.name}; columns found: "
                                f"{list(right.columns)[:20]}")
        cols = list(j.columns) if j.columns is not None else [c for c in right.columns if c not in j.right_keys]
        absent = [c for c in cols if c not in right.columns]
        if absent:
            raise DataError("customers", absent[0], f"join columns {absent} not in {path.name}; "
                            f"columns found: {list(right.columns)[:20]}")
        overlap = [c for c in cols if c in base.columns]
        if overlap:
            log.info("join %s: column(s) %s already present, kept from the earlier file", path.name, overlap)
            cols = [c for c in cols if c not in overlap]
        rkey = _composite_key(right, j.right_keys)
        dup = rkey.duplicated(keep=False) & rkey.notna()
        if dup.any():
            raise DataError("customers", j.right_keys[0], f"join file {path.name}: repeated key values (each "
                            f"customer row must match at most one row)", int(dup.sum()), right.loc[dup.to_numpy()].head(5))
        lkey = _composite_key(base, j.left_keys)
        valid = rkey.notna().to_numpy()
        index = pd.Index(rkey[valid].to_numpy(dtype=object))
        pos = index.get_indexer(lkey.to_numpy(dtype=object))
        pos = np.where(lkey.isna().to_numpy(), -1, pos)
        miss = pos < 0
        if miss.any() and not j.allow_missing:
            raise DataError("customers", j.left_keys[0], f"rows with no match in {path.name} on {j.right_keys} "
                            f"(set allow_missing: true to keep them with empty columns)", int(miss.sum()),
                            base.loc[miss, j.left_keys].head(5))
        rows = right.loc[valid, cols].reset_index(drop=True)
        joined = rows.reindex(pd.Index(pos))  # -1 is not a row label -> all missing
        joined.index = base.index
        base = pd.concat([base, joined], axis=1)
        log.info("joined %s on %s: +%d column(s), %d unmatched", path.name, j.left_keys, len(cols), int(miss.sum()))
    return base


def _exclude(raw: pd.DataFrame, role: str, tc: TableConfig, keep: set[str]) -> pd.DataFrame:
    """Drop ``tc.exclude`` columns; a name in no file is an error (a typo must not let a leak through).

    Columns in ``keep`` (role columns, the snapshot label) are never dropped: they are not features anyway.
    """
    if not tc.exclude:
        return raw
    absent = [c for c in tc.exclude if c not in raw.columns]
    if absent:
        raise DataError(role, absent[0], f"excluded column(s) {absent} not in the table (check the spelling); "
                        f"columns found: {list(raw.columns)[:40]}")
    return raw.drop(columns=[c for c in tc.exclude if c not in keep])


def _resolve_attributes(raw: pd.DataFrame, tc: TableConfig, role_cols: set[str], skip: set[str]) -> list[str]:
    """The customers attribute columns: the configured list, or for ``auto`` every usable column.

    ``auto`` leaves out role columns, ``skip`` (label, derived sources), constant columns and text columns
    that look like identifiers (a distinct value in every row, at least 20; or more than 50 distinct values
    in more than half the rows).
    """
    if not tc.auto_attributes:
        return list(tc.attributes)
    attrs: list[str] = []
    constant: list[str] = []
    id_like: list[str] = []
    n = len(raw)
    for c in raw.columns:
        if c in role_cols or c in skip:
            continue
        s = raw[c]
        kind = auto_attribute_kind(n, int(s.nunique(dropna=True)), int(s.nunique(dropna=False)), int(s.notna().sum()),
                                   pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s))
        {"constant": constant, "id_like": id_like, "attribute": attrs}[kind].append(str(c))
    log_auto_attributes(attrs, constant, id_like)
    return attrs


def auto_attribute_kind(n_rows: int, n_distinct: int, n_distinct_or_missing: int, n_present: int,
                        numeric: bool) -> str:
    """``attributes: auto`` rule for one column: "constant", "id_like" or "attribute".

    Constant: one value (or missing) everywhere; value-or-missing is informative. Identifier-like (text
    only): a distinct value in every non-empty row (at least 20), or more than max(50, n/2) distinct values.
    Shared by the pandas and Spark engines so both pick the same columns.
    """
    if n_distinct_or_missing <= 1:
        return "constant"
    if not numeric and ((n_distinct >= 20 and n_distinct == n_present) or n_distinct > max(50, n_rows // 2)):
        return "id_like"
    return "attribute"


def log_auto_attributes(attrs: list[str], constant: list[str], id_like: list[str]) -> None:
    if constant:
        log.info("attributes: auto: constant column(s) left out: %s", constant)
    if id_like:
        log.warning("attributes: auto: identifier-like text column(s) left out (exclude them to silence this): %s",
                    id_like)
    log.info("attributes: auto: %d column(s): %s", len(attrs), attrs)


def _snapshot_label(raw: pd.DataFrame, label: LabelConfig) -> np.ndarray:
    """The snapshot 0/1 label from ``label.column`` of the assembled customers table."""
    col = label.column
    assert col is not None
    if col not in raw.columns:
        raise DataError("customers", col, f"label column not in the customers table (after joins); "
                        f"columns found: {list(raw.columns)[:40]}")
    s = raw[col]
    if s.isna().any():
        raise DataError("customers", col, "missing labels", int(s.isna().sum()), raw.loc[s.isna()].head(5))
    if pd.api.types.is_bool_dtype(s):
        return s.to_numpy().astype(np.int8)
    if pd.api.types.is_numeric_dtype(s) and label.positive_values is None:
        bad = ~s.isin([0, 1])
        if bad.any():
            raise DataError("customers", col, "labels must be 0 or 1", int(bad.sum()), raw.loc[bad].head(5))
        return s.to_numpy().astype(np.int8)
    text = key_text(s).str.lower()
    if label.positive_values is not None:
        return text.isin([str(v).lower() for v in label.positive_values]).to_numpy().astype(np.int8)
    pos, neg = {"1", "yes", "y", "true", "churned"}, {"0", "no", "n", "false", "stayed"}
    bad = ~text.isin(pos | neg)
    if bad.any():
        raise DataError("customers", col, "labels are neither yes/no, true/false nor 0/1 (set label.positive_values)",
                        int(bad.sum()), raw.loc[bad.to_numpy()].head(5))
    return text.isin(pos).to_numpy().astype(np.int8)


def _add_derived_columns(tables: Tables, tc: TableConfig, sources: pd.DataFrame, fmt: str | None) -> None:
    """Compute ``tc.derived`` attributes (ages, durations) once all tables are loaded."""
    if not tc.derived:
        return
    from features.derive import days_between, whole_years_between

    for name, dc in tc.derived.items():
        if name in tables.customers.columns:
            raise DataError("customers", name, "derived column name is already a customers column")
        dates = _parse_dates(sources, "customers", dc.source, fmt, required=False)
        if dc.as_of == "data_start":
            as_of = tables.data_start
        elif dc.as_of == "data_end":
            as_of = tables.data_end
        else:
            as_of = pd.Timestamp(dc.as_of)
        if pd.isna(as_of):
            raise DataError("customers", dc.source, f"derived column '{name}': the data has no dates for as_of "
                            f"'{dc.as_of}' (give a date)")
        fn = whole_years_between if dc.years_since else days_between
        tables.customers[name] = fn(dates.reset_index(drop=True), as_of)
        tables.attributes.append(name)
        tables.derived[name] = f"{'years' if dc.years_since else 'days'} from {dc.source} to {pd.Timestamp(as_of).date()}"


def _unparsed(s: pd.Series, parsed: pd.Series) -> pd.Series | None:
    """Rows of ``s`` that hold a non-blank value ``parsed`` could not read (a boolean mask), or None.

    Only the rows that failed to parse are turned into text, so an already typed (datetime, numeric)
    column costs one ``isna`` and never a string per row.
    """
    cand = parsed.isna() & s.notna()
    if not cand.any():
        return None
    idx = cand.to_numpy().nonzero()[0]
    text = s.iloc[idx].astype(str).str.strip().to_numpy()
    mask = np.zeros(len(s), dtype=bool)
    mask[idx[text != ""]] = True
    if not mask.any():
        return None
    return pd.Series(mask, index=s.index)


_DMY = r"^\s*(\d{1,2})[/.-](\d{1,2})[/.-](\d{2,4})"


def _check_day_month_order(s: pd.Series, role: str, col: str) -> None:
    """Without a declared format, "13/04/2021" can only be day-first while "03/04/2021" is read month-first:
    one column holding both would be parsed in two orders. That is an error naming the column and examples."""
    values = pd.Series(pd.unique(s.dropna().astype(str)))
    parts = values.str.extract(_DMY).dropna()
    if parts.empty:
        return
    first, second = parts[0].astype(int), parts[1].astype(int)
    day_first = values[parts.index[(first > 12) & (second <= 12)]]
    other = values[parts.index[first <= 12]]
    if len(day_first) and len(other):
        raise DataError(role, col, f"dates in two day/month orders: {day_first.iloc[0]!r} can only be day-first, "
                        f"{other.iloc[0]!r} would be read month-first; declare the format (the table's "
                        "date_format or data.date_format, e.g. '%d/%m/%Y')")


def _parse_dates(df: pd.DataFrame, role: str, col: str, fmt: str | None, required: bool) -> pd.Series:
    """Parse a date column to naive datetime64[ns]; unparseable or (if required) empty values are errors."""
    s = _numbers_as_date_text(df, role, col, fmt)
    parsed = None
    if pd.api.types.is_datetime64_any_dtype(s):
        parsed = s
    elif not fmt and len(s) > 10_000:
        # fast path for large ISO columns (``mixed`` parses element by element); anything it cannot read
        # exactly like ``mixed`` (offsets, other layouts) falls through to the general path below
        try:
            fast = pd.to_datetime(s, errors="coerce", format="ISO8601")
            if getattr(fast.dt, "tz", None) is None and not (fast.isna() & s.notna()).any():
                parsed = fast
        except (ValueError, TypeError):
            parsed = None
    if parsed is None:
        if not fmt:
            _check_day_month_order(s, role, col)
        try:
            parsed = pd.to_datetime(s, errors="coerce", format=fmt if fmt else "mixed")
        except ValueError:  # several UTC offsets (e.g. local time across a DST change): normalise to UTC
            parsed = pd.to_datetime(s, errors="coerce", format=fmt if fmt else "mixed", utc=True)
    if getattr(parsed.dt, "tz", None) is not None:
        parsed = parsed.dt.tz_convert("UTC").dt.tz_localize(None)
    parsed = _to_ns(parsed, df, role, col)
    bad = _unparsed(s, parsed)
    if bad is not None:
        raise DataError(role, col, "unparseable dates (or outside 1677-09-22..2262-04-11)", int(bad.sum()),
                        df.loc[bad].head(5))
    if required and parsed.isna().any():
        n = int(parsed.isna().sum())
        raise DataError(role, col, "missing dates", n, df.loc[parsed.isna()].head(5))
    return parsed


def _numbers_as_date_text(df: pd.DataFrame, role: str, col: str, fmt: str | None) -> pd.Series:
    """A numeric date column: with a ``date_format`` (e.g. ``%Y%m%d``) its digits as text; without one an error.

    Read as nanoseconds since 1970, epoch seconds or 20240115 would silently become dates in January 1970.
    """
    s = df[col]
    if not pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s) or not s.notna().any():
        return s
    if fmt:
        return key_text(s)
    raise DataError(role, col, "numbers where dates are expected (epoch seconds?): write dates as text "
                    "(YYYY-MM-DD) or set data.date_format (e.g. '%Y%m%d')", int(s.notna().sum()),
                    df.loc[s.notna()].head(5))


def _to_ns(parsed: pd.Series, df: pd.DataFrame, role: str, col: str) -> pd.Series:
    """``parsed`` in nanoseconds; dates nanoseconds cannot hold (year 2262 or later, before 1677) are a DataError."""
    try:
        return parsed.astype("datetime64[ns]")
    except (OverflowError, pd.errors.OutOfBoundsDatetime):
        lo, hi = pd.Timestamp.min, pd.Timestamp.max
        bad = ((parsed > hi) | (parsed < lo)).to_numpy()
        raise DataError(role, col, f"dates outside the supported range {lo.date()}..{hi.date()} (year 2262 or later?)",
                        int(bad.sum()), df.loc[bad].head(5)) from None


def _check_range(values: pd.Series, df: pd.DataFrame, role: str, col: str, low: float, high: float) -> None:
    """Non-finite values, or values outside ``[low, high]``, are a DataError with a count and examples."""
    v = values.to_numpy(dtype="float64")
    bad = ~np.isnan(v) & (~np.isfinite(v) | (v < low) | (v > high))
    if bad.any():
        raise DataError(role, col, f"values outside [{low:g}, {high:g}] or infinite (see data.limits in the config)",
                        int(bad.sum()), df.loc[bad].head(5))


def _check_event_types(cat: pd.Categorical, df: pd.DataFrame, role: str, cap: int) -> None:
    """More distinct event types than ``cap`` would explode the feature table (each type becomes ~15 features)."""
    if len(cat.categories) > cap:
        top = pd.Series(cat).value_counts().head(5).index.tolist()
        raise DataError(role, "event_type", f"{len(cat.categories):,} distinct event types, more than "
                        f"data.limits.max_event_types ({cap}); map them to fewer names (an events 'lookups' file) "
                        "or list the ones to use in features.event_types, or raise the cap", None, top)


def _numeric(df: pd.DataFrame, role: str, col: str) -> pd.Series:
    s = df[col]
    if s.dtype == np.float64:  # already numbers: nothing to parse, no copy
        return s
    parsed = pd.to_numeric(s, errors="coerce").astype("float64")
    bad = _unparsed(s, parsed)
    if bad is not None:
        raise DataError(role, col, "non-numeric values", int(bad.sum()), df.loc[bad].head(5))
    return parsed


def _ids(df: pd.DataFrame, role: str, as_text: bool = True) -> pd.Series:
    """The customer ids (as text unless ``as_text=False``); missing ids are a DataError."""
    s = df["customer_id"]
    if s.isna().any():
        raise DataError(role, "customer_id", "missing customer ids", int(s.isna().sum()), df.loc[s.isna()].head(5))
    return s.astype(str) if as_text else s


def validate_customers(df: pd.DataFrame, attributes: list[str], fmt: str | None,
                       signup_required: bool = True) -> pd.DataFrame:
    """Check and normalise the customers table.

    ``signup_required=False`` (snapshot labels, dates derived from subscriptions): the signup date may be
    missing, or the column absent (all NaT).
    """
    if df.empty:
        raise DataError("customers", None, "table is empty")
    out = pd.DataFrame({"customer_id": _ids(df, "customers")})
    dup = out["customer_id"].duplicated(keep=False)
    if dup.any():
        raise DataError(
            "customers", "customer_id", "duplicate customer ids", int(dup.sum()),
            df.loc[dup].head(5),
        )
    if "signup_date" in df or signup_required:
        out["signup_date"] = _parse_dates(df, "customers", "signup_date", fmt, required=signup_required).to_numpy()
    else:
        out["signup_date"] = pd.Series(pd.NaT, index=out.index, dtype="datetime64[ns]")
    if "churn_date" in df:
        out["churn_date"] = _parse_dates(df, "customers", "churn_date", fmt, required=False).to_numpy()
        early = out["churn_date"] < out["signup_date"]
        if early.any():
            raise DataError("customers", "churn_date", "churn date before signup date", int(early.sum()),
                            df.loc[early.to_numpy()].head(5))
    else:
        out["churn_date"] = pd.Series(pd.NaT, index=out.index, dtype="datetime64[ns]")
    for a in attributes:
        col = df[a]
        if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
            out[a] = col.astype("float64").to_numpy()
        else:
            out[a] = col.astype("string").fillna("missing").astype(str).to_numpy()
    return out.reset_index(drop=True)


def _arrow_text(s: pd.Series) -> pa.ChunkedArray:
    """A text column as an Arrow string array, without a Python object per row when it is Arrow-backed."""
    arr = getattr(s.array, "_pa_array", None)
    if arr is not None and (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        return arr if isinstance(arr, pa.ChunkedArray) else pa.chunked_array([arr])
    return pa.chunked_array([pa.array(s.astype(str).to_numpy(dtype=object), type=pa.large_string())])


def _customer_codes(ids: pd.Series, customer_ids: pd.Series) -> np.ndarray:
    """Per row of ``ids`` (text, no missing values), the row of that id in ``customer_ids`` (int32; -1: unknown)."""
    values = _arrow_text(ids)
    value_set = _arrow_text(customer_ids).combine_chunks()
    if value_set.type != values.type:
        value_set = value_set.cast(values.type)
    idx = pc.fill_null(pc.index_in(values, value_set=value_set), -1)
    return np.asarray(idx.to_numpy(), dtype=np.int32)


def _take_text(source: pa.ChunkedArray, positions: np.ndarray, dtype: pd.StringDtype) -> pd.api.extensions.ExtensionArray:
    """``source[positions]`` as a pandas text array of ``dtype``, Arrow to Arrow (taken in slices: no offset
    overflow; gathered by a few threads, as Arrow's ``take`` releases the GIL)."""
    source = source.combine_chunks() if source.num_chunks != 1 else source.chunk(0)
    step = 1 << 22

    def take(i: int) -> pa.Array:
        return source.take(pa.array(positions[i:i + step]))

    chunks = list(_threads().map(take, range(0, len(positions), step))) or [source[:0]]
    return pd.array(pa.chunked_array(chunks, type=source.type), dtype=dtype)


def _time_order(ts_ns: np.ndarray, codes: np.ndarray) -> np.ndarray | None:
    """The row order by (timestamp, customer code), stable; None when the rows are already in it.

    Whole-second timestamps (exports usually are) sort by two passes of :func:`_sort_packed` (code, then
    second), when they fit; other data by Arrow's stable two-key sort. Both give exactly
    ``np.lexsort((codes, ts_ns))``, faster.
    """
    if len(ts_ns) < 2:
        return None
    step = np.diff(ts_ns)
    if (step >= 0).all():
        ties = (step == 0).nonzero()[0]
        if not len(ties) or (codes[ties + 1] >= codes[ties]).all():
            return None
    del step
    lo, hi, n_codes = int(ts_ns.min()), int(ts_ns.max()), int(codes.max()) + 1
    row_bits = (len(ts_ns) - 1).bit_length()
    if (hi - lo) < 2**62 and max(n_codes, (hi - lo) // 10**9 + 1).bit_length() + row_bits <= 63 \
            and not any((ts_ns[i:i + _SLICE] % 10**9).any() for i in range(0, len(ts_ns), _SLICE)):
        by_code = _sort_packed(codes, row_bits)  # stable by code, then stable by second: (second, code, row)
        seconds = ts_ns[by_code]
        seconds -= lo
        seconds //= 10**9
        order = _sort_packed(seconds, row_bits, overwrite=True)
        for i in range(0, len(order), _SLICE):  # order = by_code[order], a slice at a time (no third array)
            order[i:i + _SLICE] = by_code[order[i:i + _SLICE]]
        return order
    table = pa.table({"t": ts_ns, "c": codes})
    order = pc.sort_indices(table, sort_keys=[("t", "ascending"), ("c", "ascending")])
    return np.asarray(order.to_numpy(), dtype=np.int64)


_SLICE = 1 << 21  # rows per slice of the sliced (and threaded) array steps


def _sort_packed(keys: np.ndarray, row_bits: int, overwrite: bool = False) -> np.ndarray:
    """The stable argsort of ``keys`` (non-negative, ``key << row_bits`` below 2**63), as int64.

    Key and row number are packed into one int64, so the sort works on unique values and needs no stable
    algorithm (numpy's default sort is several times faster than its stable argsort). ``overwrite``: int64
    ``keys`` may be overwritten (the result is then that array).
    """
    packed = keys.astype(np.int64, copy=not overwrite)
    packed <<= row_bits
    for i in range(0, len(packed), _SLICE):
        packed[i:i + _SLICE] |= np.arange(i, min(i + _SLICE, len(packed)), dtype=np.int64)
    packed.sort()
    packed &= (1 << row_bits) - 1
    return packed


def _customer_id_column(customers: pd.DataFrame, codes: np.ndarray) -> pd.api.extensions.ExtensionArray:
    """The customers' ids at ``codes`` (a child table's ``customer_id``), Arrow to Arrow in the customers' text dtype."""
    cust = customers["customer_id"]
    cust_dtype = cust.dtype if isinstance(cust.dtype, pd.StringDtype) else pd.StringDtype("pyarrow", na_value=np.nan)
    return _take_text(_arrow_text(cust), codes, cust_dtype)


def _known_codes(df: pd.DataFrame, role: str, customers: pd.DataFrame) -> np.ndarray:
    """Per row, the row of its customer in ``customers``; missing or unknown customers are a DataError.

    Categorical ids (see :func:`read_parquet`) are looked up once per distinct id, not once per row.
    """
    ids = _ids(df, role, as_text=False)
    if isinstance(ids.dtype, pd.CategoricalDtype):
        per_id = _customer_codes(pd.Series(ids.cat.categories.astype(str)), customers["customer_id"])
        codes = per_id[ids.cat.codes.to_numpy()] if len(per_id) else np.full(len(ids), -1, dtype=np.int32)
    else:
        codes = _customer_codes(ids.astype(str), customers["customer_id"])
    unknown = codes < 0
    if unknown.any():
        raise DataError(
            role, "customer_id", "rows whose customer is not in the customers table", int(unknown.sum()),
            df.loc[unknown].head(5),
        )
    return codes


def validate_child(df: pd.DataFrame, role: str, customers: pd.DataFrame, fmt: str | None,
                   limits: DataLimits | None = None, extra: dict[str, Any] | None = None) -> pd.DataFrame:
    """Check a child table, attach customer codes and sort by timestamp (ties by customer code, stable).

    ``limits``: plausibility limits (amounts, values, hours, ratings, number of event types); default ``DataLimits()``.
    ``extra`` (``extra_columns``): more columns kept, numeric ones checked as numbers, the others as text.
    Every column is checked on the rows as read (so examples are the user's rows) and sorted once, by one order.
    Once checked, the raw frame is let go (freed here when the caller holds no other reference to it) and each
    checked column is released as soon as its sorted copy exists, so the table is never held twice over.
    """
    limits = limits or DataLimits()
    if df.empty:
        raise DataError(role, None, "table is empty (remove it from the config or the folder to switch its features off)")
    cols: dict[str, object] = {"customer_id": None, "_code": _known_codes(df, role, customers),
                               "timestamp": _parse_dates(df, role, "timestamp", fmt, required=True).to_numpy()}
    checks = {"events": _event_columns, "transactions": _transaction_columns}
    if role in checks:
        cols.update(checks[role](df, limits))
    for col, kind in (extra or {}).items():
        if kind == "numeric":
            cols[col] = _numeric(df, role, col).to_numpy()
        else:
            cols[col] = df[col].astype("string").fillna("").astype(str).to_numpy()
    if role == "interactions":
        cols.update(_interaction_columns(df, limits))
    del df
    order = _time_order(cols["timestamp"].view(np.int64), cols["_code"])  # type: ignore[union-attr]
    if order is not None:
        for name, values in cols.items():
            if values is not None and not np.isscalar(values):
                cols[name] = None  # the unsorted column goes as its sorted copy is made
                cols[name] = _take_column(values, order)
    del order
    cols["customer_id"] = _customer_id_column(customers, cols["_code"])  # type: ignore[arg-type]
    return pd.DataFrame(cols, copy=False)  # absent optional columns (scalars) are broadcast in their place


def _take_column(values: Any, order: np.ndarray) -> Any:
    """``values`` in ``order``: a NumPy array, a Categorical (its codes) or another pandas array."""
    if isinstance(values, np.ndarray):
        return take_rows(values, order)
    if isinstance(values, pd.Categorical):
        return pd.Categorical.from_codes(take_rows(values.codes, order), dtype=values.dtype, validate=False)
    return values.take(order)


def take_rows(values: np.ndarray, order: np.ndarray) -> np.ndarray:
    """``values[order]`` (``order``: valid int64 positions), gathered in slices by a few threads.

    NumPy's ``take`` releases the GIL, so the slices of one column are gathered in parallel; the only extra
    memory is the result.
    """
    out = np.empty(len(order), dtype=values.dtype)

    def gather(i: int) -> None:
        np.take(values, order[i:i + _SLICE], out=out[i:i + _SLICE], mode="clip")

    starts = range(0, len(order), _SLICE)
    if values.dtype.hasobject or len(starts) < 2:  # Python objects hold the GIL: one pass
        np.take(values, order, out=out, mode="clip")
    else:
        list(_threads().map(gather, starts))
    return out


_POOLS: dict[int, ThreadPoolExecutor] = {}


def _threads() -> ThreadPoolExecutor:
    """This process's gather threads (a forked child does not inherit the parent's threads: it starts its own)."""
    pid = os.getpid()
    if pid not in _POOLS:
        _POOLS.clear()
        _POOLS[pid] = ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1), thread_name_prefix="loader")
    return _POOLS[pid]


def _event_columns(df: pd.DataFrame, limits: DataLimits) -> dict[str, object]:
    """``event_type`` (categorical: no text per row) and ``value`` (checked numbers or NaN)."""
    role = "events"
    et = df["event_type"]
    if et.isna().any():
        raise DataError(role, "event_type", "missing event types", int(et.isna().sum()), df.loc[et.isna()].head(5))
    cat = event_type_categorical(et)
    _check_event_types(cat, df, role, limits.max_event_types)
    cols: dict[str, object] = {"event_type": cat}
    if "value" in df:
        value = _numeric(df, role, "value")
        _check_range(value, df, role, "value", -limits.max_abs_amount, limits.max_abs_amount)
        cols["value"] = value.to_numpy()
    else:
        cols["value"] = np.nan
    return cols


def event_type_categorical(et: pd.Series) -> pd.Categorical:
    """Event types (no missing values) as a Categorical of their text, categories sorted, only those present.

    Equal to ``pd.Categorical(et.astype(str))``; a column already categorical (a Parquet dictionary, a lookup)
    is re-coded on its few categories instead of being turned into one string per row and back.
    """
    if isinstance(et.dtype, pd.CategoricalDtype):
        codes = et.array.codes
        present = np.flatnonzero(np.bincount(codes, minlength=len(et.cat.categories)))  # a count, not a sort
        names = pd.Index(et.cat.categories[present].astype(str))
        if names.is_unique:
            order = names.argsort(kind="stable")
            new_pos = np.full(len(et.cat.categories), -1, dtype=np.int64)
            new_pos[present[order]] = np.arange(len(order))
            cats = pd.Index(names[order].astype(str))
            small = pd.Categorical.from_codes([], cats).codes.dtype  # the code width pandas picks for them
            return pd.Categorical.from_codes(new_pos[codes].astype(small) if len(order) else codes, cats)
    return pd.Categorical(et.astype(str))  # a few distinct types: integer codes, no string per row


def _transaction_columns(df: pd.DataFrame, limits: DataLimits) -> dict[str, object]:
    """``amount``: present, not negative, within the limit."""
    role = "transactions"
    amount = _numeric(df, role, "amount")
    if amount.isna().any():
        raise DataError(role, "amount", "missing amounts", int(amount.isna().sum()), df.loc[amount.isna()].head(5))
    neg = amount < 0
    if neg.any():
        raise DataError(role, "amount", "negative amounts (record refunds as a separate table)", int(neg.sum()),
                        df.loc[neg].head(5))
    _check_range(amount, df, role, "amount", 0.0, limits.max_abs_amount)
    return {"amount": amount.to_numpy()}


def _interaction_columns(df: pd.DataFrame, limits: DataLimits) -> dict[str, object]:
    """Channel, category, text (filled when absent), the rating and the optional response/resolution hours."""
    role = "interactions"
    cols: dict[str, object] = {}
    for col, fill in (("channel", "unknown"), ("category", "unknown"), ("text", "")):
        if col in df:
            text = df[col].astype("string").fillna(fill).astype(str)
            cols[col] = text.array
        else:
            cols[col] = fill
    if "rating" in df:
        rating = _numeric(df, role, "rating")
        _check_range(rating, df, role, "rating", limits.rating_min, limits.rating_max)
        cols["rating"] = rating.to_numpy()
    else:
        cols["rating"] = np.nan
    for col in ("response_hours", "resolution_hours"):  # optional: only present when mapped / in the file
        if col in df:
            hours = _numeric(df, role, col)
            neg = hours < 0
            if neg.any():
                raise DataError(role, col, "negative hours", int(neg.sum()), df.loc[neg].head(5))
            _check_range(hours, df, role, col, 0.0, limits.max_abs_amount)
            cols[col] = hours.to_numpy()
    return cols


def prepare_subscriptions(df: pd.DataFrame, fmt: str | None, limits: DataLimits | None = None) -> pd.DataFrame:
    """Check the subscriptions table (before customer codes): ids, dates, end >= start, amounts >= 0.

    Returns ``customer_id`` (text), ``start_date``, ``end_date`` (NaT = open-ended) and ``amount``
    (NaN when not mapped), sorted by start date.
    """
    role = "subscriptions"
    if df.empty:
        raise DataError(role, None, "table is empty")
    out = pd.DataFrame({"customer_id": _ids(df, role).to_numpy()})
    out["start_date"] = _parse_dates(df, role, "start_date", fmt, required=True).to_numpy()
    out["end_date"] = _parse_dates(df, role, "end_date", fmt, required=False).to_numpy()
    early = (out["end_date"] < out["start_date"]).to_numpy()
    if early.any():
        raise DataError(role, "end_date", "end date before start date", int(early.sum()), df.loc[early].head(5))
    if "amount" in df:
        amount = _numeric(df, role, "amount")
        neg = amount < 0
        if neg.any():
            raise DataError(role, "amount", "negative amounts", int(neg.sum()), df.loc[neg].head(5))
        _check_range(amount, df, role, "amount", 0.0, (limits or DataLimits()).max_abs_amount)
        out["amount"] = amount.to_numpy()
    else:
        out["amount"] = np.nan
    return out.sort_values(["start_date", "customer_id"], kind="stable").reset_index(drop=True)


def _attach_codes(out: pd.DataFrame, role: str, customers: pd.DataFrame) -> pd.DataFrame:
    """Add ``_code`` (row of the customer in ``customers``); unknown customers are an error."""
    codes = _customer_codes(out["customer_id"].astype(str), customers["customer_id"])
    unknown = codes < 0
    if unknown.any():
        raise DataError(role, "customer_id", "rows whose customer is not in the customers table", int(unknown.sum()),
                        out.loc[unknown].head(5))
    out = out.copy()
    out.insert(1, "_code", codes.astype(np.int32))
    return out
