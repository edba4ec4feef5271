"""``--engine spark``: the default engine's features, built on a Spark cluster by the default engine's code.

Per customer: customers are hash-partitioned into buckets; each bucket's rows run the contract checks
(``validate_customers`` / ``validate_child``) and :class:`~features.build.FeatureBuilder` in ``applyInPandas``.
Whole-table facts the family code reads (event types before the cutoff, whether event values exist, each
table's first timestamp, the rating scale) are aggregated once and injected into every bucket through one
*phantom* customer, whose row is dropped. Population-relative value features (RFM quintiles, lifetime value,
value tier) are :func:`features.value.population_value` itself, run on the driver on the collected
per-customer inputs and the customers table validated there. Row order is (file path, row index in the
file), the default engine's order for one file per table. See ``docs/spark.md`` (limits, settings, scaling).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from churn.config import CANONICAL_COLUMNS, Config
from churn.errors import ConfigError, DataError, InputNotFoundError
from churn.timebase import DAY, window_slice
from features.catalogue import FeatureSpec, count_by

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame, SparkSession

    from features.build import FeatureSet
    from features.contract import Tables

log = logging.getLogger(__name__)

PHANTOM_ID = "\x00churn-spark-phantom"  # cannot collide with a real id (ids are checked)
PHANTOM_CATEGORY = "\x00phantom"
ROW = "_rk"  # global row key of a table row: file index << 40 | row index in the file
BUCKET = "_bucket"
TAG = "_tbl"
P365 = "_purchases_365d"  # hidden: purchases in the last 365 days (input of the RFM frequency score)
ROLES = ("customers", "events", "transactions", "interactions")
TAGS = {r: i for i, r in enumerate(ROLES)}
PREFIX = {"customers": "c__", "events": "e__", "transactions": "t__", "interactions": "i__"}
ROW_BITS = 40
PARQUET_SUFFIXES = (".parquet", ".pq")
OTHER_SUFFIXES = (".csv", ".csv.gz", ".tsv")
DEFAULT_ROWS_PER_BUCKET = 1_000_000


# --------------------------------------------------------------------------------------------- session
def get_spark(master: str | None = None, app_name: str = "churn-early-warning", **conf: str) -> SparkSession:
    """A SparkSession configured for this engine (UTC session time zone, Arrow, workers on this Python).

    ``master`` None keeps what ``spark-submit`` set (or ``local[*]`` when run directly).
    """
    import os
    import sys

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    if master and master.startswith("local"):
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    from pyspark.sql import SparkSession

    b = SparkSession.builder.appName(app_name)
    if master:
        b = b.master(master)
    settings = {"spark.sql.session.timeZone": "UTC", "spark.sql.execution.arrow.pyspark.enabled": "true",
                "spark.ui.showConsoleProgress": "false", **conf}
    for k, v in settings.items():
        b = b.config(k, v)
    spark = b.getOrCreate()
    spark.sparkContext.setLogLevel(os.environ.get("CHURN_SPARK_LOG_LEVEL", "WARN"))
    return spark


@contextmanager
def worker_errors() -> Iterator[None]:
    """Re-raise a contract error raised inside a Spark task (a DataError in a bucket) as itself, not a Py4J error."""
    from churn.errors import ChurnError

    try:
        yield
    except ChurnError:
        raise
    except Exception as exc:
        msg = str(exc)
        for cls in (DataError, ConfigError, InputNotFoundError):
            marker = f"{cls.__module__}.{cls.__name__}: "
            if marker in msg:
                text = msg.rsplit(marker, 1)[1]
                text = text.split("\n\n", 1)[0].split("\n\tat ", 1)[0].split("\nJVM stacktrace", 1)[0].rstrip()
                err = cls.__new__(cls)
                Exception.__init__(err, text)
                if cls is DataError:
                    err.table, err.column, err.problem, err.count = "", None, text, None
                raise err from exc
        raise


def _ensure_utc(spark: SparkSession) -> None:
    tz = spark.conf.get("spark.sql.session.timeZone")
    if tz not in ("UTC", "Etc/UTC", "GMT", "Z", "+00:00"):
        log.warning("spark.sql.session.timeZone was %s: set to UTC (timestamps are read like pandas does)", tz)
        spark.conf.set("spark.sql.session.timeZone", "UTC")


# --------------------------------------------------------------------------------------------- inputs
@dataclass
class SparkInputs:
    """The configured tables read by Spark: canonical column names, a global row key, and facts."""

    frames: dict[str, DataFrame]
    attributes: list[str]
    numeric_attributes: list[str]
    date_format: dict[str, str | None]
    signup_required: bool
    files: list[str]
    input_hash: str
    counts: dict[str, int] = field(default_factory=dict)


def _hadoop_path(spark: SparkSession, path: str) -> tuple[Any, Any]:
    jvm = spark.sparkContext._jvm
    p = jvm.org.apache.hadoop.fs.Path(path)
    return p, p.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())


def _exists(spark: SparkSession, path: str) -> bool:
    p, fs = _hadoop_path(spark, path)
    return bool(fs.exists(p))


def _list_files(spark: SparkSession, path: str) -> list[str]:
    """Data files under ``path`` (a file or a folder of part files), sorted; hidden files skipped."""
    p, fs = _hadoop_path(spark, path)
    if fs.getFileStatus(p).isFile():
        return [str(p.toUri())]
    out = []
    it = fs.listFiles(p, True)
    while it.hasNext():
        st = it.next()
        name = st.getPath().getName()
        if not name.startswith(("_", ".")):
            out.append(str(st.getPath().toUri()))
    return sorted(out)


def resolve_table_paths(spark: SparkSession, data: str | Path | Mapping[str, str | list[str]],
                        cfg: Config) -> dict[str, list[str]]:
    """Role -> Parquet path(s). ``data`` is a folder (local or any Hadoop URI) or an explicit mapping."""
    tables = cfg.data.tables
    out: dict[str, list[str]] = {}
    if isinstance(data, Mapping):
        for role, paths in data.items():
            if role not in tables:
                raise ConfigError(f"table '{role}' given to the Spark engine is not in the config")
            out[role] = [str(p) for p in ([paths] if isinstance(paths, (str, Path)) else paths)]
        if "customers" not in out:
            raise InputNotFoundError("the Spark engine needs a 'customers' path")
        return out
    base = str(data).rstrip("/")
    if not _exists(spark, base):
        raise InputNotFoundError(f"data folder not found: {data}")
    for role, tc in tables.items():
        found = None
        for cand in (tc.file, *(tc.file + s for s in PARQUET_SUFFIXES + OTHER_SUFFIXES)):
            if _exists(spark, f"{base}/{cand}"):
                found = f"{base}/{cand}"
                break
        if found is None:
            if role == "customers" or tc.required:
                raise InputNotFoundError(f"table '{role}': no file '{tc.file}' (tried .parquet, .pq) in {data}")
            log.warning("table '%s' not found in %s: its feature family is switched off", role, data)
            continue
        if found.endswith(OTHER_SUFFIXES):
            raise ConfigError(f"table '{role}': {found}: the Spark engine reads Parquet only (convert it, e.g. "
                              "`churn generate --format parquet` or pandas.read_csv(...).to_parquet(...))")
        out[role] = [found]
    return out


def _check_supported(cfg: Config) -> None:
    """Refuse, before any work and with the reason, what this engine cannot run yet."""
    loader = ("assembled by the default engine's loader over whole files (features.contract.load_tables); "
              "materialise the assembled tables as Parquet first")
    reasons = {"label.definition: snapshot": "a snapshot has no cutoff to build features or score at (`churn "
               "train` cross-validates it on one machine)"} if cfg.label.definition == "snapshot" else {}
    for role, tc in cfg.data.tables.items():
        if role == "subscriptions":
            reasons["the subscriptions table"] = "customer dates and payments are derived from it " + loader
        for key in ("lookups", "joins", "derived"):
            if getattr(tc, key):
                reasons[f"{role}.{key}"] = loader
    if reasons:
        raise ConfigError("--engine spark does not support " + "; ".join(f"{k}: {v}" for k, v in reasons.items())
                          + " (or use the default engine; docs/spark.md, Limits)")


def _row_key(spark: SparkSession, df: DataFrame, files: list[str]) -> DataFrame:
    """Add ROW = (index of the input file in sorted path order) << 40 | row index within the file."""
    from pyspark.sql import functions as F

    if len(files) == 1:  # the common case needs no job
        return df.withColumn(ROW, F.col("_metadata.row_index").cast("long"))
    paths = sorted(r[0] for r in df.select(F.col("_metadata.file_path").alias("_f")).distinct().collect())
    if len(paths) >= 1 << (63 - ROW_BITS):
        raise DataError("input", None, f"too many files ({len(paths)}) for the row key")
    mapping = F.create_map(*[x for i, f in enumerate(paths) for x in (F.lit(f), F.lit(i).cast("long"))])
    key = F.shiftleft(F.element_at(mapping, F.col("_metadata.file_path")), ROW_BITS) + F.col("_metadata.row_index")
    return df.withColumn(ROW, key)


def _resolve_attributes_spark(raw: DataFrame, tc: Any, role_cols: set[str]) -> list[str]:
    """``attributes: auto`` exactly as :func:`features.contract._resolve_attributes`, with Spark counts."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import BooleanType, NumericType

    from features.contract import auto_attribute_kind, log_auto_attributes

    if not tc.auto_attributes:
        return list(tc.attributes)
    cols = [c for c in raw.columns if c not in role_cols and c != ROW]
    if not cols:
        return []
    row = raw.agg(F.count(F.lit(1)).alias("_n"),
                  *[F.count_distinct(F.col(f"`{c}`")).alias(f"d{i}") for i, c in enumerate(cols)],
                  *[F.count(F.col(f"`{c}`")).alias(f"p{i}") for i, c in enumerate(cols)]).first()
    n = int(row["_n"])
    types = {f.name: f.dataType for f in raw.schema.fields}
    attrs, constant, id_like = [], [], []
    for i, c in enumerate(cols):
        nun, present = int(row[f"d{i}"]), int(row[f"p{i}"])
        numeric = isinstance(types[c], NumericType) and not isinstance(types[c], BooleanType)
        kind = auto_attribute_kind(n, nun, nun + (1 if present < n else 0), present, numeric)
        {"constant": constant, "id_like": id_like, "attribute": attrs}[kind].append(str(c))
    log_auto_attributes(attrs, constant, id_like)
    return attrs


