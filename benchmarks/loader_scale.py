"""Loading at scale: ``load_tables`` against a Polars read + the same validation, the table cache, small scores.

``load``: raw Parquet tables written by ``benchmarks/features_scale.py``'s generator (string ids, string event
types, unsorted rows; ``--scale 1`` = 1M customers / 50M events / 5M transactions / 2M interactions) are
loaded, each run in a fresh subprocess (its own peak RSS), interleaved in one run:

* ``polars``: ``pl.read_parquet`` + the loader's checks (missing / duplicate / unknown customer ids, missing
  and out-of-range dates, event types, values, amounts, ratings, hours) + customer codes by a join + the sort
  by (timestamp, customer code); Polars frames, no pandas conversion;
* ``load_tables (no cache)``: ``features.contract.load_tables(..., cache=False)``;
* ``load_tables (cache miss)`` on an empty cache folder (load + write the entry), then ``(cache hit)``.

``score``: moved to ``benchmarks/score_small.py`` (``churn score`` end to end on a small folder); this
subcommand runs it.

    PYTHONPATH=. python benchmarks/loader_scale.py load --scale 0.2
    PYTHONPATH=. python benchmarks/score_small.py --store /tmp/demo_run --customers 2000

Writes ``benchmarks/results/loader_scale_<scale>.json`` / ``score_small.json`` with ``os.getloadavg()``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "benchmarks" / "results"
BIG = 1e12  # data.limits.max_abs_amount


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


# --------------------------------------------------------------------------- polars reference
def _check(bad: int, what: str) -> None:
    if bad:
        raise SystemExit(f"polars reference: {bad} rows with {what}")


def polars_load(raw: Path) -> dict[str, int]:
    """Read the raw tables with Polars and apply the checks ``load_tables`` applies; the row counts."""
    import polars as pl

    cust = pl.read_parquet(raw / "customers.parquet")
    _check(cust["customer_id"].null_count(), "missing customer ids")
    _check(int(cust["customer_id"].is_duplicated().sum()), "duplicate customer ids")
    cust = cust.with_columns(pl.col("signup_date").cast(pl.Datetime("ns")), pl.col("churn_date").cast(pl.Datetime("ns")))
    _check(cust["signup_date"].null_count(), "missing signup dates")
    _check(int((cust["churn_date"] < cust["signup_date"]).sum() or 0), "churn before signup")
    codes = cust.select(pl.col("customer_id"), pl.int_range(pl.len(), dtype=pl.Int32).alias("_code"))
    rows = {"customers": cust.height}
    for name in ("events", "transactions", "interactions"):
        df = pl.read_parquet(raw / f"{name}.parquet")
        _check(df["customer_id"].null_count(), f"{name}: missing customer ids")
        df = df.join(codes, on="customer_id", how="left", maintain_order="left")
        _check(df["_code"].null_count(), f"{name}: unknown customers")
        df = df.with_columns(pl.col("timestamp").cast(pl.Datetime("ns")))
        _check(df["timestamp"].null_count(), f"{name}: missing timestamps")
        df = _polars_columns(df, name)
        df = df.sort(["timestamp", "_code"], maintain_order=True)
        rows[name] = df.height
    return rows


def _polars_columns(df, name: str):
    import polars as pl

    def out_of(col: str, lo: float, hi: float) -> int:
        v = df[col]  # Polars orders NaN above every number: missing values (NaN / null) are allowed
        return int((v.is_not_nan() & ((v < lo) | (v > hi) | v.is_infinite())).sum() or 0)

    if name == "events":
        _check(df["event_type"].null_count(), "missing event types")
        _check(int(df["event_type"].n_unique() > 200), "too many event types")
        df = df.with_columns(pl.col("event_type").cast(pl.Categorical))
        _check(out_of("value", -BIG, BIG), "values out of range")
    elif name == "transactions":
        _check(df["amount"].null_count(), "missing amounts")
        _check(out_of("amount", 0.0, BIG), "amounts out of range")
    else:
        df = df.with_columns(pl.col("channel").fill_null("unknown"), pl.col("category").fill_null("unknown"),
                             pl.col("text").fill_null(""))
        _check(out_of("rating", 0.0, 10.0), "ratings out of range")
        for col in ("response_hours", "resolution_hours"):
            _check(out_of(col, 0.0, BIG), f"{col} out of range")
    return df


# --------------------------------------------------------------------------- stages (one per subprocess)
def stage(kind: str, raw: Path, cache: Path) -> dict:
    import polars  # noqa: F401 - imports are not part of the timed load

    from churn.config import load_config
    from features.contract import load_tables

    la0 = os.getloadavg()
    t0 = time.perf_counter()
    if kind == "polars":
        rows = polars_load(raw)
    else:
        cfg = load_config(ROOT / "configs" / "default.yaml")
        data = cfg.data.model_copy(update={"cache": cfg.data.cache.model_copy(update={"folder": str(cache)})})
        tables = load_tables(raw, data, cache=kind != "nocache")
        rows = {"customers": len(tables.customers)} | {
            n: len(getattr(tables, n)) for n in ("events", "transactions", "interactions")}
    return {"stage": kind, "seconds": time.perf_counter() - t0, "peak_rss_gb": _peak_rss_gb(), "rows": rows,
            "loadavg_start": la0, "loadavg_end": os.getloadavg()}


def _child(kind: str, raw: Path, cache: Path) -> dict:
    cmd = [sys.executable, __file__, "_stage", kind, str(raw), str(cache)]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if res.returncode != 0:
        sys.stderr.write(res.stdout[-3000:] + res.stderr[-3000:])
        raise SystemExit(f"stage {kind} failed (exit {res.returncode})")
    return json.loads(res.stdout.strip().splitlines()[-1])


def run_load(args: argparse.Namespace) -> dict:
    from benchmarks.features_scale import _sizes, generate

    work = Path(args.workdir) / f"scale_{args.scale:g}"
    raw, cache = work / "raw", work / "cache"
    if not (raw / "interactions.parquet").is_file():
        generate(raw, _sizes(args.scale))
    runs: list[dict] = []
    for _ in range(args.repeat):  # interleaved: both engines see the same machine load
        runs.append(_child("polars", raw, cache))
        runs.append(_child("nocache", raw, cache))
    shutil.rmtree(cache, ignore_errors=True)
    runs.append(_child("miss", raw, cache))
    runs.append(_child("hit", raw, cache))
    runs.append(_child("hit", raw, cache))

    def best(kind: str) -> float:
        return min(r["seconds"] for r in runs if r["stage"] == kind)

    cache_mb = sum(f.stat().st_size for f in cache.rglob("*") if f.is_file()) / 2**20
    return {"benchmark": "loader_scale", "scale": args.scale, "rows": runs[0]["rows"], "runs": runs,
            "polars_s": best("polars"), "load_tables_s": best("nocache"),
            "ratio_load_tables_over_polars": best("nocache") / best("polars"),
            "cache_miss_s": best("miss"), "cache_hit_s": best("hit"),
            "speedup_hit_over_miss": best("miss") / best("hit"),
            "speedup_hit_over_no_cache": best("nocache") / best("hit"),
            "peak_rss_gb": {k: max(r["peak_rss_gb"] for r in runs if r["stage"] == k)
                            for k in ("polars", "nocache", "miss", "hit")},
            "cache_entry_mb": cache_mb, "loadavg_end": os.getloadavg(), "cpus": os.cpu_count(),
            "python": platform.python_version()}


# --------------------------------------------------------------------------- churn score on a small folder
def run_score(args: argparse.Namespace) -> dict:
    """Moved to ``benchmarks/score_small.py`` (same command line there); kept here as a pointer."""
    from benchmarks.score_small import run

    return run(args.store, args.customers, args.repeat, args.workdir)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_stage":
        print(json.dumps(stage(argv[1], Path(argv[2]), Path(argv[3]))))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    p_load = sub.add_parser("load")
    p_load.add_argument("--scale", type=float, default=0.2)
    p_load.add_argument("--repeat", type=int, default=2)
    p_score = sub.add_parser("score")
    p_score.add_argument("--store", required=True)
    p_score.add_argument("--customers", type=int, default=2000)
    p_score.add_argument("--repeat", type=int, default=3)
    for p in (p_load, p_score):
        p.add_argument("--workdir", default="/tmp/loader_scale")
    args = parser.parse_args(argv)
    result = run_load(args) if args.what == "load" else run_score(args)
    name = f"loader_scale_{args.scale:g}.json" if args.what == "load" else "score_small.json"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / name).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    summary = {k: v for k, v in result.items() if k != "runs"}
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
