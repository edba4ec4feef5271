"""Support-text reading on top of the general sentiment scorers: complaint intent and a domain-aware score.

VADER was made for social media and the Chinese lexicon for reviews; support tickets say what is wrong in words
neither knows ("There is a charge of $7.50 I don't recognise", "Fix it or I'm done", "还是没修好") and wrap
problems in politeness or sarcasm ("Please restore it, thanks", "Oh great, another outage"). A shipped table of
cues (``features/data/support_cues.tsv``, regular expressions per language) marks four things in a text:

* **problem**: an unresolved problem, billing dispute, threat to leave or demand (complaint intent);
* **topic**: a problem topic (outage, maintenance) that counts as a problem unless the text is an information
  question ("Is the outage over?"), where resolutions do not count either;
* **resolved**: the problem was fixed, the money came back, there are no problems; a resolution overlapping a
  problem match ("not fixed", "还没解决") does not count;
* **polite**: a cancellation or downgrade request, whose "thanks" is politeness, not praise;
* **sarcasm**: "oh great", "love how": a problem only next to another pending problem;
* **ack**: a bare acknowledgement ("ok", "好的"), neutral whatever the lexicon says;
* **negator**: negation of a problem's existence just before it ("no more", "doesn't", "再也没", "不再"): a
  negated problem ("No more crashes since the patch") reads as a resolution, not a complaint;
* **contrast**: "but", "however", 但是, 不过: when the clause after the last contrast holds no problem and its own
  base tone is positive, problems before it are outweighed ("It crashed at first, but now it's great");
* **request**: a request, plan, attachment or question word ("please", "I'll", "attached", 请, 明天): a message
  with one is not a plain report (see ``REPORT_VALENCE``);
* **lexicon**: the base lexicon's weight of a term in support text (names of the service, actions and politeness
  such as "support", "please", "cancel", "restore", "取消" carry no tone here).

The score then follows one rule, stated in :func:`adjust_valence`: while a problem is pending (no resolution
after it) positive words do not count and the problems' weights are added; once resolved, negative words about
the past do not count and the resolution's weight is added. Complaint intent is "a problem is pending".
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd

from churn.errors import ConfigError
from features.text_sentiment import _distinct, _spread, normalise

logger = logging.getLogger(__name__)

_CUES_PACKAGE = "features.data"
_CUES_FILE = "support_cues.tsv"
_CUE_KINDS = frozenset({"problem", "topic", "sarcasm", "resolved", "polite", "ack", "lexicon", "negator", "conditional",
                        "contrast", "request", "report"})
# A plain report: a message of at least REPORT_MIN_UNITS words (a CJK character counts half) with no cue, no
# question mark, no request and no positive tone, but with a complaint discourse marker ("you", "nobody", "every
# time", "still", 你们, 却: cue kind ``report``), states what the service did; in support text that is most often a
# problem told in words no cue knows ("The seat I paid extra for was given to someone else"): it gets REPORT_VALENCE added
# (normalised about -0.36, just negative). Measured on the inspected splits before it was kept (README).
REPORT_VALENCE = -1.5
REPORT_MIN_UNITS = 5
_WORD = re.compile(r"[a-z0-9']+")
_CJK_CHAR = re.compile("[\u4e00-\u9fff]")
_SENTENCE_START = re.compile(r"[.!?。！？\n]")
# A condition or wish cancels a negation only within this many characters before the problem (same sentence).
CONDITION_REACH = 200
# A negator ends at most this many characters before a problem to negate it ("no more crashes", "再也没闪退过").
NEGATION_REACH = 24
# An information question without a pending problem keeps this share of its base valence ("取消要收手续费吗？").
QUESTION_DAMPING = 0.5
# An information question: ends with "?" and opens like a question, so outage talk in it is not a complaint.
_INFO_QUESTION = re.compile(
    r"^(how|what|where|when|which|is|are|do|does|can|could|will|would|has|have|any)\b|^(请问|是否|有没有|能否|怎么|如何)"
    r"|(吗|么)[？?]?$",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Cue:
    """One shipped cue: a regular expression of one kind with a valence weight."""

    kind: str
    weight: float
    pattern: re.Pattern[str]


@dataclass(frozen=True)
class Reading:
    """What the cues found in one text: its adjusted valence and whether a complaint is pending."""

    valence: float
    complaint: bool


class _RawScorer(Protocol):
    def raw_score(self, text: str) -> float: ...


_PartScorer = Callable[[str], float]


def read_cues(text: str, source: str) -> dict[str, list[Cue]]:
    """Parse the cue table (lang, kind, weight, pattern; '#' comments) into cues per language."""
    cues: dict[str, list[Cue]] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.startswith("#") or line.startswith("lang\t"):
            continue
        parts = line.split("\t")
        if len(parts) != 4 or parts[1] not in _CUE_KINDS:
            raise ConfigError(
                f"{source}:{lineno}: expected 'lang<TAB>kind<TAB>weight<TAB>pattern' with kind in "
                f"{sorted(_CUE_KINDS)}, got {line!r}"
            )
        lang, kind, weight_text, pattern = parts
        try:
            cue = Cue(kind, float(weight_text), re.compile(pattern, re.IGNORECASE))
        except (ValueError, re.error) as exc:
            raise ConfigError(f"{source}:{lineno}: bad weight or pattern ({exc})") from exc
        cues.setdefault(lang.strip(), []).append(cue)
    return cues


def load_cues(path: str | Path | None = None) -> dict[str, list[Cue]]:
    """The shipped cue table, or a team's own file in the same format."""
    if path is None:
        text = resources.files(_CUES_PACKAGE).joinpath(_CUES_FILE).read_text(encoding="utf-8")
        return read_cues(text, f"{_CUES_PACKAGE}/{_CUES_FILE}")
    return read_cues(Path(path).read_text(encoding="utf-8"), str(path))


