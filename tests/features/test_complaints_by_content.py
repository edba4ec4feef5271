"""Complaints are read from content, not category; disagreements are counted; the content early-warning flags."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from churn.config import SentimentConfig
from features.sentiment import complaint_disagreements, prepare_interactions, sentiment_features
from features.text_sentiment import load_scorer
from tests.features.conftest import KeywordScorer

AS_OF = pd.Timestamp("2024-06-01")
CFG = SentimentConfig()  # complaint categories: billing, technical, cancellation; negative below -0.3

ROWS = [
    # code, date, category, text
    (0, "2024-05-10", "billing", "Thanks, the refund arrived, great service"),  # thanks in a complaint category
    (0, "2024-05-12", "billing", "客服帮我把基础套餐的优惠补上了，服务很好。"),  # thanks in a complaint category
    (1, "2024-05-14", "praise", "There is a charge of $12.99 I don't recognise. Please check it."),  # complaint
    (1, "2024-05-15", "account", "还是没修好，已经第三次反馈了。"),  # complaint outside a complaint category
    (2, "2024-05-16", "cancellation", ""),  # no text: the category decides
    (2, "2024-05-17", "question", "How do I change my email address?"),  # neither
    (3, "2024-04-01", "technical", "The app keeps crashing."),  # 61 days before: long window only
    (3, "2024-05-20", "technical", "Login fails every time."),
    (3, "2024-05-21", "other", "I want a refund, you charged me twice."),
    (3, "2024-05-22", "other", "Fix this or I'm done."),
]


def _interactions() -> pd.DataFrame:
    frame = pd.DataFrame(ROWS, columns=["_code", "timestamp", "category", "text"])
    frame["timestamp"] = pd.to_datetime(frame["timestamp"]).astype("datetime64[ns]")
    frame["rating"] = np.nan
    return frame.sort_values("timestamp", kind="stable").reset_index(drop=True)


@pytest.fixture(scope="module")
def inter() -> pd.DataFrame:
    return prepare_interactions(_interactions(), CFG, load_scorer("builtin"))


def test_complaint_is_read_from_content_in_both_languages(inter: pd.DataFrame) -> None:
    assert dict(zip(inter["text"], inter["complaint"].tolist(), strict=True)) == {
        "Thanks, the refund arrived, great service": False,  # thanks in a complaint category
        "客服帮我把基础套餐的优惠补上了，服务很好。": False,
        "There is a charge of $12.99 I don't recognise. Please check it.": True,  # complaint filed as praise
        "还是没修好，已经第三次反馈了。": True,
        "": True,  # no text: category 'cancellation' decides
        "How do I change my email address?": False,
        "The app keeps crashing.": True,
        "Login fails every time.": True,
        "I want a refund, you charged me twice.": True,
        "Fix this or I'm done.": True,
    }
    assert inter["complaint_by_category"].sum() == 5  # 2 billing + cancellation + 2 technical


def test_disagreements_are_counted(inter: pd.DataFrame) -> None:
    assert complaint_disagreements(inter) == {"records_with_text": 9, "complaint_category_not_content": 2,
                                              "complaint_content_not_category": 4}


def test_content_features_and_early_warning_flags(inter: pd.DataFrame) -> None:
    block = sentiment_features(inter, 4, AS_OF, CFG)
    f = block.frame
    assert f["complaints_90d"].tolist() == [0, 2, 1, 4]
    assert f["complaints_30d"].tolist() == [0, 2, 1, 3]
    assert f["complaints_over_3_flag"].tolist() == [0, 0, 0, 1]
    assert f["negative_text_recent_flag"].tolist() == [0, 1, 0, 1]
    assert f["complaint_category_not_content_90d"].tolist() == [2, 0, 0, 0]
    assert f["complaint_content_not_category_90d"].tolist() == [0, 2, 0, 2]
    specs = {s.name: s for s in block.specs}
    assert specs["complaints_over_3_flag"].reason == "More than 3 complaints in the last 90 days"
    assert specs["negative_text_recent_flag"].unit == "flag" and specs["negative_text_recent_flag"].risk_direction == 1


def test_a_scorer_without_intent_uses_keywords_said_in_a_negative_tone() -> None:
    class ScoreOnly(KeywordScorer):
        analyse = None  # only score(): no complaint intent

    cfg = SentimentConfig(complaint_keywords={"billing": ["refund", "charged"]})
    rows = pd.DataFrame({"_code": [0, 0, 0], "timestamp": pd.to_datetime(["2024-05-01"] * 3).astype("datetime64[ns]"),
                         "category": ["billing", "other", "other"], "rating": np.nan,
                         "text": ["thanks for the refund", "you charged me, bad", "charged on the 5th as usual"]})
    out = prepare_interactions(rows, cfg, ScoreOnly())
    # +0.6 with a keyword: no; -0.8 with a keyword: yes; 0.0 with a keyword: no (a keyword alone is not a complaint)
    assert out["complaint"].tolist() == [False, True, False]
    assert out["_kw_billing"].tolist() == [True, True, True]
