"""``--engine spark`` runs every config feature of the default loader and gives the same feature rows.

Small tables made here from ``generate_demo(240, seed=5)`` in the layouts real exports have: CSV files, a
lookup for coded event types, a subscriptions table the customer dates and payments are derived from, a
derived age, ``observed_until``, files joined onto the customers table (one keyed by customer, one by plan),
a union file and a snapshot label. One local[2] session for the module. Skipped without pyspark or Java.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("pyspark")
if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
    pytest.skip("Spark needs Java", allow_module_level=True)

from tests.conftest import local_spark, write_small_config  # noqa: E402

CUTOFF = pd.Timestamp("2025-03-01")


@pytest.fixture(scope="module")
def spark():
    yield from local_spark("churn-test-spark-configs")


@pytest.fixture(scope="module")
def demo():
    from churn.generate import generate_demo

    return generate_demo(n_customers=240, seed=5)


def write_socialnet_layout(demo, folder: Path) -> dict:
    """CSV files as the fightchurn exports: accounts without dates, coded events with a lookup file, monthly
    subscription rows (signup, churn and payments are derived from them). Returns the config overrides."""
    folder.mkdir(parents=True, exist_ok=True)
    c = demo["customers"]
    rng = np.random.default_rng(1)
    dob = pd.Timestamp("1960-01-01") + pd.to_timedelta(rng.integers(0, 15000, len(c)), unit="D")
    pd.DataFrame({"id": c["customer_id"], "channel": c["channel"], "country": c["region"].where(c.index % 7 > 0),
                  "date_of_birth": dob.strftime("%Y-%m-%d")}).to_csv(folder / "account.csv", index=False)
    types = sorted(demo["events"]["event_type"].astype(str).unique())
    pd.DataFrame({"event_type_id": range(1, len(types) + 1), "event_type_name": types}).to_csv(
        folder / "event_type.csv", index=False)
    ev = demo["events"]
    pd.DataFrame({"account_id": ev["customer_id"], "event_time": ev["timestamp"].dt.strftime("%Y-%m-%d %H:%M:%S"),
                  "event_type_id": ev["event_type"].astype(str).map({t: i + 1 for i, t in enumerate(types)}),
                  "event_value": ev["value"]}).to_csv(folder / "event.csv", index=False)
    end = demo["events"]["timestamp"].max()
    rows = []
    for cid, signup, churn in zip(c["customer_id"], c["signup_date"], c["churn_date"], strict=True):
        stop = churn if pd.notna(churn) else end
        for start in pd.date_range(signup.normalize(), stop, freq="30D"):
            rows.append((cid, start.date().isoformat(), (start + pd.Timedelta(days=30)).date().isoformat(), 10.0))
    pd.DataFrame(rows, columns=["account_id", "start_date", "end_date", "mrr"]).to_csv(folder / "subscription.csv",
                                                                                      index=False)
    tables = {"customers": {"file": "account.csv", "columns": {"customer_id": "id"}, "attributes": "auto",
                            "derived": {"age": {"years_since": "date_of_birth", "as_of": "data_start"}},
                            "exclude": ["date_of_birth"]},
              "events": {"file": "event.csv", "columns": {"customer_id": "account_id", "timestamp": "event_time",
                                                          "event_type": "event_type_id", "value": "event_value"},
                         "lookups": {"event_type_id": {"file": "event_type.csv", "key": "event_type_id",
                                                       "value": "event_type_name"}}},
              "subscriptions": {"file": "subscription.csv", "columns": {"customer_id": "account_id",
                                "start_date": "start_date", "end_date": "end_date", "amount": "mrr"},
                                "derive": {"renewal_grace_days": 30}}}
    return {"data": {"tables": tables}, "features": {"clv": {"segment_columns": ["channel"]}}}


def write_joined_layout(demo, folder: Path, snapshot: bool) -> dict:
    """Parquet customers split over a file and a union file, a profile file joined by customer id, a plan
    file joined by plan, events in Parquet; with ``snapshot`` a yes/no label column instead of dates."""
    folder.mkdir(parents=True, exist_ok=True)
    c = demo["customers"].copy()
    c["churned"] = np.where(c["churn_date"].notna() & (c["churn_date"] < CUTOFF + pd.Timedelta(days=90)), "yes", "no")
    base = c.drop(columns=["region", "channel"])
    if snapshot:
        base = base.drop(columns=["signup_date", "churn_date"])
    base.iloc[:150].to_parquet(folder / "customers.parquet", index=False)
    base.iloc[150:].to_parquet(folder / "customers_2.parquet", index=False)
    c[["customer_id", "region", "channel"]].iloc[::-1].rename(columns={"customer_id": "cid"}).to_parquet(
        folder / "profile.parquet", index=False)
    pd.DataFrame({"plan": ["basic", "standard", "premium"], "price_band": ["low", "mid", "high"]}).to_csv(
        folder / "plans.csv", index=False)
    demo["events"].to_parquet(folder / "events.parquet", index=False)
    customers = {"file": "customers", "attributes": ["plan", "region", "channel", "price_band"],
                 "union": [{"file": "customers_2"}],
                 "joins": [{"file": "profile", "key": "customer_id", "right_key": "cid"},
                           {"file": "plans", "key": "plan"}]}
    if snapshot:
        customers["columns"] = {"customer_id": "customer_id"}
    out = {"data": {"tables": {"customers": customers, "events": {"file": "events"}}},
           "features": {"clv": {"segment_columns": ["plan"]}}}
    if snapshot:
        out["label"] = {"definition": "snapshot", "column": "churned"}
        out["data"]["observed_until"] = CUTOFF.date().isoformat()
    return out


def _same(spark, folder: Path, overrides: dict, n_buckets: int = 3, labels: bool = True, **kw):
    from churn.config import load_config
    from features.build import FeatureBuilder
    from features.contract import load_tables
    from features.spark import build_feature_set_spark

    cfg = load_config(write_small_config(folder / "cfg", overrides=overrides))
    local = FeatureBuilder(load_tables(folder, cfg), cfg).build(CUTOFF, with_labels=labels)
    fs = build_feature_set_spark(spark, folder, cfg, CUTOFF, n_buckets=n_buckets, with_labels=labels, **kw)
    assert fs.specs == local.specs
    pd.testing.assert_frame_equal(fs.to_pandas().frame, local.frame, check_exact=True)
    return local, fs


def test_csv_lookup_subscriptions_derived_age(spark, demo, tmp_path: Path) -> None:
    """CSV input, a lookup, dates and payments derived from subscriptions, a derived age, auto attributes."""
    local, fs = _same(spark, tmp_path, write_socialnet_layout(demo, tmp_path))
    assert {"age", "channel", "country", "value_tier"} <= set(fs.feature_names)
    assert any(n.startswith("login") or "login" in n for n in fs.feature_names)  # event names from the lookup
    assert len(local.frame) > 60 and 0 < local.frame["label"].sum() < len(local.frame)


def test_observed_until_and_noncontractual_clv(spark, demo, tmp_path: Path) -> None:
    """``observed_until`` (subscription churn censored there) and the BG/NBD + Gamma-Gamma fit on the driver."""
    overrides = write_socialnet_layout(demo, tmp_path)
    overrides["data"]["observed_until"] = "2025-06-01"
    overrides["features"]["clv"]["method"] = "noncontractual"
    _same(spark, tmp_path, overrides, n_buckets=2, labels=False)


def test_union_and_joins_by_customer_and_by_plan(spark, demo, tmp_path: Path) -> None:
    local, fs = _same(spark, tmp_path, write_joined_layout(demo, tmp_path, snapshot=False))
    assert {"region", "channel", "price_band"} <= set(fs.feature_names)
    assert fs.n_population == len(local.frame) > 60


def test_snapshot_label(spark, demo, tmp_path: Path) -> None:
    """A snapshot export (no dates on customers, a yes/no label column): every customer, features before as_of."""
    local, _ = _same(spark, tmp_path, write_joined_layout(demo, tmp_path, snapshot=True), labels=False)
    assert len(local.frame) == 240 and "churned" not in local.frame


def test_row_number_ids_are_refused_with_the_reason(spark, tmp_path: Path) -> None:
    from churn.config import load_config
    from churn.errors import ConfigError
    from features.spark import build_feature_set_spark

    cfg = load_config(write_small_config(tmp_path, overrides={"data": {"tables": {"customers": {
        "file": "customers", "columns": {"customer_id": "__row_number__"}}}}}))
    with pytest.raises(ConfigError, match="row number as id"):
        build_feature_set_spark(spark, tmp_path, cfg, CUTOFF)
