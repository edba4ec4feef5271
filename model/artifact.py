"""The deployable churn model: an XGBoost booster, its input schema and a probability calibrator.

``ChurnModel`` owns everything needed to turn a feature table into calibrated probabilities and
SHAP contributions, and checks its inputs (missing columns, unseen categories) at the edge.

Saved as data only, never as code: the booster as XGBoost JSON, the feature list, categories,
calibrator, metadata and feature catalogue as JSON, the drift reference sample as Parquet. Loading
refuses a folder that holds a pickle (an MLflow pyfunc's ``python_model.pkl``, ``*.pkl``, ``*.joblib``,
...) without opening it: unpickling runs whatever code the file names.
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

from churn.errors import EXIT_DATA, ChurnError, DataError
from model.survival import SurvivalModel

log = logging.getLogger(__name__)

BOOSTER_FILE = "booster.json"
META_FILE = "model_meta.json"
CATALOGUE_FILE = "feature_catalogue.json"
REFERENCE_FILE = "reference.parquet"
# files whose loading would run code: pickles in any dress, and an MLflow pyfunc's model description
UNSAFE_SUFFIXES = (".pkl", ".pickle", ".joblib", ".cloudpickle", ".dill", ".pt", ".pth")
CALIBRATION_METHODS = ("none", "isotonic", "platt")


class ModelFormatError(ChurnError):
    """A model folder is not a safe ChurnModel folder (pickled code, or JSON parts missing or malformed)."""

    exit_code = EXIT_DATA


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
            if lr.coef_[0, 0] <= 0:  # a non-positive slope would invert (or erase) the model's ranking
                log.warning("calibration: Platt slope %.3f <= 0 on %d rows (%d churners): the calibration rows do not "
                            "rank like the model; probabilities left uncalibrated", lr.coef_[0, 0], len(y),
                            int(np.sum(y)))
                return cls("none")
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
                 reference: pd.DataFrame | None = None, catalogue: list[dict[str, Any]] | None = None) -> None:
        self.booster = booster
        self.catalogue = catalogue  # the feature catalogue (names, groups, reason templates) the model was trained on
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

        ``explainer="fast"`` uses :class:`model.fast_shap.FastTreeShap` (same values within 1e-5,
        about 100x faster per row on CPU); ``"xgboost"`` uses XGBoost's ``pred_contribs``.
        """
        if explainer == "fast" and self._fast_shap is not False:
            if self._fast_shap is None:
                from model.fast_shap import FastTreeShap  # lazy: numba import

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
        """Write the model as data files only (XGBoost JSON, JSON, Parquet) into ``directory``."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self.booster.save_model(d / BOOSTER_FILE)
        meta = {"features": self.features, "categories": self.categories,
                "calibrator": self.calibrator.__dict__, "meta": self.meta}
        (d / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))
        if self.catalogue is not None:
            (d / CATALOGUE_FILE).write_text(json.dumps(self.catalogue, indent=2, default=str))
        if self.reference is not None:
            self.reference.to_parquet(d / REFERENCE_FILE, index=False)
        if self.survival is not None:
            self.survival.save(d)
        return d

    @classmethod
    def load(cls, directory: str | Path) -> ChurnModel:
        """Load a folder written by :meth:`save`; refuse (without opening them) folders that hold pickled code."""
        d = Path(directory)
        check_model_folder(d)
        booster = xgb.Booster()
        try:
            booster.load_model(d / BOOSTER_FILE)
            meta = json.loads((d / META_FILE).read_text())
            cat_path = d / CATALOGUE_FILE
            catalogue = json.loads(cat_path.read_text()) if cat_path.exists() else None
            survival = SurvivalModel.load(d)
            ref = pd.read_parquet(d / REFERENCE_FILE) if (d / REFERENCE_FILE).exists() else None
        except (xgb.core.XGBoostError, ValueError, KeyError, TypeError, OSError) as exc:  # ArrowInvalid is a ValueError
            raise ModelFormatError(f"model folder {d}: cannot read its parts: {exc}") from exc
        features, categories, calibrator = _parse_meta(d, meta)
        model = cls(booster, features, categories, calibrator, meta.get("meta", {}), ref, catalogue)
        model.survival = survival
        return model


def check_model_folder(d: Path) -> None:
    """Refuse a folder that needs unpickling or lacks the JSON parts, naming what to do instead."""
    if not d.is_dir():
        raise ModelFormatError(f"model folder {d} does not exist or is not a folder")
    files = [p for p in d.rglob("*") if p.is_file()]
    unsafe = sorted(str(p.relative_to(d)) for p in files if p.suffix.lower() in UNSAFE_SUFFIXES)
    mlmodel = [p for p in files if p.name == "MLmodel" and "python_model" in p.read_text(errors="replace")]
    unsafe += [str(p.relative_to(d)) for p in mlmodel]
    if unsafe:
        raise ModelFormatError(
            f"model folder {d}: refused: it holds pickled code ({', '.join(unsafe[:5])}), and unpickling runs "
            "whatever code the file names. Models are loaded from XGBoost JSON and JSON metadata only. If this "
            "is a model registered by an older version (an MLflow pyfunc), retrain it with this version "
            "(`churn train`) and promote the new version; never load a model folder from an untrusted source.")
    missing = [n for n in (BOOSTER_FILE, META_FILE) if not (d / n).is_file()]
    if missing:
        raise ModelFormatError(f"model folder {d}: {', '.join(missing)} missing: not a churn model folder "
                               "(save one with ChurnModel.save or `churn train`)")


def _parse_meta(d: Path, meta: Any) -> tuple[list[str], dict[str, list[str]], Calibrator]:
    """Check the shape of ``model_meta.json`` (plain data only) and build the calibrator from it."""
    def bad(problem: str) -> ModelFormatError:
        return ModelFormatError(f"model folder {d}: {META_FILE}: {problem}")

    if not isinstance(meta, dict) or not {"features", "categories", "calibrator"} <= set(meta):
        raise bad("needs the keys features, categories and calibrator")
    features, categories, cal = meta["features"], meta["categories"], meta["calibrator"]
    if not (isinstance(features, list) and all(isinstance(f, str) for f in features)):
        raise bad("features must be a list of names")
    if not (isinstance(categories, dict) and all(isinstance(v, list) for v in categories.values())):
        raise bad("categories must map a feature to its list of levels")
    if not isinstance(meta.get("meta", {}), dict):
        raise bad("meta must be a mapping")
    if not isinstance(cal, dict) or set(cal) - {"method", "x", "y", "a", "b"} or cal.get("method") not in CALIBRATION_METHODS:
        raise bad(f"calibrator must be {{method: one of {list(CALIBRATION_METHODS)}, x, y, a, b}}, got {cal!r:.200}")
    return features, categories, Calibrator(**cal)
