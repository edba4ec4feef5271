"""Publication, locks, stale staging, killed-run reaping and secret redaction (small, in-process where possible)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from churn.errors import EXIT_TEMPFAIL, UsageError
from churn.publish import (
    BusyError,
    clean_stale_staging,
    file_lock,
    new_staging,
    output_lock,
    publish,
    staged_output,
)


@pytest.fixture(autouse=True)
def _own_lock_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHURN_LOCK_DIR", str(tmp_path / "locks"))


def _write(folder: Path, files: dict[str, str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)


def _read(folder: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(folder.iterdir())}


def test_publish_swaps_the_whole_set(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _write(out, {"summary.json": "old", "a.csv": "old-a", "only_old.csv": "x"})
    st = new_staging(out)
    _write(st, {"summary.json": "new", "a.csv": "new-a"})
    publish(st, out)
    assert _read(out) == {"a.csv": "new-a", "summary.json": "new"}  # nothing of the old set survives
    assert not list(tmp_path.glob(".staging-*")), "the old set is deleted"


def test_first_publish_is_a_rename(tmp_path: Path) -> None:
    out = tmp_path / "new" / "out"
    with staged_output(out) as st:
        _write(st, {"summary.json": "{}"})
    assert _read(out) == {"summary.json": "{}"}
    assert not list(out.parent.glob(".staging-*"))


def test_failed_block_publishes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _write(out, {"summary.json": "old"})
    with pytest.raises(RuntimeError), staged_output(out) as st:
        _write(st, {"summary.json": "half"})
        raise RuntimeError("boom")
    assert _read(out) == {"summary.json": "old"}
    assert not list(tmp_path.glob(".staging-*"))


def test_foreign_folder_and_file_are_refused(tmp_path: Path) -> None:
    foreign = tmp_path / "home"
    _write(foreign, {"thesis.tex": "years of work"})
    with pytest.raises(UsageError, match="not a churn output"), output_lock(foreign):
        pass
    (tmp_path / "f").write_text("x")
    with pytest.raises(UsageError, match="not a folder"), output_lock(tmp_path / "f"):
        pass
    assert _read(foreign) == {"thesis.tex": "years of work"}


def test_stale_staging_is_cleaned_under_the_lock(tmp_path: Path) -> None:
    out = tmp_path / "out"
    stale = tmp_path / ".staging-out-12345-abcd"
    _write(stale, {"scores.parquet": "half"})
    other = tmp_path / ".staging-outer-1-x"  # another output's staging is not ours
    _write(other, {"x": "y"})
    with output_lock(out):
        assert not stale.exists()
    assert other.exists()
    assert clean_stale_staging(out) == []


def test_second_caller_gets_busy_with_exit_75(tmp_path: Path) -> None:
    with file_lock("some/output", "output some/output"):
        with pytest.raises(BusyError, match=f"pid {os.getpid()}") as exc, file_lock("some/output", "output x"):
            pass
        assert exc.value.exit_code == EXIT_TEMPFAIL == 75
    with file_lock("some/output", "again"):  # released on exit
        pass


def test_lock_of_a_killed_process_is_free(tmp_path: Path) -> None:
    code = ("import os, signal\nfrom churn.publish import file_lock\n"
            "with file_lock('dead/out', 'x'):\n    os.kill(os.getpid(), signal.SIGKILL)\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    res = subprocess.run([sys.executable, "-c", code], env=env, timeout=60)
    assert res.returncode == -9
    with file_lock("dead/out", "x"):  # the kernel dropped the dead holder's lock
        pass


def test_churn_score_refuses_a_locked_out(tmp_path: Path) -> None:
    out = (tmp_path / "out").absolute()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    with output_lock(out):
        res = subprocess.run([sys.executable, "-c", "from churn.cli import main; main()", "score", "--data",
                              str(tmp_path), "--out", str(out)], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 75, res.stderr
    assert "in use by another churn process" in res.stderr and "Traceback" not in res.stderr


# --------------------------------------------------------------------------- killed runs
def test_reap_marks_runs_of_dead_processes_killed(tmp_path: Path) -> None:
    import mlflow
    from mlflow.tracking import MlflowClient

    from churn.mlflow_runs import TAG_PID, TAG_START, owner_tags, reap_dead_runs

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client = MlflowClient()
    exp = client.create_experiment("reap", artifact_location=str(tmp_path / "art"))
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = gone.stdout.strip()
    dead = client.create_run(exp, tags={**owner_tags(), TAG_PID: dead_pid, TAG_START: "1"})
    child = client.create_run(exp, tags={"mlflow.parentRunId": dead.info.run_id})
    alive = client.create_run(exp, tags=owner_tags())
    foreign = client.create_run(exp, tags={**owner_tags(), "churn.host": "another-host", TAG_PID: dead_pid})
    legacy = client.create_run(exp)  # no owner tags: cannot be told, left alone
    assert reap_dead_runs("reap") == sorted([dead.info.run_id, child.info.run_id])
    status = {r: client.get_run(r).info.status for r in (dead.info.run_id, child.info.run_id, alive.info.run_id,
                                                          foreign.info.run_id, legacy.info.run_id)}
    assert list(status.values()) == ["KILLED", "KILLED", "RUNNING", "RUNNING", "RUNNING"]
    assert reap_dead_runs("nope") == []


# --------------------------------------------------------------------------- secrets
def test_secret_fields_are_redacted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import yaml

    from churn.config import load_config
    from churn.redact import REDACTED, RedactingFilter, redact_text, redacted_dump

    root = Path(__file__).resolve().parents[2]
    raw = yaml.safe_load((root / "configs" / "default.yaml").read_text())
    raw.setdefault("scoring", {})["pseudonymize_key"] = "s3cr3t-KEY-0042"
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(raw))
    cfg = load_config(p)
    assert cfg.scoring.pseudonymize_key == "s3cr3t-KEY-0042"  # the value itself is usable
    dump = redacted_dump(cfg)
    assert dump["scoring"]["pseudonymize_key"] == REDACTED
    assert dump["scoring"]["model_alias"] == cfg.scoring.model_alias
    assert "s3cr3t-KEY-0042" not in redact_text(p.read_text(), cfg)
    logger = logging.getLogger("test.redact")
    handler = logging.StreamHandler(stream := __import__("io").StringIO())
    handler.addFilter(RedactingFilter())
    logger.addHandler(handler)
    try:
        logger.warning("key is %s", "s3cr3t-KEY-0042")
    finally:
        logger.removeHandler(handler)
    assert stream.getvalue() == f"key is {REDACTED}\n"


def test_second_churn_train_on_a_study_is_refused(tmp_path: Path) -> None:
    """A second `churn train` on the same study stops with exit 75 before any tuning (no doubled trial budget)."""
    from churn.config import load_config
    from churn.generate import generate_demo, write_demo
    from features.contract import load_tables
    from tests.conftest import write_small_config
    from training.train import study_lock

    data = tmp_path / "data"
    write_demo(generate_demo(n_customers=60, seed=2), data)
    config = write_small_config(tmp_path / "cfg")
    cfg = load_config(config)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    with study_lock(cfg, load_tables(data, cfg).input_hash):
        res = subprocess.run([sys.executable, "-c", "from churn.cli import main; main()", "train", "--config",
                              str(config), "--data", str(data)], env=env, capture_output=True, text=True, timeout=300,
                             cwd=tmp_path)
    assert res.returncode == 75, res.stderr[-2000:]
    assert "training study churn-xgb-" in res.stderr and "in use by another churn process" in res.stderr
    assert not (tmp_path / "cfg" / "mlruns").exists(), "refused before touching the stores"
