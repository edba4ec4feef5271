"""Sentiment features from support tickets, reviews and surveys: text sentiment, complaints, ratings.

Text is scored once per record (:func:`prepare_interactions`), which is leak-free because a record's
score depends on that record alone; the windowed aggregates read only records before the cutoff.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from churn.config import SentimentConfig
from churn.timebase import DAY, days_since, last_time_before, window_slice
from features.behavioral import _slug
from features.catalogue import FeatureBlock, Features, FeatureSpec, count_by

logger = logging.getLogger(__name__)
# The early-warning sign "more than N complaints in the window" (``complaints_over_3_flag``).
COMPLAINTS_FLAG_OVER = 3


def prepare_interactions(interactions: pd.DataFrame, cfg: SentimentConfig, scorer: object) -> pd.DataFrame:
    """Add per-record ``sentiment`` (in [-1, 1]), ``complaint`` (bool, by content) and ``complaint_by_category``.

    A record with text is a complaint when its content says so (:func:`content_complaint`), whatever its
    category: a thank-you filed under "billing" is not one, an angry message filed under "praise" is. A record
    without text has no content to read, so its category decides. Disagreements between the two are kept
    (``complaint_by_category``), logged, and counted as features.
    """
    from features.text_sentiment import keyword_flags

    out = interactions.copy()
    text = out["text"].astype(str)
    has_text = (text.str.strip() != "").to_numpy()
    sent = np.full(len(out), np.nan)
    intent = np.zeros(len(out), dtype=bool)
    reads_intent = callable(getattr(scorer, "analyse", None))
    if has_text.any():
        if reads_intent:
            read = scorer.analyse(text[has_text])
            sent[has_text] = read["sentiment"].to_numpy(dtype=np.float64)
            intent[has_text] = read["complaint_intent"].to_numpy(dtype=bool)
        else:
            sent[has_text] = scorer.score(text[has_text]).to_numpy(dtype=np.float64)
    out["sentiment"] = sent
    if cfg.complaint_keywords:
        flags = keyword_flags(text, cfg.complaint_keywords)
        for kw in cfg.complaint_keywords:  # one bool column per keyword group (mentions by keyword)
            out[KEYWORD_PREFIX + kw] = flags[kw].to_numpy(dtype=bool)
        if not reads_intent:  # a scorer that does not read intent: a keyword said in a negative tone
            with np.errstate(invalid="ignore"):
                intent |= flags.any(axis=1).to_numpy() & (sent < 0)
    by_category = out["category"].isin(cfg.complaint_categories).to_numpy(dtype=bool)
    out["complaint_by_category"] = by_category
    out["complaint"] = np.where(has_text, content_complaint(sent, intent, cfg.negative_threshold), by_category)
    _log_disagreements(out, has_text)
    return out


def content_complaint(sentiment: np.ndarray, intent: np.ndarray, negative_threshold: float) -> np.ndarray:
    """A message is a complaint by content when it states one (complaint intent) or its tone is negative."""
    with np.errstate(invalid="ignore"):
        return np.asarray(intent, dtype=bool) | (np.asarray(sentiment, dtype=np.float64) < negative_threshold)


def complaint_disagreements(inter: pd.DataFrame) -> dict[str, int]:
    """Counts of records whose category and content disagree about being a complaint (records with text)."""
    has_text = inter["text"].astype(str).str.strip().ne("").to_numpy()
    content = inter["complaint"].to_numpy(dtype=bool) & has_text
    category = inter["complaint_by_category"].to_numpy(dtype=bool) & has_text
    return {"records_with_text": int(has_text.sum()),
            "complaint_category_not_content": int((category & ~content).sum()),
            "complaint_content_not_category": int((content & ~category).sum())}


def _log_disagreements(inter: pd.DataFrame, has_text: np.ndarray) -> None:
    counts = complaint_disagreements(inter)
    logger.info("complaints by content: %s of %s records with text are in a complaint category but do not read "
                "as one; %s read as complaints outside a complaint category",
                f"{counts['complaint_category_not_content']:,}", f"{counts['records_with_text']:,}",
                f"{counts['complaint_content_not_category']:,}")


KEYWORD_PREFIX = "_kw_"


def _last_value(codes: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """Value of each customer's latest row (rows sorted by time); NaN where none."""
    out = np.full(n, np.nan)
    if len(codes):
        rev_codes = codes[::-1]
        uniq, first_in_rev = np.unique(rev_codes, return_index=True)
        out[uniq] = values[::-1][first_in_rev]
    return out


