"""The input data contract: find, load, rename and validate the raw tables.

A data folder holds ``customers`` (required) and optionally ``events``, ``transactions`` and
``interactions`` as CSV or Parquet. The config maps the user's file and column names onto the
contract's roles. Everything is checked here, at the edge, so feature code can trust its inputs:
a violation raises :class:`~churn.errors.DataError` naming the table, column, count and examples.

Child tables come back sorted by timestamp with an ``_code`` column (the row position of the
customer in ``customers``), which lets feature code slice time windows with ``searchsorted``
and aggregate with ``np.bincount``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from churn.config import CANONICAL_COLUMNS, DataConfig, TableConfig
from churn.errors import DataError, InputNotFoundError
from churn.io import hash_files

log = logging.getLogger(__name__)

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

    def child(self, name: str) -> pd.DataFrame | None:
        return getattr(self, name)

    @property
    def data_end(self) -> pd.Timestamp:
        """The latest moment observed in any table (labels can only be known up to here)."""
        stamps = [self.customers["signup_date"].max()]
        if "churn_date" in self.customers:
            stamps.append(self.customers["churn_date"].max())
        for name in CHILD_TABLES:
            t = self.child(name)
            if t is not None and len(t):
                stamps.append(t["timestamp"].iloc[-1])
        return max(s for s in stamps if pd.notna(s))

    @property
    def data_start(self) -> pd.Timestamp:
        stamps = [t["timestamp"].iloc[0] for n in CHILD_TABLES if (t := self.child(n)) is not None and len(t)]
        return min(stamps) if stamps else self.customers["signup_date"].min()


def find_table_file(data_dir: Path, tc: TableConfig) -> Path | None:
    """Locate a table's file: the exact name if it exists, else the stem with a known suffix."""
    exact = data_dir / tc.file
    if exact.is_file():
        return exact
    for suffix in SUFFIXES:
        cand = data_dir / f"{tc.file}{suffix}"
        if cand.is_file():
            return cand
    return None


def read_table(path: Path, role: str) -> pd.DataFrame:
    """Read CSV or Parquet into a DataFrame; unreadable files become a DataError."""
    try:
        if path.name.endswith((".parquet", ".pq")):
            return pd.read_parquet(path)
        sep = "\t" if path.name.endswith(".tsv") else ","
        return pd.read_csv(path, sep=sep, low_memory=False)
    except Exception as exc:  # noqa: BLE001 - any reader failure is a data problem for the user
        raise DataError(role, None, f"cannot read {path}: {exc}") from exc


