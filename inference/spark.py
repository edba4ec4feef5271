"""``--engine spark`` batch scoring: the default engine's alerts, computed by the default engine's code.

Per batch (``mapInPandas``; the model loaded once per Python worker, pinned to one version):
:func:`inference.score.score_rows`, and for the alerted rows exact TreeSHAP reasons
(:func:`inference.explain.explain_rows`), early warnings and :func:`inference.score.contact_plan`, carried back
as one JSON record per alert (values and dtypes exact). The alerts are small and collected: ``max_alerts``, the
uplift effects, counterfactuals, budget, control group and rank are :func:`inference.score.top_alerts` and
:func:`inference.score.decide_alerts` on them, and the alert files are :func:`inference.score.write_alert_files`.
Outputs: ``scores.parquet/`` (Spark part files), ``alerts.parquet`` / ``.csv`` / ``.jsonl``, ``summary.json``,
and ``drift.csv`` / ``report.html`` when the scores fit ``collect_limit``.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
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
from features.spark import ROW, Data, SparkFeatureSet, build_feature_set_spark, worker_errors

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

DEFAULT_COLLECT_LIMIT = 1_000_000
@functools.cache
def _executor_model(source: str) -> Any:
    """The ChurnModel (``source`` as JSON), loaded once per Python worker: from the registry, or shipped files."""
    import mlflow
    from pyspark import SparkFiles

    from model.artifact import ChurnModel
    from model.registry import load_churn_model

    src = json.loads(source)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if src.get("shipped"):
        return ChurnModel.load(Path(SparkFiles.get(src["shipped"])))
    mlflow.set_tracking_uri(src["tracking_uri"])
    mlflow.set_registry_uri(src["tracking_uri"])
    return load_churn_model(src["model_uri"])


def _ship_model(spark: SparkSession, model_uri: str) -> str:
    """Download the model's ChurnModel folder on the driver and ship it with the job (``SparkContext.addFile``)."""
    import mlflow

    root = Path(tempfile.mkdtemp(prefix="churn-model-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)  # executors fetch the files while the job runs
    found = sorted(Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(root / "download")))
                   .rglob("model_meta.json"))
    if not found:
        raise DataError("model", None, f"{model_uri}: no model_meta.json in the model's artifacts")
    staged = root / f"churn-model-{abs(hash(model_uri)) % 10**8}"
    shutil.copytree(found[0].parent, staged)
    shutil.rmtree(root / "download", ignore_errors=True)
    spark.sparkContext.addFile(str(staged), recursive=True)
    return staged.name


def _resolve_model(spark: SparkSession, cfg: Config, model_uri: str | None, ship_model: bool) -> dict[str, Any]:
    """Resolve and pin the model version on the driver; how executors load it (registry or shipped files)."""
    from model.registry import load_churn_model, resolve_model_uri, setup_mlflow

    tracking_uri = setup_mlflow(cfg.mlflow)
    uri, version = resolve_model_uri(cfg.mlflow.model_name, model_uri, cfg.scoring.model_alias)
    pinned = f"models:/{cfg.mlflow.model_name}/{version}" if version is not None else uri
    absolute = tracking_uri  # a relative sqlite:///path is the driver's working directory: absolute for executors
    if tracking_uri.startswith("sqlite:///") and not tracking_uri.startswith("sqlite:////"):
        absolute = "sqlite:///" + str(Path(tracking_uri.removeprefix("sqlite:///")).resolve())
    source = {"shipped": _ship_model(spark, pinned)} if ship_model else {"tracking_uri": absolute, "model_uri": pinned}
    log.info("spark scoring: model %s (version %s, pinned %s)", uri, version, pinned)
    return {"model": load_churn_model(uri), "uri": uri, "version": version, "source": source,
            "tracking_uri": tracking_uri}


def _plain(o: Any) -> Any:
    """JSON for numpy scalars and arrays (floats are written exactly: Python's repr round-trips)."""
    return o.tolist() if isinstance(o, np.ndarray) else None if o is pd.NA or o is pd.NaT else getattr(o, "item", o.__str__)()


