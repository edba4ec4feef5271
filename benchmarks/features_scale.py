"""Feature-engine scale benchmark: 1M customers, 50M events, 5M transactions, 2M interactions.

Stages (each timed in a fresh subprocess so its peak RSS is its own):

* ``generate`` (untimed, cached): a fast numpy generator writes raw Parquet tables the way a warehouse
  export looks (string customer ids, string event types, unsorted rows, free text from a few thousand
  distinct strings) under ``--workdir``; the same arguments reuse the cache.
* ``load``: ``features.contract.load_tables`` (read, rename, validate, map ids to codes, sort). The
  validated tables are then written (untimed) to ``canonical/`` so the next stages can start from them.
* ``features``: behavioural + value (+ profile) features for one cutoff through ``FeatureBuilder.build``
  without the interactions table, i.e. what scoring does for those families. The peak RSS includes the
  validated tables held in memory (reported separately as ``inputs_rss``).
* ``sentiment``: text scoring of every interaction (``prepare_interactions``) and the windowed sentiment
  aggregates (``sentiment_features``), timed separately.

Peak memory is ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` of the stage's own process.

    /work/venv/bin/python benchmarks/features_scale.py                 # full scale
    /work/venv/bin/python benchmarks/features_scale.py --scale 0.02    # 20k customers, 1M events (quick)

Prints a markdown table and writes ``benchmarks/results/features_scale.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

FULL = {"customers": 1_000_000, "events": 50_000_000, "transactions": 5_000_000, "interactions": 2_000_000}
START = np.datetime64("2024-01-01T00:00:00", "s")
DAYS = 731  # two years of history: 2024-01-01 .. 2025-12-31
CUTOFF = "2025-12-01"
EVENT_TYPES = ("login", "session", "feature_use", "content_share", "support_view")
EVENT_P = (0.38, 0.32, 0.17, 0.08, 0.05)
PLANS = ("basic", "standard", "premium")
PLAN_PRICE = np.array([9.99, 15.99, 24.99])
ADDON_PRICES = np.array([1.99, 2.99, 4.99, 7.99, 9.99, 14.99])
CHANNELS = ("web", "app", "partner", "store")
REGIONS = ("na_east", "na_west", "europe", "apac", "latam")
CONTACT_CHANNELS = ("email", "chat", "phone", "review", "app_store")
INTERACTION_CATEGORIES = ("billing", "technical", "cancellation", "product_feedback", "praise", "account")
INTERACTION_CATEGORY_P = (0.22, 0.25, 0.06, 0.2, 0.17, 0.1)
SEC_PER_DAY = 86_400


# --------------------------------------------------------------------------- generator
def _ids(idx: np.ndarray, prefix: bytes = b"C", width: int = 7):
    """Arrow string array of ids like ``C0012345`` built straight from bytes (no Python strings)."""
    import pyarrow as pa

    idx = np.asarray(idx, dtype=np.int64)
    n = len(idx)
    digits = np.empty((n, width), dtype=np.uint8)
    v = idx.copy()
    for k in range(width - 1, -1, -1):
        digits[:, k] = 48 + v % 10
        v //= 10
    buf = np.empty((n, width + len(prefix)), dtype=np.uint8)
    buf[:, : len(prefix)] = np.frombuffer(prefix, dtype=np.uint8)
    buf[:, len(prefix):] = digits
    offsets = np.arange(0, (n + 1) * buf.shape[1], buf.shape[1], dtype=np.int64)
    return pa.LargeStringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(buf.ravel())).cast(pa.string())


def _dict_strings(codes: np.ndarray, labels: tuple[str, ...] | np.ndarray):
    """Plain (non-dictionary) Arrow strings from codes into ``labels``, as a warehouse export writes them."""
    import pyarrow as pa

    return pa.DictionaryArray.from_arrays(pa.array(codes.astype(np.int32)), pa.array(list(labels))).cast(pa.string())


def _spread(rng: np.random.Generator, total: int, weight: np.ndarray) -> np.ndarray:
    """Exactly ``total`` rows spread over customers in proportion to ``weight`` (customer index per row)."""
    counts = rng.multinomial(total, weight / weight.sum())
    return np.repeat(np.arange(len(weight), dtype=np.int64), counts)


def _times(rng: np.random.Generator, cidx: np.ndarray, lo: np.ndarray, hi: np.ndarray, recent_bias: np.ndarray) -> np.ndarray:
    """Seconds since START, inside each customer's active span; ``recent_bias`` > 1 thins late activity (fading)."""
    u = rng.random(len(cidx)) ** recent_bias[cidx]
    span = (hi - lo)[cidx].astype(np.float64)
    return lo[cidx] + (u * span).astype(np.int64)