def read_tables_spark(spark: SparkSession, data: str | Path | Mapping[str, str | list[str]],
                      cfg: Config) -> SparkInputs:
    """Read the configured tables with Spark and map them onto the contract's column names.

    Mirrors :func:`features.contract.load_tables` for what this engine supports; the row-level
    checks (dates, ids, amounts, unknown customers) run later, per bucket, with the same functions.
    """
    from pyspark.sql import functions as F
    from pyspark.sql.types import (
        BooleanType,
        DateType,
        NumericType,
        StringType,
        TimestampNTZType,
        TimestampType,
    )

    _check_supported(cfg)
    _ensure_utc(spark)
    paths = resolve_table_paths(spark, data, cfg)
    frames: dict[str, DataFrame] = {}
    files: list[str] = []
    attributes: list[str] = []
    numeric_attrs: list[str] = []
    fmt: dict[str, str | None] = {}
    for role in ROLES:
        if role not in paths:
            if role != "customers" and role not in cfg.data.tables:
                log.warning("table '%s' is not configured: its feature family is switched off", role)
            continue
        tc = cfg.data.tables[role]
        fmt[role] = tc.date_format or cfg.data.date_format
        table_files = [f for p in paths[role] for f in _list_files(spark, p)]
        files.extend(table_files)
        raw = _row_key(spark, spark.read.parquet(*paths[role]), table_files)  # before any projection (_metadata)
        roles = CANONICAL_COLUMNS[role]
        role_cols = {tc.columns.get(r, r) for r in roles}
        if tc.exclude:
            absent = [c for c in tc.exclude if c not in raw.columns]
            if absent:
                raise DataError(role, absent[0], f"excluded column(s) {absent} not in the table (check the spelling); "
                                f"columns found: {raw.columns[:40]}")
            raw = raw.drop(*[c for c in tc.exclude if c not in role_cols])
        mapping = {r: tc.columns.get(r, r) for r in roles}
        missing = [mapping[r] for r, req in roles.items() if req and mapping[r] not in raw.columns]
        if missing:
            raise DataError(role, missing[0], f"missing required column(s) {missing}; columns found: {raw.columns[:20]}")
        attrs: list[str] = []
        if role == "customers":
            attrs = _resolve_attributes_spark(raw, tc, role_cols)
            absent = [a for a in attrs if a not in raw.columns]
            if absent:
                raise DataError(role, absent[0], f"attribute column(s) {absent} not in the file")
            attributes = attrs
        keep = {mapping[r]: r for r in roles if mapping[r] in raw.columns}
        sel = [F.col(f"`{src}`").alias(dst) for src, dst in keep.items()]
        sel += [F.col(f"`{a}`") for a in attrs if a not in keep]
        df = raw.select(*sel, ROW)
        types = {f.name: f.dataType for f in df.schema.fields}
        for c in ("signup_date", "churn_date", "timestamp"):
            if c in types:
                if isinstance(types[c], (TimestampType, DateType)):
                    df = df.withColumn(c, F.col(c).cast("timestamp_ntz"))  # session time zone is UTC
                elif not isinstance(types[c], TimestampNTZType):
                    raise DataError(role, mapping.get(c, c), f"the Spark engine needs Parquet timestamp or date "
                                    f"columns, got {types[c].simpleString()} (store dates as timestamps)")
        if role == "customers":
            numeric_attrs = [a for a in attrs if isinstance(types[a], NumericType)
                             and not isinstance(types[a], BooleanType)]
        df = df.withColumn("customer_id", F.col("customer_id").cast(StringType()))
        frames[role] = df
    if "customers" not in frames:
        raise InputNotFoundError("table 'customers' not found")
    customers_tc = cfg.data.tables["customers"]
    if "signup_date" not in frames["customers"].columns:
        mapped = customers_tc.columns.get("signup_date", "signup_date")
        raise DataError("customers", mapped, f"missing required column(s) ['{mapped}']")
    for role in sorted(set(paths) - set(ROLES)):  # read by the default engine too (treatments): in the input hash
        files.extend(f for p in paths[role] for f in _list_files(spark, p))
    input_hash = _hash_inputs(files)
    return SparkInputs(frames, attributes, numeric_attrs, fmt, True, files, input_hash)


