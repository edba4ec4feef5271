"""Tests for features.text_sentiment: language detection, English/Chinese scorers, routing, plug-ins, keyword flags."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from churn.errors import ConfigError
from features.text_sentiment import (
    ChineseLexiconScorer,
    MultilingualScorer,
    SentimentScorer,
    VaderScorer,
    detect_language,
    detect_languages,
    keyword_flags,
    load_scorer,
)

# Labelled customer-service sentences: +1 positive, -1 negative, 0 neutral (|score| < 0.3 expected).
ENGLISH = [
    ("The support team was fantastic and fixed it in minutes", 1),
    ("Great product, I love how easy it is to use", 1),
    ("Thank you so much, the agent was very helpful and patient", 1),
    ("Excellent service, highly recommend this app", 1),
    ("Everything works perfectly now, thanks for the quick help", 1),
    ("I am very happy with the new dashboard", 1),
    ("The onboarding was smooth and the documentation is great", 1),
    ("Really impressed by how friendly and professional your staff are", 1),
    ("Best customer service I have ever had", 1),
    ("Awesome update, the app is much faster now", 1),
    ("Problem solved, you guys are amazing", 1),
    ("I have been charged twice and nobody answers, I'm cancelling", -1),
    ("Terrible experience, the app crashes every time I open it", -1),
    ("Worst support ever, I waited three weeks for a reply", -1),
    ("I am very disappointed with the service", -1),
    ("This is a scam, I want a refund immediately", -1),
    ("The agent was rude and unhelpful", -1),
    ("Your billing system is a mess and I am angry", -1),
    ("The new update is awful and broke everything", -1),
    ("Horrible product, complete waste of money", -1),
    ("I hate the new interface, it is confusing and slow", -1),
    ("Still not fixed after five emails, this is ridiculous", -1),
    ("Nobody helped me and the problem is still there, very frustrating", -1),
    ("How do I change my billing address?", 0),
    ("Send the invoice for March to my work email", 0),
    ("My account number is 12345", 0),
    ("I need to change the email address on my account", 0),
    ("What time does your office open on Monday?", 0),
    ("The order was placed on Tuesday", 0),
    ("Can you tell me which plan I am on?", 0),
    ("I moved to a new apartment last month", 0),
]

CHINESE = [
    ("非常满意，客服很耐心", 1),
    ("没有任何问题，很好", 1),
    ("客服很专业，回复也很及时", 1),
    ("这个软件很好用，操作也方便", 1),
    ("感谢你们的帮助，问题已经解决了", 1),
    ("服务态度好，强烈推荐", 1),
    ("速度很快，体验非常好", 1),
    ("价格实惠，性价比高", 1),
    ("客服小姐姐特别贴心，点赞", 1),
    ("用了一年了，一直很稳定，很放心", 1),
    ("虽然价格有点贵，但是质量非常好", 1),
    ("新版本更流畅了，太棒了！", 1),
    ("客服态度很差，问题一直没有解决", -1),
    ("不好用", -1),
    ("太贵了，而且经常卡顿", -1),
    ("我要投诉，你们乱扣费", -1),
    ("非常失望，我要取消会员并退款", -1),
    ("垃圾软件，天天闪退", -1),
    ("客服根本不理人，等了好久也没人回复", -1),
    ("你们就是骗子，我要退钱", -1),
    ("产品还行，但是售后太差了", -1),
    ("不太满意，反应太慢", -1),
    ("打了三次电话都打不通，太糟糕了", -1),
    ("一点都不方便，操作很复杂", -1),
    ("请问怎么修改密码？", 0),
    ("我想查一下上个月的账单", 0),
    ("我的订单号是12345", 0),
    ("你们周末上班吗", 0),
    ("请把发票发到我的邮箱", 0),
    ("不好意思，我想咨询一下会员的价格", 0),
    ("我上周搬家了，地址需要更新", 0),
    ("快递什么时候到", 0),
]


class ConstantScorer:
    """A team's own scorer, loaded by tests through load_scorer("tests.features.test_text_sentiment:ConstantScorer")."""

    name = "constant"

    def score(self, texts: pd.Series) -> pd.Series:
        return pd.Series(0.5, index=texts.index, dtype="float64")


