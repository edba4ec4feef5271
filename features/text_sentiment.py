"""Offline, pluggable sentiment scoring of free text (support tickets, survey comments) in English and Chinese.

Everything runs from files shipped in the repository or in installed wheels: VADER for English (its lexicon is in
the ``vaderSentiment`` wheel) and a hand-written lexicon for Chinese (``features/data/zh_sentiment_lexicon.tsv``).
Texts repeat a lot in practice (templates, "ok", "谢谢"), so every function works on the distinct texts only and
maps the results back; a few million rows with a few thousand distinct texts take well under a second plus the
scoring of the distinct ones.

Scoring time is linear in text length: every reader of a text (language detection, scorers, keyword flags)
sees only its first ``MAX_TEXT_CHARS`` characters (cut at the last sentence end inside that cap, see
:func:`cap_text`), and VADER, whose idiom and negation checks are quadratic in the length of what it is given,
reads that part in sentence-aligned chunks of at most ``CHUNK_CHARS`` characters whose valences are summed.

Teams can plug their own scorer in with ``load_scorer("package.module:ClassName")``: any object with a
``score(texts: pd.Series) -> pd.Series`` method returning values in [-1, 1] on the same index.
"""

from __future__ import annotations

import importlib
import logging
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from churn.errors import ConfigError

logger = logging.getLogger(__name__)

LANGUAGES: tuple[str, str, str] = ("en", "zh", "other")
_LEXICON_PACKAGE = "features.data"
_LEXICON_FILE = "zh_sentiment_lexicon.tsv"

# Character classes are built from literal characters (not escapes) so that both Python's re and the RE2
# engine behind pyarrow-backed string columns read them the same way.
_CJK_CLASS = "[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]"
_ASCII_LETTER_CLASS = "[A-Za-z]"
# Letters of other scripts: Latin with diacritics, Greek, Cyrillic, Hebrew, Arabic, Devanagari, Thai, Hangul, kana.
_OTHER_LETTER_CLASS = (
    "[\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u024f\u0370-\u03ff\u0400-\u04ff\u0590-\u05ff\u0600-\u06ff"
    "\u0900-\u097f\u0e00-\u0e7f\u1100-\u11ff\u3040-\u30ff\uac00-\ud7af]"
)
# Documented cap per message: longer texts are scored on their first MAX_TEXT_CHARS characters (a support
# message rarely runs past a page; a 1 MB paste is scored in milliseconds instead of hanging the run).
MAX_TEXT_CHARS = 5000
# VADER reads at most this many characters at a time (its cost grows with the square of what it reads).
CHUNK_CHARS = 500
# Compound scores are x / sqrt(x^2 + alpha) with VADER's alpha; chunk valences are summed before normalising.
_ALPHA = 15.0
_SENTENCE_END = re.compile(r"(?<=[.!?。！？;；\n])\s*")
# One CJK character carries about as much as two or three ASCII letters, so a text is Chinese when its CJK
# characters are at least a third of its CJK + ASCII letters.
_CJK_WEIGHT = 2.0


# ---------------------------------------------------------------------------------------------------------------
# Distinct-text plumbing shared by every public function.


def _as_series(texts: pd.Series | Sequence[Any]) -> pd.Series:
    return texts if isinstance(texts, pd.Series) else pd.Series(list(texts))