def _hash_inputs(files: list[str]) -> str:
    """Same hash as the default engine (sha256 over sorted names and bytes) when the files are local."""
    import hashlib

    from churn.io import hash_files

    local = [f.removeprefix("file://").removeprefix("file:") for f in files]
    if all("://" not in f and Path(f).is_file() for f in local):
        return hash_files([Path(f).resolve() for f in local])
    h = hashlib.sha256()
    for f in sorted(files):
        h.update(f.encode())
        h.update(b"\0")
    return "paths-sha256:" + h.hexdigest()


def data_end_spark(spark: SparkSession, data: str | Path | Mapping[str, str | list[str]], cfg: Config) -> pd.Timestamp:
    """``Tables.data_end`` with Spark: ``data.observed_until`` if set, else the latest date in any table.

    The default cutoff of ``churn score`` is the day after it: ``(data_end + 1 day).normalize()``.
    """
    from pyspark.sql import functions as F

    if cfg.data.observed_until is not None:
        return pd.Timestamp(cfg.data.observed_until)
    inputs = read_tables_spark(spark, data, cfg)
    parts = []
    for role, df in inputs.frames.items():
        cols = [c for c in (("signup_date", "churn_date") if role == "customers" else ("timestamp",)) if c in df.columns]
        parts.append(df.agg(F.greatest(*[F.max(c) for c in cols]).alias("m")) if len(cols) > 1
                     else df.agg(F.max(cols[0]).alias("m")))
    joined = parts[0]
    for part in parts[1:]:
        joined = joined.unionByName(part)
    m = joined.agg(F.max("m")).first()[0]
    return pd.Timestamp(m) if m is not None else pd.NaT