class NotAScorer:
    """Has no score method, so load_scorer must reject it."""


class CountingScorer:
    """Records every text it is asked to score, to check that only distinct texts are scored."""

    def __init__(self, value: float) -> None:
        self.name = f"counting{value}"
        self.value = value
        self.calls: list[list[str]] = []

    def score(self, texts: pd.Series) -> pd.Series:
        self.calls.append(list(texts))
        return pd.Series(self.value, index=texts.index, dtype="float64")


@pytest.fixture(scope="module")
def builtin() -> MultilingualScorer:
    return MultilingualScorer()


@pytest.fixture(scope="module")
def zh() -> ChineseLexiconScorer:
    return ChineseLexiconScorer()


def _check_labels(scores: pd.Series, labelled: list[tuple[str, int]]) -> list[str]:
    wrong = []
    for (text, label), value in zip(labelled, scores, strict=True):
        ok = abs(value) < 0.3 if label == 0 else np.sign(value) == label
        if not ok:
            wrong.append(f"{text!r}: label {label}, score {value:.3f}")
    return wrong


# --- language detection -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The app keeps crashing", "en"),
        ("客服态度很差", "zh"),
        ("这个app很好用，就是login有点慢", "zh"),
        ("I love 北京 but the hotel was bad", "en"),
        ("", "other"),
        ("   ", "other"),
        (None, "other"),
        (float("nan"), "other"),
        ("12345 !!!", "other"),
        ("Обслуживание ужасное", "other"),
        ("このアプリはとても使いやすい", "other"),
    ],
    ids=[
        "en",
        "zh",
        "mixed-mostly-zh",
        "mixed-mostly-en",
        "empty",
        "blank",
        "none",
        "nan",
        "digits",
        "cyrillic",
        "japanese",
    ],
)
def test_detect_language(text: str | None, expected: str) -> None:
    assert detect_language(text) == expected


def test_detect_languages_keeps_index_and_matches_scalar() -> None:
    texts = pd.Series(
        ["hello there", None, "非常满意", "", "hello there"], index=[10, 3, 7, 1, 99], name="comment"
    )
    result = detect_languages(texts)
    expected = pd.Series(
        ["en", "other", "zh", "other", "en"], index=[10, 3, 7, 1, 99], name="comment", dtype="str"
    )
    pd.testing.assert_series_equal(result, expected)
    assert list(result) == [detect_language(t) for t in texts]


def test_detect_languages_empty_series() -> None:
    assert detect_languages(pd.Series([], dtype="str")).empty


# --- labelled polarity ---------------------------------------------------------------------------------------------


def test_english_labelled_sentences(builtin: MultilingualScorer) -> None:
    texts = pd.Series([t for t, _ in ENGLISH])
    assert (detect_languages(texts) == "en").all()
    assert _check_labels(builtin.score(texts), ENGLISH) == []


def test_chinese_labelled_sentences(builtin: MultilingualScorer) -> None:
    texts = pd.Series([t for t, _ in CHINESE])
    assert (detect_languages(texts) == "zh").all()
    assert _check_labels(builtin.score(texts), CHINESE) == []


def test_vader_scorer_is_compound() -> None:
    scores = VaderScorer().score(pd.Series(["The support team was fantastic and fixed it in minutes"]))
    assert scores.iloc[0] == pytest.approx(0.743, abs=1e-3)  # VADER's own compound for this sentence


# --- Chinese rules -----------------------------------------------------------------------------------------------


def test_chinese_single_term_is_normalised_like_vader(zh: ChineseLexiconScorer) -> None:
    # 满意 weighs 2.2 in the lexicon: 2.2 / sqrt(2.2^2 + 15) = 0.4939
    scores = zh.score(pd.Series(["满意", "不好用"]))
    assert scores.tolist() == pytest.approx([0.4939, -0.4939], abs=1e-4)


