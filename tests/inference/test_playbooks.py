"""Tests for playbook routing, playbooks-file validation and deterministic control groups."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from churn.errors import ConfigError, DataError
from inference.playbooks import (
    PLAYBOOK_COLUMNS,
    PlaybookBook,
    assign_control_group,
    assign_playbooks,
    control_draw,
    load_playbooks,
)

SHIPPED = Path(__file__).resolve().parents[2] / "configs" / "playbooks.yaml"


def _pb(id_: str, cost: float = 1.0, control_fraction: float | None = None) -> dict[str, Any]:
    return {
        "id": id_,
        "name": id_.title(),
        "action": f"do {id_}",
        "channel": "email",
        "owner": "Team",
        "sla_hours": 24,
        "cost_per_contact": cost,
        "kind": "preventive",
        "acceptance_rate": 0.1,
        **({"control_fraction": control_fraction} if control_fraction is not None else {}),
    }


BASE: dict[str, Any] = {
    "campaign": "test-campaign",
    "control_fraction": 0.1,
    "default_playbook": "fallback",
    "playbooks": [_pb("call", 50.0), _pb("nudge", 0.05), _pb("survey", 0.5), _pb("fallback", 0.1)],
    "rules": [
        {"id": "vip", "playbook": "call", "when": {"risk_tier": ["high"], "value_tier": ["platinum", "gold"]}},
        {"id": "unhappy", "playbook": "survey", "when": {"reason_families": ["sentiment"]}},
        {"id": "quiet", "playbook": "nudge", "when": {"reason_groups": ["logins", "sessions"]}},
        {"id": "likely", "playbook": "call", "when": {"min_probability": 0.8, "min_value_at_risk": 100.0}},
    ],
}


def _write(tmp_path: Path, cfg: dict[str, Any]) -> Path:
    path = tmp_path / "playbooks.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture
def book() -> PlaybookBook:
    return PlaybookBook.model_validate(BASE)


# ------------------------------------------------------------------------------------------ shipped config


def test_shipped_config_loads_and_every_playbook_is_reachable() -> None:
    book = load_playbooks(SHIPPED)
    routed = {r.playbook for r in book.rules} | {book.default_playbook}
    assert {p.id for p in book.playbooks} == routed
    assert 8 <= len(book.playbooks) <= 10
    assert all(0.05 <= p.cost_per_contact <= 150 for p in book.playbooks)
    assert book.playbook("exec-review").control_fraction == 0.05


def test_shipped_config_routes_high_value_to_people_and_low_value_to_automation() -> None:
    alerts = pd.DataFrame(
        {
            "customer_id": ["c1", "c2", "c3", "c4", "c5", "c6", "c7", "c8"],
            "risk_tier": ["high", "high", "high", "medium", "medium", "high", "high", "low"],
            "value_tier": ["platinum", "gold", "gold", "silver", "silver", "silver", "bronze", "platinum"],
            "lifecycle_stage": ["active", "active", "active", "new", "new", "active", "dormant", "active"],
            "churn_probability": [0.8, 0.7, 0.7, 0.4, 0.35, 0.59, 0.9, 0.1],
            "value_at_risk": [5000.0, 2500.0, 800.0, 300.0, 200.0, 150.0, 40.0, 900.0],
            "reason_families": [["behavioral"], ["sentiment"], ["sentiment"], ["value"], ["behavioral"],
                                ["behavioral"], ["behavioral", "value"], ["profile"]],
            "reason_groups": [["logins"], ["complaints"], ["complaints"], ["spend"], ["logins"],
                              ["sessions"], ["inactivity", "spend"], ["tenure"]],
        }
    )
    out = assign_playbooks(alerts, load_playbooks(SHIPPED))
    assert out["playbook_id"].tolist() == [
        "exec-review", "exec-review", "support-escalation", "billing-review",
        "onboarding-help", "reengage-nudge", "winback-discount", "auto-checkin",
    ]
    assert out["playbook_rule"].tolist() == [
        "platinum-save", "gold-high-exposure", "complaint-escalation", "billing-issues",
        "new-customer-onboarding", "engagement-nudge", "lapsing-winback", "default",
    ]
    assert out["playbook_cost"].tolist() == [120.0, 120.0, 45.0, 25.0, 20.0, 0.05, 4.5, 0.08]


# ------------------------------------------------------------------------------------------ routing


def test_assign_playbooks_first_match_wins_and_adds_all_columns(book: PlaybookBook) -> None:
    alerts = pd.DataFrame(
        {
            "customer_id": ["a", "b", "c", "d", "e", "f"],
            "risk_tier": ["high", "medium", "low", "low", "high", "medium"],
            "value_tier": ["gold", "gold", "bronze", "silver", "bronze", "silver"],
            "churn_probability": [0.9, 0.3, 0.2, 0.85, 0.95, 0.8],
            "value_at_risk": [900.0, 50.0, 10.0, 100.0, 99.99, 100.0],
            # a: vip beats unhappy and quiet (file order); b: any-of family match
            "reason_families": [["sentiment"], ["behavioral", "sentiment"], [], None, ["value"], ["profile"]],
            "reason_groups": [["logins"], ["logins"], ["sessions"], ["tenure"], ["spend"], ["plan"]],
        },
        index=[10, 11, 12, 13, 14, 15],
    )
    original = alerts.copy()
    out = assign_playbooks(alerts, book)
    assert out["playbook_id"].tolist() == ["call", "survey", "nudge", "call", "fallback", "call"]
    assert out["playbook_rule"].tolist() == ["vip", "unhappy", "quiet", "likely", "default", "likely"]
    assert list(out.columns) == list(alerts.columns) + list(PLAYBOOK_COLUMNS)
    assert out.index.tolist() == [10, 11, 12, 13, 14, 15]
    assert out.loc[10, "playbook_name"] == "Call"
    assert out["playbook_sla_hours"].dtype == np.float64
    assert out["playbook_acceptance_rate"].tolist() == [0.1] * 6
    pd.testing.assert_frame_equal(alerts, original)  # input untouched


def test_reordering_rules_changes_the_winner() -> None:
    cfg = copy.deepcopy(BASE)
    cfg["rules"] = [cfg["rules"][1], cfg["rules"][0]]  # unhappy before vip
    alerts = pd.DataFrame({"risk_tier": ["high"], "value_tier": ["gold"], "reason_families": [["sentiment"]]})
    out = assign_playbooks(alerts, PlaybookBook.model_validate(cfg))
    assert out[["playbook_id", "playbook_rule"]].values.tolist() == [["survey", "unhappy"]]


def test_list_cells_accept_arrays_strings_and_nulls(book: PlaybookBook) -> None:
    alerts = pd.DataFrame(
        {
            "risk_tier": ["low"] * 5,
            "value_tier": ["bronze"] * 5,
            "reason_families": [np.array(["sentiment"]), "sentiment", np.nan, [], ("value", "sentiment")],
        }
    )
    out = assign_playbooks(alerts, book)
    assert out["playbook_rule"].tolist() == ["unhappy", "unhappy", "default", "default", "unhappy"]


def test_missing_optional_columns_and_nan_thresholds_do_not_match(book: PlaybookBook) -> None:
    alerts = pd.DataFrame(
        {
            "risk_tier": ["low", "low", "high"],
            "value_tier": ["bronze", "bronze", "platinum"],
            "churn_probability": [0.9, np.nan, 0.99],
        }
    )
    # no reason columns, no value_at_risk: only 'vip' can match
    out = assign_playbooks(alerts, book)
    assert out["playbook_rule"].tolist() == ["default", "default", "vip"]


def test_empty_alerts_get_empty_playbook_columns(book: PlaybookBook) -> None:
    alerts = pd.DataFrame({"risk_tier": pd.Series([], dtype=str), "value_tier": pd.Series([], dtype=str)})
    out = assign_playbooks(alerts, book)
    assert len(out) == 0 and set(PLAYBOOK_COLUMNS) <= set(out.columns)


def test_missing_required_column_is_a_data_error(book: PlaybookBook) -> None:
    with pytest.raises(DataError, match="table 'alerts', column 'value_tier'"):
        assign_playbooks(pd.DataFrame({"risk_tier": ["high"]}), book)


def test_non_numeric_probability_is_a_data_error(book: PlaybookBook) -> None:
    alerts = pd.DataFrame({"risk_tier": ["low"], "value_tier": ["bronze"], "churn_probability": ["high"]})
    with pytest.raises(DataError, match="column 'churn_probability': non-numeric"):
        assign_playbooks(alerts, book)


# ------------------------------------------------------------------------------------------ validation


def _broken(change: str) -> dict[str, Any]:
    cfg = copy.deepcopy(BASE)
    if change == "unknown-playbook":
        cfg["rules"][0]["playbook"] = "exec-cal"
    elif change == "duplicate-playbook":
        cfg["playbooks"].append(_pb("nudge"))
    elif change == "duplicate-rule":
        cfg["rules"][2]["id"] = "vip"
    elif change == "diamond":
        cfg["rules"][0]["when"]["value_tier"] = ["gold", "diamond"]
    elif change == "typo":
        cfg["rules"][1]["playbok"] = cfg["rules"][1].pop("playbook")
    elif change == "negative-cost":
        cfg["playbooks"][1]["cost_per_contact"] = -1.0
    elif change == "bad-default":
        cfg["default_playbook"] = "nope"
    elif change == "unknown-family":
        cfg["rules"][1]["when"]["reason_families"] = ["mood"]
    elif change == "control-one":
        cfg["control_fraction"] = 1.0
    elif change == "no-playbooks":
        cfg["playbooks"] = []
    return cfg


INVALID = [
    ("unknown-playbook", r"rule 'vip' field 'playbook': unknown playbook 'exec-cal' \(known: call, nudge"),
    ("duplicate-playbook", r"playbook 'nudge' field 'id': duplicate id"),
    ("duplicate-rule", r"rule 'vip' field 'id': duplicate id"),
    ("diamond", r"rule 'vip' field 'when\.value_tier\[1\]': .*'diamond'"),
    ("typo", r"rule 'unhappy' field 'playbok': unknown field \(did you mean 'playbook'\?\)"),
    ("negative-cost", r"playbook 'nudge' field 'cost_per_contact': .*greater than or equal to 0"),
    ("bad-default", r"field 'default_playbook': unknown playbook 'nope'"),
    ("unknown-family", r"rule 'unhappy' field 'when\.reason_families\[0\]': .*'mood'"),
    ("control-one", r"field 'control_fraction': .*less than 1"),
    ("no-playbooks", r"field 'playbooks': .*at least 1 item"),
]


@pytest.mark.parametrize(("change", "message"), INVALID, ids=[change for change, _ in INVALID])
def test_invalid_config_names_file_entry_and_field(tmp_path: Path, change: str, message: str) -> None:
    path = _write(tmp_path, _broken(change))
    with pytest.raises(ConfigError, match=f"playbooks.yaml: {message}"):
        load_playbooks(path)


def test_yaml_syntax_error(tmp_path: Path) -> None:
    path = tmp_path / "playbooks.yaml"
    path.write_text("campaign: x\nplaybooks: [\n  - id: a\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"playbooks.yaml: invalid YAML"):
        load_playbooks(path)


def test_duplicate_yaml_key_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "playbooks.yaml"
    path.write_text("campaign: a\ncampaign: b\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"duplicate key 'campaign'"):
        load_playbooks(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nowhere\.yaml: playbooks file not found"):
        load_playbooks(tmp_path / "nowhere.yaml")


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "playbooks.yaml"
    path.write_text("- just\n- a list\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"expected a mapping"):
        load_playbooks(path)


def test_scalar_condition_is_shorthand_for_a_list(tmp_path: Path) -> None:
    cfg = copy.deepcopy(BASE)
    cfg["rules"][0]["when"]["value_tier"] = "gold"
    assert load_playbooks(_write(tmp_path, cfg)).rules[0].when.value_tier == ["gold"]


def test_playbook_lookup(book: PlaybookBook) -> None:
    assert book.playbook("nudge").cost_per_contact == 0.05
    with pytest.raises(KeyError, match=r"unknown playbook 'x' \(known: call, nudge, survey, fallback\)"):
        book.playbook("x")


# ------------------------------------------------------------------------------------------ control group


def test_control_draw_matches_the_documented_hash() -> None:
    import hashlib

    digest = hashlib.sha256(b"retention-2026:c42").digest()
    expected = int.from_bytes(digest[:8], "big") / 2**64
    draws = control_draw(pd.Series(["c42"], index=[7]), "retention-2026")
    assert draws.index.tolist() == [7]
    assert draws.iloc[0] == pytest.approx(expected, abs=1e-15)
    # ids read as floats hash like the integers they are
    assert control_draw(pd.Series([123.0]), "x").iloc[0] == control_draw(pd.Series([123]), "x").iloc[0]


def test_control_group_is_deterministic_and_order_independent(book: PlaybookBook) -> None:
    ids = [f"cust-{i}" for i in range(2000)]
    alerts = pd.DataFrame({"customer_id": ids, "playbook_id": ["nudge"] * 2000})
    first = assign_control_group(alerts, book)
    assert first.dtype == bool and first.index.equals(alerts.index)
    pd.testing.assert_series_equal(first, assign_control_group(alerts, book))
    shuffled = alerts.sample(frac=1.0, random_state=3)
    pd.testing.assert_series_equal(assign_control_group(shuffled, book).sort_index(), first)
    # a customer's status does not depend on the other rows
    assert assign_control_group(alerts.iloc[[5, 17]], book).tolist() == first.iloc[[5, 17]].tolist()


def test_control_fraction_close_to_configured_per_playbook() -> None:
    cfg = copy.deepcopy(BASE)
    cfg["playbooks"][0]["control_fraction"] = 0.05  # call overrides the default 0.10
    book = PlaybookBook.model_validate(cfg)
    n = 20_000
    alerts = pd.DataFrame(
        {"customer_id": np.arange(n), "playbook_id": np.where(np.arange(n) % 2 == 0, "call", "fallback")}
    )
    held = assign_control_group(alerts, book)
    by_playbook = held.groupby(alerts["playbook_id"]).mean()
    assert abs(by_playbook["call"] - 0.05) < 0.01
    assert abs(by_playbook["fallback"] - 0.10) < 0.01


def test_other_campaign_gives_a_different_draw() -> None:
    ids = pd.Series([f"c{i}" for i in range(1000)])
    a, b = control_draw(ids, "retention-2026"), control_draw(ids, "retention-2027")
    assert ((a < 0.1) != (b < 0.1)).sum() > 50
    assert np.corrcoef(a, b)[0, 1] < 0.1


def test_zero_fraction_holds_out_nobody() -> None:
    cfg = copy.deepcopy(BASE)
    cfg["control_fraction"] = 0.0
    book = PlaybookBook.model_validate(cfg)
    alerts = pd.DataFrame({"customer_id": np.arange(5000), "playbook_id": "fallback"})
    assert not assign_control_group(alerts, book).any()


def test_control_group_rejects_unknown_playbooks_and_null_ids(book: PlaybookBook) -> None:
    with pytest.raises(DataError, match=r"column 'playbook_id': unknown playbook ids"):
        assign_control_group(pd.DataFrame({"customer_id": ["a"], "playbook_id": ["ghost"]}), book)
    with pytest.raises(DataError, match=r"column 'customer_id': null customer ids"):
        assign_control_group(pd.DataFrame({"customer_id": ["a", None], "playbook_id": ["call", "call"]}), book)


# ------------------------------------------------------------------------------------------ configured value tiers
def test_rules_may_name_configured_value_tiers(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Value tier names come from the config (features.value_tiers), not from a list in this module."""
    cfg = copy.deepcopy(BASE)
    cfg["rules"][0]["when"]["value_tier"] = ["diamond"]
    path = _write(tmp_path, cfg)
    with pytest.raises(ConfigError, match=r"rule 'vip' field 'when\.value_tier\[0\]': .*'diamond' is not a value tier "
                                          r"\(configured tiers: platinum, gold, silver, bronze\)"):
        load_playbooks(path)
    book = load_playbooks(path, value_tiers=("diamond", "rest"))
    alerts = pd.DataFrame({"customer_id": ["a", "b", "c"], "risk_tier": ["high", "high", "low"],
                           "value_tier": ["diamond", "rest", "gold"]})
    with caplog.at_level("WARNING", logger="inference.playbooks"):
        out = assign_playbooks(alerts, book)
    assert out["playbook_rule"].tolist() == ["vip", "default", "default"]
    assert "outside ['diamond', 'rest']" in caplog.text  # 'gold' is not a tier of this config


