"""``--engine spark`` gives the default engine's results: features, and alerts with a registered model.

One local[2] Spark session for the module (start-up about 10 s), one generated data set
(``generate_demo(500, seed=3)``) and one tiny model (2 Optuna trials). Skipped without pyspark or Java.
"""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("pyspark")
if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
    pytest.skip("Spark needs Java", allow_module_level=True)

from tests.conftest import local_spark, working_directory, write_small_config  # noqa: E402

N_CUSTOMERS, SEED = 500, 3
FEATURE_CUTOFF = pd.Timestamp("2025-06-01")


@pytest.fixture(scope="module")
def spark():
    yield from local_spark("churn-test-spark-engine")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from churn.generate import generate_demo, write_demo

    folder = tmp_path_factory.mktemp("spark_data")
    write_demo(generate_demo(n_customers=N_CUSTOMERS, seed=SEED), folder)
    return folder


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, data_dir: Path):
    """A model store with one registered model (2 Optuna trials) trained on the generated data."""
    from churn.config import load_config
    from features.contract import load_tables
    from training.train import train

    folder = tmp_path_factory.mktemp("spark_store")
    path = write_small_config(folder, overrides={"training": {"tuning": {"n_trials": 2}}})
    with working_directory(folder):
        cfg = load_config(path)
        tables = load_tables(data_dir, cfg.data)
        summary = train(tables, cfg, data_dir)
    return {"folder": folder, "cfg": cfg, "tables": tables, "summary": summary}


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values("customer_id", kind="stable").reset_index(drop=True)


def _assert_same_features(local, spark_fs) -> None:
    assert [s.name for s in spark_fs.specs] == [s.name for s in local.specs]
    assert spark_fs.specs == local.specs
    got = spark_fs.to_pandas()
    assert list(got.frame.columns) == list(local.frame.columns)
    # same rows in the same order (customers row order), same dtypes (categories included), same values
    pd.testing.assert_frame_equal(_sorted(got.frame), _sorted(local.frame), check_exact=False, rtol=1e-9, atol=1e-9)
    # in fact bitwise: the global sums run in the default engine's order
    pd.testing.assert_frame_equal(got.frame, local.frame, check_exact=True)


def test_features_equal_default_engine_noncontractual_clv(spark, data_dir: Path, store) -> None:
    """A mid-history cutoff, every feature family, labels, and the non-contractual CLV (one global BG/NBD fit)."""
    from features.build import FeatureBuilder
    from features.spark import build_feature_set_spark

    cfg = store["cfg"]
    clv = cfg.features.clv.model_copy(update={"method": "noncontractual"})
    cfg = cfg.model_copy(update={"features": cfg.features.model_copy(update={"clv": clv})})
    local = FeatureBuilder(store["tables"], cfg).build(FEATURE_CUTOFF, with_labels=True)
    fs = build_feature_set_spark(spark, data_dir, cfg, FEATURE_CUTOFF, n_buckets=3, with_labels=True)
    assert fs.n_population == len(local.frame) > 100
    _assert_same_features(local, fs)
    assert set(fs.frame.columns) >= {"customer_id", "cutoff", "value_tier", "rfm_frequency_score", "label"}
    assert 0 < local.frame["label"].sum() < len(local.frame)


def _binding_scoring_config(cfg, folder: Path, pre: dict | None = None, pre_dir: Path | None = None):
    """Scoring settings that bind. Without ``pre``: a playbook book with two cheap contacts of different cost
    (high risk: in-app nudge, 0.05; the rest: check-in email, 0.08). With an unconstrained run ``pre``: also
    a cap two below its alert count, pseudonymised ids, and a budget at which, in value-per-cost order, a
    contact no longer fits while a later, cheaper one does (so skipping it and filling on differs from
    stopping at it)."""
    if pre is None:
        text = (Path(__file__).resolve().parents[1] / "configs" / "playbooks.yaml").read_text(encoding="utf-8")
        text = text.replace("    acceptance_rate: 0.03\n", "    acceptance_rate: 0.06\n")  # auto-checkin
        text = text[: text.index("\nrules:")] + ("\nrules:\n  - id: high-nudge\n    playbook: reengage-nudge\n"
                                                  "    when:\n      risk_tier: [high]\n")
        (folder / "playbooks.yaml").write_text(text, encoding="utf-8")
        # contact_pool "alerts": the cap applies to the alerts; over every scored customer the alert files also
        # list the chosen contacts outside them (most of the rows on this data) and a cap of two below would not bind
        scoring = cfg.scoring.model_copy(update={"playbooks": str(folder / "playbooks.yaml"), "budget": None,
                                                 "contact_pool": "alerts"})
        return cfg.model_copy(update={"scoring": scoring})
    alerts = pd.read_parquet(pre_dir / "alerts.parquet")
    alerts = alerts[alerts["expected_net_value"] > 0]
    ratio = alerts["expected_net_value"] / alerts["playbook_cost"].clip(lower=1e-9)
    cost = alerts["playbook_cost"].to_numpy()[np.argsort(-ratio.to_numpy(), kind="stable")]
    budget = next((float(cost[:k].sum() + (cost[k] + cost[k + 1:].min()) / 2) for k in range(len(cost) - 1)
                   if cost[k + 1:].min() < cost[k]), None)
    assert budget is not None, f"no skip-and-fill budget in this data: costs {cost.tolist()}"
    scoring = cfg.scoring.model_copy(update={"budget": budget, "max_alerts": pre["n_alerts"] - 2,
                                             "pseudonymize_key": "test-key"})
    return cfg.model_copy(update={"scoring": scoring})


