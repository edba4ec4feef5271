"""One counterfactual per alert: the smallest change of actionable features that brings the risk below the alert line.

The search runs on the tree ensemble itself. A tree only sees a feature through its split thresholds, so
the values worth trying for a feature are the ones just on either side of each threshold (on the
feature's display grid: whole numbers for counts and days, 1% for changes and shares; at most 24
thresholds per feature, evenly spaced by rank). For each alert:

1. every single move (one actionable feature set to one candidate value) is scored;
2. if none brings the calibrated probability below the threshold, a beam search adds one move at a
   time (on a feature not moved yet, from the 24 most helpful single moves) to the 10 best combinations,
   up to 6 features;
3. among the moves that work, the smallest one wins: total change in units of each feature's spread
   (``scales``; the span of its thresholds when none is given).

All candidate rows of a batch of alerts are scored in one ``inplace_predict`` call per step. The caller
re-scores the chosen rows with the full model (``ChurnModel.predict_proba``) to confirm the probability
it states. Only features named in ``scoring.actionable_features`` (names or fnmatch patterns) ever move, and
only in the direction the catalogue says lowers risk (``risk_direction``: more logins, fewer open tickets).
"""

from __future__ import annotations

import fnmatch
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb

from features.catalogue import FeatureSpec, format_value

log = logging.getLogger(__name__)

_TOP_SINGLES = 24  # combinations are built from the most helpful single moves (lowest probability) ...
_MAX_PER_FEATURE = 3  # ... at most this many per feature
_BEAM = 10  # combinations kept from one size to the next
_MAX_MOVES = 6  # at most this many features change together
_MAX_THRESHOLDS = 24  # per feature; more are thinned to evenly spaced ranks (a deep model can have hundreds)


@dataclass(frozen=True)
class Move:
    """One feature set to a new value."""

    feature: str
    old: float
    new: float


@dataclass
class Counterfactual:
    """The chosen change for one alert and the probability the booster gives after it."""

    moves: list[Move] = field(default_factory=list)
    probability: float = float("nan")
    valid: bool = False  # the probability after the change is below the threshold


def match_features(features: Sequence[str], patterns: Sequence[str]) -> list[str]:
    """The model features named by ``patterns`` (exact names or fnmatch patterns), in model order."""
    return [f for f in features if any(fnmatch.fnmatchcase(f, p) for p in patterns)]


def split_thresholds(booster: xgb.Booster, features: Sequence[str]) -> dict[str, np.ndarray]:
    """Sorted unique numeric split thresholds per feature, read from the booster's JSON dump."""
    index = {f: i for i, f in enumerate(features)}
    found: dict[str, set[float]] = {f: set() for f in features}

    def walk(node: dict) -> None:
        if "children" not in node:
            return
        name = node.get("split")
        name = features[int(name[1:])] if name not in index and name and name[1:].isdigit() else name
        cond = node.get("split_condition")
        if name in index and isinstance(cond, (int, float)):  # categorical splits carry a list: never moved
            found[name].add(float(cond))
        for child in node["children"]:
            walk(child)

    for tree in booster.get_dump(dump_format="json"):
        walk(json.loads(tree))
    return {f: np.array(sorted(v), dtype=np.float64) for f, v in found.items() if v}


def candidate_values(thresholds: np.ndarray, step: float, low: float, high: float = np.inf) -> np.ndarray:
    """Values on the grid of ``step`` just on each side of each threshold (a tree goes left when x < t)."""
    if step > 0:
        right = np.ceil(np.round(thresholds / step, 9)) * step
        vals = np.concatenate([right, right - step])
        vals = np.round(vals / step) * step
    else:
        t32 = thresholds.astype(np.float32)
        vals = np.concatenate([t32, np.nextafter(t32, np.float32(-np.inf))]).astype(np.float64)
    vals = vals[(vals >= low) & (vals <= high)]
    return np.unique(vals)