def _clean_text(value: object) -> str | None:
    """Stripped text capped at ``MAX_TEXT_CHARS`` (:func:`cap_text`), or None for missing or blank values
    (NaN, None, pd.NA, "", whitespace)."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    stripped = (value if isinstance(value, str) else str(value)).strip()
    return cap_text(stripped).strip() or None


def _distinct(texts: pd.Series) -> tuple[np.ndarray, list[str]]:
    """Codes into the list of distinct cleaned texts (-1 for missing/blank), so work is done once per text."""
    raw_codes, raw_uniques = pd.factorize(texts, use_na_sentinel=True)
    if len(raw_uniques) == 0:
        return np.full(len(raw_codes), -1, dtype=np.intp), []
    cleaned = [_clean_text(u) for u in raw_uniques]
    clean_codes, clean_uniques = pd.factorize(pd.Series(cleaned, dtype=object), use_na_sentinel=True)
    codes = np.where(raw_codes >= 0, clean_codes[np.maximum(raw_codes, 0)], -1)
    return codes.astype(np.intp, copy=False), [str(u) for u in clean_uniques]


def _spread(codes: np.ndarray, values: np.ndarray, missing: Any) -> np.ndarray:
    """Per-row values from per-distinct-text values; rows with code -1 get ``missing``."""
    if len(values) == 0:
        return np.full(len(codes), missing, dtype=np.asarray([missing]).dtype)
    out = values[np.maximum(codes, 0)]
    out[codes < 0] = missing
    return out


def _score_distinct(texts: pd.Series, score_many: Callable[[list[str]], Sequence[float]]) -> pd.Series:
    """Apply ``score_many`` to the distinct non-blank texts and broadcast back; NaN where text is missing."""
    texts = _as_series(texts)
    codes, uniques = _distinct(texts)
    values = np.asarray(score_many(uniques), dtype="float64") if uniques else np.empty(0, dtype="float64")
    if values.shape != (len(uniques),):
        raise ValueError(f"scorer returned {values.shape} values for {len(uniques)} distinct texts")
    values = np.clip(values, -1.0, 1.0)
    return pd.Series(_spread(codes, values, np.nan), index=texts.index, name=texts.name, dtype="float64")


# ---------------------------------------------------------------------------------------------------------------
# Bounded text: the cap per message and VADER's chunks.


def cap_text(text: str, max_chars: int = MAX_TEXT_CHARS) -> str:
    """The part of ``text`` that is scored: all of it up to ``max_chars``, else its first ``max_chars``
    characters, cut after the last sentence end in their second half when there is one."""
    if len(text) <= max_chars:
        return text
    head = text[:max_chars]
    cut = max(head.rfind(ch) for ch in ".!?。！？\n")
    return head[: cut + 1] if cut >= max_chars // 2 else head


def _split_long(sentence: str, size: int) -> list[str]:
    """A sentence longer than ``size`` cut into pieces of at most ``size`` characters, at spaces if possible."""
    parts: list[str] = []
    while len(sentence) > size:
        cut = sentence.rfind(" ", 0, size + 1)
        cut = cut if cut > 0 else size
        parts.append(sentence[:cut])
        sentence = sentence[cut:].lstrip()
    return [*parts, sentence] if sentence else parts


def text_chunks(text: str, size: int = CHUNK_CHARS) -> list[str]:
    """``text`` as consecutive sentence-aligned pieces of at most ``size`` characters (a longer sentence is cut
    at spaces, or hard at ``size``); whole sentences are packed greedily, so short texts stay one piece."""
    if len(text) <= size:
        return [text]
    pieces: list[str] = []
    current = ""
    for sentence in _SENTENCE_END.split(text):
        for part in _split_long(sentence, size):
            if current and len(current) + 1 + len(part) > size:
                pieces.append(current)
                current = part
            else:
                current = f"{current} {part}" if current else part
    if current:
        pieces.append(current)
    return [p for p in pieces if p.strip()]


def normalise(raw: float, alpha: float = _ALPHA) -> float:
    """VADER's normalisation of a summed valence into (-1, 1)."""
    return raw / math.sqrt(raw * raw + alpha)


def valence(compound: float, alpha: float = _ALPHA) -> float:
    """Inverse of :func:`normalise` (compound scores are rounded, so they are clipped just inside +-1)."""
    c = min(max(compound, -0.9999), 0.9999)
    return c * math.sqrt(alpha / (1.0 - c * c))


# ---------------------------------------------------------------------------------------------------------------
# Language detection.


def _decide_language(cjk: np.ndarray, ascii_letters: np.ndarray, other: np.ndarray) -> np.ndarray:
    """Index into LANGUAGES from per-text letter counts: the script with the most (weighted) letters wins."""
    zh_weight = cjk * _CJK_WEIGHT
    is_zh = (cjk > 0) & (zh_weight >= ascii_letters) & (zh_weight >= other)
    is_en = ~is_zh & (ascii_letters > 0) & (ascii_letters >= other)
    return np.select([is_zh, is_en], [1, 0], default=2)