# --------------------------------------------------------------------------------------------- facts
@dataclass
class GlobalFacts:
    """What the family code reads from a whole table, computed once over all rows."""

    event_types: list[str] | None = None
    has_event_value: bool = False
    first_ts: dict[str, pd.Timestamp] = field(default_factory=dict)
    max_rating_before: float = float("nan")


def compute_facts(inputs: SparkInputs, cfg: Config, as_of: pd.Timestamp, event_types: list[str] | None) -> GlobalFacts:
    """Row counts and the whole-table facts, in one Spark job (one aggregate per table, cross-joined)."""
    from pyspark.sql import functions as F

    facts = GlobalFacts()
    cutoff = F.lit(as_of.to_pydatetime()).cast("timestamp_ntz")
    if event_types is None:
        event_types = cfg.features.event_types
    aggs = [inputs.frames["customers"].agg(F.count(F.lit(1)).alias("customers_n"))]
    for role in ("events", "transactions", "interactions"):
        df = inputs.frames.get(role)
        if df is None:
            continue
        cols = [F.min("timestamp").alias(f"{role}_first"), F.count(F.lit(1)).alias(f"{role}_n")]
        before = F.col("timestamp") < cutoff
        if role == "events":
            if "value" in df.columns:
                v = F.col("value").cast("double")
                cols.append(F.max(F.when(before & v.isNotNull() & ~F.isnan(v), 1).otherwise(0)).alias("has_value"))
            if event_types is None:
                cols.append(F.collect_set(F.when(before, F.col("event_type").cast("string"))).alias("types"))
        if role == "interactions" and "rating" in df.columns:
            r = F.col("rating").cast("double")
            cols.append(F.max(F.when(before & ~F.isnan(r), r)).alias("max_rating"))
        aggs.append(df.agg(*cols))
    joined = aggs[0]
    for a in aggs[1:]:
        joined = joined.crossJoin(a)
    row = joined.first().asDict()
    inputs.counts["customers"] = int(row["customers_n"])
    for role in ("events", "transactions", "interactions"):
        if f"{role}_n" not in row:
            continue
        if int(row[f"{role}_n"]) == 0:
            raise DataError(role, None, "table is empty (remove it from the config or the folder to switch its "
                            "features off)")
        inputs.counts[role] = int(row[f"{role}_n"])
        first = row[f"{role}_first"]
        facts.first_ts[role] = pd.Timestamp(first) if first is not None else pd.NaT
    facts.has_event_value = bool(row.get("has_value") or 0)
    if row.get("max_rating") is not None:
        facts.max_rating_before = float(row["max_rating"])
    if event_types is None and "types" in row:
        event_types = sorted(t for t in row["types"] if t is not None)
    facts.event_types = list(event_types) if event_types is not None else None
    return facts


# --------------------------------------------------------------------------------------------- bucket step
_SCORERS: dict[str, Any] = {}


def _scorer(spec: str) -> Any:
    """The sentiment scorer, loaded once per Python worker."""
    if spec not in _SCORERS:
        from features.text_sentiment import load_scorer

        _SCORERS[spec] = load_scorer(spec)
    return _SCORERS[spec]