def _matches(text: str, cues: Sequence[Cue], kinds: frozenset[str]) -> list[tuple[int, int, Cue]]:
    return [(m.start(), m.end(), cue) for cue in cues if cue.kind in kinds for m in cue.pattern.finditer(text)]


def _inside(a: tuple[int, int, Cue], b: tuple[int, int, Cue]) -> bool:
    return b[0] <= a[0] and a[1] <= b[1]


def _negated(text: str, problem: tuple[int, int, Cue], cues: Sequence[Cue], taken: list) -> bool:
    """True when a negator cue ends right before ``problem`` (within ``NEGATION_REACH``), is not itself part of
    another problem match ("not working", "没反应" carry their own negation) and no condition or wish opens the
    sentence before it ("would be great if it didn't crash", "要是不闪退就好了")."""
    start = problem[0]
    sentence = _SENTENCE_START.split(text[max(0, start - CONDITION_REACH) : start])[-1]
    if any(c.kind == "conditional" and c.pattern.search(sentence) for c in cues):
        return False
    negators = [c for c in cues if c.kind == "negator"]
    window = text[max(0, start - NEGATION_REACH) : start]
    offset = start - len(window)
    for cue in negators:
        m = cue.pattern.search(window)
        if m is None:
            continue
        neg_start = offset + m.start()
        if not any(p[0] <= neg_start < p[1] for p in taken if p is not problem):
            return True
    return False


def _contrast_boundary(
    text: str, cues: Sequence[Cue], problems: list, score_part: _PartScorer | None
) -> tuple[int, float]:
    """(end of the last contrast word, base valence of the clause after it) when that clause holds no problem and
    its own tone is positive, so that problems and cancellation requests before it are outweighed; else (-1, 0)."""
    ends = [m[1] for m in _matches(text, cues, frozenset({"contrast"}))] if score_part else []
    if not ends:
        return -1, 0.0
    last = max(ends)
    tail = score_part(text[last:]) if not any(p[0] >= last for p in problems) else 0.0
    return (last, tail) if tail > 0 else (-1, 0.0)


def _problems_and_resolutions(text: str, cues: Sequence[Cue], question: bool) -> tuple[list, list]:
    """Problem and resolution matches after overlap rules; negated problems become resolutions."""
    problems = _matches(text, cues, frozenset({"problem"} if question else {"problem", "topic"}))
    resolutions = [] if question else _matches(text, cues, frozenset({"resolved"}))
    problems = [p for p in problems if not any(_inside(p, r) for r in resolutions)]
    kept = [r for r in resolutions if not any(p[0] <= r[0] < p[1] for p in problems)]
    negated = [p for p in problems if _negated(text, p, cues, problems)]
    if negated and not question:
        kept += [(s, e, Cue("resolved", 1.0, cue.pattern)) for s, e, cue in negated]
        problems = [p for p in problems if p not in negated]
    return problems, kept


def _plain_report(text: str, base: float, cues: Sequence[Cue]) -> bool:
    """A message that only states what the service did: no positive tone, no question mark, no polite, sarcasm or
    request cue, a ``report`` cue, and at least ``REPORT_MIN_UNITS`` words (called when no problem or resolution was
    found)."""
    if base > 0 or "?" in text or "？" in text:
        return False
    if _matches(text, cues, frozenset({"polite", "sarcasm", "request"})):
        return False
    if not _matches(text, cues, frozenset({"report"})):
        return False
    return len(_WORD.findall(text)) + len(_CJK_CHAR.findall(text)) / 2 >= REPORT_MIN_UNITS


