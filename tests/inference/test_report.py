"""Tests for the analyst HTML report: content, escaping, offline-ness, edge cases, screenshot."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pytest

from inference.report import render_report

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "screenshot_report.py"
REMOTE = re.compile(r"""(?:\b(?:src|href)\s*=\s*["']?|url\(\s*["']?)\s*(?:https?:)?//""", re.I)

PLAYBOOKS = [
    (
        "pb_vip_call",
        "VIP save call",
        "Call from account manager",
        "phone",
        "Key accounts",
        "value_tier == platinum",
    ),
    ("pb_discount", "Loyalty discount", "Offer 15% off next renewal", "email", "CRM team", "price_sensitive"),
    ("pb_onboard", "Onboarding nudge", "Send setup guide", "in-app", "Product", "lifecycle_stage == new"),
]


def _summary(**overrides: object) -> dict:
    s = {
        "model_name": "churn-xgb",
        "model_version": "7",
        "model_uri": "models:/churn-xgb@champion",
        "cutoff": "2026-03-31",
        "input_hash": "sha256:" + "ab" * 32,
        "generated_at": "2026-04-01T06:00:00Z",
        "n_scored": 50,
        "n_alerts": 8,
        "horizon_days": 90,
        "budget": 1500.0,
        "metrics": {"roc_auc": 0.842, "brier": 0.118},
        "drift_recommendation": None,
    }
    s.update(overrides)
    return s


def _scores(n: int = 50) -> pd.DataFrame:
    rng = np.random.default_rng(7)
    p = rng.beta(2, 5, n)
    ltv = rng.gamma(2.0, 400.0, n).round(2)
    return pd.DataFrame(
        {
            "customer_id": [f"C{i:04d}" for i in range(n)],
            "cutoff": "2026-03-31",
            "churn_probability": p,
            "risk_tier": np.where(p > 0.5, "high", np.where(p > 0.25, "medium", "low")),
            "value_tier": rng.choice(["platinum", "gold", "silver", "bronze"], n),
            "lifetime_value": ltv,
            "value_at_risk": (p * ltv).round(2),
            "lifecycle_stage": rng.choice(["new", "established", "mature"], n),
        }
    )


def _reasons(i: int) -> list[dict]:
    return [
        {
            "group": "support",
            "family": "behavioral",
            "feature": "tickets_90d",
            "text": f"Opened {i + 3} support tickets in the last 90 days",
            "impact": 0.12 - 0.01 * i,
            "value": i + 3.0,
        },
        {
            "group": "usage",
            "family": "behavioral",
            "feature": "logins_30d_delta",
            "text": "Logins fell 40% versus the previous month",
            "impact": 0.07,
            "value": -0.4,
        },
        {
            "group": "sentiment",
            "family": "text",
            "feature": "sentiment_mean",
            "text": "Recent reviews are negative",
            "impact": 0.03,
            "value": -0.5,
        },
        {
            "group": "tenure",
            "family": "value",
            "feature": "tenure_days",
            "text": "Customer for over 3 years",
            "impact": -0.05,
            "value": 1200.0,
        },
    ]


def _alerts(scores: pd.DataFrame, n: int = 8) -> pd.DataFrame:
    top = scores.sort_values("value_at_risk", ascending=False).head(n).reset_index(drop=True)
    rows = []
    for i, r in top.iterrows():
        pid, name, action, channel, owner, rule = PLAYBOOKS[i % len(PLAYBOOKS)]
        reasons = _reasons(i)
        rows.append(
            {
                **r.to_dict(),
                "rank": i + 1,
                "expected_net_value": round(r["value_at_risk"] * 0.3 - 20, 2),
                "reason_1": reasons[0]["text"],
                "reason_2": reasons[1]["text"],
                "reason_3": reasons[2]["text"],
                "protective_reason": reasons[3]["text"] if i % 2 == 0 else None,
                "reasons": reasons,
                "playbook_id": pid,
                "playbook_name": name,
                "playbook_action": action,
                "playbook_channel": channel,
                "playbook_owner": owner,
                "playbook_rule": rule,
                "control_group": i == 3,
                "selected": i < 6,
                "model_name": "churn-xgb",
                "model_version": "7",
                "input_hash": "sha256:" + "ab" * 32,
            }
        )
    return pd.DataFrame(rows)


def _importance() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "group": ["support", "usage", "tenure", "sentiment", "billing"],
            "family": ["behavioral", "behavioral", "value", "text", "value"],
            "mean_abs_impact": [0.09, 0.06, 0.04, 0.02, 0.01],
        }
    )