@dataclass(frozen=True)
class _Rows:
    """The interactions' per-row arrays and the window slices every sentiment step reads."""

    n: int
    as_of: pd.Timestamp
    times: np.ndarray  # datetime64 per row
    codes: np.ndarray
    sent: np.ndarray
    rating: np.ndarray
    complaint: np.ndarray
    short: int
    long_: int
    sw: slice  # [as_of - short days, as_of)
    lw: slice  # [as_of - long days, as_of)
    hist: slice  # everything before as_of


def _rows(inter: pd.DataFrame, n: int, as_of: pd.Timestamp, windows: tuple[int, int]) -> _Rows:
    ts = inter["timestamp"]
    short, long_ = windows
    return _Rows(n=n, as_of=as_of, times=ts.to_numpy(), codes=inter["_code"].to_numpy(),
                 sent=inter["sentiment"].to_numpy(dtype=np.float64), rating=inter["rating"].to_numpy(dtype=np.float64),
                 complaint=inter["complaint"].to_numpy(dtype=bool), short=short, long_=long_,
                 sw=window_slice(ts, as_of - short * DAY, as_of), lw=window_slice(ts, as_of - long_ * DAY, as_of),
                 hist=window_slice(ts, pd.Timestamp.min, as_of))


def sentiment_features(inter: pd.DataFrame, n: int, as_of: pd.Timestamp, cfg: SentimentConfig,
                       windows: tuple[int, int] = (30, 90)) -> FeatureBlock:
    """Per-customer sentiment, complaint and rating features as of ``as_of`` (index: row code).

    Each step below computes one group of features from records strictly before ``as_of``, in catalogue order.
    """
    rows = _rows(inter, n, as_of, windows)
    prev = window_slice(inter["timestamp"], as_of - rows.long_ * DAY, as_of - rows.short * DAY)
    pairs: Features = _contacts_and_complaints(rows)
    pairs += _tone_long(rows, cfg.negative_threshold)
    pairs += _ratings(rows)
    pairs += _tone_short(rows, prev, cfg.negative_threshold)
    c_hist = rows.codes[rows.hist]
    pairs.append((FeatureSpec("days_since_last_interaction", "sentiment", "contacts",
                              "Days since the last support contact", "days",
                              reason="Last support contact {value} days ago", risk_direction=0),
                  days_since(last_time_before(c_hist, rows.times[rows.hist], n), as_of)))
    pairs += _complaint_kinds(inter, rows, cfg)
    pairs += _support_speed(inter, rows)
    pairs += _nps(rows, cfg.rating_scale_max)
    pairs += _content_signals(inter, rows.codes, (rows.sw, rows.lw), n, cfg, windows)
    return FeatureBlock.from_pairs(pairs)


def _contacts_and_complaints(rows: _Rows) -> Features:
    """Support contacts in the long window, complaints per window, days since the last complaint."""
    n, long_, lw, complaint = rows.n, rows.long_, rows.lw, rows.complaint
    c_l = rows.codes[lw]
    pairs: Features = [(FeatureSpec(f"interactions_{long_}d", "sentiment", "contacts",
                                    f"Support contacts in the last {long_} days", "count", long_,
                                    reason=f"{{value}} support contacts in the last {long_} days (typical customer: "
                                           "{typical})", risk_direction=1), count_by(c_l, n))]
    for w, sl in ((rows.short, rows.sw), (long_, lw)):
        pairs.append((FeatureSpec(f"complaints_{w}d", "sentiment", "complaints", f"Complaints in the last {w} days",
                                  "count", w,
                                  reason=f"{{value}} complaints in the last {w} days (typical customer: {{typical}})",
                                  risk_direction=1), count_by(rows.codes[sl][complaint[sl]], n)))
    hist = rows.hist
    last_c = last_time_before(rows.codes[hist][complaint[hist]], rows.times[hist][complaint[hist]], n)
    pairs.append((FeatureSpec("days_since_last_complaint", "sentiment", "complaints", "Days since last complaint",
                              "days", reason="Last complaint {value} days ago", risk_direction=-1),
                  days_since(last_c, rows.as_of)))
    return pairs


