"""``--engine spark``: the default engine's features, built on a Spark cluster by the default engine's code.

Spark only moves rows: it reads every configured file (Parquet or CSV, any path Spark reads), keys each row by
file and position, and hash-partitions the customer-keyed files into buckets by customer id (lookups and other
joins go to every bucket whole). Each bucket is staged as the files :func:`features.contract.load_tables` reads,
loaded by it and built by :class:`features.build.FeatureBuilder`. Population-wide inputs are computed once: the
whole-table facts by a first pass over the buckets (handed back through the bucket's config and a *phantom*
customer whose rows carry them), the customers table by ``load_tables`` on the driver, and the value features by
:func:`features.value.population_value` on the driver. See ``docs/spark.md``.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import math
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from churn.config import Config
from churn.errors import ConfigError, DataError, InputNotFoundError
from churn.timebase import DAY, window_slice
from features.catalogue import FeatureSpec, count_by
from features.contract import CHILD_TABLES, SUFFIXES

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame, SparkSession

    from features.build import FeatureSet
    from features.contract import Tables

log = logging.getLogger(__name__)

PHANTOM_ID = "\x00churn-spark-phantom"  # cannot collide with a real id (ids are checked)
PHANTOM_CATEGORY = "\x00phantom"
ROW = "_rk"  # global row key: file index << ROW_BITS | position in the file
BUCKET, TAG = "_bucket", "_src"
P365 = "_purchases_365d"  # hidden: purchases in the last 365 days (input of the RFM frequency score)
ROW_BITS = 50
CUSTOMER_SIDE = ("customers", "subscriptions")  # what the driver's customers table is loaded from
DEFAULT_ROWS_PER_BUCKET = 1_000_000
Data = str | Path | Mapping[str, str | list[str]]


def get_spark(master: str | None = None, app_name: str = "churn-early-warning", **conf: str) -> SparkSession:
    """A SparkSession for this engine (UTC, Arrow, case-sensitive names, workers on this Python); ``master`` None
    keeps what ``spark-submit`` set (or ``local[*]`` when run directly)."""
    import os
    import sys

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    if master and master.startswith("local"):
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    from pyspark.sql import SparkSession

    b = SparkSession.builder.appName(app_name).master(master) if master else SparkSession.builder.appName(app_name)
    for k, v in {"spark.sql.session.timeZone": "UTC", "spark.sql.execution.arrow.pyspark.enabled": "true",
                 "spark.sql.caseSensitive": "true", "spark.ui.showConsoleProgress": "false", **conf}.items():
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


@dataclass
class Source:
    """One configured file: where Spark reads it and how a bucket stages it for ``load_tables``."""

    name: str  # the configured file name; staged as <name>.parquet, which load_tables finds
    role: str
    id_column: str | None  # raw column holding the customer id; None: small, every bucket gets it whole
    text_columns: list[str]  # read from CSV as text, as load_tables does
    paths: list[str] = field(default_factory=list)
    sep: str | None = None  # CSV separator; None: Parquet
    integral: list[str] = field(default_factory=list)  # Parquet integer columns (Arrow gives float with nulls)
    dtypes: dict[str, str] = field(default_factory=dict)  # CSV: column types inferred over all buckets
    template: pd.DataFrame | None = None  # one real row, its id replaced by the phantom's
    kind: str = "table"  # "table" (a table's file or union file), "join" or "lookup"


def configured_sources(cfg: Config) -> list[Source]:
    """Every file the default engine's loader would read for ``cfg``, customer-keyed ones first by role."""
    from features.contract import ROW_NUMBER_ID, _text_columns

    def raw(mapped: str, rename: Mapping[str, str]) -> str:  # the file's name of a column the config maps
        return next((k for k, v in rename.items() if v == mapped), mapped)

    out: list[Source] = []
    for role, tc in cfg.data.tables.items():
        idc, text = tc.columns.get("customer_id", "customer_id"), _text_columns(tc)
        if role == "customers" and idc == ROW_NUMBER_ID:
            raise ConfigError(f"--engine spark: customers.columns.customer_id '{ROW_NUMBER_ID}' (the row number as "
                              "id) needs the whole file in one place: use the default engine or add an id column")
        out.append(Source(tc.file, role, raw(idc, tc.rename), text))
        for u in tc.union:
            renames = {**tc.rename, **u.rename}
            out.append(Source(u.file, role, raw(idc, renames),
                              [k for k, v in renames.items() if v in text] + text))
        for j in tc.joins:
            right = [r for k, r in zip(j.left_keys, j.right_keys, strict=True) if k == idc]
            out.append(Source(j.file, role, right[0] if right else None, right, kind="join"))
        out += [Source(lk.file, role, None, [], kind="lookup") for lk in tc.lookups.values()]
    return list({s.name: s for s in out}.values())


