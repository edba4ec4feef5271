"""Audit a scoring run's alerts: do the reasons tell the truth, add up, name the early warnings; do counterfactuals hold?

Counts, from ``alerts.parquet``, the feature catalogue the model was trained with and the playbooks file:

  a. risk-raising reasons that quote a value on the safe side of typical (recomputed from the catalogue's
     ``risk_direction``, the quoted value and the typical value) without saying why it matters, the same for
     protective reasons and the risky side, and reasons that state an unrecorded value ("... not recorded");
  b. alerts whose base rate + listed impacts + other factors differ from the probability by more than
     0.1 point (the stored numbers, and the shown, rounded numbers of ``impact_summary``);
  c. per early-warning flag: customers with it on, risk-raising reasons naming it, playbook rules using it,
     alerts those rules routed;
  d. routing: remedial playbooks given to customers outside ``remedial_stages`` (must be 0);
  e. counterfactuals: share valid (full-model probability below the alert threshold) and changes to
     features outside ``scoring.actionable_features`` (must be 0).

    PYTHONPATH=. python benchmarks/reason_audit.py --run /tmp/r_demo     # the folder `churn demo --out demo` ran in

Prints a markdown table and writes ``benchmarks/results/reason_audit.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import pandas as pd

from churn.config import ScoringConfig
from features.catalogue import FeatureSpec, specs_from_frame
from features.flags import EARLY_WARNING_FLAGS
from inference.counterfactual import match_features
from inference.explain import DESPITE_LEVEL, FROM_LEVEL
from inference.playbooks import load_playbooks

log = logging.getLogger(__name__)
# the phrases that say why a same-direction value on the safe side matters
_WHY = [FROM_LEVEL.format(level=w) for w in ("a high level", "a low level")] + [DESPITE_LEVEL.split("}")[1].split("{")[0]]
_SUMMARY_TERM = re.compile(r"([+-]\d+\.\d) pts")


def unexplained_wrong_side(alerts: pd.DataFrame, specs: dict[str, FeatureSpec]) -> dict[str, int]:
    """Risk-raising reasons quoting a safe-side value (and protective ones quoting a risky-side value) without
    saying why, and reasons stating an unrecorded value."""
    from features.catalogue import risk_side

    out = {"raising": 0, "raising_safe_side_without_why": 0, "protective": 0,
           "protective_risky_side_without_why": 0, "not_recorded": 0}
    for cell in alerts["reasons"]:
        for r in cell:
            out["not_recorded"] += "not recorded" in r["text"]
            sign = 1 if r["direction"] == "raises" else -1
            sides = [risk_side(specs[q["feature"]], q["value"], q["typical"]) * sign for q in r["quoted"]]
            wrong = any(s < 0 for s in sides) and not any(w in r["text"] for w in _WHY)
            key = "raising" if sign > 0 else "protective"
            out[key] += 1
            out[f"{key}_{'safe' if sign > 0 else 'risky'}_side_without_why"] += wrong
    return out


def not_adding_up(alerts: pd.DataFrame) -> tuple[int, int]:
    """(alerts whose stored terms miss the probability by > 0.1 pt, alerts whose shown terms do)."""
    stored = shown = 0
    for rec in alerts.to_dict("records"):
        total = rec["base_probability"] + sum(r["impact"] for r in rec["reasons"]) + rec["other_impact"]
        stored += abs(total - rec["churn_probability"]) * 100 > 0.1
        text = rec["impact_summary"]
        base = float(re.search(r"base rate (\d+\.\d)%", text).group(1))
        final = float(re.search(r"= (\d+\.\d)%$", text).group(1))
        terms = sum(float(t) for t in _SUMMARY_TERM.findall(text))
        shown += abs(base + terms - final) > 0.1 + 1e-9 or abs(final - rec["churn_probability"] * 100) > 0.05 + 1e-9
    return stored, shown


def flag_usage(alerts: pd.DataFrame, book: Any) -> dict[str, dict[str, int]]:
    """Per flag: customers with it on, risk-raising reasons naming it, rules using it, alerts those rules routed."""
    out = {}
    for f in EARLY_WARNING_FLAGS:
        rules = [r.id for r in book.rules if r.when.early_warnings and f in r.when.early_warnings]
        out[f] = {"alerts_with_flag": int(sum(f in list(x) for x in alerts["early_warnings"])),
                  "reasons_naming_it": int(sum(f in r["flags"] for cell in alerts["reasons"] for r in cell
                                               if r["direction"] == "raises")),
                  "rules_using_it": len(rules),
                  "alerts_routed_by_those_rules": int(alerts["playbook_rule"].isin(rules).sum())}
    return out


def run_audit(run: Path, playbooks: Path, scoring: ScoringConfig) -> dict[str, Any]:
    alerts = pd.read_parquet(run / "demo" / "scoring" / "alerts.parquet")
    catalogue = sorted(run.glob("mlruns/artifacts/*/artifacts/evaluation/feature_catalogue.json"))
    specs = {s.name: s for s in specs_from_frame(pd.read_json(catalogue[-1]))}
    book = load_playbooks(playbooks)
    sides = unexplained_wrong_side(alerts, specs)
    stored, shown = not_adding_up(alerts)
    kinds = {p.id: p.kind for p in book.playbooks}
    remedial_wrong = int((alerts["playbook_id"].map(kinds).eq("remedial")
                          & ~alerts["lifecycle_stage"].isin(book.remedial_stages)).sum())
    actionable = set(match_features(list(specs), scoring.actionable_features))
    changes = [c["feature"] for cell in alerts["counterfactual_changes"] for c in cell]
    return {
        "alerts": len(alerts), "risk_raising_reasons": sides["raising"],
        "a_safe_side_without_why": sides["raising_safe_side_without_why"],
        "a_protective_reasons": sides["protective"],
        "a_protective_risky_side_without_why": sides["protective_risky_side_without_why"],
        "a_not_recorded_reasons": sides["not_recorded"],
        "b_not_adding_up_stored": stored, "b_not_adding_up_shown": shown,
        "c_flags": flag_usage(alerts, book),
        "d_remedial_outside_stages": remedial_wrong,
        "e_counterfactual_valid_share": float(alerts["counterfactual_valid"].mean()),
        "e_non_actionable_changes": sum(f not in actionable for f in changes),
        "e_changes_per_alert": float(len(changes) / max(len(alerts), 1)),
        "load_average": os.getloadavg(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, required=True, help="folder `churn demo --out demo` ran in")
    ap.add_argument("--playbooks", type=Path, default=Path("configs/playbooks.yaml"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/reason_audit.json"))
    args = ap.parse_args()
    res = run_audit(args.run, args.playbooks, ScoringConfig())
    print("| check | count |\n|---|---|")
    for k, v in res.items():
        if k != "c_flags":
            print(f"| {k} | {v} |")
    print("\n| flag | alerts with it | reasons naming it | rules using it | alerts routed by them |\n|---|---|---|---|---|")
    for f, c in res["c_flags"].items():
        print(f"| {f} | {c['alerts_with_flag']} | {c['reasons_naming_it']} | {c['rules_using_it']} | "
              f"{c['alerts_routed_by_those_rules']} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2, default=str))


if __name__ == "__main__":
    main()
