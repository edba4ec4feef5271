"""Score change since the last run: a hand-made case with the expected sentence, and two consecutive demo runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.catalogue import FeatureSpec
from inference.change import RowContributions, change_reasons, change_sentence, describe_changes
from inference.score import score
from tests.conftest import Store, working_directory

FEATURES = ["login_7d", "complaints_30d", "tenure_days"]
SPECS = {
    "login_7d": FeatureSpec("login_7d", "behavioral", "login_activity", "'login' events in the last 7 days", "count"),
    "complaints_30d": FeatureSpec("complaints_30d", "sentiment", "complaints", "Complaints in the last 30 days",
                                  "count"),
    "tenure_days": FeatureSpec("tenure_days", "profile", "tenure", "Days since signup", "days"),
}


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-z))


def _rows(ids: list[str], contrib: list[list[float]], values: list[list[float]]) -> RowContributions:
    c = np.array(contrib)
    return RowContributions(pd.Series(ids), c, pd.DataFrame(values, columns=FEATURES), _sigmoid(c.sum(axis=1)))


def test_hand_made_change_gives_the_expected_sentence() -> None:
    # customer A: logins fell 9 -> 2 (+0.7 log-odds) and a complaint arrived (+0.6); tenure moved but its
    # contribution did not. Group impacts (points): logins 0.1495 - 0.0101 = +0.139, complaints +0.118, tenure 0
    cur = _rows(["A", "B", "C"], [[0.8, 0.6, -0.1, -2.0], [0.5, 0.0, 0.0, -1.0], [0.0, 0.0, 0.0, -0.4]],
                [[2, 1, 430], [1, 0, 90], [5, 0, 10]])
    prev = _rows(["A"], [[0.1, 0.0, -0.1, -2.0]], [[9, 0, 400]])
    reasons = change_reasons(cur, prev, FEATURES, SPECS, k=3)
    assert reasons.loc["A", "change_groups"] == ["login_activity", "complaints"]
    assert reasons.loc["B", "change_groups"] == [] and reasons.loc["C", "change_because"] == ""

    alerts = pd.DataFrame({"customer_id": ["A", "B", "C"], "churn_probability": cur.p})
    previous_scores = pd.DataFrame({"customer_id": ["A", "B", "Z"], "churn_probability": [0.12, 0.05, 0.5]})
    out = describe_changes(alerts, previous_scores, {"A", "Z"}, reasons, "2025-11-01")
    assert out["change_reason"].tolist() == [
        "risk rose from 12% to 33% since 2025-11-01, mostly because 'login' events in the last 7 days fell (9 -> 2) "
        "and complaints in the last 30 days rose (0 -> 1)",
        "risk rose from 5% to 38% since 2025-11-01",
        "new since 2025-11-01 (not scored then); risk now 40%",
    ]
    assert out["new_alert"].tolist() == [False, True, True]
    assert out["previous_probability"].iloc[:2].tolist() == [0.12, 0.05] and np.isnan(out["previous_probability"][2])
    assert out["probability_change"].iloc[0] == pytest.approx(_sigmoid(-0.7) - 0.12)


def test_falling_risk_names_the_groups_that_lowered_it() -> None:
    cur = _rows(["A"], [[0.1, 0.0, -0.1, -2.0]], [[9, 0, 400]])  # sigmoid(-2.0) = 11.9%
    prev = _rows(["A"], [[0.8, 0.6, -0.1, -2.0]], [[2, 1, 370]])
    reasons = change_reasons(cur, prev, FEATURES, SPECS, k=1)
    text = change_sentence(float(cur.p[0]), 0.33, "2025-11-01", reasons.loc["A", "change_because"])
    assert text == "risk fell from 33% to 12% since 2025-11-01, mostly because 'login' events in the last 7 days " \
                   "rose (2 -> 9)"


def test_two_consecutive_demo_runs(trained_store: Store, tmp_path: Path) -> None:
    s = trained_store
    with working_directory(s.folder):
        s.activate()
        score(s.tables, s.cfg, pd.Timestamp("2025-12-01"), tmp_path / "nov", log_to_mlflow=False)
        summary = score(s.tables, s.cfg, pd.Timestamp("2026-01-01"), tmp_path / "dec", log_to_mlflow=False,
                        previous=tmp_path / "nov")
    alerts = pd.read_parquet(tmp_path / "dec" / "alerts.parquet")
    before = pd.read_parquet(tmp_path / "nov" / "scores.parquet").set_index("customer_id")["churn_probability"]
    old_alerts = set(pd.read_parquet(tmp_path / "nov" / "alerts.parquet")["customer_id"])
    assert len(alerts) > 0
    known = alerts["customer_id"].isin(before.index)
    assert alerts.loc[known, "previous_probability"].to_numpy() == pytest.approx(
        before[alerts.loc[known, "customer_id"]].to_numpy())
    assert alerts["new_alert"].tolist() == (~alerts["customer_id"].isin(old_alerts)).tolist()
    rose = alerts[known & (alerts["probability_change"] > 0.01)]
    assert len(rose) and rose["change_reason"].str.contains(r"^risk rose from \d+% to \d+% since 2025-12-01").all()
    assert rose["change_reason"].str.contains("mostly because").mean() > 0.9
    info = json.loads((tmp_path / "dec" / "summary.json").read_text())["score_change"]
    assert info["previous_cutoff"] == "2025-12-01" and info["n_new_alerts"] == int(alerts["new_alert"].sum())
    assert summary["score_change"] == info
    flat = pd.read_csv(tmp_path / "dec" / "alerts.csv")
    assert flat["change_reason"].tolist() == alerts["change_reason"].tolist()
    html = (tmp_path / "dec" / "report.html").read_text(encoding="utf-8")
    top = alerts.sort_values("rank").iloc[0]
    assert f"Since last run: {top['change_reason'][:40]}" in html.replace("&#39;", "'")
