"""The final model after tuning: which rows it may learn from, how many rounds, how it is calibrated.

What is trained on what (``T`` = a cutoff, ``N`` = the label window in days, ``t`` = the first test cutoff):

* **tuning**: the cutoffs before the first validation cutoff ``v`` (rows embargoed at ``v``, below),
  early-stopped and scored on the validation cutoffs; Optuna picks the parameters and the rounds there.
* **evaluated model** (``training.refit.enabled``): the same parameters refitted on every cutoff before
  ``t`` (train + validation), rows embargoed at ``t``; ``rounds: scaled`` multiplies the tuned rounds by
  rows refitted / rows tuned on (more rows support more trees at the same learning rate), ``tuned`` keeps
  them. It is evaluated on ``t``: it never saw a label observed after ``t``.
* **calibration** (cross-fitted across cutoffs): each of the latest ``calibration_cutoffs`` cutoffs ``c``
  before ``t`` whose window is observed by ``t`` is predicted by a model refitted (same rule) on the rows
  embargoed at ``c``; the calibrator is fitted on these pooled out-of-time predictions, so the latest month
  is both trained on (by the final model) and calibrated on (out of fold).
* **registered model**: the evaluated one, or with ``include_test`` one more refit on every cutoff including
  the test cutoff(s); its calibrator then also uses the evaluated model's (out-of-time) test predictions.

Embargo: a training row at ``T`` whose label window ``(T, T + N]`` reaches past the edge ``e`` of the split it
is used against would see outcomes from that split's label window. ``censor`` keeps such rows with the window
cut at ``e`` (churned in ``(T, e]``, known at ``e``: a churner after ``e`` counts as not churned, label noise
but no leak); an inactivity label cannot be censored (a shorter window makes more customers look inactive),
so those rows are dropped, as ``drop`` does for every label.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb

from churn.config import Config
from churn.timebase import DAY
from features.contract import Tables
from features.timeline import censored_labels, label_window_days
from model.artifact import Calibrator, ChurnModel
from training.matrix import quantile_matrix
from training.tune import BASE_PARAMS

log = logging.getLogger(__name__)


def contiguous_rows(frame: pd.DataFrame, mask: np.ndarray) -> pd.DataFrame:
    """``frame[mask]`` with a fresh index; a mask selecting one run of consecutive rows (a cutoff range of the
    cutoff-ordered training table) is sliced, which copy-on-write pandas shares with ``frame`` instead of
    copying: the splits and refit row sets of a large table are not duplicated in memory."""
    idx = np.flatnonzero(mask)
    if len(idx) and idx[-1] - idx[0] + 1 == len(idx):
        return frame.iloc[idx[0]: idx[-1] + 1].reset_index(drop=True)
    return frame[mask].reset_index(drop=True)


def embargoed_rows(frame: pd.DataFrame, edge: pd.Timestamp, tables: Tables, cfg: Config) -> pd.DataFrame:
    """Rows of the cutoffs before ``edge`` that a model used at ``edge`` may train on (see the module doc),
    ordered by cutoff (stable).

    A cutoff whose label window ends by ``edge`` keeps its rows and labels; one whose window crosses
    ``edge`` is censored at ``edge`` (``training.embargo: censor``, churn_date labels) or dropped.
    """
    window = label_window_days(cfg.label) * DAY
    cut = frame["cutoff"]
    before = (cut < edge).to_numpy()
    crossing = sorted(set(cut[before & (cut + window > edge).to_numpy()]))
    censored: dict[pd.Timestamp, np.ndarray] = {}
    for t in crossing:
        lab = censored_labels(tables, t, cfg.label, edge) if cfg.training.embargo == "censor" else None
        if lab is None:
            log.info("embargo at %s: dropped cutoff %s (label window crosses it)", edge.date(), t.date())
            continue
        censored[t] = lab
        log.info("embargo at %s: cutoff %s kept with its label window cut at %s", edge.date(), t.date(), edge.date())
    keep = before & ~cut.isin([t for t in crossing if t not in censored]).to_numpy()
    if cut.is_monotonic_increasing:  # the stacked training table: no reordering, rows shared with ``frame``
        out = contiguous_rows(frame, keep)
    else:
        order = np.argsort(cut.to_numpy()[keep], kind="stable")
        out = frame[keep].iloc[order].reset_index(drop=True)
    if censored:
        label, ids, cuts = out["label"].to_numpy().copy(), pd.Index(tables.customers["customer_id"]), out["cutoff"]
        for t, lab in censored.items():
            rows = (cuts == t).to_numpy()
            label[rows] = lab[ids.get_indexer(out["customer_id"][rows])]
        out = out.assign(label=label)
    out.attrs["censored"] = [t for t in crossing if cfg.training.embargo == "censor" and cfg.label.definition == "churn_date"]
    return out


def scaled_rounds(best_iteration: int, n_rows: int, n_rows_tuned: int, rule: str) -> int:
    """Boosting rounds for a refit on ``n_rows``: the tuned count, or scaled by the row ratio (at least 1)."""
    rounds = best_iteration + 1
    if rule == "scaled" and n_rows_tuned > 0:
        rounds = int(round(rounds * n_rows / n_rows_tuned))
    return max(rounds, 1)


def calibration_method(method: str, y: np.ndarray, min_positives: int) -> str:
    """``isotonic`` needs enough churners to keep the ranking; below ``min_positives`` it falls back to Platt."""
    n_pos = int(np.sum(y))
    if method == "isotonic" and n_pos < min_positives:
        log.warning("calibration: isotonic needs at least %d churners to calibrate on, got %d: using platt "
                    "(keeps the ranking); set training.isotonic_min_positives to change", min_positives, n_pos)
        return "platt"
    return method


@dataclass
class Refitter:
    """Refits tuned parameters with a fixed number of rounds (no early stopping: nothing is held out)."""

    params: dict[str, Any]
    best_iteration: int
    n_rows_tuned: int
    features: list[str]
    categories: dict[str, list[str]]
    rule: str = "scaled"
    seed: int = 42
    n_threads: int = 2
    chunked: bool = False  # large tables: a QuantileDMatrix built chunk by chunk (training/matrix.py)
    fits: list[dict[str, Any]] = field(default_factory=list)

    def fit(self, rows: pd.DataFrame, purpose: str) -> ChurnModel:
        rounds, t0 = scaled_rounds(self.best_iteration, len(rows), self.n_rows_tuned, self.rule), time.perf_counter()
        full = {**BASE_PARAMS, **self.params, "seed": self.seed, "nthread": self.n_threads}
        booster = xgb.train(full, self._matrix(rows), num_boost_round=rounds, verbose_eval=False)
        cutoffs = cutoff_dates(rows["cutoff"]) if "cutoff" in rows else []
        self.fits.append({"purpose": purpose, "rows": len(rows), "rounds": rounds, "cutoffs": cutoffs})
        log.info("refit (%s): %d rows, %d cutoffs, %d rounds in %.1fs", purpose, len(rows), len(cutoffs), rounds,
                 time.perf_counter() - t0)
        return ChurnModel(booster, self.features, self.categories,
                          meta={"best_iteration": rounds - 1, "n_threads": self.n_threads})

    def _matrix(self, rows: pd.DataFrame) -> xgb.DMatrix:
        """The training matrix of ``rows``; ``chunked``: built chunk by chunk (training/matrix.py). One matrix
        at a time: keeping the evaluated model's for the baseline would hold it through the calibration folds."""
        proto = ChurnModel(xgb.Booster(), self.features, self.categories, meta={"n_threads": self.n_threads})
        if self.chunked:
            return quantile_matrix(rows, proto.prepare, self.n_threads, max_bin=self.params.get("max_bin"))
        return xgb.DMatrix(proto.prepare(rows), label=rows["label"], enable_categorical=True, nthread=self.n_threads)


