"""FastTreeShap on its own: table build time and kernel speed (rows/s), and a digest of the values.

Trains a small XGBoost model on a synthetic table (numerics with NaNs plus one categorical) once per run,
then times ``FastTreeShap(...)`` (table build, best of ``--reps``) and ``shap_values`` on ``--rows`` rows
(best of ``--reps``). The SHAP array's SHA-256 digest lets a refactor of the kernel prove it changed no value:
run it before and after on the same machine and compare the digests and the rows/s.

    python benchmarks/fast_shap_kernel.py                 # 300 trees, depth 6, 50,000 rows, 1 thread
    python benchmarks/fast_shap_kernel.py --threads 2 --rows 100000
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _table(rows: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 30)).astype(np.float32)
    x[rng.random(x.shape) < 0.1] = np.nan
    df = pd.DataFrame(x, columns=[f"f{i}" for i in range(30)])
    df["plan"] = pd.Categorical(rng.choice(["a", "b", "c", "d", "e"], rows))
    logit = np.nan_to_num(x[:, 0]) - 0.5 * np.nan_to_num(x[:, 1]) * np.nan_to_num(x[:, 2]) + (df["plan"] == "c") - 2.5
    y = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)
    return df, y


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=50_000)
    ap.add_argument("--train-rows", type=int, default=20_000)
    ap.add_argument("--trees", type=int, default=300)
    ap.add_argument("--depth", type=int, default=6)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import xgboost as xgb

    from model.fast_shap import FastTreeShap

    df, y = _table(args.train_rows, args.seed)
    booster = xgb.train({"max_depth": args.depth, "eta": 0.1, "objective": "binary:logistic", "nthread": args.threads,
                         "seed": args.seed}, xgb.DMatrix(df, y, enable_categorical=True), args.trees)
    X, _ = _table(args.rows, args.seed + 1)
    FastTreeShap(booster, list(df.columns), n_threads=args.threads).shap_values(X.head(100))  # compile / load cache
    build, kernel, cpu = [], [], []  # cpu: process time, steadier than wall time on a shared machine
    for _ in range(args.reps):
        t0 = time.perf_counter()
        explainer = FastTreeShap(booster, list(df.columns), n_threads=args.threads)
        build.append(time.perf_counter() - t0)
        t0, c0 = time.perf_counter(), time.process_time()
        values = explainer.shap_values(X)
        kernel.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    res = {"rows": args.rows, "trees": args.trees, "depth": args.depth, "threads": args.threads,
           "build_s": round(min(build), 3), "shap_s": round(min(kernel), 3), "shap_cpu_s": round(min(cpu), 3),
           "rows_per_s": round(args.rows / min(kernel)), "digest": hashlib.sha256(values.tobytes()).hexdigest()[:16],
           "loadavg": [round(v, 2) for v in os.getloadavg()]}
    print(json.dumps(res))


if __name__ == "__main__":
    main()
