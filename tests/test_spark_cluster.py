"""``--engine spark`` on a real multi-process cluster: a standalone master and two workers on 127.0.0.1.

The test starts them with the pyspark install's ``bin/spark-class``, trains a tiny model into a SQLite
registry (a path every worker on this machine sees, as docs/spark.md describes), then in a separate driver
process scores with both engines: executors load the pinned model from the registry themselves, and the
alert files must be byte-identical. Skipped cleanly without Java, pyspark or free local ports.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pyspark = pytest.importorskip("pyspark")
if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
    pytest.skip("Spark needs Java", allow_module_level=True)

SPARK_CLASS = Path(pyspark.__file__).parent / "bin" / "spark-class"

JOB = r'''
import json, sys
from pathlib import Path
import pandas as pd
from churn.config import load_config
from churn.generate import generate_demo, write_demo
from features.contract import load_tables
from features.spark import get_spark
from inference.score import score
from inference.spark import score_spark
from tests.conftest import write_small_config
from training.train import train

master, folder = sys.argv[1], Path(sys.argv[2])
data = folder / "data"
write_demo(generate_demo(n_customers=300, seed=3), data)
cfg = load_config(write_small_config(folder, overrides={"training": {"tuning": {"n_trials": 1}},
                                                        "scoring": {"alert_min_tier": "low"}}))
tables = load_tables(data, cfg.data)
train(tables, cfg, data)
as_of = (tables.data_end + pd.Timedelta(days=1)).normalize()
local = score(tables, cfg, as_of, folder / "local", log_to_mlflow=False)
spark = get_spark(master, app_name="churn-test-cluster", **{"spark.executor.cores": "1", "spark.cores.max": "2",
                  "spark.executor.memory": "768m", "spark.sql.shuffle.partitions": "4", "spark.ui.enabled": "false"})
got = score_spark(spark, data, cfg, as_of, folder / "spark", log_to_mlflow=False, n_buckets=4)
hosts = sorted({e.host() for e in spark.sparkContext._jsc.sc().statusTracker().getExecutorInfos()})
executors = spark.sparkContext._jsc.sc().getExecutorMemoryStatus().size() - 1
spark.stop()
same = {n: (folder / "spark" / n).read_bytes() == (folder / "local" / n).read_bytes()
        for n in ("alerts.parquet", "alerts.csv", "alerts.jsonl")}
print("RESULT " + json.dumps({"same": same, "n_alerts": [local["n_alerts"], got["n_alerts"]],
                              "executors": executors, "master": got["spark"]["master"]}))
'''


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _alive_workers(ui_port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/json/", timeout=2) as r:
            return int(json.load(r).get("aliveworkers", 0))
    except OSError:
        return 0


@pytest.fixture
def cluster(tmp_path: Path):
    """A standalone master and two one-core workers bound to 127.0.0.1, torn down afterwards."""
    if not SPARK_CLASS.exists():
        pytest.skip(f"no spark-class in the pyspark install ({SPARK_CLASS})")
    try:
        port, ui, w1, w2 = _free_ports(4)
    except OSError as exc:
        pytest.skip(f"no free local ports: {exc}")
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable,
           "SPARK_HOME": str(SPARK_CLASS.parent.parent), "SPARK_LOG_DIR": str(tmp_path / "logs")}
    url = f"spark://127.0.0.1:{port}"
    cmds = [[str(SPARK_CLASS), "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
             "--webui-port", str(ui)]]
    cmds += [[str(SPARK_CLASS), "org.apache.spark.deploy.worker.Worker", url, "--host", "127.0.0.1", "--cores", "1",
              "--memory", "1g", "--webui-port", str(w), "--work-dir", str(tmp_path / f"work{w}")] for w in (w1, w2)]
    procs = []
    try:
        for i, cmd in enumerate(cmds):
            with open(tmp_path / f"daemon{i}.log", "wb") as log:
                procs.append(subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT))
            if i == 0:
                time.sleep(3)
        deadline = time.time() + 120
        while _alive_workers(ui) < 2:
            if time.time() > deadline or any(p.poll() is not None for p in procs):
                pytest.skip("the standalone cluster did not come up: " + (tmp_path / "daemon0.log").read_text()[-500:])
            time.sleep(1)
        yield url, env
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


def test_scoring_on_a_two_worker_cluster_gives_the_default_engines_alerts(cluster, tmp_path: Path) -> None:
    url, env = cluster
    root = Path(__file__).resolve().parents[1]
    env = {**env, "PYTHONPATH": os.pathsep.join([str(root), env.get("PYTHONPATH", "")])}
    run = subprocess.run([sys.executable, "-c", JOB, url, str(tmp_path / "job")], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=900)
    lines = [ln for ln in run.stdout.splitlines() if ln.startswith("RESULT ")]
    assert run.returncode == 0 and lines, run.stderr[-3000:]
    result = json.loads(lines[-1].removeprefix("RESULT "))
    assert result["master"] == url and result["executors"] == 2  # two executors, one per worker
    assert result["n_alerts"][0] == result["n_alerts"][1] > 0
    assert result["same"] == {"alerts.parquet": True, "alerts.csv": True, "alerts.jsonl": True}
