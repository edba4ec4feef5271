"""Contract gaps found on real data: a minimal customers table, ids with leading zeros (issue 12)."""

from __future__ import annotations

import pandas as pd

from features.build import FeatureBuilder
from features.contract import load_tables
from tests.features.conftest import make_config

T = pd.Timestamp("2024-03-01")


def _write(folder, customers: str, events: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "customers.csv").write_text(customers)
    (folder / "events.csv").write_text(events)


def test_minimal_customers_table_id_and_signup_only(tmp_path):
    """Regression: no attribute columns used to crash at features/build.py ``b.frame.iloc[idx]`` (IndexError)."""
    _write(tmp_path, "customer_id,signup_date\na,2024-01-01\nb,2024-01-15\nc,2024-04-01\n",
           "customer_id,timestamp,event_type\na,2024-02-01,login\nb,2024-02-20,login\nb,2024-02-21,login\n")
    cfg = make_config(tables={"customers": {"file": "customers"}, "events": {"file": "events"}})
    tables = load_tables(tmp_path, cfg.data)
    assert tables.attributes == []
    fs = FeatureBuilder(tables, cfg).build(T, with_labels=False)
    assert fs.frame["customer_id"].tolist() == ["a", "b"]  # c signs up after T
    assert fs.frame.loc[fs.frame["customer_id"] == "b", "events_30d"].item() == 2


def test_zero_padded_ids_stay_text_everywhere(tmp_path):
    """Regression: "0001495" used to become 1495 (CSV ids read as numbers)."""
    _write(tmp_path, "customer_id,signup_date,plan\n0001495,2024-01-01,a\n0002,2024-01-01,b\n",
           "customer_id,timestamp,event_type\n0001495,2024-02-01,login\n0002,2024-02-02,login\n0002,2024-02-03,login\n")
    cfg = make_config(tables={"customers": {"file": "customers", "attributes": ["plan"]}, "events": {"file": "events"}})
    tables = load_tables(tmp_path, cfg.data)
    assert tables.customers["customer_id"].tolist() == ["0001495", "0002"]
    assert tables.events["customer_id"].tolist() == ["0001495", "0002", "0002"]
    fs = FeatureBuilder(tables, cfg).build(T)
    assert dict(zip(fs.frame["customer_id"], fs.frame["events_30d"], strict=True)) == {"0001495": 1, "0002": 2}


def test_mixed_day_month_order_is_an_error_unless_the_format_is_declared(tmp_path):
    from churn.errors import DataError

    _write(tmp_path, "customer_id,signup_date\na,03/04/2021\nb,13/04/2021\n",
           "customer_id,timestamp,event_type\na,2021-05-01,login\n")
    cfg = make_config(tables={"customers": {"file": "customers"}, "events": {"file": "events"}})
    import pytest

    with pytest.raises(DataError, match=r"column 'signup_date': dates in two day/month orders: '13/04/2021'.*'03/04/2021'"):
        load_tables(tmp_path, cfg.data)
    declared = make_config(tables={"customers": {"file": "customers", "date_format": "%d/%m/%Y"},
                                   "events": {"file": "events"}})
    t = load_tables(tmp_path, declared.data)
    assert t.customers["signup_date"].tolist() == [pd.Timestamp("2021-04-03"), pd.Timestamp("2021-04-13")]


def _snapshot_cfg(**customers):
    from churn.config import Config

    return Config.model_validate({"data": {"tables": {"customers": {"file": "part1", **customers}}},
                                  "label": {"definition": "snapshot", "column": "Churn"}})


def test_declared_types_and_missing_tokens(tmp_path):
    """Telco's TotalCharges: text with " " for new customers; declared numeric with " " as missing."""
    (tmp_path / "part1.csv").write_text("id,TotalCharges,SeniorCitizen,Area,Joined,Churn\n"
                                        "0001,29.85,0,0415,03/04/2021,No\n0002, ,1,0408,13/04/2021,Yes\n")
    cfg = _snapshot_cfg(columns={"customer_id": "id"}, attributes=["TotalCharges", "SeniorCitizen", "Area"],
                        na_values=[" "], types={"TotalCharges": "numeric", "SeniorCitizen": "category",
                                                "Area": "text", "Joined": "date:%d/%m/%Y"})
    t = load_tables(tmp_path, cfg)
    c = t.customers
    assert c["customer_id"].tolist() == ["0001", "0002"]
    assert c["TotalCharges"].tolist()[0] == 29.85 and pd.isna(c["TotalCharges"].iloc[1])
    assert c["SeniorCitizen"].tolist() == ["0", "1"] and c["Area"].tolist() == ["0415", "0408"]
    from features.build import profile_features

    specs = {s.name: s for s in profile_features(c, t.attributes).specs}
    assert not specs["TotalCharges"].categorical and specs["SeniorCitizen"].categorical
    bad = _snapshot_cfg(columns={"customer_id": "id"}, attributes=["TotalCharges"], types={"TotalCharges": "numeric"})
    import pytest

    from churn.errors import DataError

    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "part1.csv").write_text("id,TotalCharges,Churn\n0001,29.85,No\n0002,unknown,Yes\n")
    with pytest.raises(DataError, match=r"column 'TotalCharges': declared numeric, but some values are not numbers"):
        load_tables(tmp_path / "bad", bad)
    tokens = _snapshot_cfg(columns={"customer_id": "id"}, attributes=["TotalCharges"], types={"TotalCharges": "numeric"},
                           na_values=["unknown"])
    assert load_tables(tmp_path / "bad", tokens).customers["TotalCharges"].isna().tolist() == [False, True]


