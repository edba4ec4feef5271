"""Train and evaluate the time-to-churn model on the classifier's point-in-time snapshots.

Protocol (out of time, with censoring):
- the evaluation cutoff ``E`` is the latest snapshot cutoff whose follow-up to the data's end covers the
  longest horizon (at least two cutoffs before it);
- every target of a cutoff before ``E`` is censored at ``E``, so nothing the model is fit or tuned on
  looks into the evaluation period; evaluation rows are followed up to the data's end;
- Optuna (seeded TPE, the configured budget) tunes the AFT booster for Harrell's C on a seeded quarter of
  the customers (all their cutoffs held out together, so one customer is never on both sides), with
  early stopping on the AFT likelihood; the model evaluated at ``E`` is refit on every row before ``E``
  with the rounds scaled by the row ratio; the deployed model is refit on all cutoffs, censored at the
  data's end, with the same parameters and rounds.
Baselines on the same rows: Kaplan-Meier (one curve for everyone) and a ridge Cox model
(scikit-survival). Metrics: Harrell's and Uno's C, the integrated Brier score, and calibration at each
horizon (mean predicted churn probability against the Kaplan-Meier estimate).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
import pandas as pd
import xgboost as xgb

from churn.config import LabelConfig, SurvivalConfig
from features.contract import Tables
from features.durations import time_to_churn
from model.survival import SurvivalModel

log = logging.getLogger(__name__)
TUNING_HOLDOUT = 0.25  # share of customers (all their cutoffs) the tuning validates on
Prepare = Callable[[pd.DataFrame], pd.DataFrame]


@dataclass(frozen=True)
class SurvivalSplit:
    fit: list[pd.Timestamp]
    evaluate: pd.Timestamp


def survival_split(cutoffs: list[pd.Timestamp], data_end: pd.Timestamp, max_horizon_days: int) -> SurvivalSplit:
    """The evaluation cutoff: the latest whose follow-up covers the longest horizon (at least two cutoffs before it)."""
    cutoffs = sorted(cutoffs)
    if len(cutoffs) < 3:
        raise ValueError("survival needs at least 3 cutoffs")
    covered = [i for i, t in enumerate(cutoffs) if t + pd.Timedelta(days=max_horizon_days) <= data_end and i >= 2]
    e = covered[-1] if covered else 2
    return SurvivalSplit(fit=cutoffs[:e], evaluate=cutoffs[e])


def customer_holdout(ids: pd.Series, share: float, seed: int) -> np.ndarray:
    """True for rows whose customer falls in a seeded ``share`` of customers (all their cutoffs together)."""
    codes, uniques = pd.factorize(ids.astype(str), sort=True)
    held = np.random.default_rng(seed).random(len(uniques)) < share
    return held[codes]


def targets(frame: pd.DataFrame, tables: Tables, label: LabelConfig,
            censor: dict[pd.Timestamp, pd.Timestamp]) -> pd.DataFrame:
    """``duration_days`` and ``event`` for the rows of ``frame`` whose cutoff is a key of ``censor``."""
    index = pd.Index(tables.customers["customer_id"].astype(str))
    parts = []
    for cutoff, bound in sorted(censor.items()):
        rows = frame.index[frame["cutoff"] == cutoff]
        dur, obs = time_to_churn(tables, cutoff, label, censor_at=bound)
        codes = index.get_indexer(frame.loc[rows, "customer_id"].astype(str))
        parts.append(pd.DataFrame({"duration_days": dur[codes], "event": obs[codes]}, index=rows))
    return pd.concat(parts).sort_index() if parts else pd.DataFrame(columns=["duration_days", "event"])


def _dmatrix(X: pd.DataFrame, y: pd.DataFrame, n_threads: int) -> xgb.DMatrix:
    d = xgb.DMatrix(X, enable_categorical=True, nthread=n_threads)
    lower = y["duration_days"].to_numpy(dtype=float)
    upper = np.where(y["event"].to_numpy(dtype=bool), lower, np.inf)
    d.set_float_info("label_lower_bound", lower)
    d.set_float_info("label_upper_bound", upper)
    return d


def base_time(y: pd.DataFrame) -> float:
    """The boosting's starting time: the exponential MLE of the mean (exposure / events).

    XGBoost starts AFT at 0.5 days otherwise, far from months-long lifetimes, and a few hundred
    small steps then never get there.
    """
    return float(y["duration_days"].sum() / max(int(y["event"].sum()), 1))


def _params(trial_params: dict[str, Any], seed: int, n_threads: int, y: pd.DataFrame) -> dict[str, Any]:
    return {"objective": "survival:aft", "eval_metric": "aft-nloglik", "tree_method": "hist",
            "max_cat_to_onehot": 8, "seed": seed, "nthread": n_threads, "base_score": base_time(y), **trial_params}


def _fit(params: dict[str, Any], dtrain: xgb.DMatrix, rounds: int, dvalid: xgb.DMatrix | None = None,
         early_stopping: int | None = None) -> xgb.Booster:
    evals = [(dvalid, "validation")] if dvalid is not None else []
    return xgb.train(params, dtrain, num_boost_round=rounds, evals=evals, verbose_eval=False,
                     early_stopping_rounds=early_stopping if dvalid is not None else None)


def harrell_c(duration: np.ndarray, event: np.ndarray, risk: np.ndarray) -> float:
    from sksurv.metrics import concordance_index_censored

    return float(concordance_index_censored(event.astype(bool), duration, risk)[0])


def tune_survival(dtrain: xgb.DMatrix, dvalid: xgb.DMatrix, y_train: pd.DataFrame, y_valid: pd.DataFrame,
                  cfg: SurvivalConfig, seed: int, n_threads: int) -> tuple[dict[str, Any], int, float]:
    """Seeded TPE over depth, learning rate, regularisation and the AFT distribution; Harrell's C on ``V``."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    dur, ev = y_valid["duration_days"].to_numpy(float), y_valid["event"].to_numpy(bool)

    def objective(trial: optuna.Trial) -> float:
        p = {"max_depth": trial.suggest_int("max_depth", 2, 6),
             "eta": trial.suggest_float("eta", 0.02, 0.3, log=True),
             "min_child_weight": trial.suggest_float("min_child_weight", 1.0, 50.0, log=True),
             "subsample": trial.suggest_float("subsample", 0.6, 1.0),
             "colsample_bytree": trial.suggest_float("colsample_bytree", 0.5, 1.0),
             "lambda": trial.suggest_float("lambda", 1e-2, 10.0, log=True),
             "aft_loss_distribution": trial.suggest_categorical("aft_loss_distribution", list(cfg.distributions)),
             "aft_loss_distribution_scale": trial.suggest_float("aft_loss_distribution_scale", 0.5, 2.0)}
        booster = _fit(_params(p, seed, n_threads, y_train), dtrain, cfg.max_boost_rounds, dvalid,
                       cfg.early_stopping_rounds)
        trial.set_user_attr("rounds", int(booster.best_iteration) + 1)
        mu = booster.predict(dvalid, output_margin=True, iteration_range=(0, booster.best_iteration + 1))
        return harrell_c(dur, ev, -mu)

    study.optimize(objective, n_trials=cfg.n_trials, timeout=cfg.timeout_s, gc_after_trial=False)
    best = study.best_trial
    return dict(best.params), int(best.user_attrs["rounds"]), float(best.value)


