"""Tests for support-text reading: the cap per message, the cue rule, and the builtin scorer on support messages."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from churn.errors import ConfigError
from features.support_text import Cue, adjust_valence, read_cues
from features.text_sentiment import (
    CHUNK_CHARS,
    MAX_TEXT_CHARS,
    MultilingualScorer,
    VaderScorer,
    cap_text,
    keyword_flags,
    load_scorer,
    text_chunks,
)


@pytest.fixture(scope="module")
def builtin() -> MultilingualScorer:
    return load_scorer("builtin")


# --- the cap per message and VADER's chunks ------------------------------------------------------------------------


def test_cap_text_cuts_at_a_sentence_end_in_the_second_half() -> None:
    text = "a" * 3000 + ". " + "b" * 2500 + "! tail"
    assert cap_text(text) == "a" * 3000 + "."
    assert cap_text("x" * 6000) == "x" * MAX_TEXT_CHARS  # no sentence end: a hard cut
    assert cap_text("short. text") == "short. text"
    assert cap_text("a. " + "b" * 6000, max_chars=100) == "a. " + "b" * 97  # end too early: hard cut


def test_only_the_capped_part_is_scored(builtin: MultilingualScorer) -> None:
    head = "The export keeps failing and nobody answers. " * 120  # 5,400 characters: the cap falls inside
    calm = head + "Everything else is lovely, thanks so much, great team! " * 2000
    angry = head + "This is the worst, I hate it, terrible awful service. " * 2000
    scores = builtin.score(pd.Series([calm, angry, cap_text(calm)]))
    assert scores.iloc[0] == scores.iloc[1] == scores.iloc[2] < -0.3
    assert builtin.score(pd.Series([angry])).iloc[0] == scores.iloc[1]  # deterministic
    # keyword flags read the same capped part: a keyword only in the tail does not count
    flags = keyword_flags(pd.Series([head + "x" * MAX_TEXT_CHARS + " refund"]), {"billing": ["refund"]})
    assert flags["billing"].tolist() == [False]


def test_text_chunks_are_bounded_and_keep_every_sentence() -> None:
    text = " ".join(f"Sentence number {i} is here." for i in range(200))
    chunks = text_chunks(text)
    assert len(chunks) > 1 and max(len(c) for c in chunks) <= CHUNK_CHARS
    assert " ".join(chunks).split() == text.split()
    long_word = "x" * (CHUNK_CHARS * 2 + 10)
    assert [len(c) for c in text_chunks(long_word)] == [CHUNK_CHARS, CHUNK_CHARS, 10]
    assert text_chunks("Short one.") == ["Short one."]


def test_vader_short_text_is_vaders_own_compound() -> None:
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    text = "The agent was rude and the app is terrible"
    expected = SentimentIntensityAnalyzer().polarity_scores(text)["compound"]
    assert VaderScorer().score(pd.Series([text])).iloc[0] == expected


# --- the cue rule ----------------------------------------------------------------------------------------------------


def _cues(*rows: tuple[str, float, str]) -> list[Cue]:
    return [Cue(kind, weight, re.compile(pattern)) for kind, weight, pattern in rows]


CUES = _cues(("problem", -2.0, r"\bcrash\w*"), ("problem", -2.0, r"\bnot (fixed|working)"),
             ("resolved", 1.0, r"\b(fixed|working again)\b"), ("polite", 0.0, r"\bplease cancel\b"),
             ("sarcasm", -1.0, r"\boh great\b"), ("topic", -1.5, r"\boutage\b"), ("ack", 0.0, r"^ok$"))


@pytest.mark.parametrize(
    ("text", "base", "expected"),
    [
        ("it crashes", 1.5, (-2.0, True)),  # positive words do not offset a pending problem
        ("oh great, it crashes", 2.0, (-3.0, True)),  # sarcasm counts next to a problem
        ("oh great", 2.0, (2.0, False)),  # ... and not alone
        ("it crashed but you fixed it", -1.0, (1.0, False)),  # resolved: the past problem's words do not count
        ("fixed, but it crashes again", 1.0, (-2.0, True)),  # a problem after the resolution is pending
        ("not fixed", 0.5, (-2.0, True)),  # a resolution inside a problem ("not fixed") does not count
        ("not working again", 0.0, (-2.0, True)),  # ... nor one that starts inside it
        ("please cancel, thanks", 1.9, (0.0, False)),  # politeness is not praise
        ("is the outage over?", 0.4, (0.2, False)),  # information question: topic ignored, base damped
        ("another outage.", 0.0, (-1.5, True)),
        ("ok", 1.2, (0.0, False)),
        ("hello", 0.7, (0.7, False)),
    ],
    ids=["pending", "sarcasm", "sarcasm-alone", "resolved", "after-resolution", "not-fixed", "not-working-again",
         "polite", "question", "topic", "ack", "no-cue"],
)
def test_adjust_valence(text: str, base: float, expected: tuple[float, bool]) -> None:
    reading = adjust_valence(text, base, CUES)
    assert (reading.valence, reading.complaint) == pytest.approx(expected)


def test_read_cues_names_the_bad_line() -> None:
    with pytest.raises(ConfigError, match=r"cues.tsv:2: expected"):
        read_cues("en\tproblem\t-1\tok\nen\tangry\t-1\tbad", "cues.tsv")
    with pytest.raises(ConfigError, match=r"cues.tsv:1: bad weight or pattern"):
        read_cues("en\tproblem\t-1\t(unclosed", "cues.tsv")


# --- the builtin scorer on support messages (both languages) ----------------------------------------------------------

SUPPORT = [
    # text, expected label (-1 / 0 / +1, neutral meaning |score| < 0.3), complaint intent
    ("There is a charge of $7.50 I don't recognise.", -1, True),
    ("Fix my billing or I'm done.", -1, True),
    ("Please restore it.", -1, True),
    ("Still not fixed after a week.", -1, True),
    ("Great, another outage. Just perfect.", -1, True),
    ("The outage was annoying but you fixed it, thanks!", 1, False),
    ("Thanks, the refund arrived, great service", 1, False),
    ("Please cancel my account, thanks.", 0, False),
    ("How do I cancel if I change my mind?", 0, False),
    ("Not happy with the service.", -1, True),
    ("ok", 0, False),
    ("账单上有一笔68元的扣费，我不知道是什么。", -1, True),
    ("再不解决我就退订了。", -1, True),
    ("还是没修好。", -1, True),
    ("不太满意。", -1, True),
    ("客服帮我把基础套餐的优惠补上了，服务很好。", 1, False),
    ("之前的故障挺烦的，不过你们很快修好了，谢谢。", 1, False),
    ("请帮我注销账号，谢谢。", 0, False),
    ("好", 0, False),
    ("app一直crash，怎么办？", -1, True),
]


def test_builtin_reads_support_messages(builtin: MultilingualScorer) -> None:
    read = builtin.analyse(pd.Series([t for t, _, _ in SUPPORT]))
    wrong = []
    for (text, label, intent), score, got in zip(SUPPORT, read["sentiment"], read["complaint_intent"], strict=True):
        ok = abs(score) < 0.3 if label == 0 else np.sign(score) == label and abs(score) >= 0.3
        if not ok or bool(got) != intent:
            wrong.append(f"{text!r}: expected {label}/{intent}, got {score:.2f}/{got}")
    assert wrong == []


def test_analyse_matches_score_and_handles_missing(builtin: MultilingualScorer) -> None:
    texts = pd.Series(["It keeps crashing", None, "", "谢谢"], index=[7, 8, 9, 10])
    read = builtin.analyse(texts)
    assert read.index.tolist() == [7, 8, 9, 10]
    assert read["complaint_intent"].tolist() == [True, False, False, False]
    pd.testing.assert_series_equal(builtin.score(texts), read["sentiment"], check_names=False)
    assert read["sentiment"].isna().tolist() == [False, True, True, False]


def test_plain_scorer_is_the_general_purpose_one() -> None:
    plain = load_scorer("plain")
    assert not hasattr(plain.scorers["en"], "analyse")  # VADER and the lexicon, without the cues
    # the motivating failures of the general-purpose scorer: a dispute and a threat not read as negative
    scores = plain.score(pd.Series(["There is a charge of $7.50 I don't recognise. Please check it.",
                                    "Sort it out or I'm done, thanks."]))
    assert (scores > -0.3).all()


# --- general handling: negation of a problem, conditions, contrast ----------------------------------------------------

GENERAL = _cues(("problem", -2.0, r"\bcrash\w*"), ("topic", -1.5, r"\blate\b"),
                ("negator", 0.0, r"\b(no more|doesn't|never)\s+$"), ("conditional", 0.0, r"\bif\b"),
                ("contrast", 0.0, r"\bbut\b"), ("polite", 0.0, r"\bcancel\b"), ("resolved", 1.0, r"\bfixed\b"))


def _tail_score(text: str) -> float:
    """A stand-in base scorer for the clause after a contrast: +2 when it says 'great', else -1."""
    return 2.0 if "great" in text else -1.0


@pytest.mark.parametrize(
    ("text", "base", "expected"),
    [
        ("no more crashes", 0.5, (1.5, False)),  # a negated problem is a resolution: max(0.5, 0) + 1
        ("it doesn't crash now", -0.4, (1.0, False)),  # ... and the negator's own negative tone does not count
        ("would be nice if it doesn't crash", 1.0, (-2.0, True)),  # a wish is not a negation: still a complaint
        ("it crashed, but support was great", 0.3, (2.0, False)),  # outweighed by a positive clause after "but"
        ("support was great, but it crashes", 0.8, (-2.0, True)),  # the problem after "but" is pending
        ("it crashed, but nobody answers", 0.3, (-2.0, True)),  # the clause after "but" is not positive
        ("i was going to cancel, but it is great now", 1.0, (2.0, False)),  # cancellation before the contrast
        ("it is great, but please cancel", 1.0, (0.0, False)),  # cancellation after it: politeness, capped at 0
        ("crashed and late", 0.0, (-3.5, True)),  # a topic counts as a problem outside information questions
        ("slow at first, but great now", -0.5, (2.0, False)),  # no problem cue: the clause after "but" still leads
    ],
    ids=["negated", "negated-base", "wish", "contrast-outweighs", "contrast-pending", "contrast-negative",
         "cancel-before-contrast", "cancel-after-contrast", "topic", "contrast-no-problem"],
)
def test_adjust_valence_general_rules(text: str, base: float, expected: tuple[float, bool]) -> None:
    reading = adjust_valence(text, base, GENERAL, _tail_score)
    assert (reading.valence, reading.complaint) == pytest.approx(expected)


def test_contrast_needs_a_part_scorer() -> None:
    # without the base scorer for the clause, a contrast cannot outweigh anything: the old rule applies
    assert adjust_valence("it crashed, but support was great", 0.3, GENERAL) == adjust_valence(
        "it crashed, support was great", 0.3, GENERAL)


NEGATION_AND_CONTRAST = [
    # text, expected label (-1 / 0 / +1, neutral meaning |score| < 0.3), complaint by content
    ("No more crashes since the update, thanks!", 1, False),
    ("Thanks, no more errors since yesterday.", 1, False),
    ("Would be great if the app didn't crash every hour.", -1, True),
    ("I'm not happy with the delivery.", -1, True),
    ("The agent was friendly, but my refund still hasn't arrived.", -1, True),
    ("Thanks for the quick reply, but the app still crashes on login.", -1, True),
    ("It crashed twice last week, but the support team was great and it has been fine since.", 1, False),
    ("Thank you so much, the replacement works perfectly.", 1, False),
    ("更新以后再也没闪退过，谢谢！", 1, False),
    ("谢谢，没有再出现报错了。", 1, False),
    ("要是不闪退就好了。", -1, True),
    ("我对这次的服务不满意。", -1, True),
    ("客服态度很好，但是退款到现在还没到账。", -1, True),
    ("谢谢回复，可是还是登不上去。", -1, True),
    ("之前卡顿了几次，不过现在很流畅，谢谢。", 1, False),
    ("非常感谢，问题已经解决了。", 1, False),
]


def test_builtin_reads_negation_and_contrast_in_both_languages(builtin: MultilingualScorer) -> None:
    from features.sentiment import content_complaint

    read = builtin.analyse(pd.Series([t for t, _, _ in NEGATION_AND_CONTRAST]))
    complaint = content_complaint(read["sentiment"].to_numpy(), read["complaint_intent"].to_numpy(), -0.3)
    wrong = []
    for (text, label, expected), score, got in zip(NEGATION_AND_CONTRAST, read["sentiment"], complaint, strict=True):
        ok = abs(score) < 0.3 if label == 0 else np.sign(score) == label and abs(score) >= 0.3
        if not ok or bool(got) != expected:
            wrong.append(f"{text!r}: expected {label}/{expected}, got {score:.2f}/{got}")
    assert wrong == []


REPORTING = _cues(("problem", -2.0, r"\bcrash\w*"), ("request", 0.0, r"\bplease\b|\bi'll\b"),
                  ("report", 0.0, r"\b(you|nobody|still)\b"), ("sarcasm", -1.0, r"\boh great\b"))


@pytest.mark.parametrize(
    ("text", "base", "expected"),
    [
        ("booking confirmed, then cancelled by you without a word", 0.0, -1.5),  # a plain report: base - 1.5
        ("the seat went to someone else and nobody said why", -0.4, -1.9),  # ... added to a negative base
        ("the seat went to someone else and nobody said why", 0.2, 0.2),  # a positive tone is not a report
        ("did you cancel my booking without a word?", 0.0, 0.0),  # a question
        ("please move my booking, you said it was fine", 0.0, 0.0),  # a request
        ("i'll send you the form on monday morning", 0.0, 0.0),  # a plan
        ("the order was placed on tuesday afternoon", 0.0, 0.0),  # no complaint discourse marker
        ("you moved it", 0.0, 0.0),  # fewer than five words
        ("it still crashes when you open it", 0.5, -2.0),  # a problem: the problem rule, not the report one
    ],
    ids=["report", "report-negative-base", "positive", "question", "request", "plan", "no-marker", "short",
         "problem"],
)
def test_plain_reports(text: str, base: float, expected: float) -> None:
    reading = adjust_valence(text, base, REPORTING, report_valence=-1.5)
    assert reading.valence == pytest.approx(expected)
    off = -2.0 if "crash" in text else base  # without report_valence (the default) a report keeps its base
    assert adjust_valence(text, base, REPORTING).valence == pytest.approx(off)