@dataclass
class BucketPlan:
    """Everything a bucket task needs to rebuild a ``Tables`` and run the pandas ``FeatureBuilder``."""

    cfg: Config  # the bucket's config: CLV method forced to contractual (the real CLV is global)
    as_of: pd.Timestamp
    columns: dict[str, list[str]]  # role -> canonical columns in the union (without prefix)
    attributes: list[str]
    numeric_attributes: list[str]
    date_format: dict[str, str | None]
    facts: GlobalFacts
    out_columns: list[str] = field(default_factory=list)
    with_labels: bool = False

    @property
    def children(self) -> list[str]:
        return [r for r in ROLES[1:] if r in self.columns]

    # ---------------------------------------------------------------- phantom rows
    def _phantom_customer(self) -> pd.DataFrame:
        from features.contract import validate_customers

        raw = {"customer_id": [PHANTOM_ID], "signup_date": pd.Series([pd.Timestamp("1970-01-01")], dtype="datetime64[ns]")}
        if "churn_date" in self.columns["customers"]:
            raw["churn_date"] = pd.Series([pd.NaT], dtype="datetime64[ns]")
        for a in self.attributes:
            raw[a] = [np.nan] if a in self.numeric_attributes else [PHANTOM_CATEGORY]
        return validate_customers(pd.DataFrame(raw), self.attributes, None, signup_required=True)

    def _phantom_child(self, role: str) -> pd.DataFrame:
        """One row carrying the table's global facts (first timestamp; event value; top rating)."""
        ts = self.facts.first_ts[role]
        row: dict[str, list[Any]] = {"customer_id": [PHANTOM_ID],
                                     "timestamp": pd.Series([ts], dtype="datetime64[ns]")}
        cols = self.columns[role]
        if role == "events":
            row["event_type"] = [PHANTOM_CATEGORY]
            if "value" in cols:
                row["value"] = [0.0 if self.facts.has_event_value else np.nan]
        elif role == "transactions":
            row["amount"] = [0.0]
        elif role == "interactions":
            for c in ("channel", "category"):
                if c in cols:
                    row[c] = ["unknown" if c == "channel" else PHANTOM_CATEGORY]
            if "text" in cols:
                row["text"] = [""]
            if "rating" in cols:
                rating = self.facts.max_rating_before
                # the top rating sits at the table's first timestamp, which is before the cutoff
                # whenever any rating is (else there is none, and NaN keeps it that way)
                row["rating"] = [rating]
            for c in ("response_hours", "resolution_hours"):
                if c in cols:
                    row[c] = [np.nan]
        return pd.DataFrame(row)

    # ---------------------------------------------------------------- tables
    def tables(self, pdf: pd.DataFrame) -> tuple[Tables, np.ndarray]:
        """The bucket's validated ``Tables`` (phantom customer last) and the row keys of its real customers."""
        from pandas.api.types import union_categoricals

        from features.contract import Tables, validate_child, validate_customers

        tag = pdf[TAG].to_numpy()

        def part(role: str) -> pd.DataFrame:
            pre = PREFIX[role]
            rows = pdf.loc[tag == TAGS[role]]
            rows = rows.sort_values(ROW, kind="stable")
            cols = self.columns[role]
            return pd.DataFrame({c: rows[pre + c].to_numpy() for c in cols} | {ROW: rows[ROW].to_numpy()})

        raw_c = part("customers")
        phantom = self._phantom_customer()
        if len(raw_c):
            real = validate_customers(raw_c.drop(columns=[ROW]), self.attributes, self.date_format["customers"])
            if (real["customer_id"] == PHANTOM_ID).any():
                raise DataError("customers", "customer_id", "reserved customer id")
            customers = pd.concat([real, phantom], ignore_index=True)
        else:
            customers = phantom
        for a in self.attributes:  # keep the validated dtypes (float64 / str) across the concat
            if a in self.numeric_attributes:
                customers[a] = customers[a].astype("float64")
        tables = Tables(customers=customers, attributes=list(self.attributes))
        for role in self.children:
            raw = part(role).drop(columns=[ROW])
            ph = validate_child(self._phantom_child(role), role, customers, None)
            if len(raw):
                v = validate_child(raw, role, customers, self.date_format[role])
                t = pd.concat([v, ph[v.columns]], ignore_index=True)
                for col in v.columns:  # keep categoricals (e.g. event_type) categorical across the concat
                    if isinstance(v[col].dtype, pd.CategoricalDtype) and isinstance(ph[col].dtype, pd.CategoricalDtype):
                        t[col] = union_categoricals([v[col], ph[col]], ignore_order=True)
                t = t.sort_values(["timestamp", "_code"], kind="stable").reset_index(drop=True)
            else:
                t = ph
            setattr(tables, role, t)
        return tables, raw_c[ROW].to_numpy(dtype=np.int64)

    # ---------------------------------------------------------------- features
    def build(self, pdf: pd.DataFrame) -> tuple[pd.DataFrame, list[FeatureSpec]]:
        """Feature rows of the bucket's active customers (phantom dropped), with ROW and P365 columns."""
        from features.build import FeatureBuilder

        tables, keys = self.tables(pdf)
        scorer = _scorer(self.cfg.features.sentiment.scorer) if tables.interactions is not None else None
        fb = FeatureBuilder(tables, self.cfg, scorer=scorer, event_types=self.facts.event_types)
        fs = fb.build(self.as_of, with_labels=self.with_labels)
        frame = fs.frame
        c = tables.customers
        pos = pd.Index(c["customer_id"]).get_indexer(frame["customer_id"])
        keep = pos < len(keys)  # the phantom is the last customers row
        frame = frame.loc[keep].reset_index(drop=True)
        pos = pos[keep]
        frame.insert(0, ROW, keys[pos])
        if tables.transactions is not None:
            tx = tables.transactions
            sl = window_slice(tx["timestamp"], self.as_of - 365 * DAY, self.as_of)  # as features.value does
            frame[P365] = count_by(tx["_code"].to_numpy()[sl], len(c))[pos]
        return frame, fs.specs

    def rfm_rows(self, pdf: pd.DataFrame) -> pd.DataFrame:
        """:func:`features.value.rfm_history` of the bucket's customers (input of the non-contractual CLV fit)."""
        from features.value import rfm_history

        tables, keys = self.tables(pdf)
        n = len(keys)
        tx = tables.transactions
        out = rfm_history(tx[tx["_code"] < n], tables.customers.iloc[:n], self.as_of).reset_index()
        out.insert(0, ROW, keys)
        return out.astype({"n_transactions": "int64"})

    def __call__(self, pdf: pd.DataFrame) -> pd.DataFrame:
        """applyInPandas entry point: Spark-ready columns (categoricals as text)."""
        frame, _ = self.build(pdf)
        out = {}
        for col in self.out_columns:
            s = frame[col]
            if isinstance(s.dtype, pd.CategoricalDtype) or s.dtype == object:
                s = s.astype(object).where(s.notna(), None)
            out[col] = s
        return pd.DataFrame(out)

    def empty_input(self) -> pd.DataFrame:
        cols: dict[str, Any] = {TAG: pd.Series([], dtype="int64"), ROW: pd.Series([], dtype="int64")}
        for role, names in self.columns.items():
            for c in names:
                cols[PREFIX[role] + c] = pd.Series([], dtype="datetime64[ns]" if c in (
                    "timestamp", "signup_date", "churn_date") else object)
        return pd.DataFrame(cols)


