"""Hand-made tables for the feature-engine tests.

Every table is written out as literal rows so the expected feature values in the tests can be
worked out by hand. ``CUTOFF`` is the snapshot time T; the windows it implies:

* 7 days:  [2024-05-25, T)
* 30 days: [2024-05-02, T)      (trend "recent" window, complaints_30d, spend_30d)
* 90 days: [2024-03-03, T)      (trend baseline = [2024-03-03, 2024-05-02), purchases_90d, monthly revenue)

Customers (row order = ``_code``):

====  ===========  ==========  =========================================================
code  customer     signed up   story at T
====  ===========  ==========  =========================================================
0     A            2023-01-01  steady, growing user; billing complaint with angry text
1     B            2024-04-15  new customer (tenure 47 days)
2     C            2023-06-01  activity fell 60% -> at_risk; churns 2024-06-20 (after T)
3     D            2023-03-01  churned 2024-05-10 (before T): not in the population
4     E            2024-07-01  signs up after T: not in the population
5     F            2023-02-01  last activity 42 days before T -> dormant
6     G            2023-02-01  never active -> lapsed (churn_date definition only)
====  ===========  ==========  =========================================================
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from churn.config import Config
from features.contract import CHILD_TABLES, Tables, validate_child, validate_customers

CUTOFF = pd.Timestamp("2024-06-01")
NEGATIVE_WORDS = ("terrible", "bad", "awful", "hate", "angry", "worst")
POSITIVE_WORDS = ("great", "love", "thanks")
COMPLAINT_WORDS = ("bug", "charged", "cancel")


class KeywordScorer:
    """Deterministic stand-in for the text scorer: -0.8 for a negative word, +0.6 for a positive one, else 0;
    complaint intent where a complaint word occurs (as the builtin scorer's ``analyse`` reports it)."""

    def analyse(self, texts: pd.Series) -> pd.DataFrame:
        low = texts.astype(str).str.lower()
        intent = low.map(lambda t: any(w in t for w in COMPLAINT_WORDS)).astype(bool)
        return pd.DataFrame({"sentiment": self.score(texts), "complaint_intent": intent}, index=texts.index)

    def score(self, texts: pd.Series) -> pd.Series:
        def one(t: str) -> float:
            low = str(t).lower()
            if any(w in low for w in NEGATIVE_WORDS):
                return -0.8
            if any(w in low for w in POSITIVE_WORDS):
                return 0.6
            return 0.0

        return pd.Series([one(t) for t in texts], index=texts.index, dtype="float64")


CUSTOMERS_ROWS = [
    # customer_id, signup_date, churn_date, plan, seats
    ("A", "2023-01-01", None, "pro", 5),
    ("B", "2024-04-15", None, "basic", 1),
    ("C", "2023-06-01", "2024-06-20", "basic", 2),
    ("D", "2023-03-01", "2024-05-10", "pro", 3),
    ("E", "2024-07-01", None, "basic", 1),
    ("F", "2023-02-01", None, "pro", 4),
    ("G", "2023-02-01", None, "basic", 1),
]

EVENTS_ROWS = [
    # customer_id, timestamp, event_type, value (minutes)
    ("A", "2024-03-10 09:00", "login", 10.0),  # baseline
    ("A", "2024-03-20 09:00", "login", 10.0),  # baseline
    ("A", "2024-04-05 09:00", "view", None),  # baseline
    ("A", "2024-04-20 09:00", "login", 10.0),  # baseline
    ("A", "2024-05-05 09:00", "login", 10.0),  # 30d
    ("A", "2024-05-28 09:00", "login", 20.0),  # 7d
    ("A", "2024-05-28 18:00", "view", None),  # 7d, same day
    ("A", "2024-05-31 12:00", "login", 30.0),  # 7d, half a day before T
    ("B", "2024-04-20 10:00", "login", None),  # baseline
    ("B", "2024-05-20 00:00", "login", None),  # 30d, 12 days before T
    ("C", "2024-03-05 08:00", "login", None),  # baseline x5
    ("C", "2024-03-15 08:00", "login", None),
    ("C", "2024-04-01 08:00", "login", None),
    ("C", "2024-04-25 08:00", "login", None),
    ("C", "2024-04-28 08:00", "view", None),
    ("C", "2024-05-03 00:00", "login", None),  # 30d, 29 days before T
    ("D", "2024-05-01 00:00", "login", None),
    ("F", "2024-03-10 00:00", "login", None),  # baseline
    ("F", "2024-04-20 00:00", "view", None),  # baseline, 42 days before T
    ("A", "2024-01-15 09:00", "login", 10.0),  # older than 90 days
    # after T (they feed labels, never features)
    ("A", "2024-06-05 09:00", "login", 10.0),
    ("B", "2024-06-10 09:00", "view", None),
    ("C", "2024-06-15 09:00", "login", None),
]

TRANSACTIONS_ROWS = [
    # customer_id, timestamp, amount
    ("A", "2023-12-15", 50.0),
    ("A", "2024-03-15", 50.0),
    ("A", "2024-04-15", 50.0),
    ("A", "2024-05-15", 50.0),
    ("B", "2024-04-20", 20.0),
    ("B", "2024-05-20", 20.0),
    ("C", "2024-03-10", 100.0),
    ("C", "2024-04-10", 100.0),
    ("C", "2024-05-10", 100.0),
    ("D", "2024-04-01", 10.0),
    ("F", "2024-01-10", 30.0),
    ("A", "2024-06-15", 50.0),  # after T
]

INTERACTIONS_ROWS = [
    # customer_id, timestamp, channel, category, text, rating
    ("A", "2024-01-05", "email", "technical", "the export has a bug", None),  # > 90 days: complaint, neutral
    ("A", "2024-04-10", "chat", "question", "thanks, great help", 5.0),  # 90d, positive
    ("A", "2024-05-20", "email", "billing", "charged twice, terrible", 2.0),  # 30d complaint, negative
    ("C", "2024-05-01", "phone", "other", "ok", 3.0),  # 90d (one day outside 30d), neutral
    ("C", "2024-05-25", "phone", "cancellation", None, 1.0),  # 30d complaint, no text
    ("F", "2024-04-25", "email", "other", "bad service, you charged me again", None),  # complaint by keyword
    ("C", "2024-06-10", "phone", "cancellation", "I hate this, cancel now", 1.0),  # after T
]


def customers_frame(rows: list[tuple] = CUSTOMERS_ROWS) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["customer_id", "signup_date", "churn_date", "plan", "seats"])