def _top_moves(singles: list) -> list[tuple[int, float]]:
    """The ``_TOP_SINGLES`` single moves with the lowest probability, at most ``_MAX_PER_FEATURE`` per feature."""
    top: list[tuple[int, float]] = []
    per: dict[int, int] = {}
    for moves, _ in sorted(singles, key=lambda s: s[1]):
        k = moves[0][0]
        if per.get(k, 0) < _MAX_PER_FEATURE:
            top.append(moves[0])
            per[k] = per.get(k, 0) + 1
        if len(top) >= _TOP_SINGLES:
            break
    return top


def _thin(thresholds: np.ndarray) -> np.ndarray:
    """At most ``_MAX_THRESHOLDS`` thresholds, evenly spaced by rank (the smallest and largest kept)."""
    if len(thresholds) <= _MAX_THRESHOLDS:
        return thresholds
    return thresholds[np.unique(np.linspace(0, len(thresholds) - 1, _MAX_THRESHOLDS).round().astype(int))]


def _towards(values: np.ndarray, current: float, way: int) -> np.ndarray:
    """Candidate values other than ``current`` in the allowed direction (a missing value may go anywhere)."""
    if np.isnan(current) or way == 0:
        return values[values != current]
    return values[values > current] if way > 0 else values[values < current]


