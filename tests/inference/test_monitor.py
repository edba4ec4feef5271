"""Tests for inference.monitor: realized labels, treatment effect and the evaluation of a past scoring run.

All expected numbers are worked out by hand in the comments. Label: churned within (T, T + 30 days].
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from churn.config import LabelConfig
from churn.errors import DataError, InputNotFoundError
from features.contract import Tables, validate_child, validate_customers
from inference.alerts import pseudonymize
from inference.monitor import (
    TREATMENT_COLUMNS,
    HorizonNotOverError,
    evaluate_alerts,
    newcombe_interval,
    realized_outcomes,
    treatment_effect,
    wilson_interval,
    write_monitor_report,
)

T = pd.Timestamp("2025-01-01")
LABEL = LabelConfig(definition="churn_date", horizon_days=30)

# c01..c10 scored at T; (churn date, churned within (2025-01-01, 2025-01-31]?)
CHURN = {
    "c01": ("2025-01-15", 1),
    "c02": (None, 0),
    "c03": ("2025-01-31", 1),  # last day of the window is inside
    "c04": ("2025-02-01", 0),  # first day after the window
    "c05": ("2025-01-02", 1),
    "c06": (None, 0),
    "c07": (None, 0),
    "c08": ("2025-01-20", 1),
    "c09": ("2025-03-01", 0),  # also makes the data reach 2025-03-01
    "c10": (None, 0),
}


def _tables(extra: dict[str, str | None] | None = None) -> Tables:
    rows = {**{k: v[0] for k, v in CHURN.items()}, "c11": "2024-12-01", **(extra or {})}  # c11 churned before T
    df = pd.DataFrame({"customer_id": list(rows), "signup_date": "2024-01-01", "churn_date": list(rows.values())})
    return Tables(customers=validate_customers(df, [], None))


# -------------------------------------------------------------------------------- realized_outcomes


def test_realized_outcomes_labels_in_score_order() -> None:
    scores = pd.DataFrame({"customer_id": ["c08", "c01", "c04", "c03", "c02", "c05"], "churn_probability": 0.5})
    out = realized_outcomes(scores, _tables(), LABEL, T)
    assert out["churned"].tolist() == [1, 1, 0, 1, 0, 1]
    assert out["customer_id"].tolist() == scores["customer_id"].tolist()
    assert "churned" not in scores.columns  # input untouched


def test_realized_outcomes_horizon_not_over() -> None:
    scores = pd.DataFrame({"customer_id": ["c01"], "churn_probability": 0.5})
    # data ends 2025-03-01 (c09's churn date); cutoff 2025-02-15 + 30 days = 2025-03-17
    with pytest.raises(DataError, match=r"horizon not over yet: data ends 2025-03-01, need 2025-03-17") as exc:
        realized_outcomes(scores, _tables(), LABEL, pd.Timestamp("2025-02-15"))
    assert exc.value.table == "customers"
    assert isinstance(exc.value, HorizonNotOverError) and exc.value.exit_code == 75
    # exactly at the end of the data is fine: 2025-01-30 + 30 days = 2025-03-01
    realized_outcomes(scores, _tables(), LABEL, pd.Timestamp("2025-01-30"))


def test_realized_outcomes_unknown_customers() -> None:
    scores = pd.DataFrame({"customer_id": ["c01", "x1", "x2"], "churn_probability": 0.5})
    with pytest.raises(DataError, match=r"2 scored customer\(s\) are not in the customers table") as exc:
        realized_outcomes(scores, _tables(), LABEL, T)
    assert exc.value.count == 2 and "'x1'" in str(exc.value) and "pseudonymize_key" in str(exc.value)


def test_realized_outcomes_pseudonymised_ids() -> None:
    ids = pseudonymize(pd.Series(["c01", "c04"]), "secret")
    out = realized_outcomes(pd.DataFrame({"customer_id": ids, "churn_probability": 0.5}), _tables(), LABEL, T,
                            pseudonymize_key="secret")
    assert out["churned"].tolist() == [1, 0]


def test_realized_outcomes_inactivity_definition() -> None:
    cfg = LabelConfig(definition="inactivity", inactivity_days=10)
    cust = validate_customers(pd.DataFrame({"customer_id": ["a", "b", "c"], "signup_date": "2024-06-01"}), [], None)
    tx = pd.DataFrame({"customer_id": ["a", "b", "c", "c"], "amount": 1.0,
                       "timestamp": ["2024-12-30", "2025-01-11", "2025-01-12", "2025-01-20"]})
    tables = Tables(customers=cust, transactions=validate_child(tx, "transactions", cust, None))
    scores = pd.DataFrame({"customer_id": ["a", "b", "c"], "churn_probability": 0.5})
    # window (T, T + 10 days]: a no activity -> churned; b on day 10 -> stayed; c first seen on day 11 -> churned
    assert realized_outcomes(scores, tables, cfg, T)["churned"].tolist() == [1, 0, 1]
    with pytest.raises(DataError, match="need 2025-01-21"):  # data ends 2025-01-20
        realized_outcomes(scores, tables, cfg, pd.Timestamp("2025-01-11"))


# -------------------------------------------------------------------------------- intervals


def test_wilson_and_newcombe_match_published_values() -> None:
    # Newcombe (1998), Stat Med 17:857-872, 81/263: Wilson 0.2553 to 0.3662
    assert wilson_interval(81, 263) == pytest.approx((0.2553, 0.3662), abs=5e-5)
    # Newcombe (1998), Stat Med 17:873-890, method 10 (hybrid score) on his examples:
    assert newcombe_interval(56, 70, 48, 80) == pytest.approx((0.0524, 0.3339), abs=5e-5)
    assert newcombe_interval(9, 10, 3, 10) == pytest.approx((0.1705, 0.8090), abs=5e-5)
    assert newcombe_interval(5, 56, 0, 29) == pytest.approx((-0.0381, 0.1926), abs=5e-5)
    assert all(math.isnan(v) for v in newcombe_interval(1, 0, 1, 2))


def test_newcombe_by_hand_formula() -> None:
    # control 1/2 vs treated 0/2, z = 1.959964: Wilson(x, n) = (p + z²/2n ± z sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)
    z = 1.959963984540054
    def wilson(x: int, n: int) -> tuple[float, float]:
        p = x / n
        c, h = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
        return ((c - h) / (1 + z * z / n), (c + h) / (1 + z * z / n))
    (l1, u1), (l2, u2) = wilson(1, 2), wilson(0, 2)
    assert (l1, u1) == pytest.approx((0.094531, 0.905469), abs=1e-6)
    assert (l2, u2) == pytest.approx((0.0, 0.657620), abs=1e-6)
    # d = 0.5; L = d - sqrt((0.5 - l1)² + (u2 - 0)²), U = d + sqrt((u1 - 0.5)² + 0²)
    lo, hi = 0.5 - math.sqrt((0.5 - l1) ** 2 + u2 ** 2), 0.5 + (u1 - 0.5)
    assert (lo, hi) == pytest.approx((-0.272573, 0.905469), abs=1e-6)
    assert newcombe_interval(1, 2, 0, 2) == pytest.approx((lo, hi), abs=1e-12)


# -------------------------------------------------------------------------------- treatment_effect


def _ten_alerts() -> pd.DataFrame:
    #            A: 4 treated (1 churned), 2 control (2 churned), 1 not selected
    #            B: 2 treated (2 churned), 1 control (0 churned)
    return pd.DataFrame({
        "customer_id": [f"a{i}" for i in range(10)],
        "playbook_id": ["A"] * 7 + ["B"] * 3,
        "selected": [True] * 6 + [False] + [True] * 3,
        "control_group": [False] * 4 + [True, True, False] + [False, False, True],
        "churned": [1, 0, 0, 0, 1, 1, 1] + [1, 1, 0],
    })


def test_treatment_effect_counts_and_uplift_by_hand() -> None:
    te = treatment_effect(_ten_alerts())
    assert list(te.columns) == TREATMENT_COLUMNS
    assert te["playbook_id"].tolist() == ["A", "B", "ALL"]
    a, b, total = (te.iloc[i] for i in range(3))
    # A: treated 1/4 = 0.25, control 2/2 = 1.0, uplift 0.75; the unselected churner is ignored
    assert (a["n_treated"], a["n_control"], a["churned_treated"], a["churned_control"]) == (4, 2, 1, 2)
    assert (a["churn_treated"], a["churn_control"], a["uplift"]) == pytest.approx((0.25, 1.0, 0.75))
    # B: treated 2/2 = 1.0, control 0/1 = 0.0, uplift -1.0 (the playbook "hurt")
    assert (b["n_treated"], b["n_control"], b["uplift"]) == (2, 1, pytest.approx(-1.0))
    # ALL, weighted by treated customers (w_A = 4/6, w_B = 2/6): treated 4/6*.25 + 2/6*1 = 0.5,
    # control 4/6*1 + 2/6*0 = 2/3, uplift 1/6 (here equal to the raw pooling: control shares are equal)
    assert (total["n_treated"], total["n_control"], total["churned_treated"], total["churned_control"]) == (6, 3, 3, 2)
    assert (total["churn_treated"], total["churn_control"], total["uplift"]) == pytest.approx((0.5, 2 / 3, 1 / 6))
    # se = sqrt((4/6)^2 (.25*.75/4 + 0) + (2/6)^2 (0 + 0)) = 0.144338; z = 1.1547 -> two-sided p 0.2482
    se = math.sqrt((4 / 6) ** 2 * 0.25 * 0.75 / 4)
    assert (total["ci_low"], total["ci_high"]) == pytest.approx((1 / 6 - 1.959964 * se, 1 / 6 + 1.959964 * se))
    # Fisher exact by hand (hypergeometric, margins fixed):
    # A [[1,3],[2,0]]: P(k treated churners), k=1,2,3 -> 3/15, 9/15, 3/15; two-sided = P(k)<=0.2 -> 0.4
    # B [[2,0],[0,1]]: k=1,2 -> 2/3, 1/3; observed 1/3 -> 1/3
    # ALL: normal approximation of the weighted estimate (module docstring)
    assert te["p_value"].tolist() == pytest.approx([0.4, 1 / 3, 0.2482], abs=1e-4)
    assert not te["enough"].any()
    for _, r in te.iterrows():
        assert r["ci_low"] <= r["uplift"] <= r["ci_high"] and -1 <= r["ci_low"] and r["ci_high"] <= 1


def test_treatment_effect_ci_matches_newcombe_and_enough() -> None:
    # control 56/70 churned, treated 48/80 churned -> uplift 0.8 - 0.6 = 0.2, CI (0.0524, 0.3339)
    df = pd.DataFrame({"playbook_id": "P", "selected": True,
                       "control_group": [True] * 70 + [False] * 80,
                       "churned": [1] * 56 + [0] * 14 + [1] * 48 + [0] * 32})
    te = treatment_effect(df)
    row = te.iloc[0]
    assert (row["n_treated"], row["n_control"], row["uplift"]) == (80, 70, pytest.approx(0.2))
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((0.0524, 0.3339), abs=5e-5)
    assert row["ci_low"] < row["uplift"] < row["ci_high"]
    assert bool(row["enough"])
    assert te.iloc[1][TREATMENT_COLUMNS[1:]].tolist() == te.iloc[0][TREATMENT_COLUMNS[1:]].tolist()  # ALL = P


def test_treatment_effect_empty_group_and_custom_by() -> None:
    df = _ten_alerts().assign(control_group=False, segment=["x"] * 5 + ["y"] * 5)
    te = treatment_effect(df, by="segment")
    assert te["segment"].tolist() == ["x", "y", "ALL"]
    assert (te["n_control"] == 0).all() and te["uplift"].isna().all() and te["p_value"].isna().all()
    empty = treatment_effect(df.iloc[:0])
    assert empty["playbook_id"].tolist() == ["ALL"] and empty["n_treated"].tolist() == [0]
    with pytest.raises(DataError, match="churned"):
        treatment_effect(df.drop(columns="churned"))


# -------------------------------------------------------------------------------- evaluate_alerts end to end

# c01..c10: probability, risk tier, alerted? (playbook, selected, control)
RUN = [
    ("c01", 0.90, "high", ("A", True, False)),   # treated, churned
    ("c02", 0.80, "high", ("A", True, True)),    # control, stayed
    ("c03", 0.70, "high", ("A", True, True)),    # control, churned
    ("c04", 0.25, "medium", ("B", True, False)),  # treated, stayed
    ("c05", 0.20, "medium", ("B", False, False)),  # alerted, not selected, churned
    ("c06", 0.15, "medium", ("B", True, True)),  # control, stayed
    ("c07", 0.10, "low", None),
    ("c08", 0.05, "low", None),  # churned
    ("c09", 0.03, "low", None),
    ("c10", 0.01, "low", None),
]


def _write_run(folder: Path, horizon_days: int | None = 30, run: list = RUN) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    scores = pd.DataFrame({"customer_id": [r[0] for r in run], "cutoff": T,
                           "churn_probability": [r[1] for r in run], "risk_tier": [r[2] for r in run],
                           "model_name": "churn-xgb", "model_version": "3"})
    alerted = [r for r in run if r[3] is not None]
    alerts = pd.DataFrame({"rank": np.arange(1, len(alerted) + 1), "customer_id": [r[0] for r in alerted],
                           "cutoff": T, "churn_probability": [r[1] for r in alerted],
                           "risk_tier": [r[2] for r in alerted], "playbook_id": [r[3][0] for r in alerted],
                           "selected": [r[3][1] for r in alerted], "control_group": [r[3][2] for r in alerted]})
    scores.to_parquet(folder / "scores.parquet", index=False)
    alerts.to_parquet(folder / "alerts.parquet", index=False)
    (folder / "summary.json").write_text(json.dumps({"command": "score", "cutoff": "2025-01-01",
                                                     "horizon_days": horizon_days, "model_name": "churn-xgb",
                                                     "model_version": "3", "input_hash": "sha256:x"}))
    return folder


def test_evaluate_alerts_end_to_end(tmp_path: Path) -> None:
    res = evaluate_alerts(_write_run(tmp_path / "run"), _tables(), LABEL)
    assert (res["cutoff"], res["horizon_days"], res["model_version"], res["n_scored"]) == ("2025-01-01", 30, "3", 10)
    assert (res["n_alerts"], res["n_selected"], res["n_treated"], res["n_control"], res["n_untreated"]) == (6, 5, 2, 3, 8)
    assert res["realized_churn_rate"] == pytest.approx(0.4)  # c01, c03, c05, c08
    m = res["metrics"]
    # positives .9 .7 .2 .05 vs negatives .8 .25 .15 .1 .03 .01: pairs won 6 + 5 + 4 + 2 = 17 of 24
    assert m["roc_auc"] == pytest.approx(17 / 24)
    # Brier: .01+.64+.09+.0625+.64+.0225+.01+.9025+.0009+.0001 = 2.3785 over 10
    assert m["brier"] == pytest.approx(0.23785)
    assert set(m) >= {"roc_auc", "pr_auc", "log_loss", "brier", "ece"}
    # untreated (c01, c04 removed): positives .7 .2 .05 vs negatives .8 .15 .1 .03 .01: 4 + 4 + 2 = 10 of 15
    assert res["metrics_untreated"]["roc_auc"] == pytest.approx(10 / 15)
    assert res["metrics_untreated"]["n"] == 8
    # IPW: A's controls weigh 3/2, B's control 2/1, others 1. Positive weights c03 1.5, c05 1, c08 1 (3.5);
    # negative c02 1.5, c06 2, c07 1, c09 1, c10 1 (6.5). Won: 1.5*5 + 1*5 + 1*2 = 14.5 over 3.5*6.5
    ipw = res["metrics_untreated_ipw"]
    assert ipw["roc_auc"] == pytest.approx(14.5 / 22.75)
    assert ipw["base_rate"] == pytest.approx(0.35) and ipw["weight_total"] == pytest.approx(10.0)
    # alerts c01..c06, churned c01 c03 c05; high c01-c03: 2/3; medium c04-c06: 1/3; untreated c02 c03 c05 c06: 2/4
    ap = res["alert_precision"]
    assert (ap["n"], ap["churned"], ap["precision"]) == (6, 3, pytest.approx(0.5))
    assert list(ap["by_risk_tier"]) == ["high", "medium"]
    assert ap["by_risk_tier"]["high"]["precision"] == pytest.approx(2 / 3)
    assert ap["by_risk_tier"]["medium"]["precision"] == pytest.approx(1 / 3)
    assert ap["untreated"] == {"n": 4, "churned": 2, "precision": 0.5}
    # top 10 % = ceil(1) = c01 (churned): precision 1, lift 1 / 0.4 = 2.5, capture 1/4
    lift = res["lift_top10"]
    assert (lift["n_targeted"], lift["precision"], lift["lift"], lift["capture"]) == (1, 1.0, 2.5, 0.25)
    assert isinstance(lift["n_targeted"], int) and isinstance(lift["churners_caught"], int)
    assert sum(r["count"] for r in res["reliability"]) == 10
    # A: treated 1/1, control 1/2 -> uplift -0.5; B: treated 0/1, control 0/1 -> 0;
    # ALL weighted by treated (1 and 1): (-0.5 + 0) / 2 = -0.25 (raw pooling 1/2 vs 1/3 would say -1/6)
    te = {r["playbook_id"]: r for r in res["treatment_effect"]}
    assert list(te) == ["A", "B", "ALL"]
    assert (te["A"]["n_treated"], te["A"]["n_control"], te["A"]["uplift"]) == (1, 2, pytest.approx(-0.5))
    assert te["B"]["uplift"] == 0.0 and te["B"]["p_value"] == pytest.approx(1.0)
    assert te["ALL"]["uplift"] == pytest.approx(-0.25)
    notes = " ".join(res["notes"])
    assert "biased" in notes and "Newcombe" in notes and "Fisher" in notes and "not reliable" in notes
    json.dumps(res, allow_nan=False)  # strict JSON: no NaN left


def test_evaluate_alerts_uses_run_horizon_and_reports_inactive(tmp_path: Path) -> None:
    # the run's model was trained for 31 days: c04 (churned 2025-02-01) now counts; c11 churned before T
    run = [*RUN, ("c11", 0.5, "high", None)]
    res = evaluate_alerts(_write_run(tmp_path / "run", horizon_days=31, run=run), _tables(), LABEL)
    assert res["horizon_days"] == 31 and res["realized_churn_rate"] == pytest.approx(5 / 11)
    notes = " ".join(res["notes"])
    assert "31 days" in notes and "1 scored customer(s) were not active" in notes


def test_evaluate_alerts_errors(tmp_path: Path) -> None:
    with pytest.raises(InputNotFoundError):
        evaluate_alerts(tmp_path / "nope", _tables(), LABEL)
    run = _write_run(tmp_path / "run")
    (run / "alerts.parquet").unlink()
    with pytest.raises(InputNotFoundError, match="alerts.parquet"):
        evaluate_alerts(run, _tables(), LABEL)
    run = _write_run(tmp_path / "run2")
    short = Tables(customers=_tables().customers.assign(churn_date=pd.NaT))  # data ends at signup 2024-01-01
    with pytest.raises(DataError, match="horizon not over yet"):
        evaluate_alerts(run, short, LABEL)


def test_write_monitor_report(tmp_path: Path) -> None:
    res = evaluate_alerts(_write_run(tmp_path / "run"), _tables(), LABEL)
    paths = write_monitor_report(res, tmp_path / "out")
    assert [p.name for p in paths] == ["monitor.json", "treatment_effect.csv"] and all(p.is_file() for p in paths)
    assert json.loads(paths[0].read_text())["cutoff"] == "2025-01-01"
    csv = pd.read_csv(paths[1])
    assert list(csv.columns) == TREATMENT_COLUMNS and csv["playbook_id"].tolist() == ["A", "B", "ALL"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["monitor.json", "treatment_effect.csv"]


def test_monitor_sets_the_recorded_estimate_beside_the_realised_values(tmp_path: Path) -> None:
    run = _write_run(tmp_path / "run")
    summary = json.loads((run / "summary.json").read_text())
    summary["performance_estimate"] = {"roc_auc": {"estimate": 0.75, "low": 0.6, "high": 0.9},
                                       "precision_at_alert": {"estimate": 0.55, "low": 0.2, "high": 0.45},
                                       "churners_in_alerts": {"estimate": 3.3, "low": 1.0, "high": 5.0}}
    (run / "summary.json").write_text(json.dumps(summary))
    rows = {r["metric"]: r for r in evaluate_alerts(run, _tables(), LABEL)["estimate_vs_realized"]}
    assert rows["roc_auc"]["realized"] == pytest.approx(17 / 24)
    assert rows["roc_auc"]["error"] == pytest.approx(0.75 - 17 / 24) and rows["roc_auc"]["inside_interval"] is True
    assert rows["precision_at_alert"]["realized"] == pytest.approx(0.5)  # 3 of 6 alerts churned
    assert rows["precision_at_alert"]["inside_interval"] is False  # 0.5 is above the recorded 0.45
    assert (rows["churners_in_alerts"]["realized"], rows["churners_in_alerts"]["inside_interval"]) == (3, True)
    assert evaluate_alerts(_write_run(tmp_path / "old"), _tables(), LABEL)["estimate_vs_realized"] is None


def test_monitor_gives_the_realised_auc_sampling_error_and_calibration(tmp_path: Path) -> None:
    run = _write_run(tmp_path / "run")
    summary = json.loads((run / "summary.json").read_text())
    summary["performance_estimate"] = {"roc_auc": {"estimate": 0.75, "low": 0.6, "high": 0.9}}
    (run / "summary.json").write_text(json.dumps(summary))
    res = evaluate_alerts(run, _tables(), LABEL)
    auc = res["estimate_vs_realized"][0]
    # Hanley-McNeil with A = 17/24, 4 churners, 6 non-churners: Q1 = 17/31, Q2 = 2A^2 / (1 + A),
    # var = (A(1 - A) + 3 (Q1 - A^2) + 5 (Q2 - A^2)) / 24 = 0.032286 -> SE 0.17968
    assert auc["realized_se"] == pytest.approx(0.17968, abs=1e-5)
    assert auc["realized_ci95"] == [pytest.approx(17 / 24 - 1.96 * 0.17968, abs=1e-4), 1.0]  # capped at 1
    assert auc["estimate_inside_realized_ci95"] is True
    # calibration slope of the run's probabilities on its outcomes, as an (almost) unpenalised logistic regression
    from sklearn.linear_model import LogisticRegression

    p = np.array([r[1] for r in RUN])
    y = np.array([CHURN[r[0]][1] for r in RUN])
    lr = LogisticRegression(C=1e9).fit(np.log(p / (1 - p)).reshape(-1, 1), y)
    assert res["realized_calibration"]["slope"] == pytest.approx(lr.coef_[0, 0], rel=1e-3)
    assert (res["realized_calibration"]["n"], res["realized_calibration"]["churners"]) == (10, 4)


def test_pooled_effect_weighs_playbooks_by_treated_customers() -> None:
    # A: 10 treated (2 churn), 10 control (6 churn): uplift 0.4; B: 90 treated (45), 10 control (5): uplift 0
    # weighted by treated: 0.1*0.4 + 0.9*0 = 0.04; raw pooling (47/100 vs 11/20) would say 0.08
    df = pd.DataFrame({"playbook_id": ["A"] * 20 + ["B"] * 100, "selected": True,
                       "control_group": [False] * 10 + [True] * 10 + [False] * 90 + [True] * 10,
                       "churned": [1] * 2 + [0] * 8 + [1] * 6 + [0] * 4 + [1] * 45 + [0] * 45 + [1] * 5 + [0] * 5})
    total = treatment_effect(df).set_index("playbook_id").loc["ALL"]
    assert total["uplift"] == pytest.approx(0.04)
    assert (total["churn_treated"], total["churn_control"]) == pytest.approx((0.1 * 0.2 + 0.9 * 0.5, 0.1 * 0.6 + 0.9 * 0.5))
    assert total["ci_low"] < 0.04 < total["ci_high"]