def _bucket_config(cfg: Config) -> Config:
    """Inside a bucket the CLV is only a placeholder (recomputed globally): use the cheap contractual form."""
    clv = cfg.features.clv.model_copy(update={"method": "contractual"})
    feats = cfg.features.model_copy(update={"clv": clv})
    return cfg.model_copy(update={"features": feats})


def _spark_type(s: pd.Series) -> str:
    if s.name in (ROW,):
        return "long"
    ints = {np.dtype("int8"): "tinyint", np.dtype("int16"): "smallint", np.dtype("int32"): "int",
            np.dtype("int64"): "long"}
    if s.dtype in ints:
        return ints[s.dtype]
    if pd.api.types.is_datetime64_any_dtype(s.dtype):
        return "timestamp_ntz"
    if isinstance(s.dtype, pd.CategoricalDtype) or not pd.api.types.is_numeric_dtype(s.dtype):
        return "string"
    if pd.api.types.is_bool_dtype(s.dtype):
        return "boolean"
    return "double"


def union_input(inputs: SparkInputs, n_buckets: int, roles: tuple[str, ...] = ROLES) -> DataFrame:
    """The tables in one frame: TAG, ROW, BUCKET and each table's columns under its prefix."""
    from pyspark.sql import functions as F

    parts = []
    for role in roles:
        df = inputs.frames.get(role)
        if df is None:
            continue
        cols = [c for c in df.columns if c != ROW]
        parts.append(df.select(F.lit(TAGS[role]).cast("long").alias(TAG), F.col(ROW),
                               F.pmod(F.xxhash64(F.col("customer_id")), F.lit(n_buckets)).alias(BUCKET),
                               *[F.col(f"`{c}`").alias(PREFIX[role] + c) for c in cols]))
    out = parts[0]
    for p in parts[1:]:
        out = out.unionByName(p, allowMissingColumns=True)
    return out



def _pandas_fn(obj: Any) -> Any:
    """PySpark counts ``self`` in a callable object's arguments: hand it a plain function instead."""

    def fn(pdf: pd.DataFrame) -> pd.DataFrame:
        return obj(pdf)

    return fn


def _auto_buckets(spark: SparkSession, inputs: SparkInputs, rows_per_bucket: int) -> int:
    total = sum(inputs.counts.values())
    return max(int(spark.sparkContext.defaultParallelism), math.ceil(total / max(rows_per_bucket, 1)))


def build_feature_set_spark(spark: SparkSession, data: str | Path | Mapping[str, str | list[str]], cfg: Config,
                            as_of: pd.Timestamp, n_buckets: int | None = None, event_types: list[str] | None = None,
                            rows_per_bucket: int = DEFAULT_ROWS_PER_BUCKET, with_labels: bool = False) -> SparkFeatureSet:
    """Build the features of every customer active at ``as_of`` with Spark (see the module docstring).

    ``event_types``: the event types to count (scoring passes the model's); default: the config's, else
    every type seen before the cutoff. ``n_buckets`` default: enough buckets for about ``rows_per_bucket``
    input rows each (a bucket is processed in one pandas task, so it must fit a Python worker's memory),
    and at least the default parallelism. ``with_labels``: add the 0/1 ``label`` column (needs data after the
    cutoff), as ``FeatureBuilder.build(with_labels=True)``.
    """
    with worker_errors():
        return _build_feature_set(spark, data, cfg, as_of, n_buckets, event_types, rows_per_bucket, with_labels)


