"""``--engine spark`` batch scoring: the default engine's alerts, computed on a Spark cluster.

Per customer, everything runs the default engine's own code inside ``mapInPandas`` (the model is loaded
once per Python worker from the MLflow registry, pinned to one version): calibrated probability, risk tier,
exact TreeSHAP reasons (:func:`inference.explain.explain_rows`), playbook routing
(:func:`inference.playbooks.assign_playbooks`), expected net value and the control-group draw
(:func:`inference.playbooks.assign_control_group`).

Global steps, with Spark:

* the typical (median / most common) value of each feature over all scored customers, used in the
  reason sentences: exact medians from approximate quantile bounds plus exact counts inside them;
* ``scoring.max_alerts`` (top by value at risk) and the rank: a range-partitioned global ordering
  (:func:`features.spark.prefix_before`);
* the budget: greedy by net value per unit cost with the default engine's stable tie-break (customers
  row order) and a running sum of cost in that order. The running sum is a window over the chosen alerts
  in one task (one narrow row per alert: key, ratio, cost), which keeps the floating-point sums in
  exactly the default engine's order.

Outputs (``out_dir``): ``scores.parquet/`` and ``alerts.parquet/`` (Parquet part files, in the default
engine's row order and rank order; same columns), ``alerts.csv`` / ``alerts.jsonl`` / ``drift.csv`` /
``report.html`` when the outputs are small enough to collect (``collect_limit``), and ``summary.json``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from churn.config import Config, resolve_path
from churn.errors import DataError
from features.catalogue import FeatureSpec
from features.spark import (
    ROW,
    SparkFeatureSet,
    _sort_key,
    build_feature_set_spark,
    prefix_before,
    worker_errors,
)

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

REASON_STRUCT = ("struct<`group`:string,family:string,feature:string,text:string,impact:double,value:double,"
                 "category:string,direction:string>")
SCORE_COLUMNS = ["customer_id", "cutoff", "churn_probability", "risk_tier", "value_tier", "lifecycle_stage",
                 "lifetime_value", "value_at_risk", "model_name", "model_version", "input_hash"]
EXTRA_ALERT_COLUMNS = ["reason_families", "reason_groups", "playbook_kind", "playbook_acceptance_rate"]
DEFAULT_COLLECT_LIMIT = 1_000_000


# --------------------------------------------------------------------------------------------- model on executors
_MODELS: dict[str, Any] = {}


def _executor_model(source: Mapping[str, str]) -> Any:
    """The ChurnModel, loaded once per Python worker (from the registry, or from files shipped with the job)."""
    key = json.dumps(dict(source), sort_keys=True)
    if key not in _MODELS:
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        if source.get("shipped"):
            from pyspark import SparkFiles

            from model.artifact import ChurnModel

            _MODELS[key] = ChurnModel.load(Path(SparkFiles.get(source["shipped"])))
        else:
            import mlflow

            from model.registry import load_churn_model

            mlflow.set_tracking_uri(source["tracking_uri"])
            mlflow.set_registry_uri(source["tracking_uri"])
            _MODELS[key] = load_churn_model(source["model_uri"])
    return _MODELS[key]


def _absolute_uri(uri: str) -> str:
    """A relative ``sqlite:///path`` means the driver's working directory: make it absolute for executors."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + str(Path(uri.removeprefix("sqlite:///")).resolve())
    return uri


def _ship_model(spark: SparkSession, model_uri: str) -> str:
    """Download the model's ChurnModel folder on the driver and ship it with the job (``SparkContext.addFile``)."""
    import mlflow

    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri))
    found = sorted(local.rglob("model_meta.json"))
    if not found:
        raise DataError("model", None, f"{model_uri}: no model_meta.json in the model's artifacts")
    folder = found[0].parent
    staged = Path(tempfile.mkdtemp(prefix="churn-model-")) / f"churn-model-{abs(hash(model_uri)) % 10**8}"
    shutil.copytree(folder, staged)
    spark.sparkContext.addFile(str(staged), recursive=True)
    return staged.name


