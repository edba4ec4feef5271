"""The deployable churn model: an XGBoost booster, its input schema and a probability calibrator.

``ChurnModel`` owns everything needed to turn a feature table into calibrated probabilities and
SHAP contributions, and checks its inputs (missing columns, unseen categories) at the edge.
``ChurnPyfunc`` wraps it for MLflow, because a signature with categorical inputs cannot be served
by the plain XGBoost flavour (see STACK-NOTES).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb

from churn.errors import DataError

log = logging.getLogger(__name__)

try:  # mlflow is heavy to import; the wrapper class needs its base only when mlflow is present
    from mlflow.pyfunc import PythonModel as _PythonModelBase
except Exception:  # pragma: no cover - mlflow is a core dependency
    _PythonModelBase = object  # type: ignore[assignment,misc]


@dataclass
class Calibrator:
    """Maps raw model probabilities to calibrated ones: isotonic (piecewise linear) or Platt (logistic on margin)."""

    method: str = "none"
    x: list[float] = field(default_factory=list)
    y: list[float] = field(default_factory=list)
    a: float = 1.0
    b: float = 0.0

    @classmethod
    def fit(cls, method: str, p_raw: np.ndarray, y: np.ndarray) -> Calibrator:
        if method == "isotonic":
            from sklearn.isotonic import IsotonicRegression

            iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(p_raw, y)
            return cls("isotonic", x=iso.X_thresholds_.tolist(), y=iso.y_thresholds_.tolist())
        if method == "platt":
            from sklearn.linear_model import LogisticRegression

            z = np.log(np.clip(p_raw, 1e-7, 1 - 1e-7) / (1 - np.clip(p_raw, 1e-7, 1 - 1e-7))).reshape(-1, 1)
            lr = LogisticRegression(C=1e6).fit(z, y)
            return cls("platt", a=float(lr.coef_[0, 0]), b=float(lr.intercept_[0]))
        return cls("none")

    def transform(self, p_raw: np.ndarray) -> np.ndarray:
        if self.method == "isotonic":
            p = np.interp(p_raw, self.x, self.y)
            return np.clip(p, 1e-6, 1 - 1e-6)
        if self.method == "platt":
            z = np.log(np.clip(p_raw, 1e-7, 1 - 1e-7) / (1 - np.clip(p_raw, 1e-7, 1 - 1e-7)))
            return 1.0 / (1.0 + np.exp(-(self.a * z + self.b)))
        return p_raw


class ChurnModel:
    """A trained booster with its feature list, category levels and calibrator."""

    def __init__(self, booster: xgb.Booster, features: list[str], categories: dict[str, list[str]],
                 calibrator: Calibrator | None = None, meta: dict[str, Any] | None = None,
                 reference: pd.DataFrame | None = None) -> None:
        self.booster = booster
        self.reference = reference  # a sample of training features and scores, for drift monitoring
        self._fast_shap: Any = None
        self.features = features
        self.categories = categories
        self.calibrator = calibrator or Calibrator()
        self.meta = meta or {}
        self.survival: Any = None  # model.survival.SurvivalModel, when time to churn was trained

    # ---------------------------------------------------------------- inputs
    def prepare(self, X: pd.DataFrame, table: str = "features") -> pd.DataFrame:
        """Select and order the model's features, cast categoricals to the training levels.

        Missing columns are an error; unseen category values become missing (XGBoost's default
        branch) and are reported, because pandas would otherwise score them silently.
        """
        missing = [f for f in self.features if f not in X.columns]
        if missing:
            raise DataError(table, missing[0], f"{len(missing)} model feature(s) missing: {missing[:10]}")
        out = X[self.features].copy()
        for col, levels in self.categories.items():
            values = out[col].astype("string")
            unseen = values.notna() & ~values.isin(levels)
            if unseen.any():
                log.warning("%s.%s: %d row(s) with categories unseen in training (e.g. %s) scored as missing",
                            table, col, int(unseen.sum()), sorted(values[unseen].unique().tolist())[:3])
            out[col] = pd.Categorical(values.where(~unseen).astype(object), categories=levels)
        for col in self.features:
            if col not in self.categories:
                out[col] = pd.to_numeric(out[col], errors="coerce").astype("float32")
        return out

    def dmatrix(self, X: pd.DataFrame) -> xgb.DMatrix:
        return xgb.DMatrix(self.prepare(X), enable_categorical=True, nthread=self.meta.get("n_threads", 2))

    # ---------------------------------------------------------------- outputs
    def predict_raw(self, X: pd.DataFrame) -> np.ndarray:
        return self.booster.predict(self.dmatrix(X), iteration_range=self._range())

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        """Calibrated probability of churn within the horizon."""
        return self.calibrator.transform(self.predict_raw(X))

    def contributions(self, X: pd.DataFrame, explainer: str = "xgboost") -> np.ndarray:
        """Exact TreeSHAP values in log-odds (n_rows x (n_features + 1), last column is the bias).

        ``explainer="fast"`` uses :class:`inference.fast_shap.FastTreeShap` (same values within 1e-5,
        about 100x faster per row on CPU); ``"xgboost"`` uses XGBoost's ``pred_contribs``.
        """
        if explainer == "fast" and self._fast_shap is not False:
            if self._fast_shap is None:
                from inference.fast_shap import FastTreeShap  # lazy: numba import

                try:
                    self._fast_shap = FastTreeShap(self.booster, self.features,
                                                   n_threads=self.meta.get("n_threads", 2))
                except (NotImplementedError, MemoryError) as exc:
                    # a model shape the tables don't cover (e.g. very deep trees): same values, slower path
                    log.warning("fast explainer unavailable for this model (%s): using XGBoost pred_contribs", exc)
                    self._fast_shap = False
            if self._fast_shap is not False:
                return self._fast_shap.shap_values(self.prepare(X), iteration_range=self._range())
        return self.booster.predict(self.dmatrix(X), pred_contribs=True, iteration_range=self._range())

    def _range(self) -> tuple[int, int]:
        best = self.meta.get("best_iteration")
        return (0, int(best) + 1) if best is not None else (0, 0)

    # ---------------------------------------------------------------- persistence
    def save(self, directory: str | Path) -> Path:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self.booster.save_model(d / "booster.json")
        meta = {"features": self.features, "categories": self.categories,
                "calibrator": self.calibrator.__dict__, "meta": self.meta}
        (d / "model_meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))
        if self.reference is not None:
            self.reference.to_parquet(d / "reference.parquet", index=False)
        if self.survival is not None:
            self.survival.save(d)
        return d

    @classmethod
    def load(cls, directory: str | Path) -> ChurnModel:
        d = Path(directory)
        booster = xgb.Booster()
        booster.load_model(d / "booster.json")
        meta = json.loads((d / "model_meta.json").read_text())
        ref = pd.read_parquet(d / "reference.parquet") if (d / "reference.parquet").exists() else None
        from model.survival import SurvivalModel

        model = cls(booster, meta["features"], meta["categories"], Calibrator(**meta["calibrator"]), meta["meta"], ref)
        model.survival = SurvivalModel.load(d)
        return model


class ChurnPyfunc(_PythonModelBase):  # type: ignore[misc,valid-type]
    """MLflow pyfunc: ``predict`` returns calibrated churn probabilities; the ChurnModel is reachable for SHAP."""

    def load_context(self, context: Any) -> None:
        self.model = ChurnModel.load(context.artifacts["model_dir"])

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict | None = None) -> np.ndarray:
        return self.model.predict_proba(model_input)
