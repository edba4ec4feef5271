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
* ``r`` (R-learner, Nie & Wager 2021): the outcome's residual on a cross-fitted ``m(x, playbook)`` from every
  row, regressed on the treatment's residual ``t - e`` with the known randomisation share ``e``.
* ``shift`` (default): ``mu0`` as in ``t``, then a shallow, slow, strongly regularised booster on the treated
  rows STARTING FROM ``logit mu0(x)`` (XGBoost base margin) learns only the contact's log-odds shift
  ``delta(x, playbook)``; effect = ``sigmoid(logit mu0 + delta) - mu0``. With little evidence the shift shrinks
  towards no effect (not towards noise), and the effect scales with the customer's own risk.

With ``n_boot`` > 0 every learner is bagged over bootstrap samples of customers: the effect is the mean of the
replicates and their spread its uncertainty; scoring decides on the pessimistic ``mean + pessimism_z x sd``
(:meth:`model.uplift.UpliftModel.effects`), so a contact is made only where the evidence says it pays.

The default ``shift`` with 8 replicates and z = 1 is chosen by measurement on the default demo against its
ground truth (benchmarks/README.md, "Uplift and allocation policy"): over every scored customer it retains far
more true value than ``t`` or ``x`` under the same rule, and without the pessimism every learner contacts
"sleeping dogs" whose noisy estimates look favourable.
The model decides unless its out-of-time Qini is significantly below random targeting
(``use_for_decisions`` in its metadata); otherwise scoring keeps the priors and says why. The evaluation
also gives the calibration by decile of the predicted effect (predicted vs realised treated-control churn).

Effects are changes in probability over the label horizon (negative = retained). Evaluated out of time on
the latest campaigns (Qini coefficient, AUUC, uplift at k against risk-ranked and random targeting), then
refitted on every campaign, logged to MLflow and registered as ``<model_name>-uplift`` with the same alias
discipline as the churn model (:mod:`model.registry`). The model class and its scoring side are in
:mod:`model.uplift`. Everything is seeded.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from churn.config import Config
from features.contract import Tables
from features.treatments import campaign_outcomes, check_history
from model.uplift import _PARAMS, COLD_START_NOTE, UpliftModel, uplift_model_name

log = logging.getLogger(__name__)

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


def qini_se(score: np.ndarray, treated: np.ndarray, churned: np.ndarray, seed: int = 42, n: int = 200) -> float:
    """Bootstrap standard error of :func:`qini_coefficient` (rows resampled with replacement, seeded)."""
    rng = np.random.default_rng(seed)
    s, t, y = np.asarray(score, dtype=float), np.asarray(treated, dtype=bool), np.asarray(churned, dtype=float)
    draws = [qini_coefficient(s[i], t[i], y[i])["qini"] for i in (rng.integers(0, len(s), len(s)) for _ in range(n))]
    return float(np.std(draws, ddof=1))


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


def contacted_sample(tables: Tables, max_customers: int | None, seed: int) -> tuple[Tables, dict[str, int] | None]:
    """``tables`` restricted to a seeded uniform sample of ``max_customers`` contacted customers when more were
    contacted (else unchanged, and None). Customers are drawn regardless of their group, so treated and control
    stay randomised within the sample; every contact of a drawn customer is kept."""
    tr = tables.treatments
    if tr is None or max_customers is None:
        return tables, None
    codes = np.unique(tr["_code"].to_numpy())
    if len(codes) <= max_customers:
        return tables, None
    chosen = np.random.default_rng(seed).choice(codes, size=max_customers, replace=False)
    keep = np.zeros(len(tables.customers), dtype=bool)
    keep[chosen] = True
    log.info("uplift: learning from a random sample of %s of %s contacted customers (training.uplift.max_customers)",
             f"{max_customers:,}", f"{len(codes):,}")
    return tables.subset(keep), {"customers": int(max_customers), "contacted_customers": int(len(codes))}


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


def calibration_table(effect: np.ndarray, treated: np.ndarray, churned: np.ndarray, bins: int = 10) -> pd.DataFrame:
    """Predicted against realised uplift by bin of the predicted effect (bin 1: the largest predicted benefit).

    Realised = churn of treated minus churn of control in the bin (NaN without both groups), comparable with
    the mean predicted effect (negative = retained).
    """
    order = np.argsort(np.asarray(effect, dtype=float), kind="stable")
    group = np.empty(len(order), dtype=np.int64)
    group[order] = np.arange(len(order)) * bins // max(len(order), 1) + 1
    df = pd.DataFrame({"bin": group, "predicted": effect, "t": np.asarray(treated, dtype=bool),
                       "y": np.asarray(churned, dtype=float)})
    rows = []
    for b, g in df.groupby("bin", sort=True):
        t, c = g.loc[g["t"], "y"], g.loc[~g["t"], "y"]
        rows.append({"bin": int(b), "predicted": float(g["predicted"].mean()), "n_treated": len(t),
                     "n_control": len(c), "realised": float(t.mean() - c.mean()) if len(t) and len(c) else np.nan})
    return pd.DataFrame(rows)


