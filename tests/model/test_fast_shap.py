"""FastTreeShap must reproduce XGBoost's exact path-dependent TreeSHAP (``pred_contribs``) row by row.

Small models on random data with NaNs and categorical columns (one wide enough for partition splits,
one narrow enough for one-hot splits); each model is trained once per module. XGBoost runs with one
thread: on a loaded 2-core machine its OpenMP threads otherwise spin for seconds.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from features.catalogue import FeatureSpec
from inference.explain import explain_rows, group_impacts, typical_values
from model.fast_shap import FastTreeShap, _base_margin, _parse_base_score

ATOL = 1e-5
N_ROWS = 1500
N_NUM = 18
LEVELS = {"plan": [f"plan_{i}" for i in range(9)], "region": ["north", "south", "east"]}


def _frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, N_NUM)).astype(np.float32)
    X[:, :4] = rng.poisson(3, size=(n, 4))  # counts, with ties at split points
    X[rng.random(X.shape) < 0.12] = np.nan
    df = pd.DataFrame(X, columns=[f"f{i:02d}" for i in range(N_NUM)])
    for col, levels in LEVELS.items():
        values = pd.Series(rng.choice(levels, n), dtype=object)
        values[rng.random(n) < 0.05] = None
        df[col] = pd.Categorical(values, categories=levels)
    return df


def _label(df: pd.DataFrame, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = df[[f"f{i:02d}" for i in range(N_NUM)]].fillna(0).to_numpy()
    plan = df["plan"].cat.codes.to_numpy()
    z = x[:, 0] * 0.4 - x[:, 5] + x[:, 6] * x[:, 7] + np.isin(plan, [1, 4, 7]) * 1.5 + (df["region"] == "east") * 0.8
    return (z + rng.normal(size=len(df)) > 1.2).astype(int)


def _dmatrix(df: pd.DataFrame, y: np.ndarray | None = None) -> xgb.DMatrix:
    return xgb.DMatrix(df, label=y, enable_categorical=True, nthread=1)


@pytest.fixture(scope="module")
def data() -> pd.DataFrame:
    return _frame(N_ROWS, seed=7)


@pytest.fixture(scope="module", params=[4, 6], ids=["depth4", "depth6"])
def booster(request: pytest.FixtureRequest, data: pd.DataFrame) -> xgb.Booster:
    params = {"objective": "binary:logistic", "max_depth": request.param, "eta": 0.3, "max_cat_to_onehot": 4,
              "nthread": 1, "seed": 0}
    return xgb.train(params, _dmatrix(data, _label(data, seed=8)), num_boost_round=50)


@pytest.fixture(scope="module")
def exact(booster: xgb.Booster, data: pd.DataFrame) -> np.ndarray:
    return booster.predict(_dmatrix(data), pred_contribs=True)


@pytest.fixture(scope="module")
def fast(booster: xgb.Booster, data: pd.DataFrame) -> np.ndarray:
    return FastTreeShap(booster, list(data.columns)).shap_values(data)


# ------------------------------------------------------------------------------------------ exactness
def test_model_uses_numeric_missing_and_categorical_splits(booster: xgb.Booster) -> None:
    trees = booster.trees_to_dataframe()
    assert {"plan", "region"} <= set(trees["Feature"]), "the test model must split on both categoricals"
    assert trees["Feature"].str.startswith("f").any()


def test_matches_pred_contribs_every_row(fast: np.ndarray, exact: np.ndarray) -> None:
    assert fast.shape == exact.shape == (N_ROWS, N_NUM + len(LEVELS) + 1)
    np.testing.assert_allclose(fast, exact, rtol=0, atol=ATOL)


def test_rows_sum_to_margin(booster: xgb.Booster, data: pd.DataFrame, fast: np.ndarray) -> None:
    margin = booster.predict(_dmatrix(data), output_margin=True)
    np.testing.assert_allclose(fast.sum(axis=1), margin, rtol=0, atol=ATOL)


def test_numpy_codes_input_equals_dataframe_input(booster: xgb.Booster, data: pd.DataFrame, fast: np.ndarray) -> None:
    ex = FastTreeShap(booster, list(data.columns))
    X = ex.to_matrix(data)
    assert X.dtype == np.float32 and np.isnan(X[data["plan"].isna().to_numpy(), N_NUM]).all()
    np.testing.assert_array_equal(ex.shap_values(X), fast)


def test_unseen_negative_and_fractional_category_codes_follow_xgboost(booster: xgb.Booster, data: pd.DataFrame) -> None:
    """Codes outside a split's category set go left, as in XGBoost's ``common::Decision``."""
    ex = FastTreeShap(booster, list(data.columns))
    X = ex.to_matrix(data.iloc[:60])
    X[:20, N_NUM] = 25.0  # a code no tree has seen
    X[20:40, N_NUM] = -1.0  # an invalid (negative) code, not missing
    X[40:60, N_NUM] = 4.6  # truncated to 4 like XGBoost's AsCat
    dm = xgb.DMatrix(X, feature_names=booster.feature_names, feature_types=booster.feature_types,
                     enable_categorical=True)
    np.testing.assert_allclose(ex.shap_values(X), booster.predict(dm, pred_contribs=True), rtol=0, atol=ATOL)
    X[0, 0] = np.inf
    with pytest.raises(ValueError, match="inf"):  # XGBoost's DMatrix refuses inf as well
        ex.shap_values(X)


# ------------------------------------------------------------------------------------------ reasons
def _specs(columns: list[str]) -> dict[str, FeatureSpec]:
    """Features grouped in threes (numerics) plus one group per categorical, as the catalogue would."""
    specs = {}
    for i, name in enumerate(columns):
        cat = name in LEVELS
        specs[name] = FeatureSpec(name=name, family="behavioral", group=name if cat else f"g{i // 3}",
                                  description=name, unit="category" if cat else "count", categorical=cat)
    return specs


def test_top_reasons_identical_to_exact(data: pd.DataFrame, fast: np.ndarray, exact: np.ndarray) -> None:
    columns = list(data.columns)
    specs = _specs(columns)
    p = 1 / (1 + np.exp(-exact.sum(axis=1)))
    typical = typical_values(data, columns, specs)
    r_fast = explain_rows(data, fast, p, columns, specs, typical, top_k=3)
    r_exact = explain_rows(data, exact, p, columns, specs, typical, top_k=3)
    assert (r_exact["reason_groups"].map(len) == 3).mean() > 0.5  # most rows have three reasons to compare
    assert r_fast["reason_groups"].tolist() == r_exact["reason_groups"].tolist()
    lead = lambda r: [[x["feature"] for x in rs] for rs in r["reasons"]]  # noqa: E731
    assert lead(r_fast) == lead(r_exact)
    assert r_fast["protective_reason"].str.len().gt(0).tolist() == r_exact["protective_reason"].str.len().gt(0).tolist()
    gi_f, gi_e = group_impacts(fast, columns, specs, p), group_impacts(exact, columns, specs, p)
    np.testing.assert_array_equal(np.argmin(gi_f.impact, axis=1), np.argmin(gi_e.impact, axis=1))
    # top-3 single features by value, too
    top = lambda c: np.argsort(-c[:, :-1], axis=1, kind="stable")[:, :3]  # noqa: E731
    np.testing.assert_array_equal(top(fast), top(exact))


# ------------------------------------------------------------------------------------------ ranges, base score
def test_iteration_range_best_iteration() -> None:
    train, valid = _frame(1200, seed=1), _frame(600, seed=2)
    dtrain, dvalid = _dmatrix(train, _label(train, 3)), _dmatrix(valid, _label(valid, 4))
    params = {"objective": "binary:logistic", "max_depth": 6, "eta": 0.5, "eval_metric": "logloss", "nthread": 1,
              "max_cat_to_onehot": 4, "seed": 0}
    bst = xgb.train(params, dtrain, num_boost_round=60, evals=[(dvalid, "valid")], early_stopping_rounds=5,
                    verbose_eval=False)
    assert 0 < bst.best_iteration < 55
    rng = (0, bst.best_iteration + 1)
    ex = FastTreeShap(bst, list(valid.columns))
    got = ex.shap_values(valid, iteration_range=rng)
    want = bst.predict(_dmatrix(valid), pred_contribs=True, iteration_range=rng)
    np.testing.assert_allclose(got, want, rtol=0, atol=ATOL)
    margin = bst.predict(_dmatrix(valid), output_margin=True, iteration_range=rng)
    np.testing.assert_allclose(got.sum(axis=1), margin, rtol=0, atol=ATOL)
    assert np.abs(ex.shap_values(valid) - got).max() > 1e-3  # the full model is a different model
    assert ex.expected_value(rng) == pytest.approx(got[0, -1])
    with pytest.raises(ValueError):
        ex.shap_values(valid, iteration_range=(0, 1000))


def test_churn_model_wiring_equals_contributions(booster: xgb.Booster, data: pd.DataFrame) -> None:
    """The call documented for ChurnModel: prepare() output plus the model's iteration range."""
    from model.artifact import ChurnModel  # imports mlflow (seconds): only this test needs it

    model = ChurnModel(booster, list(data.columns), LEVELS, meta={"best_iteration": 29, "n_threads": 1})
    raw = data.copy()
    for col in LEVELS:  # as the feature builder delivers them: strings, one unseen value
        raw[col] = data[col].astype(object)
    raw.loc[raw.index[:5], "plan"] = "plan_unknown"
    ex = FastTreeShap(model.booster, model.features, n_threads=model.meta["n_threads"])
    got = ex.shap_values(model.prepare(raw), iteration_range=model._range())
    np.testing.assert_allclose(got, model.contributions(raw), rtol=0, atol=ATOL)


