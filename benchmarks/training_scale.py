"""Benchmark: training that scales (README "Training at scale").

Three measurements on data from the demo generator (``churn generate``), cached under ``--workdir``:

* ``sampling``: in one process, the same training snapshots tuned twice with the same trials and seed, once
  on every row and once on the stratified, weighted customer sample (``training.sampling``), each followed by
  the same refit on all rows (training/refit.py); prints both test ROC-AUCs, the gap and both times.
* ``train``: ``churn train`` end to end with the default budget in a child process (fresh MLflow store);
  wall time, the child's peak RSS and the load average (before, after, and sampled every 30 s); per step
  seconds and peak RSS so far, and every refit's rows, rounds and seconds, from the child's log.
* ``matrix``: the refit on every row before the test cutoff with an in-memory ``DMatrix`` and with the chunked
  ``QuantileDMatrix`` the refits use above ``training.sampling.min_rows`` (training/matrix.py): seconds, memory
  above the table's own and test ROC-AUC of both.

    python benchmarks/training_scale.py sampling --customers 100000 --trials 10
    python benchmarks/training_scale.py train --customers 1000000
    python benchmarks/training_scale.py matrix --customers 100000 --rounds 30

Writes ``benchmarks/results/training_scale_<mode>_<customers>.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

log = logging.getLogger("bench")


def _data(workdir: Path, customers: int, seed: int, given: Path | None = None,
          events_per_month: float = 20.0) -> Path:
    """The generated data folder for ``customers`` (generated once, untimed; ``events_per_month`` as in
    :func:`churn.generate.generate_demo`), or ``given``."""
    suffix = "" if events_per_month == 20.0 else f"_epm{events_per_month:g}"
    folder = given or workdir / f"demo_{customers}{suffix}"
    if given is None and not (folder / "customers.parquet").exists():
        log.info("generating %d customers under %s (untimed)", customers, folder)
        code = ("from churn.generate import generate_demo, write_demo; "
                f"write_demo(generate_demo(n_customers={customers}, seed={seed}, events_per_month={events_per_month}), "
                f"{str(folder)!r})")
        subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    return folder


def _variant(data: Any, tables: Any, cfg: Any, label: str, min_rows: int, trials: int) -> dict[str, Any]:
    """Tune (sampled or not) and refit on all rows; the final model's test ROC-AUC and the times."""
    from model import metrics as ev
    from training.train import fit_step, tune_step

    tcfg = cfg.training
    tuning = tcfg.tuning.model_copy(update={"n_trials": trials, "timeout_s": None, "storage": None})
    sampling = tcfg.sampling.model_copy(update={"min_rows": min_rows})
    vcfg = cfg.model_copy(update={"training": tcfg.model_copy(update={"tuning": tuning, "sampling": sampling})})
    load = os.getloadavg()
    t0 = time.perf_counter()
    tuned = tune_step(data, vcfg, f"bench-{label}", lambda rec: None)
    t_tune = time.perf_counter() - t0
    fitted = fit_step(data, tables, vcfg, tuned)
    t_fit = time.perf_counter() - t0 - t_tune
    y = data.test_df["label"].to_numpy()
    m = ev.classification_metrics(y, fitted.predictions["test"])
    row = {"variant": label, "sample": tuned.sampling, "n_trials": tuned.result.n_trials,
           "n_pruned": tuned.result.n_pruned, "tune_seconds": round(t_tune, 1), "refit_seconds": round(t_fit, 1),
           "best_valid_auc": round(tuned.result.best_value, 4), "test_roc_auc": round(m["roc_auc"], 4),
           "test_log_loss": round(m["log_loss"], 4), "test_ece": round(m["ece"], 4),
           "best_params": tuned.result.best_params, "refit_rounds": fitted.model.meta["best_iteration"] + 1,
           "load_average_before": load, "load_average_after": os.getloadavg()}
    log.info("%s", {k: v for k, v in row.items() if k != "best_params"})
    return row


def sampling(args: argparse.Namespace) -> dict[str, Any]:
    """Unsampled vs sampled tuning on the same snapshots, same trials and seed."""
    from churn.config import load_config
    from features.contract import load_tables
    from training.train import training_data

    cfg = load_config(args.config)
    tables = load_tables(_data(args.workdir, args.customers, args.seed, args.data), cfg.data)
    t0 = time.perf_counter()
    data = training_data(tables, cfg)
    t_features = time.perf_counter() - t0
    rows = [_variant(data, tables, cfg, "unsampled", 10**12, args.trials),
            _variant(data, tables, cfg, "sampled", args.min_rows or cfg.training.sampling.min_rows, args.trials)]
    full, samp = rows
    return {"customers": args.customers, "train_rows": len(data.train_df), "valid_rows": len(data.valid_df),
            "test_rows": len(data.test_df), "features_seconds": round(t_features, 1), "rows": rows,
            "test_auc_cost_of_sampling": round(full["test_roc_auc"] - samp["test_roc_auc"], 4),
            "tuning_speedup": round(full["tune_seconds"] / max(samp["tune_seconds"], 1e-9), 2)}


class _PeakRSS:
    """The process's peak resident memory (GiB) while the block runs, sampled every 50 ms."""

    def __enter__(self) -> _PeakRSS:
        self.start, self.peak, self._stop = _rss_gb(), 0.0, threading.Event()
        self._t = threading.Thread(target=self._poll, daemon=True)
        self._t.start()
        return self

    def _poll(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, _rss_gb())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()


def _rss_gb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 2**20
    return 0.0


