"""Batch scoring with the session's trained model: outputs, alert schema, playbooks, determinism, model URIs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from churn.config import resolve_path
from churn.errors import InputNotFoundError
from churn.io import hash_files
from features.contract import load_tables
from inference.alerts import ALERT_COLUMNS, RISK_ORDER
from inference.playbooks import DEFAULT_RULE, load_playbooks
from inference.score import score
from tests.conftest import MODEL_NAME, Store, active_customer_ids, run_cli, working_directory

AS_OF = pd.Timestamp("2026-01-01")  # the day after the demo data's last record
OUTPUTS = ["scores.parquet", "alerts.parquet", "alerts.csv", "alerts.jsonl", "report.html", "summary.json"]
DETERMINISTIC = ["alerts.parquet", "alerts.csv", "alerts.jsonl"]


@pytest.fixture(scope="module")
def runs(trained_store: Store, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Three scorings of the same inputs: API (champion alias), API again, CLI with an explicit version."""
    out = tmp_path_factory.mktemp("scoring")
    s = trained_store
    assert (s.tables.data_end + pd.Timedelta(days=1)).normalize() == AS_OF
    with working_directory(s.folder):
        first = score(s.tables, s.cfg, AS_OF, out / "first")
        again = score(load_tables(s.data_dir, s.cfg.data), s.cfg, AS_OF, out / "again")
        cli = run_cli(["score", "--config", s.config_path, "--data", s.data_dir, "--as-of", "2026-01-01",
                       "--out", out / "v1", "--model", f"models:/{MODEL_NAME}/1"])
    return {"dir": out, "first": first, "again": again, "cli": cli}


@pytest.fixture(scope="module")
def alerts(runs: dict[str, Any]) -> pd.DataFrame:
    return pd.read_parquet(runs["dir"] / "first" / "alerts.parquet")


@pytest.fixture(scope="module")
def scores(runs: dict[str, Any]) -> pd.DataFrame:
    return pd.read_parquet(runs["dir"] / "first" / "scores.parquet")


def test_outputs_and_summary(runs: dict[str, Any], trained_store: Store) -> None:
    d = runs["dir"] / "first"
    for name in OUTPUTS:
        assert (d / name).is_file(), name
    assert not [p.name for p in d.iterdir() if p.name.startswith(".")], "no staging leftovers"
    summary = json.loads((d / "summary.json").read_text())
    assert summary["model_version"] == "1"
    assert summary["model_uri"] == f"models:/{MODEL_NAME}@champion"
    assert summary["cutoff"] == "2026-01-01"
    assert summary["input_hash"] == trained_store.tables.input_hash == hash_files(trained_store.tables.files)
    assert summary["input_hash"].startswith("sha256:")
    assert summary["n_alerts"] == len(pd.read_parquet(d / "alerts.parquet"))
    for key in ("run_id", "n_scored", "n_alerts", "n_selected", "n_control", "cutoff"):
        assert summary[key] == runs["first"][key], key  # the file says what the function returned
    assert "<html" in (d / "report.html").read_text(encoding="utf-8").lower()


def test_every_active_customer_is_scored_once(scores: pd.DataFrame, demo_customers: pd.DataFrame,
                                              runs: dict[str, Any]) -> None:
    expected = active_customer_ids(demo_customers, AS_OF)
    assert len(expected) > 100
    assert scores["customer_id"].is_unique
    assert set(scores["customer_id"]) == expected
    assert runs["first"]["n_scored"] == len(expected)
    assert (scores["cutoff"] == AS_OF).all()
    p = scores["churn_probability"].to_numpy()
    assert np.all((p >= 0) & (p <= 1))
    tier = np.where(p >= 0.30, "high", np.where(p >= 0.12, "medium", "low"))  # configs/default.yaml thresholds
    assert scores["risk_tier"].tolist() == tier.tolist()
    np.testing.assert_allclose(scores["value_at_risk"], p * scores["lifetime_value"])
    assert (scores["model_version"] == "1").all() and (scores["model_name"] == MODEL_NAME).all()


