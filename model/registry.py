"""MLflow set-up and the model registry: log and register versions, move aliases, keep champion history, load.

A model version points at a run's ``model/`` artifact folder, which holds only the data files that
:meth:`model.artifact.ChurnModel.save` writes (XGBoost JSON, JSON, Parquet): no pyfunc, no pickle.
Loading downloads that folder and reads it with the safe loader, which refuses pickled folders.

Aliases, not the deprecated stages: every new version becomes ``challenger``; the first version
also becomes ``champion``. Promotions and rollbacks are recorded as tags, so the registry itself
answers "which version was champion when".
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from churn.config import MlflowConfig
from churn.errors import InputNotFoundError
from churn.mlflow_runs import mlflow_client

if TYPE_CHECKING:  # imported where a model is loaded: the MLflow helper process never needs XGBoost
    from model.artifact import ChurnModel

MODEL_ARTIFACT_PATH = "model"

log = logging.getLogger(__name__)
CHAMPION, CHALLENGER = "champion", "challenger"
# MLflow 3.17's UI decides GenAI overview vs runs table by its global GenAI / Machine-learning switch alone (URL
# `?workflowType=machine_learning`, else browser storage, default genai); this tag only stops the type prompt.
EXPERIMENT_KIND_TAG, ML_EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
EXPERIMENT_TAGS = {EXPERIMENT_KIND_TAG: ML_EXPERIMENT_KIND}
HISTORY_TAG = "champion_history"


def setup_mlflow(cfg: MlflowConfig) -> str:
    """Point MLflow at the configured store (creating ``mlruns/`` and the experiment) and return the URI."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow

    uri = cfg.tracking_uri
    if uri.startswith("sqlite:///"):
        db_path = Path(uri.removeprefix("sqlite:///"))
        if not db_path.exists():  # say so: a relative store lands in whatever folder the command runs from
            log.info("creating a new MLflow store at %s", db_path.resolve())
        db_path.parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = mlflow_client()
    art = Path(cfg.artifact_location).resolve()
    exp = client.get_experiment_by_name(cfg.experiment)
    if exp is None:
        art.mkdir(parents=True, exist_ok=True)
        client.create_experiment(cfg.experiment, artifact_location=art.as_uri(), tags=EXPERIMENT_TAGS)
    else:
        if exp.tags.get(EXPERIMENT_KIND_TAG) != ML_EXPERIMENT_KIND:  # stores made before the tag existed
            client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, ML_EXPERIMENT_KIND)
        store = _store_path(uri)
        if uri.startswith("sqlite:///") and store is not None:
            _follow_moved_store(store, exp.artifact_location, art)
    mlflow.set_experiment(cfg.experiment)
    return uri


def runs_page_url(cfg: MlflowConfig, host: str = "http://127.0.0.1:5000") -> str:
    """Link to the experiment's runs table in ``mlflow ui`` (classic ML view, whatever the UI's switch says)."""

    exp = mlflow_client().get_experiment_by_name(cfg.experiment)
    path = f"#/experiments/{exp.experiment_id}/runs" if exp is not None else "#/experiments"
    return f"{host}/{path}?workflowType=machine_learning"


def _local_path(artifact_uri: str) -> Path | None:
    """Filesystem path of a local artifact URI (``file:///x`` or ``/x``), else None."""
    if artifact_uri.startswith("file://"):
        return Path(artifact_uri.removeprefix("file://"))
    return Path(artifact_uri) if artifact_uri.startswith("/") else None


