"""``--engine spark`` batch scoring: the default engine's alerts, computed by the default engine's code.

Per batch (``mapInPandas``; the model loaded once per Python worker, pinned to one version):
:func:`inference.score.score_rows`, exact TreeSHAP reasons (:func:`inference.explain.explain_rows`) and
:func:`inference.score.contact_plan` (playbooks, net value). The alerts are small and collected: ``max_alerts``,
the budget, the control group and the rank are :func:`inference.score.top_alerts` and
:func:`inference.score.decide_alerts` on them, and the alert files are the default engine's writers' output.
Outputs: ``scores.parquet/`` (Spark part files), ``alerts.parquet`` / ``.csv`` / ``.jsonl``, ``summary.json``,
and ``drift.csv`` / ``report.html`` when the scores fit ``collect_limit``.
"""

from __future__ import annotations

import contextlib
import json
import logging
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
    build_feature_set_spark,
    worker_errors,
)

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

REASON_STRUCT = ("struct<`group`:string,family:string,feature:string,text:string,impact:double,impact_pts:double,"
                 "value:double,category:string,direction:string,"
                 "quoted:array<struct<feature:string,value:double,typical:double,side:bigint>>,flags:array<string>>")
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
                         categories: dict[str, list[str]]) -> dict[str, Any]:
    """:func:`inference.explain.typical_values` with Spark, exactly.

    Median (pandas: NaN skipped): Spark's exact ``median`` (a distributed value-count merge); for an even count
    it returns 0.5 * a + 0.5 * b of the two middle values, which equals pandas' (a + b) / 2 bit for bit (halving
    is exact). Most common category: counts per level, ties broken like pandas' ``value_counts``.
    """
    from pyspark.sql import functions as F

    nums = [f for f in features if not specs[f].categorical]
    medians: dict[str, Any] = {}
    if nums:
        cols = [F.col(f"`{f}`").cast("double") for f in nums]
        row = frame.agg(*[F.median(F.when(~F.isnan(c), c)).alias(f"m{i}") for i, c in enumerate(cols)]).first()
        medians = {f: float("nan") if row[f"m{i}"] is None else float(row[f"m{i}"]) for i, f in enumerate(nums)}
    out: dict[str, Any] = {}
    for f in features:
        if not specs[f].categorical:
            out[f] = medians[f]
            continue
        counts = {r[0]: int(r[1]) for r in frame.groupBy(F.col(f"`{f}`").cast("string")).count().collect()
                  if r[0] is not None}
        levels = categories.get(f) or sorted(counts)
        vc = pd.Series([counts.get(c, 0) for c in levels], index=pd.CategoricalIndex(levels, categories=levels),
                       dtype="int64").sort_values(ascending=False)
        out[f] = vc.index[0] if len(vc) else None
    return out


