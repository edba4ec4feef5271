"""Tests for the analyst HTML report: content, escaping, offline-ness, edge cases, screenshot."""

from __future__ import annotations

import base64
import hashlib
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
    assert all(cid in html for cid in alerts["customer_id"])  # the full list, not a top_n (issue 16)
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
    # issue 16: one inline script (plus its JSON data block), no src, allowed by its hash only
    assert re.findall(r"<script[^>]*>", html) == ['<script type="application/json" id="alert-data">', "<script>"]
    script = html.split("<script>", 1)[1].split("</script>", 1)[0]
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in html and "unsafe-inline'; img" in html  # styles inline, scripts hashed
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
    assert "<script>alert" not in html.lower() and html.lower().count("<script") == 2  # only the report's own
    assert "<img" not in html and "<b>m</b>" not in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html
    data = html.split('id="alert-data">', 1)[1].split("</script>", 1)[0]
    assert "<" not in data and "\\u003cscript\\u003e" in data  # the JSON block cannot close its <script>


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


# --------------------------------------------------------------------------- issue 16: a list an analyst can work from

def _dom(report: Path, fragment: str) -> str:
    """The report's DOM after its script applied ``fragment`` (skips without Chromium)."""
    mod = _script()
    browser = mod.find_chromium()
    if browser is None:
        pytest.skip("no Chromium on this machine")
    dom = mod.dump_dom(report, browser, fragment)
    assert 'data-ready="true"' in dom, "the page script did not finish"
    return dom


def _shown_count(dom: str) -> int:
    m = re.search(r'id="alert-count">(\d+)<', dom)
    assert m, "no alert count in the DOM"
    return int(m.group(1))


def _detail(dom: str) -> str:
    m = re.search(r'<aside id="detail"[^>]*>.*?</aside>', dom, re.S)
    assert m, "no detail panel"
    return m.group(0)


def test_filter_search_and_detail_in_headless_chromium(full_report: tuple[str, pd.DataFrame],
                                                        tmp_path: Path) -> None:
    html, alerts = full_report
    report = tmp_path / "report.html"
    report.write_text(html, encoding="utf-8")
    pick = alerts[alerts["playbook_name"] == "Loyalty discount"].iloc[0]
    dom = _dom(report, f"playbook=Loyalty%20discount&customer={pick['customer_id']}")
    assert _shown_count(dom) == 3  # alerts 1, 4 and 7 of 8 have the second playbook (i % 3 == 1)
    detail = _detail(dom)
    assert f'data-customer="{pick["customer_id"]}"' in detail and "hidden" not in detail.split(">", 1)[0]
    for text in (pick["reason_1"], "Rule that chose it", "price_sensitive", "Offer 15% off next renewal"):
        assert text in detail
    assert _shown_count(_dom(report, "action=control")) == 1
    assert _shown_count(_dom(report, f"q={alerts['customer_id'].iloc[2][-3:]}")) >= 1
    assert _shown_count(_dom(report, "risk=high&group=support")) == int((alerts["risk_tier"] == "high").sum())


def test_not_selected_alerts_say_their_real_reason_and_treated_counts_contacted(tmp_path: Path) -> None:
    scores = _scores()
    alerts = _alerts(scores, 4)
    alerts["playbook_name"] = "Win-back"
    alerts["control_group"] = [False, True, False, False]
    alerts["selected"] = [True, True, False, False]
    alerts["expected_net_value"] = [50.0, 40.0, -12.5, 30.0]
    html = render_report(tmp_path / "r.html", summary=_summary(), scores=scores, alerts=alerts).read_text()
    assert "Not selected · negative value" in html and "Not selected · over budget" in html
    assert "This run: 1 negative value, 1 over budget." in html
    row = re.search(r'<td class="pb-name">Win-back</td>.*?</tr>', html, re.S).group(0)
    cells = re.findall(r'<td class="num">([^<]*)</td>', row)
    assert cells[:4] == ["4", "1", "1", "2"]  # alerts, treated (contacted, not control), control, not selected


def test_model_card_with_previous_champion_and_units(tmp_path: Path) -> None:
    card = {"name": "churn-xgb", "version": "8", "trained_at": "2026-03-30T10:00:00+00:00", "n_test": 500,
            "cutoffs": {"train": ["2025-01-01", "2025-02-01"], "valid": ["2025-06-01"], "test": ["2025-09-01"]},
            "metrics": {"test_roc_auc": 0.81, "test_pr_auc": 0.5, "test_lift_top10": 3.1, "test_ece": 0.02},
            "reliability": [{"p_mean": 0.1, "y_rate": 0.12, "count": 100}, {"p_mean": 0.5, "y_rate": 0.45, "count": 9}],
            "lift": [{"fraction": 0.05, "lift": 3.5, "capture": 0.2}, {"fraction": 0.5, "lift": 1.6, "capture": 0.8}],
            "previous": {"version": "6", "metrics": {"test_roc_auc": 0.79, "test_pr_auc": float("nan")}}}
    scores = _scores()
    html = render_report(tmp_path / "r.html", summary=_summary(model_card=card, currency="USD"), scores=scores,
                         alerts=_alerts(scores)).read_text()
    assert "churn-xgb version 8" in html and "2025-01-01, 2025-02-01" in html and "Previous champion v6" in html
    assert re.search(r"ROC-AUC</td><td class=\"num\"><b>0.810</b></td>\s*<td class=\"num\">0.790</td>"
                     r"<td class=\"num\">0.020</td>", html)
    assert "3.10×" in html and html.count("<svg") == 3  # histogram + calibration + lift
    assert "USD 1.50k" in html and "Value at risk (USD)" in html and "EUR " not in html
    no_card = render_report(tmp_path / "n.html", summary=_summary(), scores=scores, alerts=_alerts(scores)).read_text()
    assert "No model card was passed" in no_card


def test_detail_panel_renders_counterfactual_timing_and_history(tmp_path: Path) -> None:
    scores = _scores()
    alerts = _alerts(scores, 2).assign(counterfactual="Two fewer tickets would lower the risk to 21%",
                                       counterfactual_probability=0.21, urgency="immediate", timing="act this week",
                                       churn_within_30d=0.4, previous_churn_probability=0.35)
    report = render_report(tmp_path / "r.html", summary=_summary(), scores=scores, alerts=alerts)
    detail = _detail(_dom(report, f"customer={alerts['customer_id'].iloc[1]}"))
    for text in ("What would change the risk", "Two fewer tickets would lower the risk to 21%", "21.0%",
                 "When: timing and urgency", "act this week", "40.0%", "History of scores", "35.0%"):
        assert text in detail
