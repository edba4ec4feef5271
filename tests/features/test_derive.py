"""Loading real-world layouts by configuration: lookups, subscriptions, joins, snapshot labels, exclusions.

Hand-made mini tables in the formats of the two shared data sets (never the shared data itself):

fightchurn "socialnet7" layout -- account.csv, subscription.csv, event.csv, event_type.csv
(observed_until 2020-06-01, renewal grace 30 days):

====  ============================================  ==========  ==========  =====================================
acct  subscription rows (start -> end)              signup      churn       story
====  ============================================  ==========  ==========  =====================================
1     01-05->02-05, 02-05->03-05, 03-05->04-05       2020-01-05  2020-04-05  not renewed: churns
2     01-10->02-10, 02-25->03-25 (15 days late),     2020-01-10  NaT         late renewal within the grace: one
      03-25->04-25, 04-25->05-25, 05-25->06-25                              run; last end after 06-01: censored
3     01-01->02-01, then 04-01->05-01 (gap 59 days)  2020-01-01  2020-05-01  two runs; churns at the final end
4     (none)                                        NaT         NaT         no subscription: never active
5     02-01->(empty)                                2020-02-01  NaT         open-ended: never churns
====  ============================================  ==========  ==========  =====================================

IBM Telco v11 layout -- demographics / location / population / services / status CSVs joined on
``Customer ID`` (population on ``Zip Code``), snapshot label ``Churn Value``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from churn.config import Config, load_config
from churn.errors import ConfigError, DataError, InputNotFoundError
from features.contract import load_tables
from features.derive import customer_dates_from_subscriptions, subscription_active_mask, subscription_runs
from features.timeline import active_mask, labels

ROOT = Path(__file__).resolve().parents[2]

# --------------------------------------------------------------------------- socialnet7 layout
ACCOUNTS = pd.DataFrame({
    "id": [1, 2, 3, 4, 5],
    "channel": ["web", "appstore1", "appstore2", "web", "appstore1"],
    "date_of_birth": ["1990-06-15", "2000-01-01", "1985-12-31", "1970-03-01", "2001-07-04"],
    "country": ["US", None, "GB", "DE", "US"],
})
SUB_ROWS = [
    # account_id, start_date, end_date, mrr
    (1, "2020-01-05", "2020-02-05", 10), (1, "2020-02-05", "2020-03-05", 10), (1, "2020-03-05", "2020-04-05", 10),
    (2, "2020-01-10", "2020-02-10", 10), (2, "2020-02-25", "2020-03-25", 10), (2, "2020-03-25", "2020-04-25", 10),
    (2, "2020-04-25", "2020-05-25", 10), (2, "2020-05-25", "2020-06-25", 10),
    (3, "2020-01-01", "2020-02-01", 20), (3, "2020-04-01", "2020-05-01", 20),
    (5, "2020-02-01", None, 10),
]
EVENT_ROWS = [
    # account_id, event_time, event_type_id, user_id, event_value
    (1, "2020-01-06 10:00:00", 0, 1, None),
    (1, "2020-03-01 11:30:00", 1, 1, None),
    (2, "2020-01-11 09:00:00", 2, 2, None),
    (3, "2020-01-02 08:00:00", 1, 3, None),
    (5, "2020-02-03 12:00:00", 0, 5, None),
]
EVENT_TYPES = pd.DataFrame({"event_type_id": [0, 1, 2], "event_type_name": ["post", "like", "adview"]})


def subscriptions_frame(rows: list[tuple] = SUB_ROWS) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=["account_id", "start_date", "end_date", "mrr"])
    df.insert(1, "product", "basic")
    return df.assign(quantity=None, units=None, bill_period_months=1, discount=0)


def write_socialnet(folder: Path, events: pd.DataFrame | None = None, subs: pd.DataFrame | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    ACCOUNTS.to_csv(folder / "account.csv", index=False)
    (subs if subs is not None else subscriptions_frame()).to_csv(folder / "subscription.csv", index=False)
    ev = events if events is not None else pd.DataFrame(
        EVENT_ROWS, columns=["account_id", "event_time", "event_type_id", "user_id", "event_value"])
    ev.to_csv(folder / "event.csv", index=False)
    EVENT_TYPES.to_csv(folder / "event_type.csv", index=False)
    return folder


def socialnet_config(**overrides) -> Config:
    data = {
        "observed_until": "2020-06-01",
        "tables": {
            "customers": {"file": "account.csv", "columns": {"customer_id": "id"}, "attributes": ["channel", "country"],
                          "derived": {"age": {"years_since": "date_of_birth", "as_of": "data_start"}}},
            "events": {"file": "event.csv",
                       "columns": {"customer_id": "account_id", "timestamp": "event_time",
                                   "event_type": "event_type_id", "value": "event_value"},
                       "lookups": {"event_type_id": {"file": "event_type.csv", "key": "event_type_id",
                                                     "value": "event_type_name"}}},
            "subscriptions": {"file": "subscription.csv",
                              "columns": {"customer_id": "account_id", "start_date": "start_date",
                                          "end_date": "end_date", "amount": "mrr"},
                              "derive": {"renewal_grace_days": 30}},
        },
    }
    data.update(overrides)
    return Config.model_validate({"data": data, "label": {"definition": "churn_date", "horizon_days": 30}})


def _by_id(tables, col):
    return dict(zip(tables.customers["customer_id"], tables.customers[col], strict=True))


def test_lookup_maps_event_type_codes_to_names(tmp_path):
    t = load_tables(write_socialnet(tmp_path), socialnet_config())
    ev = t.events
    assert ev["event_type"].tolist() == ["like", "post", "adview", "post", "like"]  # sorted by time
    assert ev["customer_id"].tolist() == ["3", "1", "2", "5", "1"]
    assert ev["value"].isna().all()
    assert any(f.name == "event_type.csv" for f in t.files)  # the lookup is part of the input hash


def test_lookup_unknown_code_is_an_error_or_kept(tmp_path):
    events = pd.DataFrame(EVENT_ROWS + [(2, "2020-03-02 00:00:00", 7, 2, None)],
                          columns=["account_id", "event_time", "event_type_id", "user_id", "event_value"])
    folder = write_socialnet(tmp_path, events=events)
    with pytest.raises(DataError, match=r"table 'events', column 'event_type_id': codes not in lookup file "
                                        r"event_type.csv .*\(1 row\)") as info:
        load_tables(folder, socialnet_config())
    assert info.value.count == 1
    cfg = socialnet_config()
    ev_tc = cfg.data.tables["events"]
    lk = ev_tc.lookups["event_type_id"].model_copy(update={"on_missing": "keep"})
    tables = {**cfg.data.tables, "events": ev_tc.model_copy(update={"lookups": {"event_type_id": lk}})}
    cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"tables": tables})})
    t = load_tables(folder, cfg)
    assert t.events["event_type"].iloc[-1] == "7"


def test_lookup_file_missing(tmp_path):
    folder = write_socialnet(tmp_path)
    (folder / "event_type.csv").unlink()
    with pytest.raises(InputNotFoundError, match="lookup file 'event_type.csv'"):
        load_tables(folder, socialnet_config())


def test_subscriptions_derive_signup_churn_and_transactions(tmp_path):
    t = load_tables(write_socialnet(tmp_path), socialnet_config())
    signup = _by_id(t, "signup_date")
    assert signup["1"] == pd.Timestamp("2020-01-05") and signup["2"] == pd.Timestamp("2020-01-10")
    assert signup["3"] == pd.Timestamp("2020-01-01") and signup["5"] == pd.Timestamp("2020-02-01")
    assert pd.isna(signup["4"])
    churn = _by_id(t, "churn_date")
    assert churn["1"] == pd.Timestamp("2020-04-05")  # final run not renewed
    assert pd.isna(churn["2"])  # final run ends 2020-06-25, after observed_until: censored
    assert churn["3"] == pd.Timestamp("2020-05-01")  # end of the final run (after a 59-day gap)
    assert pd.isna(churn["4"]) and pd.isna(churn["5"])  # no subscription / open-ended
    assert t.derived["signup_date"] == t.derived["churn_date"] == t.derived["transactions"] == "subscriptions"
    tx = t.transactions
    assert len(tx) == len(SUB_ROWS)
    assert tx["timestamp"].is_monotonic_increasing
    first = tx.iloc[0]
    assert (first["customer_id"], first["timestamp"], first["amount"]) == ("3", pd.Timestamp("2020-01-01"), 20.0)
    assert tx.groupby("customer_id")["amount"].sum().to_dict() == {"1": 30.0, "2": 50.0, "3": 40.0, "5": 10.0}
    subs = t.subscriptions
    assert list(subs.columns) == ["customer_id", "_code", "start_date", "end_date", "amount"]
    assert pd.isna(subs.loc[subs["customer_id"] == "5", "end_date"]).all()


def test_renewal_within_grace_is_not_churn():
    subs = subscriptions_frame().rename(columns={"account_id": "customer_id"})
    subs = subs.assign(customer_id=subs["customer_id"].astype(str), start_date=pd.to_datetime(subs["start_date"]),
                       end_date=pd.to_datetime(subs["end_date"]))
    runs = subscription_runs(subs, grace_days=30)
    assert runs.groupby("customer_id")["run"].max().to_dict() == {"1": 0, "2": 0, "3": 1, "5": 0}
    # with a 10-day grace the 15-day-late renewal of account 2 starts a second run
    assert subscription_runs(subs, grace_days=10).groupby("customer_id")["run"].max()["2"] == 1
    dates = customer_dates_from_subscriptions(subs, 30, pd.Timestamp("2020-06-01"))
    assert pd.isna(dates.loc["2", "churn_date"])  # the end 2020-02-10 before the late renewal is not a churn
    assert dates.loc["3", "n_runs"] == 2
    # without observed_until, the data's end is the latest start (2020-05-25): account 2 still censored
    assert pd.isna(customer_dates_from_subscriptions(subs, 30).loc["2", "churn_date"])
    # label at 2020-02-01 for account 2 (subscription gap 02-10 .. 02-25 inside the horizon) is 0
    # (checked through the loader in test_population_and_labels_at_a_cutoff)


def test_population_and_labels_at_a_cutoff(tmp_path):
    cfg = socialnet_config()
    t = load_tables(write_socialnet(tmp_path), cfg)
    ids = t.customers["customer_id"].tolist()
    c = pd.Timestamp("2020-03-15")
    cover = dict(zip(ids, subscription_active_mask(t, c), strict=True))
    assert cover == {"1": True, "2": True, "3": False, "4": False, "5": True}  # start <= C < end (or open)
    timeline = dict(zip(ids, active_mask(t, c, cfg.label), strict=True))
    # with a subscriptions table the time model's population IS subscription coverage (account 3, between
    # its two runs, is not a customer at C)
    assert timeline == cover
    y = dict(zip(ids, labels(t, c, cfg.label), strict=True))
    assert y == {"1": 1, "2": 0, "3": 0, "4": 0, "5": 0}  # account 1 churns 04-05 in (03-15, 04-14]
    y_feb = dict(zip(ids, labels(t, pd.Timestamp("2020-02-01"), cfg.label), strict=True))
    assert y_feb["2"] == 0  # the late renewal is not a churn
    # a subscription starting exactly at C counts (start <= C): account 3 on 2020-04-01
    assert dict(zip(ids, subscription_active_mask(t, pd.Timestamp("2020-04-01")), strict=True))["3"]
    assert not dict(zip(ids, subscription_active_mask(t, pd.Timestamp("2020-04-05")), strict=True))["1"]  # end is exclusive


def test_observed_until_overrides_data_end(tmp_path):
    folder = write_socialnet(tmp_path)
    t = load_tables(folder, socialnet_config())
    assert t.data_end == pd.Timestamp("2020-06-01")
    assert t.data_start == pd.Timestamp("2020-01-01")
    t2 = load_tables(folder, socialnet_config(observed_until=None))
    assert t2.data_end == pd.Timestamp("2020-05-25")  # latest record: the last derived payment
    assert pd.isna(_by_id(t2, "churn_date")["2"])  # censored at the latest start as well


def test_age_from_date_of_birth_at_data_start(tmp_path):
    t = load_tables(write_socialnet(tmp_path), socialnet_config())
    assert t.attributes == ["channel", "country", "age"]
    assert _by_id(t, "age") == {"1": 29.0, "2": 20.0, "3": 34.0, "4": 49.0, "5": 18.0}  # whole years at 2020-01-01
    assert _by_id(t, "country")["2"] == "missing"
    assert "date_of_birth" not in t.customers.columns
    assert t.derived["age"] == "years from date_of_birth to 2020-01-01"


def test_socialnet_features_build(tmp_path):
    from features.build import FeatureBuilder

    cfg = socialnet_config()
    t = load_tables(write_socialnet(tmp_path), cfg)
    c = pd.Timestamp("2020-03-15")
    fs = FeatureBuilder(t, cfg).build(c, population=subscription_active_mask(t, c), with_labels=True)
    assert fs.frame["customer_id"].tolist() == ["1", "2", "5"]
    assert fs.frame["label"].tolist() == [1, 0, 0]
    assert {"age", "channel", "like_30d", "spend_30d"} <= set(fs.frame.columns)
    assert fs.frame["like_30d"].tolist() == [1.0, 0.0, 0.0]  # account 1 liked on 03-01
    assert fs.frame["spend_30d"].tolist() == [10.0, 10.0, 0.0]  # payments in [02-14, 03-15): 03-05; 02-25; none


def test_subscriptions_without_derive_keep_customer_columns(tmp_path):
    folder = write_socialnet(tmp_path)
    cfg = socialnet_config()
    subs_tc = cfg.data.tables["subscriptions"].model_copy(update={"derive": None})
    tables = {**cfg.data.tables, "subscriptions": subs_tc}
    cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"tables": tables})})
    with pytest.raises(DataError, match=r"table 'customers', column 'signup_date': missing required column"):
        load_tables(folder, cfg)


def test_subscription_end_before_start(tmp_path):
    subs = subscriptions_frame(SUB_ROWS + [(1, "2020-05-01", "2020-04-01", 10)])
    with pytest.raises(DataError, match=r"table 'subscriptions', column 'end_date': end date before start date"):
        load_tables(write_socialnet(tmp_path, subs=subs), socialnet_config())


def test_subscription_of_unknown_customer(tmp_path):
    subs = subscriptions_frame(SUB_ROWS + [(99, "2020-01-01", "2020-02-01", 10)])
    with pytest.raises(DataError, match=r"table 'subscriptions', column 'customer_id': rows whose customer"):
        load_tables(write_socialnet(tmp_path, subs=subs), socialnet_config())


# --------------------------------------------------------------------------- telco v11 layout
IDS = [f"{i:04d}-ABCDE" for i in range(24)]
CHURN = [1 if i % 3 == 0 else 0 for i in range(24)]  # 8 churners


def telco_frames() -> dict[str, pd.DataFrame]:
    n = len(IDS)
    i = np.arange(n)
    zips = np.array([90001, 90002, 90003])[i % 3]
    return {
        "Telco_customer_churn_demographics": pd.DataFrame({
            "Customer ID": IDS, "Count": 1, "Gender": np.where(i % 2, "Male", "Female"), "Age": 20 + i * 2,
            "Under 30": np.where(20 + i * 2 < 30, "Yes", "No"), "Senior Citizen": np.where(i > 20, "Yes", "No"),
            "Married": np.where(i % 4 == 0, "Yes", "No"), "Dependents": "No", "Number of Dependents": 0}),
        "Telco_customer_churn_location": pd.DataFrame({
            "Location ID": [f"LOC{k}" for k in i], "Customer ID": IDS[::-1], "Count": 1, "Country": "United States",
            "State": "California", "City": np.array(["A", "B", "C"])[i % 3], "Zip Code": zips[::-1],
            "Lat Long": [f"{34 + k / 100}, -118" for k in i], "Latitude": 34 + i / 100, "Longitude": -118.0}),
        "Telco_customer_churn_population": pd.DataFrame({"ID": [1, 2, 3, 4], "Zip Code": ["90001", "90002", "90003", "90004"],
                                                         "Population": [54492, 44586, 58198, 100]}),
        "Telco_customer_churn_services": pd.DataFrame({
            "Service ID": [f"S{k}" for k in i], "Customer ID": IDS, "Count": 1, "Quarter": "Q3",
            "Tenure in Months": 1 + i, "Offer": np.where(i % 5 == 0, None, "Offer A"),
            "Contract": np.where(np.array(CHURN) == 1, "Month-to-Month", "Two Year"),
            "Monthly Charge": 20.0 + i}),
        "Telco_customer_churn_status": pd.DataFrame({
            "Status ID": [f"ST{k}" for k in i], "Customer ID": IDS, "Count": 1, "Quarter": "Q3",
            "Satisfaction Score": np.where(np.array(CHURN) == 1, 1, 4), "Customer Status":
                np.where(np.array(CHURN) == 1, "Churned", "Stayed"), "Churn Label": np.where(np.array(CHURN) == 1, "Yes", "No"),
            "Churn Value": CHURN, "Churn Score": 50 + 40 * np.array(CHURN), "CLTV": 3000 + 10 * i,
            "Churn Category": np.where(np.array(CHURN) == 1, "Competitor", None),
            "Churn Reason": np.where(np.array(CHURN) == 1, "Competitor made better offer", None)}),
    }


def write_telco(folder: Path, frames: dict[str, pd.DataFrame] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, df in (frames or telco_frames()).items():
        df.to_csv(folder / f"{name}.csv", index=False)
    return folder


LEAKS = ["Churn Label", "Churn Score", "Churn Category", "Churn Reason", "Customer Status"]
IDISH = ["Count", "Quarter", "Location ID", "Service ID", "Status ID", "Country", "State", "City", "Zip Code",
         "Lat Long"]


def telco_config(exclude: list[str] | None = None, joins: list[dict] | None = None, attributes="auto") -> Config:
    if joins is None:
        joins = [{"file": "Telco_customer_churn_location.csv", "key": "Customer ID"},
                 {"file": "Telco_customer_churn_services.csv", "key": "Customer ID"},
                 {"file": "Telco_customer_churn_status.csv", "key": "Customer ID"},
                 {"file": "Telco_customer_churn_population.csv", "key": "Zip Code", "columns": ["Population"]}]
    customers = {"file": "Telco_customer_churn_demographics.csv", "columns": {"customer_id": "Customer ID"},
                 "joins": joins, "attributes": attributes,
                 "exclude": IDISH + LEAKS + ["Satisfaction Score"] if exclude is None else exclude}
    return Config.model_validate({"data": {"tables": {"customers": customers}},
                                  "label": {"definition": "snapshot", "column": "Churn Value"}})


def test_multi_file_join_assembles_customers(tmp_path):
    t = load_tables(write_telco(tmp_path), telco_config(exclude=[]))
    c = t.customers.set_index("customer_id")
    assert len(c) == 24 and list(t.customers["customer_id"]) == IDS  # base file order kept
    # location rows are in reverse order: joined by key, not by position
    assert c.loc["0000-ABCDE", "Latitude"] == pytest.approx(34.23)
    # population joined on Zip Code: int 90003 in location matches text "90003" in population
    loc = telco_frames()["Telco_customer_churn_location"].set_index("Customer ID")
    zip_of_0 = int(loc.loc["0000-ABCDE", "Zip Code"])
    pop = {90001: 54492.0, 90002: 44586.0, 90003: 58198.0}
    assert c.loc["0000-ABCDE", "Population"] == pop[zip_of_0]
    assert c.loc["0005-ABCDE", "Offer"] == "missing"  # empty text -> category "missing"
    assert c["Tenure in Months"].dtype == np.float64 and c["Contract"].dtype != np.float64
    assert len(t.files) == 5 and all(f.suffix == ".csv" for f in t.files)
    # auto attributes: identifier-like text and constants are left out even when not excluded
    assert "Lat Long" not in t.attributes and "Location ID" not in t.attributes and "Count" not in t.attributes
    assert "Churn Value" not in t.attributes  # the label is never an attribute


def test_snapshot_label_and_optional_dates(tmp_path):
    t = load_tables(write_telco(tmp_path), telco_config())
    assert t.snapshot_label.tolist() == CHURN and t.snapshot_label.dtype == np.int8
    assert t.customers["signup_date"].isna().all() and t.customers["churn_date"].isna().all()
    assert pd.isna(t.data_end)


def test_snapshot_label_from_text_values(tmp_path):
    frames = telco_frames()
    cfg = telco_config(exclude=[])
    cfg = cfg.model_copy(update={"label": cfg.label.model_copy(update={"column": "Churn Label"})})
    t = load_tables(write_telco(tmp_path, frames), cfg)
    assert t.snapshot_label.tolist() == CHURN
    frames["Telco_customer_churn_status"]["Churn Value"] = [2] + CHURN[1:]
    with pytest.raises(DataError, match=r"column 'Churn Value': labels must be 0 or 1 \(1 row\)"):
        load_tables(write_telco(tmp_path / "bad", frames), telco_config())


def test_excluded_columns_absent_from_features(tmp_path):
    from training.snapshot import snapshot_features

    cfg = telco_config()
    t = load_tables(write_telco(tmp_path), cfg)
    frame, features, cats = snapshot_features(cfg, t)
    for col in LEAKS + IDISH + ["Satisfaction Score", "Churn Value", "Customer ID"]:
        assert col not in features and col not in t.customers.columns, col
    assert set(features) == {"Gender", "Age", "Under 30", "Senior Citizen", "Married", "Latitude",
                             "Tenure in Months", "Offer", "Contract", "Monthly Charge", "CLTV", "Population"}
    assert "Contract" in cats and "Age" not in cats
    assert frame["label"].tolist() == CHURN
    # keeping Satisfaction Score is one line of config
    with_sat = telco_config(exclude=IDISH + LEAKS)
    _, features2, _ = snapshot_features(with_sat, load_tables(tmp_path, with_sat))
    assert set(features2) - set(features) == {"Satisfaction Score"}


def test_join_key_missing_in_one_file(tmp_path):
    frames = telco_frames()
    frames["Telco_customer_churn_services"] = frames["Telco_customer_churn_services"].rename(
        columns={"Customer ID": "CustomerID"})
    with pytest.raises(DataError, match=r"table 'customers', column 'Customer ID': join key missing in "
                                        r"Telco_customer_churn_services.csv; columns found: .*CustomerID") as info:
        load_tables(write_telco(tmp_path, frames), telco_config())
    assert info.value.table == "customers" and info.value.column == "Customer ID"


def test_join_key_absent_from_assembled_table(tmp_path):
    joins = [{"file": "Telco_customer_churn_population.csv", "key": "Zip Code"}]  # before location brings Zip Code
    with pytest.raises(DataError, match=r"column 'Zip Code': join key missing in the customers table assembled "
                                        r"before joining Telco_customer_churn_population.csv"):
        load_tables(write_telco(tmp_path), telco_config(exclude=[], joins=joins))


def test_join_unmatched_rows_are_an_error_unless_allowed(tmp_path):
    frames = telco_frames()
    frames["Telco_customer_churn_status"] = frames["Telco_customer_churn_status"].iloc[2:]
    folder = write_telco(tmp_path, frames)
    joins = [{"file": "Telco_customer_churn_status.csv", "key": "Customer ID"}]
    with pytest.raises(DataError, match=r"rows with no match in Telco_customer_churn_status.csv .*\(2 rows\)") as info:
        load_tables(folder, telco_config(exclude=[], joins=joins))
    assert "0000-ABCDE" in str(info.value)
    joins[0]["allow_missing"] = True
    cfg = Config.model_validate({"data": {"tables": {"customers": {
        "file": "Telco_customer_churn_demographics.csv", "columns": {"customer_id": "Customer ID"},
        "joins": joins, "attributes": ["Age", "CLTV"]}}}, "label": {"definition": "snapshot", "column": "Count"}})
    t = load_tables(folder, cfg)
    assert t.customers["CLTV"].isna().sum() == 2


def test_join_repeated_keys_in_joined_file(tmp_path):
    frames = telco_frames()
    st = frames["Telco_customer_churn_status"]
    frames["Telco_customer_churn_status"] = pd.concat([st, st.iloc[:1]])
    with pytest.raises(DataError, match=r"Telco_customer_churn_status.csv: repeated key values .*\(2 rows\)"):
        load_tables(write_telco(tmp_path, frames), telco_config())


def test_exclude_of_an_unknown_column_is_an_error(tmp_path):
    with pytest.raises(DataError, match=r"column 'Churn Scor': excluded column\(s\) \['Churn Scor'\] not in the table"):
        load_tables(write_telco(tmp_path), telco_config(exclude=["Churn Scor"]))


def test_snapshot_needs_the_whole_config(tmp_path):
    cfg = telco_config()
    with pytest.raises(DataError, match=r"column 'signup_date': missing required column"):
        load_tables(write_telco(tmp_path), cfg.data)  # DataConfig only: no label settings, dates required


def test_cross_validate_snapshot(tmp_path):
    from training.snapshot import cross_validate

    cfg = telco_config()
    res = cross_validate(cfg, load_tables(write_telco(tmp_path), cfg), n_splits=2, seed=0, max_rounds=30)
    assert res["out_of_time"] is False and "no out-of-time split" in res["validation"]
    assert res["n_customers"] == 24 and res["n_churners"] == 8
    for model in ("xgboost", "baseline_logistic", "baseline_prior"):
        assert {"roc_auc_mean", "roc_auc_std", "log_loss_mean", "log_loss_std"} <= set(res[model])
        assert len(res[model]["folds"]) == 2
    assert res["baseline_prior"]["roc_auc_mean"] == 0.5
    assert all(np.isfinite(res[m]["log_loss_mean"]) for m in ("xgboost", "baseline_logistic"))
    assert "Satisfaction Score" not in res["features"] and len(res["xgboost"]["rounds"]) == 2


# --------------------------------------------------------------------------- interactions, config
def test_interaction_hours_are_validated(tmp_path, caplog):
    from tests.features.conftest import make_config, raw_frames, write_frames

    frames = raw_frames()
    inter = frames["interactions"].assign(response_hours=[1.0, 2.5, None, 0.0, 4.0, 3.0, 1.0],
                                          resolution_hours=[5.0, 2.5, None, 1.0, 4.0, 3.0, 2.0])
    frames["interactions"] = inter
    write_frames(tmp_path / "ok", frames)
    t = load_tables(tmp_path / "ok", make_config().data)
    assert t.interactions["response_hours"].isna().sum() == 1
    assert "resolution_hours" in t.interactions.columns
    frames["interactions"] = inter.assign(response_hours=[1.0, -2.0, None, 0.0, 4.0, 3.0, 1.0])
    write_frames(tmp_path / "bad", frames)
    with pytest.raises(DataError, match=r"table 'interactions', column 'response_hours': negative hours \(1 row\)"):
        load_tables(tmp_path / "bad", make_config().data)


def test_shipped_configs_load():
    for name in ("default", "socialnet7", "telco_ibm_v11"):
        cfg = load_config(ROOT / "configs" / f"{name}.yaml")
        assert cfg.data.tables["customers"].file
    s7 = load_config(ROOT / "configs" / "socialnet7.yaml")
    assert str(s7.data.observed_until) == "2020-06-01"
    assert s7.data.tables["subscriptions"].derive.renewal_grace_days == 30
    telco = load_config(ROOT / "configs" / "telco_ibm_v11.yaml")
    assert telco.label.definition == "snapshot" and telco.data.tables["customers"].attributes == "auto"
    assert set(LEAKS) <= set(telco.data.tables["customers"].exclude)


@pytest.mark.parametrize("data, message", [
    ({"tables": {"customers": {"file": "c"}, "events": {"file": "e", "derive": {}}}}, "only supported on the subscriptions"),
    ({"tables": {"customers": {"file": "c"}, "events": {"file": "e", "joins": [{"file": "x", "key": "k"}]}}},
     "only supported on the customers"),
    ({"tables": {"customers": {"file": "c", "attributes": ["a"], "exclude": ["a"]}}}, "both attributes and excluded"),
    ({"tables": {"customers": {"file": "c", "derived": {"age": {"as_of": "data_start"}}}}}, "exactly one of"),
    ({"tables": {"customers": {"file": "c", "joins": [{"file": "x", "key": ["a", "b"], "right_key": "c"}]}}},
     "same, non-zero number"),
])
def test_config_rejects_misplaced_keys(tmp_path, data, message):
    p = tmp_path / "c.yaml"
    import yaml

    p.write_text(yaml.safe_dump({"data": data}))
    with pytest.raises(ConfigError, match=message):
        load_config(p)


def test_snapshot_label_config_rules(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("data: {tables: {customers: {file: c}}}\nlabel: {definition: snapshot}\n")
    with pytest.raises(ConfigError, match="needs label.column"):
        load_config(p)
    p.write_text("data: {tables: {customers: {file: c}}}\nlabel: {definition: churn_date, column: x}\n")
    with pytest.raises(ConfigError, match="only used with definition 'snapshot'"):
        load_config(p)


def test_auto_attributes_leave_out_identifiers_and_constants(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="features.contract"):
        t = load_tables(write_telco(tmp_path), telco_config(exclude=[]))
    for col in ("Location ID", "Service ID", "Status ID", "Lat Long"):  # unique text per customer
        assert col not in t.attributes
    for col in ("Count", "Quarter", "Country", "State", "Dependents"):  # constant
        assert col not in t.attributes
    assert {"City", "Zip Code", "Churn Score", "Satisfaction Score"} <= set(t.attributes)  # only exclude drops these
    msgs = " ".join(r.getMessage() for r in caplog.records)
    assert "identifier-like" in msgs and "Lat Long" in msgs


def test_snapshot_label_is_always_excluded_from_attributes(tmp_path):
    cfg = telco_config(exclude=[])
    assert cfg.data.tables["customers"].exclude == ["Churn Value"]  # added by the config, not the user
    frames = telco_frames()
    frames["Telco_customer_churn_demographics"]["Joined"] = "2020-01-01"
    folder = write_telco(tmp_path, frames)
    data_only = cfg.data.model_copy(update={"tables": {"customers": cfg.data.tables["customers"].model_copy(
        update={"columns": {"customer_id": "Customer ID", "signup_date": "Joined"}})}})
    t = load_tables(folder, data_only)  # without the label settings: dates required, label still not a feature
    assert "Churn Value" not in t.attributes and "Churn Value" not in t.customers.columns
    p = tmp_path / "c.yaml"
    p.write_text("data: {tables: {customers: {file: c, attributes: [Churn Value]}}}\n"
                 "label: {definition: snapshot, column: Churn Value}\n")
    with pytest.raises(ConfigError, match="both attributes and excluded"):
        load_config(p)