# --------------------------------------------------------------------------------------------- the per-row pass
class _RowScorer:
    """mapInPandas body: the default engine's per-row steps (score, explain, route, net value) per batch."""

    def __init__(self, cfg: Config, source: Mapping[str, str], specs: dict[str, FeatureSpec], typical: dict[str, Any],
                 book: Any, explain_all: bool, out_columns: list[str]) -> None:
        self.cfg, self.source, self.specs, self.typical, self.book = cfg, dict(source), specs, typical, book
        self.explain_all, self.out_columns = explain_all, out_columns

    def __call__(self, batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        from features.flags import active_flags
        from inference import alerts as al
        from inference.explain import explain_rows, group_impacts
        from inference.score import contact_plan, score_rows

        model = _executor_model(self.source)
        scfg = self.cfg.scoring
        for b in batches:
            if not len(b):
                continue
            p = model.predict_proba(b)
            res = score_rows(b, p, self.cfg, model)
            res.insert(0, ROW, b[ROW].to_numpy(dtype=np.int64))
            res["_alert"] = res["risk_tier"].map(al.RISK_ORDER).to_numpy() >= al.RISK_ORDER[scfg.alert_min_tier]
            rows = np.arange(len(b)) if self.explain_all else np.flatnonzero(res["_alert"].to_numpy())
            extra = {c: np.full(len(b), None, dtype=object) for c in self.out_columns if c not in res}
            if len(rows):
                sub = b.iloc[rows]
                contrib = model.contributions(sub, explainer=scfg.explainer)
                reasons = explain_rows(sub, contrib, p[rows], model.features, self.specs, self.typical, scfg.top_reasons,
                                       calibrate=model.calibrator.transform,
                                       currency=self.cfg.training.economics.currency)
                alerts = pd.concat([res.iloc[rows].reset_index(drop=True), reasons.reset_index(drop=True)], axis=1)
                alerts["early_warnings"] = active_flags(sub)
                alerts = contact_plan(alerts, self.book, self.cfg.training.economics)
                gi = group_impacts(contrib, model.features, self.specs, p[rows], model.calibrator.transform)
                alerts["_abs_impact"] = [[float(x) for x in v] for v in np.abs(gi.impact)]  # global importance
                for col, arr in extra.items():
                    arr[rows] = alerts[col].to_numpy(dtype=object)
            for col, arr in extra.items():
                res[col] = [_listify(v) for v in arr] if col in _LIST_OUT else arr
            yield res[self.out_columns]


def _iter_fn(obj: Any) -> Any:
    def fn(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        yield from obj(batches)

    return fn


_LIST_OUT = ("reasons", "reason_families", "reason_groups", "early_warnings")


def _listify(v: Any) -> Any:
    return None if v is None else [dict(x) if isinstance(x, Mapping) else x for x in v]


def _timing_schema(horizons: list[int] | None) -> list[tuple[str, str]]:
    """Time-to-churn columns of ``score_rows`` (same names and order) when the model has a survival part."""
    if not horizons:
        return []
    return [("median_days_to_churn", "double"), *[(f"churn_within_{h}d", "double") for h in horizons],
            ("expected_lifetime_days", "double"), ("urgency", "string")]


def _pass_schema(top_reasons: int, horizons: list[int] | None = None) -> tuple[str, list[str]]:
    cols: list[tuple[str, str]] = [
        (ROW, "long"), ("customer_id", "string"), ("churn_probability", "double"), ("risk_tier", "string"),
        ("value_tier", "string"), ("lifecycle_stage", "string"), ("lifetime_value", "double"),
        ("value_at_risk", "double"), *_timing_schema(horizons), ("_alert", "boolean"), ("reasons", f"array<{REASON_STRUCT}>"),
        *[(f"reason_{k + 1}", "string") for k in range(top_reasons)],
        ("protective_reason", "string"), ("reason_families", "array<string>"), ("reason_groups", "array<string>"),
        ("base_probability", "double"), ("other_impact", "double"), ("impact_summary", "string"),
        ("early_warnings", "array<string>"),
        *[(f"playbook_{c}", "string") for c in ("id", "name", "action", "channel", "owner")],
        ("playbook_sla_hours", "double"), ("playbook_cost", "double"), ("playbook_kind", "string"),
        ("playbook_acceptance_rate", "double"), ("playbook_rule", "string"), ("expected_net_value", "double"),
        ("_abs_impact", "array<double>")]
    return ", ".join(f"`{c}` {t}" for c, t in cols), [c for c, _ in cols]


# --------------------------------------------------------------------------------------------- scoring
def score_spark(spark: SparkSession, data: str | Path | Mapping[str, str | list[str]], cfg: Config, as_of: pd.Timestamp,
                out_dir: str | Path, model_uri: str | None = None, *, n_buckets: int | None = None,
                explain_all: bool = False, log_to_mlflow: bool = True, ship_model: bool = False,
                collect_limit: int = DEFAULT_COLLECT_LIMIT, features: SparkFeatureSet | None = None) -> dict[str, Any]:
    """Score every customer active at ``as_of`` with Spark; same alerts as :func:`inference.score.score`.

    ``out_dir``: any path Spark can write. ``ship_model``: download the model on the driver and ship it with
    the job instead of having every executor read the registry. ``collect_limit``: above this many scored
    rows the drift table and the report (which need every score on the driver) are skipped. ``features``:
    reuse a :class:`~features.spark.SparkFeatureSet` built for this cutoff with the model's event types
    (``data`` is then only recorded).
    """
    with worker_errors():
        return _score_spark(spark, data, cfg, as_of, out_dir, model_uri, n_buckets, explain_all, log_to_mlflow,
                            ship_model, collect_limit, features)


def _resolve_model(spark: SparkSession, cfg: Config, model_uri: str | None, ship_model: bool) -> dict[str, Any]:
    """Resolve and pin the model version on the driver; how executors load it (registry or shipped files)."""
    from model.registry import load_churn_model, resolve_model_uri, setup_mlflow

    tracking_uri = setup_mlflow(cfg.mlflow)
    uri, version = resolve_model_uri(cfg.mlflow.model_name, model_uri, cfg.scoring.model_alias)
    pinned = f"models:/{cfg.mlflow.model_name}/{version}" if version is not None else uri
    source = ({"shipped": _ship_model(spark, pinned)} if ship_model
              else {"tracking_uri": _absolute_uri(tracking_uri), "model_uri": pinned})
    log.info("spark scoring: model %s (version %s, pinned %s)", uri, version, pinned)
    return {"model": load_churn_model(uri), "uri": uri, "version": version, "source": source,
            "tracking_uri": tracking_uri}


def _score_spark(spark: SparkSession, data: str | Path | Mapping[str, str | list[str]], cfg: Config,
                 as_of: pd.Timestamp, out_dir: str | Path, model_uri: str | None, n_buckets: int | None,
                 explain_all: bool, log_to_mlflow: bool, ship_model: bool, collect_limit: int,
                 features: SparkFeatureSet | None) -> dict[str, Any]:
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    from inference.playbooks import load_playbooks
    from inference.score import alert_rows, alert_totals, decide_alerts, lifetime_days, top_alerts

    scfg = cfg.scoring
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    book = load_playbooks(resolve_path(scfg.playbooks), [t.name for t in cfg.features.value_tiers])
    m = _resolve_model(spark, cfg, model_uri, ship_model)
    model, version = m["model"], m["version"]
    t = time.perf_counter()
    fs = _scoring_features(spark, data, cfg, as_of, n_buckets, model, features)
    specs = {s.name: s for s in fs.specs}
    timings["features_s"] = time.perf_counter() - t

    t = time.perf_counter()
    typical = typical_values_spark(fs.frame, model.features, specs, fs.categories)
    timings["typical_s"] = time.perf_counter() - t

    t = time.perf_counter()
    horizons = model.meta.get("survival_horizons_days") if model.survival is not None else None
    schema, pass_cols = _pass_schema(scfg.top_reasons, horizons)
    from features.flags import EARLY_WARNING_FLAGS

    need = [ROW, "customer_id", *dict.fromkeys([*model.features, *[c for c in ("lifetime_value", "value_tier",
                                                                                  "lifecycle_stage", "monthly_revenue",
                                                                                  *EARLY_WARNING_FLAGS)
                                                                      if c in specs]])]
    scorer = _RowScorer(cfg, m["source"], specs, typical, book, explain_all, pass_cols)
    scored = fs.frame.select(*[F.col(f"`{c}`") for c in need]).mapInPandas(_iter_fn(scorer), schema)
    scored = scored.persist(StorageLevel.MEMORY_AND_DISK)
    n_scored = scored.count()
    timings["predict_explain_s"] = time.perf_counter() - t

    # the population steps run the default engine's functions on the collected alerts (small)
    t = time.perf_counter()
    meta = {"model_name": cfg.mlflow.model_name, "model_version": str(version or m["uri"]), "input_hash": fs.input_hash}
    cand = _collect(scored.where(F.col("_alert")).drop("_alert"))
    cand = cand.iloc[top_alerts(cand["value_at_risk"].to_numpy(), scfg.max_alerts)].reset_index(drop=True)
    importance = _global_importance(scored if explain_all else None, cand, model, specs)
    effects, raw_ids, feat = _alert_effects(spark, fs, cand, model, cfg)
    cand = _counterfactuals(fs, cand, feat, model, specs, cfg)
    alert_row = cand[ROW].to_numpy()
    cand = cand.drop(columns=[ROW, "_abs_impact"]).assign(cutoff=as_of, **meta)
    pool, row_of = cand, None
    if scfg.contact_pool == "scored" and effects is not None:  # every scored customer: as the default engine
        pool, effects, raw_ids, row_of = _scored_pool(spark, fs, scored, cand, alert_row, pass_cols, model, cfg,
                                                      {"cutoff": as_of, **meta})
    alerts = decide_alerts(pool, book, cfg.training.economics, scfg.budget, lifetime_days(cfg), effects, raw_ids,
                           cfg.training.uplift.effect_weight)
    if row_of is not None:
        alerts = _explain_chosen(spark, fs, alerts, cand, row_of, need, model, specs, typical, cfg)
    alerts = alert_rows(alerts, cand["customer_id"])
    timings["alerts_s"] = time.perf_counter() - t

    t = time.perf_counter()
    out = str(out_dir)
    cutoff = F.lit(as_of.to_pydatetime()).cast("timestamp_ntz")
    scores = scored.select(ROW, "customer_id", cutoff.alias("cutoff"), *SCORE_COLUMNS[2:8],
                           *[c for c, _ in _timing_schema(horizons)], *[F.lit(v).alias(k) for k, v in meta.items()])
    scores.orderBy(ROW).drop(ROW).write.mode("overwrite").parquet(f"{out}/scores.parquet")
    tier_rows = scored.groupBy("risk_tier").agg(F.count(F.lit(1)).alias("n"), F.sum("value_at_risk").alias("v")).collect()
    summary: dict[str, Any] = {
        "command": "score", "engine": "spark", "cutoff": as_of.date().isoformat(), "input_hash": fs.input_hash,
        "data_files": list(fs.files), "tracking_uri": m["tracking_uri"], "model_name": cfg.mlflow.model_name,
        "model_version": version, "model_uri": m["uri"], "model_alias": scfg.model_alias if model_uri is None else None,
        "horizon_days": model.meta.get("label", {}).get("horizon_days"), "n_scored": int(n_scored),
        **alert_totals(alerts), "budget": scfg.budget,
        "value_at_risk_total": float(sum(r["v"] or 0.0 for r in tier_rows)),
        "risk_tiers": {r["risk_tier"]: int(r["n"]) for r in tier_rows}, "drift_recommendation": None,
        "n_buckets": fs.n_buckets, "spark": {"master": spark.sparkContext.master,
                                             "default_parallelism": spark.sparkContext.defaultParallelism},
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    _write_small_outputs(spark, out, summary, alerts, scores, model, fs, importance, collect_limit, log_to_mlflow,
                         cfg, timings, t, t0)
    scored.unpersist()
    if features is None:
        fs.unpersist()
    log.info("spark scored %s customers, %s alerts (%s selected, %s control) in %.1fs -> %s", f"{n_scored:,}",
             f"{len(alerts):,}", summary["n_selected"], summary["n_control"], timings["total_s"], out)
    return summary


def _scoring_features(spark: SparkSession, data: str | Path | Mapping[str, str | list[str]], cfg: Config,
                      as_of: pd.Timestamp, n_buckets: int | None, model: Any,
                      features: SparkFeatureSet | None) -> SparkFeatureSet:
    """The features to score (built with the model's event types unless given), checked against the model."""
    fs = features or build_feature_set_spark(spark, data, cfg, as_of, n_buckets=n_buckets,
                                             event_types=model.meta.get("event_types"))
    if pd.Timestamp(fs.as_of) != pd.Timestamp(as_of):
        raise ValueError(f"features were built for {fs.as_of}, not {as_of}")
    missing = [f for f in model.features if f not in {s.name for s in fs.specs}]
    if missing:
        raise DataError("features", missing[0], f"the model needs feature(s) this data cannot produce: {missing[:8]} "
                        "(is a table missing, or was the model trained with another config?)")
    if fs.n_population == 0:
        raise DataError("customers", None, f"no customer is active at {as_of.date()}")
    return fs


def _write_small_outputs(spark: SparkSession, out: str, summary: dict[str, Any], alerts: pd.DataFrame,
                         scores: DataFrame, model: Any, fs: SparkFeatureSet, importance: pd.DataFrame | None,
                         collect_limit: int, log_to_mlflow: bool, cfg: Config, timings: dict[str, float], t: float,
                         t0: float) -> None:
    """Alert files (the default engine's writers), drift table and report when the scores are small, summary.

    Staged in a local temporary folder, then moved into ``out`` (local) or copied through Hadoop's FileSystem.
    """
    from churn.io import write_json
    from inference.score import _scoring_run, _timing_summary, write_alert_files

    target = Path(out) if "://" not in out else None  # else through Hadoop's FileSystem (file://, s3a://, ...)
    with tempfile.TemporaryDirectory(dir=target, prefix=".staging-") as tmp:
        st = Path(tmp)
        write_alert_files(st, alerts)
        if summary["n_scored"] <= collect_limit:
            scores_pd = scores.toPandas().sort_values(ROW, kind="stable").drop(columns=[ROW]).reset_index(drop=True)
            summary["value_at_risk_total"] = float(scores_pd["value_at_risk"].sum())  # the default engine's sums
            summary["risk_tiers"] = scores_pd["risk_tier"].value_counts().to_dict()
            if model.survival is not None:
                summary["time_to_churn"] = _timing_summary(scores_pd, alerts, model.meta)
            _drift_and_report(st, summary, model, fs, scores_pd.assign(cutoff=fs.as_of), alerts, cfg.scoring,
                              importance)
        else:
            log.warning("%s scored rows > collect_limit %s: drift.csv and report.html not written",
                        f"{summary['n_scored']:,}", f"{collect_limit:,}")
        names = ["scores.parquet", *sorted(f.name for f in st.iterdir()), "summary.json"]
        summary["outputs"] = {n: f"{out}/{n}" if target is None else str(target / n) for n in names}
        timings["write_s"] = time.perf_counter() - t
        timings["total_s"] = time.perf_counter() - t0
        summary["timings_s"] = timings
        with _scoring_run(cfg, summary, st) if log_to_mlflow else contextlib.nullcontext():
            write_json(st / "summary.json", summary)
            for f in sorted(st.iterdir()):  # file by file: the Spark engine's outputs are not published as one set
                if target is not None:
                    shutil.move(str(f), target / f.name)
                else:
                    _put_remote(spark, f, f"{out}/{f.name}")


def _put_remote(spark: SparkSession, local: Path, path: str) -> None:
    """Copy one small local file to any URI Spark can write (Hadoop's FileSystem)."""
    from features.spark import _hadoop_path

    p, fs = _hadoop_path(spark, path)
    fs.copyFromLocalFile(False, True, spark.sparkContext._jvm.org.apache.hadoop.fs.Path(str(local.resolve())), p)


def _alert_effects(spark: SparkSession, fs: SparkFeatureSet, cand: pd.DataFrame, model: Any,
                   cfg: Config) -> tuple[pd.DataFrame | None, pd.Series, pd.DataFrame]:
    """The alerted customers' feature rows (collected: alerts are small), for the default engine's uplift
    effects and their raw ids (the control draw never depends on pseudonymisation)."""
    from model.uplift import estimate_effects

    keys = spark.createDataFrame(cand[[ROW]].astype("int64"))
    cols = [ROW, "customer_id", *[f for f in dict.fromkeys(model.features) if f != "customer_id"]]
    feat = fs.frame.select(*[f"`{c}`" for c in cols]).join(keys, ROW).toPandas()
    feat = feat.set_index(ROW).loc[cand[ROW].to_numpy()].reset_index()
    effects, _ = estimate_effects(cfg, cfg.scoring.model_alias, feat)
    if effects is not None:
        effects.index = cand.index
    return effects, feat["customer_id"].astype(str).reset_index(drop=True), feat


def _scored_pool(spark: SparkSession, fs: SparkFeatureSet, scored: DataFrame, alerts: pd.DataFrame,
                 alert_row: np.ndarray, pass_cols: list[str], model: Any, cfg: Config,
                 meta: dict[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame | None, pd.Series, dict[str, int]]:
    """Every scored customer as a candidate (:func:`inference.score.contact_pool`), their uplift effects and raw
    ids: the score columns of all rows are collected (as the default engine's scores), the alerts keep theirs."""
    from inference.score import contact_pool

    score_cols = pass_cols[: pass_cols.index("_alert")]
    everyone = _collect(scored.select(*[f"`{c}`" for c in score_cols])).assign(**meta)
    pos = np.searchsorted(everyone[ROW].to_numpy(), alert_row)
    idx, pool = contact_pool(everyone.drop(columns=[ROW]), alerts, pos, "scored")
    effects, raw_ids, _ = _alert_effects(spark, fs, everyone.iloc[idx].reset_index(drop=True), model, cfg)
    row_of = dict(zip(pool["customer_id"], everyone[ROW].to_numpy()[idx].tolist(), strict=True))
    return pool, effects, raw_ids, row_of


def _explain_chosen(spark: SparkSession, fs: SparkFeatureSet, decided: pd.DataFrame, alerts: pd.DataFrame,
                    row_of: dict[str, int], need: list[str], model: Any, specs: dict[str, FeatureSpec],
                    typical: dict[str, Any], cfg: Config) -> pd.DataFrame:
    """The default engine's :func:`inference.score.explain_chosen` on the collected rows of the chosen contacts."""
    from inference.score import explain_chosen

    chosen = (~decided["customer_id"].isin(set(alerts["customer_id"])) & decided["selected"]).to_numpy()
    if not chosen.any():
        return decided
    rows = np.array([row_of[c] for c in decided.loc[chosen, "customer_id"]], dtype=np.int64)
    keys = spark.createDataFrame(pd.DataFrame({ROW: rows}))
    feats = fs.frame.select(*[f"`{c}`" for c in need]).join(keys, ROW).toPandas()
    feats = feats.set_index(ROW).loc[rows].reset_index()
    return explain_chosen(decided, chosen, feats, model, specs, typical, cfg)


def _counterfactuals(fs: SparkFeatureSet, cand: pd.DataFrame, feat: pd.DataFrame, model: Any,
                     specs: dict[str, FeatureSpec], cfg: Config) -> pd.DataFrame:
    """The default engine's counterfactual per alert, on the collected alert rows; the search's cost scales are
    the population's standard deviations (sample, as pandas), computed in Spark."""
    from pyspark.sql import functions as F

    from inference.counterfactual import counterfactual_columns, match_features, search_for_model

    scfg = cfg.scoring
    if not scfg.counterfactual or not len(cand):
        return cand
    actionable = match_features(model.features, scfg.actionable_features)
    row = fs.frame.agg(*[F.stddev_samp(F.col(f"`{f}`").cast("double")).alias(f) for f in actionable]).first()
    scales = {f: float(row[f]) for f in actionable if row[f] is not None and np.isfinite(row[f]) and row[f] > 0}
    threshold = getattr(scfg.risk_tiers, "medium" if scfg.alert_min_tier == "low" else scfg.alert_min_tier)
    search = search_for_model(model, specs, scfg.actionable_features, threshold, scales=scales)
    cf = counterfactual_columns(model, feat, cand["churn_probability"].to_numpy(), search, specs,
                                cfg.training.economics.currency)
    return cand.assign(**{c: cf[c].to_numpy() for c in cf.columns})


def _collect(alerts: DataFrame) -> pd.DataFrame:
    """Rows as the default engine's pandas frame (customers row order; reasons as lists of dicts)."""
    pdf = alerts.toPandas().sort_values(ROW, kind="stable").reset_index(drop=True)
    for col in _LIST_OUT:
        if col in pdf:
            pdf[col] = [_plain(v) for v in pdf[col]]
    return pdf


def _plain(v: Any) -> Any:
    """Arrow's list/struct cells as plain Python lists and dicts (nested ones too)."""
    if v is None:
        return []
    return [_deep(x) for x in (v.tolist() if isinstance(v, np.ndarray) else v)]


def _deep(x: Any) -> Any:
    if hasattr(x, "asDict"):
        x = x.asDict()
    if isinstance(x, Mapping):
        return {k: _deep(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, np.ndarray)):
        return [_deep(v) for v in (x.tolist() if isinstance(x, np.ndarray) else x)]
    return x


def _global_importance(scored: DataFrame | None, alerts: pd.DataFrame, model: Any,
                       specs: dict[str, FeatureSpec]) -> pd.DataFrame | None:
    """:func:`inference.explain.global_group_importance` from the per-row group impacts of the explained rows."""
    rows = alerts
    if scored is not None:  # explain_all: every scored row
        rows = scored.select(ROW, "_abs_impact").toPandas().sort_values(ROW, kind="stable")
    if not len(rows):
        return None
    impact = np.vstack([np.asarray(v, dtype=np.float64) for v in rows["_abs_impact"]])
    groups = list(dict.fromkeys(specs[f].group for f in model.features))
    fam = {specs[f].group: specs[f].family for f in model.features}
    df = pd.DataFrame({"group": groups, "mean_abs_impact": impact.mean(axis=0)})
    df["family"] = df["group"].map(fam)
    return df.sort_values("mean_abs_impact", ascending=False).reset_index(drop=True)


def _drift_and_report(st: Path, summary: dict[str, Any], model: Any, fs: SparkFeatureSet, scores_pd: pd.DataFrame,
                      alerts_pd: pd.DataFrame, scfg: Any, importance: pd.DataFrame | None) -> None:
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
    render_report(st / "report.html", summary=summary, scores=scores_pd, alerts=alerts_pd, global_importance=importance,
                  drift=drift, top_n=scfg.report_top_n)
