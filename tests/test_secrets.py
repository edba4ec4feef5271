"""The pseudonymisation key never appears in any output of a training + scoring run (artifacts, database, logs)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import write_small_config
from tests.test_malformed_inputs import run_churn

KEY = "pz-K3y-7f41c9e2-never-log-me"


@pytest.fixture(scope="module")
def secret_run(tmp_path_factory: pytest.TempPathFactory, demo_data_dir: Path) -> dict[str, object]:
    folder = tmp_path_factory.mktemp("secret_store")
    config = write_small_config(folder, overrides={"scoring": {"pseudonymize_key": KEY},
                                                   "training": {"backtest_windows": 0,
                                                                "tuning": {"n_trials": 1}}})
    logs = []
    for argv in (["-v", "train", "--data", str(demo_data_dir), "--out", str(folder / "train_out")],
                 ["-v", "score", "--data", str(demo_data_dir), "--out", str(folder / "score_out")]):
        res = run_churn([*argv[:2], "--config", str(config), *argv[2:]], cwd=folder, timeout=600)
        assert res.returncode == 0, res.stderr[-3000:]
        logs.append(res.stdout + res.stderr)
    return {"folder": folder, "logs": logs}


def test_key_in_no_file_and_no_log(secret_run: dict[str, object]) -> None:
    folder = secret_run["folder"]
    assert isinstance(folder, Path)
    files = [p for p in folder.rglob("*") if p.is_file() and p != folder / "config.yaml"]  # not the operator's file
    assert any(p.name == "config.json" for p in files), "the training run's config snapshot exists"
    leaks = [str(p.relative_to(folder)) for p in files if KEY.encode() in p.read_bytes()]
    assert leaks == []
    for log in secret_run["logs"]:
        assert KEY not in log
    snapshot = next(p for p in files if p.name == "config.json" and "evaluation" in p.parts)
    assert json.loads(snapshot.read_text())["scoring"]["pseudonymize_key"] == "<redacted>"


def test_key_was_used(secret_run: dict[str, object], demo_customers: pd.DataFrame) -> None:
    folder = secret_run["folder"]
    assert isinstance(folder, Path)
    ids = set(pd.read_parquet(folder / "score_out" / "scores.parquet")["customer_id"])
    assert ids and not ids & set(demo_customers["customer_id"].astype(str)), "ids are pseudonymised"