def _hadoop_path(spark: SparkSession, path: str) -> tuple[Any, Any]:
    p = spark.sparkContext._jvm.org.apache.hadoop.fs.Path(path)
    return p, p.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())


def _list_files(spark: SparkSession, path: str) -> list[str] | None:
    """Data files at ``path`` (a file, or a folder's visible part files, sorted); None when absent."""
    p, fs = _hadoop_path(spark, path)
    if not fs.exists(p):
        return None
    if fs.getFileStatus(p).isFile():
        return [str(p.toUri())]
    out, it = [], fs.listFiles(p, True)
    while it.hasNext():
        st = it.next().getPath()
        if not st.getName().startswith(("_", ".")):
            out.append(str(st.toUri()))
    return sorted(out)


def _locate(spark: SparkSession, data: Data, src: Source, cfg: Config) -> bool:
    """Fill ``src.paths`` / ``src.sep`` (a folder: the exact name, else name + a known suffix; or a mapping)."""
    if isinstance(data, Mapping):
        given = data.get(src.name, data.get(src.role) if src.name == cfg.data.tables[src.role].file else None)
        cands = [str(p) for p in ([given] if isinstance(given, (str, Path)) else given or [])]
    else:
        base = str(data).rstrip("/")
        if _list_files(spark, base) is None:
            raise InputNotFoundError(f"data folder not found: {data}")
        cands = [f"{base}/{src.name}{s}" for s in ("", *SUFFIXES)]
    for cand in cands:
        files = _list_files(spark, cand)
        if files:
            src.paths = files
            src.sep = "\t" if files[0].endswith(".tsv") else "," if files[0].endswith((".csv", ".csv.gz")) else None
            return True
    return False


def _read(spark: SparkSession, src: Source, first: int) -> DataFrame:
    """The file(s) as Spark reads them (CSV: every column as text), with ROW keys from ``first`` on."""
    from pyspark.sql import functions as F

    frames = []
    for i, path in enumerate(src.paths):
        if src.sep is None:
            df = spark.read.parquet(path)
        else:  # pandas' CSV dialect: doubled quotes, quoted newlines
            df = spark.read.options(header="true", sep=src.sep, escape='"', multiLine="true", mode="FAILFAST").csv(path)
        key = F.shiftleft(F.lit(first + i).cast("long"), ROW_BITS) + F.monotonically_increasing_id()
        frames.append(df.withColumn(ROW, key))
    out = frames[0]
    for f in frames[1:]:
        out = out.unionByName(f, allowMissingColumns=True)
    if src.sep is None:
        src.integral = [f.name for f in out.schema.fields if f.dataType.typeName() in ("byte", "short", "integer", "long")]
    return out


def _hash_inputs(files: list[str]) -> str:
    """Same hash as the default engine (sha256 over sorted names and bytes) when the files are local; else of paths."""
    import hashlib

    from churn.io import hash_files

    local = [f.removeprefix("file://").removeprefix("file:") for f in files]
    if all("://" not in f and Path(f).is_file() for f in local):
        return hash_files([Path(f).resolve() for f in local])
    return "paths-sha256:" + hashlib.sha256("".join(f + "\0" for f in sorted(files)).encode()).hexdigest()