# --------------------------------------------------------------------------------------------- typical values
def typical_values_spark(frame: DataFrame, features: list[str], specs: dict[str, FeatureSpec],
                         categories: dict[str, list[str]], accuracy: int = 2_000, delta: float = 0.005) -> dict[str, Any]:
    """:func:`inference.explain.typical_values` over a Spark frame, exactly.

    Median (pandas: NaN skipped, mean of the two middle values for an even count): approximate quantiles
    at 0.5 -+ ``delta`` bound the middle ranks; the rows below the lower bound are counted and the distinct
    values inside the bounds are collected with their counts (small), which gives the exact middle values.
    A feature whose bounds miss the middle (possible only for tiny populations) falls back to collecting all
    its distinct values. Most common category: counts per category, ties broken like pandas' value_counts.
    """
    from pyspark.sql import functions as F

    out: dict[str, Any] = {}
    cats = [f for f in features if specs[f].categorical]
    nums = [f for f in features if not specs[f].categorical]

    def valid(f: str) -> Any:
        c = F.col(f"`{f}`").cast("double")
        return F.when(~F.isnan(c), c)

    # job 1: counts and approximate bounds of the middle of every numeric feature
    lo_p, hi_p = max(0.0, 0.5 - delta), min(1.0, 0.5 + delta)
    row = frame.agg(F.count(F.lit(1)).alias("_n"), *[F.count(valid(f)).alias(f"n{i}") for i, f in enumerate(nums)],
                    *[F.percentile_approx(valid(f), F.array(F.lit(lo_p), F.lit(hi_p)), accuracy).alias(f"q{i}")
                      for i, f in enumerate(nums)]).first()
    bounds: dict[int, tuple[float, float]] = {}
    for i, _ in enumerate(nums):
        q = row[f"q{i}"]
        if int(row[f"n{i}"]) and q is not None:
            bounds[i] = (float(q[0]), float(q[1]))
    # job 2: one exploded count: category counts; per numeric feature the count below its lower bound
    # (key "below") and the distinct values inside its bounds with their counts
    items = [F.struct(F.lit(f"c:{f}").alias("k"), F.lit(None).cast("double").alias("v"),
                      F.col(f"`{f}`").cast("string").alias("s")) for f in cats]
    for i, (lo, hi) in bounds.items():
        v = valid(nums[i])
        items.append(F.when(v < F.lit(lo), F.struct(F.lit(f"b:{i}").alias("k"), F.lit(None).cast("double").alias("v"),
                                                     F.lit(None).cast("string").alias("s")))
                     .when(v <= F.lit(hi), F.struct(F.lit(f"w:{i}").alias("k"), v.alias("v"),
                                                    F.lit(None).cast("string").alias("s"))))
    rows = []
    if items:
        exploded = frame.select(F.explode(F.array(*items)).alias("x")).where(F.col("x").isNotNull())
        rows = exploded.groupBy("x.k", "x.v", "x.s").count().collect()
    below: dict[int, int] = {i: 0 for i in bounds}
    windows: dict[int, list[tuple[float, int]]] = {i: [] for i in bounds}
    cat_counts: dict[str, dict[str, int]] = {f: {} for f in cats}
    for r in rows:
        kind, _, name = r["k"].partition(":")
        if kind == "c":
            if r["s"] is not None:
                cat_counts[name][r["s"]] = int(r["count"])
        elif kind == "b":
            below[int(name)] += int(r["count"])
        else:
            windows[int(name)].append((float(r["v"]), int(r["count"])))
    for f in cats:
        counts = cat_counts[f]
        levels = categories.get(f) or sorted(counts)
        vc = pd.Series([counts.get(c, 0) for c in levels], index=pd.CategoricalIndex(levels, categories=levels),
                       dtype="int64").sort_values(ascending=False)
        out[f] = vc.index[0] if len(vc) else None
    for i, f in enumerate(nums):
        n = int(row[f"n{i}"])
        if n == 0:
            out[f] = float("nan")
            continue
        ranks = ((n - 1) // 2, n // 2)  # 0-based middle ranks (equal for odd n)
        values = _values_at(sorted(windows.get(i, [])), below.get(i, 0), ranks)
        if values is None:  # bounds missed the middle: exact over all distinct values of this feature
            allv = frame.select(valid(f).alias("v")).where(F.col("v").isNotNull()).groupBy("v").count().collect()
            values = _values_at(sorted((float(r["v"]), int(r["count"])) for r in allv), 0, ranks)
        a, b = values
        out[f] = float(np.median(np.array([a, b]))) if ranks[0] != ranks[1] else float(a)
    return out


def _values_at(counts: list[tuple[float, int]], start: int, ranks: tuple[int, int]) -> tuple[float, float] | None:
    """Values at two 0-based ranks, given sorted (value, count) pairs whose first value has rank ``start``."""
    found: list[float] = []
    pos = start
    for r in ranks:
        if r < start:
            return None
    want = list(ranks)
    for v, c in counts:
        while want and want[0] < pos + c:
            found.append(v)
            want.pop(0)
        pos += c
        if not want:
            break
    return (found[0], found[1]) if len(found) == 2 else None


# --------------------------------------------------------------------------------------------- the per-row pass
class _RowScorer:
    """mapInPandas body: scores for every row; reasons, playbook, net value, control draw for alert rows."""

    def __init__(self, cfg: Config, source: Mapping[str, str], specs: dict[str, FeatureSpec], typical: dict[str, Any],
                 book: Any, version_label: str, input_hash: str, as_of: pd.Timestamp, explain_all: bool,
                 out_columns: list[str]) -> None:
        self.cfg, self.source, self.specs, self.typical, self.book = cfg, dict(source), specs, typical, book
        self.version_label, self.input_hash, self.as_of = version_label, input_hash, as_of
        self.explain_all, self.out_columns = explain_all, out_columns

    def __call__(self, batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        from inference import alerts as al
        from inference.explain import explain_rows, group_impacts
        from inference.playbooks import assign_control_group, assign_playbooks

        model = _executor_model(self.source)
        scfg, econ = self.cfg.scoring, self.cfg.training.economics
        min_rank = al.RISK_ORDER[scfg.alert_min_tier]
        for b in batches:
            n = len(b)
            if n == 0:
                continue
            p = model.predict_proba(b)
            clv = b["lifetime_value"].to_numpy(dtype=float) if "lifetime_value" in b else np.zeros(n)
            ids = b["customer_id"].astype(str)
            out_ids = al.pseudonymize(ids, scfg.pseudonymize_key) if scfg.pseudonymize_key else ids
            risk = al.risk_tier(p, scfg.risk_tiers)
            res = pd.DataFrame({
                ROW: b[ROW].to_numpy(dtype=np.int64), "customer_id": out_ids.to_numpy(dtype=object),
                "churn_probability": p, "risk_tier": risk,
                "value_tier": b["value_tier"].astype(str).to_numpy() if "value_tier" in b else "bronze",
                "lifecycle_stage": b["lifecycle_stage"].astype(str).to_numpy() if "lifecycle_stage" in b else "active",
                "lifetime_value": clv, "value_at_risk": p * clv})
            is_alert = pd.Series(risk).map(al.RISK_ORDER).to_numpy() >= min_rank
            res["_alert"] = is_alert
            rows = np.arange(n) if self.explain_all else np.flatnonzero(is_alert)
            base = list(res.columns)
            extra = {c: np.full(n, None, dtype=object) for c in self.out_columns if c not in base}
            if len(rows):
                sub = b.iloc[rows]
                contrib = model.contributions(sub, explainer=scfg.explainer)
                reasons = explain_rows(sub, contrib, p[rows], model.features, self.specs, self.typical, scfg.top_reasons)
                alerts = res.iloc[rows].reset_index(drop=True)
                reasons = reasons.reset_index(drop=True)
                for col in reasons.columns:
                    alerts[col] = reasons[col].to_numpy()
                alerts = assign_playbooks(alerts, self.book)
                cost = alerts["playbook_cost"].to_numpy(dtype=float)
                alerts["expected_net_value"] = al.expected_net_value(
                    alerts["churn_probability"].to_numpy(), alerts["lifetime_value"].to_numpy(),
                    alerts["playbook_acceptance_rate"].to_numpy(dtype=float), cost, econ)
                alerts["_control_draw"] = assign_control_group(alerts, self.book).to_numpy()
                gi = group_impacts(contrib, model.features, self.specs, p[rows])
                alerts["_abs_impact"] = list(np.abs(gi.impact))  # for the report's global importance
                for col, arr in extra.items():
                    arr[rows] = alerts[col].to_numpy(dtype=object)
            for col, arr in extra.items():
                res[col] = arr
            res["_abs_impact"] = [None if v is None else [float(x) for x in v] for v in res["_abs_impact"]]
            for col in ("reasons", "reason_families", "reason_groups"):
                if col in res:
                    res[col] = [_listify(v) for v in res[col]]
            yield res[self.out_columns]


def _iter_fn(obj: Any) -> Any:
    def fn(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        yield from obj(batches)

    return fn


def _listify(v: Any) -> Any:
    if v is None:
        return None
    return [dict(x) if isinstance(x, Mapping) else x for x in v]


def _pass_schema(top_reasons: int) -> tuple[str, list[str]]:
    cols: list[tuple[str, str]] = [
        (ROW, "long"), ("customer_id", "string"), ("churn_probability", "double"), ("risk_tier", "string"),
        ("value_tier", "string"), ("lifecycle_stage", "string"), ("lifetime_value", "double"),
        ("value_at_risk", "double"), ("_alert", "boolean"),
        ("reasons", f"array<{REASON_STRUCT}>"),
        *[(f"reason_{k + 1}", "string") for k in range(top_reasons)],
        ("protective_reason", "string"), ("reason_families", "array<string>"), ("reason_groups", "array<string>"),
        ("playbook_id", "string"), ("playbook_name", "string"), ("playbook_action", "string"),
        ("playbook_channel", "string"), ("playbook_owner", "string"), ("playbook_sla_hours", "double"),
        ("playbook_cost", "double"), ("playbook_kind", "string"), ("playbook_acceptance_rate", "double"),
        ("playbook_rule", "string"), ("expected_net_value", "double"), ("_control_draw", "boolean"),
        ("_abs_impact", "array<double>")]
    return ", ".join(f"`{c}` {t}" for c, t in cols), [c for c, _ in cols]


# --------------------------------------------------------------------------------------------- scoring
def score_spark(spark: SparkSession, data: str | Path | Mapping[str, str | list[str]], cfg: Config, as_of: pd.Timestamp,
                out_dir: str | Path, model_uri: str | None = None, *, n_buckets: int | None = None,
                explain_all: bool = False, log_to_mlflow: bool = True, ship_model: bool = False,
                collect_limit: int = DEFAULT_COLLECT_LIMIT, features: SparkFeatureSet | None = None) -> dict[str, Any]:
    """Score every customer active at ``as_of`` with Spark; same alerts as :func:`inference.score.score`.

    ``out_dir``: any path Spark can write (Parquet outputs); the small files (CSV, JSONL, report, summary)
    are written when ``out_dir`` is local. ``ship_model``: download the model on the driver and ship it
    with the job instead of having every executor read the registry. ``collect_limit``: above this many
    alerts (or scored rows, for the report and drift table) the collected outputs are skipped. ``features``:
    reuse a :class:`~features.spark.SparkFeatureSet` built for this cutoff with the model's event types
    (``data`` is then only recorded).
    """
    with worker_errors():
        return _score_spark(spark, data, cfg, as_of, out_dir, model_uri, n_buckets, explain_all, log_to_mlflow,
                            ship_model, collect_limit, features)


def _score_spark(spark: SparkSession, data: str | Path | Mapping[str, str | list[str]], cfg: Config,
                 as_of: pd.Timestamp, out_dir: str | Path, model_uri: str | None, n_buckets: int | None,
                 explain_all: bool, log_to_mlflow: bool, ship_model: bool, collect_limit: int,
                 features: SparkFeatureSet | None) -> dict[str, Any]:
    from pyspark import StorageLevel
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    from churn.io import write_csv, write_json, write_jsonl
    from inference import alerts as al
    from inference.playbooks import load_playbooks
    from inference.score import _log_scoring_run, _records
    from model.registry import load_churn_model, resolve_model_uri, setup_mlflow

    scfg = cfg.scoring
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    book = load_playbooks(resolve_path(scfg.playbooks))
    tracking_uri = setup_mlflow(cfg.mlflow)
    uri, version = resolve_model_uri(cfg.mlflow.model_name, model_uri, scfg.model_alias)
    model = load_churn_model(uri)
    pinned = f"models:/{cfg.mlflow.model_name}/{version}" if version is not None else uri
    source = ({"shipped": _ship_model(spark, pinned)} if ship_model
              else {"tracking_uri": _absolute_uri(tracking_uri), "model_uri": pinned})
    log.info("spark scoring: model %s (version %s, pinned %s), cutoff %s", uri, version, pinned, as_of.date())

    t = time.perf_counter()
    if features is not None:
        if pd.Timestamp(features.as_of) != pd.Timestamp(as_of):
            raise ValueError(f"features were built for {features.as_of}, not {as_of}")
        fs = features
    else:
        fs = build_feature_set_spark(spark, data, cfg, as_of, n_buckets=n_buckets,
                                     event_types=model.meta.get("event_types"))
    specs = {s.name: s for s in fs.specs}
    missing = [f for f in model.features if f not in specs]
    if missing:
        raise DataError("features", missing[0], f"the model needs feature(s) this data cannot produce: {missing[:8]} "
                        "(is a table missing, or was the model trained with another config?)")
    n = fs.n_population
    if n == 0:
        raise DataError("customers", None, f"no customer is active at {as_of.date()}")
    timings["features_s"] = time.perf_counter() - t

    t = time.perf_counter()
    typical = typical_values_spark(fs.frame, model.features, specs, fs.categories)
    timings["typical_s"] = time.perf_counter() - t

    t = time.perf_counter()
    schema, pass_cols = _pass_schema(scfg.top_reasons)
    version_label = str(version or uri)
    need = [ROW, "customer_id", *dict.fromkeys([*model.features, *[c for c in ("lifetime_value", "value_tier",
                                                                                  "lifecycle_stage") if c in specs]])]
    scorer = _RowScorer(cfg, source, specs, typical, book, version_label, fs.input_hash, as_of, explain_all, pass_cols)
    scored = fs.frame.select(*[F.col(f"`{c}`") for c in need]).mapInPandas(_iter_fn(scorer), schema)
    scored = scored.persist(StorageLevel.MEMORY_AND_DISK)
    n_scored = scored.count()
    timings["predict_explain_s"] = time.perf_counter() - t

    cutoff = F.lit(as_of.to_pydatetime()).cast("timestamp_ntz")
    meta = [F.lit(cfg.mlflow.model_name).alias("model_name"), F.lit(version_label).alias("model_version"),
            F.lit(fs.input_hash).alias("input_hash")]
    scores = scored.select(ROW, "customer_id", cutoff.alias("cutoff"), "churn_probability", "risk_tier", "value_tier",
                           "lifecycle_stage", "lifetime_value", "value_at_risk", *meta)

    # ---------------------------------------------------------------- global alert steps
    t = time.perf_counter()
    alerts = scored.where(F.col("_alert"))
    if scfg.max_alerts is not None:
        n_cand = alerts.count()
        if n_cand > scfg.max_alerts:
            key = (-_sort_key("value_at_risk", -math.inf)) + F.lit(0.0)  # -VaR ascending, NaN last, stable
            pos = prefix_before(alerts.select(ROW, key.alias("_k")), [F.col("_k").asc(), F.col(ROW).asc()], out="_p")
            alerts = alerts.join(pos.where(F.col("_p") < scfg.max_alerts).select(ROW), on=ROW, how="inner")
    net = F.col("expected_net_value")
    chosen = net.isNotNull() & ~F.isnan(net) & (net > 0)
    alerts = alerts.withColumn("_chosen", chosen)
    if scfg.budget is None:
        alerts = alerts.withColumn("selected", F.col("_chosen"))
    else:
        ratio = net / F.greatest(F.col("playbook_cost"), F.lit(1e-9))
        narrow = alerts.where(F.col("_chosen")).select(ROW, ratio.alias("_ratio"), F.col("playbook_cost").alias("_c"))
        running = Window.orderBy(F.col("_ratio").desc(), F.col(ROW).asc()).rowsBetween(Window.unboundedPreceding,
                                                                                        Window.currentRow)
        spent = narrow.withColumn("_spent", F.sum("_c").over(running))
        sel = spent.select(ROW, (F.col("_spent") <= F.lit(float(scfg.budget) + 1e-9)).alias("_sel"))
        alerts = alerts.join(sel, on=ROW, how="left").withColumn("selected", F.coalesce(F.col("_sel"), F.lit(False)))
    alerts = alerts.withColumn("control_group", F.col("_control_draw") & F.col("selected"))
    alerts = alerts.persist(StorageLevel.MEMORY_AND_DISK)
    order = [(1 - F.col("selected").cast("int")).alias("_o1"), (-_sort_key("expected_net_value", -math.inf) + 0.0).alias("_o2"),
             (-_sort_key("value_at_risk", -math.inf) + 0.0).alias("_o3"), F.col("customer_id").alias("_o4")]
    ranked = prefix_before(alerts.select(ROW, *order), [F.col(c).asc() for c in ("_o1", "_o2", "_o3", "_o4")]
                           + [F.col(ROW).asc()], out="_pos")
    alerts = alerts.join(ranked.select(ROW, (F.col("_pos") + 1).alias("rank")), on=ROW, how="inner")
    alerts = alerts.withColumn("cutoff", cutoff).select("*", *meta)
    cols = [c for c in al.ALERT_COLUMNS if c in alerts.columns] + [c for c in EXTRA_ALERT_COLUMNS if c in alerts.columns]
    alerts_out = alerts.select(*cols, ROW).persist(StorageLevel.MEMORY_AND_DISK)
    stats = alerts_out.agg(
        F.count(F.lit(1)).alias("n"), F.sum(F.col("selected").cast("long")).alias("sel"),
        F.sum(F.col("control_group").cast("long")).alias("ctl"),
        F.sum(F.when(F.col("selected") & ~F.col("control_group"), F.col("playbook_cost"))).alias("spent"),
        F.sum(F.when(F.col("selected") & ~F.col("control_group"), F.col("expected_net_value"))).alias("env"),
        F.sum("value_at_risk").alias("var")).first()
    timings["alerts_s"] = time.perf_counter() - t

    # ---------------------------------------------------------------- write
    t = time.perf_counter()
    out = str(out_dir)
    local_out = "://" not in out or out.startswith("file:")
    scores.orderBy(ROW).drop(ROW).write.mode("overwrite").parquet(f"{out}/scores.parquet")
    alerts_out.orderBy("rank").drop(ROW).write.mode("overwrite").parquet(f"{out}/alerts.parquet")
    tier_rows = scored.groupBy("risk_tier").agg(F.count(F.lit(1)).alias("n"), F.sum("value_at_risk").alias("v")).collect()
    tiers = {r["risk_tier"]: int(r["n"]) for r in tier_rows}
    n_alerts = int(stats["n"])
    summary: dict[str, Any] = {
        "command": "score", "engine": "spark", "cutoff": as_of.date().isoformat(), "input_hash": fs.input_hash,
        "data_files": list(fs.files), "tracking_uri": tracking_uri, "model_name": cfg.mlflow.model_name,
        "model_version": version, "model_uri": uri, "model_alias": scfg.model_alias if model_uri is None else None,
        "horizon_days": model.meta.get("label", {}).get("horizon_days"),
        "n_scored": int(n_scored), "n_alerts": n_alerts, "n_selected": int(stats["sel"] or 0),
        "n_control": int(stats["ctl"] or 0), "budget": scfg.budget, "budget_spent": float(stats["spent"] or 0.0),
        "expected_net_value": float(stats["env"] or 0.0), "value_at_risk_total": float(sum(r["v"] or 0.0 for r in tier_rows)),
        "value_at_risk_alerts": float(stats["var"] or 0.0), "risk_tiers": tiers, "drift_recommendation": None,
        "n_buckets": fs.n_buckets, "spark": {"master": spark.sparkContext.master,
                                             "default_parallelism": spark.sparkContext.defaultParallelism},
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    outputs = {"scores.parquet": f"{out}/scores.parquet", "alerts.parquet": f"{out}/alerts.parquet"}
    if local_out:
        out_path = Path(out.removeprefix("file://").removeprefix("file:"))
        with tempfile.TemporaryDirectory(dir=out_path, prefix=".staging-") as tmp:
            st = Path(tmp)
            alerts_pd = None
            if n_alerts <= collect_limit:
                alerts_pd = collect_alerts(alerts_out)
                flat = alerts_pd.drop(columns=["reasons"]).assign(
                    reason_families=alerts_pd["reason_families"].map(lambda x: "|".join(x)),
                    reason_groups=alerts_pd["reason_groups"].map(lambda x: "|".join(x)),
                    reasons_json=alerts_pd["reasons"].map(lambda x: json.dumps(list(x), ensure_ascii=False,
                                                                               sort_keys=True)))
                write_csv(st / "alerts.csv", flat)
                write_jsonl(st / "alerts.jsonl", _records(alerts_pd))
                # totals as the default engine sums them (same rows, same order): identical floats
                treated = alerts_pd["selected"] & ~alerts_pd["control_group"]
                summary["budget_spent"] = float(alerts_pd.loc[treated, "playbook_cost"].sum())
                summary["expected_net_value"] = float(alerts_pd.loc[treated, "expected_net_value"].sum())
                summary["value_at_risk_alerts"] = float(alerts_pd["value_at_risk"].sum())
            else:
                log.warning("%s alerts > collect_limit %s: alerts.csv/.jsonl not written (read alerts.parquet)",
                            f"{n_alerts:,}", f"{collect_limit:,}")
            if n_scored <= collect_limit:
                scores_pd = scores.toPandas().sort_values(ROW, kind="stable").drop(columns=[ROW]).reset_index(drop=True)
                summary["value_at_risk_total"] = float(scores_pd["value_at_risk"].sum())
                summary["risk_tiers"] = scores_pd["risk_tier"].value_counts().to_dict()
                importance = _global_importance(scored, alerts_out, model, specs, explain_all)
                _drift_and_report(st, summary, model, fs, scores_pd, alerts_pd, scfg, importance)
            for f in sorted(st.iterdir()):
                outputs[f.name] = str(out_path / f.name)
            outputs["summary"] = str(out_path / "summary.json")
            timings["write_s"] = time.perf_counter() - t
            timings["total_s"] = time.perf_counter() - t0
            summary.update({"outputs": outputs, "timings_s": timings})
            if log_to_mlflow:
                summary["run_id"] = _log_scoring_run(cfg, summary, st)
            write_json(st / "summary.json", summary)
            for f in sorted(st.iterdir()):
                shutil.move(str(f), out_path / f.name)
    else:
        timings["write_s"] = time.perf_counter() - t
        timings["total_s"] = time.perf_counter() - t0
        summary.update({"outputs": outputs, "timings_s": timings})
        _write_remote_text(spark, f"{out}/summary.json",
                           json.dumps(summary, indent=2, sort_keys=True, default=str) + "\n")
    for df in (alerts_out, alerts, scored):
        df.unpersist()
    if features is None:
        fs.unpersist()
    log.info("spark scored %s customers, %s alerts (%s selected, %s control) in %.1fs -> %s", f"{n_scored:,}",
             f"{n_alerts:,}", summary["n_selected"], summary["n_control"], timings["total_s"], out)
    return summary


def _write_remote_text(spark: SparkSession, path: str, text: str) -> None:
    """Write one small text file through Hadoop's FileSystem (any URI Spark can write)."""
    from features.spark import _hadoop_path

    p, fs = _hadoop_path(spark, path)
    stream = fs.create(p, True)
    try:
        stream.write(bytearray(text.encode("utf-8")))
    finally:
        stream.close()


def collect_alerts(alerts: DataFrame) -> pd.DataFrame:
    """The alerts as the default engine's pandas frame (rank order; reasons as lists of dicts)."""
    pdf = alerts.toPandas().sort_values("rank", kind="stable").reset_index(drop=True)
    if ROW in pdf:
        pdf = pdf.drop(columns=[ROW])
    for col in ("reasons", "reason_families", "reason_groups"):
        pdf[col] = [_plain(v) for v in pdf[col]]
    return pdf


def _plain(v: Any) -> Any:
    """Arrow's list/struct cells as plain Python lists and dicts."""
    if v is None:
        return []
    if isinstance(v, np.ndarray):
        v = v.tolist()
    out = []
    for x in v:
        if hasattr(x, "asDict"):
            x = x.asDict()
        out.append(dict(x) if isinstance(x, Mapping) else x)
    return out


def _global_importance(scored: DataFrame, alerts: DataFrame, model: Any, specs: dict[str, FeatureSpec],
                       explain_all: bool) -> pd.DataFrame | None:
    """:func:`inference.explain.global_group_importance` from the per-row group impacts (collected, small)."""
    from pyspark.sql import functions as F

    rows = scored if explain_all else scored.join(alerts.select(ROW), on=ROW, how="inner")
    pdf = rows.where(F.col("_abs_impact").isNotNull()).select(ROW, "_abs_impact").toPandas()
    if not len(pdf):
        return None
    pdf = pdf.sort_values(ROW, kind="stable")
    impact = np.vstack([np.asarray(v, dtype=np.float64) for v in pdf["_abs_impact"]])
    groups = list(dict.fromkeys(specs[f].group for f in model.features))
    fam = {specs[f].group: specs[f].family for f in model.features}
    df = pd.DataFrame({"group": groups, "mean_abs_impact": impact.mean(axis=0)})
    df["family"] = df["group"].map(fam)
    return df.sort_values("mean_abs_impact", ascending=False).reset_index(drop=True)


def _drift_and_report(st: Path, summary: dict[str, Any], model: Any, fs: SparkFeatureSet, scores_pd: pd.DataFrame,
                      alerts_pd: pd.DataFrame | None, scfg: Any, importance: pd.DataFrame | None = None) -> None:
    """Drift table and HTML report with the default engine's code, on collected (small) outputs."""
    from churn.io import write_csv
    from inference.drift import scoring_drift
    from inference.report import render_report

    drift = None
    if model.reference is not None:
        drift, recommendation = scoring_drift(model.reference, fs.to_pandas().frame, model.features,
                                              scores_pd["churn_probability"].to_numpy())
        if recommendation:
            summary["drift_recommendation"] = recommendation
        write_csv(st / "drift.csv", drift)
    if alerts_pd is not None:
        render_report(st / "report.html", summary=summary, scores=scores_pd, alerts=alerts_pd, global_importance=importance,
                      drift=drift, top_n=scfg.report_top_n)
