"""The MLflow store a user shares or moves keeps working, opens as classic ML, and names its objective."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import pytest

from tests.conftest import MODEL_NAME, working_directory, write_small_config


@pytest.fixture(scope="module")
def moved_store(tmp_path_factory: pytest.TempPathFactory, demo_data_dir: Path) -> tuple[Path, Path, list[str]]:
    """Train into folder A, then move A to B (A no longer exists); returns (A, B, warnings raised in training)."""
    from churn.config import load_config
    from features.contract import load_tables
    from training.train import train

    root = tmp_path_factory.mktemp("move")
    a, b = root / "A", root / "B"
    config = write_small_config(a, overrides={"training": {"tuning": {"n_trials": 2}, "survival": {"enabled": False},
                                                             "backtest_windows": 0}})
    with working_directory(a), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cfg = load_config(config)
        train(load_tables(demo_data_dir, cfg.data), cfg, demo_data_dir)
    shutil.move(a, b)
    return a, b, [str(w.message) for w in caught]


def test_moved_store_loads_the_model_and_lists_artifacts(moved_store: tuple[Path, Path, list[str]]) -> None:
    import mlflow

    from churn.config import load_config
    from model.registry import load_churn_model, setup_mlflow

    a, b, _ = moved_store
    assert not a.exists()
    cfg = load_config(write_small_config(b, name="moved.yaml"))  # the same layout, now under B
    with working_directory(b):
        setup_mlflow(cfg.mlflow)
        client = mlflow.MlflowClient()
        exp = client.get_experiment_by_name(cfg.mlflow.experiment)
        assert exp.artifact_location == (b / "mlruns" / "artifacts").as_uri()
        mv = client.get_model_version_by_alias(MODEL_NAME, "champion")
        assert mv.source.startswith((b / "mlruns" / "artifacts").as_uri())
        listed = {f.path for f in client.list_artifacts(mv.run_id)}
        assert {"model", "evaluation"} <= listed
        model = load_churn_model(f"models:/{MODEL_NAME}@champion")
    assert model.features and model.meta["evaluation"]["metrics"]["test_roc_auc"] > 0.5


def test_experiment_opens_as_classic_ml_and_objective_is_named(moved_store: tuple[Path, Path, list[str]]) -> None:
    import mlflow
    import optuna

    from churn.config import load_config
    from model.registry import EXPERIMENT_KIND_TAG, setup_mlflow

    _, b, _ = moved_store
    cfg = load_config(write_small_config(b, name="moved.yaml"))
    with working_directory(b):
        setup_mlflow(cfg.mlflow)
        exp = mlflow.MlflowClient().get_experiment_by_name(cfg.mlflow.experiment)
    assert exp.tags[EXPERIMENT_KIND_TAG] == "custom_model_development"
    storage = f"sqlite:///{b / 'mlruns' / 'optuna.db'}"
    (summary,) = optuna.get_all_study_summaries(storage)
    assert optuna.load_study(study_name=summary.study_name, storage=storage).metric_names == ["valid_roc_auc"]


def test_training_raises_no_cloudpickle_warning(moved_store: tuple[Path, Path, list[str]]) -> None:
    assert not [m for m in moved_store[2] if "pickle" in m.lower()]