def _build_feature_set(spark: SparkSession, data: str | Path | Mapping[str, str | list[str]], cfg: Config,
                       as_of: pd.Timestamp, n_buckets: int | None, event_types: list[str] | None,
                       rows_per_bucket: int, with_labels: bool) -> SparkFeatureSet:
    from pyspark import StorageLevel

    from features.build import profile_features

    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    as_of = pd.Timestamp(as_of)
    inputs = read_tables_spark(spark, data, cfg)
    facts = compute_facts(inputs, cfg, as_of, event_types)
    customers = driver_customers(inputs)
    categories = {s.name: [str(c) for c in b.frame[s.name].cat.categories]
                  for b in [profile_features(customers, inputs.attributes)] for s in b.specs if s.categorical}
    timings["read_facts_s"] = time.perf_counter() - t0
    n_buckets = n_buckets or _auto_buckets(spark, inputs, rows_per_bucket)
    columns = {r: [c for c in df.columns if c != ROW] for r, df in inputs.frames.items()}
    plan = BucketPlan(_bucket_config(cfg), as_of, columns, inputs.attributes, inputs.numeric_attributes,
                      inputs.date_format, facts, with_labels=with_labels)
    probe, specs = plan.build(plan.empty_input())  # the phantom alone: output columns, types, catalogue
    feature_names = [s.name for s in specs]
    labels = ["label"] if with_labels else []
    has_tx = "transactions" in inputs.frames
    plan.out_columns = [ROW, "customer_id", "cutoff", *feature_names, *labels] + ([P365] if has_tx else [])
    types = {c: _spark_type(probe[c].rename(c)) for c in plan.out_columns if c in probe}
    types |= {ROW: "long", "customer_id": "string", "cutoff": "timestamp_ntz"} | ({P365: "double"} if has_tx else {})
    for s in specs:
        if s.categorical and s.name not in categories:
            categories[s.name] = [str(c) for c in probe[s.name].cat.categories]

    t = time.perf_counter()
    schema = ", ".join(f"`{c}` {types[c]}" for c in plan.out_columns)
    feats = union_input(inputs, n_buckets).groupBy(BUCKET).applyInPandas(_pandas_fn(plan), schema)
    feats = feats.persist(StorageLevel.MEMORY_AND_DISK)
    n_pop = feats.count()
    timings["buckets_s"] = time.perf_counter() - t
    log.info("spark features: %s customers active at %s, %d buckets (%.1fs)", f"{n_pop:,}", as_of.date(), n_buckets,
             timings["buckets_s"])

    t = time.perf_counter()
    out = feats
    if "value_tier" in feature_names and n_pop:
        out = _population_step(spark, feats, customers, inputs, plan, cfg, n_buckets)
    out = out.select(ROW, "customer_id", "cutoff", *[f"`{c}`" for c in feature_names + labels])
    out = out.persist(StorageLevel.MEMORY_AND_DISK)
    out.count()
    feats.unpersist()
    timings["global_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t0
    return SparkFeatureSet(out, specs, categories, as_of, inputs.input_hash, inputs.files, n_pop, n_buckets,
                           facts.event_types, timings, with_labels)


def driver_customers(inputs: SparkInputs) -> pd.DataFrame:
    """The whole customers table validated on the driver with the default engine's function (ROW kept).

    About 100 bytes per customer plus the attributes; it gives the population step and the category levels
    exactly the default engine's customers table (same rows, order and dtypes).
    """
    from features.contract import validate_customers

    raw = inputs.frames["customers"].toPandas().sort_values(ROW, kind="stable").reset_index(drop=True)
    out = validate_customers(raw.drop(columns=[ROW]), inputs.attributes, inputs.date_format["customers"])
    for c in ("signup_date", "churn_date"):  # pandas reads nanoseconds; Arrow gives microseconds
        out[c] = out[c].astype("datetime64[ns]")
    out.insert(0, ROW, raw[ROW].to_numpy(dtype=np.int64))
    return out


def _population_step(spark: SparkSession, feats: DataFrame, customers: pd.DataFrame, inputs: SparkInputs,
                     plan: BucketPlan, cfg: Config, n_buckets: int) -> DataFrame:
    """Replace the bucket-relative value features with :func:`features.value.population_value`'s, computed on
    the driver from the collected per-customer inputs (a few numbers per customer)."""
    from features.value import population_value

    inputs_cols = ["days_since_last_purchase", P365, "spend_365d", "monthly_revenue"]
    part = feats.select(ROW, *inputs_cols).toPandas()
    pos = pd.Index(customers[ROW]).get_indexer(part[ROW])
    population = np.zeros(len(customers), dtype=bool)
    population[pos] = True
    full = {}
    for c in inputs_cols:
        full[c] = np.full(len(customers), np.nan)
        full[c][pos] = part[c].to_numpy(dtype=np.float64)
    summary = None
    if cfg.features.clv.method != "contractual":
        schema = (f"`{ROW}` long, customer_id string, frequency double, recency double, T double, monetary_value "
                  "double, n_transactions long, total_amount double")
        un = union_input(inputs, n_buckets, roles=("customers", "transactions"))
        sub = replace(plan, columns={r: plan.columns[r] for r in ("customers", "transactions")})
        rows = un.groupBy(BUCKET).applyInPandas(_pandas_fn(sub.rfm_rows), schema).toPandas()
        summary = rows.sort_values(ROW, kind="stable").set_index("customer_id").drop(columns=[ROW])
    pop = population_value(full["days_since_last_purchase"], full[P365], full["spend_365d"], full["monthly_revenue"],
                           customers, population, plan.as_of, cfg.features, summary)
    pop["value_tier"] = np.asarray(pop["value_tier"], dtype=object)
    names = [c for c in pop if c in feats.columns]
    values = pd.DataFrame({ROW: customers[ROW].to_numpy()[population], **{c: pop[c][population] for c in names}})
    types = ", ".join(f"`{c}` {'string' if c == 'value_tier' else 'double'}" for c in names)
    return feats.drop(*names).join(spark.createDataFrame(values, f"`{ROW}` long, {types}"), on=ROW, how="left")


@dataclass
class SparkFeatureSet:
    """Spark feature rows plus what the default engine's ``FeatureSet`` carries."""

    frame: DataFrame  # ROW (row key) + customer_id, cutoff, features (categoricals as text)
    specs: list[FeatureSpec]
    categories: dict[str, list[str]]  # categorical feature -> category levels (as the default engine's dtype)
    as_of: pd.Timestamp
    input_hash: str
    files: list[str]
    n_population: int
    n_buckets: int
    event_types: list[str] | None
    timings: dict[str, float] = field(default_factory=dict)
    with_labels: bool = False
    cached: list[DataFrame] = field(default_factory=list, repr=False)  # persisted intermediates

    @property
    def feature_names(self) -> list[str]:
        return [s.name for s in self.specs]

    @property
    def columns(self) -> list[str]:
        return ["customer_id", "cutoff", *self.feature_names] + (["label"] if self.with_labels else [])

    def unpersist(self) -> None:
        """Release the cached feature rows and intermediates."""
        for df in [self.frame, *self.cached]:
            df.unpersist()

    def public(self) -> DataFrame:
        """The feature rows without the internal row key, in the default engine's row order when sorted."""
        return self.frame.select(*[f"`{c}`" for c in self.columns])

    def to_pandas(self) -> FeatureSet:
        """Collect to the driver as the default engine's ``FeatureSet`` (same row order and dtypes)."""
        from features.build import FeatureSet

        pdf = self.frame.toPandas().sort_values(ROW, kind="stable").reset_index(drop=True)
        parts = [pd.DataFrame({"customer_id": pdf["customer_id"].astype(str).to_numpy(), "cutoff": self.as_of})]
        cols: dict[str, Any] = {}
        for s in self.specs:
            v = pdf[s.name]
            if s.categorical:
                cols[s.name] = pd.Categorical(v.astype(object).where(v.notna(), None), categories=self.categories[s.name])
            else:
                cols[s.name] = v.to_numpy(dtype=np.float64, na_value=np.nan)
        parts.append(pd.DataFrame(cols))
        frame = pd.concat(parts, axis=1)
        if self.with_labels:
            frame["label"] = pdf["label"].to_numpy(dtype=np.int8)
        return FeatureSet(frame, list(self.specs))

    def write(self, path: str) -> None:
        """Partitioned Parquet (part files in the default engine's row order) plus the catalogue beside it."""
        self.frame.orderBy(ROW).drop(ROW).select(*[f"`{c}`" for c in self.columns]).write.mode("overwrite").parquet(path)



def build_features_spark(spark: SparkSession, data_dir_or_paths: str | Path | Mapping[str, str | list[str]], cfg: Config,
                         as_of: pd.Timestamp, out_path: str | None = None, n_buckets: int | None = None,
                         event_types: list[str] | None = None) -> DataFrame:
    """Feature rows (customer_id, cutoff, features) as a Spark DataFrame; also written as Parquet if ``out_path``.

    Equal to ``FeatureBuilder(load_tables(data_dir, cfg), cfg).build(as_of).frame`` (categoricals as text).
    Use :func:`build_feature_set_spark` for the catalogue and a pandas ``FeatureSet``.
    """
    fs = build_feature_set_spark(spark, data_dir_or_paths, cfg, as_of, n_buckets=n_buckets, event_types=event_types)
    if out_path is not None:
        fs.write(out_path)
    return fs.public()