def adjust_valence(
    text: str, base: float, cues: Sequence[Cue], score_part: _PartScorer | None = None, report_valence: float = 0.0
) -> Reading:
    """Apply the support-text rule to one text's base valence (VADER's or the lexicon's, unnormalised).

    In an information question, topics and resolutions do not count ("Is the outage over?", "If I change my
    mind ...?"). A problem inside a resolution match ("the bug ... is gone") does not count, nor a resolution that
    starts inside a problem match ("not fixed", "not working again"); a problem right after a negator cue ("no more
    crashes") is a resolution. Problems after the last resolution, and after the last positive contrast clause
    (:func:`_contrast_boundary`, needs ``score_part``: the base scorer on a part of the text), are pending, and with
    them any sarcasm markers after it. Pending problems: valence = min(base, 0) + their weights, a complaint.
    Resolved, nothing pending: max(base, 0) + the resolutions' weights. Outweighed by a contrast: the larger of
    the base and the clause after the contrast. Neither: the base, times ``QUESTION_DAMPING`` for an information
    question, plus ``report_valence`` for a plain report (:func:`_plain_report`). A cancellation request (``polite``) after the last
    resolution or contrast, without a pending problem, caps the valence at 0; a bare acknowledgement is 0.
    """
    stripped = text.strip()
    if _matches(stripped, cues, frozenset({"ack"})):
        return Reading(0.0, False)
    question = stripped.endswith(("?", "？")) and _INFO_QUESTION.search(stripped) is not None
    problems, kept = _problems_and_resolutions(text, cues, question)
    contrast, tail = _contrast_boundary(text, cues, problems, score_part)
    boundary = max(max((r[1] for r in kept), default=-1), contrast)
    pending = [p for p in problems if p[0] >= boundary]
    if pending:
        pending += [m for m in _matches(text, cues, frozenset({"sarcasm"})) if m[0] >= boundary]
        return Reading(min(base, 0.0) + sum(p[2].weight for p in pending), True)
    if kept:
        valence = max(base, 0.0) + sum(r[2].weight for r in kept)
    else:
        valence = base * QUESTION_DAMPING if question else max(base, tail) if contrast >= 0 else base
        if report_valence and contrast < 0 and not question and _plain_report(text, base, cues):
            valence += report_valence
    if any(m[0] >= boundary for m in _matches(text, cues, frozenset({"polite"}))):
        valence = min(valence, 0.0)
    return Reading(valence, False)


def lexicon_terms(cues: Sequence[Cue]) -> dict[str, float]:
    """The ``lexicon`` cues as term -> weight for the base scorer."""
    return {cue.pattern.pattern.lower(): cue.weight for cue in cues if cue.kind == "lexicon"}


class SupportTextScorer:
    """One language's support-text scorer: a base scorer's valence adjusted by that language's cues.

    ``base`` is any object with ``raw_score(text) -> float`` (unnormalised valence, like
    :class:`~features.text_sentiment.VaderScorer` and :class:`~features.text_sentiment.ChineseLexiconScorer`);
    when it has ``override_terms``, the language's ``lexicon`` cues are applied to it (the base is changed).
    ``report_valence`` is added to plain reports (``REPORT_VALENCE``; 0 turns that reading off).
    """

    def __init__(
        self, base: _RawScorer, lang: str, cues_path: str | Path | None = None, report_valence: float = REPORT_VALENCE
    ) -> None:
        self.base = base
        self.lang = lang
        self.cues_path = cues_path
        self.report_valence = report_valence
        cues = load_cues(cues_path)
        if lang not in cues:
            raise ConfigError(f"support cue table has no cues for language {lang!r} (has {sorted(cues)})")
        self.cues_ = [cue for cue in cues[lang] if cue.kind != "lexicon"]
        terms = lexicon_terms(cues[lang])
        if terms and callable(getattr(base, "override_terms", None)):
            base.override_terms(terms)
        self.name = f"support_{lang}"

    def read(self, texts: list[str]) -> list[Reading]:
        """Readings of distinct, already cleaned and capped texts."""
        raw = self.base.raw_score
        return [adjust_valence(t.lower(), raw(t), self.cues_, raw, self.report_valence) for t in texts]

    def analyse(self, texts: pd.Series) -> pd.DataFrame:
        """``sentiment`` in [-1, 1] (NaN for missing text) and ``complaint_intent`` (False for missing text)."""
        texts = texts if isinstance(texts, pd.Series) else pd.Series(list(texts))
        codes, uniques = _distinct(texts)
        readings = self.read(uniques)
        alpha = float(getattr(self.base, "alpha", 15.0))  # the base scorer's normalisation (VADER: 15)
        sent = np.asarray([normalise(r.valence, alpha) for r in readings], dtype="float64")
        intent = np.asarray([r.complaint for r in readings], dtype=bool)
        return pd.DataFrame(
            {"sentiment": _spread(codes, sent, np.nan).astype("float64"),
             "complaint_intent": _spread(codes, intent, False).astype(bool)},
            index=texts.index,
        )

    def score(self, texts: pd.Series) -> pd.Series:
        """Sentiment in [-1, 1] per row, same index; NaN where text is missing or blank."""
        texts = texts if isinstance(texts, pd.Series) else pd.Series(list(texts))
        return self.analyse(texts)["sentiment"].rename(texts.name)