def _typed(rows: pd.DataFrame, src: Source) -> pd.DataFrame:
    """One source's rows as the default engine's reader gives them (CSV text re-parsed by pandas)."""
    if src.sep is not None:
        dtype = {c: "str" for c in src.text_columns if c in rows} | src.dtypes
        return pd.read_csv(io.StringIO(rows.to_csv(index=False)), dtype=dtype, low_memory=False)
    for c in src.integral:
        if c in rows and rows[c].notna().all():
            rows[c] = rows[c].astype("int64")
    return rows


@dataclass
class BucketPlan:
    """Everything a bucket task needs to stage its rows, run ``load_tables`` and the pandas ``FeatureBuilder``."""

    cfg: Config  # the bucket's config: attributes and derived dates resolved globally, CLV contractual
    as_of: pd.Timestamp | None
    sources: list[Source]  # index = TAG
    columns: dict[int, list[str]]  # TAG -> the source's columns (without prefix)
    small: dict[str, pd.DataFrame]  # name -> whole small table
    facts: dict[str, Any] = field(default_factory=dict)
    with_labels: bool = False
    restore_observed: bool = False  # the config's observed_until was set only for the subscription dates
    out_columns: list[str] = field(default_factory=list)

    def load(self, pdf: pd.DataFrame, phantom: bool = True) -> tuple[Tables, np.ndarray]:
        """The bucket's ``Tables`` loaded by ``load_tables`` (phantom customer last) and its customers' row keys."""
        from features.contract import load_tables

        tag, keys = pdf[TAG].to_numpy(), []
        with tempfile.TemporaryDirectory(prefix="churn-bucket-") as tmp:
            for name, frame in self.small.items():
                frame.to_parquet(Path(tmp) / f"{name}.parquet", index=False)
            last = max(k for k, s in enumerate(self.sources) if s.role == "customers" and s.kind == "table")
            for k, src in enumerate(self.sources):
                if src.id_column is None or src.role not in self.cfg.data.tables:
                    continue
                rows = pdf.loc[tag == k].sort_values(ROW, kind="stable")
                if src.role == "customers" and src.kind == "table":
                    keys.append(rows[ROW].to_numpy(dtype=np.int64))
                raw = _typed(pd.DataFrame({c: rows[f"s{k}_{c}"].to_numpy() for c in self.columns[k]}), src)
                if phantom and src.template is not None and (src.role != "customers" or src.kind != "table" or k == last):
                    ids = raw[src.id_column]  # as text, as the loader reads them (the phantom's id is text)
                    raw[src.id_column] = ids.astype(str).where(ids.notna(), None).to_numpy(dtype=object)
                    raw = pd.concat([raw, src.template.astype(raw.dtypes.to_dict(), errors="ignore")],
                                    ignore_index=True)
                raw.to_parquet(Path(tmp) / f"{src.name}.parquet", index=False)
            tables = load_tables(tmp, self.cfg, require_label=self.with_labels)
        if self.restore_observed:
            tables.observed_until = None
        if phantom:
            _inject_facts(tables, self.facts)
        return tables, np.concatenate(keys) if keys else np.zeros(0, np.int64)

    def facts_of(self, pdf: pd.DataFrame) -> pd.DataFrame:
        """First pass: the bucket's whole-table facts and CSV column types, as one JSON row."""
        tables, _ = self.load(pdf, phantom=True)
        out = bucket_facts(tables, self.as_of)
        tag, out["dtypes"] = pdf[TAG].to_numpy(), {}
        for k, src in enumerate(self.sources):
            if src.sep is not None and src.id_column is not None and (tag == k).any():
                rows = pdf.loc[tag == k, [f"s{k}_{c}" for c in self.columns[k]]].set_axis(self.columns[k], axis=1)
                out["dtypes"][k] = _typed(rows, src).dtypes.astype(str).to_dict()
        return pd.DataFrame({"facts": [json.dumps(out, default=str)]})

    def build(self, pdf: pd.DataFrame) -> tuple[pd.DataFrame, list[FeatureSpec]]:
        """Feature rows of the bucket's active customers (phantom dropped), with ROW and P365 columns."""
        from features.build import FeatureBuilder

        tables, keys = self.load(pdf)
        scorer = _scorer(self.cfg.features.sentiment.scorer) if tables.interactions is not None else None
        fs = FeatureBuilder(tables, self.cfg, scorer=scorer, event_types=self.facts.get("event_types")).build(
            self.as_of, with_labels=self.with_labels)
        pos = pd.Index(tables.customers["customer_id"]).get_indexer(fs.frame["customer_id"])
        frame = fs.frame.loc[pos < len(keys)].reset_index(drop=True)  # the phantom is the last customers row
        pos = pos[pos < len(keys)]
        frame.insert(0, ROW, keys[pos])
        if (tx := tables.transactions) is not None:
            sl = window_slice(tx["timestamp"], self.as_of - 365 * DAY, self.as_of)  # as features.value does
            frame[P365] = count_by(tx["_code"].to_numpy()[sl], len(tables.customers))[pos]
        return frame, fs.specs

    def rfm_rows(self, pdf: pd.DataFrame) -> pd.DataFrame:
        """:func:`features.value.rfm_history` of the bucket's customers (input of the non-contractual CLV fit)."""
        from features.value import rfm_history

        tables, keys = self.load(pdf)
        n, tx = len(keys), tables.transactions
        out = rfm_history(tx[tx["_code"] < n], tables.customers.iloc[:n], self.as_of).reset_index()
        out.insert(0, ROW, keys)
        return out.astype({"n_transactions": "int64"})

    def __call__(self, pdf: pd.DataFrame) -> pd.DataFrame:
        """applyInPandas entry point: Spark-ready columns (categoricals as text)."""
        frame, _ = self.build(pdf)
        return pd.DataFrame({c: frame[c].astype(object).where(frame[c].notna(), None) if _spark_type(frame[c]) == "string"
                             else frame[c] for c in self.out_columns})


