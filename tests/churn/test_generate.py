"""The seeded demo-data generator: schema, referential and temporal integrity, determinism, a partial
churn signal, the text bank, and the write_demo round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from churn.demo_texts import text_bank
from churn.generate import TABLES, generate_demo, write_demo

START, END = pd.Timestamp("2024-01-01"), pd.Timestamp("2025-12-31")
OBS_END = END + pd.Timedelta(days=1)  # activity of non-churners runs to the end of the END day
CHILD = ("events", "transactions", "interactions")
COMPLAINTS = ("billing", "technical", "cancellation")
HAN = r"[\u4e00-\u9fff]"

EXPECTED_DTYPES = {
    "customers": {"customer_id": "str", "signup_date": "datetime64[us]", "plan": "str", "channel": "str",
                  "region": "str", "churn_date": "datetime64[us]"},
    "events": {"customer_id": "str", "timestamp": "datetime64[us]", "event_type": "category", "value": "float64"},
    "transactions": {"customer_id": "str", "timestamp": "datetime64[us]", "amount": "float64"},
    "interactions": {"customer_id": "str", "timestamp": "datetime64[us]", "channel": "str", "category": "str",
                     "text": "str", "rating": "float64"},
    "treatments": {"customer_id": "str", "timestamp": "datetime64[us]", "campaign_id": "str", "playbook_id": "str",
                   "group": "str"},
}


@pytest.fixture(scope="module")
def small() -> dict[str, pd.DataFrame]:
    return generate_demo(n_customers=400, seed=3)


@pytest.fixture(scope="module")
def moderate() -> dict[str, pd.DataFrame]:
    return generate_demo(n_customers=2000, seed=11)


def _bounds(customers: pd.DataFrame, ids: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Per child row: first allowed time max(signup, START) and first forbidden time (churn or OBS_END)."""
    c = customers.set_index("customer_id")
    signup = c["signup_date"].reindex(ids).to_numpy()
    churn = c["churn_date"].reindex(ids).fillna(OBS_END).to_numpy()
    return np.maximum(signup, START.to_datetime64()), churn


# ------------------------------------------------------------------------------------------ schema
def test_columns_and_dtypes(small: dict[str, pd.DataFrame]) -> None:
    assert list(small) == list(TABLES)
    for name, expected in EXPECTED_DTYPES.items():
        assert {col: str(dtype) for col, dtype in small[name].dtypes.items()} == expected, name
    assert list(small["events"]["event_type"].cat.categories) == [
        "login", "session", "feature_use", "content_share", "support_view"]


def test_categorical_values_come_from_known_sets(small: dict[str, pd.DataFrame]) -> None:
    c, it = small["customers"], small["interactions"]
    assert set(c["plan"]) == {"basic", "standard", "premium"}
    assert set(c["channel"]) == {"web", "app", "partner", "store"}
    assert set(c["region"]) == {"na_east", "na_west", "europe", "apac", "latam"}
    assert set(it["channel"]) == {"email", "chat", "phone", "review", "app_store"}
    assert set(it["category"]) == {"billing", "technical", "cancellation", "product_feedback", "praise", "account"}


def test_customer_ids_unique_zero_padded_and_sorted(small: dict[str, pd.DataFrame]) -> None:
    ids = small["customers"]["customer_id"]
    assert ids.head(3).tolist() == ["C0000001", "C0000002", "C0000003"]
    assert ids.iloc[-1] == "C0000400"
    assert ids.is_unique and ids.is_monotonic_increasing
    assert ids.str.fullmatch(r"C\d{7}").all()


def test_tables_sorted_by_customer_then_time_with_fresh_index(small: dict[str, pd.DataFrame]) -> None:
    for name in CHILD:
        df = small[name]
        assert isinstance(df.index, pd.RangeIndex) and df.index.start == 0
        key = df[["customer_id", "timestamp"]]
        pd.testing.assert_frame_equal(key, key.sort_values(["customer_id", "timestamp"]).reset_index(drop=True))


# ------------------------------------------------------------------------------------------ integrity
def test_child_rows_reference_existing_customers(small: dict[str, pd.DataFrame]) -> None:
    known = set(small["customers"]["customer_id"])
    for name in CHILD:
        assert set(small[name]["customer_id"]) <= known, name


def test_dates_of_customers(small: dict[str, pd.DataFrame]) -> None:
    c = small["customers"]
    assert (c["signup_date"] == c["signup_date"].dt.normalize()).all()
    assert c["signup_date"].max() <= END
    assert c["signup_date"].min() >= START - pd.Timedelta(days=3 * 365 + 1)
    assert 0.3 < (c["signup_date"] < START).mean() < 0.5  # an initial base with long tenure
    churned = c.dropna(subset=["churn_date"])
    assert (churned["churn_date"] > churned["signup_date"]).all()
    assert (churned["churn_date"] <= END).all()
    assert (churned["churn_date"] == churned["churn_date"].dt.normalize()).all()


