"""``churn``: the command-line entry point (generate, features, train, score, demo, promote, rollback, monitor, refresh).

Every command loads the config once, validates inputs before writing anything, writes outputs
atomically, and ends with a machine-readable ``summary.json`` in ``--out`` where it has one.
Expected failures (bad data, bad config, missing model) print a clear message and exit with a
``sysexits`` code: 64 usage (e.g. ``--as-of`` past the data), 65 bad data, 66 missing input, 75 retry later
(horizon not over yet, or ``--out`` / the training study locked by another process), 78 bad config.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from churn.errors import EXIT_SOFTWARE, ChurnError

if TYPE_CHECKING:  # heavy libraries are imported inside the commands, so `churn --help` stays fast
    import pandas as pd

log = logging.getLogger("churn")

AFTER_END_OPTION = click.option("--allow-after-data-end", "after_end", is_flag=True,
                                help="Accept an --as-of later than the day after the data's last record.")


def _check_config(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Validate the config while parsing the command line, before any heavy library is imported."""
    from churn.config import load_config

    try:
        load_config(value)
    except ChurnError as exc:
        click.echo(f"error: {exc}", err=True)
        ctx.exit(exc.exit_code)
    return value


CONFIG_OPTION = click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
                             callback=_check_config, help="YAML config (default: configs/default.yaml).")


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 0 else logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", datefmt="%H:%M:%S",
                        stream=sys.stderr, force=True)
    from churn.redact import RedactingFilter

    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactingFilter())  # config values marked secret never reach a log
    for noisy in ("alembic", "urllib3", "matplotlib", "numba", "git"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("mlflow").setLevel(logging.ERROR)  # its INFO/WARNING chatter is not for analysts
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn expected errors into one clear message and an exit code instead of a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ChurnError as exc:
            from churn.redact import redact_text

            click.echo(f"error: {redact_text(str(exc))}", err=True)
            sys.exit(exc.exit_code)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise  # usage errors: click prints them and exits 2
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except Exception as exc:  # noqa: BLE001 - last resort: say what happened, keep the trace for -v
            log.debug("unexpected error", exc_info=True)
            click.echo(f"error: unexpected {type(exc).__name__}: {exc} (run with -v for the traceback)", err=True)
            sys.exit(EXIT_SOFTWARE)

    return wrapper


def _parse_date(ctx: click.Context, param: click.Parameter, value: str | None) -> pd.Timestamp | None:
    if value is None:
        return None
    import pandas as pd

    try:
        return pd.Timestamp(datetime.strptime(value, "%Y-%m-%d"))
    except ValueError as exc:
        raise click.BadParameter(f"expected YYYY-MM-DD, got {value!r}") from exc


def _check_as_of(data_end: pd.Timestamp, as_of: pd.Timestamp, allowed: bool) -> None:
    """Refuse a cutoff past the data's end: nothing is known then, so every customer would look gone quiet."""
    import pandas as pd

    from churn.timebase import default_cutoff

    if allowed or pd.isna(data_end):
        return
    latest = default_cutoff(data_end)
    if as_of > latest:
        from churn.errors import UsageError

        raise UsageError(f"--as-of {as_of.date()} is after the data's end ({data_end.date()}): every customer would "
                         f"look inactive; use --as-of {latest.date()} or earlier, or pass --allow-after-data-end")


def _summary(out: Path, payload: dict[str, Any]) -> Path:
    from churn.io import write_json

    payload.setdefault("generated_at", datetime.now(UTC).isoformat(timespec="seconds"))
    return write_json(out / "summary.json", payload)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("-v", "--verbose", count=True, help="More log output (-v: debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
@click.option("--no-cache", is_flag=True,
              help="Read and validate the data files afresh: no table cache (see data.cache in the config).")
@click.version_option(package_name="churn-early-warning")
def main(verbose: int, quiet: bool, no_cache: bool) -> None:
    """Churn early-warning system.

    Builds point-in-time features from customer tables, trains a tuned and calibrated XGBoost
    model tracked in MLflow, and scores customers into ranked, explained alerts with retention
    playbooks. Start with `churn demo --out demo`.
    """
    _setup_logging(verbose, quiet)
    if no_cache:
        os.environ["CHURN_NO_CACHE"] = "1"  # read by features.table_cache (also in the processes this one starts)


# --------------------------------------------------------------------------- generate
@main.command()
@click.option("--customers", "n_customers", type=click.IntRange(min=10), default=10_000, show_default=True,
              help="Number of customers to simulate.")
@click.option("--seed", type=int, default=42, show_default=True, help="Random seed (same seed, same data).")
@click.option("--start", default="2024-01-01", show_default=True, callback=_parse_date,
              help="First day of simulated activity (YYYY-MM-DD).")
@click.option("--end", default="2025-12-31", show_default=True, callback=_parse_date,
              help="Last day of simulated activity (YYYY-MM-DD).")
@click.option("--format", "fmt", type=click.Choice(["parquet", "csv"]), default="parquet", show_default=True)
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Folder to write the tables into.")
@CONFIG_OPTION
@handle_errors
def generate(n_customers: int, seed: int, start: pd.Timestamp, end: pd.Timestamp, fmt: str, out: str,
             config_path: str | None) -> None:
    """Write a realistic demo data folder (customers, events, transactions, interactions, treatments).

    The true campaign effects go to OUT/_truth/ for benchmarks; the pipeline never reads them.
    """
    from churn.generate import simulate_demo, write_demo
    from churn.io import hash_files

    if end <= start + timedelta(days=60):
        raise click.BadParameter("--end must be at least 60 days after --start", param_hint="--end")
    t0 = time.perf_counter()
    start, end = start.date().isoformat(), end.date().isoformat()
    tables, truth = simulate_demo(n_customers=n_customers, seed=seed, start=start, end=end)
    paths = write_demo(tables, out, fmt=fmt, truth=truth)
    summary = {"command": "generate", "customers": n_customers, "seed": seed, "start": start, "end": end,
               "rows": {k: len(v) for k, v in tables.items()}, "outputs": [str(p) for p in paths],
               "input_hash": hash_files(paths), "seconds": round(time.perf_counter() - t0, 2)}
    _summary(Path(out), summary)
    log.info("wrote %s to %s in %.1fs", ", ".join(f"{k}={len(v):,}" for k, v in tables.items()), out, summary["seconds"])


# --------------------------------------------------------------------------- features
@main.command()
@click.option("--data", "data_dir", type=click.Path(), required=True, help="Data folder (see README: data contract).")
@click.option("--as-of", "as_of", callback=_parse_date, required=True, help="Cutoff date YYYY-MM-DD (exclusive).")
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="Output Parquet file.")
@click.option("--labels/--no-labels", default=False, show_default=True,
              help="Add the label column (needs data after the cutoff).")
@click.option("--engine", type=click.Choice(["pandas", "spark"]), default="pandas", show_default=True,
              help="pandas: this machine. spark: Apache Spark (same results; see docs/spark.md).")
@click.option("--spark-master", default=None, help="Spark master (default: spark-submit's, else local[*]).")
@click.option("--buckets", "n_buckets", type=click.IntRange(min=1), default=None,
              help="Spark: customer buckets (default: about 1M customers per bucket).")
@AFTER_END_OPTION
@CONFIG_OPTION
@handle_errors
def features(data_dir: str, as_of: pd.Timestamp, out: str, labels: bool, engine: str, spark_master: str | None,
             n_buckets: int | None, after_end: bool, config_path: str | None) -> None:
    """Build one feature row per customer active at the cutoff; only data before it is used.

    Also writes the feature catalogue (FILE.catalogue.csv) and summary.json beside FILE.
    """
    from churn.config import load_config
    from churn.io import write_csv, write_parquet
    from features.build import FeatureBuilder
    from features.catalogue import catalogue_frame
    from features.contract import load_tables

    cfg = load_config(config_path)
    if cfg.label.definition == "snapshot":
        from churn.errors import ConfigError

        raise ConfigError(f"{cfg.source}: label.definition is 'snapshot' (no dates): there is no cutoff to "
                          "build features or score at; use `churn train` for cross-validation")
    t0 = time.perf_counter()
    if engine == "spark":
        from features.spark import build_feature_set_spark, get_spark

        sfs = build_feature_set_spark(get_spark(spark_master), data_dir, cfg, as_of, n_buckets=n_buckets,
                                      with_labels=labels)
        sfs.write(out)
        outputs = [out]
        if "://" not in out:
            cat_path = Path(out).with_suffix(".catalogue.csv")
            write_csv(cat_path, catalogue_frame(sfs.specs))
            outputs.append(str(cat_path))
            _summary(Path(out).parent, {"command": "features", "engine": "spark", "cutoff": as_of.date().isoformat(),
                                        "input_hash": sfs.input_hash, "data_dir": data_dir, "config": cfg.source,
                                        "rows": sfs.n_population, "features": len(sfs.specs), "outputs": outputs,
                                        "n_buckets": sfs.n_buckets, "timings_s": sfs.timings,
                                        "seconds": round(time.perf_counter() - t0, 2)})
        log.info("wrote %s rows x %d features to %s (spark)", f"{sfs.n_population:,}", len(sfs.specs), out)
        return
    from churn.errors import no_active_customers
    from churn.publish import new_staging, output_lock, publish_files

    out_path = Path(out)
    cat_path = out_path.with_suffix(".catalogue.csv")
    with output_lock(out_path, folder=False):
        tables = load_tables(data_dir, cfg)
        _check_as_of(tables.data_end, as_of, after_end)
        fs = FeatureBuilder(tables, cfg).build(as_of, with_labels=labels)
        if fs.frame.empty:
            raise no_active_customers(as_of)
        st = new_staging(out_path)
        write_parquet(st / out_path.name, fs.frame)
        write_csv(st / cat_path.name, catalogue_frame(fs.specs))
        _summary(st, {"command": "features", "cutoff": as_of.date().isoformat(), "input_hash": tables.input_hash,
                      "data_dir": data_dir, "config": cfg.source, "rows": len(fs.frame), "features": len(fs.specs),
                      "outputs": [str(out_path), str(cat_path)], "seconds": round(time.perf_counter() - t0, 2)})
        publish_files(st, out_path.parent, [out_path.name, cat_path.name, "summary.json"])
    log.info("wrote %s rows x %d features to %s", f"{len(fs.frame):,}", len(fs.specs), out_path)


# --------------------------------------------------------------------------- train
@main.command()
@click.option("--data", "data_dir", type=click.Path(), required=True, help="Data folder with history.")
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Folder for summary.json (optional).")
@click.option("--trials", type=click.IntRange(min=1), default=None, help="Override the Optuna trial budget.")
@click.option("--timeout", type=float, default=None, help="Override the Optuna time budget (seconds).")
@CONFIG_OPTION
@handle_errors
def train(data_dir: str, out: str | None, trials: int | None, timeout: float | None, config_path: str | None) -> None:
    """Tune (Optuna), train, calibrate, evaluate out of time, log to MLflow and register the model.

    The new version gets the alias `challenger`; it also becomes `champion` if there is none.
    """
    from churn.config import load_config
    from features.contract import load_tables
    from training.train import study_lock
    from training.train import train as run_train

    cfg = load_config(config_path)
    if trials is not None or timeout is not None:
        tuning = cfg.training.tuning.model_copy(update={k: v for k, v in
                                                        {"n_trials": trials, "timeout_s": timeout}.items() if v is not None})
        cfg = cfg.model_copy(update={"training": cfg.training.model_copy(update={"tuning": tuning})})
    tables = load_tables(data_dir, cfg)
    if cfg.label.definition == "snapshot":
        _train_snapshot(tables, cfg, data_dir, out)
        return
    with study_lock(cfg, tables.input_hash):  # a second `churn train` on this study is refused (exit 75)
        result = run_train(tables, cfg, data_dir)
    result = {"command": "train", "input_hash": tables.input_hash, "data_dir": data_dir, "config": cfg.source, **result}
    if out:
        _summary(Path(out), result)
    m = result["metrics"]
    click.echo(f"model {result['model_name']} v{result['model_version']} ({', '.join(result['aliases'])}): "
               f"test ROC-AUC {m['test_roc_auc']:.3f}, PR-AUC {m['test_pr_auc']:.3f}, run {result['run_id']}")
    _echo_mlflow_link(cfg, result["tracking_uri"])


def _echo_mlflow_link(cfg: Any, tracking_uri: str) -> None:
    """Where to see the runs: MLflow 3 would otherwise open on its GenAI overview."""
    from model.registry import runs_page_url

    click.echo(f"runs: `churn ui` (or `mlflow ui --backend-store-uri {tracking_uri}`, then {runs_page_url(cfg.mlflow)})")


def _train_snapshot(tables: Any, cfg: Any, data_dir: str, out: str | None) -> None:
    """Snapshot data (no dates): Optuna on a grouped, stratified CV objective; the model is registered."""
    from training.snapshot import train_snapshot

    result = train_snapshot(cfg, tables, data_dir)
    result = {"command": "train", "mode": "snapshot cross-validation (no time: no out-of-time split)",
              "input_hash": tables.input_hash, "data_dir": data_dir, "config": cfg.source, **result}
    if out:
        _summary(Path(out), result)
    x = result["xgboost"]
    click.echo(f"model {result['model_name']} v{result['model_version']} ({', '.join(result['aliases'])}): "
               f"snapshot data, {cfg.training.snapshot.n_splits}-fold CV ROC-AUC {x['roc_auc_mean']:.4f} "
               f"+/- {x['roc_auc_std']:.4f}, log loss {x['log_loss_mean']:.4f}, run {result['run_id']}")


# --------------------------------------------------------------------------- score
@main.command()
@click.option("--data", "data_dir", type=click.Path(), required=True, help="Data folder.")
@click.option("--as-of", "as_of", callback=_parse_date, default=None,
              help="Cutoff date YYYY-MM-DD (default: the day after the latest record; snapshot data: its export "
                   "date, data.observed_until or else the customers file's modification date).")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Output folder.")
@click.option("--model", "model_uri", default=None,
              help="Model URI (e.g. models:/churn-xgb/3). Default: models:/<name>@champion.")
@click.option("--explain-all", is_flag=True, help="Explain every customer, not only alerted ones.")
@click.option("--engine", type=click.Choice(["pandas", "spark"]), default="pandas", show_default=True,
              help="pandas: this machine. spark: Apache Spark (same results; see docs/spark.md).")
@click.option("--spark-master", default=None, help="Spark master (default: spark-submit's, else local[*]).")
@click.option("--buckets", "n_buckets", type=click.IntRange(min=1), default=None,
              help="Spark: customer buckets (default: about 1M customers per bucket).")
@click.option("--previous", default=None,
              help="An earlier scoring run (its --out folder or MLflow run id): say why each alert's score changed.")
@AFTER_END_OPTION
@CONFIG_OPTION
@handle_errors
def score(data_dir: str, as_of: pd.Timestamp | None, out: str, model_uri: str | None, explain_all: bool,
          engine: str, spark_master: str | None, n_buckets: int | None, previous: str | None, after_end: bool,
          config_path: str | None) -> None:
    """Score every active customer; write scores, ranked explained alerts with playbooks, and an HTML report.

    Outputs in --out: scores.parquet, alerts.parquet/.csv/.jsonl, drift.csv, report.html, summary.json.
    """
    from churn.config import load_config

    cfg = load_config(config_path)
    if cfg.label.definition == "snapshot" and engine == "spark":
        from churn.errors import ConfigError

        raise ConfigError(f"{cfg.source}: snapshot data is scored with --engine pandas (one row per customer)")
    if engine == "spark" and previous:
        raise click.BadParameter("works with --engine pandas only", param_hint="--previous")
    if engine == "spark":
        from churn.timebase import default_cutoff
        from model.registry import check_model_available

        check_model_available(cfg.mlflow, model_uri, cfg.scoring.model_alias)
        from features.spark import data_end_spark, get_spark
        from inference.spark import score_spark

        spark = get_spark(spark_master)
        if as_of is None:
            as_of = default_cutoff(data_end_spark(spark, data_dir, cfg))
        summary = score_spark(spark, data_dir, cfg, as_of, out, model_uri=model_uri, n_buckets=n_buckets,
                              explain_all=explain_all)
    else:
        summary = _score_local(cfg, data_dir, as_of, out, model_uri, explain_all, previous, after_end)
    click.echo(f"scored {summary['n_scored']:,} customers at {summary['cutoff']}: {summary['n_alerts']:,} alerts "
               f"({summary['n_selected']:,} selected, {summary['n_control']:,} control) -> {out}/report.html")


def _score_local(cfg: Any, data_dir: str, as_of: pd.Timestamp | None, out: str, model_uri: str | None,
                 explain_all: bool, previous: str | None, after_end: bool) -> dict[str, Any]:
    """`churn score --engine pandas`. The MLflow helper process starts first (nothing heavy is imported before it),
    then the model check (a missing model fails in seconds, before any data is read), the data and the scoring."""
    from churn.publish import output_lock

    with output_lock(out), contextlib.ExitStack() as stack:  # a second scorer into --out is refused first
        worker = _mlflow_worker(stack, cfg, model_uri)
        from churn.timebase import default_cutoff
        from features.contract import load_tables
        from inference.score import score as run_score
        from model.registry import check_model_available

        check_model_available(cfg.mlflow, model_uri, cfg.scoring.model_alias)
        if cfg.label.definition == "snapshot":
            from inference.score import snapshot_as_of

            tables = load_tables(data_dir, cfg, require_label=False)  # current customers: no label yet
            as_of = snapshot_as_of(tables, as_of)
        else:
            tables = load_tables(data_dir, cfg)
            as_of = default_cutoff(tables.data_end) if as_of is None else as_of
            _check_as_of(tables.data_end, as_of, after_end)
        return run_score(tables, cfg, as_of, out, model_uri=model_uri, explain_all=explain_all, previous=previous,
                         mlflow_worker=worker)


def _mlflow_worker(stack: contextlib.ExitStack, cfg: Any, model_uri: str | None) -> Any:
    """The MLflow helper process of `churn score` (:mod:`model.mlflow_worker`), started now so that it loads MLflow
    while this process scores. Only for the registry's model in a local SQLite store that holds it (so the helper
    never creates a store); None otherwise, or when this process has loaded MLflow already: it logs the run itself."""
    from churn.mlflow_runs import sqlite_alias_lookup

    if "mlflow" in sys.modules or model_uri is not None:
        return None
    found = sqlite_alias_lookup(cfg.mlflow.tracking_uri, cfg.mlflow.model_name, cfg.scoring.model_alias)
    if found is None or found[0] is None:
        return None
    from model.mlflow_worker import MlflowWorker

    return stack.enter_context(MlflowWorker(cfg.mlflow.model_dump()))


# --------------------------------------------------------------------------- demo
@main.command()
@click.option("--out", type=click.Path(file_okay=False), default="demo", show_default=True, help="Output folder.")
@click.option("--customers", "n_customers", type=click.IntRange(min=200), default=8_000, show_default=True)
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--trials", type=click.IntRange(min=1), default=None, help="Override the Optuna trial budget.")
@CONFIG_OPTION
@handle_errors
def demo(out: str, n_customers: int, seed: int, trials: int | None, config_path: str | None) -> None:
    """Generate demo data, train and register a model, and score the latest cutoff, in one go.

    Writes OUT/data (tables), OUT/scoring (alerts, report.html) and OUT/summary.json.
    """
    from churn.config import load_config
    from churn.generate import simulate_demo, write_demo
    from churn.publish import output_lock, staged_output
    from churn.timebase import default_cutoff
    from features.contract import load_tables
    from inference.score import score as run_score
    from training.train import study_lock
    from training.train import train as run_train

    cfg = load_config(config_path)
    if trials is not None:
        tuning = cfg.training.tuning.model_copy(update={"n_trials": trials})
        cfg = cfg.model_copy(update={"training": cfg.training.model_copy(update={"tuning": tuning})})
    out_dir = Path(out)
    stages: dict[str, float] = {}
    t0 = time.perf_counter()
    data_dir = out_dir / "data"
    with output_lock(out_dir), staged_output(out_dir) as st:  # OUT is replaced as a whole at the end
        demo_tables, truth = simulate_demo(n_customers=n_customers, seed=seed)
        write_demo(demo_tables, st / "data", truth=truth)
        stages["generate_s"] = time.perf_counter() - t0
        tables = load_tables(st / "data", cfg)
        tables.files = [data_dir / f.name for f in tables.files]  # where they will be once published
        t = time.perf_counter()
        with study_lock(cfg, tables.input_hash):
            trained = run_train(tables, cfg, data_dir)
        stages["train_s"] = time.perf_counter() - t
        t = time.perf_counter()
        as_of = default_cutoff(tables.data_end)
        scored = run_score(tables, cfg, as_of, st / "scoring", publish_as=out_dir / "scoring")
        stages["score_s"] = time.perf_counter() - t
        stages["total_s"] = time.perf_counter() - t0
        _demo_summary(st, n_customers, seed, cfg.source, tables.input_hash, data_dir, trained, scored, stages)
    m = trained["metrics"]
    click.echo(f"demo done in {stages['total_s']:.0f}s: model {trained['model_name']} v{trained['model_version']} "
               f"test ROC-AUC {m['test_roc_auc']:.3f} PR-AUC {m['test_pr_auc']:.3f}; "
               f"{scored['n_alerts']:,} alerts -> {out_dir / 'scoring' / 'report.html'}")
    _echo_mlflow_link(cfg, trained["tracking_uri"])


def _demo_summary(st: Path, n_customers: int, seed: int, config: str | None, input_hash: str, data_dir: Path,
                  trained: dict[str, Any], scored: dict[str, Any], stages: dict[str, float]) -> None:
    """summary.json of `churn demo`, written into the staging folder ``st``."""
    summary = {"command": "demo", "customers": n_customers, "seed": seed, "config": config,
               "input_hash": input_hash, "tracking_uri": trained["tracking_uri"], "run_id": trained["run_id"],
               "model_name": trained["model_name"], "model_version": trained["model_version"],
               "model_alias": trained["aliases"], "metrics": trained["metrics"], "cutoff": scored["cutoff"],
               "n_scored": scored["n_scored"], "n_alerts": scored["n_alerts"], "timings_s": stages,
               "train": trained, "score": scored,
               "outputs": {"data": str(data_dir), **scored["outputs"]}}
    _summary(st, summary)


# --------------------------------------------------------------------------- registry
@main.command()
@click.option("--version", "version", default=None, help="Version to promote (default: the challenger).")
@click.option("--force", is_flag=True, help="Promote even if it does not beat the champion.")
@click.option("--reason", default=None, help="Why (recorded in the champion history; required with --force).")
@click.option("--data", "data_dir", type=click.Path(), default=None,
              help="Data folder: score both models on the challenger's test cutoff now.")
@CONFIG_OPTION
@handle_errors
def promote(version: str | None, force: bool, reason: str | None, data_dir: str | None, config_path: str | None) -> None:
    """Make the challenger the champion if it beats the champion on the same out-of-time window.

    Exits 1 (and changes nothing) when the challenger is not better.
    """
    from churn.config import load_config
    from training.promote import promote as run_promote

    cfg = load_config(config_path)
    res = run_promote(cfg, version=version, force=force, reason=reason, data_dir=data_dir)
    click.echo(res["message"])
    if not res["promoted"]:
        sys.exit(1)


@main.command()
@click.option("--reason", default="rollback", show_default=True, help="Recorded in the champion history.")
@CONFIG_OPTION
@handle_errors
def rollback(reason: str, config_path: str | None) -> None:
    """Restore the previous champion."""
    from churn.config import load_config
    from training.promote import rollback as run_rollback

    cfg = load_config(config_path)
    click.echo(run_rollback(cfg, reason=reason)["message"])


# --------------------------------------------------------------------------- ui
@main.command()
@click.option("--port", type=click.IntRange(1, 65535), default=5000, show_default=True, help="Port on 127.0.0.1.")
@click.option("--no-browser", is_flag=True, help="Only print the link (on a server, or to open it elsewhere).")
@CONFIG_OPTION
@handle_errors
def ui(port: int, no_browser: bool, config_path: str | None) -> None:
    """Open the MLflow UI on the configured store, on the experiment's runs table.

    Plain `mlflow ui` opens MLflow 3's GenAI overview whatever the store holds; this starts it on the
    config's store (following a moved store, as every command does), waits until it answers, and opens the
    runs link (`?workflowType=machine_learning`; the browser then remembers the choice). Ctrl-C stops it.
    """
    import subprocess
    import urllib.request
    import webbrowser

    from churn.config import load_config
    from model.registry import runs_page_url, setup_mlflow

    cfg = load_config(config_path)
    uri = setup_mlflow(cfg.mlflow)
    host = f"http://127.0.0.1:{port}"
    url = runs_page_url(cfg.mlflow, host)
    # its own process group: mlflow ui starts uvicorn workers and job runners, and all of them must stop with it
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
                             "--host", "127.0.0.1", "--port", str(port)], stdout=sys.stderr,  # stdout: the link
                            start_new_session=True)
    signal.signal(signal.SIGTERM, _raise_interrupt)  # a scheduler's kill stops the server too, not only Ctrl-C
    try:
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(host, timeout=2):  # noqa: S310 - our own local server
                    break
            except OSError:
                time.sleep(0.5)
        if proc.poll() is not None or time.monotonic() >= deadline:
            click.echo(f"error: mlflow ui did not start on port {port} (in use?)", err=True)
            sys.exit(69)
        click.echo(f"MLflow UI on {uri}: {url}  (Ctrl-C stops it)")
        sys.stdout.flush()
        if not no_browser:
            webbrowser.open(url)
        proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        _stop_group(proc)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _stop_group(proc: Any) -> None:
    """Stop a child started with ``start_new_session`` and every process it started: TERM to the group, wait
    for the child, then KILL whatever of the group is left (uvicorn workers can outlive their parent)."""
    import subprocess

    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # until no process of the group is left (killed ones go at once)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        time.sleep(0.1)