@functools.cache
def _scorer(spec: str) -> Any:
    """The sentiment scorer, loaded once per Python worker."""
    from features.text_sentiment import load_scorer

    return load_scorer(spec)


def bucket_facts(tables: Tables, as_of: pd.Timestamp | None) -> dict[str, Any]:
    """What the family code and the loader read from a whole table, for one bucket (merged by :func:`merge_facts`).

    Every bucket holds a real row of every table (the phantom's), so the minimum of the buckets' ``data_start``
    and the maximum of their ``data_end`` are the whole tables'.
    """
    from features.behavioral import event_types_before

    out: dict[str, Any] = {"data_start": tables.data_start, "data_end": tables.data_end, "first": {
        r: t["timestamp"].iloc[0] for r in CHILD_TABLES if (t := tables.child(r)) is not None and len(t)}}
    if tables.subscriptions is not None:
        out["subs_start"] = tables.subscriptions["start_date"].max()
    ev, it = tables.events, tables.interactions
    if ev is not None:
        out["all_types"] = sorted(map(str, pd.unique(ev["event_type"].astype(str))))
    if as_of is not None and ev is not None:
        v = ev["value"].to_numpy(dtype=float)[ev["timestamp"].to_numpy() < np.datetime64(as_of)] if "value" in ev else []
        out |= {"types": event_types_before(ev, as_of), "has_value": bool(np.isfinite(v).any())}
    if as_of is not None and it is not None and "rating" in it:
        r = it["rating"].to_numpy(dtype=float)[it["timestamp"].to_numpy() < np.datetime64(as_of)]
        out["max_rating"] = float(np.nanmax(r)) if np.isfinite(r).any() else None
    return out


