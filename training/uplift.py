"""Uplift model: what a contact with each playbook changes in a customer's churn probability.

Learned from the campaign history (:mod:`features.treatments`): customers contacted ("treated") or held
out at random ("control") per campaign and playbook, described by features at each campaign's cutoff
(strictly before it), with the configured label strictly after the contact as outcome.

Meta-learners on XGBoost (``training.uplift.learner``):

* ``t`` (two-model): ``mu0(x)`` = P(churn | not contacted) fitted on all controls (a held-out customer is
  untreated whatever playbook it was drawn for); ``mu1(x, playbook)`` fitted on the treated with the
  playbook one-hot encoded; effect = ``mu1 - mu0``.
* ``x`` (X-learner, Kuenzel et al. 2019): the imputed effects ``y - mu0(x)`` (treated) and
  ``mu1(x, playbook) - y`` (controls) use CROSS-FITTED ``mu`` predictions (K folds, each row predicted by
  models that never saw it), are regressed on ``(x, playbook)``, and combined with the propensity
  ``e`` (share treated): effect = ``e * tau0 + (1 - e) * tau1``.
* ``s`` (single model): one classifier on all rows with the playbook one-hot set only when treated;
  effect = ``mu(x, playbook) - mu(x, none)``.

The default is ``t``, by measurement on the default demo (benchmarks/README.md): ``x`` ranks the assigned
playbook's contacts better out of time (Qini 0.0051 vs 0.0028; ``s`` 0.0008), but allocating with its effects
retained far less true value (-63 % vs -19 % against the best baseline), and allocation is what decides.
The model decides only when its out-of-time Qini beats random targeting and the risk ranking
(``use_for_decisions`` in its metadata); otherwise scoring keeps the priors and says why.

Effects are changes in probability over the label horizon (negative = retained). Evaluated out of time on
the latest campaigns (Qini coefficient, AUUC, uplift at k against risk-ranked and random targeting), then
refitted on every campaign, logged to MLflow and registered as ``<model_name>-uplift`` with the same alias
discipline as the churn model (:mod:`training.registry`). Everything is seeded.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb

from churn.config import Config
from features.contract import Tables
from features.treatments import campaign_outcomes, check_history

log = logging.getLogger(__name__)

_PB = "pb="  # prefix of the playbook one-hot columns
_PARAMS = {"max_depth": 3, "eta": 0.05, "min_child_weight": 10, "subsample": 0.8, "colsample_bytree": 0.7,
           "lambda": 5.0, "tree_method": "hist"}
N_FOLDS = 3


class UpliftModel:
    """Fitted meta-learner: boosters by role, the feature schema and the playbooks it knows."""

    def __init__(self, learner: str, features: list[str], categories: dict[str, list[str]], playbooks: list[str],
                 rounds: int = 200, seed: int = 42, n_threads: int = 2) -> None:
        self.learner, self.features, self.categories, self.playbooks = learner, features, categories, playbooks
        self.rounds, self.seed, self.n_threads = rounds, seed, n_threads
        self.boosters_: dict[str, xgb.Booster] = {}
        self.propensity_: float = 0.5
        self.meta: dict[str, Any] = {}

    # ------------------------------------------------------------------ design matrices
    def _x(self, frame: pd.DataFrame, playbook: np.ndarray | None = None) -> pd.DataFrame:
        from training.model import ChurnModel

        x = ChurnModel(xgb.Booster(), self.features, self.categories).prepare(frame, "campaign features")
        if playbook is not None:
            for p in self.playbooks:
                x[_PB + p] = (playbook == p).astype(np.float32)
        return x

    def _fit(self, x: pd.DataFrame, y: np.ndarray, objective: str) -> xgb.Booster:
        params = {**_PARAMS, "objective": objective, "seed": self.seed, "nthread": self.n_threads}
        return xgb.train(params, xgb.DMatrix(x, label=y, enable_categorical=True), self.rounds)

    @staticmethod
    def _predict(b: xgb.Booster, x: pd.DataFrame) -> np.ndarray:
        return b.predict(xgb.DMatrix(x, enable_categorical=True))

    # ------------------------------------------------------------------ fit / predict
    def fit(self, data: pd.DataFrame) -> UpliftModel:
        """``data``: features, ``playbook_id``, ``treated`` (0/1), ``churned`` (0/1), ``customer_id``."""
        t = data["treated"].to_numpy(dtype=bool)
        y = data["churned"].to_numpy(dtype=float)
        pb = data["playbook_id"].to_numpy(dtype=object)
        self.propensity_ = float(t.mean())
        x0, x1 = self._x(data[~t]), self._x(data[t], pb[t])
        if self.learner == "t":
            self.boosters_ = {"mu0": self._fit(x0, y[~t], "binary:logistic"),
                              "mu1": self._fit(x1, y[t], "binary:logistic")}
            return self
        if self.learner == "s":
            self.boosters_ = {"mu": self._fit(self._x(data, np.where(t, pb, None)), y, "binary:logistic")}
            return self
        m0, m1 = self._cross_fitted(data, t, y, pb)
        self.boosters_ = {"tau1": self._fit(x1, y[t] - m0[t], "reg:squarederror"),
                          "tau0": self._fit(self._x(data[~t], pb[~t]), m1[~t] - y[~t], "reg:squarederror")}
        return self

    def _cross_fitted(self, data: pd.DataFrame, t: np.ndarray, y: np.ndarray,
                      pb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Out-of-fold mu0(x) and mu1(x, own playbook) for every row; folds by customer (seeded hash)."""
        from inference.playbooks import control_draw

        fold = np.minimum((control_draw(data["customer_id"], f"uplift-folds-{self.seed}").to_numpy()
                           * N_FOLDS).astype(int), N_FOLDS - 1)
        m0, m1 = np.zeros(len(data)), np.zeros(len(data))
        x_all, x_all_pb = self._x(data), self._x(data, pb)
        for k in range(N_FOLDS):
            fit, out = fold != k, fold == k
            b0 = self._fit(x_all[fit & ~t], y[fit & ~t], "binary:logistic")
            b1 = self._fit(x_all_pb[fit & t], y[fit & t], "binary:logistic")
            m0[out], m1[out] = self._predict(b0, x_all[out]), self._predict(b1, x_all_pb[out])
        return m0, m1

    def effect(self, frame: pd.DataFrame, playbook: np.ndarray) -> np.ndarray:
        """Estimated change in churn probability if row i is contacted with ``playbook[i]``."""
        playbook = np.asarray(playbook, dtype=object)
        known = np.isin(playbook, self.playbooks)
        out = np.full(len(frame), np.nan)
        if not known.any():
            return out
        sub, pb = frame[known], playbook[known]
        x_pb = self._x(sub, pb)
        if self.learner == "t":
            est = self._predict(self.boosters_["mu1"], x_pb) - self._predict(self.boosters_["mu0"], self._x(sub))
        elif self.learner == "s":
            none = self._x(sub, np.full(len(sub), None, dtype=object))
            est = self._predict(self.boosters_["mu"], x_pb) - self._predict(self.boosters_["mu"], none)
        else:
            e = self.propensity_
            est = e * self._predict(self.boosters_["tau0"], x_pb) + (1 - e) * self._predict(self.boosters_["tau1"], x_pb)
        out[known] = np.clip(est, -1.0, 1.0)
        return out

    def effects(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Rows of ``frame`` x known playbooks: estimated effect of each (index aligned with ``frame``)."""
        cols = {p: self.effect(frame, np.full(len(frame), p, dtype=object)) for p in self.playbooks}
        return pd.DataFrame(cols, index=frame.index)

    # ------------------------------------------------------------------ persistence (JSON only)
    def save(self, directory: str | Path) -> Path:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        for role, b in self.boosters_.items():
            b.save_model(d / f"{role}.json")
        meta = {"learner": self.learner, "features": self.features, "categories": self.categories,
                "playbooks": self.playbooks, "rounds": self.rounds, "seed": self.seed, "n_threads": self.n_threads,
                "propensity": self.propensity_, "roles": sorted(self.boosters_), "meta": self.meta}
        (d / "uplift_meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))
        return d

    @classmethod
    def load(cls, directory: str | Path) -> UpliftModel:
        d = Path(directory)
        meta = json.loads((d / "uplift_meta.json").read_text())
        m = cls(meta["learner"], meta["features"], meta["categories"], meta["playbooks"], meta["rounds"],
                meta["seed"], meta["n_threads"])
        m.propensity_, m.meta = float(meta["propensity"]), meta["meta"]
        for role in meta["roles"]:
            b = xgb.Booster()
            b.load_model(d / f"{role}.json")
            m.boosters_[role] = b
        return m


# ---------------------------------------------------------------------- evaluation (pure)


def qini_curve(score: np.ndarray, treated: np.ndarray, churned: np.ndarray) -> np.ndarray:
    """Incremental customers retained when targeting the top k by ``score`` (k = 1..n), Radcliffe's Qini.

    ``Q(k) = R_T(k) - R_C(k) * N_T(k) / N_C(k)`` with R the customers retained (not churned) among the
    top k treated / control; 0 while no control is among the top k. Ties keep input order.
    """
    order = np.argsort(-np.asarray(score, dtype=float), kind="stable")
    t = np.asarray(treated, dtype=bool)[order]
    r = 1.0 - np.asarray(churned, dtype=float)[order]
    nt, nc = np.cumsum(t), np.cumsum(~t)
    rt, rc = np.cumsum(r * t), np.cumsum(r * ~t)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(nc > 0, rt - rc * nt / np.maximum(nc, 1), 0.0)


def qini_coefficient(score: np.ndarray, treated: np.ndarray, churned: np.ndarray) -> dict[str, float]:
    """Qini coefficient (area between the Qini curve and random targeting) and AUUC, per treated customer.

    Both axes as shares (targeted share, incremental retained / treated customers), so 0 = random,
    positive = the ranking puts the customers a contact retains first.
    """
    q = qini_curve(score, treated, churned)
    n, n_t = len(q), max(int(np.sum(treated)), 1)
    if n == 0:
        return {"qini": float("nan"), "auuc": float("nan"), "auuc_random": float("nan")}
    k = np.arange(1, n + 1)
    random_line = q[-1] * k / n
    return {"qini": float(np.mean(q - random_line) / n_t), "auuc": float(np.mean(q) / n_t),
            "auuc_random": float(np.mean(random_line) / n_t)}


def uplift_at_k(score: np.ndarray, treated: np.ndarray, churned: np.ndarray, fraction: float) -> float:
    """Churn of control minus churn of treated among the top ``fraction`` by score (positive: contact helps)."""
    order = np.argsort(-np.asarray(score, dtype=float), kind="stable")[: max(1, int(round(fraction * len(score))))]
    t, y = np.asarray(treated, dtype=bool)[order], np.asarray(churned, dtype=float)[order]
    if t.all() or (~t).all():
        return float("nan")
    return float(y[~t].mean() - y[t].mean())


def compare_policies(scores: dict[str, np.ndarray], treated: np.ndarray, churned: np.ndarray,
                     seed: int = 42, fractions: tuple[float, ...] = (0.1, 0.3)) -> pd.DataFrame:
    """Qini, AUUC and uplift@k per ranking, plus random targeting (mean of 20 seeded shuffles)."""
    def row(s: np.ndarray) -> dict[str, float]:
        return {**qini_coefficient(s, treated, churned),
                **{f"uplift_at_{int(f * 100)}": uplift_at_k(s, treated, churned, f) for f in fractions}}

    rng = np.random.default_rng(seed)
    rows = [{"policy": name, **row(s)} for name, s in scores.items()]
    rand = pd.DataFrame([row(rng.random(len(treated))) for _ in range(20)])
    rows.append({"policy": "random", **rand.mean().to_dict()})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------- data, training, registry

COLD_START_NOTE = ("no uplift model (cold start: no or too little campaign history): playbook effects are the "
                   "configured priors (acceptance_rate x churn probability); hold out a larger control share "
                   "until there is evidence")


def uplift_model_name(cfg: Config) -> str:
    """Registered next to the churn model: ``<model_name>-uplift``."""
    return f"{cfg.mlflow.model_name}-uplift"


def campaign_dataset(tables: Tables, cfg: Config, playbooks: list[str],
                     cutoff: pd.Timestamp) -> tuple[pd.DataFrame, list[str], dict[str, list[str]]] | None:
    """One row per contact with an observed outcome: features at its campaign's cutoff, treated, churned.

    None without campaign history. Bad history is a DataError (:func:`features.treatments.check_history`).
    """
    from features.build import FeatureBuilder

    tr = tables.treatments
    if tr is None or not len(tr):
        return None
    check_history(tr, playbooks, cutoff)
    out = campaign_outcomes(tables, tr, cfg.label, tables.data_end)
    out = out[out["churned"].notna()]
    if not len(out):
        return None
    cutoffs = [pd.Timestamp(c) for c in sorted(out["cutoff"].unique())]
    fs = FeatureBuilder(tables, cfg).build_many(cutoffs, with_labels=False)
    specs = {s.name: s for s in fs.specs}
    features = [f for f in fs.feature_names if f not in set(cfg.training.exclude_features)]
    categories = {f: [str(x) for x in fs.frame[f].cat.categories] for f in features if specs[f].categorical}
    keys = out[["customer_id", "cutoff", "campaign_id", "playbook_id", "group", "churned"]].assign(
        customer_id=out["customer_id"].astype(str), treated=(out["group"] == "treated").astype(np.int8))
    frame = fs.frame.assign(customer_id=fs.frame["customer_id"].astype(str))
    data = keys.merge(frame, on=["customer_id", "cutoff"], how="inner", validate="many_to_one")
    return data.sort_values(["cutoff", "customer_id"], kind="stable").reset_index(drop=True), features, categories


def _too_little(data: pd.DataFrame, min_group: int) -> str | None:
    nt, nc = int(data["treated"].sum()), int((data["treated"] == 0).sum())
    if nt < min_group or nc < min_group:
        return (f"too little campaign history ({nt} treated and {nc} control outcomes, need {min_group} each): "
                f"{COLD_START_NOTE}")
    return None


def split_out_of_time(data: pd.DataFrame, test_campaigns: int, window_days: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train on campaigns whose outcome window ends by the first test campaign; test on the latest ones."""
    cutoffs = sorted(data["cutoff"].unique())
    test_from = pd.Timestamp(cutoffs[-min(test_campaigns, len(cutoffs) - 1)]) if len(cutoffs) > 1 else None
    if test_from is None:
        return data, data.iloc[:0]
    train = data[data["cutoff"] + pd.Timedelta(days=window_days) <= test_from]
    return train, data[data["cutoff"] >= test_from]


def evaluate_out_of_time(data: pd.DataFrame, features: list[str], categories: dict[str, list[str]],
                         playbooks: list[str], ucfg: Any, seed: int, n_threads: int, window_days: int,
                         risk_model: Any | None = None, learner: str | None = None) -> pd.DataFrame:
    """Fit on the earlier campaigns, rank the later campaigns' contacts: uplift vs risk vs random."""
    train, test = split_out_of_time(data, ucfg.test_campaigns, window_days)
    if not len(test) or _too_little(train, ucfg.min_group):
        return pd.DataFrame()
    m = UpliftModel(learner or ucfg.learner, features, categories, playbooks, ucfg.rounds, seed, n_threads).fit(train)
    effect = m.effect(test, test["playbook_id"].to_numpy(dtype=object))
    scores = {"uplift": -effect}
    if risk_model is not None:
        scores["risk"] = risk_model.predict_proba(test)
    out = compare_policies(scores, test["treated"].to_numpy(dtype=bool), test["churned"].to_numpy(), seed)
    return out.assign(n_train=len(train), n_test=len(test), learner=m.learner)


try:  # the pyfunc base, as for the churn model
    from training.model import _PythonModelBase
except ImportError:  # pragma: no cover
    _PythonModelBase = object  # type: ignore[assignment,misc]


class UpliftPyfunc(_PythonModelBase):  # type: ignore[misc,valid-type]
    """MLflow pyfunc: ``predict`` returns the effect of every playbook; the UpliftModel is reachable."""

    def load_context(self, context: Any) -> None:
        self.model = UpliftModel.load(context.artifacts["model_dir"])

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        return self.model.effects(model_input)


def train_uplift(tables: Tables, cfg: Config, playbooks: list[str], risk_model: Any | None = None) -> dict[str, Any]:
    """Evaluate out of time, refit on every campaign, log to MLflow and register. ``status`` says what happened.

    Without history, or with too little, nothing is registered: ``status`` "cold_start" and a logged warning.
    """
    from features.timeline import label_window_days
    from training.registry import register, setup_mlflow

    ucfg, tcfg = cfg.training.uplift, cfg.training
    t0 = time.perf_counter()
    built = campaign_dataset(tables, cfg, playbooks, tables.data_end) if ucfg.enabled else None
    if built is None:
        return {"status": "cold_start", "note": COLD_START_NOTE}
    data, features, categories = built
    short = _too_little(data, ucfg.min_group)
    if short:
        log.warning("uplift: %s", short)
        return {"status": "cold_start", "note": short}
    window = label_window_days(cfg.label)
    risk = risk_model if risk_model is not None and all(f in data.columns for f in risk_model.features) else None
    evaluation = evaluate_out_of_time(data, features, categories, playbooks, ucfg, tcfg.seed, tcfg.n_threads,
                                      window, risk)
    model = UpliftModel(ucfg.learner, features, categories, playbooks, ucfg.rounds, tcfg.seed, tcfg.n_threads)
    model.fit(data)
    model.meta = {"campaigns": sorted(data["campaign_id"].unique().tolist()), "n_rows": len(data),
                  "horizon_days": window, "input_hash": tables.input_hash}
    metrics = _evaluation_metrics(evaluation)
    model.meta["use_for_decisions"], model.meta["gate"] = _gate(metrics)
    setup_mlflow(cfg.mlflow)
    reg = _log_and_register(model, data, evaluation, metrics, cfg, tables, register)
    seconds = time.perf_counter() - t0
    log.info("uplift (%s-learner) on %d contacts from %d campaigns: out-of-time Qini %s, in %.1fs", model.learner,
             len(data), data["campaign_id"].nunique(), metrics.get("oot_qini_uplift"), seconds)
    return {"status": "trained", "learner": model.learner, "n_contacts": len(data), "metrics": metrics,
            "use_for_decisions": model.meta["use_for_decisions"], "gate": model.meta["gate"],
            "evaluation": evaluation.to_dict("records"), "seconds": round(seconds, 2), **reg}


def _gate(metrics: dict[str, float]) -> tuple[bool, str]:
    """Decide with the model only if its out-of-time Qini beats random and, when measured, the risk ranking."""
    q = metrics.get("oot_qini_uplift")
    bar = max(0.0, metrics.get("oot_qini_risk", 0.0))
    if q is None:
        return False, "no out-of-time evaluation (too few campaigns): priors are used"
    if q <= bar:
        return False, (f"out-of-time Qini {q:.4f} does not beat {'risk ranking' if bar > 0 else 'random'} "
                       f"({bar:.4f}): priors are used until the campaign history supports the model")
    return True, f"out-of-time Qini {q:.4f} > {bar:.4f}"


def _evaluation_metrics(evaluation: pd.DataFrame) -> dict[str, float]:
    out: dict[str, float] = {}
    for rec in evaluation.to_dict("records"):
        for k in ("qini", "auuc", "uplift_at_10", "uplift_at_30"):
            if k in rec and rec[k] == rec[k]:
                out[f"oot_{k}_{rec['policy']}"] = float(rec[k])
    return out


def _log_and_register(model: UpliftModel, data: pd.DataFrame, evaluation: pd.DataFrame, metrics: dict[str, float],
                      cfg: Config, tables: Tables, register: Any) -> dict[str, Any]:
    import mlflow

    with mlflow.start_run(run_name="train-uplift") as run:
        mlflow.set_tags({"stage": "train-uplift", "input_hash": tables.input_hash, "learner": model.learner})
        mlflow.log_params({"learner": model.learner, "rounds": model.rounds, "seed": model.seed,
                           "n_contacts": len(data), "n_campaigns": int(data["campaign_id"].nunique()),
                           "n_features": len(model.features), **{f"xgb_{k}": v for k, v in _PARAMS.items()}})
        mlflow.log_metrics(metrics)
        with tempfile.TemporaryDirectory() as tmp:
            d = Path(tmp)
            evaluation.to_csv(d / "uplift_evaluation.csv", index=False)
            mlflow.log_artifacts(str(d), artifact_path="evaluation")
            model_dir = model.save(d / "uplift_model")
            info = mlflow.pyfunc.log_model(name="model", python_model=UpliftPyfunc(),
                                           artifacts={"model_dir": str(model_dir)})
        return register(info.model_uri, run.info.run_id, uplift_model_name(cfg),
                        tags={"input_hash": tables.input_hash, "learner": model.learner})


def load_uplift_model(cfg: Config, alias: str) -> tuple[UpliftModel | None, str | None]:
    """The registered uplift model under ``alias`` and its version, or (None, None): cold start."""
    from training.registry import get_alias_version, load_churn_model

    name = uplift_model_name(cfg)
    try:
        version = get_alias_version(name, alias)
    except Exception:  # noqa: BLE001 - a store without the model at all
        version = None
    if version is None:
        return None, None
    return load_churn_model(f"models:/{name}@{alias}"), version


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
    effects = model.effects(frame)
    return effects, {"effects_source": "uplift", "uplift_model_name": uplift_model_name(cfg),
                     "uplift_model_version": version, "uplift_learner": model.learner,
                     "uplift_s": round(time.perf_counter() - t0, 3)}
