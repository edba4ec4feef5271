"""Assemble the feature families into one point-in-time feature table per cutoff.

``FeatureBuilder`` prepares record-level work once (text sentiment, complaint flags), then builds
one row per customer active at each cutoff. Families whose table is absent are switched off.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from churn.config import Config
from features.behavioral import behavioral_features, event_types_before
from features.catalogue import FeatureBlock, FeatureSpec
from features.contract import Tables
from features.flags import sentiment_flags
from features.sentiment import prepare_interactions, sentiment_features
from features.timeline import active_mask, labels
from features.value import value_features

log = logging.getLogger(__name__)
KEY_COLUMNS = ["customer_id", "cutoff"]


@dataclass
class FeatureSet:
    """Feature rows (``customer_id``, ``cutoff``, features, optionally ``label``) and their catalogue."""

    frame: pd.DataFrame
    specs: list[FeatureSpec]

    @property
    def feature_names(self) -> list[str]:
        return [s.name for s in self.specs]

    @property
    def categorical(self) -> list[str]:
        return [s.name for s in self.specs if s.categorical]


def profile_features(customers: pd.DataFrame, attributes: list[str]) -> FeatureBlock:
    """Static customer attributes: strings become categoricals with a fixed category list."""
    cols: dict[str, object] = {}
    specs: list[FeatureSpec] = []
    for a in attributes:
        col = customers[a]
        label = a.replace("_", " ")
        if pd.api.types.is_numeric_dtype(col):
            cols[a] = col.to_numpy(dtype=np.float64)
            specs.append(FeatureSpec(a, "profile", a, label.capitalize(), "number",
                                     reason=f"{label.capitalize()}: {{value}} (typical customer: {{typical}})"))
        else:
            cats = sorted(pd.unique(col.astype(str)).tolist())
            cols[a] = pd.Categorical(col.astype(str), categories=cats)
            specs.append(FeatureSpec(a, "profile", a, label.capitalize(), "category",
                                     reason=f"{label.capitalize()}: {{label}}", categorical=True))
    return FeatureBlock(pd.DataFrame(cols), specs)


class FeatureBuilder:
    """Builds point-in-time features for one table set under one configuration."""

    def __init__(self, tables: Tables, cfg: Config, scorer: object | None = None,
                 event_types: list[str] | None = None) -> None:
        self.tables = tables
        self.cfg = cfg
        self.fcfg = cfg.features
        self.event_types = event_types if event_types is not None else self.fcfg.event_types
        self.activity = tables.events
        if self.activity is None and tables.transactions is not None:
            tx = tables.transactions
            self.activity = pd.DataFrame({"customer_id": tx["customer_id"], "_code": tx["_code"],
                                          "timestamp": tx["timestamp"], "event_type": "purchase", "value": np.nan})
            log.warning("no events table: behavioural features use transactions as activity")
            # one activity type only: per-type counts would repeat events_*d and clash with the value
            # family's purchase_trend_30_60, so there are none
            self.event_types = []
        self.timings: dict[str, float] = {}  # seconds per family in the latest build()
        self.interactions = None
        if tables.interactions is not None:
            if scorer is None:
                from features.text_sentiment import load_scorer

                scorer = load_scorer(self.fcfg.sentiment.scorer)
            t0 = time.perf_counter()
            self.interactions = prepare_interactions(tables.interactions, self.fcfg.sentiment, scorer)
            log.info("scored sentiment of %s interactions in %.1fs", f"{len(self.interactions):,}", time.perf_counter() - t0)

    def families(self) -> list[str]:
        fams = ["profile"]
        if self.activity is not None:
            fams.append("behavioral")
        if self.interactions is not None:
            fams.append("sentiment")
        if self.tables.transactions is not None:
            fams.append("value")
        return fams

    def build(self, as_of: pd.Timestamp, population: np.ndarray | None = None,
              with_labels: bool = False) -> FeatureSet:
        """One row per customer active at ``as_of``; features only from records strictly before it."""
        as_of = pd.Timestamp(as_of)
        c = self.tables.customers
        if population is None:
            population = active_mask(self.tables, as_of, self.cfg.label)
        self.timings = {}
        t0 = time.perf_counter()
        blocks: list[FeatureBlock] = [profile_features(c, self.tables.attributes)]
        self.timings["profile"] = time.perf_counter() - t0
        if self.activity is not None:
            t0 = time.perf_counter()
            types = self.event_types if self.event_types is not None else event_types_before(self.activity, as_of)
            blocks.append(behavioral_features(self.activity, c["signup_date"], as_of, self.fcfg, types))
            self.timings["behavioral"] = time.perf_counter() - t0
        if self.interactions is not None:
            t0 = time.perf_counter()
            blocks.append(sentiment_features(self.interactions, len(c), as_of, self.fcfg.sentiment))
            blocks.append(sentiment_flags(blocks[-1].frame))
            self.timings["sentiment"] = time.perf_counter() - t0
        if self.tables.transactions is not None:
            t0 = time.perf_counter()
            blocks.append(value_features(self.tables.transactions, c, population, as_of, self.fcfg))
            self.timings["value"] = time.perf_counter() - t0
        if self.activity is None:  # tenure still matters without any activity table
            tenure = ((as_of - c["signup_date"]).dt.days).to_numpy(dtype=np.float64)
            blocks.append(FeatureBlock(pd.DataFrame({"tenure_days": tenure}), [FeatureSpec(
                "tenure_days", "profile", "tenure", "Days since signup", "days",
                reason="Customer for {value} days", risk_direction=-1)]))
        idx = np.flatnonzero(population)
        parts = [pd.DataFrame({"customer_id": c["customer_id"].to_numpy()[idx], "cutoff": as_of})]
        parts += [b.frame.iloc[idx].reset_index(drop=True) for b in blocks]
        frame = pd.concat(parts, axis=1)
        if with_labels:
            frame["label"] = labels(self.tables, as_of, self.cfg.label)[idx]
        specs = [s for b in blocks for s in b.specs]
        return FeatureSet(frame, specs)

    def build_many(self, cutoffs: list[pd.Timestamp], with_labels: bool = True) -> FeatureSet:
        """Stack snapshots for several cutoffs (training); columns are aligned across cutoffs."""
        sets = []
        for i, t in enumerate(cutoffs, 1):
            t0 = time.perf_counter()
            fs = self.build(t, with_labels=with_labels)
            msg = f"cutoff {i}/{len(cutoffs)} {t.date()}: {len(fs.frame):,} customers"
            if with_labels:
                msg += f", churn rate {fs.frame['label'].mean():.3f}"
            log.info("%s (%.1fs)", msg, time.perf_counter() - t0)
            sets.append(fs)
        return stack(sets)


def stack(sets: list[FeatureSet]) -> FeatureSet:
    """Concatenate feature sets; a feature missing at one cutoff (e.g. a new event type) is 0 there."""
    specs: dict[str, FeatureSpec] = {}
    for fs in sets:
        for s in fs.specs:
            specs.setdefault(s.name, s)
    names = list(specs)
    frames = []
    for fs in sets:
        f = fs.frame
        missing = [n for n in names if n not in f.columns]
        if missing:
            f = f.assign(**{m: 0.0 for m in missing})
        frames.append(f[[c for c in f.columns if c not in specs] + names])
    frame = pd.concat(frames, ignore_index=True)
    for s in specs.values():  # keep category dtype after concat
        if s.categorical and not isinstance(frame[s.name].dtype, pd.CategoricalDtype):
            cats = next(f[s.name].cat.categories for f in frames if isinstance(f[s.name].dtype, pd.CategoricalDtype))
            frame[s.name] = pd.Categorical(frame[s.name], categories=cats)
    return FeatureSet(frame, list(specs.values()))
