"""``churn refresh`` end to end on the demo (twice: the second run has nothing new), and its retrain rule."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from churn.refresh import EXIT_NOTHING_NEW, retrain_reasons
from inference.score import score
from tests.conftest import Store, run_cli, working_directory


def test_refresh_twice_on_the_demo(trained_store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = trained_store
    state = tmp_path / "state"
    monkeypatch.chdir(s.folder)
    with working_directory(s.folder):
        s.activate()  # last month's run, as an earlier refresh would have left it
        score(s.tables, s.cfg, pd.Timestamp("2025-12-01"), state / "runs" / "2025-12-01")
    args = ["refresh", "--config", s.config_path, "--data", s.data_dir, "--out", state]

    first = run_cli(args)
    s.activate()
    assert first.exit_code == 0, first.output
    summary = json.loads((state / "summary.json").read_text())
    assert summary["actions"] == ["evaluated run 2025-12-01",
                                  f"scored 2026-01-01 with v1 ({summary['scoring']['n_alerts']} alerts)"]
    assert summary["exit_code"] == 0 and summary["retrain_reasons"] == [] and summary["retrain"] is None
    monitor = json.loads((state / "runs" / "2025-12-01" / "monitor" / "monitor.json").read_text())
    auc = next(r for r in monitor["estimate_vs_realized"] if r["metric"] == "roc_auc")
    assert auc["realized"] == pytest.approx(monitor["metrics"]["roc_auc"])
    assert summary["evaluated"][0]["estimate_vs_realized"][0] == auc
    alerts = pd.read_parquet(state / "runs" / "2026-01-01" / "alerts.parquet")
    assert alerts["change_reason"].str.contains("since 2025-12-01").all()  # scored with --previous last month
    assert alerts.loc[alerts["previous_probability"].notna(), "change_reason"].str.startswith("risk ").all()
    stamp = (state / "runs" / "2026-01-01" / "alerts.parquet").stat().st_mtime_ns
    run = json.loads((state / "runs" / "2026-01-01" / "summary.json").read_text())
    logged = s.client().get_run(summary["scoring"]["run_id"])  # the estimate is on the MLflow scoring run
    assert logged.data.metrics["est_roc_auc"] == pytest.approx(run["performance_estimate"]["roc_auc"]["estimate"])
    assert logged.data.tags["output_dir"] == str((state / "runs" / "2026-01-01").resolve())

    second = run_cli(args)
    s.activate()
    assert second.exit_code == EXIT_NOTHING_NEW == 99, second.output
    again = json.loads((state / "summary.json").read_text())
    assert again["actions"] == [] and again["scored"] is False and again["evaluated"] == []
    assert again["message"] == "nothing new: 2026-01-01 already scored with v1"
    assert (state / "runs" / "2026-01-01" / "alerts.parquet").stat().st_mtime_ns == stamp
    assert "exit 99" in second.output


def _evaluated(realized: float, low: float, high: float) -> list[dict]:
    return [{"cutoff": "2025-11-01", "estimate_vs_realized": [
        {"metric": "roc_auc", "estimate": (low + high) / 2, "low": low, "high": high, "realized": realized,
         "inside_interval": low <= realized <= high}]}]


@pytest.mark.parametrize(
    ("drift", "evaluated", "new_days", "reasons", "evidence"),
    [
        (None, [], 0, [], False),
        ({"retrain_recommended": False, "message": "No retrain needed"}, _evaluated(0.80, 0.78, 0.84), 30, [], False),
        ({"retrain_recommended": True, "message": "Retrain recommended: x."}, [], 0,
         ["scoring: Retrain recommended: x."], True),
        (None, _evaluated(0.70, 0.78, 0.84), 0,
         ["run 2025-11-01: realised ROC-AUC 0.700 below the interval [0.780, 0.840] estimated at scoring"], True),
        (None, _evaluated(0.90, 0.78, 0.84), 0, [], False),  # better than estimated is no reason
        (None, [], 92, ["cadence: 92 days of new labelled data since the newest version "
                        "(monitoring.retrain_every_days 90)"], False),
    ],
    ids=["nothing", "all-fine", "drift-evidence", "realised-below-estimate", "realised-above", "cadence"],
)
def test_retrain_reasons(drift: dict | None, evaluated: list[dict], new_days: int, reasons: list[str],
                         evidence: bool) -> None:
    assert retrain_reasons(drift, evaluated, new_days, 90) == (reasons, evidence)


@pytest.mark.slow
def test_refresh_retrains_on_cadence_and_promotes_only_through_the_gate(demo_data_dir: Path, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A champion trained when the data ended on 2025-11-30; refresh on the data to 2025-12-31 with a 1-day cadence."""
    from churn.config import load_config
    from features.contract import load_tables
    from model.registry import CHAMPION, get_alias_version
    from tests.conftest import write_small_config
    from training.train import train

    monkeypatch.chdir(tmp_path)
    old = write_small_config(tmp_path, "old.yaml", overrides={"data": {"observed_until": "2025-11-30"}})
    new = write_small_config(tmp_path, "new.yaml", overrides={"monitoring": {"retrain_every_days": 1}})
    cfg_old = load_config(old)
    first = train(load_tables(demo_data_dir, cfg_old), cfg_old, demo_data_dir)
    assert first["cutoffs"]["test"] == ["2025-10-01"]

    args = ["refresh", "--config", new, "--data", demo_data_dir, "--out", tmp_path / "state"]
    res = run_cli(args)
    summary = json.loads((tmp_path / "state" / "summary.json").read_text())
    assert res.exit_code == 0, res.output  # a cadence retrain is not evidence of a worse champion
    assert summary["retrain_reasons"] == ["cadence: 61 days of new labelled data since the newest version "
                                          "(monitoring.retrain_every_days 1)"]  # 2025-10-01 -> 2025-12-01
    retrain = summary["retrain"]
    assert retrain["trained_version"] == "2"
    # the gate re-scored both on the two latest cutoffs neither model was fitted or calibrated on
    assert "re-scored on cutoff 2025-12-01 and 2025-11-01" in retrain["gate"]
    champion = get_alias_version("churn-xgb", CHAMPION)
    assert champion == ("2" if retrain["promoted"] else "1") == summary["champion"]
    run = json.loads((tmp_path / "state" / "runs" / "2026-01-01" / "summary.json").read_text())
    assert str(run["model_version"]) == champion  # re-scored with the new champion after a promotion

    again = run_cli(args)
    assert again.exit_code == 99, again.output  # v2 has seen every labelled cutoff: nothing new
    assert json.loads((tmp_path / "state" / "summary.json").read_text())["retrain_reasons"] == []