def test_chinese_degree_adverbs_scale(zh: ChineseLexiconScorer) -> None:
    s = zh.score(pd.Series(["有点满意", "满意", "很满意", "非常满意"])).tolist()
    assert 0 < s[0] < s[1] < s[2] < s[3]


def test_chinese_negators_flip_and_weaken(zh: ChineseLexiconScorer) -> None:
    s = zh.score(pd.Series(["满意", "不太满意", "不满意", "很不满意", "没有任何问题", "不慢"]))
    assert s[2] < s[1] < 0 < s[0]  # 不太 weakens: "not very satisfied" is milder than "dissatisfied"
    assert s[3] < s[2]  # degree before the negated term amplifies
    assert s[4] > 0 and s[5] > 0  # negated negative terms turn positive


def test_chinese_negation_stops_at_clause_and_window(zh: ChineseLexiconScorer) -> None:
    assert zh.score(pd.Series(["不，很满意"])).iloc[0] > 0
    assert zh.raw_score("没有这个那个那个满意") == pytest.approx(2.2)  # 满意 is beyond the 3-character window


def test_chinese_contrast_weights_later_clause(zh: ChineseLexiconScorer) -> None:
    s = zh.score(pd.Series(["客服很好，但是产品太差", "产品太差，但是客服很好"]))
    assert s[0] < 0 < s[1]
    # before the contrast counts half, after it 1.5 times: 0.5 * 2.2 + 1.5 * (-2.2)
    assert zh.raw_score("满意，但是不好用") == pytest.approx(0.5 * 2.2 - 1.5 * 2.2)


def test_chinese_longest_match_avoids_false_hits(zh: ChineseLexiconScorer) -> None:
    # 不好意思 is "excuse me", not 不好; 快递 is "courier", not 快; 好 before 慢 is "so", not "good".
    s = zh.score(pd.Series(["不好意思", "快递到了", "好慢", "不错"]))
    assert s[0] == 0 and s[1] == 0
    assert s[2] < 0 < s[3]