def load_tables(data_dir: str | Path, cfg: DataConfig) -> Tables:
    """Load and validate every configured table found in ``data_dir``."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise InputNotFoundError(f"data folder not found: {data_dir}")
    frames: dict[str, pd.DataFrame] = {}
    files: list[Path] = []
    for role, tc in cfg.tables.items():
        path = find_table_file(data_dir, tc)
        if path is None:
            if role == "customers" or tc.required:
                raise InputNotFoundError(
                    f"table '{role}': no file '{tc.file}' (tried {', '.join(SUFFIXES)}) in {data_dir}"
                )
            log.warning("table '%s' not found in %s: its feature family is switched off", role, data_dir)
            continue
        raw = read_table(path, role)
        frames[role] = _apply_mapping(raw, role, tc)
        files.append(path)
        log.info("loaded %s: %s rows from %s", role, f"{len(raw):,}", path.name)
    for role in CHILD_TABLES:
        if role not in cfg.tables:
            log.warning("table '%s' is not configured: its feature family is switched off", role)

    customers_tc = cfg.tables["customers"]
    customers = validate_customers(frames["customers"], customers_tc.attributes, cfg.date_format)
    tables = Tables(customers=customers, attributes=list(customers_tc.attributes), files=files)
    for role in CHILD_TABLES:
        if role in frames:
            setattr(tables, role, validate_child(frames[role], role, customers, cfg.date_format))
    tables.input_hash = hash_files(files)
    return tables


def _apply_mapping(raw: pd.DataFrame, role: str, tc: TableConfig) -> pd.DataFrame:
    """Rename the user's columns to the contract's roles; keep attributes; check required columns."""
    roles = CANONICAL_COLUMNS[role]
    mapping = {r: tc.columns.get(r, r) for r in roles}
    missing_required = [f"{mapping[r]}" for r, req in roles.items() if req and mapping[r] not in raw.columns]
    if missing_required:
        raise DataError(
            role,
            missing_required[0],
            f"missing required column(s) {missing_required}; columns found: {list(raw.columns)[:20]}",
        )
    missing_attrs = [a for a in tc.attributes if a not in raw.columns]
    if missing_attrs:
        raise DataError(role, missing_attrs[0], f"attribute column(s) {missing_attrs} not in the file")
    keep = {mapping[r]: r for r in roles if mapping[r] in raw.columns}
    out = raw[list(keep) + [a for a in tc.attributes if a not in keep]].rename(columns=keep)
    return out


def _parse_dates(df: pd.DataFrame, role: str, col: str, fmt: str | None, required: bool) -> pd.Series:
    """Parse a date column to naive datetime64[ns]; unparseable or (if required) empty values are errors."""
    s = df[col]
    if pd.api.types.is_datetime64_any_dtype(s):
        parsed = s
    else:
        parsed = pd.to_datetime(s, errors="coerce", format=fmt if fmt else "mixed")
    if getattr(parsed.dt, "tz", None) is not None:
        parsed = parsed.dt.tz_convert("UTC").dt.tz_localize(None)
    parsed = parsed.astype("datetime64[ns]")
    bad = parsed.isna() & s.notna() & (s.astype(str).str.strip() != "")
    if bad.any():
        raise DataError(role, col, "unparseable dates", int(bad.sum()), df.loc[bad].head(5))
    if required and parsed.isna().any():
        n = int(parsed.isna().sum())
        raise DataError(role, col, "missing dates", n, df.loc[parsed.isna()].head(5))
    return parsed


def _numeric(df: pd.DataFrame, role: str, col: str) -> pd.Series:
    s = df[col]
    parsed = pd.to_numeric(s, errors="coerce").astype("float64")
    bad = parsed.isna() & s.notna() & (s.astype(str).str.strip() != "")
    if bad.any():
        raise DataError(role, col, "non-numeric values", int(bad.sum()), df.loc[bad].head(5))
    return parsed


def _ids(df: pd.DataFrame, role: str) -> pd.Series:
    s = df["customer_id"]
    if s.isna().any():
        raise DataError(role, "customer_id", "missing customer ids", int(s.isna().sum()), df.loc[s.isna()].head(5))
    return s.astype(str)


def validate_customers(df: pd.DataFrame, attributes: list[str], fmt: str | None) -> pd.DataFrame:
    """Check and normalise the customers table."""
    if df.empty:
        raise DataError("customers", None, "table is empty")
    out = pd.DataFrame({"customer_id": _ids(df, "customers")})
    dup = out["customer_id"].duplicated(keep=False)
    if dup.any():
        raise DataError(
            "customers", "customer_id", "duplicate customer ids", int(out["customer_id"][dup].nunique()),
            df.loc[dup].head(5),
        )
    out["signup_date"] = _parse_dates(df, "customers", "signup_date", fmt, required=True).to_numpy()
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


def validate_child(df: pd.DataFrame, role: str, customers: pd.DataFrame, fmt: str | None) -> pd.DataFrame:
    """Check a child table, attach customer codes and sort by timestamp."""
    if df.empty:
        raise DataError(role, None, "table is empty (remove it from the config or the folder to switch its features off)")
    ids = _ids(df, role)
    codes = pd.Categorical(ids, categories=customers["customer_id"]).codes
    unknown = codes < 0
    if unknown.any():
        raise DataError(
            role, "customer_id", "rows whose customer is not in the customers table", int(unknown.sum()),
            df.loc[unknown].head(5),
        )
    out = pd.DataFrame({"customer_id": ids.to_numpy(), "_code": codes.astype(np.int32)})
    out["timestamp"] = _parse_dates(df, role, "timestamp", fmt, required=True).to_numpy()
    if role == "events":
        et = df["event_type"]
        if et.isna().any():
            raise DataError(role, "event_type", "missing event types", int(et.isna().sum()), df.loc[et.isna()].head(5))
        out["event_type"] = et.astype(str).to_numpy()
        out["value"] = _numeric(df, role, "value").to_numpy() if "value" in df else np.nan
    elif role == "transactions":
        amount = _numeric(df, role, "amount")
        if amount.isna().any():
            raise DataError(role, "amount", "missing amounts", int(amount.isna().sum()), df.loc[amount.isna()].head(5))
        neg = amount < 0
        if neg.any():
            raise DataError(role, "amount", "negative amounts (record refunds as a separate table)", int(neg.sum()),
                            df.loc[neg].head(5))
        out["amount"] = amount.to_numpy()
    elif role == "interactions":
        for col in ("channel", "category"):
            out[col] = df[col].astype("string").fillna("unknown").astype(str).to_numpy() if col in df else "unknown"
        out["text"] = df["text"].astype("string").fillna("").astype(str).to_numpy() if "text" in df else ""
        out["rating"] = _numeric(df, role, "rating").to_numpy() if "rating" in df else np.nan
    return out.sort_values(["timestamp", "_code"], kind="stable").reset_index(drop=True)