def test_child_rows_within_each_customer_lifetime(small: dict[str, pd.DataFrame]) -> None:
    for name in CHILD:
        df = small[name]
        first, stop = _bounds(small["customers"], df["customer_id"])
        ts = df["timestamp"].to_numpy()
        assert (ts >= first).all(), f"{name}: rows before sign-up or start"
        assert (ts < stop).all(), f"{name}: rows at or after churn"
        assert (df["timestamp"] == df["timestamp"].dt.floor("s")).all()


def test_amounts_non_negative_with_two_decimals(small: dict[str, pd.DataFrame]) -> None:
    amount = small["transactions"]["amount"]
    assert amount.notna().all() and (amount >= 0).all()
    assert np.allclose(amount, amount.round(2))
    # plan charges (9.99 / 15.99 / 24.99 list prices) dominate the table
    assert amount.isin([9.99, 15.99, 24.99, 10.99, 16.99, 25.99]).mean() > 0.3


def test_event_value_only_for_sessions(small: dict[str, pd.DataFrame]) -> None:
    ev = small["events"]
    is_session = ev["event_type"] == "session"
    assert ev.loc[~is_session, "value"].isna().all()
    minutes = ev.loc[is_session, "value"]
    assert minutes.notna().all() and (minutes > 0).all() and (minutes <= 480).all()


def test_ratings_are_csat_and_missing_for_email(small: dict[str, pd.DataFrame]) -> None:
    it = small["interactions"]
    rated = it["rating"].dropna()
    assert set(rated.unique()) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    assert it.loc[it["channel"] == "email", "rating"].isna().all()
    assert 0.3 < it["rating"].notna().mean() < 0.9


# ------------------------------------------------------------------------------------------ determinism
def test_same_seed_gives_identical_frames(small: dict[str, pd.DataFrame]) -> None:
    again = generate_demo(n_customers=400, seed=3)
    for name in TABLES:
        pd.testing.assert_frame_equal(small[name], again[name])


def test_other_seed_gives_different_data(small: dict[str, pd.DataFrame]) -> None:
    other = generate_demo(n_customers=400, seed=4)
    assert not small["customers"].equals(other["customers"])
    assert len(small["events"]) != len(other["events"])


