"""Run the malformed-input suite's cases outside pytest and print the counts issue 9 asks for.

Trains a small store once (like the test session), runs every case of ``tests/test_malformed_inputs.py``
through the CLI in subprocesses, and prints: cases, accepted on purpose, tracebacks, partial outputs,
hangs, unexpected exit codes, wall time and the load average. Writes ``benchmarks/results/fuzz_report.json``.

    PYTHONPATH=. python benchmarks/fuzz_report.py
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    from churn.generate import generate_demo, write_demo
    from tests.conftest import DEMO_CUSTOMERS, DEMO_SEED, _train_store
    from tests.test_malformed_inputs import (
        CASES,
        DOCUMENTED_EXIT_CODES,
        FEATURE_OUTPUTS,
        SCORE_OUTPUTS,
        _run_case,
    )

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_demo(generate_demo(n_customers=DEMO_CUSTOMERS, seed=DEMO_SEED), root / "demo")
        store = _train_store(root / "store", root / "demo")
        base = root / "base"
        tables = generate_demo(n_customers=60, seed=11)
        write_demo({k: tables[k] for k in ("customers", "events", "transactions", "interactions")}, base, fmt="csv")
        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=3) as pool:
            outcomes = dict(zip([c.id for c in CASES],
                                pool.map(lambda c: _run_case(c, base, store, root / "cases" / c.id), CASES), strict=True))
        wall = time.perf_counter() - t0
    counts = {"cases": len(CASES), "accepted_on_purpose": sum(c.accepted is not None for c in CASES),
              "tracebacks": 0, "partial_outputs": 0, "hangs": 0, "undocumented_exit_codes": 0,
              "exit_code_differs_from_table": 0}
    for c in CASES:
        o = outcomes[c.id]
        if o.res is None:
            counts["hangs"] += 1
            continue
        counts["tracebacks"] += "Traceback" in o.res.stderr + o.res.stdout
        counts["undocumented_exit_codes"] += o.res.returncode not in DOCUMENTED_EXIT_CODES
        counts["exit_code_differs_from_table"] += o.res.returncode != c.rc
        staged = any(".staging-" in k for k in o.after)
        want = SCORE_OUTPUTS if c.command == "score" else FEATURE_OUTPUTS
        partial = staged or (o.after != o.before if o.res.returncode else not want <= o.outputs)
        counts["partial_outputs"] += partial
    result = {**counts, "wall_s": round(wall, 1), "loadavg": os.getloadavg(), "cpus": os.cpu_count(),
              "machine": platform.platform()}
    print("| " + " | ".join(result) + " |")
    print("|" + "---|" * len(result))
    print("| " + " | ".join(str(v) for v in result.values()) + " |")
    out = ROOT / "benchmarks" / "results" / "fuzz_report.json"
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
