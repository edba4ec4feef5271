"""Screenshot the MLflow UI's landing page for a store's experiment, offline and bounded in time.

Usage: ``python scripts/screenshot_mlflow.py FOLDER OUT.png [--experiment churn-early-warning] [--plain]``

FOLDER holds ``mlruns/mlflow.db``. Starts ``mlflow ui`` on 127.0.0.1 in the background, opens the link that
``churn train`` prints (the runs table; ``--plain`` drops ``?workflowType=machine_learning`` to show what the
bare experiment link opens on), screenshots it with headless Chromium, and stops the server.
Exit codes: 0 ok, 2 no Chromium, 1 the server or the browser failed.
"""

from __future__ import annotations

import argparse
import logging
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from screenshot_report import find_chromium

logger = logging.getLogger(__name__)
START_TIMEOUT_S = 90


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _experiment_id(db: Path, name: str) -> str:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        row = con.execute("SELECT experiment_id FROM experiments WHERE name = ?", (name,)).fetchone()
    if row is None:
        raise RuntimeError(f"no experiment {name!r} in {db}")
    return str(row[0])


def _wait_up(url: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow ui exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:  # noqa: S310 - a local URL we built
                if r.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise RuntimeError(f"mlflow ui did not answer within {START_TIMEOUT_S}s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Screenshot the MLflow UI on a store (offline).")
    parser.add_argument("folder", type=Path, help="folder holding mlruns/mlflow.db")
    parser.add_argument("out", type=Path, help="PNG file to write")
    parser.add_argument("--experiment", default="churn-early-warning")
    parser.add_argument("--plain", action="store_true", help="the bare experiment link, without workflowType")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    browser = find_chromium()
    if browser is None:
        logger.error("no Chromium found")
        return 2
    db = (args.folder / "mlruns" / "mlflow.db").resolve()
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    proc = subprocess.Popen([str(mlflow_bin), "ui", "--backend-store-uri", f"sqlite:///{db}", "--host", "127.0.0.1",
                             "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_up(base + "/", proc)
        page = f"{base}/#/experiments/{_experiment_id(db, args.experiment)}"
        url = page if args.plain else f"{page}/runs?workflowType=machine_learning"
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
            subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                            f"--user-data-dir={profile}", "--window-size=1500,1000", "--virtual-time-budget=20000",
                            f"--screenshot={args.out.resolve()}", url], capture_output=True, timeout=120, check=False)
        if not args.out.is_file():
            raise RuntimeError("Chromium wrote no screenshot")
        logger.info("wrote %s from %s", args.out, url)
        return 0
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        logger.error("%s", exc)
        return 1
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


if __name__ == "__main__":
    sys.exit(main())