def generate(raw_dir: Path, sizes: dict[str, int], seed: int = 7) -> dict[str, int]:
    """Write customers/events/transactions/interactions Parquet files into ``raw_dir``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from churn.demo_texts import text_bank

    rng = np.random.default_rng(seed)
    n = sizes["customers"]
    raw_dir.mkdir(parents=True, exist_ok=True)

    # customers: 40% already there when the data starts, the rest arrive over the two years; ~30% churn
    before = rng.random(n) < 0.4
    signup_day = np.where(before, -rng.integers(1, 3 * 365, n), rng.integers(0, DAYS - 30, n))
    churns = rng.random(n) < 0.3
    churn_day = np.maximum(signup_day, 0) + 1 + rng.exponential(300, n).astype(np.int64)
    churn_day = np.where(churns & (churn_day < DAYS), churn_day, -1)
    lo = np.maximum(signup_day, 0).astype(np.int64) * SEC_PER_DAY
    hi = np.where(churn_day >= 0, churn_day, DAYS).astype(np.int64) * SEC_PER_DAY
    active_days = (hi - lo) / SEC_PER_DAY
    engagement = rng.lognormal(0.0, 1.0, n)
    fading = np.where(churns & (rng.random(n) < 0.5), 1.6, 1.0)  # half the churners fade out
    # customer rows in a random id order, so row position != id
    id_num = rng.permutation(n) + 1
    plan = rng.choice(3, n, p=[0.45, 0.35, 0.2])
    to_ts = lambda days: (START + days.astype("timedelta64[D]")).astype("datetime64[us]")  # noqa: E731
    churn_ts = to_ts(np.where(churn_day >= 0, churn_day, 0))
    churn_arr = pa.array(churn_ts, mask=churn_day < 0)
    customers = pa.table({
        "customer_id": _ids(id_num),
        "signup_date": pa.array(to_ts(signup_day)),
        "churn_date": churn_arr,
        "plan": _dict_strings(plan, PLANS),
        "channel": _dict_strings(rng.choice(4, n), CHANNELS),
        "region": _dict_strings(rng.choice(5, n), REGIONS),
    })
    pq.write_table(customers, raw_dir / "customers.parquet")
    del customers

    # events: per-customer volume ~ engagement x active time; timestamps uniform in the active span
    cidx = _spread(rng, sizes["events"], engagement * active_days)
    sec = _times(rng, cidx, lo, hi, fading)
    etype = rng.choice(len(EVENT_TYPES), len(cidx), p=EVENT_P).astype(np.int8)
    value = np.full(len(cidx), np.nan)
    is_session = etype == 1
    value[is_session] = np.round(rng.lognormal(np.log(15.0), 0.7, int(is_session.sum())), 1)
    del is_session
    ts = (START + sec.astype("timedelta64[s]")).astype("datetime64[us]")
    del sec
    events = pa.table({
        "customer_id": _ids(id_num[cidx]),
        "timestamp": pa.array(ts),
        "event_type": _dict_strings(etype, EVENT_TYPES),
        "value": pa.array(value),
    })
    del ts, etype, value, cidx
    pq.write_table(events, raw_dir / "events.parquet", row_group_size=2_000_000)
    del events

    # transactions: monthly plan charges plus add-ons (volume ~ active time)
    cidx = _spread(rng, sizes["transactions"], active_days * rng.lognormal(0.0, 0.3, n))
    sec = _times(rng, cidx, lo, hi, fading)
    addon = rng.random(len(cidx)) < 0.2
    amount = np.where(addon, ADDON_PRICES[rng.integers(0, len(ADDON_PRICES), len(cidx))], PLAN_PRICE[plan[cidx]])
    transactions = pa.table({
        "customer_id": _ids(id_num[cidx]),
        "timestamp": pa.array((START + sec.astype("timedelta64[s]")).astype("datetime64[us]")),
        "amount": pa.array(np.round(amount, 2)),
    })
    pq.write_table(transactions, raw_dir / "transactions.parquet")
    del transactions, cidx, sec, amount

    # interactions: tickets and reviews, texts drawn from the demo's bank of ~2k distinct strings
    texts = text_bank()[0]
    cidx = _spread(rng, sizes["interactions"], active_days * rng.lognormal(0.0, 0.8, n))
    sec = _times(rng, cidx, lo, hi, 1.0 / fading)  # fading churners complain late
    m = len(cidx)
    channel = rng.choice(len(CONTACT_CHANNELS), m, p=[0.35, 0.3, 0.15, 0.1, 0.1])
    rated = rng.random(m) < 0.45
    rating = np.where(rated, rng.integers(1, 6, m).astype(np.float64), np.nan)
    is_ticket = channel < 3
    response = np.where(is_ticket, np.round(rng.lognormal(np.log(4.0), 1.0, m), 2), np.nan)
    resolution = np.where(is_ticket & (rng.random(m) < 0.9), response + np.round(rng.lognormal(np.log(24.0), 1.0, m), 2),
                          np.nan)
    interactions = pa.table({
        "customer_id": _ids(id_num[cidx]),
        "timestamp": pa.array((START + sec.astype("timedelta64[s]")).astype("datetime64[us]")),
        "channel": _dict_strings(channel, CONTACT_CHANNELS),
        "category": _dict_strings(rng.choice(len(INTERACTION_CATEGORIES), m, p=INTERACTION_CATEGORY_P),
                                  INTERACTION_CATEGORIES),
        "text": _dict_strings(rng.integers(0, len(texts), m), texts),
        "rating": pa.array(rating),
        "response_hours": pa.array(response),
        "resolution_hours": pa.array(resolution),
    })
    pq.write_table(interactions, raw_dir / "interactions.parquet")
    return {k: int(v) for k, v in sizes.items()} | {"distinct_texts": int(len(texts))}


# --------------------------------------------------------------------------- stages
def _config():
    from churn.config import load_config

    return load_config(ROOT / "configs" / "default.yaml")


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _write_canonical(tables, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tables.customers.to_parquet(out / "customers.parquet", index=False)
    for name in ("events", "transactions", "interactions"):
        t = getattr(tables, name)
        if t is not None:
            t.to_parquet(out / f"{name}.parquet", index=False)
    (out / "attributes.json").write_text(json.dumps(tables.attributes))


def _read_canonical(folder: Path, names: tuple[str, ...]):
    import pandas as pd

    from features.contract import Tables

    customers = pd.read_parquet(folder / "customers.parquet")
    tables = Tables(customers=customers, attributes=json.loads((folder / "attributes.json").read_text()))
    for name in names:
        df = pd.read_parquet(folder / f"{name}.parquet")
        for col in df.columns:  # keep the dtypes load_tables gives (datetime64[ns], int32 codes)
            if str(df[col].dtype).startswith("datetime64"):
                df[col] = df[col].astype("datetime64[ns]")
        setattr(tables, name, df)
    return tables


def stage_load(workdir: Path) -> dict:
    from features.contract import load_tables

    cfg = _config()
    t0 = time.perf_counter()
    tables = load_tables(workdir / "raw", cfg.data)
    elapsed = time.perf_counter() - t0
    peak = _peak_rss_mb()
    rows = {n: len(getattr(tables, n)) for n in ("events", "transactions", "interactions")}
    dtypes = {n: {c: str(t) for c, t in getattr(tables, n).dtypes.items()} for n in ("events", "interactions")}
    _write_canonical(tables, workdir / "canonical")
    return {"seconds": elapsed, "peak_rss_mb": peak, "rows": rows | {"customers": len(tables.customers)},
            "dtypes": dtypes}


def stage_features(workdir: Path) -> dict:
    import pandas as pd

    from features.build import FeatureBuilder

    cfg = _config()
    tables = _read_canonical(workdir / "canonical", ("events", "transactions"))
    inputs_rss = _rss_mb()
    as_of = pd.Timestamp(CUTOFF)
    t0 = time.perf_counter()
    builder = FeatureBuilder(tables, cfg)
    fs = builder.build(as_of)
    elapsed = time.perf_counter() - t0
    return {"seconds": elapsed, "peak_rss_mb": _peak_rss_mb(), "inputs_rss_mb": inputs_rss,
            "family_seconds": dict(builder.timings), "rows": len(fs.frame), "features": len(fs.specs)}


def stage_sentiment(workdir: Path) -> dict:
    import pandas as pd

    from features.sentiment import prepare_interactions, sentiment_features
    from features.text_sentiment import load_scorer

    cfg = _config()
    tables = _read_canonical(workdir / "canonical", ("interactions",))
    inputs_rss = _rss_mb()
    scfg = cfg.features.sentiment
    t0 = time.perf_counter()
    scorer = load_scorer(scfg.scorer)
    inter = prepare_interactions(tables.interactions, scfg, scorer)
    t_score = time.perf_counter() - t0
    t1 = time.perf_counter()
    block = sentiment_features(inter, len(tables.customers), pd.Timestamp(CUTOFF), scfg)
    t_agg = time.perf_counter() - t1
    return {"seconds": t_score + t_agg, "scoring_seconds": t_score, "aggregate_seconds": t_agg,
            "peak_rss_mb": _peak_rss_mb(), "inputs_rss_mb": inputs_rss, "features": len(block.specs),
            "distinct_texts": int(tables.interactions["text"].nunique())}


def stage_generate(workdir: Path, sizes: dict[str, int]) -> dict:
    t0 = time.perf_counter()
    info = generate(workdir / "raw", sizes)
    (workdir / "raw" / "sizes.json").write_text(json.dumps(sizes))
    return info | {"seconds": time.perf_counter() - t0, "peak_rss_mb": _peak_rss_mb()}


STAGES = {"load": stage_load, "features": stage_features, "sentiment": stage_sentiment}


# --------------------------------------------------------------------------- driver
def _run_stage(stage: str, workdir: Path, scale: float) -> dict:
    cmd = [sys.executable, __file__, "--stage", stage, "--workdir", str(workdir), "--scale", str(scale)]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if res.returncode != 0:
        sys.stderr.write(res.stdout + res.stderr)
        raise SystemExit(f"stage {stage} failed (exit {res.returncode})")
    return json.loads(res.stdout.strip().splitlines()[-1])


def _sizes(scale: float) -> dict[str, int]:
    return {k: max(int(round(v * scale)), 100) for k, v in FULL.items()}


def _table(results: dict) -> str:
    lines = ["| stage | rows | time (s) | peak RSS (GB) | load avg (1 min, start / end) | notes |",
             "|---|---|---:|---:|---|---|"]
    ld, ft, st = results["load"], results["features"], results["sentiment"]
    r = ld["rows"]

    def la(res: dict) -> str:
        return " / ".join(f"{x:.1f}" for x in res.get("load_average_1min", []))

    lines.append(f"| load_tables (read + validate + id->code + sort) | {r['customers']:,} customers, "
                 f"{r['events']:,} events, {r['transactions']:,} tx, {r['interactions']:,} interactions | "
                 f"{ld['seconds']:.1f} | {ld['peak_rss_mb'] / 1024:.2f} | {la(ld)} | |")
    fam = ", ".join(f"{k} {v:.1f}s" for k, v in ft["family_seconds"].items())
    lines.append(f"| behavioural + value (+ profile) features, 1 cutoff | {ft['rows']:,} customers x {ft['features']} "
                 f"features | {ft['seconds']:.1f} | {ft['peak_rss_mb'] / 1024:.2f} | {la(ft)} | {fam}; validated "
                 f"tables resident before the stage: {ft['inputs_rss_mb'] / 1024:.2f} GB |")
    lines.append(f"| text sentiment (score every interaction) | {r['interactions']:,} ({st['distinct_texts']:,} distinct "
                 f"texts) | {st['scoring_seconds']:.1f} | {st['peak_rss_mb'] / 1024:.2f} | {la(st)} | inputs resident "
                 f"{st['inputs_rss_mb'] / 1024:.2f} GB |")
    lines.append(f"| sentiment aggregates, 1 cutoff | {st['features']} features | {st['aggregate_seconds']:.1f} | "
                 f"(same process) | | |")
    lines.append(f"\n{os.cpu_count()} CPUs; target: behavioural + value < 120 s and < 8 GB peak RSS.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of the full sizes (1.0 = 1M customers)")
    ap.add_argument("--workdir", type=Path, default=None, help="cache folder (default /tmp/churn_features_scale/<scale>)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "features_scale.json")
    ap.add_argument("--stage", choices=["generate", *STAGES], help=argparse.SUPPRESS)
    ap.add_argument("--stages", default="load,features,sentiment", help="comma-separated stages to run")
    ap.add_argument("--regenerate", action="store_true", help="ignore the cached raw tables")
    args = ap.parse_args(argv)
    sizes = _sizes(args.scale)
    workdir = args.workdir or Path("/tmp/churn_features_scale") / f"scale_{args.scale:g}"

    if args.stage:  # child process: run one stage, print its JSON as the last line
        before = os.getloadavg()[0]
        res = stage_generate(workdir, sizes) if args.stage == "generate" else STAGES[args.stage](workdir)
        res["load_average_1min"] = [before, os.getloadavg()[0]]
        print(json.dumps(res))
        return

    cached = workdir / "raw" / "sizes.json"
    if args.regenerate or not cached.exists() or json.loads(cached.read_text()) != sizes:
        print(f"generating {sizes} under {workdir} (untimed) ...", flush=True)
        gen = _run_stage("generate", workdir, args.scale)
        print(f"  generated in {gen['seconds']:.0f}s", flush=True)
    load_before = os.getloadavg()
    results: dict[str, dict] = {}
    if args.out.exists():  # stages not rerun keep their previous result (same sizes only)
        previous = json.loads(args.out.read_text())
        if previous.get("sizes") == sizes:
            results.update(previous.get("stages", {}))
    wanted = [s.strip() for s in args.stages.split(",") if s.strip()]
    for stage in STAGES:
        if stage in wanted or (stage == "load" and not (workdir / "canonical" / "attributes.json").exists()):
            print(f"stage {stage} ...", flush=True)
            results[stage] = _run_stage(stage, workdir, args.scale)
            print(f"  {results[stage]['seconds']:.1f}s, peak RSS {results[stage]['peak_rss_mb'] / 1024:.2f} GB",
                  flush=True)
    load_after = os.getloadavg()
    report = {
        "sizes": sizes, "cutoff": CUTOFF, "stages": results,
        "load_average_before": load_before, "load_average_after": load_after,
        "cpus": os.cpu_count(), "python": platform.python_version(), "machine": platform.platform(),
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    if all(s in results for s in STAGES):
        table = _table(results)
        report["markdown"] = table
        print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