def _tone_specs(w: int) -> tuple[FeatureSpec, FeatureSpec, FeatureSpec]:
    """Mean tone, most negative message and share of negative messages over ``w`` days."""
    return (FeatureSpec(f"sentiment_mean_{w}d", "sentiment", "text_sentiment", f"Average text sentiment, last {w} days",
                        "score", w, reason=f"Average tone of messages in the last {w} days is {{value}} (-1 angry .. "
                                           "+1 happy; typical: {typical})", risk_direction=-1),
            FeatureSpec(f"sentiment_min_{w}d", "sentiment", "text_sentiment", f"Most negative message, last {w} days",
                        "score", w, reason=f"Most negative message in the last {w} days scored {{value}} (-1 .. +1)",
                        risk_direction=-1),
            FeatureSpec(f"negative_share_{w}d", "sentiment", "text_sentiment",
                        f"Share of negative messages, last {w} days", "share", w,
                        reason=f"{{value}} of messages in the last {w} days were negative", risk_direction=1))


def _tone_long(rows: _Rows, threshold: float) -> Features:
    """Text sentiment over the long window, and the tone of the latest message ever."""
    n, long_, lw = rows.n, rows.long_, rows.lw
    c_l, s_l = rows.codes[lw], rows.sent[lw]
    mean_l, mins, share_neg = _sentiment_stats(c_l, s_l, n, threshold)
    neg = count_by(c_l[~np.isnan(s_l) & (s_l < threshold)], n)
    mean_spec, min_spec, share_spec = _tone_specs(long_)
    s_h, c_h = rows.sent[rows.hist], rows.codes[rows.hist]
    okh = ~np.isnan(s_h)
    return [(mean_spec, mean_l), (min_spec, mins),
            (FeatureSpec(f"negative_messages_{long_}d", "sentiment", "text_sentiment",
                         f"Negative messages in the last {long_} days", "count", long_,
                         reason=f"{{value}} negative messages in the last {long_} days (typical customer: {{typical}})",
                         risk_direction=1), neg),
            (share_spec, share_neg),
            (FeatureSpec("sentiment_latest", "sentiment", "text_sentiment", "Tone of the latest message", "score",
                         reason="Latest message scored {value} (-1 angry .. +1 happy)", risk_direction=-1),
             _last_value(c_h[okh], s_h[okh], n))]


def _ratings(rows: _Rows) -> Features:
    """The latest satisfaction rating ever, and the mean rating over the long window."""
    n, long_, lw = rows.n, rows.long_, rows.lw
    r_h, c_h = rows.rating[rows.hist], rows.codes[rows.hist]
    okr = ~np.isnan(r_h)
    r_l, c_l = rows.rating[lw], rows.codes[lw]
    okl = ~np.isnan(r_l)
    nr = count_by(c_l[okl], n)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_r = np.where(nr > 0, count_by(c_l[okl], n, r_l[okl]) / nr, np.nan)
    return [(FeatureSpec("rating_latest", "sentiment", "ratings", "Latest satisfaction rating", "rating",
                         reason="Latest satisfaction rating {value} (typical customer: {typical})", risk_direction=-1),
             _last_value(c_h[okr], r_h[okr], n)),
            (FeatureSpec(f"rating_mean_{long_}d", "sentiment", "ratings", f"Average satisfaction rating, last {long_} days",
                         "rating", long_, reason=f"Average rating {{value}} in the last {long_} days (typical customer: "
                                                 "{typical})", risk_direction=-1), mean_r)]


def _tone_short(rows: _Rows, prev: slice, threshold: float) -> Features:
    """Text sentiment in the short window, and its trend against the rest of the long window (``prev``)."""
    short, long_ = rows.short, rows.long_
    mean_s, min_s, share_s = _sentiment_stats(rows.codes[rows.sw], rows.sent[rows.sw], rows.n, threshold)
    mean_prev = _sentiment_stats(rows.codes[prev], rows.sent[prev], rows.n, threshold)[0]
    mean_spec, min_spec, share_spec = _tone_specs(short)
    return [(mean_spec, mean_s), (min_spec, min_s), (share_spec, share_s),
            (FeatureSpec(f"sentiment_trend_{short}_{long_ - short}", "sentiment", "text_sentiment",
                         f"Change in average text sentiment, last {short} days vs previous {long_ - short}", "score",
                         short, reason=f"Tone of messages changed by {{value}} (on a -1 .. +1 scale) in the last {short} "
                                       f"days compared with the previous {long_ - short}", risk_direction=-1),
             mean_s - mean_prev)]