def _nested(x):
    """Parquet's nested cells (arrays of structs holding arrays) as plain lists and dicts, for ==."""
    if isinstance(x, dict):
        return {k: _nested(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, np.ndarray)):
        return [_nested(v) for v in x]
    return x


def test_alerts_equal_default_engine(spark, data_dir: Path, store, tmp_path: Path) -> None:
    """Features at the scoring cutoff (contractual CLV), then scoring with the registered model."""
    from features.build import FeatureBuilder
    from features.spark import build_feature_set_spark
    from inference.explain import typical_values
    from inference.score import score
    from inference.spark import score_spark
    from model.registry import load_churn_model

    cfg, tables = store["cfg"], store["tables"]
    as_of = (tables.data_end + pd.Timedelta(days=1)).normalize()
    with working_directory(store["folder"]):
        from model.registry import setup_mlflow

        setup_mlflow(cfg.mlflow)
        model = load_churn_model(f"models:/{cfg.mlflow.model_name}/{store['summary']['model_version']}")
        event_types = model.meta.get("event_types")
        local_fs = FeatureBuilder(tables, cfg, event_types=event_types).build(as_of)
        fs = build_feature_set_spark(spark, data_dir, cfg, as_of, n_buckets=4, event_types=event_types)
        _assert_same_features(local_fs, fs)

        specs = {s.name: s for s in local_fs.specs}
        want = typical_values(local_fs.frame, model.features, specs)
        got = typical_values(fs.to_pandas(model.features).frame, model.features, specs)
        assert got.keys() == want.keys()
        for k, v in want.items():
            assert got[k] == v or (isinstance(v, float) and math.isnan(v) and math.isnan(got[k])), k

        cfg = _binding_scoring_config(cfg, tmp_path)
        pre = score(tables, cfg, as_of, tmp_path / "pre", log_to_mlflow=False)
        cfg = _binding_scoring_config(cfg, tmp_path, pre, tmp_path / "pre")
        local_sum = score(tables, cfg, as_of, tmp_path / "local", log_to_mlflow=False)
        spark_sum = score_spark(spark, data_dir, cfg, as_of, tmp_path / "spark", log_to_mlflow=False, features=fs)
        # the model shipped with the job (executors without registry access); scores not collected
        # and the outputs written through Hadoop's FileSystem (a URI, as for s3a:// or hdfs://)
        shipped = score_spark(spark, data_dir, cfg, as_of, (tmp_path / "shipped").as_uri(), log_to_mlflow=False,
                              features=fs, ship_model=True, collect_limit=0)

    # the budget binds: a contact worth making is left out while one with less value per unit cost is chosen
    # (the one that no longer fits is skipped and cheaper ones still fill the budget; a prefix would stop)
    want_alerts = pd.read_parquet(tmp_path / "local" / "alerts.parquet")
    ratio = want_alerts["expected_net_value"] / want_alerts["playbook_cost"].clip(lower=1e-9)
    positive = want_alerts["expected_net_value"] > 0
    assert 0 < want_alerts["selected"].sum() < positive.sum()
    assert ratio[positive & ~want_alerts["selected"]].max() > ratio[want_alerts["selected"]].min()
    assert local_sum["budget_spent"] <= cfg.scoring.budget
    assert len(want_alerts) == cfg.scoring.max_alerts  # the cap binds too
    for key in ("n_scored", "n_alerts", "n_selected", "n_control", "input_hash", "model_version"):
        assert spark_sum[key] == local_sum[key], key
    assert spark_sum["n_alerts"] > 5 and 0 < spark_sum["n_selected"] < spark_sum["n_alerts"]
    assert spark_sum["budget"] == local_sum["budget"] == cfg.scoring.budget
    for key in ("budget_spent", "expected_net_value", "value_at_risk_total", "value_at_risk_alerts", "risk_tiers"):
        assert spark_sum[key] == local_sum[key], key

    got_alerts = pd.read_parquet(tmp_path / "spark" / "alerts.parquet")
    assert list(got_alerts.columns) == list(want_alerts.columns)
    for col in ("rank", "customer_id", "risk_tier", "value_tier", "lifecycle_stage", "playbook_id", "playbook_rule",
                "selected", "control_group", "reason_1", "reason_2", "reason_3", "protective_reason"):
        assert got_alerts[col].tolist() == want_alerts[col].tolist(), col
    for col in ("churn_probability", "lifetime_value", "value_at_risk", "expected_net_value", "playbook_cost"):
        np.testing.assert_allclose(got_alerts[col].to_numpy(float), want_alerts[col].to_numpy(float), rtol=1e-9)
    for col in ("reason_families", "reason_groups"):
        assert [list(x) for x in got_alerts[col]] == [list(x) for x in want_alerts[col]], col
    assert _nested(got_alerts["reasons"].tolist()) == _nested(want_alerts["reasons"].tolist())

    assert shipped["n_alerts"] == local_sum["n_alerts"]
    assert not (tmp_path / "shipped" / "report.html").exists()  # above collect_limit: no report or drift table
    assert (tmp_path / "shipped" / "summary.json").exists() and (tmp_path / "shipped" / "scores.parquet").is_dir()
    for name in ("alerts.parquet", "alerts.csv", "alerts.jsonl"):
        assert (tmp_path / "shipped" / name).read_bytes() == (tmp_path / "local" / name).read_bytes(), name

    want_scores = pd.read_parquet(tmp_path / "local" / "scores.parquet")
    got_scores = pd.read_parquet(tmp_path / "spark" / "scores.parquet")
    assert got_scores["customer_id"].tolist() == want_scores["customer_id"].tolist()
    np.testing.assert_array_equal(got_scores["churn_probability"].to_numpy(), want_scores["churn_probability"].to_numpy())
    # the alert files are byte-identical (written by the default engine's writers from the same frame)
    for name in ("alerts.parquet", "alerts.csv", "alerts.jsonl"):
        assert (tmp_path / "spark" / name).read_bytes() == (tmp_path / "local" / name).read_bytes(), name
    assert (tmp_path / "spark" / "report.html").exists() and (tmp_path / "spark" / "summary.json").exists()


