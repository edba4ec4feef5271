"""How long `churn --help` and a failing config validation take, and which heavy modules they import.

Usage: ``PYTHONPATH=. python benchmarks/cli_startup.py [--repeat 5]``. Prints the median wall time of
each command in a fresh interpreter and the machine's load average (timings on a shared machine vary),
and writes them to ``benchmarks/results/cli_startup.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("pandas", "numpy", "mlflow", "xgboost", "sklearn", "optuna")
log = logging.getLogger("cli_startup")


def _run(args: list[str], cwd: Path) -> tuple[float, str]:
    code = ("import atexit, sys\n"
            f"atexit.register(lambda: print('HEAVY=' + ','.join(m for m in {HEAVY!r} if m in sys.modules)))\n"
            f"from churn.cli import main\nmain({args!r})\n")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    wall = time.perf_counter() - t0
    heavy = [ln for ln in proc.stdout.splitlines() if ln.startswith("HEAVY=")]
    return wall, heavy[0].removeprefix("HEAVY=") if heavy else "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with tempfile.TemporaryDirectory() as tmp:
        bad = Path(tmp) / "bad.yaml"
        bad.write_text("label:\n  horizon: 30\n", encoding="utf-8")
        cases = {"churn --help": ["--help"],
                 "churn train (config with a typo)": ["train", "--data", tmp, "--config", str(bad)]}
        result: dict[str, object] = {"benchmark": "cli_startup", "repeat": args.repeat,
                                     "loadavg_start": os.getloadavg()}
        bare = []
        for _ in range(args.repeat):  # the interpreter alone: what any command pays on this machine now
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", "pass"], check=True)
            bare.append(time.perf_counter() - t0)
        result["python -c pass"] = {"median_s": statistics.median(bare), "min_s": min(bare)}
        log.info("%-34s median %.3fs (min %.3fs)", "python -c pass", statistics.median(bare), min(bare))
        for name, argv in cases.items():
            runs = [_run(argv, Path(tmp)) for _ in range(args.repeat)]
            result[name] = {"median_s": statistics.median(w for w, _ in runs), "min_s": min(w for w, _ in runs),
                            "heavy_modules": runs[0][1]}
            log.info("%-34s median %.3fs (min %.3fs) over %d runs; heavy modules imported: %s", name,
                     statistics.median(w for w, _ in runs), min(w for w, _ in runs), args.repeat,
                     runs[0][1] or "none")
    log.info("load average: %s", " ".join(f"{x:.2f}" for x in os.getloadavg()))
    result["loadavg_end"] = os.getloadavg()
    out = ROOT / "benchmarks" / "results" / "cli_startup.json"
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