def detect_language(text: str | None) -> str:
    """Language of one text: "zh" if CJK characters dominate, "en" if ASCII letters do, else "other".

    A script heuristic, not a classifier: CJK counts double against ASCII letters (so "这个app很好用" is "zh"),
    other Latin-script languages (French, Spanish) read as "en", and empty or missing text is "other".
    """
    return str(detect_languages(pd.Series([text], dtype=object)).iloc[0])


def _language_codes(uniques: list[str]) -> np.ndarray:
    """Index into LANGUAGES for each distinct text, counting letters with vectorised string methods."""
    if not uniques:
        return np.empty(0, dtype=np.intp)
    s = pd.Series(uniques, dtype="str")
    cjk = s.str.count(_CJK_CLASS).to_numpy(dtype="float64")
    ascii_letters = s.str.count(_ASCII_LETTER_CLASS).to_numpy(dtype="float64")
    other = s.str.count(_OTHER_LETTER_CLASS).to_numpy(dtype="float64")
    return _decide_language(cjk, ascii_letters, other)


def detect_languages(texts: pd.Series) -> pd.Series:
    """Vectorised ``detect_language``: "en", "zh" or "other" per row, same index; computed once per distinct text."""
    texts = _as_series(texts)
    codes, uniques = _distinct(texts)
    names = np.asarray(LANGUAGES, dtype=object)[_language_codes(uniques)]
    return pd.Series(_spread(codes, names, "other"), index=texts.index, name=texts.name, dtype="str")


# ---------------------------------------------------------------------------------------------------------------
# Scorers.


@runtime_checkable
class SentimentScorer(Protocol):
    """Anything that maps texts to sentiment in [-1, 1] (float64, same index, NaN for missing/empty text)."""

    name: str

    def score(self, texts: pd.Series) -> pd.Series: ...


class VaderScorer:
    """English sentiment: VADER's compound score, which is already normalised to [-1, 1]."""

    name = "vader"

    def __init__(self) -> None:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        self.analyzer_ = SentimentIntensityAnalyzer()

    def override_terms(self, terms: Mapping[str, float]) -> None:
        """Set the valence of lexicon words (0 removes a word's tone), e.g. for a domain."""
        self.analyzer_.lexicon.update({term.lower(): float(w) for term, w in terms.items()})

    def raw_score(self, text: str) -> float:
        """Summed valence of the text's chunks (:func:`text_chunks`), before normalisation."""
        polarity = self.analyzer_.polarity_scores
        return sum(valence(polarity(chunk)["compound"]) for chunk in text_chunks(text))

    def _score_one(self, text: str) -> float:
        if len(text) <= CHUNK_CHARS:  # one chunk: VADER's own compound, unchanged
            return float(self.analyzer_.polarity_scores(text)["compound"])
        return normalise(self.raw_score(text))

    def _score_many(self, texts: list[str]) -> list[float]:
        return [self._score_one(t) for t in texts]

    def score(self, texts: pd.Series) -> pd.Series:
        """Compound score per row; VADER runs once per distinct text, on its capped part in bounded chunks."""
        return _score_distinct(texts, self._score_many)


@dataclass(frozen=True)
class _Term:
    kind: str  # "sentiment", "negator", "degree", "contrast", "neutral"
    weight: float
    degree_weight: float | None = None  # set for terms that are also degree adverbs (好)


_KINDS = frozenset({"sentiment", "negator", "degree", "contrast", "neutral"})
# Clause boundaries: negators and degree adverbs never reach across them.
_BOUNDARIES = frozenset("，。！？；：、,.!?;:\n\r\t ~～…（）()【】[]\"'“”‘’")
_EXCLAMATIONS = frozenset("!！")