def _as_model(booster: xgb.Booster, params: dict[str, Any]) -> SurvivalModel:
    return SurvivalModel(booster, params["aft_loss_distribution"], float(params["aft_loss_distribution_scale"]))


def fit_and_evaluate(frame: pd.DataFrame, tables: Tables, label: LabelConfig, cutoffs: list[pd.Timestamp],
                     prepare: Prepare, cfg: SurvivalConfig, seed: int, n_threads: int
                     ) -> tuple[SurvivalModel, SurvivalModel, dict[str, float], pd.DataFrame]:
    """Tune, evaluate out of time against Kaplan-Meier and Cox, and refit the deployed model on every cutoff.

    Returns the deployed model, the evaluated model (fit before the evaluation cutoff: use it for any
    other out-of-time comparison), the metrics and a per-horizon calibration table.
    """
    t0 = time.perf_counter()
    end = tables.data_end
    split = survival_split(cutoffs, end, max(cfg.horizons_days))
    fit_rows = frame.index[frame["cutoff"] < split.evaluate]
    y_fit = targets(frame.loc[fit_rows], tables, label, {c: split.evaluate for c in split.fit})
    X_fit = prepare(frame.loc[fit_rows])
    held = customer_holdout(frame.loc[fit_rows, "customer_id"], TUNING_HOLDOUT, seed)
    d_in, d_out = (_dmatrix(X_fit[m], y_fit[m], n_threads) for m in (~held, held))
    params, rounds, best_c = tune_survival(d_in, d_out, y_fit[~held], y_fit[held], cfg, seed, n_threads)
    rounds = max(1, int(round(rounds * len(y_fit) / max(int((~held).sum()), 1))))  # more rows, more rounds

    # evaluation: fit on every cutoff before E (censored at E), test at E with follow-up to the data's end
    y_te = targets(frame.loc[frame["cutoff"] == split.evaluate], tables, label, {split.evaluate: end})
    X_te = prepare(frame.loc[y_te.index])
    m_eval = _as_model(_fit(_params(params, seed, n_threads, y_fit), _dmatrix(X_fit, y_fit, n_threads), rounds), params)
    mu_te = m_eval.mu(xgb.DMatrix(X_te, enable_categorical=True, nthread=n_threads))
    metrics, calib = evaluate(m_eval, mu_te, y_te, X_fit, y_fit, X_te, cfg.horizons_days, seed)
    metrics.update({"survival_tuning_cindex": best_c, "survival_rounds": float(rounds),
                    "survival_n_fit": float(len(y_fit)), "survival_n_test": float(len(y_te)),
                    "survival_test_event_rate": float(y_te["event"].mean())})

    # deployed model: every cutoff, censored at the data's end
    y_all = targets(frame, tables, label, {c: end for c in cutoffs})
    deployed = _as_model(_fit(_params(params, seed, n_threads, y_all), _dmatrix(prepare(frame.loc[y_all.index]), y_all,
                                                                              n_threads), rounds), params)
    log.info("survival: evaluated at %s (fit on %d cutoffs): C-index %.4f (Cox %.4f, KM 0.5), IBS %.4f (Cox %.4f, "
             "KM %.4f) in %.1fs", split.evaluate.date(), len(split.fit), metrics["survival_test_cindex_harrell"],
             metrics["survival_cox_cindex_harrell"], metrics["survival_test_ibs"], metrics["survival_cox_ibs"],
             metrics["survival_km_ibs"], time.perf_counter() - t0)
    return deployed, m_eval, {k: float(v) for k, v in metrics.items()}, calib


