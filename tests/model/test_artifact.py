"""ChurnModel and Calibrator on hand-made arrays and a tiny booster (no MLflow, no data generator)."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from churn.errors import DataError
from model.artifact import Calibrator, ChurnModel, ModelFormatError

P_RAW = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
Y = np.array([0, 0, 1, 0, 1, 1, 0, 1])
GRID = np.linspace(0.0, 1.0, 201)


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


# ------------------------------------------------------------------------------------------ Calibrator
def test_isotonic_is_pool_adjacent_violators_by_hand() -> None:
    # PAV on y = 0 0 1 0 1 1 0 1: (1,0) at 0.3/0.4 pools to 0.5; (1,1,0) at 0.5..0.7 pools to 2/3.
    cal = Calibrator.fit("isotonic", P_RAW, Y)
    assert cal.method == "isotonic"
    expected = [0.0, 0.0, 0.5, 0.5, 2 / 3, 2 / 3, 2 / 3, 1.0]
    # the ends are clipped to [1e-6, 1 - 1e-6] so a log-loss never sees 0 or 1
    expected = np.clip(expected, 1e-6, 1 - 1e-6)
    np.testing.assert_allclose(cal.transform(P_RAW), expected, atol=1e-12)
    # piecewise linear between thresholds: halfway from (0.2, 0) to (0.3, 0.5) is 0.25
    np.testing.assert_allclose(cal.transform(np.array([0.25])), [0.25], atol=1e-12)
    # outside the fitted range it is clamped to the end values
    np.testing.assert_allclose(cal.transform(np.array([0.0, 0.95])), [1e-6, 1 - 1e-6], atol=1e-12)


@pytest.mark.parametrize("method", ["isotonic", "platt"])
def test_calibrators_are_monotone_and_within_unit_interval(method: str) -> None:
    cal = Calibrator.fit(method, P_RAW, Y)
    out = cal.transform(GRID)
    assert out.shape == GRID.shape
    assert np.all(np.diff(out) >= 0), "calibration must not reorder customers"
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_platt_fit_and_transform_by_hand() -> None:
    cal = Calibrator.fit("platt", P_RAW, Y)
    assert cal.method == "platt"
    assert cal.a > 0, "risk rises with the raw score in this data"
    # logit(0.5) = 0, so the calibrated value there is sigma(b)
    np.testing.assert_allclose(cal.transform(np.array([0.5])), [_sigmoid(cal.b)], rtol=1e-12)

    fixed = Calibrator("platt", a=2.0, b=-1.0)
    # p = 0.5 -> z = 0 -> sigma(2*0 - 1) = 1 / (1 + e) = 0.2689414...
    # p = sigma(1) = 0.7310586 -> z = 1 -> sigma(2*1 - 1) = sigma(1) = 0.7310586...
    np.testing.assert_allclose(fixed.transform(np.array([0.5, _sigmoid(1.0)])), [0.2689414213699951, 0.7310585786300049],
                               rtol=1e-12)


def test_platt_never_inverts_the_ranking() -> None:
    # calibration rows where risk falls with the raw score (a fold model fitted on too little history):
    # a Platt slope < 0 would reverse every customer's rank, so the probabilities are left uncalibrated
    p_raw = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
    y = np.array([1, 1, 1, 0, 1, 0, 0, 0])
    cal = Calibrator.fit("platt", p_raw, y)
    assert cal.method == "none"
    np.testing.assert_array_equal(cal.transform(GRID), GRID)


def test_none_is_identity() -> None:
    cal = Calibrator.fit("none", P_RAW, Y)
    assert cal.method == "none"
    np.testing.assert_array_equal(cal.transform(GRID), GRID)
    np.testing.assert_array_equal(Calibrator().transform(P_RAW), P_RAW)


# ------------------------------------------------------------------------------------------ ChurnModel
FEATURES = ["logins_30d", "plan"]
LEVELS = {"plan": ["basic", "premium"]}


def _training_frame(n: int = 200, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    logins = rng.poisson(8, n).astype(float)
    plan = np.where(rng.random(n) < 0.5, "basic", "premium")
    logit = -0.3 * (logins - 8) + np.where(plan == "basic", 0.8, -0.8)
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return pd.DataFrame({"customer_id": [f"C{i}" for i in range(n)], "logins_30d": logins, "plan": plan}), y


@pytest.fixture(scope="module")
def tiny_model() -> tuple[ChurnModel, pd.DataFrame]:
    X, y = _training_frame()
    proto = ChurnModel(xgb.Booster(), FEATURES, LEVELS)
    dtrain = xgb.DMatrix(proto.prepare(X), label=y, enable_categorical=True, nthread=1)
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 2, "eta": 0.3, "seed": 1, "nthread": 1,
                         "tree_method": "hist"}, dtrain, num_boost_round=15)
    model = ChurnModel(booster, FEATURES, LEVELS, meta={"best_iteration": 9, "n_threads": 1},
                       reference=X[FEATURES].head(20).assign(churn_probability=0.1))
    model.calibrator = Calibrator.fit("isotonic", model.predict_raw(X), y)
    return model, X


def test_prepare_missing_feature_is_a_data_error_naming_it(tiny_model: tuple[ChurnModel, pd.DataFrame]) -> None:
    model, X = tiny_model
    with pytest.raises(DataError) as info:
        model.prepare(X.drop(columns=["plan"]), table="features")
    err = info.value
    assert err.table == "features"
    assert err.column == "plan"
    assert "plan" in str(err) and "missing" in str(err)
    assert err.exit_code == 65


def test_prepare_orders_columns_and_casts_types(tiny_model: tuple[ChurnModel, pd.DataFrame]) -> None:
    model, X = tiny_model
    out = model.prepare(X[["plan", "customer_id", "logins_30d"]].head(3))
    assert list(out.columns) == FEATURES  # only the model's features, in the model's order
    assert out["logins_30d"].dtype == np.float32
    assert isinstance(out["plan"].dtype, pd.CategoricalDtype)
    assert list(out["plan"].cat.categories) == ["basic", "premium"]


def test_prepare_unseen_category_becomes_missing_and_is_logged(tiny_model: tuple[ChurnModel, pd.DataFrame],
                                                               caplog: pytest.LogCaptureFixture) -> None:
    model, _ = tiny_model
    X = pd.DataFrame({"logins_30d": [3.0, 5.0, 7.0], "plan": ["basic", "platinum", None]})
    with caplog.at_level(logging.WARNING, logger="model.artifact"):
        out = model.prepare(X, table="scoring")
    assert out["plan"].tolist()[0] == "basic"
    assert pd.isna(out["plan"].iloc[1])  # unseen -> missing (XGBoost's default branch)
    assert pd.isna(out["plan"].iloc[2])  # missing stays missing
    assert list(out["plan"].cat.categories) == ["basic", "premium"]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, "one warning per column, and none for plain missing values"
    msg = warnings[0].getMessage()
    assert "scoring.plan" in msg and "1 row" in msg and "platinum" in msg
    # and the row is still scored
    p = model.predict_proba(X)
    assert p.shape == (3,) and np.all((p >= 0) & (p <= 1))


def test_prepare_known_categories_do_not_warn(tiny_model: tuple[ChurnModel, pd.DataFrame],
                                              caplog: pytest.LogCaptureFixture) -> None:
    model, X = tiny_model
    with caplog.at_level(logging.WARNING, logger="model.artifact"):
        model.prepare(X)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_best_iteration_limits_trees(tiny_model: tuple[ChurnModel, pd.DataFrame]) -> None:
    model, X = tiny_model
    # best_iteration 9 -> trees [0, 10)
    expected = model.booster.predict(model.dmatrix(X), iteration_range=(0, 10))
    np.testing.assert_array_equal(model.predict_raw(X), expected)
    contrib = model.contributions(X)
    assert contrib.shape == (len(X), len(FEATURES) + 1)  # + bias column
    # SHAP values add up to the margin
    margin = np.log(expected / (1 - expected))
    np.testing.assert_allclose(contrib.sum(axis=1), margin, atol=1e-4)


def test_save_load_round_trip_gives_identical_predictions(tiny_model: tuple[ChurnModel, pd.DataFrame],
                                                          tmp_path) -> None:
    model, X = tiny_model
    d = model.save(tmp_path / "m")
    assert {p.name for p in d.iterdir()} == {"booster.json", "model_meta.json", "reference.parquet"}  # no pickle
    loaded = ChurnModel.load(d)
    assert loaded.features == model.features
    assert loaded.categories == model.categories
    assert loaded.calibrator == model.calibrator
    assert loaded.meta == model.meta
    pd.testing.assert_frame_equal(loaded.reference, model.reference)
    np.testing.assert_array_equal(loaded.predict_raw(X), model.predict_raw(X))
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))
    np.testing.assert_array_equal(loaded.contributions(X), model.contributions(X))


def test_fast_explainer_falls_back_to_xgboost_when_unsupported(monkeypatch, caplog) -> None:
    """A model the fast tables cannot cover is still explained, exactly, by XGBoost's pred_contribs."""
    import model.fast_shap as fs_mod

    rng = np.random.default_rng(1)
    X = pd.DataFrame({"a": rng.normal(size=300), "b": rng.normal(size=300)})
    y = (X["a"] + rng.normal(size=300) > 0).astype(int)
    booster = xgb.train({"max_depth": 3, "objective": "binary:logistic"}, xgb.DMatrix(X, label=y), 10)
    model = ChurnModel(booster, ["a", "b"], {})

    def refuse(*args, **kwargs):
        raise NotImplementedError("too deep")

    monkeypatch.setattr(fs_mod, "FastTreeShap", refuse)
    with caplog.at_level("WARNING"):
        got = model.contributions(X, explainer="fast")
    np.testing.assert_array_equal(got, model.contributions(X, explainer="xgboost"))
    assert "fast explainer unavailable" in caplog.text


