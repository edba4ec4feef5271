"""The registry read without MLflow and the MLflow helper process of `churn score` (model.mlflow_worker)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from churn.mlflow_runs import TAG_PID, owner_tags, scoring_run_record, sqlite_alias_lookup
from model.mlflow_worker import MlflowWorker, MlflowWorkerError
from model.registry import CHALLENGER, CHAMPION, local_alias_model
from tests.conftest import Store

MODEL_NAME = "churn-xgb"


def test_sqlite_lookup_agrees_with_the_mlflow_client(in_store: Store) -> None:
    client = in_store.client()
    uri = in_store.cfg.mlflow.tracking_uri
    for alias in (CHAMPION, CHALLENGER):
        mv = client.get_model_version_by_alias(MODEL_NAME, alias)
        expected = (str(mv.version), client.get_model_version_download_uri(MODEL_NAME, mv.version))
        assert sqlite_alias_lookup(uri, MODEL_NAME, alias) == expected
    version, folder = local_alias_model(uri, MODEL_NAME, CHAMPION)
    assert version == "1" and (folder / "booster.json").is_file()


@pytest.mark.parametrize(("name", "alias"), [("churn-xgb", "nobody"), ("no-such-model", "champion")],
                         ids=["unknown alias", "unknown model"])
def test_sqlite_lookup_says_when_the_store_has_no_such_alias(in_store: Store, name: str, alias: str) -> None:
    assert sqlite_alias_lookup(in_store.cfg.mlflow.tracking_uri, name, alias) == (None, None)
    assert local_alias_model(in_store.cfg.mlflow.tracking_uri, name, alias) is None


def test_sqlite_lookup_leaves_other_stores_to_mlflow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     in_store: Store) -> None:
    assert sqlite_alias_lookup("http://127.0.0.1:5000", MODEL_NAME, CHAMPION) is None
    assert sqlite_alias_lookup(f"sqlite:///{tmp_path}/missing.db", MODEL_NAME, CHAMPION) is None
    (tmp_path / "other.db").write_bytes(b"")  # a SQLite file without MLflow's tables
    assert sqlite_alias_lookup(f"sqlite:///{tmp_path}/other.db", MODEL_NAME, CHAMPION) is None
    monkeypatch.setenv("MLFLOW_ENABLE_WORKSPACES", "true")
    assert sqlite_alias_lookup(in_store.cfg.mlflow.tracking_uri, MODEL_NAME, CHAMPION) is None


def _summary(out: Path) -> dict:
    return {"cutoff": "2025-06-01", "input_hash": "sha256:abc", "model_uri": "models:/churn-xgb@champion",
            "model_version": "1", "n_scored": 10, "n_alerts": 4, "n_selected": 3, "n_control": 1,
            "value_at_risk_total": 12.5, "expected_net_value": 2.25,
            "performance_estimate": {"roc_auc": {"estimate": 0.75, "low": 0.7, "high": 0.8}},
            "outputs": {"summary": str(out / "summary.json")}}


def test_worker_logs_the_scoring_run_like_this_process(in_store: Store, tmp_path: Path) -> None:
    staged = tmp_path / "staged"
    staged.mkdir()
    (staged / "alerts.csv").write_text("customer_id\nc1\n")
    owner = owner_tags()
    with MlflowWorker(in_store.cfg.mlflow.model_dump()) as worker:
        run_id = worker.call("start", mlflow_cfg=in_store.cfg.mlflow.model_dump(),
                             record=scoring_run_record(_summary(tmp_path)), staged=str(staged), owner=owner)
        assert in_store.client().get_run(run_id).info.status == "RUNNING"
        assert worker.call("end", status="FINISHED") is None
    run = in_store.client().get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "score-2025-06-01"
    assert run.data.tags["model_version"] == "1" and run.data.tags["input_hash"] == "sha256:abc"
    assert run.data.tags[TAG_PID] == owner[TAG_PID]  # the scoring process owns the run, not the helper
    assert run.data.tags["output_dir"] == str(tmp_path.resolve())
    assert run.data.metrics == {"n_scored": 10.0, "n_alerts": 4.0, "n_selected": 3.0, "n_control": 1.0,
                                "value_at_risk_total": 12.5, "expected_net_value": 2.25, "est_roc_auc": 0.75,
                                "est_roc_auc_low": 0.7, "est_roc_auc_high": 0.8}
    arts = [a.path for a in in_store.client().list_artifacts(run_id, "scoring")]
    assert arts == ["scoring/alerts.csv"]


def test_worker_card_matches_the_in_process_card(in_store: Store) -> None:
    from model.card import model_card

    meta = {"label": {"horizon_days": 90}, "input_hash": "sha256:x"}
    uri = f"models:/{MODEL_NAME}@{CHAMPION}"
    with MlflowWorker(in_store.cfg.mlflow.model_dump()) as worker:
        card = worker.call("card", mlflow_cfg=in_store.cfg.mlflow.model_dump(), meta=meta, name=MODEL_NAME,
                           version="1", uri=uri)
    expected = json.loads(json.dumps(model_card(meta, MODEL_NAME, "1", uri), default=str))
    assert card == expected and card["run_id"]


def test_worker_errors_reach_the_caller(in_store: Store) -> None:
    with MlflowWorker(in_store.cfg.mlflow.model_dump()) as worker:
        with pytest.raises(MlflowWorkerError, match="TypeError.*uri"):
            worker.call("card", mlflow_cfg=in_store.cfg.mlflow.model_dump(), meta={}, name=MODEL_NAME, version="1")
        assert worker.call("end", status="FINISHED") is None  # still serving after an error
