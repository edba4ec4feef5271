"""End to end: ``churn demo`` in a fresh process and an empty working directory.

Runs the installed ``churn`` entry point in a subprocess so it gets its own MLflow state and uses the
config's *relative* store paths (``mlruns/`` in the working directory), as an analyst would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from churn.generate import TABLES
from tests.conftest import MODEL_NAME, write_small_config


def _churn() -> list[str]:
    script = Path(sys.executable).with_name("churn")
    return [str(script)] if script.exists() else [sys.executable, "-m", "churn.cli"]


@pytest.mark.slow
def test_demo_end_to_end(tmp_path: Path) -> None:
    config = write_small_config(tmp_path, name="small.yaml", absolute_store=False)
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    proc = subprocess.run([*_churn(), "-q", "demo", "--config", str(config), "--out", "demo", "--customers", "600",
                           "--trials", "2"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "demo done" in proc.stdout

    out = tmp_path / "demo"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["command"] == "demo" and summary["customers"] == 600
    assert 0.0 <= summary["metrics"]["test_roc_auc"] <= 1.0
    assert summary["model_name"] == MODEL_NAME and summary["model_version"] == "1"
    assert summary["model_alias"] == ["challenger", "champion"]
    assert summary["train"]["tuning"]["n_trials"] == 2  # --trials overrides the config's 3
    assert summary["cutoff"] == "2026-01-01"
    # the demo's data is stationary: no retrain recommendation in the summary or the report
    assert summary["score"]["drift_recommendation"] is None
    assert summary["score"]["drift"]["retrain_recommended"] is False

    # data, the relative model store in the working directory, and the scoring outputs
    assert {f"{t}.parquet" for t in TABLES} <= {p.name for p in (out / "data").iterdir()}
    assert (tmp_path / "mlruns" / "mlflow.db").is_file()
    assert (tmp_path / "mlruns" / "optuna.db").is_file()
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    assert client.get_model_version_by_alias(MODEL_NAME, "champion").version in ("1", 1)
    assert client.get_run(summary["run_id"]).data.metrics["test_roc_auc"] == pytest.approx(
        summary["metrics"]["test_roc_auc"])

    scoring = out / "scoring"
    alerts = pd.read_parquet(scoring / "alerts.parquet")
    assert len(alerts) == summary["n_alerts"]
    assert (scoring / "alerts.csv").is_file() and (scoring / "alerts.jsonl").is_file()
    html = (scoring / "report.html").read_text(encoding="utf-8")
    assert "<html" in html.lower() and MODEL_NAME in html
    assert "retraining recommended" not in html
    assert summary["outputs"]["report.html"] == str(Path("demo") / "scoring" / "report.html")