def test_default_value_tiers_are_the_config_defaults() -> None:
    from churn.config import FeatureConfig
    from churn.vocab import DEFAULT_VALUE_TIERS

    assert tuple(t.name for t in FeatureConfig().value_tiers) == DEFAULT_VALUE_TIERS
# ------------------------------------------------------------------------------------------ early warnings and kind


def test_shipped_config_routes_early_warnings_preventively_and_winback_only_to_leavers() -> None:
    alerts = pd.DataFrame({
        "customer_id": ["e1", "e2", "e3", "e4", "e5"],
        "risk_tier": ["high", "medium", "high", "high", "high"],
        "value_tier": ["silver", "bronze", "bronze", "bronze", "bronze"],
        "lifecycle_stage": ["active", "at_risk", "at_risk", "lapsed", "active"],
        "reason_families": [["value"], ["value"], ["behavioral"], ["behavioral"], ["value"]],
        "reason_groups": [["spend"], ["spend"], ["activity"], ["activity"], ["spend"]],
        "early_warnings": [["complaints_over_3_flag"], ["purchase_drop_flag"], [], [], ["negative_text_recent_flag"]],
    })
    out = assign_playbooks(alerts, load_playbooks(SHIPPED))
    assert out["playbook_rule"].tolist() == ["complaints-over-3", "early-usage-or-purchase-drop", "engagement-nudge",
                                            "lapsing-winback", "negative-text-survey"]
    # the at-risk (still active, activity fell) customer e3 no longer gets the remedial win-back
    assert out["playbook_kind"].tolist() == ["preventive", "preventive", "preventive", "remedial", "preventive"]


