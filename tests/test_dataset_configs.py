"""Every shipped config loads and validates; the public-data snapshot configs load tiny look-alike files.

No shared data here: the look-alike files are written into ``tmp_path`` with the real files' headers (see
each data set's SOURCE.md) and a few generated rows, so the tests check the *configs* (file names, id and
label columns, excluded leak columns) without reading ../shared/data. The real runs are in
``benchmarks/training_datasets.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from churn.config import Config, load_config
from features.contract import load_tables

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _is_playbook_file(path: Path) -> bool:
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return isinstance(raw, dict) and "playbooks" in raw and "data" not in raw


ALL_YAML = sorted(CONFIGS.glob("*.yaml"))
RUN_CONFIGS = [p for p in ALL_YAML if not _is_playbook_file(p)]
PLAYBOOK_FILES = [p for p in ALL_YAML if _is_playbook_file(p)]


def test_configs_found() -> None:
    names = {p.name for p in RUN_CONFIGS}
    assert {"default.yaml", "socialnet7.yaml", "telco_ibm_v11.yaml", "bank_churn.yaml", "bankchurners.yaml",
            "ecommerce_churn.yaml", "telco_ibm.yaml", "telecom_bigml.yaml"} <= names


@pytest.mark.parametrize("path", RUN_CONFIGS, ids=lambda p: p.name)
def test_config_loads_and_validates(path: Path) -> None:
    cfg = load_config(path)
    assert isinstance(cfg, Config)
    assert cfg.source == str(path)
    assert "customers" in cfg.data.tables
    if cfg.label.definition == "snapshot":
        # the label is never a feature: load_config adds it to the customers' excluded columns
        assert cfg.label.column in cfg.data.tables["customers"].exclude


@pytest.mark.parametrize("path", PLAYBOOK_FILES, ids=lambda p: p.name)
def test_playbook_file_loads(path: Path) -> None:
    from inference.playbooks import load_playbooks

    assert load_playbooks(path).playbooks


# --------------------------------------------------------------------------- look-alike files
N = 40


def _rng() -> np.random.Generator:
    return np.random.default_rng(0)


def _bank_churn(rng: np.random.Generator) -> pd.DataFrame:
    return pd.DataFrame({
        "RowNumber": np.arange(1, N + 1), "CustomerId": 15_600_000 + np.arange(N),
        "Surname": [f"Name{i}" for i in range(N)], "CreditScore": rng.integers(400, 850, N),
        "Geography": rng.choice(["France", "Spain", "Germany"], N), "Gender": rng.choice(["Male", "Female"], N),
        "Age": rng.integers(18, 90, N), "Tenure": rng.integers(0, 11, N), "Balance": rng.uniform(0, 2e5, N).round(2),
        "NumOfProducts": rng.integers(1, 5, N), "HasCrCard": rng.integers(0, 2, N),
        "IsActiveMember": rng.integers(0, 2, N), "EstimatedSalary": rng.uniform(1e3, 2e5, N).round(2),
        "Exited": np.arange(N) % 5 == 0,
    }).astype({"Exited": int})


NB = "Naive_Bayes_Classifier_Attrition_Flag_Card_Category_Contacts_Count_12_mon_Dependent_count_Education_Level_Months_Inactive_12_mon_"


def _bankchurners(rng: np.random.Generator) -> pd.DataFrame:
    y = np.arange(N) % 6 == 0
    df = pd.DataFrame({
        "CLIENTNUM": 700_000_000 + np.arange(N),
        "Attrition_Flag": np.where(y, "Attrited Customer", "Existing Customer"),
        "Customer_Age": rng.integers(26, 70, N), "Gender": rng.choice(["M", "F"], N),
        "Dependent_count": rng.integers(0, 6, N), "Education_Level": rng.choice(["Graduate", "Unknown"], N),
        "Marital_Status": rng.choice(["Married", "Single"], N), "Income_Category": rng.choice(["$60K - $80K", "Unknown"], N),
        "Card_Category": rng.choice(["Blue", "Gold"], N), "Months_on_book": rng.integers(13, 57, N),
        "Total_Relationship_Count": rng.integers(1, 7, N), "Months_Inactive_12_mon": rng.integers(0, 7, N),
        "Contacts_Count_12_mon": rng.integers(0, 7, N), "Credit_Limit": rng.uniform(1.4e3, 3.5e4, N).round(1),
        "Total_Revolving_Bal": rng.integers(0, 2600, N), "Avg_Open_To_Buy": rng.uniform(0, 3.5e4, N).round(1),
        "Total_Amt_Chng_Q4_Q1": rng.uniform(0, 3, N).round(3), "Total_Trans_Amt": rng.integers(500, 18000, N),
        "Total_Trans_Ct": rng.integers(10, 140, N), "Total_Ct_Chng_Q4_Q1": rng.uniform(0, 3, N).round(3),
        "Avg_Utilization_Ratio": rng.uniform(0, 1, N).round(3),
    })
    df[NB + "1"] = np.where(y, 0.99, 0.0001)  # leaks the label
    df[NB + "2"] = 1 - df[NB + "1"]
    return df


def _ecommerce(rng: np.random.Generator) -> pd.DataFrame:
    tenure = rng.integers(0, 30, N).astype(float)
    tenure[::7] = np.nan  # empty cells in the real file
    return pd.DataFrame({
        "CustomerID": 50_001 + np.arange(N), "Churn": (np.arange(N) % 6 == 0).astype(int), "Tenure": tenure,
        "PreferredLoginDevice": rng.choice(["Mobile Phone", "Phone", "Computer"], N), "CityTier": rng.integers(1, 4, N),
        "WarehouseToHome": rng.integers(5, 36, N).astype(float), "PreferredPaymentMode": rng.choice(["Debit Card", "UPI"], N),
        "Gender": rng.choice(["Male", "Female"], N), "HourSpendOnApp": rng.integers(0, 5, N).astype(float),
        "NumberOfDeviceRegistered": rng.integers(1, 7, N), "PreferedOrderCat": rng.choice(["Laptop & Accessory", "Mobile"], N),
        "SatisfactionScore": rng.integers(1, 6, N), "MaritalStatus": rng.choice(["Single", "Married"], N),
        "NumberOfAddress": rng.integers(1, 11, N), "Complain": rng.integers(0, 2, N),
        "OrderAmountHikeFromlastYear": rng.integers(11, 26, N).astype(float), "CouponUsed": rng.integers(0, 5, N).astype(float),
        "OrderCount": rng.integers(1, 10, N).astype(float), "DaySinceLastOrder": rng.integers(0, 20, N).astype(float),
        "CashbackAmount": rng.uniform(100, 300, N).round(2),
    })


def _telco(rng: np.random.Generator) -> pd.DataFrame:
    tenure = rng.integers(0, 72, N)
    tenure[:2] = 0
    monthly = rng.uniform(18, 118, N).round(2)
    total = [" " if t == 0 else f"{t * m:.2f}" for t, m in zip(tenure, monthly, strict=True)]  # blanks for tenure 0, as in the file
    yes_no = lambda: rng.choice(["Yes", "No"], N)  # noqa: E731
    return pd.DataFrame({
        "customerID": [f"{i:04d}-ABCDE" for i in range(N)], "gender": rng.choice(["Female", "Male"], N),
        "SeniorCitizen": rng.integers(0, 2, N), "Partner": yes_no(), "Dependents": yes_no(), "tenure": tenure,
        "PhoneService": yes_no(), "MultipleLines": rng.choice(["Yes", "No", "No phone service"], N),
        "InternetService": rng.choice(["DSL", "Fiber optic", "No"], N), "OnlineSecurity": yes_no(),
        "OnlineBackup": yes_no(), "DeviceProtection": yes_no(), "TechSupport": yes_no(), "StreamingTV": yes_no(),
        "StreamingMovies": yes_no(), "Contract": rng.choice(["Month-to-month", "One year", "Two year"], N),
        "PaperlessBilling": yes_no(), "PaymentMethod": rng.choice(["Electronic check", "Mailed check"], N),
        "MonthlyCharges": monthly, "TotalCharges": total, "Churn": np.where(np.arange(N) % 4 == 0, "Yes", "No"),
    })


def _telecom(rng: np.random.Generator) -> pd.DataFrame:
    cols = ["Number vmail messages", "Total day minutes", "Total day calls", "Total day charge", "Total eve minutes",
            "Total eve calls", "Total eve charge", "Total night minutes", "Total night calls", "Total night charge",
            "Total intl minutes", "Total intl calls", "Total intl charge", "Customer service calls"]
    df = pd.DataFrame({"State": rng.choice(["KS", "OH", "NJ"], N), "Account length": rng.integers(1, 240, N),
                       "Area code": rng.choice([408, 415, 510], N), "International_plan": rng.choice(["Yes", "No"], N),
                       "Voicemailplan": rng.choice(["Yes", "No"], N)})
    for c in cols:
        df[c] = rng.uniform(0, 300, N).round(2)
    df["Churn"] = np.arange(N) % 7 == 0
    return df


# config -> (file name, generator, the columns that must never become attributes, label share)
SNAPSHOTS = {
    "bank_churn.yaml": ("Churn_Modelling.csv", _bank_churn, ["RowNumber", "CustomerId", "Surname", "Exited"], 8 / 40),
    "bankchurners.yaml": ("BankChurners.csv", _bankchurners, ["CLIENTNUM", "Attrition_Flag", NB + "1", NB + "2"], 7 / 40),
    "ecommerce_churn.yaml": ("ecommerce_churn.csv", _ecommerce, ["CustomerID", "Churn"], 7 / 40),
    # TotalCharges is declared numeric (" " = missing) since issue 12: it is a feature now (test below)
    "telco_ibm.yaml": ("WA_Fn-UseC_-Telco-Customer-Churn.csv", _telco, ["customerID", "Churn"], 10 / 40),
}


@pytest.mark.parametrize("name", sorted(SNAPSHOTS))
def test_snapshot_config_loads_lookalike_file(name: str, tmp_path: Path) -> None:
    file, make, never, share = SNAPSHOTS[name]
    raw = make(_rng())
    raw.to_csv(tmp_path / file, index=False)
    cfg = load_config(CONFIGS / name)
    assert cfg.label.definition == "snapshot"
    tables = load_tables(tmp_path, cfg)
    assert len(tables.customers) == N
    assert tables.snapshot_label is not None
    assert tables.snapshot_label.mean() == pytest.approx(share)
    assert not set(never) & set(tables.attributes), "an id, label or leak column became a feature"
    assert not set(never) & (set(tables.customers.columns) - {"customer_id"})
    expected = [c for c in raw.columns if c not in never]
    assert sorted(tables.attributes) == sorted(expected)


def test_bankchurners_config_drops_both_naive_bayes_leaks() -> None:
    excluded = load_config(CONFIGS / "bankchurners.yaml").data.tables["customers"].exclude
    assert [c for c in excluded if c.startswith("Naive_Bayes_Classifier")] == [NB + "1", NB + "2"]


def test_telecom_bigml_config_loads_lookalike_file(tmp_path: Path) -> None:
    # no id column in the BigML files: customer_id: __row_number__ uses the row number
    raw = _telecom(_rng())
    raw.to_csv(tmp_path / "churn-bigml-80.csv", index=False)
    tables = load_tables(tmp_path, load_config(CONFIGS / "telecom_bigml.yaml"))
    ids = tables.customers["customer_id"]
    assert len(ids) == len(raw) and ids.is_unique
    assert ids.iloc[0] == "row0000001" and ids.iloc[-1] == f"row{len(raw):07d}"
    assert "__row_number__" not in tables.attributes


# --------------------------------------------------------------------------- train AND score through the CLI
def _with_store(config: Path, folder: Path, overrides: dict | None = None) -> Path:
    """The shipped config with its MLflow/Optuna stores made absolute under ``folder`` (see tests/conftest.py)."""
    from tests.conftest import _merge

    raw = yaml.safe_load(config.read_text(encoding="utf-8"))
    store = folder.resolve() / "mlruns"
    raw = _merge(raw, {"mlflow": {"tracking_uri": f"sqlite:///{store / 'mlflow.db'}",
                                  "artifact_location": str(store / "artifacts")},
                       "training": {"n_threads": 1, "tuning": {"storage": f"sqlite:///{store / 'optuna.db'}",
                                                                "max_boost_rounds": 60}}})
    raw = _merge(raw, overrides or {})
    path = folder / config.name
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


@pytest.mark.parametrize("name", sorted(SNAPSHOTS))
def test_snapshot_config_trains_registers_and_scores(name: str, tmp_path: Path) -> None:
    import json

    from tests.conftest import run_cli, working_directory

    file, make, never, _ = SNAPSHOTS[name]
    raw = make(_rng())
    label = load_config(CONFIGS / name).label.column
    (tmp_path / "train").mkdir()
    raw.to_csv(tmp_path / "train" / file, index=False)
    (tmp_path / "now").mkdir()
    raw.drop(columns=[label]).head(12).to_csv(tmp_path / "now" / file, index=False)  # current customers: no label
    config = _with_store(CONFIGS / name, tmp_path, {"training": {"snapshot": {"n_splits": 3}}})
    with working_directory(tmp_path):
        res = run_cli(["train", "--config", config, "--data", "train", "--trials", "2", "--out", "t"])
        assert res.exit_code == 0, res.output
        s = json.loads((tmp_path / "t" / "summary.json").read_text())
        assert s["model_version"] == "1" and s["aliases"] == ["challenger", "champion"]
        assert s["tuning"]["n_trials"] == 2, "--trials applies to snapshot tuning"
        res = run_cli(["score", "--config", config, "--data", "now", "--as-of", "2024-06-01", "--out", "s"])
        assert res.exit_code == 0, res.output
    scores = pd.read_parquet(tmp_path / "s" / "scores.parquet")
    assert len(scores) == 12 and scores["churn_probability"].between(0, 1).all()
    assert (scores["cutoff"] == pd.Timestamp("2024-06-01")).all()
    # no transactions table: a revenue column's CLV, or the fallback value; never a silent zero (issue 12)
    cfg = load_config(config)
    if cfg.features.clv.revenue_column is None:
        assert (scores["lifetime_value"] == cfg.features.clv.fallback_value).all()
    else:
        revenue = raw.head(12)[cfg.features.clv.revenue_column].to_numpy(dtype=float)
        assert (scores["lifetime_value"] > 0).all()
        assert np.argsort(scores["lifetime_value"].to_numpy(), kind="stable").tolist() == \
            np.argsort(revenue, kind="stable").tolist()  # retention 1 for all: value follows the monthly charge
    for out in ("alerts.csv", "report.html", "summary.json"):
        assert (tmp_path / "s" / out).exists(), out


def test_telco_total_charges_is_a_number_with_blanks_missing(tmp_path: Path) -> None:
    raw = _telco(_rng())
    raw.to_csv(tmp_path / "WA_Fn-UseC_-Telco-Customer-Churn.csv", index=False)
    c = load_tables(tmp_path, load_config(CONFIGS / "telco_ibm.yaml")).customers
    assert c["TotalCharges"].dtype == np.float64
    assert c["TotalCharges"].isna().tolist() == (raw["tenure"] == 0).tolist()


def _socialnet7_lookalike(folder: Path, n: int = 120) -> None:
    """socialnet7's four files (headers as in SOURCE.md): monthly subscriptions from 2020-01-10, some stopping
    (churn) each month, 1-6 events a week while subscribed; quieter accounts churn more often."""
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True)
    pd.DataFrame({"id": np.arange(n), "channel": rng.choice(["appstore1", "appstore2", "web"], n),
                  "date_of_birth": [f"{y}-06-01" for y in rng.integers(1950, 2002, n)],
                  "country": rng.choice(["BR", "ID", ""], n)}).to_csv(folder / "account.csv", index=False)
    pd.DataFrame({"event_type_id": [0, 1, 2], "event_type_name": ["post", "newfriend", "like"]}).to_csv(
        folder / "event_type.csv", index=False)
    subs, events = [], []
    for a in range(n):
        busy = rng.uniform(0.2, 1.0)
        events.append((a, "2020-01-01 12:00:00", 0, a, ""))  # the data start, as in the real log
        months = int(rng.integers(2, 6)) if rng.uniform() > busy else 6  # 6 = still subscribed on 2020-06-01
        for m in range(months):
            start = pd.Timestamp("2020-01-10") + pd.DateOffset(months=m)
            subs.append((a, "basic", start.date(), (start + pd.DateOffset(months=1)).date(), 10, "", "", 1, 0))
            for d in range(0, 28, 7):
                for _ in range(int(rng.poisson(6 * busy))):
                    t = start + pd.Timedelta(days=d + float(rng.uniform(0, 7)))
                    events.append((a, t.strftime("%Y-%m-%d %H:%M:%S"), int(rng.integers(0, 3)), a, ""))
    pd.DataFrame(subs, columns=["account_id", "product", "start_date", "end_date", "mrr", "quantity", "units",
                                "bill_period_months", "discount"]).to_csv(folder / "subscription.csv", index=False)
    pd.DataFrame(events, columns=["account_id", "event_time", "event_type_id", "user_id", "event_value"]).to_csv(
        folder / "event.csv.gz", index=False)


def test_dated_config_socialnet7_trains_registers_and_scores(tmp_path: Path) -> None:
    import json

    from tests.conftest import run_cli, working_directory

    _socialnet7_lookalike(tmp_path / "data")
    config = _with_store(CONFIGS / "socialnet7.yaml", tmp_path, {"training": {"backtest_windows": 0}})
    with working_directory(tmp_path):
        res = run_cli(["train", "--config", config, "--data", "data", "--trials", "2", "--out", "t"])
        assert res.exit_code == 0, res.output
        s = json.loads((tmp_path / "t" / "summary.json").read_text())
        assert s["model_version"] == "1" and s["aliases"] == ["challenger", "champion"]
        assert s["cutoffs"] == {"train": ["2020-03-01"], "valid": ["2020-04-01"], "test": ["2020-05-01"]}
        assert s["protocol"]["fitted_cutoffs"] == ["2020-03-01", "2020-04-01"]  # refit: train + validation
        res = run_cli(["score", "--config", config, "--data", "data", "--as-of", "2020-06-01", "--out", "s"])
        assert res.exit_code == 0, res.output
    scores = pd.read_parquet(tmp_path / "s" / "scores.parquet")
    assert len(scores) > 0 and scores["churn_probability"].between(0, 1).all()
    assert (tmp_path / "s" / "report.html").exists()
