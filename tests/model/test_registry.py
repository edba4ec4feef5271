"""Registry aliases, controlled promotion and rollback, through the API and the ``churn`` CLI.

Uses ``twin_store`` (a fresh store with version 1) and trains version 2 into it with the same
data, config and seed: the Optuna study is resumed, so version 2 is the same model as version 1
with the same stored test ROC-AUC on the same window.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from model.registry import CHALLENGER, CHAMPION, HISTORY_TAG, champion_history, get_alias_version
from tests.conftest import MODEL_NAME, Store, run_cli, working_directory


@pytest.fixture(scope="module")
def two_versions(twin_store: Store) -> tuple[Store, dict[str, Any]]:
    from training.train import train

    with working_directory(twin_store.folder):
        second = train(twin_store.tables, twin_store.cfg, twin_store.data_dir)
    return twin_store, second


@pytest.fixture
def store(two_versions: tuple[Store, dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> Store:
    s = two_versions[0]
    monkeypatch.chdir(s.folder)
    s.activate()
    return s


def _aliases() -> tuple[str | None, str | None]:
    return get_alias_version(MODEL_NAME, CHAMPION), get_alias_version(MODEL_NAME, CHALLENGER)


def _cli(store: Store, *args: str) -> Any:
    res = run_cli([*args, "--config", store.config_path])
    store.activate()  # the CLI re-points MLflow; keep this test's client on the same store
    return res


def test_second_training_is_challenger_only(two_versions: tuple[Store, dict[str, Any]]) -> None:
    store, second = two_versions
    first = store.summary
    assert first["model_version"] == "1" and first["aliases"] == ["challenger", "champion"]
    assert second["model_version"] == "2"
    assert second["aliases"] == ["challenger"]
    assert second["model_uri"] == f"models:/{MODEL_NAME}/2"
    assert second["run_id"] != first["run_id"]
    # same data, config and seed: the resumed study gives the same model and the same test metrics
    assert second["metrics"]["test_roc_auc"] == first["metrics"]["test_roc_auc"]
    assert second["tuning"]["n_trials"] == 3, "the study was resumed, not re-run"


def test_model_card_compares_the_challenger_with_the_champion(store: Store) -> None:
    from model.card import model_card
    from model.registry import load_churn_model

    meta = load_churn_model(f"models:/{MODEL_NAME}/2").meta
    card = model_card(meta, MODEL_NAME, "2", f"models:/{MODEL_NAME}/2")
    assert card["version"] == "2" and card["aliases"] == ["challenger"] and card["run_id"]
    assert card["cutoffs"]["test"] == meta["test_cutoffs"] and card["trained_at"]
    assert [round(b["count"]) for b in card["reliability"]] and len(card["lift"]) == 20
    prev = card["previous"]
    assert prev["version"] == "1" and "champion" in prev["aliases"]
    assert prev["metrics"]["test_roc_auc"] == pytest.approx(card["metrics"]["test_roc_auc"])  # same seed, same model
    card_v1 = model_card(load_churn_model(f"models:/{MODEL_NAME}/1").meta, MODEL_NAME, "1", "models:/x/1")
    assert card_v1["previous"] is None  # the first champion has nothing before it


def test_promote_and_rollback_story(store: Store) -> None:
    client = store.client()
    # 0. after two trainings: v1 champion, v2 challenger, one history entry
    assert _aliases() == ("1", "2")
    history = champion_history(MODEL_NAME)
    assert len(history) == 1
    assert history[0]["version"] == "1" and history[0]["previous"] is None
    assert history[0]["reason"] == "first registered version"

    # 1. plain promote: both tested on 2025-12-01 with the same input hash -> stored metrics are compared;
    #    equal ROC-AUC is not better -> exit 1, nothing changes
    res = _cli(store, "promote")
    assert res.exit_code == 1, res.output
    assert "not promoted" in res.output
    assert "stored test metrics on cutoff 2025-12-01" in res.output
    assert _aliases() == ("1", "2")
    assert len(champion_history(MODEL_NAME)) == 1

    # 2. --force without a reason is refused
    res = _cli(store, "promote", "--force")
    assert res.exit_code == 1
    assert "--force needs --reason" in res.output
    assert _aliases() == ("1", "2")

    # 3. --force with a reason moves the champion and records why
    res = _cli(store, "promote", "--force", "--reason", "pilot for the spring campaign")
    assert res.exit_code == 0, res.output
    assert _aliases() == ("2", "2")
    history = champion_history(MODEL_NAME)
    assert len(history) == 2
    assert history[-1]["version"] == "2" and history[-1]["previous"] == "1"
    assert history[-1]["reason"] == "forced: pilot for the spring campaign"
    assert "champion_since" in client.get_model_version(MODEL_NAME, "2").tags

    # 4. promoting the champion again changes nothing
    res = _cli(store, "promote")
    assert res.exit_code == 1 and "already the champion" in res.output
    assert len(champion_history(MODEL_NAME)) == 2

    # 5. rollback restores the previous champion and keeps the history
    res = _cli(store, "rollback", "--reason", "complaints from the field")
    assert res.exit_code == 0, res.output
    assert "from v2 to v1" in res.output
    assert _aliases() == ("1", "2")
    history = champion_history(MODEL_NAME)
    assert len(history) == 3
    assert history[-1]["version"] == "1" and history[-1]["previous"] == "2"
    assert history[-1]["reason"] == "rollback from v2: complaints from the field"
    assert [h["version"] for h in history] == ["1", "2", "1"]
    assert json.loads(client.get_registered_model(MODEL_NAME).tags[HISTORY_TAG]) == history

    # 6. a challenger whose stored ROC-AUC is higher on the same window is promoted without --force
    real = client.get_model_version(MODEL_NAME, "2").tags["test_roc_auc"]
    client.set_model_version_tag(MODEL_NAME, "2", "test_roc_auc", "0.99999")
    try:
        res = _cli(store, "promote", "--reason", "better on the same window")
        assert res.exit_code == 0, res.output
        assert "promoted: challenger v2 ROC-AUC 1.0000 vs champion v1" in res.output  # 0.99999 to 4 places
        assert _aliases() == ("2", "2")
        assert champion_history(MODEL_NAME)[-1]["reason"] == "better on the same window"
    finally:
        client.set_model_version_tag(MODEL_NAME, "2", "test_roc_auc", real)
    res = _cli(store, "rollback")
    assert res.exit_code == 0 and _aliases() == ("1", "2")

    # 7. different test windows: stored metrics cannot be compared -> refused, asks for --data
    client.set_model_version_tag(MODEL_NAME, "2", "test_cutoff", "2025-11-01")
    try:
        res = _cli(store, "promote")
        assert res.exit_code == 1
        assert "different windows" in res.output and "--data" in res.output
        assert _aliases() == ("1", "2")
    finally:
        client.set_model_version_tag(MODEL_NAME, "2", "test_cutoff", "2025-12-01")

    # 8. --data re-scores both versions on the challenger's cutoff now: identical models, not better
    res = _cli(store, "promote", "--data", store.data_dir)
    assert res.exit_code == 1, res.output
    assert "not promoted" in res.output and "re-scored on cutoff 2025-12-01" in res.output
    assert _aliases() == ("1", "2")
    assert [h["version"] for h in champion_history(MODEL_NAME)] == ["1", "2", "1", "2", "1"]


def test_rollback_without_previous_champion_is_refused(in_store: Store) -> None:
    # trained_store has only version 1, champion since its first registration
    res = run_cli(["rollback", "--config", in_store.config_path])
    in_store.activate()
    assert res.exit_code == 1
    assert "no previous champion" in res.output
    assert get_alias_version(MODEL_NAME, CHAMPION) == "1"
    assert len(champion_history(MODEL_NAME)) == 1



@pytest.mark.parametrize("extra", [[], ["--force", "--reason", "typo"]])
def test_promote_unknown_version_is_missing_input(store: Store, extra: list[str]) -> None:
    before = (_aliases(), champion_history(MODEL_NAME))
    res = _cli(store, "promote", "--version", "99", *extra)
    assert res.exit_code == 66, res.output
    assert f"model '{MODEL_NAME}' has no version 99" in res.output
    assert (_aliases(), champion_history(MODEL_NAME)) == before


@pytest.mark.parametrize(("command", "message"), [("promote", "has no challenger"), ("rollback", "has no champion")])
def test_registry_commands_without_the_model_exit_66(command: str, message: str, in_store: Store, tmp_path) -> None:
    import yaml

    from tests.conftest import small_config_dict

    config = tmp_path / "nobody.yaml"  # the trained store, but a model name that was never registered
    config.write_text(yaml.safe_dump(small_config_dict(in_store.folder, {"mlflow": {"model_name": "nobody"}})))
    res = run_cli([command, "--config", config])
    in_store.activate()
    assert res.exit_code == 66, res.output
    assert f"model 'nobody' {message}" in res.output and "unexpected" not in res.output


def test_local_store_model_is_read_in_place_without_a_download(in_store: Store, monkeypatch) -> None:
    """A local store's artifacts are read where they are (no ``mlflow.artifacts`` copy); the safe loader still runs."""
    import mlflow.artifacts

    from model.registry import _local_artifact_dir, load_churn_model

    def no_download(**kwargs: Any) -> str:
        raise AssertionError(f"downloaded {kwargs}")

    monkeypatch.setattr(mlflow.artifacts, "download_artifacts", no_download)
    folder = _local_artifact_dir(f"models:/{MODEL_NAME}@{CHAMPION}")
    assert folder is not None and (folder / "booster.json").is_file()
    model = load_churn_model(f"models:/{MODEL_NAME}@{CHAMPION}")
    assert model.features and model.meta == load_churn_model(str(folder)).meta
    assert _local_artifact_dir("models:/no-such-model@champion") is None