class CounterfactualSearch:
    """Search single, paired and tripled moves of actionable features on a booster's own thresholds."""

    def __init__(self, booster: xgb.Booster, features: Sequence[str], actionable: Sequence[str],
                 threshold: float, calibrate: Callable[[np.ndarray], np.ndarray] | None = None,
                 iteration_range: tuple[int, int] = (0, 0), steps: dict[str, float] | None = None,
                 lows: dict[str, float] | None = None, scales: dict[str, float] | None = None,
                 directions: dict[str, int] | None = None, n_threads: int = 1) -> None:
        # a private copy on few threads: many small predictions, where thread start-up costs more than it saves
        self.booster, self.features = booster.copy(), list(features)
        self.booster.set_param({"nthread": n_threads})
        self.threshold, self.iteration_range = float(threshold), iteration_range
        self.calibrate = calibrate or (lambda p: p)
        thresholds = split_thresholds(booster, self.features)
        steps, lows, scales, directions = steps or {}, lows or {}, scales or {}, directions or {}
        self.columns: list[int] = []
        self.ways: list[int] = []  # +1: only raise the feature, -1: only lower it, 0: either
        self.values: list[np.ndarray] = []
        self.scales: list[float] = []
        for f in actionable:
            if f not in thresholds:
                continue  # the model never splits on it: no change of it can move the score
            vals = candidate_values(_thin(thresholds[f]), steps.get(f, 0.0), lows.get(f, 0.0))
            if len(vals):
                span = float(thresholds[f][-1] - thresholds[f][0])
                self.columns.append(self.features.index(f))
                self.values.append(vals)
                self.scales.append(scales.get(f) or span or 1.0)
                self.ways.append(-int(np.sign(directions.get(f, 0))))
        log.info("counterfactual search over %d actionable features (%d candidate values)", len(self.columns),
                 sum(len(v) for v in self.values))

    # ------------------------------------------------------------------ scoring
    def _score(self, rows: np.ndarray) -> np.ndarray:
        raw = self.booster.inplace_predict(rows, iteration_range=self.iteration_range, validate_features=False)
        return np.asarray(self.calibrate(np.asarray(raw, dtype=np.float64)), dtype=np.float64)

    def search(self, X: np.ndarray) -> list[Counterfactual]:
        """One counterfactual per row of ``X`` (model feature order, float32; categoricals as codes)."""
        X = np.asarray(X, dtype=np.float32)
        n = len(X)
        if n == 0 or not self.columns:
            return [Counterfactual() for _ in range(n)]
        xa = X[:, self.columns].astype(np.float64)
        singles = self._singles(X)
        best = [self._choose(xa[i], singles[i]) for i in range(n)]
        beams = {i: singles[i] for i in range(n)}
        for _ in range(1, _MAX_MOVES):
            todo = [i for i in range(n) if not best[i].valid]
            if not todo:
                break
            scored = self._score_combos(X, {i: self._extend(singles[i], beams[i]) for i in todo})
            for i in todo:
                beams[i] = scored[i]
                choice = self._choose(xa[i], scored[i])
                if choice.valid or choice.probability < best[i].probability:
                    best[i] = choice
        return best

    def _extend(self, singles: list, beam: list) -> list[list[tuple[int, float]]]:
        """The ``_BEAM`` lowest-probability combinations so far, each extended by one of the most helpful
        single moves on a feature it does not move yet (each combination once)."""
        top = _top_moves(singles)
        seen: set[tuple] = set()
        out = []
        for moves, _ in sorted(beam, key=lambda s: s[1])[:_BEAM]:
            used = {k for k, _ in moves}
            for m in top:
                if m[0] in used:
                    continue
                combo = sorted(moves + [m])
                key = tuple(combo)
                if key not in seen:
                    seen.add(key)
                    out.append(combo)
        return out

    def _singles(self, X: np.ndarray) -> list[list[tuple[list[tuple[int, float]], float]]]:
        """Every single move of every row, scored in one call: per row a list of (moves, probability)."""
        moves_per_row: list[list[tuple[int, float]]] = []
        blocks = []
        for i in range(len(X)):
            moves = [(k, float(v)) for k, vals in enumerate(self.values)
                     for v in _towards(vals, X[i, self.columns[k]], self.ways[k])]
            moves_per_row.append(moves)
            block = np.repeat(X[i:i + 1], len(moves), axis=0)
            if moves:
                ks = np.array([self.columns[k] for k, _ in moves])
                block[np.arange(len(moves)), ks] = np.array([v for _, v in moves], dtype=np.float32)
            blocks.append(block)
        p = self._score(np.concatenate(blocks)) if sum(len(m) for m in moves_per_row) else np.zeros(0)
        out, at = [], 0
        for moves in moves_per_row:
            out.append([([m], float(q)) for m, q in zip(moves, p[at:at + len(moves)], strict=True)])
            at += len(moves)
        return out

    def _score_combos(self, X: np.ndarray, combos: dict[int, list]) -> dict[int, list]:
        rows, owners = [], []
        for i, cs in combos.items():
            for c in cs:
                r = X[i].copy()
                for k, v in c:
                    r[self.columns[k]] = v
                rows.append(r)
                owners.append((i, c))
        out: dict[int, list] = {i: [] for i in combos}
        if rows:
            p = self._score(np.stack(rows))
            for (i, c), q in zip(owners, p, strict=True):
                out[i].append((c, float(q)))
        return out

    def _choose(self, x: np.ndarray, scored: list) -> Counterfactual:
        """Smallest valid change (ties: lower probability), else the change with the lowest probability."""
        if not scored:
            return Counterfactual()
        cost = [sum(abs(v - x[k]) / self.scales[k] for k, v in moves) for moves, _ in scored]
        valid = [j for j, (_, q) in enumerate(scored) if q < self.threshold]
        pick = (min(valid, key=lambda j: (cost[j], scored[j][1])) if valid
                else min(range(len(scored)), key=lambda j: (scored[j][1], cost[j])))
        moves, q = scored[pick]
        return Counterfactual([Move(self.features[self.columns[k]], float(x[k]), float(v))
                               for k, v in moves], q, bool(valid))


# ---------------------------------------------------------------------------------------------- alert columns
# units whose values are shown as whole numbers (counterfactual values are searched on that grid) or as percents
_WHOLE_UNITS = ("count", "days", "minutes", "hours")
_PERCENT_UNITS = ("rate_change", "share", "ratio", "score")


def feature_matrix(prepared: pd.DataFrame) -> np.ndarray:
    """A prepared model input (``ChurnModel.prepare``) as float32, categoricals as their codes (missing: NaN)."""
    cols = []
    for c in prepared.columns:
        s = prepared[c]
        if isinstance(s.dtype, pd.CategoricalDtype):
            codes = s.cat.codes.to_numpy().astype(np.float32)
            codes[codes < 0] = np.nan
            cols.append(codes)
        else:
            cols.append(s.to_numpy(dtype=np.float32))
    return np.column_stack(cols) if cols else np.zeros((len(prepared), 0), dtype=np.float32)