def _drift() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "feature": ["tickets_90d", "logins_30d_delta", "tenure_days"],
            "psi": [0.31, 0.14, 0.02],
            "status": ["drift", "warning", "stable"],
            "ref_mean": [1.2, -0.05, 800.0],
            "cur_mean": [2.4, -0.12, 810.0],
        }
    )


@pytest.fixture(scope="module")
def full_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, pd.DataFrame]:
    scores = _scores()
    alerts = _alerts(scores)
    path = tmp_path_factory.mktemp("report") / "report.html"
    out = render_report(
        path,
        summary=_summary(drift_recommendation="Retrain on Q1 & re-check calibration"),
        scores=scores,
        alerts=alerts,
        global_importance=_importance(),
        drift=_drift(),
        top_n=5,
        explain_top=3,
    )
    assert out == path and path.is_file()
    return path.read_text(encoding="utf-8"), alerts


def test_report_contains_header_alerts_reasons_and_playbooks(full_report: tuple[str, pd.DataFrame]) -> None:
    html, alerts = full_report
    assert "2026-03-31" in html and "churn-xgb" in html and "v7" in html
    for cid in alerts["customer_id"].head(5):
        assert cid in html
    assert alerts["customer_id"].iloc[6] not in html  # beyond top_n and not in the 50-row scores tables
    for text in (
        "Logins fell 40% versus the previous month",
        "Recent reviews are negative",
        "Customer for over 3 years",
    ):
        assert text in html
    for _, name, *_ in PLAYBOOKS:
        assert name in html
    assert "Control · do not contact" in html
    assert "Drift detected" in html and "tickets_90d" in html
    assert "Retrain on Q1 &amp; re-check calibration" in html
    assert html.count("<svg") == 2  # probability histogram and global importance
    assert "+12.0 pts" in html and "-5.0 pts" in html  # impacts converted to probability points (one unit name: pts)


def test_report_is_offline(full_report: tuple[str, pd.DataFrame]) -> None:
    html, _ = full_report
    assert not REMOTE.search(html)
    assert "http://" not in html and "https://" not in html
    assert "<script" not in html.lower()
    assert "<?xml" not in html and "<!DOCTYPE svg" not in html


def test_report_escapes_markup_from_data(tmp_path: Path) -> None:
    scores = _scores()
    alerts = _alerts(scores, 2)
    evil = '<script>alert("x")</script>'
    alerts.loc[0, "reason_1"] = evil
    alerts.at[0, "reasons"] = [
        {"group": "g<b>", "family": "f", "feature": "x", "text": evil, "impact": 0.2, "value": 1.0}
    ]
    alerts.loc[1, "playbook_name"] = "<img src=x onerror=alert(1)>"
    imp = pd.DataFrame(
        {
            "group": ["<script>grp</script>", "cost $x$"],
            "family": ["f", "$fam"],
            "mean_abs_impact": [0.1, 0.05],
        }
    )
    html = render_report(
        tmp_path / "r.html",
        summary=_summary(model_name="<b>m</b>"),
        scores=scores,
        alerts=alerts,
        global_importance=imp,
    ).read_text(encoding="utf-8")
    assert "<script" not in html.lower()
    assert "<img" not in html and "<b>m</b>" not in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html


