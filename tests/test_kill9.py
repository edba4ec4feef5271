"""``kill -9`` during ``churn score``: ``--out`` is the old set or the new one, never mixed; a rerun is byte-identical.

The process kills itself (SIGKILL, ``CHURN_FAULT_AT``) at three points: outputs staged (before MLflow and
publication), just before the atomic swap, and just after it (before the old set is deleted and the MLflow
run is ended). Each starts from the same published earlier run (cutoff 2025-12-01) and scores 2026-01-01.
"""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import Store
from tests.test_malformed_inputs import run_churn, snapshot

OLD, NEW = "2025-12-01", "2026-01-01"
BYTE_IDENTICAL = ["scores.parquet", "alerts.parquet", "alerts.csv", "alerts.jsonl", "drift.csv"]
FAULTS = {"staged": "old", "publish": "old", "published": "new"}


@pytest.fixture(scope="module")
def small_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from churn.generate import generate_demo, write_demo

    folder = tmp_path_factory.mktemp("kill9_data")
    write_demo(generate_demo(n_customers=120, seed=5), folder)
    return folder


def _score(store: Store, data: Path, out: Path, as_of: str, fault: str | None = None) -> int:
    env = {"CHURN_FAULT_AT": fault} if fault else {}
    res = run_churn(["score", "--config", str(store.config_path), "--data", str(data), "--as-of", as_of,
                     "--out", str(out)], cwd=store.folder, timeout=300, env=env)
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    return res.returncode


@pytest.fixture(scope="module")
def references(trained_store: Store, small_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Clean runs: the earlier set (the starting point of every kill) and the new set (what a rerun must equal)."""
    root = tmp_path_factory.mktemp("kill9_ref")
    refs = {"old": root / "old", "new": root / "new"}
    for key, as_of in (("old", OLD), ("new", NEW)):
        assert _score(trained_store, small_data, refs[key], as_of) == 0
    return refs


def _cutoffs(out: Path) -> set[str]:
    """The cutoff every output of the folder speaks for (one value when the set is not mixed)."""
    found = {json.loads((out / "summary.json").read_text())["cutoff"]}
    for name in ("scores.parquet", "alerts.parquet"):
        found |= {pd.Timestamp(t).date().isoformat() for t in pd.read_parquet(out / name)["cutoff"].unique()}
    report = (out / "report.html").read_text(encoding="utf-8")
    found |= {c for c in (OLD, NEW) if f"cutoff {c}" in report}
    return found


def _same_set(out: Path, ref: Path) -> bool:
    ours, theirs = snapshot(out), snapshot(ref)
    return set(ours) == set(theirs) and all(ours[n] == theirs[n] for n in BYTE_IDENTICAL if n in theirs)


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_kill9_leaves_old_or_new_and_rerun_is_identical(fault: str, trained_store: Store, small_data: Path,
                                                         references: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(references["old"], out)
    rc = _score(trained_store, small_data, out, NEW, fault=fault)
    assert rc == -signal.SIGKILL, f"the fault point {fault} was not reached (exit {rc})"
    expected = FAULTS[fault]
    assert _same_set(out, references[expected]), f"--out is not the complete {expected} set: {sorted(snapshot(out))}"
    assert _cutoffs(out) == {OLD if expected == "old" else NEW}, "mixed cutoffs"

    assert _score(trained_store, small_data, out, NEW) == 0  # rerun after the kill
    assert not list(tmp_path.glob(".staging-*")), "stale staging not cleaned"
    assert _same_set(out, references["new"])
    for name in BYTE_IDENTICAL:
        assert (out / name).read_bytes() == (references["new"] / name).read_bytes(), name


def test_killed_scoring_run_is_marked_killed_on_next_start(trained_store: Store, small_data: Path,
                                                           tmp_path: Path) -> None:
    """Killed after publication, the scoring run stays RUNNING until the next `churn score` marks it KILLED."""
    out = tmp_path / "out"
    assert _score(trained_store, small_data, out, NEW, fault="published") == -signal.SIGKILL
    run_id = json.loads((out / "summary.json").read_text())["run_id"]
    client = trained_store.client()
    assert client.get_run(run_id).info.status == "RUNNING"
    assert _score(trained_store, small_data, tmp_path / "other", NEW) == 0
    run = client.get_run(run_id)
    assert run.info.status == "KILLED"
    assert run.data.tags["churn.ended_by"].startswith("reaped")
