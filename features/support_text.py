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
* **lexicon**: the base lexicon's weight of a term in support text (names of the service, actions and politeness
  such as "support", "please", "cancel", "restore", "取消" carry no tone here).

The score then follows one rule, stated in :func:`adjust_valence`: while a problem is pending (no resolution
after it) positive words do not count and the problems' weights are added; once resolved, negative words about
the past do not count and the resolution's weight is added. Complaint intent is "a problem is pending".
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
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
_CUE_KINDS = frozenset({"problem", "topic", "sarcasm", "resolved", "polite", "ack", "lexicon"})
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


def adjust_valence(text: str, base: float, cues: Sequence[Cue]) -> Reading:
    """Apply the support-text rule to one text's base valence (VADER's or the lexicon's, unnormalised).

    In an information question, topics and resolutions do not count ("Is the outage over?", "If I change my
    mind ...?"). A problem inside a resolution match ("the bug ... is gone") does not count, nor a resolution that starts
    inside a problem match ("not fixed", "not working again"). Problems after the last resolution are pending, and with them any sarcasm markers
    after it. Pending problems: valence =
    min(base, 0) + their weights, a complaint. Resolved, nothing pending: max(base, 0) + the resolutions'
    weights. Neither: the base, times ``QUESTION_DAMPING`` for an information question. A polite request
    without a pending problem caps the valence at 0; a bare acknowledgement is 0.
    """
    stripped = text.strip()
    if _matches(stripped, cues, frozenset({"ack"})):
        return Reading(0.0, False)
    question = stripped.endswith(("?", "？")) and _INFO_QUESTION.search(stripped) is not None
    problems = _matches(text, cues, frozenset({"problem"} if question else {"problem", "topic"}))
    resolutions = [] if question else _matches(text, cues, frozenset({"resolved"}))
    problems = [p for p in problems if not any(_inside(p, r) for r in resolutions)]
    kept = [r for r in resolutions if not any(p[0] <= r[0] < p[1] for p in problems)]
    last_resolution = max((r[1] for r in kept), default=-1)
    pending = [p for p in problems if p[0] >= last_resolution]
    if pending:
        pending += [m for m in _matches(text, cues, frozenset({"sarcasm"})) if m[0] >= last_resolution]
        return Reading(min(base, 0.0) + sum(p[2].weight for p in pending), True)
    if kept:
        valence = max(base, 0.0) + sum(r[2].weight for r in kept)
    else:
        valence = base * QUESTION_DAMPING if question else base
    if _matches(text, cues, frozenset({"polite"})):
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
    """

    def __init__(self, base: _RawScorer, lang: str, cues_path: str | Path | None = None) -> None:
        self.base = base
        self.lang = lang
        self.cues_path = cues_path
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
        return [adjust_valence(t.lower(), self.base.raw_score(t), self.cues_) for t in texts]

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