def cutoff_dates(cutoffs: pd.Series) -> list[str]:
    """The distinct cutoffs of a column as sorted ISO dates."""
    return sorted({pd.Timestamp(t).date().isoformat() for t in cutoffs.unique()})


def cross_fitted_predictions(frame: pd.DataFrame, edge: pd.Timestamp, tables: Tables, cfg: Config,
                             refitter: Refitter) -> pd.DataFrame:
    """Out-of-time raw predictions for the latest calibration cutoffs before ``edge`` (columns label, p_raw, cutoff),
    in cutoff order.

    Folds are taken from the latest cutoff back; once the pooled predictions hold more than
    ``training.sampling.min_rows`` rows no further fold is fitted: each fold is a refit on almost every row, and
    a large table's latest month alone is plenty to calibrate on (a small table keeps every configured fold).
    """
    window = label_window_days(cfg.label) * DAY
    labelled = sorted(t for t in set(frame["cutoff"]) if t + window <= edge)
    chosen: list[pd.Timestamp] = []
    n_rows, cut = 0, frame["cutoff"]
    for c in reversed(labelled[-cfg.training.refit.calibration_cutoffs:]):
        if n_rows > cfg.training.sampling.min_rows:
            log.info("calibration fold %s not fitted: the later fold(s) already give %s out-of-time predictions "
                     "(more than training.sampling.min_rows)", c.date(), f"{n_rows:,}")
            break
        chosen.insert(0, c)
        n_rows += int((cut == c).sum())
    out = []
    for c in chosen:
        fold = embargoed_rows(frame, c, tables, cfg)
        target = contiguous_rows(frame, (frame["cutoff"] == c).to_numpy())
        if fold.empty or fold["label"].nunique() < 2:
            log.info("calibration fold %s skipped: too little labelled history before it", c.date())
            continue
        model = refitter.fit(fold, f"calibration fold {c.date()}")
        out.append(pd.DataFrame({"cutoff": c, "label": target["label"].to_numpy(),
                                 "p_raw": model.predict_raw(target)}))
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame(columns=["cutoff", "label", "p_raw"])