def merge_facts(rows: list[str], cfg: Config) -> dict[str, Any]:
    """The buckets' facts (JSON) as the whole tables' facts, and the CSV column types over all buckets."""
    parts = [json.loads(r) for r in rows]

    def ts(key: str, fn: Any, sub: str | None = None) -> pd.Timestamp:
        v = [pd.Timestamp(x) for p in parts if (x := (p[sub] if sub else p).get(key)) not in (None, "NaT")]
        return fn(v) if v else pd.NaT

    dtypes: dict[int, dict[str, str]] = {}
    for p in parts:
        for k, cols in p["dtypes"].items():
            for c, t in cols.items():
                old = dtypes.setdefault(int(k), {}).get(c, t)
                dtypes[int(k)][c] = t if old == t else "float64" if {old, t} == {"int64", "float64"} else "str"
    n_types, cap = len({t for p in parts for t in p.get("all_types", [])}), cfg.data.limits.max_event_types
    if cfg.features.event_types is None and n_types > cap:  # the cap over the whole table (a bucket sees its own)
        raise DataError("events", "event_type", f"{n_types:,} distinct event types, more than data.limits."
                        f"max_event_types ({cap}); map them to fewer names (an events 'lookups' file) or list the "
                        "ones to use in features.event_types, or raise the cap")
    types = sorted({t for p in parts for t in p.get("types", [])}) if any("types" in p for p in parts) else None
    ratings = [p["max_rating"] for p in parts if p.get("max_rating") is not None]
    return {"first": {r: ts(r, min, "first") for r in CHILD_TABLES}, "data_start": ts("data_start", min),
            "data_end": ts("data_end", max), "subs_start": ts("subs_start", max), "dtypes": dtypes,
            "event_types": cfg.features.event_types if cfg.features.event_types is not None else types,
            "has_value": any(p.get("has_value") for p in parts), "max_rating": max(ratings) if ratings else np.nan}


def _inject_facts(tables: Tables, facts: dict[str, Any]) -> None:
    """Give the phantom customer (the last customers row) rows carrying the whole tables' facts."""
    from pandas.api.types import union_categoricals

    from features.contract import validate_child

    if not facts:
        return
    for role in CHILD_TABLES:
        t = tables.child(role)
        if t is None or pd.isna(facts["first"].get(role, pd.NaT)):
            continue
        row: dict[str, Any] = {"customer_id": PHANTOM_ID, "timestamp": facts["first"][role], "amount": 0.0,
                               "event_type": PHANTOM_CATEGORY, "channel": "unknown", "category": PHANTOM_CATEGORY,
                               "text": "", "value": 0.0 if facts["has_value"] else np.nan,
                               "rating": facts["max_rating"]}  # at the first timestamp: before any cutoff
        cols = [c for c in t.columns if c != "_code"]
        raw = pd.DataFrame({c: [row.get(c, np.nan)] for c in cols}).astype({"timestamp": "datetime64[ns]"})
        ph = validate_child(raw, role, tables.customers, None).reindex(columns=t.columns)
        merged = pd.concat([t, ph], ignore_index=True)
        for c in t.columns:  # keep categoricals (e.g. event_type) categorical across the concat
            if isinstance(t[c].dtype, pd.CategoricalDtype) and isinstance(ph[c].dtype, pd.CategoricalDtype):
                merged[c] = union_categoricals([t[c], ph[c]], ignore_order=True)
        setattr(tables, role, merged.sort_values(["timestamp", "_code"], kind="stable").reset_index(drop=True))


def _global_dates(cfg: Config, facts: dict[str, Any]) -> tuple[Config, bool]:
    """The config with the whole data's dates where the loader would read them from one bucket: derived columns'
    ``data_start`` / ``data_end``, and the subscriptions' last start (their churn rule) as ``observed_until``."""
    tc = cfg.data.tables["customers"]
    derived = {n: d.model_copy(update={"as_of": facts[d.as_of].date()}) if isinstance(d.as_of, str) else d
               for n, d in tc.derived.items()}
    subs = cfg.data.tables.get("subscriptions")
    restore = subs is not None and subs.derive is not None and cfg.data.observed_until is None \
        and pd.notna(facts["subs_start"])
    tables = {**cfg.data.tables, "customers": tc.model_copy(update={"derived": derived})}
    data = cfg.data.model_copy(update={"tables": tables, **({"observed_until": facts["subs_start"].to_pydatetime()}
                                                           if restore else {})})
    return cfg.model_copy(update={"data": data}), restore


