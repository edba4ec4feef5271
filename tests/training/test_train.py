"""The training pipeline on tiny generated data: summary, MLflow run, registered model files, reproducibility."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.build import FeatureBuilder
from tests.conftest import MODEL_NAME, Store

EVALUATION_ARTIFACTS = {"feature_catalogue.csv", "reliability.png", "lift_chart.png", "pr_curve.png",
                        "shap_importance.png", "data_profile.csv", "input.json", "config.yaml"}
METRICS = ["test_roc_auc", "test_pr_auc", "test_log_loss", "test_brier", "test_ece", "baseline_logistic_roc_auc",
           "baseline_xgb_default_roc_auc", "test_lift_top10"]
# demo data covers 2024-01-01..2025-12-31, label window 30 days, 6 monthly cutoffs ending at the
# latest one whose window is observed (2025-12-01); test is the last, valid the two before (default
# training.valid_cutoffs: 2); every training label window (T, T+30d] ends by the first valid cutoff.
TRAIN_CUTOFFS = ["2025-07-01", "2025-08-01", "2025-09-01"]


def _test_frame(store: Store, model) -> pd.DataFrame:
    cutoff = pd.Timestamp(store.summary["cutoffs"]["test"][-1])
    fb = FeatureBuilder(store.tables, store.cfg, event_types=model.meta.get("event_types"))
    return fb.build(cutoff, with_labels=True).frame


def test_summary_of_first_training(trained_store: Store) -> None:
    s = trained_store.summary
    assert s["model_name"] == MODEL_NAME
    assert s["model_version"] == "1"
    assert s["aliases"] == ["challenger", "champion"]
    assert s["model_uri"] == f"models:/{MODEL_NAME}/1"
    assert isinstance(s["run_id"], str) and len(s["run_id"]) >= 16
    assert s["cutoffs"] == {"train": TRAIN_CUTOFFS, "valid": ["2025-10-01", "2025-11-01"], "test": ["2025-12-01"]}
    assert s["tuning"]["n_trials"] == 3
    for k in METRICS:
        assert np.isfinite(s["metrics"][k]), k
    for k in ("test_roc_auc", "test_pr_auc", "baseline_logistic_roc_auc", "baseline_xgb_default_roc_auc"):
        assert 0.0 <= s["metrics"][k] <= 1.0, k
    assert s["metrics"]["test_roc_auc"] > 0.6, "the generator's churn signal is learnable even at this size"
    assert s["n_features"] > 10


def test_mlflow_run_has_artifacts_metrics_and_tags(in_store: Store) -> None:
    client = in_store.client()
    run_id = in_store.summary["run_id"]
    names = {Path(a.path).name for a in client.list_artifacts(run_id, "evaluation")}
    missing = EVALUATION_ARTIFACTS - names
    assert not missing, f"missing artifacts: {sorted(missing)}"

    run = client.get_run(run_id)
    metrics = run.data.metrics
    for k in METRICS:
        assert k in metrics, k
        assert np.isfinite(metrics[k])
    assert metrics["test_roc_auc"] == pytest.approx(in_store.summary["metrics"]["test_roc_auc"], abs=1e-12)
    assert run.data.tags["input_hash"] == in_store.tables.input_hash
    assert run.data.params["seed"] == "42"
    assert run.data.params["test_cutoffs"] == "2025-12-01"

    local = Path(client.download_artifacts(run_id, "evaluation", str(in_store.folder / "dl")))
    assert json.loads((local / "input.json").read_text())["input_hash"] == in_store.tables.input_hash
    assert (local / "config.yaml").read_text() == in_store.config_path.read_text()
    catalogue = pd.read_csv(local / "feature_catalogue.csv")
    assert {"name", "family", "group", "reason"} <= set(catalogue.columns)
    assert (local / "reliability.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    mv = client.get_model_version(MODEL_NAME, "1")
    assert mv.tags["test_cutoff"] == "2025-12-01"
    assert mv.tags["input_hash"] == in_store.tables.input_hash
    assert float(mv.tags["test_roc_auc"]) == pytest.approx(in_store.summary["metrics"]["test_roc_auc"], abs=1e-5)


def test_champion_is_data_files_only_and_scores_string_categoricals(in_store: Store) -> None:
    """The registered version is XGBoost JSON + JSON + Parquet (no pyfunc, no pickle) and loads with the safe loader."""
    import mlflow

    from model.registry import load_churn_model

    client = in_store.client()
    mv = client.get_model_version(MODEL_NAME, client.get_model_version_by_alias(MODEL_NAME, "champion").version)
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{MODEL_NAME}@champion"))
    assert sorted(p.name for p in local.iterdir()) == ["booster.json", "feature_catalogue.json", "model_meta.json",
                                                       "reference.parquet", "survival_booster.json",
                                                       "survival_meta.json"]
    assert mv.run_id == in_store.summary["run_id"]
    model = load_churn_model(f"models:/{MODEL_NAME}@champion")
    frame = _test_frame(in_store, model)
    X = frame[model.features].copy()
    cats = list(model.categories)
    assert cats, "the demo model has categorical profile features"
    for c in cats:
        X[c] = X[c].astype(str)  # what a serving client sends
    p = model.predict_proba(X)
    assert p.shape == (len(X),)
    assert np.all((p >= 0) & (p <= 1))
    np.testing.assert_allclose(p, model.predict_proba(frame), rtol=1e-6)
    assert {c["name"] for c in model.catalogue} >= set(model.features)


def test_training_is_reproducible_in_a_fresh_store(trained_store: Store, twin_store: Store) -> None:
    from model.registry import load_churn_model

    assert trained_store.folder != twin_store.folder
    a, b = trained_store.summary, twin_store.summary
    assert b["model_version"] == "1", "the twin store is fresh, not the first store again"
    assert a["metrics"] == b["metrics"]
    assert a["tuning"]["best_valid_auc"] == b["tuning"]["best_valid_auc"]

    trained_store.activate()
    model_a = load_churn_model(f"models:/{MODEL_NAME}/1")
    run_a = trained_store.client().get_run(a["run_id"]).data
    twin_store.activate()
    model_b = load_churn_model(f"models:/{MODEL_NAME}/1")
    run_b = twin_store.client().get_run(b["run_id"]).data

    frame = _test_frame(trained_store, model_a)
    np.testing.assert_array_equal(model_a.predict_proba(frame), model_b.predict_proba(frame))
    np.testing.assert_array_equal(model_a.contributions(frame), model_b.contributions(frame))
    no_time = lambda m: {k: v for k, v in m.items() if not k.startswith("time_")}  # noqa: E731
    assert no_time(run_a.metrics) == no_time(run_b.metrics)
    assert run_a.params == run_b.params


def test_final_model_is_refitted_on_train_and_validation_but_not_test(trained_store: Store) -> None:
    from model.registry import load_churn_model

    s = trained_store.summary
    proto = s["protocol"]
    assert proto["refit"] is True and proto["include_test"] is False
    # every cutoff labelled by the test cutoff, and nothing from the test cutoff itself
    assert proto["fitted_cutoffs"] == TRAIN_CUTOFFS + ["2025-10-01", "2025-11-01"]
    # cross-fitted calibration: the two latest labelled cutoffs, each predicted by a model fitted before it
    assert proto["calibration_cutoffs"] == ["2025-10-01", "2025-11-01"]
    assert proto["calibration_method"] == "platt"
    assert np.isfinite(s["metrics"]["test_norefit_roc_auc"])
    trained_store.activate()
    model = load_churn_model(f"models:/{MODEL_NAME}/1")
    assert model.meta["protocol"]["fitted_cutoffs"] == proto["fitted_cutoffs"]
    assert model.calibrator.method == "platt"


@pytest.mark.parametrize("refit,fitted", [({"enabled": False}, TRAIN_CUTOFFS),
                                          ({"include_test": True}, TRAIN_CUTOFFS + ["2025-10-01", "2025-11-01",
                                                                                    "2025-12-01"])],
                         ids=["refit-off", "registered-includes-test"])
def test_refit_switches(tmp_path: Path, demo_data_dir: Path, refit: dict, fitted: list[str]) -> None:
    from churn.config import load_config
    from features.contract import load_tables
    from model.registry import load_churn_model
    from tests.conftest import working_directory, write_small_config
    from training.train import train

    path = write_small_config(tmp_path, overrides={"training": {"refit": refit, "backtest_windows": 0,
                                                                "tuning": {"n_trials": 1}}})
    with working_directory(tmp_path):
        cfg = load_config(path)
        s = train(load_tables(demo_data_dir, cfg.data), cfg, demo_data_dir)
        model = load_churn_model(f"models:/{MODEL_NAME}/1")
    assert s["protocol"]["fitted_cutoffs"] == fitted
    assert model.meta["protocol"]["fitted_cutoffs"] == fitted
    if not refit.get("enabled", True):
        # without the refit the evaluated model is the tuned one
        assert s["metrics"]["test_roc_auc"] == s["metrics"]["test_norefit_roc_auc"]