def matrix(args: argparse.Namespace) -> dict[str, Any]:
    """The refit on every row before the test cutoff, in-memory DMatrix against the chunked QuantileDMatrix:
    seconds, memory above the process's baseline (the table itself) and the test ROC-AUC of each."""
    import gc

    from churn.config import load_config
    from features.contract import load_tables
    from model import metrics as ev
    from training.refit import Refitter, embargoed_rows
    from training.train import training_data

    cfg = load_config(args.config)
    tables = load_tables(_data(args.workdir, args.customers, args.seed, args.data), cfg.data)
    data = training_data(tables, cfg)
    rows = embargoed_rows(data.fs.frame, data.split.test[0], tables, cfg)
    params = {"eta": 0.05, "max_depth": 6, "min_child_weight": 74, "subsample": 0.8, "colsample_bytree": 0.35}
    out = []
    for chunked in (True, False):  # chunked first: memory freed by one fit may be reused by the next
        gc.collect()
        refitter = Refitter(params, args.rounds - 1, len(rows), data.features, data.categories, "tuned",
                            cfg.training.seed, cfg.training.n_threads, chunked)
        load, t0 = os.getloadavg(), time.perf_counter()
        with _PeakRSS() as mem:
            model = refitter.fit(rows, "benchmark")
        auc = ev.classification_metrics(data.test_df["label"].to_numpy(), model.predict_raw(data.test_df))["roc_auc"]
        out.append({"matrix": "chunked QuantileDMatrix" if chunked else "in-memory DMatrix", "rows": len(rows),
                    "rounds": args.rounds, "seconds": round(time.perf_counter() - t0, 1),
                    "rss_before_gb": round(mem.start, 2), "peak_above_before_gb": round(mem.peak - mem.start, 2),
                    "test_roc_auc": round(auc, 4), "load_average_before": load})
        log.info("%s", out[-1])
    return {"customers": args.customers, "rows": out}


def _poll_load(stop: threading.Event, out: list[float]) -> None:
    while not stop.wait(30):
        out.append(os.getloadavg()[0])


def _steps(text: str) -> dict[str, Any]:
    """Per step seconds and peak RSS so far, and every refit's rows, rounds and seconds, from the child's log."""
    import re

    steps = [{"step": m[1], "seconds": float(m[2]), "peak_rss_gb_so_far": float(m[3])}
             for m in re.finditer(r"step (\w+): ([\d.]+)s \(peak RSS so far ([\d.]+) GB\)", text)]
    refits = [{"purpose": m[1], "rows": int(m[2]), "rounds": int(m[3]), "seconds": float(m[4])}
              for m in re.finditer(r"refit \((.+?)\): (\d+) rows, \d+ cutoffs, (\d+) rounds in ([\d.]+)s", text)]
    return {"steps": steps, "refits": refits}


def train(args: argparse.Namespace) -> dict[str, Any]:
    """`churn train` with the default budget in a child process: wall time, peak RSS, load average."""
    folder = _data(args.workdir, args.customers, args.seed, args.data, args.events_per_month)
    samples: list[float] = []
    stop = threading.Event()
    poller = threading.Thread(target=_poll_load, args=(stop, samples), daemon=True)
    with tempfile.TemporaryDirectory(dir=args.workdir) as run_dir:
        before = os.getloadavg()
        poller.start()
        t0 = time.perf_counter()
        log_path = args.workdir / f"train_{args.customers}.log"
        with log_path.open("w") as child_log:
            proc = subprocess.run([sys.executable, "-c", "from churn.cli import main; main()", "train", "--data",
                                   str(folder), "--out", run_dir, "--config", str(Path(args.config).resolve())],
                                  cwd=run_dir, env={**os.environ, "PYTHONPATH": str(ROOT)}, stderr=child_log)
        wall = time.perf_counter() - t0
        stop.set()
        summary = json.loads((Path(run_dir) / "summary.json").read_text()) if proc.returncode == 0 else {}
    steps = _steps(log_path.read_text())
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # KiB -> GiB
    return {"customers": args.customers, "data": str(folder), "returncode": proc.returncode, "wall_seconds": round(wall, 1),
            "wall_minutes": round(wall / 60, 2), "peak_rss_gb": round(peak, 2), "load_average_before": before,
            "load_average_after": os.getloadavg(), "load_average_1min_every_30s": samples,
            "load_average_1min_mean": round(sum(samples) / len(samples), 2) if samples else None,
            "timings_s": summary.get("timings_s"), "child_log": str(log_path), **steps,
            "metrics": summary.get("metrics"),
            "tuning": summary.get("tuning")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["sampling", "train", "matrix"])
    ap.add_argument("--customers", type=int, default=100_000)
    ap.add_argument("--trials", type=int, default=10, help="sampling: Optuna trials of both studies")
    ap.add_argument("--rounds", type=int, default=30, help="matrix: boosting rounds of both refits")
    ap.add_argument("--min-rows", type=int, default=None, help="sampling: threshold of the sampled variant")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--data", type=Path, default=None, help="an existing data folder (else generated)")
    ap.add_argument("--events-per-month", type=float, default=20.0,
                    help="generated data: mean events per active customer-month (the 1M run uses 5: 48M events)")
    ap.add_argument("--config", default=str(ROOT / "configs" / "default.yaml"))
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/churn_training_scale"))
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    args.workdir.mkdir(parents=True, exist_ok=True)
    result = {"sampling": sampling, "train": train, "matrix": matrix}[args.mode](args)
    result["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                         "load_average_at_end": os.getloadavg(), "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S")}
    out = args.out or ROOT / "benchmarks" / "results" / f"training_scale_{args.mode}_{args.customers}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str))
    log.info("wrote %s", out)
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=2, default=str))
    for row in result.get("rows", []):
        print(json.dumps(row, default=str))


if __name__ == "__main__":
    main()