def _bucket_config(cfg: Config, customers: Tables) -> Config:
    """The config every bucket loads with: the driver's attributes (``auto`` resolved on the whole table) and the
    contractual CLV (a placeholder: the real CLV is global)."""
    tc = cfg.data.tables["customers"]
    attrs = [a for a in customers.attributes if a not in tc.derived]
    tables = {**cfg.data.tables, "customers": tc.model_copy(update={"attributes": attrs})}
    clv = cfg.features.clv.model_copy(update={"method": "contractual"})
    return cfg.model_copy(update={"data": cfg.data.model_copy(update={"tables": tables}),
                                  "features": cfg.features.model_copy(update={"clv": clv})})


def _restrict(cfg: Config, roles: tuple[str, ...]) -> Config:
    tables = {r: tc for r, tc in cfg.data.tables.items() if r in roles}
    return cfg.model_copy(update={"data": cfg.data.model_copy(update={"tables": tables})})


def _spark_type(s: pd.Series) -> str:
    ints = {"int8": "tinyint", "int16": "smallint", "int32": "int", "int64": "long"}
    if pd.api.types.is_datetime64_any_dtype(s.dtype):
        return "timestamp_ntz"
    if isinstance(s.dtype, pd.CategoricalDtype) or not pd.api.types.is_numeric_dtype(s.dtype):
        return "string"
    return ints.get(str(s.dtype), "boolean" if pd.api.types.is_bool_dtype(s.dtype) else "double")


def _pandas_fn(obj: Any) -> Any:
    """PySpark counts ``self`` in a callable object's arguments: hand it a plain function instead."""
    return lambda pdf_or_batches: obj(pdf_or_batches)


@dataclass
class SparkInputs:
    """The configured files read by Spark, unioned into one bucketed frame, and the whole-table facts."""

    union: DataFrame
    plan: BucketPlan
    customers: pd.DataFrame  # the driver's validated customers table (ROW first)
    customer_tables: Tables
    files: list[str]
    n_buckets: int


def read_inputs(spark: SparkSession, data: Data, cfg: Config, as_of: pd.Timestamp | None, n_buckets: int | None,
                rows_per_bucket: int = DEFAULT_ROWS_PER_BUCKET, with_labels: bool = False) -> SparkInputs:
    """Read every configured file, merge the buckets' facts, and load the customers table on the driver."""
    from pyspark.sql import functions as F

    sources, frames, files = [], [], []
    for src in configured_sources(cfg):
        if src.role not in cfg.data.tables:  # an optional table found missing
            continue
        if not _locate(spark, data, src, cfg):
            main = src.name == cfg.data.tables[src.role].file
            if main and not (src.role == "customers" or cfg.data.tables[src.role].required):
                log.warning("table '%s' not found in %s: its feature family is switched off", src.role, data)
                cfg = _restrict(cfg, tuple(r for r in cfg.data.tables if r != src.role))
                continue
            raise InputNotFoundError(f"table '{src.role}': no file '{src.name}' (tried {', '.join(SUFFIXES)}) in {data}")
        frames.append(_read(spark, src, len(files)))
        sources.append(src)
        files += src.paths
    if len(files) >= 1 << (63 - ROW_BITS):
        raise DataError("input", None, f"too many files ({len(files)}) for the row key")
    small = {s.name: _typed(f.drop(ROW).toPandas(), s) for s, f in zip(sources, frames, strict=True) if s.id_column is None}
    for s, f in zip(sources, frames, strict=True):
        if s.id_column is not None:
            one = _typed(f.drop(ROW).limit(1).toPandas(), s)
            s.template = one.assign(**{s.id_column: PHANTOM_ID}) if len(one) else None
    parts = [f.select(F.lit(k).cast("long").alias(TAG), F.col(ROW), F.col(f"`{s.id_column}`").cast("string").alias("_id"),
                      *[F.col(f"`{c}`").alias(f"s{k}_{c}") for c in f.columns if c != ROW])
             for k, (s, f) in enumerate(zip(sources, frames, strict=True)) if s.id_column is not None]
    union = parts[0]
    for p in parts[1:]:
        union = union.unionByName(p, allowMissingColumns=True)
    n_buckets = n_buckets or max(int(spark.sparkContext.defaultParallelism), math.ceil(union.count() / rows_per_bucket))
    union = union.withColumn(BUCKET, F.pmod(F.xxhash64("_id"), F.lit(n_buckets))).drop("_id")
    columns = {k: [c for c in f.columns if c != ROW] for k, f in enumerate(frames)}
    plan = BucketPlan(cfg, as_of, sources, columns, small, with_labels=False)
    facts_rows = union.groupBy(BUCKET).applyInPandas(_pandas_fn(plan.facts_of), "facts string").collect()
    facts = merge_facts([r[0] for r in facts_rows], cfg)
    for k, d in facts["dtypes"].items():
        sources[k].dtypes = d
    fixed, restore = _global_dates(cfg, facts)
    side = union.where(F.col(TAG).isin([k for k, s in enumerate(sources) if s.role in CUSTOMER_SIDE])).toPandas()
    driver = replace(plan, cfg=_restrict(fixed, CUSTOMER_SIDE), with_labels=with_labels, restore_observed=restore)
    tables, keys = driver.load(side, phantom=False)
    plan = replace(plan, cfg=_bucket_config(fixed, tables), facts=facts, with_labels=with_labels,
                   restore_observed=restore)
    customers = tables.customers.copy()
    customers.insert(0, ROW, keys)
    return SparkInputs(union, plan, customers, tables, files, n_buckets)