def test_alerts_schema_and_population(alerts: pd.DataFrame, scores: pd.DataFrame) -> None:
    assert len(alerts) > 0, "the tiny demo should still raise some alerts"
    cols = list(ALERT_COLUMNS)
    assert list(alerts.columns[: len(cols)]) == cols
    # every customer at or above the minimum tier (medium) is alerted, once; anyone else listed is a chosen
    # contact from the rest of the scored customers (scoring.contact_pool: scored; issue 17)
    at_risk = set(scores.loc[scores["risk_tier"].map(RISK_ORDER) >= RISK_ORDER["medium"], "customer_id"])
    assert alerts["customer_id"].is_unique
    assert set(alerts["customer_id"]) >= at_risk
    assert alerts.loc[~alerts["customer_id"].isin(at_risk), "selected"].all()
    # each row says which of the two it is
    assert (alerts["alert_kind"] == np.where(alerts["customer_id"].isin(at_risk), "at_risk", "chosen_contact")).all()
    assert alerts["rank"].tolist() == list(range(1, len(alerts) + 1))
    # selected ones first, each part by expected net value
    sel = alerts["selected"].to_numpy()
    assert not np.any(np.diff(sel.astype(int)) > 0), "a selected alert ranked below an unselected one"
    assert (alerts.loc[alerts["selected"], "expected_net_value"] > 0).all()


def test_every_alert_has_one_playbook_and_a_rule(alerts: pd.DataFrame) -> None:
    book = load_playbooks(resolve_path("configs/playbooks.yaml"))
    playbooks = {p.id: p for p in book.playbooks}
    rules = {r.id: r.playbook for r in book.rules}
    for rec in alerts.to_dict("records"):
        pid, rule = rec["playbook_id"], rec["playbook_rule"]
        assert isinstance(pid, str) and pid in playbooks
        assert isinstance(rule, str) and (rule in rules or rule == DEFAULT_RULE)
        assert pid == (rules[rule] if rule != DEFAULT_RULE else book.default_playbook)
        assert rec["playbook_name"] == playbooks[pid].name
        assert rec["playbook_cost"] == playbooks[pid].cost_per_contact
    at_risk = alerts["risk_tier"].map(RISK_ORDER) >= RISK_ORDER["medium"]
    assert alerts.loc[at_risk, "reason_1"].str.len().gt(0).all(), "every at-risk alert explains its top reason"
    # chosen contacts from the rest of the scored customers are not explained; their decision says why they are listed
    assert alerts.loc[~at_risk, "decision"].str.match(r"^(contact|control)").all()


def test_control_group_is_a_subset_of_selected(alerts: pd.DataFrame, runs: dict[str, Any]) -> None:
    control = alerts["control_group"].to_numpy()
    assert not np.any(control & ~alerts["selected"].to_numpy())
    assert runs["first"]["n_control"] == int(control.sum())
    assert runs["first"]["n_selected"] == int(alerts["selected"].sum())