def events_frame(rows: list[tuple] = EVENTS_ROWS) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["customer_id", "timestamp", "event_type", "value"])


def transactions_frame(rows: list[tuple] = TRANSACTIONS_ROWS) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["customer_id", "timestamp", "amount"])


def interactions_frame(rows: list[tuple] = INTERACTIONS_ROWS) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["customer_id", "timestamp", "channel", "category", "text", "rating"])


def raw_frames() -> dict[str, pd.DataFrame]:
    """The raw (pre-contract) tables, in canonical column names, as fresh copies."""
    return {
        "customers": customers_frame(),
        "events": events_frame(),
        "transactions": transactions_frame(),
        "interactions": interactions_frame(),
    }


def make_config(
    definition: str = "churn_date",
    clv_method: str = "contractual",
    tables: dict[str, Any] | None = None,
    **features: Any,
) -> Config:
    """A small config: every table configured, plan/seats as attributes, test-friendly feature settings."""
    if tables is None:
        tables = {
            "customers": {"file": "customers", "attributes": ["plan", "seats"]},
            "events": {"file": "events"},
            "transactions": {"file": "transactions"},
            "interactions": {"file": "interactions"},
        }
    feat: dict[str, Any] = {
        "sentiment": {
            "scorer": "builtin",
            "negative_threshold": -0.3,
            "complaint_categories": ["billing", "technical", "cancellation"],
            "complaint_keywords": {"billing": ["charged"]},
        },
        "clv": {"method": clv_method, "segment_columns": [], "margin": 1.0, "revenue_months": 3},
    }
    feat.update(features)
    return Config.model_validate(
        {
            "data": {"tables": tables},
            "label": {"definition": definition, "horizon_days": 30, "inactivity_days": 60},
            "features": feat,
        }
    )


def tables_from_frames(frames: dict[str, pd.DataFrame], cfg: Config | None = None) -> Tables:
    """Validate raw frames in memory exactly as ``load_tables`` does after reading the files."""
    cfg = cfg or make_config()
    attrs = list(cfg.data.tables["customers"].attributes)
    customers = validate_customers(frames["customers"].copy(), attrs, cfg.data.date_format)
    tables = Tables(customers=customers, attributes=attrs)
    for role in CHILD_TABLES:
        if frames.get(role) is not None:
            setattr(tables, role, validate_child(frames[role].copy(), role, customers, cfg.data.date_format))
    return tables


def write_frames(folder: Path, frames: dict[str, pd.DataFrame], fmt: str = "csv",
                 names: dict[str, str] | None = None) -> Path:
    """Write raw frames as ``<name>.csv`` or ``<name>.parquet`` into ``folder`` (created)."""
    folder.mkdir(parents=True, exist_ok=True)
    for role, df in frames.items():
        name = (names or {}).get(role, role)
        if fmt == "csv":
            df.to_csv(folder / f"{name}.csv", index=False)
        else:
            df.to_parquet(folder / f"{name}.parquet", index=False)
    return folder


@pytest.fixture
def frames() -> dict[str, pd.DataFrame]:
    return raw_frames()


@pytest.fixture
def cfg() -> Config:
    return make_config()


@pytest.fixture
def tables(frames: dict[str, pd.DataFrame], cfg: Config) -> Tables:
    return tables_from_frames(frames, cfg)


@pytest.fixture
def scorer() -> KeywordScorer:
    return KeywordScorer()

