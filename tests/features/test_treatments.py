"""Campaign history (treatments table): loading, bad history named precisely, outcomes strictly after contact."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from churn.config import Config
from churn.errors import DataError
from features.contract import Tables, load_tables
from features.treatments import campaign_outcomes, check_history, history_from_alerts

CFG = Config.model_validate({
    "data": {"tables": {"customers": {"file": "customers"},
                        "treatments": {"file": "crm_contacts", "columns": {"group": "arm", "campaign_id": "wave"}}}},
    "label": {"definition": "churn_date", "horizon_days": 30}})
PLAYBOOKS = ["call", "email"]

CUSTOMERS = pd.DataFrame({
    "customer_id": ["A", "B", "C", "D", "E", "F"],
    "signup_date": ["2024-01-01"] * 6,
    "churn_date": ["2024-06-10", "2024-07-15", None, "2024-05-20", "2024-06-01", "2024-07-01"]})
CONTACTS = pd.DataFrame({
    "customer_id": ["A", "B", "C", "D", "E", "F"],
    "timestamp": ["2024-06-01 09:00"] * 6,
    "wave": ["june"] * 6,
    "playbook_id": ["call", "call", "email", "email", "call", "email"],
    "arm": ["treated", "control", "Treated", "treated", "control", "control"]})


def _load(tmp_path: Path, contacts: pd.DataFrame) -> Tables:
    d = tmp_path / "data"
    d.mkdir(exist_ok=True)
    CUSTOMERS.to_csv(d / "customers.csv", index=False)
    contacts.to_csv(d / "crm_contacts.csv", index=False)
    return load_tables(d, CFG)


def test_loads_mapped_columns_and_outcomes_are_strictly_after_the_contact(tmp_path: Path) -> None:
    t = _load(tmp_path, CONTACTS)
    tr = t.treatments
    assert tr is not None
    assert list(tr.columns) == ["customer_id", "_code", "timestamp", "campaign_id", "playbook_id", "group"]
    assert tr["group"].tolist() == ["treated", "control", "treated", "treated", "control", "control"]
    assert t.data_end == pd.Timestamp("2024-07-15")  # campaign history does not move the data's end
    out = campaign_outcomes(t, tr, CFG.label, t.data_end).set_index("customer_id")
    assert (out["cutoff"] == pd.Timestamp("2024-06-01")).all()
    # D churned before the contact, E at midnight of the contact day (before 09:00): not active, no outcome
    assert out["active"].to_dict() == {"A": True, "B": True, "C": True, "D": False, "E": False, "F": True}
    # A churned 9 days after (1); B 44 days after (0, outside 30); C never (0); F on day 30 (1, inclusive)
    assert out["churned"].to_dict() == pytest.approx({"A": 1.0, "B": 0.0, "C": 0.0, "D": np.nan, "E": np.nan,
                                                      "F": 1.0}, nan_ok=True)
    assert out["observed"].all()
    check_history(tr, PLAYBOOKS, pd.Timestamp("2024-08-01"))  # passes


def test_outcome_window_not_over_is_not_observed(tmp_path: Path) -> None:
    t = _load(tmp_path, CONTACTS)
    out = campaign_outcomes(t, t.treatments, CFG.label, pd.Timestamp("2024-06-20"))
    assert not out["observed"].any() and out["churned"].isna().all()


@pytest.mark.parametrize(("change", "column", "problem"), [
    ({"arm": ["treated", "maybe", "treated", "treated", "control", "control"]}, "group", "values must be one of"),
    ({"wave": ["june"] * 5 + [None]}, "campaign_id", "missing values"),
    ({"customer_id": ["A", "B", "C", "D", "E", "Z"]}, "customer_id", "not in the customers table"),
    ({"timestamp": ["2024-06-01 09:00"] * 5 + ["someday"]}, "timestamp", "unparseable dates"),
], ids=["bad-group", "no-campaign", "unknown-customer", "bad-time"])
def test_bad_rows_stop_at_load_naming_table_and_column(tmp_path: Path, change: dict, column: str,
                                                       problem: str) -> None:
    with pytest.raises(DataError, match=f"table 'treatments', column '{column}': .*{problem}"):
        _load(tmp_path, CONTACTS.assign(**change))


def test_customer_both_treated_and_control_in_one_campaign(tmp_path: Path) -> None:
    twice = pd.concat([CONTACTS, CONTACTS.iloc[[0]].assign(arm="control")], ignore_index=True)
    with pytest.raises(DataError, match="table 'treatments', column 'group': customers both treated and control"):
        _load(tmp_path, twice)
    again = pd.concat([CONTACTS, CONTACTS.iloc[[0]].assign(wave="july", timestamp="2024-07-01 09:00",
                                                          arm="control")], ignore_index=True)
    assert len(_load(tmp_path, again).treatments) == 7  # another campaign may hold the customer out


def test_history_checks_playbooks_cutoff_and_controls(tmp_path: Path) -> None:
    tr = _load(tmp_path, CONTACTS).treatments
    with pytest.raises(DataError, match="column 'playbook_id': unknown playbook ids"):
        check_history(tr, ["call"], pd.Timestamp("2024-08-01"))
    with pytest.raises(DataError, match="column 'timestamp': contacts at or after the cutoff 2024-06-01"):
        check_history(tr, PLAYBOOKS, pd.Timestamp("2024-06-01"))
    with pytest.raises(DataError, match="column 'group': no control rows at all"):
        check_history(tr[tr["group"] == "treated"], PLAYBOOKS, pd.Timestamp("2024-08-01"))


def test_scoring_run_contacts_become_history() -> None:
    alerts = pd.DataFrame({"customer_id": ["A", "B", "C"], "playbook_id": ["call", "email", "call"],
                           "selected": [True, True, False], "control_group": [False, True, False]})
    got = history_from_alerts(alerts, "retention-2026", pd.Timestamp("2026-01-02 09:00"))
    assert got.to_dict("list") == {"customer_id": ["A", "B"], "timestamp": [pd.Timestamp("2026-01-02 09:00")] * 2,
                                   "campaign_id": ["retention-2026"] * 2, "playbook_id": ["call", "email"],
                                   "group": ["treated", "control"]}
