"""Spark engine (``--engine spark``, local mode) against the default pandas engine: features and scoring.

For each size, the demo generator (``churn.generate.generate_demo``) writes a data folder (untimed, cached
under ``--workdir``). A small model is trained once on a separate 3,000-customer data set and registered in a
store under ``--workdir``; both engines score with it. Every timed stage runs in a fresh subprocess:

* ``local features``: ``load_tables`` + ``FeatureBuilder.build`` + Parquet write (what ``churn features`` does);
* ``spark features``: ``build_feature_set_spark`` + partitioned Parquet write;
* ``local score``: ``load_tables`` + ``inference.score.score`` (features, prediction, exact TreeSHAP for
  alerts, playbooks, budget, report);
* ``spark score``: ``inference.spark.score_spark`` (the same, with Spark).

Spark's session start-up (JVM, about 10 s) is reported separately and not included in the stage times.
The cutoff is the day after the data's end (the scoring cutoff). The script also checks that both engines
produced the same alerts ("bytes": byte-identical alert files) and reports it, with the load average before
each stage (``os.getloadavg()``, the machine is shared).

    /work/venv/bin/python benchmarks/spark_vs_local.py --customers 50000 200000
    /work/venv/bin/python benchmarks/spark_vs_local.py --customers 20000 --master "local[2]"   # quick

Prints a markdown table and writes ``benchmarks/results/spark_vs_local.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TRAIN_CUSTOMERS, TRAIN_SEED = 3_000, 11


# --------------------------------------------------------------------------- preparation (untimed)
def _data_dir(workdir: Path, n: int, events_per_month: float) -> Path:
    return workdir / f"data_{n}_{events_per_month:g}"


def prepare(workdir: Path, sizes: list[int], events_per_month: float) -> Path:
    """Generate the data folders and train + register the model once; returns the config path."""
    from churn.generate import generate_demo, write_demo

    workdir.mkdir(parents=True, exist_ok=True)
    for n in sizes:
        d = _data_dir(workdir, n, events_per_month)
        if not (d / "interactions.parquet").exists():
            t = time.perf_counter()
            write_demo(generate_demo(n_customers=n, seed=42, events_per_month=events_per_month), d)
            print(f"generated {n:,} customers in {time.perf_counter() - t:.0f}s -> {d}", file=sys.stderr)
    store = workdir / "store"
    config = store / "config.yaml"
    if not (store / "trained.json").exists():
        from churn.config import load_config
        from features.contract import load_tables
        from tests.conftest import working_directory, write_small_config
        from training.train import train

        train_dir = workdir / "train_data"
        write_demo(generate_demo(n_customers=TRAIN_CUSTOMERS, seed=TRAIN_SEED), train_dir)
        write_small_config(store, overrides={"training": {"tuning": {"n_trials": 2}}})
        with working_directory(store):
            cfg = load_config(config)
            summary = train(load_tables(train_dir, cfg.data), cfg, train_dir)
        (store / "trained.json").write_text(json.dumps({"model_version": summary["model_version"]}))
    return config


# --------------------------------------------------------------------------- timed stages (one per subprocess)
def _as_of(data: Path) -> Any:
    import pandas as pd

    customers = pd.read_parquet(data / "customers.parquet", columns=["signup_date", "churn_date"])
    ends = [customers["signup_date"].max(), customers["churn_date"].max()]
    for t in ("events", "transactions", "interactions"):
        ends.append(pd.read_parquet(data / f"{t}.parquet", columns=["timestamp"])["timestamp"].max())
    return (max(e for e in ends if pd.notna(e)) + pd.Timedelta(days=1)).normalize()


def run_stage(stage: str, data: Path, config: Path, out: Path, master: str, shuffle_partitions: int) -> dict[str, Any]:
    import logging

    logging.basicConfig(level=logging.WARNING)
    from churn.config import load_config

    cfg = load_config(config)
    as_of = _as_of(data)
    os.chdir(config.parent)
    res: dict[str, Any] = {"stage": stage, "cutoff": str(as_of.date())}
    if stage.startswith("spark"):
        from features.spark import get_spark

        t = time.perf_counter()
        spark = get_spark(master, **{"spark.sql.shuffle.partitions": str(shuffle_partitions), "spark.ui.enabled": "false",
                                     "spark.driver.memory": "6g"})
        spark.range(1).count()
        res["spark_start_s"] = time.perf_counter() - t
    t0 = time.perf_counter()
    if stage == "local-features":
        from churn.io import write_parquet
        from features.build import FeatureBuilder
        from features.contract import load_tables

        tables = load_tables(data, cfg.data)
        fs = FeatureBuilder(tables, cfg).build(as_of)
        write_parquet(out / "features.parquet", fs.frame)
        res["rows"] = len(fs.frame)
    elif stage == "spark-features":
        from features.spark import build_feature_set_spark

        fs = build_feature_set_spark(spark, data, cfg, as_of)
        fs.write(str(out / "features.parquet"))
        res.update(rows=fs.n_population, n_buckets=fs.n_buckets, parts_s=fs.timings)
    elif stage == "local-score":
        from features.contract import load_tables
        from inference.score import score

        tables = load_tables(data, cfg.data)
        s = score(tables, cfg, as_of, out / "score", log_to_mlflow=False)
        res.update(rows=s["n_scored"], n_alerts=s["n_alerts"], parts_s=s["timings_s"])
    elif stage == "spark-score":
        from inference.spark import score_spark

        s = score_spark(spark, data, cfg, as_of, out / "score", log_to_mlflow=False)
        res.update(rows=s["n_scored"], n_alerts=s["n_alerts"], n_buckets=s["n_buckets"], parts_s=s["timings_s"])
    else:
        raise SystemExit(f"unknown stage {stage}")
    res["seconds"] = time.perf_counter() - t0
    if stage.startswith("spark"):
        spark.stop()
    return res


def _same_alerts(a: Path, b: Path) -> str:
    """"bytes" when alerts.parquet/.csv/.jsonl are byte-identical, "rows" when only the decisions agree, else "no"."""
    import pandas as pd

    if all((a.parent / n).read_bytes() == (b.parent / n).read_bytes()
           for n in ("alerts.parquet", "alerts.csv", "alerts.jsonl")):
        return "bytes"
    x, y = pd.read_parquet(a), pd.read_parquet(b)
    cols = ["rank", "customer_id", "selected", "control_group", "playbook_id"]
    return "rows" if len(x) == len(y) and all(x[c].tolist() == y[c].tolist() for c in cols) else "no"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--customers", type=int, nargs="+", default=[50_000, 200_000])
    ap.add_argument("--events-per-month", type=float, default=20.0)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/churn_spark_bench"))
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--shuffle-partitions", type=int, default=8)
    ap.add_argument("--stages", nargs="+", default=["local-features", "spark-features", "local-score", "spark-score"])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "spark_vs_local.json")
    ap.add_argument("--stage", help=argparse.SUPPRESS)
    ap.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--config", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--stage-out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.stage:  # child process
        print(json.dumps(run_stage(args.stage, args.data, args.config, args.stage_out, args.master,
                                   args.shuffle_partitions), default=str))
        return

    config = prepare(args.workdir, args.customers, args.events_per_month)
    results: list[dict[str, Any]] = []
    for n in args.customers:
        data = _data_dir(args.workdir, n, args.events_per_month)
        for stage in args.stages:
            out = args.workdir / "out" / f"{n}_{stage}"
            out.mkdir(parents=True, exist_ok=True)
            load = os.getloadavg()[0]
            cmd = [sys.executable, __file__, "--stage", stage, "--data", str(data), "--config", str(config),
                   "--stage-out", str(out), "--master", args.master, "--shuffle-partitions", str(args.shuffle_partitions)]
            t = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
            if proc.returncode:
                print(proc.stderr[-4000:], file=sys.stderr)
                raise SystemExit(f"stage {stage} at {n:,} customers failed")
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            res.update(customers=n, process_s=time.perf_counter() - t, load_before=load)
            results.append(res)
            print(f"{n:>9,} {stage:<15} {res['seconds']:8.1f}s (rows {res.get('rows')})", file=sys.stderr)
        if {"local-score", "spark-score"} <= set(args.stages):
            same = _same_alerts(args.workdir / "out" / f"{n}_local-score" / "score" / "alerts.parquet",
                                args.workdir / "out" / f"{n}_spark-score" / "score" / "alerts.parquet")
            for r in results:
                if r["customers"] == n and r["stage"] == "spark-score":
                    r["same_alerts_as_local"] = same

    rows = {}
    for r in results:
        rows.setdefault(r["customers"], {})[r["stage"]] = r
    lines = ["| customers | active at cutoff | local features | spark features | local score | spark score | "
             "spark start-up | same alerts | load avg |", "|---:|---:|---:|---:|---:|---:|---:|:--:|---:|"]
    for n, st in rows.items():
        def s(k: str, st: dict = st) -> str:
            return f"{st[k]['seconds']:.1f} s" if k in st else "-"
        start = max((v.get("spark_start_s", 0) for v in st.values()), default=0)
        rows_active = next((v.get("rows") for v in st.values() if v.get("rows")), "-")
        same = st.get("spark-score", {}).get("same_alerts_as_local", "-")
        load = "-".join(f"{v['load_before']:.0f}" for v in st.values())
        lines.append(f"| {n:,} | {rows_active:,} | {s('local-features')} | {s('spark-features')} | {s('local-score')} | "
                     f"{s('spark-score')} | {start:.1f} s | {same} | {load} |")
    table = "\n".join(lines)
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                                "python": platform.python_version()},
                                    "master": args.master, "events_per_month": args.events_per_month,
                                    "results": results, "table": table}, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