def evaluate_out_of_time(data: pd.DataFrame, features: list[str], categories: dict[str, list[str]],
                         playbooks: list[str], ucfg: Any, seed: int, n_threads: int, window_days: int,
                         risk_model: Any | None = None,
                         learner: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Fit on the earlier campaigns, rank the later campaigns' contacts: uplift vs risk vs random.

    Returns the policy comparison and the calibration by decile of the predicted effect (both empty when the
    history is too short to hold campaigns out).
    """
    train, test = split_out_of_time(data, ucfg.test_campaigns, window_days)
    if not len(test) or _too_little(train, ucfg.min_group):
        return pd.DataFrame(), pd.DataFrame()
    m = UpliftModel(learner or ucfg.learner, features, categories, playbooks, ucfg.rounds, seed, n_threads,
                    ucfg.n_boot).fit(train)
    effect = m.effect(test, test["playbook_id"].to_numpy(dtype=object))
    scores = {"uplift": -effect}
    if risk_model is not None:
        scores["risk"] = risk_model.predict_proba(test)
    treated, churned = test["treated"].to_numpy(dtype=bool), test["churned"].to_numpy()
    out = compare_policies(scores, treated, churned, seed)
    out["qini_se"] = [qini_se(scores[p], treated, churned, seed) if p in scores else np.nan for p in out["policy"]]
    return out.assign(n_train=len(train), n_test=len(test), learner=m.learner), calibration_table(effect, treated,
                                                                                                   churned)


def train_uplift(tables: Tables, cfg: Config, playbooks: list[str], risk_model: Any | None = None) -> dict[str, Any]:
    """Evaluate out of time, refit on every campaign, log to MLflow and register. ``status`` says what happened.

    Without history, or with too little, nothing is registered: ``status`` "cold_start" and a logged warning.
    """
    from features.timeline import label_window_days
    from model.registry import register, setup_mlflow

    ucfg, tcfg = cfg.training.uplift, cfg.training
    t0 = time.perf_counter()
    tables, sample = contacted_sample(tables, ucfg.max_customers, tcfg.seed) if ucfg.enabled else (tables, None)
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
    evaluation, calibration = evaluate_out_of_time(data, features, categories, playbooks, ucfg, tcfg.seed,
                                                   tcfg.n_threads, window, risk)
    model = UpliftModel(ucfg.learner, features, categories, playbooks, ucfg.rounds, tcfg.seed, tcfg.n_threads,
                        ucfg.n_boot)
    model.fit(data)
    model.meta = {"campaigns": sorted(data["campaign_id"].unique().tolist()), "n_rows": len(data),
                  "horizon_days": window, "input_hash": tables.input_hash, "customer_sample": sample}
    metrics = _evaluation_metrics(evaluation)
    model.meta["use_for_decisions"], model.meta["gate"] = _gate(metrics)
    setup_mlflow(cfg.mlflow)
    reg = _log_and_register(model, data, {"uplift_evaluation": evaluation, "uplift_calibration": calibration},
                            metrics, cfg, tables, register)
    seconds = time.perf_counter() - t0
    log.info("uplift (%s-learner) on %d contacts from %d campaigns: out-of-time Qini %s, in %.1fs", model.learner,
             len(data), data["campaign_id"].nunique(), metrics.get("oot_qini_uplift"), seconds)
    return {"status": "trained", "learner": model.learner, "n_contacts": len(data), "customer_sample": sample,
            "metrics": metrics,
            "use_for_decisions": model.meta["use_for_decisions"], "gate": model.meta["gate"],
            "evaluation": evaluation.to_dict("records"), "calibration": calibration.to_dict("records"),
            "seconds": round(seconds, 2), **reg}


def _gate(metrics: dict[str, float]) -> tuple[bool, str]:
    """Decide with the model unless its out-of-time Qini is significantly below random targeting (< -2 SE).

    On a few thousand held-out contacts the Qini's standard error is as large as the learners' Qinis (see
    README "Decisions"): a gate demanding that it beat the risk ranking flips on noise. The decisions
    themselves are pessimistic (``training.uplift.pessimism_z``), so a model with little evidence contacts few.
    """
    q, se = metrics.get("oot_qini_uplift"), metrics.get("oot_qini_se_uplift", 0.0)
    if q is None:
        return False, "no out-of-time evaluation (too few campaigns): priors are used"
    if q < -2 * se:
        return False, (f"out-of-time Qini {q:.4f} is significantly below random targeting (2 SE = {2 * se:.4f}): "
                       "priors are used until the campaign history supports the model")
    return True, f"out-of-time Qini {q:.4f} (SE {se:.4f}; risk ranking {metrics.get('oot_qini_risk', float('nan')):.4f})"


def _evaluation_metrics(evaluation: pd.DataFrame) -> dict[str, float]:
    out: dict[str, float] = {}
    for rec in evaluation.to_dict("records"):
        for k in ("qini", "qini_se", "auuc", "uplift_at_10", "uplift_at_30"):
            if k in rec and rec[k] == rec[k]:
                out[f"oot_{k}_{rec['policy']}"] = float(rec[k])
    return out


def _log_and_register(model: UpliftModel, data: pd.DataFrame, tables_out: dict[str, pd.DataFrame],
                      metrics: dict[str, float], cfg: Config, tables: Tables, register: Any) -> dict[str, Any]:
    import mlflow

    with mlflow.start_run(run_name="train-uplift") as run:
        mlflow.set_tags({"stage": "train-uplift", "input_hash": tables.input_hash, "learner": model.learner})
        mlflow.log_params({"learner": model.learner, "rounds": model.rounds, "seed": model.seed,
                           "n_contacts": len(data), "n_campaigns": int(data["campaign_id"].nunique()),
                           "n_features": len(model.features), "n_boot": model.n_boot,
                           **{f"xgb_{k}": v for k, v in _PARAMS.items()}})
        mlflow.log_metrics(metrics)
        with tempfile.TemporaryDirectory() as tmp:
            d = Path(tmp)
            for name, table in tables_out.items():
                table.to_csv(d / f"{name}.csv", index=False)
            mlflow.log_artifacts(str(d), artifact_path="evaluation")
            mlflow.log_artifacts(str(model.save(d / "model")), artifact_path="model")  # JSON only, no pickle
        return register(f"runs:/{run.info.run_id}/model", run.info.run_id, uplift_model_name(cfg),
                        tags={"input_hash": tables.input_hash, "learner": model.learner})