def _read_lexicon(text: str, source: str) -> dict[str, _Term]:
    """Parse the TSV lexicon (term, kind, weight; '#' comments); a term may be both sentiment and degree."""
    terms: dict[str, _Term] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.startswith("#") or line.startswith("term\t"):
            continue
        parts = line.rstrip("\n").split("\t")
        if len(parts) != 3 or parts[1] not in _KINDS:
            raise ConfigError(
                f"{source}:{lineno}: expected 'term<TAB>kind<TAB>weight' with kind in "
                f"{sorted(_KINDS)}, got {line!r}"
            )
        term, kind, weight_text = parts[0].strip().lower(), parts[1], parts[2]
        try:
            weight = float(weight_text)
        except ValueError as exc:
            raise ConfigError(f"{source}:{lineno}: weight {weight_text!r} is not a number") from exc
        previous = terms.get(term)
        if previous is None:
            terms[term] = _Term(kind, weight)
        elif {previous.kind, kind} == {"sentiment", "degree"}:
            sentiment = weight if kind == "sentiment" else previous.weight
            degree = weight if kind == "degree" else previous.weight
            terms[term] = _Term("sentiment", sentiment, degree_weight=degree)
        else:
            raise ConfigError(f"{source}:{lineno}: term {term!r} listed twice ({previous.kind}, {kind})")
    return terms


class ChineseLexiconScorer:
    """Chinese sentiment from a shipped lexicon, scanned longest-match first (no word segmenter needed).

    Rules, in the spirit of VADER: a negator (不, 没有, 无法 ...) flips and damps the next sentiment term within
    ``window`` characters of the same clause; a degree adverb (很, 非常, 有点 ...) scales it; a negator followed by
    a degree adverb (不太好, 不是很满意) only weakly negates; the clause after the last contrast word (但是, 不过)
    counts ``contrast_weight`` times and the one before half; each "!" (up to 4) adds emphasis. The sum is
    normalised like VADER, ``x / sqrt(x^2 + alpha)``.
    """

    name = "zh_lexicon"

    def __init__(
        self,
        lexicon_path: str | Path | None = None,
        extra_terms: Mapping[str, float] | None = None,
        alpha: float = 15.0,
        window: int = 3,
        negated_degree: float = 0.5,
        exclamation_boost: float = 0.292,
    ) -> None:
        self.lexicon_path = lexicon_path
        self.extra_terms = dict(extra_terms or {})
        self.alpha = alpha
        self.window = window
        self.negated_degree = negated_degree
        self.exclamation_boost = exclamation_boost
        if lexicon_path is None:
            text = resources.files(_LEXICON_PACKAGE).joinpath(_LEXICON_FILE).read_text(encoding="utf-8")
            source = f"{_LEXICON_PACKAGE}/{_LEXICON_FILE}"
        else:
            text, source = Path(lexicon_path).read_text(encoding="utf-8"), str(lexicon_path)
        self.terms_ = _read_lexicon(text, source)
        self.override_terms(self.extra_terms)
        logger.debug("loaded %d Chinese lexicon terms from %s", len(self.terms_), source)

    def override_terms(self, terms: Mapping[str, float]) -> None:
        """Add or replace sentiment terms (weight 0 makes a term neutral), e.g. for a domain."""
        for term, weight in terms.items():
            self.terms_[term.lower()] = _Term("sentiment", float(weight))
        # Candidate term lengths per first character, longest first, so scanning tries few slices.
        lengths: dict[str, set[int]] = {}
        for term in self.terms_:
            lengths.setdefault(term[0], set()).add(len(term))
        self.lengths_ = {ch: sorted(ls, reverse=True) for ch, ls in lengths.items()}

    def _tokens(self, text: str) -> list[tuple[int, int, _Term | None]]:
        """(start, end, term) for lexicon matches, and (i, i+1, None) for clause boundaries."""
        out: list[tuple[int, int, _Term | None]] = []
        terms, lengths = self.terms_, self.lengths_
        i, n = 0, len(text)
        while i < n:
            ch = text[i]
            if ch in _BOUNDARIES:
                out.append((i, i + 1, None))
                i += 1
                continue
            for length in lengths.get(ch, ()):
                term = terms.get(text[i : i + length])
                if term is not None:
                    out.append((i, i + length, term))
                    i += length
                    break
            else:
                i += 1
        return out

    def raw_score(self, text: str) -> float:
        """Unnormalised sum of rule-adjusted term weights (useful for inspecting the rules)."""
        tokens = self._tokens(text.lower())
        before = after = 0.0
        multiplier, negated, last_end = 1.0, False, -1  # modifiers waiting for the next sentiment term

        for pos, (start, end, term) in enumerate(tokens):
            if multiplier != 1.0 or negated:
                if term is None or start - last_end > self.window:
                    multiplier, negated = 1.0, False
            if term is None or term.kind == "neutral":
                continue
            if term.kind == "contrast":
                before, after = before + after, 0.0
                multiplier, negated = 1.0, False
                continue
            kind, weight = term.kind, term.weight
            if term.degree_weight is not None:
                # 好 before another sentiment/degree term (好慢, 好好用) is an intensifier, not "good".
                nxt = tokens[pos + 1] if pos + 1 < len(tokens) else None
                if (
                    nxt is not None
                    and nxt[0] == end
                    and nxt[2] is not None
                    and nxt[2].kind in ("sentiment", "degree")
                ):
                    kind, weight = "degree", term.degree_weight
            if kind == "negator":
                multiplier *= weight
                negated = True
                last_end = end
            elif kind == "degree":
                # Negator then degree (不太好, 不是很满意) means "not very": a weak negation, not an amplified one.
                if negated:
                    multiplier = math.copysign(self.negated_degree, multiplier)
                else:
                    multiplier *= weight
                last_end = end
            else:
                after += weight * multiplier
                multiplier, negated = 1.0, False

        has_contrast = any(t is not None and t.kind == "contrast" for _, _, t in tokens)
        total = before * 0.5 + after * 1.5 if has_contrast else before + after
        if total:
            bangs = min(sum(text.count(c) for c in _EXCLAMATIONS), 4)
            total += math.copysign(bangs * self.exclamation_boost, total)
        return total

    def _score_many(self, texts: list[str]) -> list[float]:
        alpha = self.alpha
        raws = np.asarray([self.raw_score(t) for t in texts], dtype="float64")
        return list(raws / np.sqrt(raws * raws + alpha))

    def score(self, texts: pd.Series) -> pd.Series:
        """Normalised lexicon score per row; the lexicon is scanned once per distinct text."""
        return _score_distinct(texts, self._score_many)