def consistency(model: SurvivalModel, mu: np.ndarray, p_class: np.ndarray, horizon_days: int) -> dict[str, float]:
    """How far the survival model's churn-within-horizon probability is from the classifier's calibrated one."""
    p_surv = model.churn_within(mu, horizon_days)
    from scipy.stats import spearmanr

    varies = np.ptp(p_surv) > 0 and np.ptp(p_class) > 0  # a rank correlation needs two rankings
    return {"survival_vs_classifier_mean_abs_diff": float(np.mean(np.abs(p_surv - p_class))),
            "survival_vs_classifier_spearman": float(spearmanr(p_surv, p_class).statistic) if varies else float("nan"),
            "survival_horizon_mean_p": float(p_surv.mean()), "classifier_mean_p": float(p_class.mean())}


def _structured(y: pd.DataFrame) -> np.ndarray:
    from sksurv.util import Surv

    return Surv.from_arrays(y["event"].to_numpy(bool), y["duration_days"].to_numpy(float))


def _eval_times(y_fit: pd.DataFrame, y_te: pd.DataFrame) -> np.ndarray:
    """Times for the Brier score: inside the test follow-up and the training range (IPCW needs both)."""
    lo = max(1.0, float(y_te["duration_days"].min()))
    hi = min(float(y_te["duration_days"].max()), float(y_fit["duration_days"].max())) - 1.0
    return np.linspace(lo, max(hi, lo + 1.0), 30)