def search_for_model(model: Any, specs: dict[str, FeatureSpec], patterns: Sequence[str], threshold: float,
                     population: pd.DataFrame | None = None,
                     scales: dict[str, float] | None = None) -> CounterfactualSearch:
    """A search on ``model`` (a ``ChurnModel``) over its features matched by ``patterns``; grids from the units,
    spreads (cost scale) from ``population`` when given, or ``scales`` (the same sample standard deviations,
    computed elsewhere, e.g. by Spark)."""
    actionable = match_features(model.features, patterns)
    steps = {f: 1.0 if specs[f].unit in _WHOLE_UNITS else 0.01 for f in actionable}
    lows = {f: -1.0 if specs[f].unit == "rate_change" else 0.0 for f in actionable}
    directions = {f: specs[f].risk_direction for f in actionable}
    scales = dict(scales or {})
    if population is not None and len(population):
        for f in actionable:
            sd = float(pd.to_numeric(population[f], errors="coerce").std())
            if np.isfinite(sd) and sd > 0:
                scales[f] = sd
    return CounterfactualSearch(model.booster, model.features, actionable, threshold, model.calibrator.transform,
                                model._range(), steps, lows, scales, directions)


def describe(cf: Counterfactual, p_before: float, p_after: float, threshold: float,
             specs: dict[str, FeatureSpec], currency: str = "") -> str:
    """The sentence: "If 'login' events in the last 30 days rose from 1 to 4, the risk would fall from 46.8% to 11.2%"."""
    if not cf.moves:
        return ""
    parts = []
    for m in cf.moves:
        spec = specs[m.feature]
        what = spec.description[:1].lower() + spec.description[1:]
        verb = "rose" if m.new > m.old else "fell"
        parts.append(f"{what} {verb} from {format_value(m.old, spec.unit, currency)} to "
                     f"{format_value(m.new, spec.unit, currency)}")
    change = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    text = f"If {change}, the risk would fall from {p_before * 100:.1f}% to {p_after * 100:.1f}%"
    if p_after >= threshold:
        text = (f"No change of up to {_MAX_MOVES} actionable features brings the risk below {threshold * 100:.1f}%; "
                f"the largest fall found: {text[:1].lower()}{text[1:]}")
    return text


def counterfactual_columns(model: Any, rows: pd.DataFrame, p: np.ndarray, search: CounterfactualSearch,
                           specs: dict[str, FeatureSpec], currency: str = "") -> pd.DataFrame:
    """Columns counterfactual (sentence), counterfactual_changes ([{feature, from, to}]),
    counterfactual_probability and counterfactual_valid for the alert ``rows`` (raw feature rows).

    The stated probability is the full model's (``predict_proba``) on the changed rows, not the search's own.
    """
    found = search.search(feature_matrix(model.prepare(rows)))
    changed = rows.copy()
    for pos, cf in enumerate(found):
        # "from" as the table holds it, not its float32 copy (7.3, not 7.300000190734863)
        cf.moves = [Move(m.feature, float(rows[m.feature].iloc[pos]), m.new) for m in cf.moves]
        for m in cf.moves:
            changed.iloc[pos, changed.columns.get_loc(m.feature)] = m.new
    after = model.predict_proba(changed) if len(changed) else np.zeros(0)
    after = np.where([bool(cf.moves) for cf in found], after, np.nan)
    valid = after < search.threshold
    return pd.DataFrame({
        "counterfactual": [describe(cf, float(p[i]), float(after[i]), search.threshold, specs, currency)
                           for i, cf in enumerate(found)],
        "counterfactual_changes": [[{"feature": m.feature, "from": m.old, "to": m.new} for m in cf.moves]
                                   for cf in found],
        "counterfactual_probability": after,
        "counterfactual_valid": valid,
    }, index=rows.index)