def _follow_moved_store(db: Path, recorded: str, configured: Path) -> None:
    """Re-point artifact URIs after the ``mlruns/`` folder was moved or copied elsewhere.

    MLflow stores absolute artifact URIs (it resolves relative ones at creation), so a moved store
    would point into the old folder. When the recorded experiment folder is gone and the configured
    one (resolved from where the command runs) exists, the old prefix is replaced by the new one in
    the store's URI columns. Nothing happens while the recorded folder still exists.
    """
    import sqlite3

    old = _local_path(recorded)
    if old is None or old.exists() or not configured.is_dir() or old == configured:
        return
    columns = {"experiments": ["artifact_location"], "runs": ["artifact_uri"],
               "model_versions": ["source", "storage_location"], "logged_models": ["artifact_location"]}
    with sqlite3.connect(db) as con:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        for table, cols in columns.items():
            if table not in tables:
                continue
            for col in cols:
                for a, b in ((old.as_uri(), configured.as_uri()), (str(old), str(configured))):
                    con.execute(f"UPDATE {table} SET {col} = ? || substr({col}, ?) WHERE substr({col}, 1, ?) = ?",
                                (b, len(a) + 1, len(a), a))
    log.warning("MLflow store moved: artifact locations re-pointed from %s to %s", old, configured)


def _store_path(tracking_uri: str) -> Path | None:
    """The local file or folder a tracking URI points at (None for a server URI)."""
    if tracking_uri.startswith("sqlite:///"):
        return Path(tracking_uri.removeprefix("sqlite:///"))
    if tracking_uri.startswith("file:"):
        return Path(tracking_uri.removeprefix("file://").removeprefix("file:"))
    return None if "://" in tracking_uri else Path(tracking_uri)


def check_model_available(cfg: MlflowConfig, model_uri: str | None, alias: str) -> None:
    """Fail fast, before any data is read, when there is no model to score with; never create a store.

    A local folder must exist; otherwise the configured tracking store must already exist (a missing
    ``mlruns/mlflow.db`` is not created here) and hold the URI or the alias.
    """
    if model_uri is not None and "://" not in model_uri and not model_uri.startswith(("models:/", "runs:/")):
        if not Path(model_uri).is_dir():
            raise InputNotFoundError(f"model folder not found: {model_uri}")
        return
    store = _store_path(cfg.tracking_uri)
    if store is not None and not store.exists():
        raise InputNotFoundError(
            f"no MLflow store at {store.resolve()} (mlflow.tracking_uri {cfg.tracking_uri}, relative paths are "
            "taken from the current folder): run `churn train` or `churn demo` first, run from the folder that "
            "holds mlruns/, or pass --model")
    if model_uri is None and local_alias_model(cfg.tracking_uri, cfg.model_name, alias) is not None:
        return  # found without importing MLflow (the scoring run's MLflow set-up happens later)
    setup_mlflow(cfg)
    resolve_model_uri(cfg.model_name, model_uri, alias)


def local_alias_model(tracking_uri: str, name: str, alias: str) -> tuple[str, Path] | None:
    """``(version, local folder)`` of ``name@alias`` read from a local SQLite store without MLflow, or None
    (another store, no such alias, a folder not on this machine): then ask MLflow."""
    from urllib.parse import unquote

    from churn.mlflow_runs import sqlite_alias_lookup

    hit = sqlite_alias_lookup(tracking_uri, name, alias)
    if hit is None or hit[0] is None or hit[1] is None:
        return None
    local = _local_path(unquote(hit[1])) if hit[1].startswith("file://") else _local_path(hit[1])
    return (hit[0], local) if local is not None and local.is_dir() else None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def get_alias_version(name: str, alias: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(mlflow_client().get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def champion_history(name: str) -> list[dict[str, Any]]:
    rm = mlflow_client().get_registered_model(name)
    return json.loads(rm.tags.get(HISTORY_TAG, "[]"))


def set_champion(name: str, version: str, reason: str) -> None:
    """Move the champion alias to ``version`` and append the change to the history tag."""

    client = mlflow_client()
    previous = get_alias_version(name, CHAMPION)
    client.set_registered_model_alias(name, CHAMPION, version)
    history = champion_history(name)
    history.append({"version": str(version), "previous": previous, "at": _now(), "reason": reason})
    client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history))
    client.set_model_version_tag(name, version, "champion_since", history[-1]["at"])
    log.info("model '%s': champion is now version %s (was %s): %s", name, version, previous, reason)


def log_model(model: ChurnModel, artifact_path: str = MODEL_ARTIFACT_PATH) -> str:
    """Log ``model``'s data files as plain artifacts of the active run; return its ``runs:/`` URI."""
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        folder = model.save(Path(tmp) / artifact_path)
        mlflow.log_artifacts(str(folder), artifact_path=artifact_path)
    return f"runs:/{mlflow.active_run().info.run_id}/{artifact_path}"