def test_zero_alerts_and_no_drift_or_importance(tmp_path: Path) -> None:
    scores = _scores()
    alerts = _alerts(scores).iloc[0:0]
    html = render_report(
        tmp_path / "r.html", summary=_summary(n_alerts=0, budget=None), scores=scores, alerts=alerts
    ).read_text(encoding="utf-8")
    assert "No alerts were raised" in html
    assert "Drift not computed" in html
    assert "Global importance was not computed" in html


def test_empty_inputs_missing_columns_and_nans(tmp_path: Path) -> None:
    scores = _scores(6)
    scores.loc[0, "churn_probability"] = np.nan
    scores.loc[1, "risk_tier"] = None
    alerts = pd.DataFrame(
        {
            "customer_id": ["C0001", "C0002"],
            "churn_probability": [np.nan, 0.4],
            "reasons": [None, "not json"],
            "value_at_risk": [np.nan, 10.0],
        }
    )
    drift = pd.DataFrame({"feature": ["a"], "psi": [np.nan], "status": [None]})
    html = render_report(
        tmp_path / "a.html",
        summary={},
        scores=scores,
        alerts=alerts,
        drift=drift,
        global_importance=pd.DataFrame(),
    ).read_text(encoding="utf-8")
    assert "C0002" in html and "—" in html
    html = render_report(
        tmp_path / "b.html",
        summary={"metrics": {}},
        scores=pd.DataFrame(),
        alerts=pd.DataFrame(),
        drift=drift.iloc[0:0],
    ).read_text(encoding="utf-8")
    assert "No customers were scored" in html and "No features were checked" in html


def test_impacts_already_in_points_are_not_scaled_again(tmp_path: Path) -> None:
    scores = _scores()
    alerts = _alerts(scores, 1)
    alerts.at[0, "reasons"] = [
        {"group": "g", "family": "f", "feature": "x", "text": "t", "impact": 12.0, "value": None}
    ]
    html = render_report(tmp_path / "r.html", summary=_summary(), scores=scores, alerts=alerts).read_text()
    assert "+12.0 pts" in html


def test_report_shows_currency_impact_summary_and_counterfactual(tmp_path: Path) -> None:
    scores = _scores()
    alerts = _alerts(scores, 1)
    alerts["lifetime_value"] = [1234.5]
    alerts["impact_summary"] = ["base rate 3.8% +10.3 pts (usage_time) +0.9 pts (other factors) = 15.0%"]
    alerts["counterfactual"] = ["If logins in the last 7 days rose from 1 to 4, the risk would fall from 15.0% to 9.0%"]
    html = render_report(tmp_path / "r.html", summary={**_summary(), "currency": "USD"}, scores=scores,
                         alerts=alerts).read_text()
    assert "USD 1,234.50" in html
    assert "base rate 3.8% +10.3 pts (usage_time) +0.9 pts (other factors) = 15.0%" in html
    assert "What would lower it: If logins in the last 7 days rose from 1 to 4, the risk would fall from 15.0% to 9.0%" in html


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("screenshot_report", SCRIPT)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_screenshot_script_exits_2_without_chromium(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mod = _script()
    monkeypatch.setattr(mod, "find_chromium", lambda: None)
    report = tmp_path / "r.html"
    report.write_text("<html></html>")
    assert mod.main([str(report), str(tmp_path / "o.png")]) == 2


def test_screenshot_png(full_report: tuple[str, pd.DataFrame], tmp_path: Path) -> None:
    if _script().find_chromium() is None:
        pytest.skip("no Chromium on this machine")
    report = tmp_path / "report.html"
    report.write_text(full_report[0], encoding="utf-8")
    out = tmp_path / "report.png"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), str(report), str(out)], capture_output=True, text=True, timeout=150
    )
    assert proc.returncode == 0, proc.stderr
    assert out.stat().st_size > 10_000
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