class MultilingualScorer:
    """Detects each distinct text's language and routes it to that language's scorer.

    The default routes English to VADER and Chinese to the lexicon, each read as support text
    (:class:`features.support_text.SupportTextScorer`: domain cues for billing disputes, threats, outages,
    "still not fixed", polite cancellations). Languages without a scorer (including "other") go to
    ``fallback``. Each scorer is called at most once per call, with the distinct texts it should handle.
    """

    name = "multilingual"

    def __init__(self, scorers: dict[str, SentimentScorer] | None = None, fallback: str = "en") -> None:
        if scorers is None:
            from features.support_text import SupportTextScorer

            scorers = {"en": SupportTextScorer(VaderScorer(), "en"),
                       "zh": SupportTextScorer(ChineseLexiconScorer(), "zh")}
        for lang, scorer in scorers.items():
            if not callable(getattr(scorer, "score", None)):
                raise ConfigError(f"sentiment scorer for language {lang!r} has no score() method: {scorer!r}")
        if fallback not in scorers:
            raise ConfigError(
                f"fallback language {fallback!r} has no scorer; scorers exist for {sorted(scorers)}"
            )
        self.scorers = scorers
        self.fallback = fallback

    def analyse(self, texts: pd.Series) -> pd.DataFrame:
        """``sentiment`` in [-1, 1] (NaN where text is missing or blank) and ``complaint_intent`` per row.

        Complaint intent comes from language scorers that read it (``analyse``); others give False.
        """
        texts = _as_series(texts)
        codes, uniques = _distinct(texts)
        values = np.full(len(uniques), np.nan)
        intent = np.zeros(len(uniques), dtype=bool)
        if uniques:
            langs = np.asarray(LANGUAGES, dtype=object)[_language_codes(uniques)]
            routes = np.asarray(
                [lang if lang in self.scorers else self.fallback for lang in langs], dtype=object
            )
            uniques_arr = np.asarray(uniques, dtype=object)
            for route in pd.unique(routes):
                positions = np.flatnonzero(routes == route)
                batch = pd.Series(uniques_arr[positions], index=positions, dtype="str")
                scorer = self.scorers[route]
                if callable(getattr(scorer, "analyse", None)):
                    frame = scorer.analyse(batch).reindex(batch.index)
                    result = frame["sentiment"]
                    intent[positions] = frame["complaint_intent"].fillna(False).to_numpy(dtype=bool)
                else:
                    result = scorer.score(batch)
                values[positions] = pd.to_numeric(result.reindex(batch.index), errors="coerce").to_numpy(
                    "float64"
                )
                logger.debug("scored %d distinct texts with the %r scorer", len(positions), route)
        values = np.clip(values, -1.0, 1.0)
        return pd.DataFrame(
            {"sentiment": _spread(codes, values, np.nan).astype("float64"),
             "complaint_intent": _spread(codes, intent, False).astype(bool)},
            index=texts.index,
        )

    def score(self, texts: pd.Series) -> pd.Series:
        """Sentiment in [-1, 1] per row, same index; NaN where text is missing or blank."""
        texts = _as_series(texts)
        return self.analyse(texts)["sentiment"].rename(texts.name)