# ------------------------------------------------------------------------------------------ safe loading
class _Payload:
    """Unpickling this creates ``marker``: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def pickled_pyfunc_folder(root: Path, marker: Path, model: ChurnModel) -> Path:
    """An MLflow-pyfunc-shaped folder (as older versions registered) whose pickle would run code."""
    import pickle

    folder = root / "model"
    model.save(folder / "artifacts" / "churn_model")  # the JSON parts are there too: still refused
    (folder / "python_model.pkl").write_bytes(pickle.dumps(_Payload(marker)))
    (folder / "MLmodel").write_text("flavors:\n  python_function:\n    cloudpickle_version: 3.1.1\n"
                                    "    loader_module: mlflow.pyfunc.model\n    python_model: python_model.pkl\n")
    return folder


def test_malicious_pickle_proves_its_payload_runs(tmp_path: Path) -> None:
    """The payload is live: unpickling it does create the marker (so the refusal test below means something)."""
    import pickle

    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(_Payload(marker)))
    assert marker.exists()


@pytest.mark.parametrize("loader", ["ChurnModel.load", "load_churn_model"])
def test_pickled_model_folder_is_refused_without_running_it(tiny_model: tuple[ChurnModel, pd.DataFrame],
                                                           tmp_path: Path, loader: str) -> None:
    from model.registry import load_churn_model

    marker = tmp_path / "pwned"
    folder = pickled_pyfunc_folder(tmp_path, marker, tiny_model[0])
    load = ChurnModel.load if loader == "ChurnModel.load" else load_churn_model
    with pytest.raises(ModelFormatError, match=r"refused.*python_model\.pkl.*retrain it with this version") as info:
        load(str(folder))
    assert info.value.exit_code == 65
    assert not marker.exists()


@pytest.mark.parametrize("name", ["extra.pkl", "calibrator.joblib", "sub/state.pickle"])
def test_any_pickle_beside_the_json_parts_is_refused(tiny_model: tuple[ChurnModel, pd.DataFrame], tmp_path: Path,
                                                     name: str) -> None:
    folder = tiny_model[0].save(tmp_path / "m")
    (folder / name).parent.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(b"not even read")
    with pytest.raises(ModelFormatError, match=f"pickled code \\({name}\\)"):
        ChurnModel.load(folder)


def test_folder_without_json_parts_is_refused(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model_meta.json").write_text("{}")
    with pytest.raises(ModelFormatError, match=r"booster\.json missing: not a churn model folder"):
        ChurnModel.load(tmp_path / "m")


@pytest.mark.parametrize(("meta", "match"), [
    ([1, 2], "needs the keys features, categories and calibrator"),
    ({"features": "a", "categories": {}, "calibrator": {"method": "none"}}, "features must be a list of names"),
    ({"features": ["a"], "categories": {}, "calibrator": {"method": "exec", "x": []}}, "calibrator must be"),
    ({"features": ["a"], "categories": {}, "calibrator": {"method": "none", "__class__": 1}}, "calibrator must be"),
    ({"features": ["a"], "categories": {}, "calibrator": {"method": "none"}, "meta": [1]}, "meta must be a mapping"),
], ids=["not-a-dict", "features-not-list", "unknown-method", "unknown-key", "meta-not-a-mapping"])
def test_malformed_meta_is_a_model_format_error(tiny_model: tuple[ChurnModel, pd.DataFrame], tmp_path: Path,
                                                meta: object, match: str) -> None:
    folder = tiny_model[0].save(tmp_path / "m")
    (folder / "model_meta.json").write_text(json.dumps(meta))
    with pytest.raises(ModelFormatError, match=match):
        ChurnModel.load(folder)


def test_catalogue_round_trips_as_json(tiny_model: tuple[ChurnModel, pd.DataFrame], tmp_path: Path) -> None:
    model, X = tiny_model
    cat = [{"name": "logins_30d", "group": "activity", "window_days": 30}, {"name": "plan", "group": "profile"}]
    clone = ChurnModel(model.booster, model.features, model.categories, model.calibrator, model.meta, catalogue=cat)
    loaded = ChurnModel.load(clone.save(tmp_path / "m"))
    assert loaded.catalogue == cat
    assert json.loads((tmp_path / "m" / "feature_catalogue.json").read_text()) == cat
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))


@pytest.mark.parametrize("part", ["booster.json", "model_meta.json", "reference.parquet"])
def test_corrupt_part_is_a_model_format_error(tiny_model: tuple[ChurnModel, pd.DataFrame], tmp_path: Path,
                                              part: str) -> None:
    folder = tiny_model[0].save(tmp_path / "m")
    (folder / part).write_bytes(b"\x80\x04not what it claims")  # e.g. a pickle renamed to look like data
    with pytest.raises(ModelFormatError, match="cannot read its parts"):
        ChurnModel.load(folder)