def _complaint_kinds(inter: pd.DataFrame, rows: _Rows, cfg: SentimentConfig) -> Features:
    """Contacts by complaint category and by keyword group, and escalations, over the long window."""
    n, long_, lw = rows.n, rows.long_, rows.lw
    c_l = rows.codes[lw]
    cat_l = inter["category"].iloc[lw]
    pairs: Features = []
    for cat in cfg.complaint_categories:
        hit = (cat_l == cat).to_numpy(dtype=bool)
        pairs.append((FeatureSpec(f"complaints_{_slug(cat)}_{long_}d", "sentiment", "complaints",
                                  f"'{cat}' contacts in the last {long_} days", "count", long_,
                                  reason=f"{{value}} '{cat}' contacts in the last {long_} days (typical customer: "
                                         "{typical})", risk_direction=1), count_by(c_l[hit], n)))
    for kw in cfg.complaint_keywords:
        if KEYWORD_PREFIX + kw not in inter:
            continue
        hit = inter[KEYWORD_PREFIX + kw].to_numpy(dtype=bool)[lw]
        pairs.append((FeatureSpec(f"mentions_{_slug(kw)}_{long_}d", "sentiment", "complaints",
                                  f"Messages mentioning {kw} in the last {long_} days", "count", long_,
                                  reason=f"{{value}} messages mentioning {kw} in the last {long_} days (typical "
                                         "customer: {typical})", risk_direction=1), count_by(c_l[hit], n)))
    esc = cat_l.isin(cfg.escalation_categories).to_numpy(dtype=bool, copy=True)
    for kw in cfg.escalation_categories:
        if KEYWORD_PREFIX + kw in inter:
            esc |= inter[KEYWORD_PREFIX + kw].to_numpy(dtype=bool)[lw]
    pairs.append((FeatureSpec(f"escalations_{long_}d", "sentiment", "escalations",
                              f"Escalations ({', '.join(cfg.escalation_categories)}) in the last {long_} days", "count",
                              long_, reason=f"{{value}} escalations (e.g. cancellation requests) in the last {long_} days",
                              risk_direction=1), count_by(c_l[esc], n)))
    return pairs


def _support_speed(inter: pd.DataFrame, rows: _Rows) -> Features:
    """Support speed (optional columns): only responses and resolutions completed before the cutoff count."""
    n, long_, lw = rows.n, rows.long_, rows.lw
    c_l = rows.codes[lw]
    t_l = rows.times[lw].astype("datetime64[ns]").view(np.int64)
    pairs: Features = []
    for col, what in (("response_hours", "first response"), ("resolution_hours", "resolution")):
        if col not in inter:
            continue
        hours = inter[col].to_numpy(dtype=np.float64)[lw]
        with np.errstate(invalid="ignore"):
            done = t_l + np.nan_to_num(hours, nan=np.inf).clip(max=1e9) * 3.6e12 < rows.as_of.value
        ok = done & ~np.isnan(hours)
        k = count_by(c_l[ok], n)
        with np.errstate(divide="ignore", invalid="ignore"):
            mean_h = np.where(k > 0, count_by(c_l[ok], n, hours[ok]) / k, np.nan)
        pairs.append((FeatureSpec(f"{col}_mean_{long_}d", "sentiment", "support_speed",
                                  f"Average hours to {what}, contacts of the last {long_} days", "hours", long_,
                                  reason=f"Support took {{value}} hours on average to {what.split()[-1]} (typical "
                                         "customer: {typical})", risk_direction=1), mean_h))
        if col == "resolution_hours":
            open_ = rows.complaint[lw] & ~ok
            pairs.append((FeatureSpec(f"open_complaints_{long_}d", "sentiment", "support_speed",
                                      f"Complaints of the last {long_} days not resolved by the cutoff", "count", long_,
                                      reason=f"{{value}} complaints from the last {long_} days are still unresolved",
                                      risk_direction=1), count_by(c_l[open_], n)))
    return pairs