def _km_curve(y: pd.DataFrame, times: np.ndarray) -> np.ndarray:
    from sksurv.nonparametric import kaplan_meier_estimator

    t, s = kaplan_meier_estimator(y["event"].to_numpy(bool), y["duration_days"].to_numpy(float))
    idx = np.searchsorted(t, times, side="right") - 1
    return np.where(idx >= 0, s[np.maximum(idx, 0)], 1.0)


def _cox(X_fit: pd.DataFrame, y_fit: pd.DataFrame, X_te: pd.DataFrame, times: np.ndarray,
         seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Ridge Cox on standardised numeric features plus one-hot categories (sampled to 20k rows for speed)."""
    from sksurv.linear_model import CoxPHSurvivalAnalysis

    def design(X: pd.DataFrame) -> pd.DataFrame:
        return pd.get_dummies(X, dummy_na=False, dtype=float)

    A, B = design(X_fit), design(X_te).reindex(columns=design(X_fit).columns, fill_value=0.0)
    med, sd = A.median(), A.std().replace(0, 1).fillna(1)
    A, B = ((A.fillna(med) - med) / sd).fillna(0.0), ((B.fillna(med) - med) / sd).fillna(0.0)
    keep = np.random.default_rng(seed).permutation(len(A))[:20_000]
    cox = CoxPHSurvivalAnalysis(alpha=1.0).fit(A.iloc[keep].to_numpy(), _structured(y_fit.iloc[keep]))
    risk = cox.predict(B.to_numpy())
    surv = np.vstack([f(times) for f in cox.predict_survival_function(B.to_numpy())])
    return risk, surv


def evaluate(model: SurvivalModel, mu: np.ndarray, y_te: pd.DataFrame, X_fit: pd.DataFrame, y_fit: pd.DataFrame,
             X_te: pd.DataFrame, horizons: list[int], seed: int) -> tuple[dict[str, float], pd.DataFrame]:
    """Harrell's and Uno's C, integrated Brier score and per-horizon calibration, with KM and Cox baselines."""
    from sksurv.metrics import concordance_index_ipcw, integrated_brier_score

    s_fit, s_te = _structured(y_fit), _structured(y_te)
    dur, ev = y_te["duration_days"].to_numpy(float), y_te["event"].to_numpy(bool)
    times = _eval_times(y_fit, y_te)
    tau = float(times[-1])
    surv = model.curve(mu, times)
    cox_risk, cox_surv = _cox(X_fit, y_fit, X_te, times, seed)
    km = np.tile(_km_curve(y_fit, times), (len(y_te), 1))
    out = {"survival_test_cindex_harrell": harrell_c(dur, ev, -mu),
           "survival_test_cindex_uno": float(concordance_index_ipcw(s_fit, s_te, -mu, tau=tau)[0]),
           "survival_test_ibs": float(integrated_brier_score(s_fit, s_te, surv, times)),
           "survival_cox_cindex_harrell": harrell_c(dur, ev, cox_risk),
           "survival_cox_cindex_uno": float(concordance_index_ipcw(s_fit, s_te, cox_risk, tau=tau)[0]),
           "survival_cox_ibs": float(integrated_brier_score(s_fit, s_te, cox_surv, times)),
           "survival_km_ibs": float(integrated_brier_score(s_fit, s_te, km, times)),
           "survival_eval_horizon_days": tau}
    rows = []
    for h in horizons:
        if h > tau:
            rows.append({"horizon_days": h, "predicted": np.nan, "observed_km": np.nan, "note": "beyond follow-up"})
            continue
        pred = float(model.churn_within(mu, h).mean())
        obs = 1.0 - float(_km_curve(y_te, np.array([float(h)]))[0])
        rows.append({"horizon_days": h, "predicted": pred, "observed_km": obs, "note": ""})
        out[f"survival_test_calibration_gap_{h}d"] = pred - obs
    return out, pd.DataFrame(rows)
