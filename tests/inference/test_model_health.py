"""Scoring-time model health on the session's trained demo model: drift that does not cry wolf, and the estimate.

The demo generator is stationary, so scoring its latest month must not recommend a retrain; the same
data with engagement collapsing in the last two months (a real shift) must.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from features.contract import load_tables
from inference.score import score
from tests.conftest import Store, working_directory

AS_OF = pd.Timestamp("2026-01-01")


def _score(store: Store, data_dir: Path, out: Path) -> dict[str, Any]:
    with working_directory(store.folder):
        store.activate()
        return score(load_tables(data_dir, store.cfg), store.cfg, AS_OF, out, log_to_mlflow=False)


def _engagement_collapse(src: Path, dst: Path, seed: int = 0) -> Path:
    """Copy of the demo data where 70% of the events and usage of the last 60 days are gone."""
    shutil.copytree(src, dst)
    events = pd.read_parquet(dst / "events.parquet")
    recent = (events["timestamp"] >= AS_OF - pd.Timedelta(days=60)).to_numpy()
    drop = recent & (np.random.default_rng(seed).random(len(events)) < 0.7)
    events.loc[~drop].reset_index(drop=True).to_parquet(dst / "events.parquet", index=False)
    return dst


@pytest.fixture(scope="module")
def stationary(trained_store: Store, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    out = tmp_path_factory.mktemp("health") / "stationary"
    return _score(trained_store, trained_store.data_dir, out), out


def test_stationary_demo_makes_no_retrain_recommendation(stationary: tuple[dict[str, Any], Path],
                                                         trained_store: Store) -> None:
    summary, out = stationary
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["drift_recommendation"] is None
    assert on_disk["drift"]["retrain_recommended"] is False
    assert on_disk["drift"]["score"]["status"] == "stable"
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "retraining recommended" not in html and "No retraining needed" in html
    section = html[html.index('<section id="drift">'):html.index('<section id="playbooks">')]
    # estimate table (header + 3 metrics), drift table (header + monitoring.report_drift_rows), not all features
    assert section.count("<tr>") == (1 + 3) + (1 + 8)
    assert "churn_probability (score)" in section  # the score always leads
    drift = pd.read_csv(out / "drift.csv")  # the full table, one row per model feature plus the score
    assert len(drift) == 1 + trained_store.summary["n_features"]
    assert drift["feature"].iloc[0] == "churn_probability (score)"


def test_estimate_is_in_summary_with_an_interval(stationary: tuple[dict[str, Any], Path]) -> None:
    est = json.loads((stationary[1] / "summary.json").read_text())["performance_estimate"]
    for key in ("roc_auc", "precision_at_alert", "churners_in_alerts"):
        cell = est[key]
        assert cell["low"] <= cell["estimate"] <= cell["high"], key
    assert 0.5 < est["roc_auc"]["estimate"] < 1.0
    scores = pd.read_parquet(stationary[1] / "scores.parquet")
    assert est["n_scored"] == len(scores)
    assert est["expected_churn_rate"] == pytest.approx(scores["churn_probability"].mean())


def test_a_real_shift_recommends_retraining(trained_store: Store, tmp_path: Path) -> None:
    data = _engagement_collapse(trained_store.data_dir, tmp_path / "shifted")
    summary = _score(trained_store, data, tmp_path / "out")
    ev = summary["drift"]
    assert summary["drift_recommendation"] is not None and summary["drift_recommendation"].startswith("Retrain")
    assert ev["retrain_recommended"] is True and ev["score"]["status"] == "drift"
    assert ev["drifted_important"], "the important engagement inputs moved"
    html = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert "retraining recommended" in html


def test_estimate_is_recalibrated_on_the_models_own_test_window(stationary: tuple[dict[str, Any], Path],
                                                                 trained_store: Store) -> None:
    """Training stores the calibration slope of the registered model on its out-of-time test cutoff; scoring
    applies it (shrunk by the window's noise) before the estimate and says so in the summary."""
    est = json.loads((stationary[1] / "summary.json").read_text())["performance_estimate"]
    rec = est["recalibration"]
    assert rec["applied"] is True
    assert rec["window"] == "training test window " + ", ".join(trained_store.summary["cutoffs"]["test"])
    assert 0.0 <= rec["shrinkage_weight"] <= 1.0
    assert rec["slope"] == pytest.approx(1 + rec["shrinkage_weight"] * (rec["window_slope"] - 1))
    assert rec["slope_low"] < rec["window_slope"] < rec["slope_high"]
    assert 0.5 < est["roc_auc_uncorrected"] < 1.0
