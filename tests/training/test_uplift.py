"""Uplift model: Qini by hand, meta-learners recover planted effects, JSON round trip, cold start, truth unread."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from churn.config import Config
from training.uplift import (
    UpliftModel,
    compare_policies,
    qini_coefficient,
    qini_curve,
    split_out_of_time,
    train_uplift,
    uplift_at_k,
)


def test_qini_by_hand() -> None:
    score = np.array([4.0, 3.0, 2.0, 1.0])
    treated = np.array([True, False, True, False])
    churned = np.array([0, 1, 0, 1])
    # retained 1,0,1,0; k=1: no control yet -> 0; k=2: 1 - 0*1/1 = 1; k=3: 2 - 0 = 2; k=4: 2 - 0*2/2 = 2
    assert qini_curve(score, treated, churned).tolist() == [0.0, 1.0, 2.0, 2.0]
    # random line 2k/4 = .5, 1, 1.5, 2 -> differences -.5, 0, .5, 0 -> mean 0 -> 0 / 2 treated
    assert qini_coefficient(score, treated, churned)["qini"] == pytest.approx(0.0)
    # reversed: curve 0, 1, 1, 2 -> differences -.5, 0, -.5, 0 -> mean -.25 -> -.125
    assert qini_curve(-score, treated, churned).tolist() == [0.0, 1.0, 1.0, 2.0]
    assert qini_coefficient(-score, treated, churned)["qini"] == pytest.approx(-0.125)
    # top half: treated churn 0/1, control 1/1 -> +1 (the contact retained)
    assert uplift_at_k(score, treated, churned, 0.5) == pytest.approx(1.0)
    table = compare_policies({"model": score}, treated, churned)
    assert table["policy"].tolist() == ["model", "random"]


def _synthetic(n: int = 4000, seed: int = 0) -> pd.DataFrame:
    """Base churn 0.3; playbook A retains (-0.25) when x > 0.5; B raises churn (+0.25) when x < 0.4."""
    rng = np.random.default_rng(seed)
    x = rng.random(n)
    pb = np.where(rng.random(n) < 0.5, "A", "B")
    treated = rng.random(n) < 0.7
    effect = np.where(pb == "A", np.where(x > 0.5, -0.25, 0.0), np.where(x < 0.4, 0.25, 0.0))
    p = 0.3 + treated * effect
    return pd.DataFrame({"customer_id": [f"c{i}" for i in range(n)], "x": x, "noise": rng.random(n),
                         "playbook_id": pb, "treated": treated.astype(np.int8),
                         "churned": (rng.random(n) < p).astype(float), "cutoff": pd.Timestamp("2025-01-01")})


# the shift learner is slower by design (eta 0.03, depth 2: shrinks towards no effect), hence more rounds
@pytest.mark.parametrize(("learner", "n_boot", "rounds"), [("t", 0, 100), ("x", 0, 100), ("shift", 0, 300),
                                                           ("shift", 3, 300), ("r", 0, 300)])
def test_learners_recover_planted_effects_and_round_trip(learner: str, n_boot: int, rounds: int,
                                                         tmp_path: Path) -> None:
    data = _synthetic(3000)
    m = UpliftModel(learner, ["x", "noise"], {}, ["A", "B"], rounds=rounds, seed=1, n_boot=n_boot).fit(data)
    probe = pd.DataFrame({"x": [0.9, 0.1, 0.9, 0.1], "noise": 0.5})
    est = m.effect(probe, np.array(["A", "A", "B", "B"], dtype=object))
    # true: A -0.25 at high x, 0 at low x; B 0 at high x, +0.25 at low x (pooled mu1 shares some strength)
    assert est[0] < -0.15 and est[1] - est[0] > 0.1   # A: persuadable at high x
    assert est[3] > 0.15 and est[3] - est[2] > 0.15   # B: sleeping dog at low x
    assert np.isnan(m.effect(probe.iloc[:1], np.array(["ghost"], dtype=object))[0])
    again = UpliftModel.load(m.save(tmp_path / "m"))
    pd.testing.assert_frame_equal(again.effects(probe), m.effects(probe))
    assert not list(tmp_path.glob("m/*.pkl")), "JSON only"
    assert len(again.replicates_) == max(n_boot, 1)


def test_bagged_effects_carry_their_uncertainty_and_pessimism_only_lowers_the_benefit() -> None:
    data = _synthetic(2000)
    m = UpliftModel("shift", ["x", "noise"], {}, ["A", "B"], rounds=60, seed=3, n_boot=4).fit(data)
    probe = pd.DataFrame({"x": [0.9, 0.1], "noise": 0.5})
    mean, cautious = m.effects(probe), m.effects(probe, z=1.0)
    reps = np.stack([m._replicate_effects(probe, np.full(2, "A", dtype=object))])[0]
    assert reps.shape == (4, 2) and (reps.std(axis=0) > 0).all()   # the replicates differ: bootstrap samples
    np.testing.assert_allclose(mean["A"], reps.mean(axis=0))
    np.testing.assert_allclose(cautious["A"] - mean["A"], reps.std(axis=0, ddof=1))
    # effects() computes mu0 once for every playbook: bit for bit what the per-playbook path gives
    for p in ("A", "B"):
        alone = m._replicate_effects(probe, np.full(2, p, dtype=object)).mean(axis=0)
        np.testing.assert_array_equal(mean[p].to_numpy(), alone)
    assert (cautious.to_numpy() > mean.to_numpy()).all()           # never more benefit than the mean
    again = UpliftModel("shift", ["x", "noise"], {}, ["A", "B"], rounds=60, seed=3, n_boot=4).fit(data)
    pd.testing.assert_frame_equal(again.effects(probe), mean)      # seeded


def test_bootstrap_samples_whole_customers_reproducibly() -> None:
    from model.uplift import bootstrap_customers

    data = pd.DataFrame({"customer_id": ["a", "a", "b", "c"], "v": [1, 2, 3, 4]})
    one, two = bootstrap_customers(data, 7), bootstrap_customers(data, 7)
    pd.testing.assert_frame_equal(one, two)
    counts = one.groupby("customer_id")["v"].agg(list)
    assert len(one["customer_id"].unique()) <= 3 and len(one) >= 3
    if "a" in counts:
        assert len(counts["a"]) % 2 == 0 and set(counts["a"]) == {1, 2}   # both rows of a, as often as drawn


def test_calibration_table_by_hand() -> None:
    from training.uplift import calibration_table

    effect = np.array([-0.4, -0.3, 0.1, 0.2])
    treated = np.array([True, False, True, False])
    churned = np.array([0.0, 1.0, 1.0, 0.0])
    cal = calibration_table(effect, treated, churned, bins=2)
    # bin 1 (largest benefit): treated churn 0, control 1 -> realised -1; bin 2: 1 - 0 = +1
    assert cal["bin"].tolist() == [1, 2]
    assert cal["predicted"].tolist() == pytest.approx([-0.35, 0.15])
    assert cal["realised"].tolist() == [-1.0, 1.0]
    assert cal["n_treated"].tolist() == [1, 1] and cal["n_control"].tolist() == [1, 1]


def test_out_of_time_split_leaves_a_gap_for_the_outcome_window() -> None:
    cut = pd.to_datetime(["2025-01-01", "2025-02-01", "2025-03-01", "2025-04-01"])
    data = pd.DataFrame({"cutoff": np.repeat(cut, 2), "v": range(8)})
    train, test = split_out_of_time(data, 2, 30)
    # test from 2025-03-01; 2025-02-01 + 30 days = 2025-03-03 > 2025-03-01: that campaign's outcome overlaps
    assert sorted(train["cutoff"].unique()) == [pd.Timestamp("2025-01-01")]
    assert sorted(test["cutoff"].unique()) == [pd.Timestamp("2025-03-01"), pd.Timestamp("2025-04-01")]


def test_cold_start_without_or_with_too_little_history(demo_data_dir: Path, tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    from churn.config import load_config
    from features.contract import load_tables

    cfg: Config = load_config(None)
    tables = load_tables(demo_data_dir, cfg)
    no_history = load_tables(demo_data_dir, cfg.model_copy(update={"data": cfg.data.model_copy(update={
        "tables": {k: v for k, v in cfg.data.tables.items() if k != "treatments"}})}))
    assert no_history.treatments is None
    assert train_uplift(no_history, cfg, ["auto-checkin"])["status"] == "cold_start"
    strict = cfg.model_copy(update={"training": cfg.training.model_copy(update={
        "uplift": cfg.training.uplift.model_copy(update={"min_group": 10**6})})})
    ids = sorted(set(tables.treatments["playbook_id"]))
    with caplog.at_level(logging.WARNING, logger="training.uplift"):
        res = train_uplift(tables, strict, ids)
    assert res["status"] == "cold_start" and "too little campaign history" in res["note"]
    assert "larger control share" in caplog.text


def test_pipeline_never_reads_the_truth(tmp_path: Path) -> None:
    from churn.config import load_config
    from churn.generate import TRUTH_FILE, simulate_demo, write_demo
    from features.contract import load_tables
    from training.uplift import campaign_dataset

    tables, truth = simulate_demo(n_customers=300, seed=2)
    write_demo(tables, tmp_path, truth=truth)
    (tmp_path / TRUTH_FILE).write_bytes(b"not parquet: reading this would fail")
    cfg = load_config(None)
    loaded = load_tables(tmp_path, cfg)
    assert not [f for f in loaded.files if "_truth" in str(f)]
    built = campaign_dataset(loaded, cfg, sorted(set(loaded.treatments["playbook_id"])), loaded.data_end)
    assert built is not None and len(built[0]) > 0
    assert "true_effect" not in built[0].columns


def test_an_uplift_model_saved_before_bagging_still_loads(tmp_path: Path) -> None:
    """A registry can hold a champion saved in the single-fit format (``mu0.json``, no ``replicates`` key):
    it loads as one replicate with the same effects, instead of failing with a KeyError at scoring."""
    import json

    data = _synthetic(1500)
    m = UpliftModel("t", ["x", "noise"], {}, ["A", "B"], rounds=30, seed=1).fit(data)
    d = m.save(tmp_path / "new")
    old = tmp_path / "old"
    old.mkdir()
    meta = json.loads((d / "uplift_meta.json").read_text())
    for role in meta["roles"]:
        (old / f"{role}.json").write_bytes((d / f"{role}.0.json").read_bytes())
    del meta["replicates"], meta["n_boot"]
    (old / "uplift_meta.json").write_text(json.dumps(meta))
    again = UpliftModel.load(old)
    probe = pd.DataFrame({"x": [0.9, 0.1], "noise": 0.5})
    assert len(again.replicates_) == 1
    pd.testing.assert_frame_equal(again.effects(probe), m.effects(probe))


def test_a_large_campaign_history_is_learned_from_a_random_sample_of_whole_customers(demo_data_dir: Path) -> None:
    """``training.uplift.max_customers``: above it, a seeded uniform sample of contacted customers with every one of
    their contacts (treated and control alike, so the randomisation holds); at or below it, the tables as given."""
    from churn.config import load_config
    from features.contract import load_tables
    from training.uplift import contacted_sample

    tables = load_tables(demo_data_dir, load_config(None))
    tr = tables.treatments
    contacted = tr["customer_id"].astype(str).nunique()
    same, info = contacted_sample(tables, contacted, 42)
    assert same is tables and info is None
    sub, info = contacted_sample(tables, 300, 42)
    assert info == {"customers": 300, "contacted_customers": contacted}
    assert len(sub.customers) == 300 and sub.treatments["customer_id"].astype(str).nunique() == 300
    chosen = set(sub.customers["customer_id"].astype(str))
    assert len(sub.treatments) == int(tr["customer_id"].astype(str).isin(chosen).sum())  # all their contacts
    assert set(sub.events["customer_id"].astype(str)) <= chosen and sub.data_end == tables.data_end
    treated_share = (tr["group"] == "treated").mean()
    assert abs((sub.treatments["group"] == "treated").mean() - treated_share) < 0.06
    again, _ = contacted_sample(tables, 300, 42)
    assert again.customers["customer_id"].tolist() == sub.customers["customer_id"].tolist()  # seeded


def test_train_uplift_learns_from_the_sample_it_draws(demo_data_dir: Path) -> None:
    """The wiring: with ``max_customers`` below the contacted count, ``train_uplift`` sees only the sampled customers'
    contacts (here stopped at the cold-start gate, whose message counts what it was given; no store needed)."""
    from churn.config import load_config
    from features.contract import load_tables
    from training.uplift import contacted_sample

    cfg = load_config(None)
    tables = load_tables(demo_data_dir, cfg)
    gated = cfg.model_copy(update={"training": cfg.training.model_copy(update={
        "uplift": cfg.training.uplift.model_copy(update={"min_group": 10**6, "max_customers": 300})})})
    ids = sorted(set(tables.treatments["playbook_id"]))
    counts = re.search(r"\((\d+) treated and (\d+) control", train_uplift(tables, gated, ids)["note"])
    sub, _ = contacted_sample(tables, 300, cfg.training.seed)
    tr = sub.treatments
    observed = int(tr["customer_id"].astype(str).nunique())
    assert observed == 300
    n_seen = int(counts.group(1)) + int(counts.group(2))
    unsampled = gated.model_copy(update={"training": gated.training.model_copy(update={
        "uplift": gated.training.uplift.model_copy(update={"max_customers": None})})})
    full = re.search(r"\((\d+) treated and (\d+) control", train_uplift(tables, unsampled, ids)["note"])
    n_full = int(full.group(1)) + int(full.group(2))
    assert 0 < n_seen <= len(tr) < len(tables.treatments)  # the sample's contacts (with an observed outcome)
    assert n_seen < n_full
