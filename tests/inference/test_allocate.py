"""Allocation by expected incremental value: eligibility, the multiple-choice knapsack, decisions, controls."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pandas as pd
import pytest

from churn.config import Economics
from inference import allocate as alloc
from inference.allocate import allocate, choose_options
from inference.playbooks import PlaybookBook, eligible_playbooks


def _pb(id_: str, cost: float, acceptance: float) -> dict[str, Any]:
    return {"id": id_, "name": id_.title(), "action": f"do {id_}", "channel": "email", "owner": "Team",
            "sla_hours": 24, "cost_per_contact": cost, "kind": "preventive", "acceptance_rate": acceptance}


BOOK = PlaybookBook.model_validate({
    "campaign": "c", "control_fraction": 0.0, "default_playbook": "email",
    "playbooks": [_pb("exec", 100.0, 0.4), _pb("survey", 0.5, 0.02), _pb("email", 1.0, 0.05)],
    "rules": [{"id": "vip", "playbook": "exec", "when": {"value_tier": ["platinum"]}},
              {"id": "unhappy", "playbook": "survey", "when": {"reason_families": ["sentiment"]}},
              {"id": "vip-mail", "playbook": "email", "when": {"value_tier": ["platinum"]}}],
})
ECON = Economics(incentive_cost=0.0)

# value = P x acceptance x CLV - cost (incentive 0):
#   A platinum p .5 clv 1000: exec .5*.4*1000-100 = 100 ; email .5*.05*1000-1 = 24
#   B platinum p .2 clv 600 : exec .2*.4*600-100 = -52  ; email .2*.05*600-1 = 5
#   C bronze   p .1 clv 100 : survey .1*.02*100-.5 = -0.3 ; email .1*.05*100-1 = -0.5
ALERTS = pd.DataFrame({
    "customer_id": ["A", "B", "C"], "risk_tier": ["high", "medium", "medium"],
    "value_tier": ["platinum", "platinum", "bronze"], "churn_probability": [0.5, 0.2, 0.1],
    "lifetime_value": [1000.0, 600.0, 100.0], "value_at_risk": [500.0, 120.0, 10.0],
    "reason_families": [["behavioral"], ["value"], ["sentiment"]], "reason_groups": [[], [], []]})


def test_eligible_playbooks_lists_every_rule_match_and_the_default() -> None:
    got = eligible_playbooks(ALERTS, BOOK)
    assert got.to_dict("list") == {"row": [0, 0, 1, 1, 2, 2], "playbook_id": ["exec", "email", "exec", "email",
                                                                               "survey", "email"],
                                   "playbook_rule": ["vip", "vip-mail", "vip", "vip-mail", "unhappy", "default"]}


@pytest.mark.parametrize(("budget", "expected"), [
    (None, {"A": "exec", "B": "email"}),
    (1e9, {"A": "exec", "B": "email"}),
    (101.0, {"A": "exec", "B": "email"}),
    (100.5, {"A": "exec"}),            # exec alone (100) beats email + email (29)
    (99.0, {"A": "email", "B": "email"}),
    (1.5, {"A": "email"}),
    (0.5, {}),
], ids=["no-budget", "huge", "fits", "exec-alone", "cheaper-option", "one-email", "nothing-fits"])
def test_allocate_chooses_the_best_set_under_the_budget(budget: float | None, expected: dict[str, str]) -> None:
    out = allocate(ALERTS, BOOK, ECON, budget)
    chosen = out.loc[out["selected"], ["customer_id", "playbook_id"]]
    assert dict(zip(chosen["customer_id"], chosen["playbook_id"], strict=True)) == expected
    if budget is not None:
        assert out.loc[out["selected"], "playbook_cost"].sum() <= budget


def test_allocate_explains_each_decision_and_the_runner_up() -> None:
    out = allocate(ALERTS, BOOK, ECON, 99.0).set_index("customer_id")
    assert out.loc["A", "playbook_id"] == "email" and out.loc["A", "runner_up_playbook"] == "exec"
    assert out.loc["A", "runner_up_value"] == pytest.approx(100.0)
    assert out.loc["A", "expected_net_value"] == pytest.approx(24.0)
    assert out.loc["A", "estimated_effect"] == pytest.approx(-0.025)
    assert out.loc["B", "runner_up_playbook"] == "exec" and out.loc["B", "runner_up_value"] == pytest.approx(-52.0)
    assert out.loc["A", "decision"] == "contact: email (+24.00 expected)"
    assert out.loc["C", "decision"] == "no playbook pays: best is survey at -0.30"
    assert out.loc["C", "playbook_rule"] == "unhappy" and out.loc["C", "runner_up_playbook"] == "email"
    assert set(out["effect_source"]) == {"prior"}
    budget = allocate(ALERTS, BOOK, ECON, 0.5).set_index("customer_id")
    assert budget.loc["A", "decision"] == "budget: exec (+100.00 for 100.00) did not fit"


def test_uplift_effects_replace_the_priors_where_given() -> None:
    # B is a sleeping dog for email (+0.05: contact raises churn) -> nothing pays for B;
    # A's exec estimate -0.3 -> 0.3*1000-100 = 200
    effects = pd.DataFrame({"exec": [-0.3, np.nan, np.nan], "email": [np.nan, 0.05, np.nan]}, index=ALERTS.index)
    out = allocate(ALERTS, BOOK, ECON, None, effects=effects).set_index("customer_id")
    assert out.loc["A", "expected_net_value"] == pytest.approx(200.0) and out.loc["A", "effect_source"] == "uplift"
    assert not out.loc["B", "selected"]
    assert out.loc["B", "decision"] == "no playbook pays: best is email at -31.00"  # -0.05*600 - 1
    assert out.loc["C", "effect_source"] == "prior"
    # shrunk halfway to the prior (-0.5 x 0.4 = -0.2): effect -0.25 -> 0.25*1000 - 100 = 150
    half = allocate(ALERTS, BOOK, ECON, None, effects=effects, effect_weight=0.5).set_index("customer_id")
    assert half.loc["A", "estimated_effect"] == pytest.approx(-0.25)
    assert half.loc["A", "expected_net_value"] == pytest.approx(150.0)


def _brute_force(row: np.ndarray, value: np.ndarray, cost: np.ndarray, n: int, budget: float) -> float:
    per_row = [[-1, *np.flatnonzero(row == r).tolist()] for r in range(n)]
    best = 0.0
    for pick in itertools.product(*per_row):
        idx = [i for i in pick if i >= 0]
        if cost[idx].sum() <= budget + 1e-9:
            best = max(best, float(value[idx].sum()))
    return best


@pytest.mark.parametrize("seed", range(6))
def test_knapsack_dp_is_exact_and_lp_greedy_is_feasible_and_close(seed: int,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(seed)
    n = 5
    row = np.repeat(np.arange(n), 3)
    value = np.round(rng.normal(5, 6, len(row)), 2)
    cost = np.round(rng.integers(1, 900, len(row)) / 100, 2)
    budget = float(np.round(cost.sum() / 4, 2))
    optimum = _brute_force(row, value, cost, n, budget)

    def total(pick: np.ndarray) -> tuple[float, float]:
        idx = pick[pick >= 0]
        assert len(set(row[idx].tolist())) == len(idx) and (value[idx] > 0).all()
        return float(value[idx].sum()), float(cost[idx].sum())

    got, spent = total(choose_options(row, value, cost, n, budget))
    assert got == pytest.approx(optimum) and spent <= budget + 1e-9
    monkeypatch.setattr(alloc, "DP_MAX_CELLS", 0)
    approx, spent = total(choose_options(row, value, cost, n, budget))
    assert spent <= budget + 1e-9 and approx <= optimum + 1e-9
    assert approx >= optimum - value.max()  # within one item of the LP bound


def test_lp_greedy_takes_free_options_and_upgrades_in_hull_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(alloc, "DP_MAX_CELLS", 0)
    # row 0: free option worth 1, option cost 10 worth 30 (upgrade 29/10); row 1: cost 5 worth 20 (4/unit)
    row, value, cost = np.array([0, 0, 1]), np.array([1.0, 30.0, 20.0]), np.array([0.0, 10.0, 5.0])
    assert choose_options(row, value, cost, 2, 12.0).tolist() == [0, 2]   # row 1 first, then upgrade won't fit
    assert choose_options(row, value, cost, 2, 15.0).tolist() == [1, 2]
    assert choose_options(row, value, cost, 2, 0.0).tolist() == [0, -1]


def test_control_group_uses_raw_ids_and_the_playbook() -> None:
    book = PlaybookBook.model_validate({**BOOK.model_dump(), "control_fraction": 0.5})
    n = 400
    alerts = pd.DataFrame({"customer_id": [f"c{i}" for i in range(n)], "risk_tier": "high",
                           "value_tier": "bronze", "churn_probability": 0.9, "lifetime_value": 1000.0,
                           "value_at_risk": 900.0, "reason_families": [["behavioral"]] * n,
                           "reason_groups": [[]] * n})
    plain = allocate(alerts, book, ECON, None)
    hidden = allocate(alerts.assign(customer_id=[f"h{i}" for i in range(n)]), book, ECON, None,
                      raw_ids=alerts["customer_id"])
    assert plain["control_group"].tolist() == hidden["control_group"].tolist()
    assert 150 < plain["control_group"].sum() < 250
    survey_book = PlaybookBook.model_validate({**book.model_dump(), "default_playbook": "survey"})
    other = allocate(alerts, survey_book, ECON, None)  # same campaign and ids, another playbook
    assert (other["playbook_id"] == "survey").all()
    assert other["control_group"].tolist() != plain["control_group"].tolist()  # playbook is part of the draw
