"""``churn score`` on a small customer base, end to end: a fresh ``churn`` process per run (interpreter, imports,
MLflow, model, features, explanations, alerts, report, the logged scoring run).

The data is a ``churn generate`` folder of ``--customers`` customers (seed 11); the model is the champion of an
existing store (``--store``: a folder holding ``mlruns/``, e.g. where ``churn demo`` ran), and every run starts
in that folder. The first run fills the table cache, the next ``--repeat`` runs are warm. Per run: wall time, CPU
time of the process and its helpers (user + system), the steps' timings from ``summary.json`` and the load
average before and after (the machine is shared: compare CPU seconds when the load is high).

    PYTHONPATH=. python benchmarks/score_small.py --store /tmp/demo_run --customers 2000 --repeat 3
    PYTHONPATH=. python benchmarks/score_small.py --store /tmp/demo_run --baseline /work/main   # side by side

Writes ``benchmarks/results/score_small.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _one(churn: list[str], data: Path, out: Path, store: Path, env: dict[str, str], label: str) -> dict:
    la0, cpu0 = os.getloadavg(), _children_cpu()
    t0 = time.perf_counter()
    proc = subprocess.run([*churn, "-q", "score", "--data", str(data), "--out", str(out)], cwd=store, env=env,
                          capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(proc.stdout[-2000:] + proc.stderr[-3000:])
    timings = json.loads((out / "summary.json").read_text())["timings_s"]
    return {"run": label, "wall_s": wall, "cpu_s": _children_cpu() - cpu0, "timings_s": timings,
            "loadavg_start": la0, "loadavg_end": os.getloadavg()}


def _stats(runs: list[dict]) -> dict:
    warm = [r for r in runs if r["run"] == "warm"]
    return {"warm_median_s": statistics.median(r["wall_s"] for r in warm),
            "warm_min_s": min(r["wall_s"] for r in warm),
            "warm_cpu_median_s": statistics.median(r["cpu_s"] for r in warm),
            "cold_s": next(r["wall_s"] for r in runs if r["run"] != "warm")}


def run(store: str | Path, customers: int = 2000, repeat: int = 3, workdir: str | Path = "/tmp/score_small",
        baseline: str | Path | None = None) -> dict:
    """Generate the data once, then one cold and ``repeat`` warm ``churn score`` runs; the results.

    ``baseline``: another source tree (e.g. a checkout of main) run alternately with this one on the same data,
    model and machine load, for a side-by-side ratio.
    """
    store = Path(store).resolve()
    work = Path(workdir) / f"score_{customers}"
    data = work / "data"
    churn = [sys.executable, "-c", "from churn.cli import main; main()"]
    trees = {"this": ROOT, **({"baseline": Path(baseline).resolve()} if baseline else {})}
    envs = {k: {**os.environ, "PYTHONPATH": str(t), "CHURN_CACHE_DIR": str(work / f"cache_{k}")}
            for k, t in trees.items()}
    if not (data / "customers.parquet").is_file():
        subprocess.run([*churn, "generate", "--customers", str(customers), "--seed", "11", "--out", str(data)],
                       check=True, cwd=store, env=envs["this"], capture_output=True)
    for k in trees:
        shutil.rmtree(work / f"cache_{k}", ignore_errors=True)
    runs: dict[str, list[dict]] = {k: [] for k in trees}
    for i in range(repeat + 1):  # alternately: both trees see the same load
        for k in trees:
            runs[k].append(_one(churn, data, work / f"out_{k}", store, envs[k],
                                "cold (cache miss)" if i == 0 else "warm"))
    result = {"benchmark": "score_small", "customers": customers, "runs": runs["this"], **_stats(runs["this"])}
    if baseline:
        base = _stats(runs["baseline"])
        result |= {"baseline": str(trees["baseline"]), "baseline_runs": runs["baseline"], "baseline_stats": base,
                   "speedup_warm_median": base["warm_median_s"] / result["warm_median_s"],
                   "cpu_ratio_warm_median": result["warm_cpu_median_s"] / base["warm_cpu_median_s"]}
    return result | {"loadavg_end": os.getloadavg(), "cpus": os.cpu_count()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True, help="Folder holding mlruns/ with a champion model.")
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3, help="Warm runs after the cold one.")
    parser.add_argument("--workdir", default="/tmp/score_small")
    parser.add_argument("--baseline", default=None,
                        help="Another source tree (e.g. a checkout of main), run alternately for a side-by-side ratio.")
    args = parser.parse_args(argv)
    result = run(args.store, args.customers, args.repeat, args.workdir, args.baseline)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "score_small.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({k: v for k, v in result.items() if not k.endswith("runs")}, indent=2))


if __name__ == "__main__":
    main()
