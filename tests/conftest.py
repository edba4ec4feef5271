"""Shared session fixtures: one tiny demo data folder, small configs, and a model store trained once.

Isolation: ``configs/default.yaml`` keeps the MLflow and Optuna stores relative to the working
directory (``mlruns/``). MLflow caches its stores and SQLAlchemy engines by URI *string*, so inside
one Python process a relative ``sqlite:///mlruns/mlflow.db`` keeps pointing at the first folder it
was opened in, even after ``chdir``. Every in-process store here therefore gets absolute URIs under
its own tmp folder (and the tests also chdir into it); the relative default layout is exercised by
the end-to-end test, which runs ``churn demo`` in a subprocess.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = ROOT / "configs" / "default.yaml"
MODEL_NAME = "churn-xgb"  # mlflow.model_name in configs/default.yaml
DEMO_CUSTOMERS, DEMO_SEED = 800, 7
# the table cache (features.table_cache) never writes into the user's cache folder from the tests: session
# fixtures share one throw-away folder, each test gets its own (see _table_cache_per_test)
os.environ["CHURN_CACHE_DIR"] = tempfile.mkdtemp(prefix="churn-test-table-cache-")
atexit.register(shutil.rmtree, os.environ["CHURN_CACHE_DIR"], ignore_errors=True)


@pytest.fixture(autouse=True)
def _table_cache_per_test(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fresh table cache folder per test: a test's loads never hit another test's entries."""
    monkeypatch.setenv("CHURN_CACHE_DIR", str(tmp_path_factory.mktemp("table_cache")))


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in update.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def small_config_dict(store: Path | None, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """configs/default.yaml with test-sized training; stores under ``store`` (absolute) or left relative (None)."""
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text(encoding="utf-8"))
    # n_threads 1: on a busy shared machine XGBoost's OpenMP threads spin-wait on each other and a
    # 2-thread fit of a few hundred rows can take 20x longer than a 1-thread one
    raw = _merge(raw, {"training": {"n_cutoffs": 6, "n_threads": 1,
                                    "tuning": {"n_trials": 3, "timeout_s": None, "max_boost_rounds": 100},
                                    "survival": {"n_trials": 3, "timeout_s": None, "max_boost_rounds": 100}}})
    if store is not None:
        store = Path(store).resolve()
        raw = _merge(raw, {"mlflow": {"tracking_uri": f"sqlite:///{store / 'mlruns' / 'mlflow.db'}",
                                      "artifact_location": str(store / "mlruns" / "artifacts")},
                           "training": {"tuning": {"storage": f"sqlite:///{store / 'mlruns' / 'optuna.db'}"}}})
    return _merge(raw, overrides or {})


def write_small_config(folder: Path, name: str = "config.yaml", absolute_store: bool = True,
                       overrides: dict[str, Any] | None = None) -> Path:
    """Write a small config YAML into ``folder`` (its store in ``folder/mlruns``) and return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(yaml.safe_dump(small_config_dict(folder if absolute_store else None, overrides), sort_keys=False),
                    encoding="utf-8")
    return path


def local_spark(app_name: str) -> Iterator[Any]:
    """A small local[2] SparkSession for one test module (the Spark tests' fixture body); stopped afterwards so
    the next module (e.g. the standalone-cluster test) gets a session of its own."""
    import sys

    from features.spark import get_spark

    os.environ["PYSPARK_PYTHON"] = sys.executable
    session = get_spark("local[2]", app_name=app_name, **{"spark.sql.shuffle.partitions": "4",
                                                         "spark.ui.enabled": "false", "spark.default.parallelism": "2"})
    yield session
    session.stop()


@contextmanager
def working_directory(path: Path) -> Iterator[None]:
    old = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def run_cli(args: list[str]) -> Any:
    """Invoke ``churn`` in-process; restore the root logger, which the CLI reconfigures with force=True."""
    from click.testing import CliRunner

    from churn.cli import main

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


@dataclass
class Store:
    """A model store (MLflow + Optuna) in ``folder`` with the config that points at it."""

    folder: Path
    config_path: Path
    cfg: Any
    tables: Any
    data_dir: Path
    summary: dict[str, Any]

    def activate(self) -> None:
        """Point the process-global MLflow client at this store."""
        from model.registry import setup_mlflow

        setup_mlflow(self.cfg.mlflow)

    def client(self) -> Any:
        import mlflow

        self.activate()
        return mlflow.MlflowClient()


def _train_store(folder: Path, data_dir: Path) -> Store:
    from churn.config import load_config
    from features.contract import load_tables
    from training.train import train

    config_path = write_small_config(folder)
    with working_directory(folder):
        cfg = load_config(config_path)
        tables = load_tables(data_dir, cfg.data)
        summary = train(tables, cfg, data_dir)
    return Store(folder, config_path, cfg, tables, data_dir, summary)


@pytest.fixture(scope="session")
def demo_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``generate_demo(800, seed=7)`` written as Parquet (read-only for tests: copy before changing)."""
    from churn.generate import generate_demo, write_demo

    folder = tmp_path_factory.mktemp("demo_data")
    write_demo(generate_demo(n_customers=DEMO_CUSTOMERS, seed=DEMO_SEED), folder)
    return folder


@pytest.fixture(scope="session")
def demo_customers(demo_data_dir: Path) -> pd.DataFrame:
    return pd.read_parquet(demo_data_dir / "customers.parquet")


@pytest.fixture(scope="session")
def trained_store(tmp_path_factory: pytest.TempPathFactory, demo_data_dir: Path) -> Store:
    """A store with version 1 of the model trained on the demo data (champion and challenger).

    Shared read-mostly: tests may add scoring runs but must not move its aliases.
    """
    return _train_store(tmp_path_factory.mktemp("store"), demo_data_dir)


@pytest.fixture(scope="session")
def twin_store(tmp_path_factory: pytest.TempPathFactory, demo_data_dir: Path) -> Store:
    """A second, independent fresh store trained on the same data and config (reproducibility).

    ``tests/model/test_registry.py`` trains version 2 into it and moves its aliases; the
    reproducibility test only reads version 1's run, which never changes.
    """
    return _train_store(tmp_path_factory.mktemp("twin_store"), demo_data_dir)


@pytest.fixture
def in_store(trained_store: Store, monkeypatch: pytest.MonkeyPatch) -> Store:
    """``trained_store`` as the working directory and the active MLflow store."""
    monkeypatch.chdir(trained_store.folder)
    trained_store.activate()
    return trained_store


def active_customer_ids(customers: pd.DataFrame, as_of: pd.Timestamp) -> set[str]:
    """Independent statement of the population: signed up before T and not churned at or before T."""
    signed = customers["signup_date"] < as_of
    gone = customers["churn_date"].notna() & (customers["churn_date"] <= as_of)
    return set(customers.loc[signed & ~gone, "customer_id"].astype(str))