@pytest.mark.parametrize(
    "kwargs, match",
    [({"n_customers": 0}, "n_customers"), ({"events_per_month": 0}, "events_per_month"),
     ({"start": "2025-01-01", "end": "2024-01-01"}, "end")],
    ids=["no-customers", "no-events", "end-before-start"],
)
def test_bad_arguments_raise(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        generate_demo(**kwargs)


def test_short_window_scales_activity_to_its_length() -> None:
    tables = generate_demo(n_customers=100, seed=1, start="2024-01-31", end="2024-02-01")
    assert tables["events"]["timestamp"].between("2024-01-31", "2024-02-02").all()
    assert len(tables["events"]) < 100 * 20 * 3 / 30 * 2  # ~2 days of a 20-events-a-month rate, not 2 months


# ------------------------------------------------------------------------------------------ mechanism
def test_monthly_churn_rate_is_plausible(moderate: dict[str, pd.DataFrame]) -> None:
    c = moderate["customers"]
    rates = []
    for m0 in pd.date_range(START, "2025-12-01", freq="MS"):
        m1 = m0 + pd.offsets.MonthBegin(1)
        active = (c["signup_date"] < m0) & (c["churn_date"].isna() | (c["churn_date"] >= m0))
        left = active & (c["churn_date"] >= m0) & (c["churn_date"] < m1)
        rates.append(left.sum() / active.sum())
    assert 0.03 <= np.mean(rates) <= 0.065
    assert max(rates) < 0.12


def test_complaints_rise_before_churn_but_not_for_everyone(moderate: dict[str, pd.DataFrame]) -> None:
    """Churners complain more in their last 60 days than stayers in the last 60 days; many churners never do."""
    c, it = moderate["customers"], moderate["interactions"]
    window = pd.Timedelta(days=60)
    complaints = it[it["category"].isin(COMPLAINTS)]
    churners = c[c["churn_date"].notna() & (c["churn_date"] - window >= START)
                 & (c["signup_date"] <= c["churn_date"] - window)]
    stayers = c[c["churn_date"].isna() & (c["signup_date"] <= OBS_END - window)]

    def per_customer(who: pd.DataFrame, stop: pd.Series) -> pd.Series:
        rows = complaints.merge(pd.DataFrame({"customer_id": who["customer_id"], "stop": stop}), on="customer_id")
        rows = rows[(rows["timestamp"] >= rows["stop"] - window) & (rows["timestamp"] < rows["stop"])]
        return rows.groupby("customer_id").size().reindex(who["customer_id"], fill_value=0)

    churner_n = per_customer(churners, churners["churn_date"])
    stayer_n = per_customer(stayers, pd.Series(OBS_END, index=stayers.index))
    assert len(churners) > 200 and len(stayers) > 200
    assert churner_n.mean() > 1.5 * stayer_n.mean() > 0
    assert 0.2 < (churner_n > 0).mean() < 0.8  # partial signal: plenty of churners never complain
    assert (stayer_n > 0).mean() > 0.03  # false alarms: some stayers complain too


def test_engagement_fades_before_churn_for_some(moderate: dict[str, pd.DataFrame]) -> None:
    """Events in the last 30 days vs the 60 before that: lower for churners on average, not for all of them."""
    c, ev = moderate["customers"], moderate["events"]
    churners = c[c["churn_date"].notna() & (c["churn_date"] - pd.Timedelta(days=90) >= START)
                 & (c["signup_date"] <= c["churn_date"] - pd.Timedelta(days=90))]
    rows = ev.merge(churners[["customer_id", "churn_date"]], on="customer_id")
    days_left = (rows["churn_date"] - rows["timestamp"]).dt.days
    last30 = rows[days_left < 30].groupby("customer_id").size().reindex(churners["customer_id"], fill_value=0)
    prev60 = rows[(days_left >= 30) & (days_left < 90)].groupby("customer_id").size()
    prev60 = prev60.reindex(churners["customer_id"], fill_value=0)
    ratio = last30 / (prev60 / 2 + 1)
    assert ratio.median() < 0.85
    assert (ratio > 0.9).mean() > 0.2  # abrupt leavers look normal until the end


def test_texts_are_varied_and_partly_chinese(moderate: dict[str, pd.DataFrame]) -> None:
    text = moderate["interactions"]["text"]
    chinese = text.str.contains(HAN)
    assert text[~chinese].nunique() >= 300
    assert text[chinese].nunique() >= 40
    assert 0.04 < chinese.mean() < 0.13


def test_text_bank_size() -> None:
    texts, offsets, sizes = text_bank()
    chinese = pd.Series(texts).str.contains(HAN)
    assert len(set(texts)) == len(texts)
    assert (~chinese).sum() >= 300 and chinese.sum() >= 40
    assert sizes.sum() == len(texts) and offsets.shape == sizes.shape == (2, 6, 4)


def test_ratings_track_category(moderate: dict[str, pd.DataFrame]) -> None:
    mean = moderate["interactions"].groupby("category")["rating"].mean()
    assert mean["praise"] > mean["cancellation"] + 1.0


# ------------------------------------------------------------------------------------------ write_demo
@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_write_demo_round_trip(tmp_path: Path, small: dict[str, pd.DataFrame], fmt: str) -> None:
    paths = write_demo(small, tmp_path / "out", fmt=fmt)
    assert [p.name for p in paths] == [f"{t}.{fmt}" for t in TABLES]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(p.name for p in paths)  # no temp files
    for name, path in zip(TABLES, paths, strict=True):
        expected = small[name]
        if fmt == "parquet":
            got = pd.read_parquet(path)
        else:
            dates = [col for col, dtype in EXPECTED_DTYPES[name].items() if dtype.startswith("datetime")]
            got = pd.read_csv(path, parse_dates=dates)
            expected = expected.astype({"event_type": "str"}) if name == "events" else expected
        pd.testing.assert_frame_equal(got, expected, check_dtype=fmt == "parquet")


def test_write_demo_rejects_unknown_format(tmp_path: Path, small: dict[str, pd.DataFrame]) -> None:
    with pytest.raises(ValueError, match="fmt"):
        write_demo(small, tmp_path, fmt="xlsx")
    assert not any(tmp_path.iterdir())


def test_write_demo_requires_every_table(tmp_path: Path, small: dict[str, pd.DataFrame]) -> None:
    with pytest.raises(ValueError, match="interactions"):
        write_demo({k: v for k, v in small.items() if k != "interactions"}, tmp_path)


# ------------------------------------------------------------------------------------------ campaigns
def test_campaigns_are_randomized_monthly_and_inside_the_data(moderate: dict[str, pd.DataFrame]) -> None:
    from churn.generate import PLAYBOOK_IDS

    tr = moderate["treatments"]
    assert tr["campaign_id"].nunique() == 9
    assert set(tr["playbook_id"]) == set(PLAYBOOK_IDS) and set(tr["group"]) == {"treated", "control"}
    assert abs((tr["group"] == "control").mean() - 0.3) < 0.05
    assert not tr.duplicated(["customer_id", "campaign_id"]).any()
    assert (tr["timestamp"].dt.hour == 9).all() and (tr["timestamp"].dt.day == 1).all()
    assert tr["timestamp"].max() < END - pd.Timedelta(days=30)  # every outcome window is observed
    c = moderate["customers"].set_index("customer_id")
    churn = c["churn_date"].reindex(tr["customer_id"]).to_numpy()
    assert not (churn <= tr["timestamp"].dt.normalize().to_numpy()).any(), "contacted after churning"


def test_never_contacted_customers_churn_as_without_campaigns(monkeypatch: pytest.MonkeyPatch) -> None:
    from churn import generate as gen

    with_campaigns = gen.generate_demo(n_customers=600, seed=5)
    monkeypatch.setattr(gen._Campaigns, "contact", lambda self, m, cust, months, logit, tenure, alive:
                        np.zeros(len(logit), np.float32))
    without = gen.generate_demo(n_customers=600, seed=5)
    tr = with_campaigns["treatments"]
    treated = tr.loc[tr["group"] == "treated", "customer_id"].unique()
    a = with_campaigns["customers"].set_index("customer_id")["churn_date"]
    b = without["customers"].set_index("customer_id")["churn_date"]
    same = (a == b) | (a.isna() & b.isna())
    assert same[~a.index.isin(treated)].all()
    assert not same[a.index.isin(treated)].all(), "the campaigns' effect shows in treated customers' churn dates"


def test_truth_has_persuadables_sleeping_dogs_and_no_effect(tmp_path: Path) -> None:
    from churn.generate import PLAYBOOK_IDS, TRUTH_FILE, simulate_demo

    tables, truth = simulate_demo(n_customers=600, seed=5)
    c = tables["customers"]
    active = c.loc[c["churn_date"].isna(), "customer_id"]
    assert len(truth) == len(active) * len(PLAYBOOK_IDS)
    assert set(truth["customer_id"]) == set(active)
    effect = truth["true_effect"]
    assert (effect < -0.01).mean() > 0.05 and (effect > 0.01).mean() > 0.01 and (effect == 0).mean() > 0.2
    write_demo(tables, tmp_path, truth=truth)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / TRUTH_FILE), truth)