@worker_errors()
def data_end_spark(spark: SparkSession, data: Data, cfg: Config) -> pd.Timestamp:
    """``Tables.data_end`` with Spark: ``data.observed_until`` if set, else the latest date in any table (the
    default cutoff of ``churn score`` is the day after it)."""
    if cfg.data.observed_until is not None:
        return pd.Timestamp(cfg.data.observed_until)
    return read_inputs(spark, data, cfg, None, None).plan.facts["data_end"]


@worker_errors()
def build_feature_set_spark(spark: SparkSession, data: Data, cfg: Config, as_of: pd.Timestamp,
                            n_buckets: int | None = None, event_types: list[str] | None = None,
                            rows_per_bucket: int = DEFAULT_ROWS_PER_BUCKET, with_labels: bool = False) -> SparkFeatureSet:
    """Build the features of every customer active at ``as_of`` with Spark (see the module docstring).

    ``event_types``: the event types to count (scoring passes the model's); default: the config's, else
    every type seen before the cutoff. ``n_buckets`` default: enough buckets for about ``rows_per_bucket``
    input rows each (a bucket is one pandas task: it must fit a Python worker's memory), at least the
    default parallelism. ``with_labels``: add the 0/1 ``label`` column, as ``FeatureBuilder.build``.
    """
    from pyspark import StorageLevel

    from features.build import profile_features

    t0, as_of = time.perf_counter(), pd.Timestamp(as_of)
    if event_types is not None:
        cfg = cfg.model_copy(update={"features": cfg.features.model_copy(update={"event_types": list(event_types)})})
    inputs = read_inputs(spark, data, cfg, as_of, n_buckets, rows_per_bucket, with_labels)
    plan = inputs.plan
    timings = {"read_facts_s": time.perf_counter() - t0}
    probe, specs = plan.build(inputs.union.limit(0).toPandas())  # the phantom alone: columns, types, catalogue
    names, labels = [s.name for s in specs], ["label"] if with_labels else []
    has_tx = P365 in probe
    plan.out_columns = [ROW, "customer_id", "cutoff", *names, *labels] + ([P365] if has_tx else [])
    types = {c: _spark_type(probe[c]) for c in plan.out_columns} | {ROW: "long", "customer_id": "string"}
    ct = inputs.customer_tables
    categories = {s.name: [str(c) for c in b.frame[s.name].cat.categories]
                  for b in [profile_features(ct.customers, ct.attributes)] for s in b.specs if s.categorical}
    categories |= {s.name: [str(c) for c in probe[s.name].cat.categories] for s in specs
                   if s.categorical and s.name not in categories}
    t = time.perf_counter()
    schema = ", ".join(f"`{c}` {types[c]}" for c in plan.out_columns)
    feats = inputs.union.groupBy(BUCKET).applyInPandas(_pandas_fn(plan), schema).persist(StorageLevel.MEMORY_AND_DISK)
    n_pop = feats.count()
    timings["buckets_s"] = time.perf_counter() - t
    log.info("spark features: %s customers active at %s, %d buckets (%.1fs)", f"{n_pop:,}", as_of.date(),
             inputs.n_buckets, timings["buckets_s"])
    t = time.perf_counter()
    out = _population_step(spark, feats, inputs, cfg) if "value_tier" in names and n_pop else feats
    out = out.select(ROW, "customer_id", "cutoff", *[f"`{c}`" for c in names + labels])
    out = out.persist(StorageLevel.MEMORY_AND_DISK)
    out.count()
    feats.unpersist()
    timings["global_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t0
    return SparkFeatureSet(out, specs, categories, as_of, _hash_inputs(inputs.files), inputs.files, n_pop,
                           inputs.n_buckets, plan.facts.get("event_types"), timings, with_labels)


def _population_step(spark: SparkSession, feats: DataFrame, inputs: SparkInputs, cfg: Config) -> DataFrame:
    """Replace the bucket-relative value features with :func:`features.value.population_value`'s, computed on
    the driver from the collected per-customer inputs (a few numbers per customer)."""
    from features.value import population_value

    customers, plan = inputs.customers, inputs.plan
    cols = ["days_since_last_purchase", P365, "spend_365d", "monthly_revenue"]
    part = feats.select(ROW, *cols).toPandas()
    pos = pd.Index(customers[ROW]).get_indexer(part[ROW])
    population = np.zeros(len(customers), dtype=bool)
    population[pos] = True
    full = {c: np.full(len(customers), np.nan) for c in cols}
    for c in cols:
        full[c][pos] = part[c].to_numpy(dtype=np.float64)
    summary = None
    if cfg.features.clv.method != "contractual":
        schema = (f"`{ROW}` long, customer_id string, frequency double, recency double, T double, monetary_value "
                  "double, n_transactions long, total_amount double")
        rows = inputs.union.groupBy(BUCKET).applyInPandas(_pandas_fn(plan.rfm_rows), schema).toPandas()
        summary = rows.sort_values(ROW, kind="stable").set_index("customer_id").drop(columns=[ROW])
    pop = population_value(*full.values(), customers.drop(columns=[ROW]), population, plan.as_of, cfg.features, summary)
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

    @property
    def feature_names(self) -> list[str]:
        return [s.name for s in self.specs]

    @property
    def columns(self) -> list[str]:
        return ["customer_id", "cutoff", *self.feature_names] + (["label"] if self.with_labels else [])

    def to_pandas(self, features: list[str] | None = None, row_keys: bool = False) -> FeatureSet:
        """Collect to the driver as the default engine's ``FeatureSet`` (same row order and dtypes), optionally
        only some ``features`` and with the row keys (column ROW, first)."""
        from features.build import FeatureSet

        specs = [s for s in self.specs if features is None or s.name in features]
        keep = None if features is None else [ROW, "customer_id", *[s.name for s in specs]]
        pdf = (self.frame if keep is None else self.frame.select(*[f"`{c}`" for c in keep])).toPandas()
        pdf = pdf.sort_values(ROW, kind="stable").reset_index(drop=True)
        cols: dict[str, Any] = {ROW: pdf[ROW].to_numpy()} if row_keys else {}
        cols |= {"customer_id": pdf["customer_id"].astype(str).to_numpy(), "cutoff": self.as_of}
        for s in specs:
            v = pdf[s.name]
            cols[s.name] = (pd.Categorical(v.astype(object).where(v.notna(), None), categories=self.categories[s.name])
                            if s.categorical else v.to_numpy(dtype=np.float64, na_value=np.nan))
        frame = pd.DataFrame(cols)
        if self.with_labels and features is None:
            frame["label"] = pdf["label"].to_numpy(dtype=np.int8)
        return FeatureSet(frame, specs)

    def write(self, path: str) -> None:
        """Partitioned Parquet, part files in the default engine's row order."""
        self.frame.orderBy(ROW).drop(ROW).select(*[f"`{c}`" for c in self.columns]).write.mode("overwrite").parquet(path)
