"""Sentiment features from support tickets, reviews and surveys: text sentiment, complaints, ratings.

Text is scored once per record (:func:`prepare_interactions`), which is leak-free because a record's
score depends on that record alone; the windowed aggregates read only records before the cutoff.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from churn.config import SentimentConfig
from features.behavioral import days_since, last_time_before
from features.catalogue import FeatureBlock, FeatureSpec, count_by, window_slice

DAY = pd.Timedelta(days=1)


def prepare_interactions(interactions: pd.DataFrame, cfg: SentimentConfig, scorer: object) -> pd.DataFrame:
    """Add per-record ``sentiment`` (in [-1, 1]) and ``complaint`` (bool) columns."""
    from features.text_sentiment import keyword_flags

    out = interactions.copy()
    text = out["text"].astype(str)
    has_text = text.str.strip() != ""
    sent = pd.Series(np.nan, index=out.index, dtype="float64")
    if has_text.any():
        sent[has_text] = scorer.score(text[has_text]).to_numpy(dtype=np.float64)
    out["sentiment"] = sent.to_numpy()
    complaint = out["category"].isin(cfg.complaint_categories).to_numpy()
    if cfg.complaint_keywords:
        flags = keyword_flags(text, cfg.complaint_keywords)
        complaint = complaint | flags.any(axis=1).to_numpy()
    out["complaint"] = complaint
    return out


def _last_value(codes: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """Value of each customer's latest row (rows sorted by time); NaN where none."""
    out = np.full(n, np.nan)
    if len(codes):
        rev_codes = codes[::-1]
        uniq, first_in_rev = np.unique(rev_codes, return_index=True)
        out[uniq] = values[::-1][first_in_rev]
    return out


def sentiment_features(inter: pd.DataFrame, n: int, as_of: pd.Timestamp, cfg: SentimentConfig,
                       windows: tuple[int, int] = (30, 90)) -> FeatureBlock:
    """Per-customer sentiment, complaint and rating features as of ``as_of`` (index: row code)."""
    ts = inter["timestamp"]
    codes = inter["_code"].to_numpy()
    sent = inter["sentiment"].to_numpy(dtype=np.float64)
    rating = inter["rating"].to_numpy(dtype=np.float64)
    complaint = inter["complaint"].to_numpy(dtype=bool)
    short, long_ = windows
    cols: dict[str, np.ndarray] = {}
    specs: list[FeatureSpec] = []

    def add(spec: FeatureSpec, values: np.ndarray) -> None:
        cols[spec.name] = values
        specs.append(spec)

    lw = window_slice(ts, as_of - long_ * DAY, as_of)
    sw = window_slice(ts, as_of - short * DAY, as_of)
    hist = window_slice(ts, pd.Timestamp.min, as_of)
    c_l, c_s = codes[lw], codes[sw]

    add(FeatureSpec(f"interactions_{long_}d", "sentiment", "contacts", f"Support contacts in the last {long_} days", "count",
                    long_, reason=f"{{value}} support contacts in the last {long_} days (typical customer: {{typical}})",
                    risk_direction=1), count_by(c_l, n))
    for w, cc, sl in ((short, c_s, sw), (long_, c_l, lw)):
        add(FeatureSpec(f"complaints_{w}d", "sentiment", "complaints", f"Complaints in the last {w} days", "count", w,
                        reason=f"{{value}} complaints in the last {w} days (typical customer: {{typical}})",
                        risk_direction=1), count_by(cc[complaint[sl]], n))
    c_hist = codes[hist]
    last_c = last_time_before(c_hist[complaint[hist]], ts.to_numpy()[hist][complaint[hist]], n)
    add(FeatureSpec("days_since_last_complaint", "sentiment", "complaints", "Days since last complaint", "days",
                    reason="Last complaint {value} days ago", risk_direction=-1), days_since(last_c, as_of))

    s_l = sent[lw]
    ok = ~np.isnan(s_l)
    n_scored = count_by(c_l[ok], n)
    sum_s = count_by(c_l[ok], n, s_l[ok])
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_l = np.where(n_scored > 0, sum_s / n_scored, np.nan)
        neg = count_by(c_l[ok & (s_l < cfg.negative_threshold)], n)
        share_neg = np.where(n_scored > 0, neg / n_scored, np.nan)
    mins = np.full(n, np.inf)
    if ok.any():
        np.minimum.at(mins, c_l[ok], s_l[ok])
    mins[np.isinf(mins)] = np.nan
    add(FeatureSpec(f"sentiment_mean_{long_}d", "sentiment", "text_sentiment", f"Average text sentiment, last {long_} days",
                    "score", long_, reason=f"Average tone of messages in the last {long_} days is {{value}} (-1 angry .. +1 happy; typical: {{typical}})",
                    risk_direction=-1), mean_l)
    add(FeatureSpec(f"sentiment_min_{long_}d", "sentiment", "text_sentiment", f"Most negative message, last {long_} days",
                    "score", long_, reason=f"Most negative message in the last {long_} days scored {{value}} (-1 .. +1)",
                    risk_direction=-1), mins)
    add(FeatureSpec(f"negative_messages_{long_}d", "sentiment", "text_sentiment", f"Negative messages in the last {long_} days",
                    "count", long_, reason=f"{{value}} negative messages in the last {long_} days (typical customer: {{typical}})",
                    risk_direction=1), neg)
    add(FeatureSpec(f"negative_share_{long_}d", "sentiment", "text_sentiment", f"Share of negative messages, last {long_} days",
                    "share", long_, reason=f"{{value}} of messages in the last {long_} days were negative",
                    risk_direction=1), share_neg)
    s_h = sent[hist]
    okh = ~np.isnan(s_h)
    add(FeatureSpec("sentiment_latest", "sentiment", "text_sentiment", "Tone of the latest message", "score",
                    reason="Latest message scored {value} (-1 angry .. +1 happy)", risk_direction=-1),
        _last_value(c_hist[okh], s_h[okh], n))

    r_h = rating[hist]
    okr = ~np.isnan(r_h)
    add(FeatureSpec("rating_latest", "sentiment", "ratings", "Latest satisfaction rating", "rating",
                    reason="Latest satisfaction rating {value} (typical customer: {typical})", risk_direction=-1),
        _last_value(c_hist[okr], r_h[okr], n))
    r_l = rating[lw]
    okl = ~np.isnan(r_l)
    nr = count_by(c_l[okl], n)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_r = np.where(nr > 0, count_by(c_l[okl], n, r_l[okl]) / nr, np.nan)
    add(FeatureSpec(f"rating_mean_{long_}d", "sentiment", "ratings", f"Average satisfaction rating, last {long_} days",
                    "rating", long_, reason=f"Average rating {{value}} in the last {long_} days (typical customer: {{typical}})",
                    risk_direction=-1), mean_r)
    return FeatureBlock(pd.DataFrame(cols), specs)