@pytest.mark.parametrize(("raw", "value"), [("[5E-1]", 0.5), ("5E-1", 0.5), ("[2.5E-1]", 0.25), ([0.1], 0.1)])
def test_parse_base_score(raw: object, value: float) -> None:
    assert _parse_base_score(raw) == pytest.approx(value)
    assert _base_margin(0.5, "binary:logistic") == 0.0
    assert _base_margin(2.0, "reg:squarederror") == 2.0


def test_regression_base_score_and_unit_sizes(data: pd.DataFrame) -> None:
    y = data["f05"].fillna(0).to_numpy() * 3 + 10  # base_score far from 0.5
    bst = xgb.train({"objective": "reg:squarederror", "max_depth": 5, "nthread": 1, "max_cat_to_onehot": 4},
                    _dmatrix(data, y), num_boost_round=20)
    want = bst.predict(_dmatrix(data), pred_contribs=True)
    for bits in (0, 5, 8, 10):  # per-leaf tables (0) up to whole depth-5 subtrees
        got = FastTreeShap(bst, list(data.columns), unit_bits=bits).shap_values(data)
        np.testing.assert_allclose(got, want, rtol=0, atol=ATOL * 4)  # |values| ~ 10: float32 rounding in XGBoost


def test_rejects_multiclass() -> None:
    rng = np.random.default_rng(0)
    bst = xgb.train({"objective": "multi:softprob", "num_class": 3, "max_depth": 2, "nthread": 1},
                    xgb.DMatrix(rng.normal(size=(60, 3)), label=rng.integers(0, 3, 60)), num_boost_round=2)
    with pytest.raises(NotImplementedError):
        FastTreeShap(bst)


def test_dart_booster_tree_weights(data: pd.DataFrame) -> None:
    params = {"objective": "binary:logistic", "booster": "dart", "rate_drop": 0.3, "skip_drop": 0.0, "max_depth": 4,
              "nthread": 1, "max_cat_to_onehot": 4, "seed": 0}
    bst = xgb.train(params, _dmatrix(data, _label(data, 8)), num_boost_round=10)
    got = FastTreeShap(bst, list(data.columns)).shap_values(data)
    np.testing.assert_allclose(got, bst.predict(_dmatrix(data), pred_contribs=True), rtol=0, atol=ATOL)
