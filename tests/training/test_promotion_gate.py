"""The promotion gate's decision on several out-of-time windows, with a margin (pure functions)."""

from __future__ import annotations

import pandas as pd
import pytest

from training.promote import gate_decision, gate_windows


@pytest.mark.parametrize(
    ("challenger", "champion", "promoted"),
    [
        ({"a": 0.82, "b": 0.83}, {"a": 0.80, "b": 0.81}, True),  # +0.02 on both
        ({"a": 0.803, "b": 0.813}, {"a": 0.80, "b": 0.81}, False),  # +0.003: inside the margin
        ({"a": 0.90, "b": 0.80}, {"a": 0.80, "b": 0.81}, False),  # mean +0.045 but better on 1 of 2 only
        ({"a": 0.90}, {"a": 0.80}, False),  # one window is not enough
    ],
    ids=["clear-win", "within-margin", "one-lucky-window", "single-window"],
)
def test_gate_decision(challenger: dict[str, float], champion: dict[str, float], promoted: bool) -> None:
    ok, detail = gate_decision(challenger, champion, margin=0.005, min_windows=2)
    assert ok is promoted
    if len(challenger) == 1:
        assert detail == "only 1 window(s) out of time for both models; the gate needs 2"


def test_gate_decision_detail_by_hand() -> None:
    ok, detail = gate_decision({"a": 0.82, "b": 0.80, "c": 0.84}, {"a": 0.80, "b": 0.81, "c": 0.80}, 0.005, 2)
    # gains +0.02, -0.01, +0.04: mean +0.0167, better on 2 of 3
    assert ok and detail == "mean gain +0.0167 (margin 0.005), better on 2 of 3 window(s)"


def test_gate_windows_skip_what_the_champion_trained_or_calibrated_on() -> None:
    challenger = {"train_cutoffs": ["2025-01-01", "2025-02-01"], "valid_cutoffs": ["2025-03-01", "2025-04-01"],
                  "test_cutoffs": ["2025-05-01"]}
    champion = {"train_cutoffs": ["2024-12-01", "2025-01-01"], "valid_cutoffs": ["2025-02-01", "2025-03-01"]}
    assert gate_windows(challenger, champion, 2) == [pd.Timestamp("2025-04-01"), pd.Timestamp("2025-05-01")]
    assert gate_windows(challenger, champion, 5) == [pd.Timestamp("2025-04-01"), pd.Timestamp("2025-05-01")]
    assert gate_windows(challenger, challenger, 2) == [pd.Timestamp("2025-05-01")]