def _plain_scorer() -> MultilingualScorer:
    """The general-purpose scorers without the support-text cues (VADER + Chinese lexicon), for comparison."""
    return MultilingualScorer({"en": VaderScorer(), "zh": ChineseLexiconScorer()})


_BUILTIN_SCORERS: dict[str, Callable[[], SentimentScorer]] = {
    "builtin": MultilingualScorer,
    "plain": _plain_scorer,
    "vader": VaderScorer,
    "zh_lexicon": ChineseLexiconScorer,
}


def load_scorer(spec: str = "builtin") -> SentimentScorer:
    """Scorer from a config string: "builtin" (English + Chinese support text), "plain" (the same without the
    support-text cues), "vader", "zh_lexicon", or
    "package.module:ClassName" for a team's own scorer (a class or factory called without arguments, or an
    object that already has ``score``)."""
    spec = (spec or "").strip()
    if spec in _BUILTIN_SCORERS:
        return _BUILTIN_SCORERS[spec]()
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(
            f"sentiment scorer {spec!r} is not valid: use one of {sorted(_BUILTIN_SCORERS)} "
            "or 'package.module:ClassName'"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"sentiment scorer {spec!r}: cannot import module {module_name!r} ({exc})") from exc
    target: Any = module
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError as exc:
            raise ConfigError(f"sentiment scorer {spec!r}: module {module_name!r} has no {attr!r}") from exc
    if isinstance(target, type) or (callable(target) and not hasattr(target, "score")):
        try:
            target = target()
        except Exception as exc:
            raise ConfigError(
                f"sentiment scorer {spec!r}: calling {attr}() without arguments failed: {exc}"
            ) from exc
    if not callable(getattr(target, "score", None)):
        raise ConfigError(f"sentiment scorer {spec!r}: {type(target).__name__} has no score(texts) method")
    logger.info("using sentiment scorer %s", spec)
    return target


def keyword_flags(texts: pd.Series, keywords: dict[str, list[str]]) -> pd.DataFrame:
    """One bool column per category: True where any of its keywords occurs in the text.

    Matching is a case-insensitive substring test (so it works for Chinese, which has no spaces, and "cancel"
    also matches "cancelling"); missing text is False. Computed once per distinct text.
    """
    texts = _as_series(texts)
    codes, uniques = _distinct(texts)
    lowered = pd.Series(uniques, dtype="str").str.lower()
    columns: dict[str, np.ndarray] = {}
    for category, words in keywords.items():
        if isinstance(words, str):  # a lone keyword, not its characters
            words = [words]
        hits = np.zeros(len(uniques), dtype=bool)
        for word in {w.strip().lower() for w in words if w and w.strip()}:
            hits |= lowered.str.contains(word, regex=False).to_numpy(dtype=bool)
        columns[category] = _spread(codes, hits, False).astype(bool)
    return pd.DataFrame(columns, index=texts.index)