# --------------------------------------------------------------------------- monitor
def _fmt(x: object, spec: str = ".3f") -> str:
    return format(x, spec) if isinstance(x, (int, float)) else "n/a"


@main.command()
@click.option("--scores", "scores_dir", type=click.Path(file_okay=False), required=True,
              help="Output folder of a past `churn score` run (scores.parquet, alerts.parquet, summary.json).")
@click.option("--data", "data_dir", type=click.Path(), required=True,
              help="Data folder that now covers the run's cutoff + label horizon.")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Output folder.")
@click.option("--level", type=click.FloatRange(0.5, 0.999), default=0.95, show_default=True,
              help="Confidence level of the uplift intervals.")
@CONFIG_OPTION
@handle_errors
def monitor(scores_dir: str, data_dir: str, out: str, level: float, config_path: str | None) -> None:
    """Evaluate past alerts once their horizon is over: realized accuracy, alert precision, playbook uplift.

    Compares churn of treated and held-out (control) customers per playbook with a confidence interval.
    Outputs in --out: monitor.json, treatment_effect.csv, summary.json. Exit 75 if the horizon is not over yet.
    """
    from churn.config import load_config
    from churn.publish import output_lock, staged_output
    from features.contract import load_tables
    from inference.monitor import evaluate_alerts, write_monitor_report

    cfg = load_config(config_path)
    with output_lock(out), staged_output(out) as st:
        tables = load_tables(data_dir, cfg)
        res = evaluate_alerts(scores_dir, tables, cfg.label, pseudonymize_key=cfg.scoring.pseudonymize_key,
                              level=level)
        written = write_monitor_report(res, st) + _campaign_history(cfg, scores_dir, res["cutoff"], st)
        paths = [Path(out) / p.name for p in written]
        _monitor_summary(st, res, scores_dir, data_dir, cfg.source, tables.input_hash, paths)
    all_row = res["treatment_effect"][-1] if res["treatment_effect"] else {}
    click.echo(f"cutoff {res['cutoff']} (+{res['horizon_days']}d): {res['n_scored']:,} scored, realized churn "
               f"{_fmt(res['realized_churn_rate'], '.1%')}, ROC-AUC {_fmt((res['metrics'] or {}).get('roc_auc'))}, "
               f"alert precision {_fmt((res['alert_precision'] or {}).get('precision'))}; uplift ALL "
               f"{_fmt(all_row.get('uplift'))} [{_fmt(all_row.get('ci_low'))}, {_fmt(all_row.get('ci_high'))}] "
               f"-> {out}/monitor.json")
    auc = next((r for r in res.get("estimate_vs_realized") or [] if r["metric"] == "roc_auc"), None)
    if auc:
        click.echo(f"ROC-AUC estimated at scoring {_fmt(auc['estimate'])} [{_fmt(auc['low'])}, {_fmt(auc['high'])}], "
                   f"realized {_fmt(auc['realized'])}")


