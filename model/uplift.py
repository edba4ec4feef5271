"""The uplift model: what a contact with each playbook changes in a customer's churn probability.

The fitted meta-learner (:class:`UpliftModel`, boosters by role plus the feature schema), its storage as
XGBoost JSON and a JSON side file (nothing executable), and the scoring side: loading the registered
version and estimating every playbook's effect for alerted customers. Training, the campaign data set and
the out-of-time evaluation live in :mod:`training.uplift`.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb

from churn.config import Config

log = logging.getLogger(__name__)

_PB = "pb="  # prefix of the playbook one-hot columns
_PARAMS = {"max_depth": 3, "eta": 0.05, "min_child_weight": 10, "subsample": 0.8, "colsample_bytree": 0.7,
           "lambda": 5.0, "tree_method": "hist"}
N_FOLDS = 3
# the contact's log-odds shift is a small signal on few treated rows: shallower, slower, more regularised
_SHIFT_PARAMS = {"max_depth": 2, "eta": 0.03, "min_child_weight": 20, "lambda": 20.0}


class UpliftModel:
    """Fitted meta-learner: boosters by role, the feature schema and the playbooks it knows."""

    def __init__(self, learner: str, features: list[str], categories: dict[str, list[str]], playbooks: list[str],
                 rounds: int = 200, seed: int = 42, n_threads: int = 2, n_boot: int = 0) -> None:
        self.learner, self.features, self.categories, self.playbooks = learner, features, categories, playbooks
        self.rounds, self.seed, self.n_threads, self.n_boot = rounds, seed, n_threads, n_boot
        self.replicates_: list[dict[str, xgb.Booster]] = []
        self.propensity_: float = 0.5
        self.meta: dict[str, Any] = {}

    @property
    def boosters_(self) -> dict[str, xgb.Booster]:
        """The boosters of the first (with ``n_boot`` 0: the only) fit."""
        return self.replicates_[0] if self.replicates_ else {}

    # ------------------------------------------------------------------ design matrices
    def _x(self, frame: pd.DataFrame, playbook: np.ndarray | None = None) -> pd.DataFrame:
        from model.artifact import ChurnModel

        x = ChurnModel(xgb.Booster(), self.features, self.categories).prepare(frame, "campaign features")
        if playbook is not None:
            for p in self.playbooks:
                x[_PB + p] = (playbook == p).astype(np.float32)
        return x

    def _fit(self, x: pd.DataFrame, y: np.ndarray, objective: str, margin: np.ndarray | None = None,
             params: dict[str, Any] | None = None) -> xgb.Booster:
        params = {**_PARAMS, **(params or {}), "objective": objective, "seed": self.seed, "nthread": self.n_threads}
        return xgb.train(params, xgb.DMatrix(x, label=y, base_margin=margin, enable_categorical=True), self.rounds)

    @staticmethod
    def _predict(b: xgb.Booster, x: pd.DataFrame | xgb.DMatrix, margin: np.ndarray | None = None,
                 output_margin: bool = False) -> np.ndarray:
        """Predictions on a frame or a prepared DMatrix (built once per playbook, reused by every replicate)."""
        d = x if isinstance(x, xgb.DMatrix) else xgb.DMatrix(x, enable_categorical=True)
        if margin is not None:
            d.set_base_margin(margin)
        return b.predict(d, output_margin=output_margin)

    # ------------------------------------------------------------------ fit / predict
    def fit(self, data: pd.DataFrame) -> UpliftModel:
        """``data``: features, ``playbook_id``, ``treated`` (0/1), ``churned`` (0/1), ``customer_id``.

        With ``n_boot`` > 0 the learner is fitted on that many bootstrap samples of customers (seeded): effects
        are their mean (bagging) and :meth:`effects_sd` their spread, the uncertainty of each estimate.
        """
        self.propensity_ = float(data["treated"].mean())
        if self.n_boot <= 0:
            self.replicates_ = [self._fit_one(data)]
            return self
        self.replicates_ = [self._fit_one(bootstrap_customers(data, self.seed + k)) for k in range(self.n_boot)]
        return self

    def _fit_one(self, data: pd.DataFrame) -> dict[str, xgb.Booster]:
        t = data["treated"].to_numpy(dtype=bool)
        y = data["churned"].to_numpy(dtype=float)
        pb = data["playbook_id"].to_numpy(dtype=object)
        x0, x1 = self._x(data[~t]), self._x(data[t], pb[t])
        if self.learner == "t":
            return {"mu0": self._fit(x0, y[~t], "binary:logistic"), "mu1": self._fit(x1, y[t], "binary:logistic")}
        if self.learner == "s":
            return {"mu": self._fit(self._x(data, np.where(t, pb, None)), y, "binary:logistic")}
        if self.learner == "shift":
            b0 = self._fit(x0, y[~t], "binary:logistic")
            base = self._predict(b0, self._x(data[t]), output_margin=True)
            return {"mu0": b0, "shift": self._fit(x1, y[t], "binary:logistic", base, _SHIFT_PARAMS)}
        if self.learner == "r":
            return {"tau": self._fit_r(data, t, y, pb)}
        m0, m1 = self._cross_fitted(data, t, y, pb)
        return {"tau1": self._fit(x1, y[t] - m0[t], "reg:squarederror"),
                "tau0": self._fit(self._x(data[~t], pb[~t]), m1[~t] - y[~t], "reg:squarederror")}

    def _folds(self, data: pd.DataFrame) -> np.ndarray:
        """Cross-fitting fold of every row, by customer (seeded hash): a customer's rows share a fold."""
        from churn.io import stable_uniform

        draw = stable_uniform(data["customer_id"].astype(str).tolist(), f"uplift-folds-{self.seed}")
        return np.minimum((draw * N_FOLDS).astype(int), N_FOLDS - 1)

    def _fit_r(self, data: pd.DataFrame, t: np.ndarray, y: np.ndarray, pb: np.ndarray) -> xgb.Booster:
        """R-learner (Nie & Wager 2021) with the known randomisation share ``e``: the outcome's residual on a
        cross-fitted ``m(x, playbook)`` = E[churn | x, playbook] from EVERY row, regressed on the treatment's
        residual ``t - e``: tau minimises sum (t - e)^2 ((y - m) / (t - e) - tau(x, playbook))^2."""
        fold, x_pb = self._folds(data), self._x(data, pb)
        m = np.zeros(len(data))
        for k in range(N_FOLDS):
            b = self._fit(x_pb[fold != k], y[fold != k], "binary:logistic")
            m[fold == k] = self._predict(b, x_pb[fold == k])
        resid_t = t.astype(float) - self.propensity_
        params = {**_PARAMS, **_SHIFT_PARAMS, "objective": "reg:squarederror", "seed": self.seed,
                  "nthread": self.n_threads}
        d = xgb.DMatrix(x_pb, label=(y - m) / resid_t, weight=resid_t**2, enable_categorical=True)
        return xgb.train(params, d, self.rounds)

    def _cross_fitted(self, data: pd.DataFrame, t: np.ndarray, y: np.ndarray,
                      pb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Out-of-fold mu0(x) and mu1(x, own playbook) for every row; folds by customer (seeded hash)."""
        fold = self._folds(data)
        m0, m1 = np.zeros(len(data)), np.zeros(len(data))
        x_all, x_all_pb = self._x(data), self._x(data, pb)
        for k in range(N_FOLDS):
            fit, out = fold != k, fold == k
            b0 = self._fit(x_all[fit & ~t], y[fit & ~t], "binary:logistic")
            b1 = self._fit(x_all_pb[fit & t], y[fit & t], "binary:logistic")
            m0[out], m1[out] = self._predict(b0, x_all[out]), self._predict(b1, x_all_pb[out])
        return m0, m1

    def effect(self, frame: pd.DataFrame, playbook: np.ndarray) -> np.ndarray:
        """Estimated change in churn probability if row i is contacted with ``playbook[i]`` (replicates' mean)."""
        return self._replicate_effects(frame, playbook).mean(axis=0)

    def _replicate_effects(self, frame: pd.DataFrame, playbook: np.ndarray, prepared: pd.DataFrame | None = None,
                           bases: list[np.ndarray] | None = None) -> np.ndarray:
        """Replicates x rows: each fit's estimate (NaN for playbooks the model does not know).

        ``prepared``: ``self._x(frame)`` when the caller already has it (one preparation for every playbook).
        ``bases``: per replicate, the shift learner's mu0 margin of every row of ``frame`` (it does not depend
        on the playbook: computed once for all of them).
        """
        playbook = np.asarray(playbook, dtype=object)
        known = np.isin(playbook, self.playbooks)
        out = np.full((max(len(self.replicates_), 1), len(frame)), np.nan)
        if not known.any():
            return out
        pb = playbook[known]
        x = (prepared if prepared is not None else self._x(frame))[known]
        x_pb = x.assign(**{_PB + p: (pb == p).astype(np.float32) for p in self.playbooks})
        dx, dx_pb = xgb.DMatrix(x, enable_categorical=True), xgb.DMatrix(x_pb, enable_categorical=True)
        for r, boosters in enumerate(self.replicates_):
            base = bases[r][known] if bases is not None else None
            out[r, known] = np.clip(self._estimate(boosters, dx, dx_pb, x_pb, base), -1.0, 1.0)
        return out

    def _estimate(self, b: dict[str, xgb.Booster], dx: xgb.DMatrix, dx_pb: xgb.DMatrix,
                  x_pb: pd.DataFrame, base: np.ndarray | None = None) -> np.ndarray:
        """One fit's effects; ``dx`` / ``dx_pb``: the rows without / with the playbook columns; ``base``: the
        shift learner's mu0 margin of these rows when the caller has it."""
        if self.learner == "t":
            return self._predict(b["mu1"], dx_pb) - self._predict(b["mu0"], dx)
        if self.learner == "shift":  # dx_pb's base margin is set on every call: never a stale one
            if base is None:
                base = self._predict(b["mu0"], dx, output_margin=True)
            shifted = self._predict(b["shift"], dx_pb, base, output_margin=True)
            return 1 / (1 + np.exp(-shifted)) - 1 / (1 + np.exp(-base))
        if self.learner == "s":
            none = x_pb.assign(**{_PB + p: np.float32(0) for p in self.playbooks})
            return self._predict(b["mu"], dx_pb) - self._predict(b["mu"], none)
        if self.learner == "r":
            return self._predict(b["tau"], dx_pb)
        e = self.propensity_
        return e * self._predict(b["tau0"], dx_pb) + (1 - e) * self._predict(b["tau1"], dx_pb)

    def effects(self, frame: pd.DataFrame, z: float = 0.0) -> pd.DataFrame:
        """Rows of ``frame`` x known playbooks: estimated effect of each (index aligned with ``frame``).

        ``z`` > 0: the pessimistic effect ``mean + z x sd`` over the bootstrap replicates (the benefit the
        evidence supports at z standard errors; a contact that raises churn looks worse, never better).
        """
        cols, prepared, bases = {}, self._x(frame), None
        if self.learner == "shift" and len(frame):  # mu0 does not depend on the playbook: once, not per playbook
            dx = xgb.DMatrix(prepared, enable_categorical=True)
            bases = [self._predict(b["mu0"], dx, output_margin=True) for b in self.replicates_]
        for p in self.playbooks:
            reps = self._replicate_effects(frame, np.full(len(frame), p, dtype=object), prepared, bases)
            sd = reps.std(axis=0, ddof=1) if len(reps) > 1 else np.zeros(len(frame))
            cols[p] = reps.mean(axis=0) + z * sd
        return pd.DataFrame(cols, index=frame.index)

    # ------------------------------------------------------------------ persistence (JSON only)
    def save(self, directory: str | Path) -> Path:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        for r, boosters in enumerate(self.replicates_):
            for role, b in boosters.items():
                b.save_model(d / f"{role}.{r}.json")
        meta = {"learner": self.learner, "features": self.features, "categories": self.categories,
                "playbooks": self.playbooks, "rounds": self.rounds, "seed": self.seed, "n_threads": self.n_threads,
                "n_boot": self.n_boot, "propensity": self.propensity_, "roles": sorted(self.boosters_),
                "replicates": len(self.replicates_), "meta": self.meta}
        (d / "uplift_meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))
        return d

    @classmethod
    def load(cls, directory: str | Path) -> UpliftModel:
        d = Path(directory)
        meta = json.loads((d / "uplift_meta.json").read_text())
        m = cls(meta["learner"], meta["features"], meta["categories"], meta["playbooks"], meta["rounds"],
                meta["seed"], meta["n_threads"], int(meta.get("n_boot", 0)))
        m.propensity_, m.meta = float(meta["propensity"]), meta.get("meta", {})
        single = "replicates" not in meta  # an unbagged model saved before bagging: ``<role>.json``, one fit
        for r in range(1 if single else int(meta["replicates"])):
            boosters = {}
            for role in meta["roles"]:
                boosters[role] = xgb.Booster()
                boosters[role].load_model(d / (f"{role}.json" if single else f"{role}.{r}.json"))
            m.replicates_.append(boosters)
        return m


def bootstrap_customers(data: pd.DataFrame, seed: int) -> pd.DataFrame:
    """A bootstrap sample of ``data`` by customer (all rows of a drawn customer, as often as drawn), seeded."""
    ids = data["customer_id"].astype(str)
    unique = np.sort(ids.unique())
    drawn = pd.Series(np.random.default_rng(seed).choice(unique, len(unique), replace=True)).value_counts()
    times = ids.map(drawn).fillna(0).to_numpy(dtype=np.int64)
    return data.loc[data.index.repeat(times)].reset_index(drop=True)


COLD_START_NOTE = ("no uplift model (cold start: no or too little campaign history): playbook effects are the "
                   "configured priors (acceptance_rate x churn probability); hold out a larger control share "
                   "until there is evidence")


def uplift_model_name(cfg: Config) -> str:
    """Registered next to the churn model: ``<model_name>-uplift``."""
    return f"{cfg.mlflow.model_name}-uplift"


def load_uplift_model(cfg: Config, alias: str) -> tuple[UpliftModel | None, str | None]:
    """The registered uplift model under ``alias`` and its version, or (None, None): cold start.

    A local SQLite store is read in place without importing MLflow (:func:`model.registry.local_alias_model`)."""
    from churn.mlflow_runs import sqlite_alias_lookup
    from model.artifact import UNSAFE_SUFFIXES, ModelFormatError
    from model.registry import local_alias_model

    name = uplift_model_name(cfg)
    found = local_alias_model(cfg.mlflow.tracking_uri, name, alias)
    if found is not None:
        version, local = found
    elif sqlite_alias_lookup(cfg.mlflow.tracking_uri, name, alias) == (None, None):
        return None, None  # the store has no such alias
    else:
        version, local = _download_uplift_model(cfg, name, alias)
        if version is None:
            return None, None
    unsafe = [p.name for p in local.rglob("*") if p.suffix.lower() in UNSAFE_SUFFIXES or p.name == "MLmodel"]
    if unsafe or not (local / "uplift_meta.json").is_file():
        raise ModelFormatError(f"uplift model {name} version {version}: refused ({', '.join(unsafe) or 'no uplift_meta.json'}"
                               "): models load from XGBoost JSON and JSON only; retrain it with this version")
    return UpliftModel.load(local), version


def _download_uplift_model(cfg: Config, name: str, alias: str) -> tuple[str | None, Path | None]:
    """The version under ``alias`` and a local copy of its folder through MLflow, or (None, None)."""
    import mlflow

    from model.registry import get_alias_version, setup_mlflow

    setup_mlflow(cfg.mlflow)

    try:
        version = get_alias_version(name, alias)
    except Exception:  # noqa: BLE001 - a store without the model at all
        version = None
    if version is None:
        return None, None
    return version, Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}@{alias}"))


def estimate_effects(cfg: Config, alias: str, frame: pd.DataFrame) -> tuple[pd.DataFrame | None, dict[str, Any]]:
    """Scoring: every playbook's estimated effect for the rows of ``frame``, or None and the cold-start note."""
    t0 = time.perf_counter()
    model, version = load_uplift_model(cfg, alias)
    if model is None:
        log.warning("uplift: %s", COLD_START_NOTE)
        return None, {"effects_source": "priors", "uplift_model_version": None, "note": COLD_START_NOTE}
    if not model.meta.get("use_for_decisions", True):
        note = f"uplift model version {version} not used: {model.meta.get('gate')}"
        log.warning("uplift: %s", note)
        return None, {"effects_source": "priors", "uplift_model_version": version, "note": note,
                      "uplift_s": round(time.perf_counter() - t0, 3)}
    missing = [f for f in model.features if f not in frame.columns]
    if missing:
        note = f"the uplift model needs feature(s) this data cannot produce ({missing[:5]}): priors used"
        log.warning("uplift: %s", note)
        return None, {"effects_source": "priors", "uplift_model_version": version, "note": note}
    z = cfg.training.uplift.pessimism_z if len(model.replicates_) > 1 else 0.0
    effects = model.effects(frame, z=z)
    return effects, {"effects_source": "uplift", "uplift_model_name": uplift_model_name(cfg),
                     "uplift_model_version": version, "uplift_learner": model.learner, "uplift_pessimism_z": z,
                     "uplift_s": round(time.perf_counter() - t0, 3)}