def test_chinese_extra_terms_and_custom_lexicon(tmp_path) -> None:
    assert ChineseLexiconScorer(extra_terms={"牛": 2.2}).score(pd.Series(["牛"])).iloc[0] == pytest.approx(
        0.4939, abs=1e-4
    )
    path = tmp_path / "lex.tsv"
    path.write_text("# comment\nterm\tkind\tweight\n赞\tsentiment\t3\n不\tnegator\t-1\n", encoding="utf-8")
    custom = ChineseLexiconScorer(lexicon_path=path)
    assert custom.raw_score("不赞") == pytest.approx(-3.0)
    assert custom.raw_score("满意") == 0.0
    path.write_text("赞\tgood\t3\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="kind"):
        ChineseLexiconScorer(lexicon_path=path)


def test_shipped_lexicon_size(zh: ChineseLexiconScorer) -> None:
    weights = [t.weight for t in zh.terms_.values() if t.kind == "sentiment"]
    assert sum(w > 0 for w in weights) >= 100 and sum(w < 0 for w in weights) >= 100
    assert all(-4 <= w <= 4 for w in weights)


# --- missing values, index, caching -----------------------------------------------------------------------------


@pytest.mark.parametrize("scorer_cls", [VaderScorer, ChineseLexiconScorer, MultilingualScorer])
def test_missing_text_is_nan_and_index_kept(scorer_cls: type) -> None:
    texts = pd.Series(["great", None, "", "  ", np.nan, "很好", "great"], index=list("gfedcba"), name="note")
    scores = scorer_cls().score(texts)
    assert scores.dtype == "float64"
    assert scores.index.equals(texts.index) and scores.name == "note"
    assert scores[["f", "e", "d", "c"]].isna().all()
    assert scores[["g", "b", "a"]].notna().all() and scores["g"] == scores["a"]
    assert ((scores.dropna() >= -1) & (scores.dropna() <= 1)).all()


def test_string_dtype_and_all_missing() -> None:
    scorer = MultilingualScorer()
    scores = scorer.score(pd.Series(["fantastic", pd.NA, "很好"], dtype="string"))
    assert scores.isna().tolist() == [False, True, False]
    assert scorer.score(pd.Series([None, None], dtype=object)).isna().all()
    assert scorer.score(pd.Series([], dtype="str")).empty


def test_multilingual_scores_distinct_texts_once_and_routes() -> None:
    en, zh = CountingScorer(0.25), CountingScorer(-0.5)
    scorer = MultilingualScorer({"en": en, "zh": zh})
    texts = pd.Series(["good", "很好", "good", " good ", None, "很好", "Отлично", "好"] * 1000)
    scores = scorer.score(texts)
    assert len(en.calls) == 1 and len(zh.calls) == 1
    assert sorted(en.calls[0]) == ["good", "Отлично"]  # "other" falls back to English; " good " is stripped
    assert sorted(zh.calls[0]) == ["好", "很好"]
    assert scores.iloc[:8].tolist()[:4] == [0.25, -0.5, 0.25, 0.25]
    assert np.isnan(scores.iloc[4]) and scores.iloc[6] == 0.25 and scores.iloc[7] == -0.5


def test_builtin_scorers_score_distinct_texts_once(monkeypatch: pytest.MonkeyPatch) -> None:
    zh = ChineseLexiconScorer()
    seen: list[str] = []
    original = zh.raw_score
    monkeypatch.setattr(zh, "raw_score", lambda text: seen.append(text) or original(text))
    zh.score(pd.Series(["很好", "太差", "很好"] * 500))
    assert sorted(seen) == ["太差", "很好"]


def test_multilingual_fallback_must_exist() -> None:
    with pytest.raises(ConfigError, match="fallback"):
        MultilingualScorer({"zh": CountingScorer(0.0)}, fallback="en")


# --- load_scorer -------------------------------------------------------------------------------------------------


def test_load_scorer_builtin() -> None:
    scorer = load_scorer("builtin")
    assert isinstance(scorer, MultilingualScorer) and isinstance(scorer, SentimentScorer)
    assert load_scorer().score(pd.Series(["非常满意"])).iloc[0] > 0


def test_load_scorer_custom_class() -> None:
    scorer = load_scorer("tests.features.test_text_sentiment:ConstantScorer")
    assert isinstance(scorer, ConstantScorer)
    assert scorer.score(pd.Series(["x", "y"], index=[5, 6])).tolist() == [0.5, 0.5]
    # A team's scorer also plugs into the router.
    routed = MultilingualScorer({"en": scorer}).score(pd.Series(["hi", "你好"]))
    assert routed.tolist() == [0.5, 0.5]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_such_package.module:Scorer", "cannot import module"),
        ("tests.features.test_text_sentiment:Missing", "has no 'Missing'"),
        ("tests.features.test_text_sentiment:NotAScorer", "no score"),
        ("not-a-spec", "not valid"),
        ("", "not valid"),
    ],
    ids=["bad-module", "bad-attribute", "no-score", "no-colon", "empty"],
)
def test_load_scorer_bad_spec(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_scorer(spec)


# --- keyword flags -------------------------------------------------------------------------------------------------


def test_keyword_flags_english_and_chinese() -> None:
    texts = pd.Series(
        ["I want to CANCEL my plan", "Please refund me", "我要退款", "怎么取消自动续费", None, "all good"],
        index=[5, 4, 3, 2, 1, 0],
    )
    flags = keyword_flags(texts, {"cancel": ["cancel", "取消"], "refund": ["Refund", "退款"], "empty": []})
    expected = pd.DataFrame(
        {
            "cancel": [True, False, False, True, False, False],
            "refund": [False, True, True, False, False, False],
            "empty": [False] * 6,
        },
        index=[5, 4, 3, 2, 1, 0],
    )
    pd.testing.assert_frame_equal(flags, expected)


def test_keyword_flags_literal_substrings() -> None:
    # Keywords are literal text, not regular expressions, and blank keywords match nothing.
    flags = keyword_flags(
        pd.Series(["price (USD) too high?", "cancelling now"]), {"p": ["(usd)", ""], "c": ["cancel"]}
    )
    assert flags["p"].tolist() == [True, False] and flags["c"].tolist() == [False, True]