def test_contract_errors_in_a_bucket_surface_as_data_errors(spark, data_dir: Path, tmp_path: Path) -> None:
    """A child row whose customer is unknown fails inside a Spark task; the caller still gets a DataError."""
    from churn.config import load_config
    from churn.errors import DataError
    from features.spark import build_feature_set_spark

    customers = pd.read_parquet(data_dir / "customers.parquet").head(20)
    events = pd.read_parquet(data_dir / "events.parquet")
    events = events[events["customer_id"].isin(customers["customer_id"])].head(200).copy()
    events.loc[events.index[5], "customer_id"] = "NOT-A-CUSTOMER"
    customers.to_parquet(tmp_path / "customers.parquet", index=False)
    events.to_parquet(tmp_path / "events.parquet", index=False)
    with pytest.raises(DataError, match="not in the customers table"):
        build_feature_set_spark(spark, tmp_path, load_config(), FEATURE_CUTOFF, n_buckets=2)


def test_features_equal_with_mapped_columns_auto_attributes_and_inactivity_label(spark, data_dir: Path,
                                                                                 tmp_path: Path) -> None:
    """Config features the engine accepts: renamed columns, ``exclude``, ``attributes: auto``, segment columns,
    the inactivity label, an empty-valued optional table column; both engines read the same renamed files."""
    from churn.config import load_config
    from features.build import FeatureBuilder
    from features.contract import load_tables
    from features.spark import build_feature_set_spark

    customers = pd.read_parquet(data_dir / "customers.parquet").head(120)
    keep = customers["customer_id"]
    customers = customers.rename(columns={"customer_id": "cust", "signup_date": "joined"})
    customers["note"] = "free text"  # excluded
    customers["row_id"] = [f"r{i:05d}" for i in range(len(customers))]  # id-like text: not an attribute (auto)
    customers.to_parquet(tmp_path / "clients.parquet", index=False)
    for name, renames in (("events", {"timestamp": "ts"}), ("transactions", {"amount": "amt"}),
                          ("interactions", {})):
        child = pd.read_parquet(data_dir / f"{name}.parquet")
        child[child["customer_id"].isin(keep)].rename(columns={"customer_id": "cust", **renames}).to_parquet(
            tmp_path / f"{name}.parquet", index=False)
    base = load_config().data.tables
    tables = {
        "customers": {"file": "clients", "columns": {"customer_id": "cust", "signup_date": "joined",
                                                     "churn_date": "churn_date"},
                      "attributes": "auto", "exclude": ["note"]},
        "events": {"file": "events", "columns": {**base["events"].columns, "customer_id": "cust", "timestamp": "ts"}},
        "transactions": {"file": "transactions", "columns": {**base["transactions"].columns, "customer_id": "cust",
                                                             "amount": "amt"}},
        "interactions": {"file": "interactions", "columns": {**base["interactions"].columns, "customer_id": "cust"}},
    }
    path = write_small_config(tmp_path / "cfg", overrides={"data": {"tables": tables},
                                                           "label": {"definition": "inactivity"},
                                                           "features": {"clv": {"segment_columns": ["plan", "region"]}}})
    cfg = load_config(path)
    local = FeatureBuilder(load_tables(tmp_path, cfg.data), cfg).build(FEATURE_CUTOFF, with_labels=True)
    fs = build_feature_set_spark(spark, tmp_path, cfg, FEATURE_CUTOFF, n_buckets=2, with_labels=True)
    assert {"plan", "region", "channel"} <= set(fs.feature_names) and "row_id" not in fs.feature_names
    assert len(local.frame) > 20
    _assert_same_features(local, fs)