def test_contact_effects_follow_the_retention_futility_world() -> None:
    """Persuadable (moderately unhappy) respond; lost causes (very unhappy) and sure things do not; dormant
    long-tenured customers (sleeping dogs) churn more whatever their satisfaction."""
    from churn.generate import PLAYBOOK_IDS, contact_effect, dormant

    cust = {"engagement": np.array([1.0, 1.0, 1.0, 0.3, 0.3], np.float32), "plan": np.array([1, 1, 1, 1, 1]),
            "channel": np.array([0, 0, 0, 0, 0])}
    s = np.array([-0.5, -1.2, 1.0, 0.0, -1.2], np.float32)
    tenure = np.array([12.0, 12.0, 12.0, 24.0, 24.0])
    eff = contact_effect(cust, s, tenure, np.zeros(5, bool))
    esc = PLAYBOOK_IDS.index("support-escalation")
    assert eff[0, esc] == pytest.approx(-1.6)                     # persuadable
    assert (eff[1] == 0).all() and (eff[2] == 0).all()            # lost cause, sure thing
    assert (eff[3] > 0).all() and (eff[4] > 0).all()              # sleeping dogs, even when very unhappy
    assert dormant(cust, tenure).tolist() == [False, False, False, True, True]


def test_past_campaigns_route_playbooks_by_rule_with_random_exploration() -> None:
    from churn.generate import PLAYBOOK_IDS, rule_playbook

    cust = {"engagement": np.array([1.0, 1.0, 1.0, 0.3, 1.0, 1.0], np.float32),
            "plan": np.array([1, 1, 1, 1, 0, 1]), "channel": np.array([0, 0, 0, 0, 0, 0])}
    s = np.array([0.0, -0.8, 0.0, 0.0, 0.0, 0.0], np.float32)
    tenure = np.array([12.0, 12.0, 2.0, 12.0, 12.0, 12.0])
    billing = np.array([True, False, False, False, False, False])
    got = [PLAYBOOK_IDS[i] for i in rule_playbook(cust, s, tenure, billing)]
    assert got == ["billing-review", "support-escalation", "onboarding-help", "reengage-nudge", "winback-discount",
                   "auto-checkin"]
