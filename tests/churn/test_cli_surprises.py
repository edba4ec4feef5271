"""The CLI's first-hour surprises (issue 16), one test each: global options anywhere, no model checked
before data, no store created by `score`, did-you-mean for config keys, lazy heavy imports."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from churn.config import load_config
from churn.errors import EXIT_CONFIG, EXIT_NO_INPUT, ConfigError
from tests.conftest import ROOT, run_cli, write_small_config


def test_verbose_and_quiet_accepted_after_the_subcommand(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for flag in ("-v", "-q", "--verbose"):
        res = run_cli(["score", "--data", tmp_path, "--out", tmp_path / "out", "--config",
                       write_small_config(tmp_path), flag])
        assert "No such option" not in res.output
        assert res.exit_code == EXIT_NO_INPUT  # got past option parsing: fails on the missing store
    assert "-v, --verbose" in run_cli(["train", "--help"]).output


def test_score_without_store_fails_before_loading_data_and_creates_no_store(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import features.contract

    def _no_load(*a: object, **k: object) -> None:
        raise AssertionError("data was loaded before the model was checked")

    monkeypatch.setattr(features.contract, "load_tables", _no_load)
    monkeypatch.chdir(tmp_path)
    config = write_small_config(tmp_path / "cfg", absolute_store=False)
    res = run_cli(["score", "--data", tmp_path, "--out", tmp_path / "out", "--config", config])
    assert res.exit_code == EXIT_NO_INPUT
    assert "no MLflow store at" in res.output and "churn train" in res.output
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "out").exists()


def test_missing_model_folder_is_reported_before_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    res = run_cli(["score", "--data", tmp_path, "--out", tmp_path / "out", "--model", tmp_path / "nope",
                   "--config", write_small_config(tmp_path)])
    assert res.exit_code == EXIT_NO_INPUT and "model folder not found" in res.output


@pytest.mark.parametrize(("section", "key", "suggestion"), [
    ("label", "horizon", "horizon_days"),
    ("scoring", "budjet", "budget"),
    ("training", "n_cutoff", "n_cutoffs"),
], ids=["prefix", "typo", "plural"])
def test_unknown_config_key_suggests_the_close_one(tmp_path: Path, section: str, key: str, suggestion: str) -> None:
    path = write_small_config(tmp_path, overrides={section: {key: 1}})
    with pytest.raises(ConfigError, match=rf"{section}\.{key}: Extra inputs are not permitted "
                                          rf"\(did you mean '{suggestion}'\?\)"):
        load_config(path)


def _imports_after(args: list[str], tmp_path: Path) -> tuple[int, str, str]:
    """Run the CLI in a fresh interpreter: exit code, heavy modules imported by the end, all output."""
    code = textwrap.dedent(f"""
        import atexit, sys
        heavy = ("pandas", "mlflow", "xgboost", "numpy", "sklearn")
        atexit.register(lambda: print("HEAVY:" + ",".join(m for m in heavy if m in sys.modules)))
        from churn.cli import main
        main({args!r})
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=60,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    heavy = [line.removeprefix("HEAVY:") for line in proc.stdout.splitlines() if line.startswith("HEAVY:")]
    return proc.returncode, heavy[0] if heavy else "?", proc.stdout + proc.stderr


def test_help_and_config_validation_import_no_heavy_library(tmp_path: Path) -> None:
    rc, heavy, out = _imports_after(["--help"], tmp_path)
    assert (rc, heavy) == (0, ""), out
    bad = tmp_path / "bad.yaml"
    bad.write_text("label:\n  horizon: 30\n", encoding="utf-8")
    rc, heavy, out = _imports_after(["train", "--data", str(tmp_path), "--config", str(bad)], tmp_path)
    assert rc == EXIT_CONFIG and "did you mean 'horizon_days'" in out
    assert heavy == "", out


def test_churn_ui_serves_the_store_and_links_the_runs_table(tmp_path: Path) -> None:
    """`churn ui` starts MLflow's UI on the config's store and prints the runs-table link (plain `mlflow ui`
    would open the GenAI overview); the link's experiment is the config's, and the server answers."""
    import os
    import re
    import socket
    import urllib.request

    cfg_path = write_small_config(tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "churn.cli", "ui", "--no-browser", "--port", str(port),
                             "--config", str(cfg_path)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)})
    server: list[str] = []
    try:
        line = proc.stdout.readline()  # blocks until the server answers (or the command fails)
        m = re.search(r"(http://127\.0\.0\.1:(\d+)/#/experiments/(\d+)/runs\?workflowType=machine_learning)", line)
        assert m, line
        assert int(m.group(2)) == port
        import sqlite3

        with sqlite3.connect(tmp_path / "mlruns" / "mlflow.db") as con:  # the config's store and experiment
            row = con.execute("SELECT experiment_id FROM experiments WHERE name = ?",
                              (load_config(cfg_path).mlflow.experiment,)).fetchone()
        assert row is not None and str(row[0]) == m.group(3)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as r:
            assert r.status == 200
        # the server's session: mlflow ui, its uvicorn workers and job runners
        server = subprocess.run(["pgrep", "-f", f"mlflow ui --backend-store-uri sqlite:///{tmp_path}"],
                                capture_output=True, text=True).stdout.split()
        assert len(server) == 1, server
    finally:
        proc.terminate()  # SIGTERM, as a scheduler would send: the server and its workers must stop with it
        proc.wait(timeout=30)
    assert proc.returncode == 0
    left = subprocess.run(["pgrep", "-s", server[0]], capture_output=True, text=True).stdout.split()
    if left:  # name what is left
        left = subprocess.run(["ps", "-o", "pid,stat,args", "-s", server[0]], capture_output=True, text=True
                              ).stdout.strip().splitlines()[1:]
    if left:  # never leave a server behind, even when the assertion fails
        os.killpg(int(server[0]), 9)
    assert left == [], f"processes of `churn ui` still running after SIGTERM: {left}"