def register(model_uri: str, run_id: str, name: str, tags: dict[str, str]) -> dict[str, Any]:
    """Register the run's model folder as a new version, alias it challenger, and champion if there is none yet."""
    from mlflow.exceptions import MlflowException

    client = mlflow_client()
    try:
        client.create_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    path = model_uri.removeprefix(f"runs:/{run_id}/")
    source = f"{client.get_run(run_id).info.artifact_uri.rstrip('/')}/{path}"
    mv = client.create_model_version(name, source=source, run_id=run_id, tags={**tags, "run_id": run_id})
    version = str(mv.version)
    client.set_registered_model_alias(name, CHALLENGER, version)
    aliases = [CHALLENGER]
    if get_alias_version(name, CHAMPION) is None:
        set_champion(name, version, "first registered version")
        aliases.append(CHAMPION)
    return {"model_name": name, "model_version": version, "aliases": aliases,
            "model_uri": f"models:/{name}/{version}"}


def resolve_model_uri(name: str, uri: str | None, alias: str) -> tuple[str, str | None]:
    """The URI to load (``--model`` or ``models:/<name>@<alias>``) and its registry version if known."""
    from mlflow.exceptions import MlflowException

    client = mlflow_client()
    if uri is None:
        version = get_alias_version(name, alias)
        if version is None:
            raise InputNotFoundError(
                f"no model '{name}' with alias '{alias}' in the registry: run `churn train` first or pass --model URI")
        return f"models:/{name}@{alias}", version
    if uri.startswith("models:/"):
        ref = uri.removeprefix("models:/")
        if "@" not in ref and "/" not in ref:
            raise InputNotFoundError(f"model URI {uri} names no version or alias: use models:/<name>/<version> "
                                     "or models:/<name>@<alias>")
        try:
            if "@" in ref:
                n, a = ref.split("@", 1)
                return uri, str(client.get_model_version_by_alias(n, a).version)
            n, v = ref.split("/", 1)
            client.get_model_version(n, v)
            return uri, v
        except MlflowException as exc:
            raise InputNotFoundError(f"model {uri} not found in the registry: {exc.message}") from exc
    return uri, None


def load_churn_model(uri: str) -> ChurnModel:
    """Load a model from a local folder or an MLflow URI (``models:/``, ``runs:/``) with the safe loader only.

    When the store keeps its artifacts on this machine (the default ``mlruns/``), the booster JSON and the
    metadata are read in place; other stores are downloaded first.
    """
    from model.artifact import ChurnModel

    if Path(uri).is_dir():
        return ChurnModel.load(uri)
    local = _local_artifact_dir(uri)
    if local is not None:
        return ChurnModel.load(local)
    import mlflow
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory(prefix="churn-model-") as tmp:
        try:
            local_copy = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp)
        except (MlflowException, OSError) as exc:
            raise InputNotFoundError(f"cannot load model {uri}: {exc}") from exc
        return ChurnModel.load(local_copy)


def _local_artifact_dir(uri: str) -> Path | None:
    """The folder on this machine a ``models:/`` or ``runs:/`` URI's artifacts are in, or None (remote, unknown)."""
    from urllib.parse import unquote

    from mlflow.exceptions import MlflowException

    client = mlflow_client()
    try:
        if uri.startswith("models:/"):
            ref = uri.removeprefix("models:/")
            if "@" in ref:
                name, alias = ref.split("@", 1)
                version = client.get_model_version_by_alias(name, alias).version
            else:
                name, version = ref.split("/", 1)
            source = client.get_model_version_download_uri(name, version)
        elif uri.startswith("runs:/"):
            run_id, _, sub = uri.removeprefix("runs:/").partition("/")
            source = client.get_run(run_id).info.artifact_uri.rstrip("/") + "/" + sub
        else:
            return None
    except (MlflowException, ValueError):
        return None
    local = _local_path(unquote(source)) if source.startswith("file://") else _local_path(source)
    return local if local is not None and local.is_dir() else None