def test_flat_outputs_match_parquet(alerts: pd.DataFrame, runs: dict[str, Any]) -> None:
    d = runs["dir"] / "first"
    csv = pd.read_csv(d / "alerts.csv")
    lines = (d / "alerts.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(csv) == len(lines) == len(alerts)
    assert csv["customer_id"].tolist() == alerts["customer_id"].tolist()
    first = json.loads(lines[0])
    assert first["customer_id"] == alerts["customer_id"].iloc[0]
    assert first["cutoff"] == "2026-01-01"
    assert isinstance(first["reasons"], list) and first["reasons"]


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_scoring_twice_gives_byte_identical_alerts(runs: dict[str, Any], name: str) -> None:
    a = (runs["dir"] / "first" / name).read_bytes()
    b = (runs["dir"] / "again" / name).read_bytes()
    assert a == b, f"{name} differs between two runs on the same inputs"


def test_cli_score_with_explicit_version(runs: dict[str, Any]) -> None:
    res = runs["cli"]
    assert res.exit_code == 0, res.output
    d = runs["dir"] / "v1"
    summary = json.loads((d / "summary.json").read_text())
    assert summary["model_uri"] == f"models:/{MODEL_NAME}/1"
    assert summary["model_version"] == "1" and summary["model_alias"] is None
    # version 1 is the champion: same alerts, byte for byte
    for name in DETERMINISTIC:
        assert (d / name).read_bytes() == (runs["dir"] / "first" / name).read_bytes(), name


def test_missing_model_version(in_store: Store, tmp_path: Path) -> None:
    with pytest.raises(InputNotFoundError, match="not found"):
        score(in_store.tables, in_store.cfg, AS_OF, tmp_path / "api", model_uri=f"models:/{MODEL_NAME}/99")
    assert not (tmp_path / "api").exists()


@pytest.mark.parametrize("uri", [f"models:/{MODEL_NAME}/99", f"models:/{MODEL_NAME}@nosuchalias", "models:/nobody/1",
                                 f"models:/{MODEL_NAME}", "/no/such/model/dir"])
def test_cli_missing_model_exits_66(uri: str, in_store: Store, tmp_path: Path) -> None:
    res = run_cli(["score", "--config", in_store.config_path, "--data", in_store.data_dir,
                   "--out", tmp_path / "cli", "--model", uri])
    assert res.exit_code == 66, res.output
    assert uri in res.output and "unexpected" not in res.output
    assert not (tmp_path / "cli").exists()


def test_no_registered_model_under_that_name(in_store: Store, tmp_path: Path) -> None:
    cfg = in_store.cfg.model_copy(update={"mlflow": in_store.cfg.mlflow.model_copy(update={"model_name": "nobody"})})
    with pytest.raises(InputNotFoundError, match="no model 'nobody' with alias 'champion'") as info:
        score(in_store.tables, cfg, AS_OF, tmp_path / "out")
    assert info.value.exit_code == 66
    assert not (tmp_path / "out").exists()


def test_explain_all_gives_the_same_alerts(in_store: Store, runs: dict[str, Any], tmp_path: Path) -> None:
    # explaining everyone (for the report) must not change any alert: SHAP rows are independent
    score(in_store.tables, in_store.cfg, AS_OF, tmp_path / "all", explain_all=True, log_to_mlflow=False)
    for name in DETERMINISTIC:
        assert (tmp_path / "all" / name).read_bytes() == (runs["dir"] / "first" / name).read_bytes(), name


def test_no_alerts_still_writes_every_output(in_store: Store, tmp_path: Path) -> None:
    from churn.config import RiskTiers

    # isotonic calibration clips at 1 - 1e-6, so nobody reaches these tiers
    scoring = in_store.cfg.scoring.model_copy(update={"risk_tiers": RiskTiers(high=0.9999999, medium=0.9999998),
                                                      "alert_min_tier": "high", "contact_pool": "alerts"})
    cfg = in_store.cfg.model_copy(update={"scoring": scoring})
    summary = score(in_store.tables, cfg, AS_OF, tmp_path / "none", log_to_mlflow=False)
    assert summary["n_alerts"] == summary["n_selected"] == summary["n_control"] == 0
    assert summary["n_scored"] > 0
    for name in OUTPUTS:
        assert (tmp_path / "none" / name).is_file(), name
    alerts = pd.read_parquet(tmp_path / "none" / "alerts.parquet")
    assert len(alerts) == 0
    assert list(alerts.columns[: len(ALERT_COLUMNS)]) == list(ALERT_COLUMNS)
    assert (tmp_path / "none" / "alerts.jsonl").read_text() == ""


def test_pseudonymized_outputs_carry_no_raw_ids(in_store: Store, scores: pd.DataFrame, tmp_path: Path) -> None:
    from inference.alerts import pseudonymize

    scoring = in_store.cfg.scoring.model_copy(update={"pseudonymize_key": "test-key"})
    cfg = in_store.cfg.model_copy(update={"scoring": scoring})
    d = tmp_path / "pseudo"
    score(in_store.tables, cfg, AS_OF, d, log_to_mlflow=False)
    pseudo_scores = pd.read_parquet(d / "scores.parquet")
    raw_ids = scores["customer_id"]
    assert pseudo_scores["customer_id"].tolist() == pseudonymize(raw_ids, "test-key").tolist()
    for name in ("alerts.csv", "alerts.jsonl", "report.html"):
        text = (d / name).read_text(encoding="utf-8")
        leaked = [c for c in raw_ids if c in text]
        assert not leaked, f"{name} contains raw customer ids, e.g. {leaked[:3]}"


def test_cli_refuses_a_pickled_model_folder_without_running_it(in_store: Store, tmp_path: Path) -> None:
    """Issue 9: a crafted model folder (pyfunc pickle whose payload touches a file) never runs on scoring."""
    from model.registry import load_churn_model
    from tests.model.test_artifact import pickled_pyfunc_folder

    marker = tmp_path / "pwned"
    folder = pickled_pyfunc_folder(tmp_path, marker, load_churn_model(f"models:/{MODEL_NAME}@champion"))
    res = run_cli(["score", "--config", in_store.config_path, "--data", in_store.data_dir,
                   "--out", tmp_path / "cli", "--model", folder])
    assert res.exit_code == 65, res.output
    assert "refused" in res.output and "python_model.pkl" in res.output and "retrain it with this version" in res.output
    assert not marker.exists()
    assert not (tmp_path / "cli").exists()


def test_legacy_pickled_registration_is_refused_with_a_migration_message(in_store: Store, tmp_path: Path) -> None:
    """A registry version that points at a pickled pyfunc folder (as older versions registered) is refused."""
    import mlflow

    from model.artifact import ModelFormatError
    from model.registry import load_churn_model, register
    from tests.model.test_artifact import pickled_pyfunc_folder

    marker = tmp_path / "pwned"
    folder = pickled_pyfunc_folder(tmp_path, marker, load_churn_model(f"models:/{MODEL_NAME}@champion"))
    with mlflow.start_run(run_name="legacy-pyfunc") as run:
        mlflow.log_artifacts(str(folder), artifact_path="model")
    reg = register(f"runs:/{run.info.run_id}/model", run.info.run_id, "legacy-pyfunc", tags={})
    with pytest.raises(ModelFormatError, match="retrain it with this version") as info:
        load_churn_model(reg["model_uri"])
    assert info.value.exit_code == 65
    assert not marker.exists()


def test_score_from_a_model_folder_gives_the_registry_alerts(in_store: Store, runs: dict[str, Any],
                                                              tmp_path: Path) -> None:
    """``--model DIR``: a folder written by ChurnModel.save scores exactly like the registered version."""
    from model.registry import load_churn_model

    folder = load_churn_model(f"models:/{MODEL_NAME}/1").save(tmp_path / "exported")
    res = run_cli(["score", "--config", in_store.config_path, "--data", in_store.data_dir, "--as-of", "2026-01-01",
                   "--out", tmp_path / "out", "--model", folder])
    assert res.exit_code == 0, res.output
    got = pd.read_parquet(tmp_path / "out" / "alerts.parquet")
    want = pd.read_parquet(runs["dir"] / "first" / "alerts.parquet")
    assert set(got["model_version"]) == {str(folder)}  # no registry version: the folder names the model
    pd.testing.assert_frame_equal(got.drop(columns="model_version"), want.drop(columns="model_version"))


# --------------------------------------------------------------------------- issue 16: the report and the log agree with the files

def test_demo_report_filters_to_a_playbook_in_headless_chromium(runs: dict[str, Any], alerts: pd.DataFrame) -> None:
    import re
    from urllib.parse import quote

    from tests.inference.test_report import _detail, _dom, _shown_count

    report = runs["dir"] / "first" / "report.html"
    name = alerts["playbook_name"].value_counts().index[-1]  # the rarest playbook: a count that differs from all
    pick = alerts[alerts["playbook_name"] == name].iloc[0]
    dom = _dom(report, f"playbook={quote(name)}&customer={quote(str(pick['customer_id']))}")
    assert _shown_count(dom) == int((alerts["playbook_name"] == name).sum())
    assert len(re.findall(r"<tr data-id=", dom)) == len(alerts)  # every alert is in the page, filtered or not
    detail = _detail(dom)
    assert str(pick["customer_id"]) in detail and str(pick["playbook_rule"]) in detail
    assert f"Act within</dt><dd>{pick['playbook_sla_hours']:g} h" in detail
    control = alerts["control_group"].astype(bool)
    selected = alerts["selected"].astype(bool)
    by_action = {"control": control, "contact": selected & ~control, "not_selected": ~selected & ~control}
    present = {a: rows for a, rows in by_action.items() if rows.any()}  # the page offers only actions present
    for action, rows in present.items():
        assert _shown_count(_dom(report, f"action={action}")) == int(rows.sum())


def test_log_files_and_report_agree_on_control_count_and_name_the_final_path(
        in_store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import re

    with caplog.at_level("INFO"):
        summary = score(in_store.tables, in_store.cfg, AS_OF, tmp_path / "out", log_to_mlflow=False)
    text = "\n".join(r.getMessage() for r in caplog.records)
    files = pd.read_parquet(tmp_path / "out" / "alerts.parquet")
    n_control, n_selected = int(files["control_group"].sum()), int(files["selected"].sum())
    n_risk = int((files["alert_kind"] == "at_risk").sum())
    assert (f"control group: {n_control} of {n_selected} selected alerts held out ({len(files)} alerts in all: "
            f"{n_risk} at risk, {len(files) - n_risk} chosen contacts below the alert tier)") in text
    assert summary["n_control"] == n_control
    html = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    kpi = re.search(r'Control group</div><div class="value">([\d,]+)<', html)
    assert kpi and int(kpi.group(1).replace(",", "")) == n_control
    assert ".staging-" not in text and str(tmp_path / "out" / "report.html") in text
    for step in ("building features at cutoff", "explaining", "rendering the report"):
        assert step in text
    assert summary["model_card"]["version"] == "1" and summary["currency"] == "EUR"
    assert summary["model_card"]["metrics"]["test_roc_auc"] > 0.5
def test_control_group_does_not_depend_on_pseudonymisation(in_store: Store, alerts: pd.DataFrame,
                                                            tmp_path: Path) -> None:
    from inference.alerts import pseudonymize

    # effect_weight 0: the priors decide (every contact helps), so the run selects and holds out customers;
    # on this small demo the uplift model's pessimistic estimates say no contact pays (issue 17's world)
    up = in_store.cfg.training.uplift.model_copy(update={"effect_weight": 0.0})
    cfg = in_store.cfg.model_copy(update={"training": in_store.cfg.training.model_copy(update={"uplift": up})})
    score(in_store.tables, cfg, AS_OF, tmp_path / "plain", log_to_mlflow=False)
    scoring = cfg.scoring.model_copy(update={"pseudonymize_key": "another-key"})
    score(in_store.tables, cfg.model_copy(update={"scoring": scoring}), AS_OF, tmp_path / "pseudo", log_to_mlflow=False)
    pseudo = pd.read_parquet(tmp_path / "pseudo" / "alerts.parquet").set_index("customer_id")
    plain = pd.read_parquet(tmp_path / "plain" / "alerts.parquet")
    plain = plain.assign(customer_id=pseudonymize(plain["customer_id"], "another-key")).set_index("customer_id")
    assert plain["control_group"].sum() > 0
    pd.testing.assert_series_equal(pseudo["control_group"].sort_index(), plain["control_group"].sort_index())
    pd.testing.assert_series_equal(pseudo["playbook_id"].sort_index(), plain["playbook_id"].sort_index())


def test_summary_and_report_show_decisions_per_value_tier(runs: dict[str, Any], alerts: pd.DataFrame) -> None:
    d = runs["dir"] / "first"
    decisions = json.loads((d / "summary.json").read_text())["decisions"]
    assert decisions["effects_source"] in ("uplift", "priors")
    if decisions["effects_source"] == "priors":
        assert decisions["notes"] and "prior" in decisions["notes"][0]
    tiers = decisions["by_value_tier"]
    assert set(alerts["value_tier"]) <= set(tiers)  # decisions cover the contact pool, a superset of the alerts
    contacted = alerts[alerts["selected"]].groupby("value_tier").size().to_dict()
    assert {t: v["contacted"] for t, v in tiers.items() if v["contacted"]} == contacted
    assert decisions["spend_selected"] == pytest.approx(alerts.loc[alerts["selected"], "playbook_cost"].sum(), abs=0.01)
    ranked = decisions["risk_ranked_same_spend"]
    assert sum(v["spent"] for v in ranked.values()) <= decisions["spend_selected"] + 0.01
    assert "Decisions by value tier" in (d / "report.html").read_text(encoding="utf-8")
    # every alert says why it is or is not contacted
    assert alerts["decision"].str.match(r"^(contact|control|no playbook pays|budget)").all()