class _RowScorer:
    """mapInPandas body: the default engine's per-row steps (score; for alerts explain, route, net value)."""

    def __init__(self, cfg: Config, source: Mapping[str, str], specs: dict[str, FeatureSpec], typical: dict[str, Any],
                 book: Any, explain_all: bool, out_columns: list[str]) -> None:
        self.cfg, self.source, self.specs, self.typical, self.book = cfg, dict(source), specs, typical, book
        self.explain_all, self.out_columns = explain_all, out_columns

    def detail(self, b: pd.DataFrame, res: pd.DataFrame, p: np.ndarray, model: Any, rows: np.ndarray) -> list[str]:
        """The alert columns of ``rows`` (explanation, early warnings, contact plan, group impacts) as JSON."""
        from features.flags import active_flags
        from inference.explain import explain_rows
        from inference.score import contact_plan

        sub, econ = b.iloc[rows], self.cfg.training.economics
        contrib = model.contributions(sub, explainer=self.cfg.scoring.explainer)
        reasons = explain_rows(sub, contrib, p[rows], model.features, self.specs, self.typical,
                               self.cfg.scoring.top_reasons, calibrate=model.calibrator.transform, currency=econ.currency)
        alerts = pd.concat([res.iloc[rows].reset_index(drop=True), reasons.reset_index(drop=True)], axis=1)
        alerts["early_warnings"] = active_flags(sub)
        alerts = contact_plan(alerts, self.book, econ)
        alerts = alerts.drop(columns=list(res.columns))
        alerts["_contrib"] = list(np.asarray(contrib, dtype=np.float64))  # for the global importance
        dtypes = {c: str(t) for c, t in alerts.dtypes.items()}
        return [json.dumps({"values": dict(zip(alerts.columns, r, strict=True)), "dtypes": dtypes}, default=_plain)
                for r in alerts.astype(object).itertuples(index=False, name=None)]

    def batch(self, b: pd.DataFrame, model: Any, rows: np.ndarray | None = None) -> pd.DataFrame:
        """One batch's score rows, the alerts' (or ``rows``') columns as JSON in ``_detail``."""
        from inference import alerts as al
        from inference.score import score_rows

        p = model.predict_proba(b)
        res = score_rows(b, p, self.cfg, model)
        res.insert(0, ROW, b[ROW].to_numpy(dtype=np.int64))
        res["_alert"] = res["risk_tier"].map(al.RISK_ORDER).to_numpy() >= al.RISK_ORDER[self.cfg.scoring.alert_min_tier]
        if rows is None:
            rows = np.arange(len(b)) if self.explain_all else np.flatnonzero(res["_alert"].to_numpy())
        res["_detail"] = None
        if len(rows):
            res.loc[res.index[rows], "_detail"] = self.detail(b, res, p, model, rows)
        return res[self.out_columns]

    def __call__(self, batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        model = _executor_model(json.dumps(self.source, sort_keys=True))
        yield from (self.batch(b, model) for b in batches if len(b))


def _decode(rows: pd.DataFrame) -> pd.DataFrame:
    """Collected alert rows with their JSON alert columns as the default engine's frame (same dtypes)."""
    parsed = [json.loads(d) for d in rows["_detail"]]
    if not parsed:
        return rows.drop(columns=["_detail"])
    detail = pd.DataFrame([p["values"] for p in parsed], index=rows.index)
    for c, t in parsed[0]["dtypes"].items():
        if t not in ("object", "category"):
            detail[c] = detail[c].astype(t)
    return pd.concat([rows.drop(columns=["_detail"]), detail], axis=1)


def _score_schema(horizons: list[int] | None) -> tuple[str, list[str]]:
    timing = [("median_days_to_churn", "double"), *[(f"churn_within_{h}d", "double") for h in horizons],
              ("expected_lifetime_days", "double"), ("urgency", "string")] if horizons else []
    cols = [(ROW, "long"), ("customer_id", "string"), ("churn_probability", "double"), ("risk_tier", "string"),
            ("value_tier", "string"), ("lifecycle_stage", "string"), ("lifetime_value", "double"),
            ("value_at_risk", "double"), *timing, ("_alert", "boolean"), ("_detail", "string")]
    return ", ".join(f"`{c}` {t}" for c, t in cols), [c for c, _ in cols]


@worker_errors()
def score_spark(spark: SparkSession, data: Data, cfg: Config, as_of: pd.Timestamp, out_dir: str | Path,
                model_uri: str | None = None, *, n_buckets: int | None = None, explain_all: bool = False,
                log_to_mlflow: bool = True, ship_model: bool = False, collect_limit: int = DEFAULT_COLLECT_LIMIT,
                features: SparkFeatureSet | None = None) -> dict[str, Any]:
    """Score every customer active at ``as_of`` with Spark; same alerts as :func:`inference.score.score`.

    ``out_dir``: any path Spark can write. ``ship_model``: ship the model with the job instead of having every
    executor read the registry. ``collect_limit``: above this many scored rows the drift table and the report
    (which need every score on the driver) are skipped. ``features``: a :class:`~features.spark.SparkFeatureSet`
    built for this cutoff with the model's event types (``data`` is then only recorded).
    """
    from pyspark.sql import functions as F

    from inference.playbooks import load_playbooks

    scfg, t0, as_of, out = cfg.scoring, time.perf_counter(), pd.Timestamp(as_of), str(out_dir)
    book = load_playbooks(resolve_path(scfg.playbooks), [t.name for t in cfg.features.value_tiers])
    m = _resolve_model(spark, cfg, model_uri, ship_model)
    fs = _scoring_features(spark, data, cfg, as_of, n_buckets, m["model"], features)
    timings = {"features_s": time.perf_counter() - t0}
    t = time.perf_counter()
    local = fs.to_pandas(row_keys=True).frame  # one row per customer, every feature (model, uplift, drift)
    scored, cols, scorer = _row_pass(fs, local, cfg, m, book, explain_all)
    n_scored = scored.count()
    timings["predict_explain_s"] = time.perf_counter() - t
    t = time.perf_counter()
    meta = {"model_name": cfg.mlflow.model_name, "model_version": str(m["version"] or m["uri"]),
            "input_hash": fs.input_hash}
    alerts, importance = _decide(scored, local, fs, m["model"], cfg, book, meta, scorer)
    timings["alerts_s"] = time.perf_counter() - t
    t = time.perf_counter()
    scores = scored.select(ROW, "customer_id", F.lit(as_of.to_pydatetime()).cast("timestamp_ntz").alias("cutoff"),
                           *cols[2:cols.index("_alert")], *[F.lit(v).alias(k) for k, v in meta.items()])
    scores.orderBy(ROW).drop(ROW).write.mode("overwrite").parquet(f"{out}/scores.parquet")
    summary = _summary(spark, cfg, m, fs, scored, alerts, model_uri, int(n_scored))
    _write_small_outputs(spark, out, summary, alerts, scores, m["model"], local, importance, collect_limit,
                         log_to_mlflow, cfg, timings, t, t0)
    scored.unpersist()
    if features is None:
        fs.frame.unpersist()
    log.info("spark scored %s customers, %s alerts (%s selected, %s control) in %.1fs -> %s", f"{n_scored:,}",
             f"{len(alerts):,}", summary["n_selected"], summary["n_control"], timings["total_s"], out)
    return summary


def _row_pass(fs: SparkFeatureSet, local: pd.DataFrame, cfg: Config, m: dict[str, Any], book: Any,
              explain_all: bool) -> tuple[DataFrame, list[str], _RowScorer]:
    """The per-row steps on the executors (persisted), with the typical values of the whole population."""
    from pyspark import StorageLevel

    from features.flags import EARLY_WARNING_FLAGS
    from features.spark import _pandas_fn
    from inference.explain import typical_values

    model, specs = m["model"], {s.name: s for s in fs.specs}
    typical = typical_values(local, model.features, specs)
    schema, cols = _score_schema(model.meta.get("survival_horizons_days") if model.survival is not None else None)
    need = [ROW, "customer_id", *dict.fromkeys([*model.features, *[c for c in ("lifetime_value", "value_tier",
            "lifecycle_stage", "monthly_revenue", *EARLY_WARNING_FLAGS) if c in specs]])]
    scorer = _RowScorer(cfg, m["source"], specs, typical, book, explain_all, cols)
    scorer.need = need
    scored = fs.frame.select(*[f"`{c}`" for c in need]).mapInPandas(_pandas_fn(scorer), schema)
    return scored.persist(StorageLevel.MEMORY_AND_DISK), cols, scorer


def _decide(scored: DataFrame, local: pd.DataFrame, fs: SparkFeatureSet, model: Any, cfg: Config, book: Any,
            meta: dict[str, str], scorer: _RowScorer) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """The population steps, the default engine's functions on the collected rows: ``max_alerts``, uplift
    effects, the contact pool, counterfactuals, budget, control group and rank; and the global importance."""
    from inference import score as sc
    from model.uplift import estimate_effects

    scfg, specs = cfg.scoring, {s.name: s for s in fs.specs}
    cand = _decode(scored.where("_alert").drop("_alert").toPandas().sort_values(ROW, kind="stable")
                   .reset_index(drop=True))
    if not len(cand):  # no alert: the alert columns (and dtypes) of one probe row, for the empty frame
        probe = fs.frame.select(*[f"`{c}`" for c in scorer.need]).limit(1).toPandas()
        cand = _decode(scorer.batch(probe, model, np.arange(len(probe))).drop(columns="_alert")).iloc[:0]
    cand = cand.iloc[sc.top_alerts(cand["value_at_risk"].to_numpy(), scfg.max_alerts)].reset_index(drop=True)
    importance = _global_importance(scored if scorer.explain_all else None, cand, model, specs)
    alert_pos, frame = np.searchsorted(local[ROW].to_numpy(), cand[ROW].to_numpy()), local.drop(columns=[ROW])
    if scfg.counterfactual and len(cand):  # the search's cost scales from the whole population
        cand = sc.add_counterfactuals(cand, frame, cand["churn_probability"].to_numpy(), alert_pos, model, specs, cfg)
    alerts = cand.drop(columns=[ROW, "_contrib"]).assign(cutoff=fs.as_of, **meta)
    effects, info = estimate_effects(cfg, scfg.model_alias, frame)
    idx, pool = alert_pos, alerts
    if sc.pool_for(scfg.contact_pool, effects, info) == "scored":  # every scored customer, as the default engine
        cols = scorer.out_columns[: scorer.out_columns.index("_alert")]
        everyone = scored.select(*[f"`{c}`" for c in cols]).toPandas().sort_values(ROW, kind="stable")
        everyone = everyone.drop(columns=[ROW]).reset_index(drop=True).assign(cutoff=fs.as_of, **meta)
        idx, pool = sc.contact_pool(everyone, alerts, alert_pos, "scored")
    if effects is not None:
        effects = effects.iloc[idx].set_axis(pool.index)
    raw_ids = frame["customer_id"].astype(str).iloc[idx].reset_index(drop=True)
    decided = sc.decide_alerts(pool, book, cfg.training.economics, scfg.budget, sc.lifetime_days(cfg), effects, raw_ids,
                               cfg.training.uplift.effect_weight)
    chosen = (~decided["customer_id"].isin(set(alerts["customer_id"])) & decided["selected"]).to_numpy()
    if chosen.any():
        rows = local[ROW].to_numpy()[idx][chosen]
        feats = fs.frame.select(*[f"`{c}`" for c in scorer.need]).where(fs.frame[ROW].isin(rows.tolist())).toPandas()
        feats = feats.set_index(ROW).loc[rows].reset_index(drop=True)
        decided = sc.explain_chosen(decided, chosen, feats, model, specs, scorer.typical, cfg)
    return sc.alert_rows(decided, alerts["customer_id"]), importance


def _scoring_features(spark: SparkSession, data: Data, cfg: Config, as_of: pd.Timestamp, n_buckets: int | None,
                      model: Any, features: SparkFeatureSet | None) -> SparkFeatureSet:
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


def _summary(spark: SparkSession, cfg: Config, m: dict[str, Any], fs: SparkFeatureSet, scored: DataFrame,
             alerts: pd.DataFrame, model_uri: str | None, n_scored: int) -> dict[str, Any]:
    """The default engine's summary keys (whole-population sums in Spark; replaced by pandas' below collect_limit)."""
    from pyspark.sql import functions as F

    from inference.score import alert_totals

    tiers = scored.groupBy("risk_tier").agg(F.count(F.lit(1)).alias("n"), F.sum("value_at_risk").alias("v")).collect()
    return {"command": "score", "engine": "spark", "cutoff": fs.as_of.date().isoformat(), "input_hash": fs.input_hash,
            "data_files": list(fs.files), "tracking_uri": m["tracking_uri"], "model_name": cfg.mlflow.model_name,
            "model_version": m["version"], "model_uri": m["uri"],
            "model_alias": cfg.scoring.model_alias if model_uri is None else None,
            "horizon_days": m["model"].meta.get("label", {}).get("horizon_days"), "n_scored": n_scored,
            **alert_totals(alerts), "budget": cfg.scoring.budget,
            "value_at_risk_total": float(sum(r["v"] or 0.0 for r in tiers)),
            "risk_tiers": {r["risk_tier"]: int(r["n"]) for r in tiers}, "drift_recommendation": None,
            "n_buckets": fs.n_buckets, "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "spark": {"master": spark.sparkContext.master, "default_parallelism": spark.sparkContext.defaultParallelism}}


def _write_small_outputs(spark: SparkSession, out: str, summary: dict[str, Any], alerts: pd.DataFrame,
                         scores: DataFrame, model: Any, local: pd.DataFrame, importance: pd.DataFrame | None,
                         collect_limit: int, log_to_mlflow: bool, cfg: Config, timings: dict[str, float], t: float,
                         t0: float) -> None:
    """Alert files (the default engine's writers), drift table and report when the scores are small, summary;
    staged in a local temporary folder, then moved into ``out`` (local) or copied through Hadoop's FileSystem."""
    from churn.io import write_json
    from features.spark import _hadoop_path
    from inference.score import _scoring_run, _timing_summary, write_alert_files

    target = Path(out) if "://" not in out else None
    with tempfile.TemporaryDirectory(dir=target, prefix=".staging-") as tmp:
        st = Path(tmp)
        write_alert_files(st, alerts)
        if summary["n_scored"] <= collect_limit:
            scores_pd = scores.toPandas().sort_values(ROW, kind="stable").drop(columns=[ROW]).reset_index(drop=True)
            summary["value_at_risk_total"] = float(scores_pd["value_at_risk"].sum())  # the default engine's sums
            summary["risk_tiers"] = scores_pd["risk_tier"].value_counts().to_dict()
            if model.survival is not None:
                summary["time_to_churn"] = _timing_summary(scores_pd, alerts, model.meta)
            _drift_and_report(st, summary, model, local, scores_pd.assign(cutoff=local["cutoff"].iloc[0]), alerts,
                              cfg.scoring, importance)
        else:
            log.warning("%s scored rows > collect_limit %s: no drift.csv or report.html", summary["n_scored"], collect_limit)
        names = ["scores.parquet", *sorted(f.name for f in st.iterdir()), "summary.json"]
        summary["outputs"] = {n: f"{out}/{n}" if target is None else str(target / n) for n in names}
        timings |= {"write_s": time.perf_counter() - t, "total_s": time.perf_counter() - t0}
        summary["timings_s"] = timings
        with _scoring_run(cfg, summary, st) if log_to_mlflow else contextlib.nullcontext():
            write_json(st / "summary.json", summary)
            for f in sorted(st.iterdir()):  # file by file: the Spark engine's outputs are not published as one set
                if target is not None:
                    shutil.move(str(f), target / f.name)
                else:
                    p, hfs = _hadoop_path(spark, f"{out}/{f.name}")
                    hfs.copyFromLocalFile(False, True, spark.sparkContext._jvm.org.apache.hadoop.fs.Path(
                        str(f.resolve())), p)


def _global_importance(scored: DataFrame | None, alerts: pd.DataFrame, model: Any,
                       specs: dict[str, FeatureSpec]) -> pd.DataFrame | None:
    """:func:`inference.explain.global_group_importance` over the explained rows' collected contributions."""
    from inference.explain import global_group_importance

    rows = alerts if scored is None else _decode(scored.select(ROW, "churn_probability", "_detail").toPandas()
                                                 .sort_values(ROW, kind="stable"))
    return global_group_importance(np.vstack(rows["_contrib"].to_list()), rows["churn_probability"].to_numpy(),
                                   model.features, specs, model.calibrator.transform) if len(rows) else None


def _drift_and_report(st: Path, summary: dict[str, Any], model: Any, local: pd.DataFrame, scores_pd: pd.DataFrame,
                      alerts_pd: pd.DataFrame, scfg: Any, importance: pd.DataFrame | None) -> None:
    """Drift table and HTML report with the default engine's code, on collected (small) outputs."""
    from churn.io import write_csv
    from inference.drift import scoring_drift
    from inference.report import render_report

    drift = None
    if model.reference is not None:
        drift, recommendation = scoring_drift(model.reference, local, model.features,
                                              scores_pd["churn_probability"].to_numpy())
        summary["drift_recommendation"] = recommendation or summary["drift_recommendation"]
        write_csv(st / "drift.csv", drift)
    render_report(st / "report.html", summary=summary, scores=scores_pd, alerts=alerts_pd, global_importance=importance,
                  drift=drift, top_n=scfg.report_top_n)