def _nps(rows: _Rows, scale_max: int | None) -> Features:
    """NPS-style score when ratings are on a 0-10 scale (given, or guessed from the ratings seen before the
    cutoff): share of 9-10 minus share of 0-6 over the long window."""
    r_h = rows.rating[rows.hist]
    okr = ~np.isnan(r_h)
    scale = scale_max if scale_max is not None else (10 if okr.any() and np.nanmax(r_h[okr]) > 5 else 5)
    if scale != 10:
        return []
    n, long_ = rows.n, rows.long_
    r_l, c_l = rows.rating[rows.lw], rows.codes[rows.lw]
    okl = ~np.isnan(r_l)
    nr = count_by(c_l[okl], n)
    with np.errstate(divide="ignore", invalid="ignore"):
        prom = count_by(c_l[okl & (r_l >= 9)], n)
        detr = count_by(c_l[okl & (r_l <= 6)], n)
        nps = np.where(nr > 0, (prom - detr) / nr, np.nan)
    return [(FeatureSpec(f"nps_{long_}d", "sentiment", "ratings", f"NPS-style score of ratings, last {long_} days",
                         "score", long_, reason=f"Net promoter score {{value}} (-1 .. +1) from ratings in the last "
                                                f"{long_} days", risk_direction=-1), nps)]


def _content_signals(inter: pd.DataFrame, codes: np.ndarray, slices: tuple[slice, slice], n: int,
                     cfg: SentimentConfig, windows: tuple[int, int]) -> Features:
    """Early-warning flags read from content, and the category/content disagreement counts."""
    (sw, lw), (short, long_) = slices, windows
    sent = inter["sentiment"].to_numpy(dtype=np.float64)
    complaint = inter["complaint"].to_numpy(dtype=bool)
    by_category = inter["complaint_by_category"].to_numpy(dtype=bool)
    has_text = ~np.isnan(sent)
    with np.errstate(invalid="ignore"):
        negative = sent < cfg.negative_threshold
    c_l = codes[lw]
    over = COMPLAINTS_FLAG_OVER
    return [
        (FeatureSpec("negative_text_recent_flag", "sentiment", "text_sentiment",
                     f"A negative message in the last {short} days", "flag", short,
                     reason=f"Wrote a negative message in the last {short} days", risk_direction=1),
         (count_by(codes[sw][negative[sw]], n) > 0).astype(np.float64)),
        (FeatureSpec(f"complaints_over_{over}_flag", "sentiment", "complaints",
                     f"More than {over} complaints in the last {long_} days", "flag", long_,
                     reason=f"More than {over} complaints in the last {long_} days", risk_direction=1),
         (count_by(c_l[complaint[lw]], n) > over).astype(np.float64)),
        (FeatureSpec(f"complaint_category_not_content_{long_}d", "sentiment", "complaints",
                     f"Messages in a complaint category that do not read as a complaint, last {long_} days",
                     "count", long_, reason=f"{{value}} messages filed in a complaint category in the last {long_} days "
                     "do not read as complaints", risk_direction=0),
         count_by(c_l[(by_category & has_text & ~complaint)[lw]], n)),
        (FeatureSpec(f"complaint_content_not_category_{long_}d", "sentiment", "complaints",
                     f"Complaints written outside a complaint category, last {long_} days", "count", long_,
                     reason=f"{{value}} complaints in the last {long_} days were filed under other categories",
                     risk_direction=1),
         count_by(c_l[(~by_category & has_text & complaint)[lw]], n)),
    ]


def _sentiment_stats(codes: np.ndarray, sent: np.ndarray, n: int, negative_threshold: float
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per customer: mean, minimum and share negative of the scored messages (NaN where none)."""
    ok = ~np.isnan(sent)
    c, s = codes[ok], sent[ok]
    k = count_by(c, n)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where(k > 0, count_by(c, n, s) / k, np.nan)
        share = np.where(k > 0, count_by(c[s < negative_threshold], n) / k, np.nan)
    mins = np.full(n, np.inf)
    if len(c):
        np.minimum.at(mins, c, s)
    mins[np.isinf(mins)] = np.nan
    return mean, mins, share