def test_row_union_of_files_with_renamed_headers(tmp_path):
    (tmp_path / "part1.csv").write_text("id,Plan,Churn\n0001,a,No\n0002,b,Yes\n")
    (tmp_path / "part2.csv").write_text("ID,plan_name,Churn\n0003,a,Yes\n")
    cfg = _snapshot_cfg(columns={"customer_id": "id"}, attributes=["Plan"],
                        union=[{"file": "part2", "rename": {"ID": "id", "plan_name": "Plan"}}])
    t = load_tables(tmp_path, cfg)
    assert t.customers["customer_id"].tolist() == ["0001", "0002", "0003"]
    assert t.customers["Plan"].tolist() == ["a", "b", "a"] and t.snapshot_label.tolist() == [0, 1, 1]
    assert [f.name for f in t.files] == ["part1.csv", "part2.csv"]
    import pytest

    from churn.errors import DataError

    unrenamed = _snapshot_cfg(columns={"customer_id": "id"}, attributes=["Plan"], union=[{"file": "part2"}])
    with pytest.raises(DataError, match=r"union file part2.csv: columns differ from part1.csv after rename: "
                                        r"missing \['Plan', 'id'\], extra \['ID', 'plan_name'\]"):
        load_tables(tmp_path, unrenamed)


def test_extra_columns_of_events_and_transactions_become_features(tmp_path):
    """quantity (numeric): sum and mean per window; product (listed values): counts per window; in the catalogue."""
    (tmp_path / "customers.csv").write_text("customer_id,signup_date\na,2023-01-01\nb,2023-01-01\n")
    (tmp_path / "events.csv").write_text("customer_id,timestamp,event_type\na,2024-02-01,login\n")
    (tmp_path / "transactions.csv").write_text(
        "customer_id,timestamp,amount,quantity,product\n"
        "a,2024-02-20,10,2,shoes\na,2024-02-25,5,4,bags\na,2024-03-01,9,100,shoes\n"  # the last is at T: not a feature
        "b,2023-12-01,3,1,shoes\nb,2024-02-28,3,,hats\n")
    cfg = make_config(tables={"customers": {"file": "customers"}, "events": {"file": "events"},
                              "transactions": {"file": "transactions",
                                               "extra_columns": {"quantity": "numeric", "product": ["shoes", "bags"]}}},
                      windows_days=[30])
    fs = FeatureBuilder(load_tables(tmp_path, cfg.data), cfg).build(T)
    f = fs.frame.set_index("customer_id")
    assert f.loc["a", "transactions_quantity_sum_30d"] == 6 and f.loc["a", "transactions_quantity_mean_30d"] == 3
    assert f.loc["a", "transactions_product_shoes_30d"] == 1 and f.loc["a", "transactions_product_bags_30d"] == 1
    # b: the only purchase in the window has no quantity (mean missing, sum 0) and an unlisted product
    assert f.loc["b", "transactions_quantity_sum_30d"] == 0 and pd.isna(f.loc["b", "transactions_quantity_mean_30d"])
    assert f.loc["b", "transactions_product_shoes_30d"] == 0
    spec = {s.name: s for s in fs.specs}["transactions_quantity_sum_30d"]
    assert spec.family == "value" and "extra column" in spec.description and spec.window_days == 30


def test_table_rename_reads_both_header_variants(tmp_path):
    """One config for exports whose headers vary: the BigML 80% and 20% files."""
    for name, header in (("v1", "id,Intl plan,Churn"), ("v2", "id,Intl_plan,Churn")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "part1.csv").write_text(f"{header}\n1,yes,No\n2,no,Yes\n")
    cfg = _snapshot_cfg(columns={"customer_id": "id"}, attributes=["Intl_plan"], rename={"Intl plan": "Intl_plan"})
    for name in ("v1", "v2"):
        assert load_tables(tmp_path / name, cfg).customers["Intl_plan"].tolist() == ["yes", "no"]
