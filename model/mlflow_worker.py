"""The MLflow side of ``churn score``, in this process or in a helper process that works while the scoring runs.

Importing MLflow and building its SQLAlchemy store costs a process about 2 s of CPU, more than scoring a
few thousand customers. ``churn score`` therefore finds its model without MLflow
(:func:`churn.mlflow_runs.sqlite_alias_lookup`) and starts an :class:`MlflowWorker` before it reads the
data: a ``python -m model.mlflow_worker`` process that imports MLflow, sets up the store and reaps dead runs
on the other core, then serves the scoring's requests (the model card's registry facts, the scoring run)
over JSON lines on its stdin/stdout. :class:`LocalMlflow` answers the same requests in the calling process
(``churn demo``, tests, library callers), so both paths log exactly the same run.

Requests: ``card`` (:func:`model.card.model_card`), ``start`` (set up the store, reap dead runs, start the
scoring run and log its tags, metrics and files: :func:`churn.mlflow_runs.log_scoring_run`; the run id) and
``end`` (the run's final status: FINISHED after publication, FAILED on an error). A caller killed before ``end``
leaves its run RUNNING, to be reaped as KILLED by the next command, exactly as without the helper.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

log = logging.getLogger(__name__)


class MlflowWorkerError(RuntimeError):
    """A request failed in the helper process (its message names the MLflow error)."""


def _setup(mlflow_cfg: dict[str, Any]) -> str:
    from churn.config import MlflowConfig
    from churn.mlflow_runs import reap_dead_runs
    from model.registry import setup_mlflow

    cfg = MlflowConfig(**mlflow_cfg)
    uri = setup_mlflow(cfg)
    reap_dead_runs(cfg.experiment)
    return uri


def _card(mlflow_cfg: dict[str, Any], meta: dict[str, Any], name: str, version: str | None, uri: str) -> dict[str, Any]:
    from churn.config import MlflowConfig
    from model.card import model_card
    from model.registry import setup_mlflow

    setup_mlflow(MlflowConfig(**mlflow_cfg))  # the store the card reads: a few ms once MLflow is set up
    return model_card(meta, name, version, uri)


def _start(mlflow_cfg: dict[str, Any], record: dict[str, Any], staged: str, owner: dict[str, str]) -> str:
    from churn.mlflow_runs import log_scoring_run

    _setup(mlflow_cfg)  # a few ms once MLflow is loaded: the same store and experiment in both paths
    return log_scoring_run(record, Path(staged), owner)


def _end(status: str) -> None:
    import mlflow

    mlflow.end_run(status=status)


OPS: dict[str, Callable[..., Any]] = {"setup": _setup, "card": _card, "start": _start, "end": _end}


class LocalMlflow:
    """The requests answered in this process (MLflow is imported on the first one)."""

    def call(self, op: str, **args: Any) -> Any:
        return OPS[op](**args)


class MlflowWorker:
    """A helper process that loads MLflow and sets up the store as soon as it starts; a context manager.

    Requests are answered in order; :meth:`call` waits for its answer (and that of any earlier request).
    """

    def __init__(self, mlflow_cfg: dict[str, Any]) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}  # this process's modules
        self._proc = subprocess.Popen([sys.executable, "-m", "model.mlflow_worker",
                                       str(logging.getLogger().getEffectiveLevel()), sys.argv[0]],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self._pending = 0
        self._send("setup", mlflow_cfg=mlflow_cfg)  # answered while the caller scores

    def _send(self, op: str, **args: Any) -> None:
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write(json.dumps({"op": op, "args": args}, default=str) + "\n")
            self._proc.stdin.flush()
        except BrokenPipeError as exc:
            raise MlflowWorkerError(f"the MLflow helper process exited (code {self._proc.poll()})") from exc
        self._pending += 1

    def call(self, op: str, **args: Any) -> Any:
        self._send(op, **args)
        assert self._proc.stdout is not None
        error, result = None, None
        while self._pending:
            line = self._proc.stdout.readline()
            if not line:
                raise MlflowWorkerError(f"the MLflow helper process exited (code {self._proc.wait()}) "
                                        f"before answering {op!r}")
            self._pending -= 1
            reply = json.loads(line)
            error = error or reply.get("error")
            result = reply.get("ok")
        if error:
            raise MlflowWorkerError(f"MLflow: {error}")
        return result

    def close(self) -> None:
        """Close its stdin (it then exits) and wait for it."""
        if self._proc.stdin is not None and not self._proc.stdin.closed:
            self._proc.stdin.close()
        try:
            self._proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()

    def __enter__(self) -> MlflowWorker:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is not None:  # the command failed: no request of it is pending that matters (SQLite is atomic)
            self._proc.kill()
        self.close()


def serve(requests: IO[str], replies: IO[str]) -> None:
    """Answer JSON-line requests until ``requests`` ends. A run the caller did not end stays RUNNING, as when the
    scoring process itself logs and is killed: its owner tags name the scoring process, so the next command
    marks it KILLED (:func:`churn.mlflow_runs.reap_dead_runs`)."""
    for line in requests:
        msg = json.loads(line)
        try:
            reply: dict[str, Any] = {"ok": OPS[msg["op"]](**msg["args"])}
        except Exception as exc:  # noqa: BLE001 - every failure goes back to the caller, which raises it
            log.debug("MLflow request %s failed", msg.get("op"), exc_info=True)
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        replies.write(json.dumps(reply, default=str) + "\n")
        replies.flush()


def main(argv: list[str]) -> None:
    """``python -m model.mlflow_worker [LOG_LEVEL [SOURCE]]``: replies on the original stdout, anything printed to
    stderr. SOURCE: the scoring process's program, which MLflow records as the run's source (``sys.argv[0]``)."""
    if len(argv) > 1:
        sys.argv = argv[1:]
    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # a library's print() must not corrupt the replies
    sys.stdout = sys.stderr
    level = int(argv[0]) if argv else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", datefmt="%H:%M:%S",
                        stream=sys.stderr)
    for noisy in ("alembic", "urllib3", "git"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    from churn.redact import RedactingFilter

    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactingFilter())
    serve(sys.stdin, replies)
    logging.shutdown()
    sys.stderr.flush()
    os._exit(0)  # every run is ended and committed: skip the interpreter's teardown of MLflow and SQLAlchemy


if __name__ == "__main__":
    main(sys.argv[1:])