def fit_calibrator(oof: pd.DataFrame, cfg: Config) -> Calibrator:
    """The configured calibrator on pooled out-of-fold predictions (isotonic only with enough churners)."""
    y = oof["label"].to_numpy(dtype=int)
    if len(oof) == 0 or len(np.unique(y)) < 2:
        log.warning("calibration: no out-of-fold predictions with both classes: probabilities left uncalibrated")
        return Calibrator("none")
    method = calibration_method(cfg.training.calibration, y, cfg.training.isotonic_min_positives)
    return Calibrator.fit(method, oof["p_raw"].to_numpy(dtype=float), y)


def evaluated_model(frame: pd.DataFrame, test_edge: pd.Timestamp, tables: Tables, cfg: Config,
                    refitter: Refitter, meta: dict[str, Any]) -> tuple[ChurnModel, pd.DataFrame, pd.DataFrame]:
    """The model evaluated on the test cutoff: refitted on every row labelled by ``test_edge``, cross-fit calibrated.

    Returns the model, its training rows and the out-of-fold calibration predictions.
    """
    rows = embargoed_rows(frame, test_edge, tables, cfg)
    model = refitter.fit(rows, "evaluated model")
    oof = cross_fitted_predictions(frame, test_edge, tables, cfg, refitter)
    model.calibrator = fit_calibrator(oof, cfg)
    model.meta = {**meta, **model.meta}
    return model, rows, oof


def registered_model(frame: pd.DataFrame, evaluated: ChurnModel, test_df: pd.DataFrame, oof: pd.DataFrame,
                     cfg: Config, refitter: Refitter) -> ChurnModel:
    """``include_test``: one more refit on every cutoff (all are labelled by the data's end).

    Its calibrator adds the evaluated model's test predictions (out of time for that model) to the pool.
    """
    model = refitter.fit(frame, "registered model (includes the test cutoff)")
    pool = pd.concat([oof, pd.DataFrame({"cutoff": test_df["cutoff"].to_numpy(), "label": test_df["label"].to_numpy(),
                                         "p_raw": evaluated.predict_raw(test_df)})], ignore_index=True)
    model.calibrator = fit_calibrator(pool, cfg)
    model.meta = {**evaluated.meta, **model.meta}
    return model