def _campaign_history(cfg: Any, scores_dir: str, cutoff: str, out: Path) -> list[Path]:
    """The run's contacts as campaign history (OUT/treatments.csv), to append to the data's treatments table.

    Skipped for pseudonymised runs: their ids cannot be joined back to the data.
    """
    from churn.config import resolve_path
    from churn.io import write_csv
    from features.treatments import history_from_alerts
    from inference.playbooks import load_playbooks

    if cfg.scoring.pseudonymize_key:
        log.info("pseudonymised run: no campaign history written (ids cannot be joined back to the data)")
        return []
    import pandas as pd

    alerts = pd.read_parquet(Path(scores_dir) / "alerts.parquet")
    book = load_playbooks(resolve_path(cfg.scoring.playbooks))
    history = history_from_alerts(alerts, f"{book.campaign}-{cutoff}", pd.Timestamp(cutoff))
    return [write_csv(out / "treatments.csv", history)]



# --------------------------------------------------------------------------- refresh
@main.command()
@click.option("--data", "data_dir", type=click.Path(), required=True, help="Data folder with the latest complete data.")
@click.option("--out", type=click.Path(file_okay=False), required=True,
              help="State folder: runs/<cutoff>/ (scorings, monitor/) and summary.json; reuse it every time.")
@CONFIG_OPTION
@handle_errors
def refresh(data_dir: str, out: str, config_path: str | None) -> None:
    """Score the latest cutoff, evaluate runs whose horizon is over, retrain and promote on evidence or cadence.

    Exit 0: done; 3: evidence of a worse champion and nothing promoted; 99: nothing new to do (see README).
    """
    from churn.config import load_config
    from churn.refresh import refresh as run_refresh

    res = run_refresh(load_config(config_path), data_dir, out)
    click.echo(f"refresh {res['cutoff']}: {res['message']} -> {out}/summary.json (exit {res['exit_code']})")
    if res["exit_code"]:
        sys.exit(res["exit_code"])


