"""``churn``: the command-line entry point (generate, features, train, score, demo, promote, rollback).

Every command loads the config once, validates inputs before writing anything, writes outputs
atomically, and ends with a machine-readable ``summary.json`` in ``--out`` where it has one.
Expected failures (bad data, bad config, missing model) print a clear message and exit with a
``sysexits`` code: 65 bad data, 66 missing input, 75 horizon not over yet (retry later), 78 bad config.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import pandas as pd

from churn.errors import EXIT_SOFTWARE, ChurnError

log = logging.getLogger("churn")

CONFIG_OPTION = click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
                             help="YAML config (default: configs/default.yaml).")


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 0 else logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", datefmt="%H:%M:%S",
                        stream=sys.stderr, force=True)
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
            click.echo(f"error: {exc}", err=True)
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
    try:
        return pd.Timestamp(datetime.strptime(value, "%Y-%m-%d"))
    except ValueError as exc:
        raise click.BadParameter(f"expected YYYY-MM-DD, got {value!r}") from exc


def _summary(out: Path, payload: dict[str, Any]) -> Path:
    from churn.io import write_json

    payload.setdefault("generated_at", datetime.now(UTC).isoformat(timespec="seconds"))
    return write_json(out / "summary.json", payload)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("-v", "--verbose", count=True, help="More log output (-v: debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
@click.version_option(package_name="churn-early-warning")
def main(verbose: int, quiet: bool) -> None:
    """Churn early-warning system.

    Builds point-in-time features from customer tables, trains a tuned and calibrated XGBoost
    model tracked in MLflow, and scores customers into ranked, explained alerts with retention
    playbooks. Start with `churn demo --out demo`.
    """
    _setup_logging(verbose, quiet)


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

    if end <= start + pd.Timedelta(days=60):
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
@CONFIG_OPTION
@handle_errors
def features(data_dir: str, as_of: pd.Timestamp, out: str, labels: bool, engine: str, spark_master: str | None,
             n_buckets: int | None, config_path: str | None) -> None:
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
    tables = load_tables(data_dir, cfg)
    fs = FeatureBuilder(tables, cfg).build(as_of, with_labels=labels)
    out_path = Path(out)
    write_parquet(out_path, fs.frame)
    cat_path = out_path.with_suffix(".catalogue.csv")
    write_csv(cat_path, catalogue_frame(fs.specs))
    _summary(out_path.parent, {"command": "features", "cutoff": as_of.date().isoformat(), "input_hash": tables.input_hash,
                               "data_dir": data_dir, "config": cfg.source, "rows": len(fs.frame),
                               "features": len(fs.specs), "outputs": [str(out_path), str(cat_path)],
                               "seconds": round(time.perf_counter() - t0, 2)})
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
    result = run_train(tables, cfg, data_dir)
    result = {"command": "train", "input_hash": tables.input_hash, "data_dir": data_dir, "config": cfg.source, **result}
    if out:
        _summary(Path(out), result)
    m = result["metrics"]
    click.echo(f"model {result['model_name']} v{result['model_version']} ({', '.join(result['aliases'])}): "
               f"test ROC-AUC {m['test_roc_auc']:.3f}, PR-AUC {m['test_pr_auc']:.3f}, run {result['run_id']}")


def _train_snapshot(tables: Any, cfg: Any, data_dir: str, out: str | None) -> None:
    """Snapshot data (no dates): stratified cross-validation instead of an out-of-time split."""
    from training.snapshot import cross_validate

    result = cross_validate(cfg, tables, n_splits=5, seed=cfg.training.seed)
    result = {"command": "train", "mode": "snapshot cross-validation (no time: no out-of-time split)",
              "input_hash": tables.input_hash, "data_dir": data_dir, "config": cfg.source, **result}
    if out:
        _summary(Path(out), result)
    x = result["xgboost"]
    click.echo(f"snapshot data: 5-fold CV ROC-AUC {x['roc_auc_mean']:.4f} +/- {x['roc_auc_std']:.4f}, "
               f"log loss {x['log_loss_mean']:.4f} (no model registered: snapshot data cannot be scored at a cutoff)")


# --------------------------------------------------------------------------- score
@main.command()
@click.option("--data", "data_dir", type=click.Path(), required=True, help="Data folder.")
@click.option("--as-of", "as_of", callback=_parse_date, default=None,
              help="Cutoff date YYYY-MM-DD (default: the day after the latest record).")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Output folder.")
@click.option("--model", "model_uri", default=None,
              help="Model URI (e.g. models:/churn-xgb/3). Default: models:/<name>@champion.")
@click.option("--explain-all", is_flag=True, help="Explain every customer, not only alerted ones.")
@click.option("--engine", type=click.Choice(["pandas", "spark"]), default="pandas", show_default=True,
              help="pandas: this machine. spark: Apache Spark (same results; see docs/spark.md).")
@click.option("--spark-master", default=None, help="Spark master (default: spark-submit's, else local[*]).")
@click.option("--buckets", "n_buckets", type=click.IntRange(min=1), default=None,
              help="Spark: customer buckets (default: about 1M customers per bucket).")
@CONFIG_OPTION
@handle_errors
def score(data_dir: str, as_of: pd.Timestamp | None, out: str, model_uri: str | None, explain_all: bool,
          engine: str, spark_master: str | None, n_buckets: int | None, config_path: str | None) -> None:
    """Score every active customer; write scores, ranked explained alerts with playbooks, and an HTML report.

    Outputs in --out: scores.parquet, alerts.parquet/.csv/.jsonl, drift.csv, report.html, summary.json.
    """
    from churn.config import load_config
    from features.contract import load_tables
    from inference.score import score as run_score

    cfg = load_config(config_path)
    if cfg.label.definition == "snapshot":
        from churn.errors import ConfigError

        raise ConfigError(f"{cfg.source}: label.definition is 'snapshot' (no dates): there is no cutoff to "
                          "build features or score at; use `churn train` for cross-validation")
    if engine == "spark":
        from features.spark import data_end_spark, get_spark
        from inference.spark import score_spark

        spark = get_spark(spark_master)
        if as_of is None:
            as_of = (data_end_spark(spark, data_dir, cfg) + pd.Timedelta(days=1)).normalize()
        summary = score_spark(spark, data_dir, cfg, as_of, out, model_uri=model_uri, n_buckets=n_buckets,
                              explain_all=explain_all)
    else:
        tables = load_tables(data_dir, cfg)
        if as_of is None:
            as_of = (tables.data_end + pd.Timedelta(days=1)).normalize()
        summary = run_score(tables, cfg, as_of, out, model_uri=model_uri, explain_all=explain_all)
    click.echo(f"scored {summary['n_scored']:,} customers at {summary['cutoff']}: {summary['n_alerts']:,} alerts "
               f"({summary['n_selected']:,} selected, {summary['n_control']:,} control) -> {out}/report.html")


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
    from features.contract import load_tables
    from inference.score import score as run_score
    from training.train import train as run_train

    cfg = load_config(config_path)
    if trials is not None:
        tuning = cfg.training.tuning.model_copy(update={"n_trials": trials})
        cfg = cfg.model_copy(update={"training": cfg.training.model_copy(update={"tuning": tuning})})
    out_dir = Path(out)
    stages: dict[str, float] = {}
    t0 = time.perf_counter()
    data_dir = out_dir / "data"
    tables, truth = simulate_demo(n_customers=n_customers, seed=seed)
    write_demo(tables, data_dir, truth=truth)
    stages["generate_s"] = time.perf_counter() - t0
    tables = load_tables(data_dir, cfg)
    t = time.perf_counter()
    trained = run_train(tables, cfg, data_dir)
    stages["train_s"] = time.perf_counter() - t
    t = time.perf_counter()
    as_of = (tables.data_end + pd.Timedelta(days=1)).normalize()
    scored = run_score(tables, cfg, as_of, out_dir / "scoring")
    stages["score_s"] = time.perf_counter() - t
    stages["total_s"] = time.perf_counter() - t0
    summary = {"command": "demo", "customers": n_customers, "seed": seed, "config": cfg.source,
               "input_hash": tables.input_hash, "tracking_uri": trained["tracking_uri"], "run_id": trained["run_id"],
               "model_name": trained["model_name"], "model_version": trained["model_version"],
               "model_alias": trained["aliases"], "metrics": trained["metrics"], "cutoff": scored["cutoff"],
               "n_scored": scored["n_scored"], "n_alerts": scored["n_alerts"], "timings_s": stages,
               "train": trained, "score": scored,
               "outputs": {"data": str(data_dir), **scored["outputs"]}}
    _summary(out_dir, summary)
    m = trained["metrics"]
    click.echo(f"demo done in {stages['total_s']:.0f}s: model {trained['model_name']} v{trained['model_version']} "
               f"test ROC-AUC {m['test_roc_auc']:.3f} PR-AUC {m['test_pr_auc']:.3f}; "
               f"{scored['n_alerts']:,} alerts -> {out_dir / 'scoring' / 'report.html'}")


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
    from features.contract import load_tables
    from inference.monitor import evaluate_alerts, write_monitor_report

    cfg = load_config(config_path)
    tables = load_tables(data_dir, cfg)
    res = evaluate_alerts(scores_dir, tables, cfg.label, pseudonymize_key=cfg.scoring.pseudonymize_key, level=level)
    paths = write_monitor_report(res, out) + _campaign_history(cfg, scores_dir, res["cutoff"], Path(out))
    _summary(Path(out), {"command": "monitor", "scores_dir": scores_dir, "data_dir": data_dir, "config": cfg.source,
                         "input_hash": tables.input_hash, "cutoff": res["cutoff"], "horizon_days": res["horizon_days"],
                         "model_version": res["model_version"], "n_scored": res["n_scored"],
                         "realized_churn_rate": res["realized_churn_rate"],
                         "metrics": {"roc_auc": (res["metrics"] or {}).get("roc_auc"),
                                     "roc_auc_untreated": (res["metrics_untreated"] or {}).get("roc_auc")},
                         "outputs": [str(p) for p in paths]})
    all_row = res["treatment_effect"][-1] if res["treatment_effect"] else {}
    click.echo(f"cutoff {res['cutoff']} (+{res['horizon_days']}d): {res['n_scored']:,} scored, realized churn "
               f"{_fmt(res['realized_churn_rate'], '.1%')}, ROC-AUC {_fmt((res['metrics'] or {}).get('roc_auc'))}, "
               f"alert precision {_fmt((res['alert_precision'] or {}).get('precision'))}; uplift ALL "
               f"{_fmt(all_row.get('uplift'))} [{_fmt(all_row.get('ci_low'))}, {_fmt(all_row.get('ci_high'))}] "
               f"-> {out}/monitor.json")


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
    alerts = pd.read_parquet(Path(scores_dir) / "alerts.parquet")
    book = load_playbooks(resolve_path(cfg.scoring.playbooks))
    history = history_from_alerts(alerts, f"{book.campaign}-{cutoff}", pd.Timestamp(cutoff))
    return [write_csv(out / "treatments.csv", history)]


if __name__ == "__main__":  # pragma: no cover
    main()