def test_remedial_rule_falls_through_for_customers_who_have_not_left() -> None:
    cfg = copy.deepcopy(BASE)
    cfg["playbooks"][1]["kind"] = "remedial"  # nudge becomes a win-back
    cfg["remedial_stages"] = ["lapsed"]
    book = PlaybookBook.model_validate(cfg)
    alerts = pd.DataFrame({"customer_id": ["a", "b", "c"], "risk_tier": ["low"] * 3, "value_tier": ["bronze"] * 3,
                           "lifecycle_stage": ["active", "lapsed", None], "reason_groups": [["logins"]] * 3})
    out = assign_playbooks(alerts, book)
    assert out["playbook_id"].tolist() == ["fallback", "nudge", "fallback"]
    assert out["playbook_rule"].tolist() == ["default", "quiet", "default"]


def test_early_warning_condition_and_remedial_default_are_validated(tmp_path: Path) -> None:
    cfg = copy.deepcopy(BASE)
    cfg["rules"].insert(0, {"id": "drop", "playbook": "call", "when": {"early_warnings": "usage_low_flag"}})
    book = PlaybookBook.model_validate(cfg)
    alerts = pd.DataFrame({"customer_id": ["a", "b"], "risk_tier": ["low"] * 2, "value_tier": ["bronze"] * 2,
                           "early_warnings": [["purchase_drop_flag", "usage_low_flag"], ["purchase_drop_flag"]]})
    assert assign_playbooks(alerts, book)["playbook_rule"].tolist() == ["drop", "default"]
    cfg["rules"][0]["when"]["early_warnings"] = ["usage_drop"]
    with pytest.raises(ConfigError, match=r"rule 'drop' field 'when.early_warnings\[0\]'"):
        load_playbooks(_write(tmp_path, cfg))
    bad = copy.deepcopy(BASE)
    bad["playbooks"][3]["kind"] = "remedial"
    with pytest.raises(ConfigError, match="'fallback' is remedial"):
        load_playbooks(_write(tmp_path, bad))