def _monitor_summary(st: Path, res: dict[str, Any], scores_dir: str, data_dir: str, config: str | None,
                     input_hash: str, paths: list[Path]) -> None:
    """summary.json of `churn monitor`, written into the staging folder ``st``."""
    _summary(st, {"command": "monitor", "scores_dir": scores_dir, "data_dir": data_dir, "config": config,
                  "input_hash": input_hash, "cutoff": res["cutoff"], "horizon_days": res["horizon_days"],
                  "model_version": res["model_version"], "n_scored": res["n_scored"],
                  "realized_churn_rate": res["realized_churn_rate"],
                  "metrics": {"roc_auc": (res["metrics"] or {}).get("roc_auc"),
                              "roc_auc_untreated": (res["metrics_untreated"] or {}).get("roc_auc")},
                  "estimate_vs_realized": res.get("estimate_vs_realized"),
                  "outputs": [str(p) for p in paths]})


# --------------------------------------------------------------------------- global options anywhere
def _verbosity_callback(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    """`-v`/`-q` given after the subcommand: apply them as if they came before it."""
    if value:
        _setup_logging(value if param.name == "verbose" else 0, param.name == "quiet")


def _add_global_options(group: click.Group) -> None:
    """Give every subcommand the group's `-v`/`-q`, so `churn train -v` works like `churn -v train`."""
    for cmd in group.commands.values():
        names = {p.name for p in cmd.params}
        if "verbose" not in names:
            cmd.params.append(click.Option(["-v", "--verbose"], count=True, expose_value=False,
                                           callback=_verbosity_callback, help="More log output (-v: debug)."))
        if "quiet" not in names:
            cmd.params.append(click.Option(["-q", "--quiet"], is_flag=True, expose_value=False,
                                           callback=_verbosity_callback, help="Only warnings and errors."))


_add_global_options(main)

if __name__ == "__main__":  # pragma: no cover
    main()
