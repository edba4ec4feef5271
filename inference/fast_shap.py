"""Exact path-dependent TreeSHAP for XGBoost boosters, faster per row than ``pred_contribs``.

XGBoost's ``predict(pred_contribs=True)`` (and therefore ``shap.TreeExplainer(booster)``) runs
Lundberg's path-dependent TreeSHAP: for every row and every tree it walks all root-to-leaf paths
and extends/unwinds a path polynomial, O(T L D^2) per row. This module computes *the same values*
(not an approximation) with the "Fast TreeSHAP v2" idea (Yang 2021, arXiv:2109.09847): the
per-row work is moved into per-leaf tables computed once per model.

Why it is exact
---------------
For a leaf ``l`` with value ``v`` whose root path uses the distinct features ``k = 1..d``, let
``z_k`` be the product of cover ratios (child cover / parent cover) over every split on feature
``k`` along the path, and ``o_k`` = 1 if the row follows the path at *every* split on ``k``
(missing values follow the default branch, categorical splits use XGBoost's category sets),
else 0. Path-dependent TreeSHAP is the Shapley value of the game
``v(S) = sum_l v_l prod_{k in S} o_k prod_{k not in S} z_k``, so leaf ``l`` adds to feature ``j``

    phi_j += v (o_j - z_j) sum_{S subset of Q} w(|S|) prod_{k in D \\ S \\ {j}} z_k,
    Q = {k != j : o_k = 1},  w(s) = s! (d - 1 - s)! / d!

Because every ``o_k`` is 0 or 1 the right-hand side depends on the row only through the bit
pattern ``P = (o_1 .. o_d)``. The table ``T[l, P, j]`` holds it for all ``2^d`` patterns, so a
row costs one pass over the tree's internal nodes (to get each leaf's pattern) plus ``d`` table
reads per leaf: O(T L D) instead of O(T L D^2), with no floating-point path algebra per row.
The bias column is ``base_margin + sum_t E_t`` where ``E_t`` is the cover-weighted mean leaf
value of tree ``t`` (XGBoost's ``node_mean_values[0]``), so each row sums to the margin.

Memory is ``sum_l 2^d_l * d_l`` doubles per tree: about 0.2 MB for a depth-6 tree, 59 MB for 300
such trees, 4 MB per depth-8 tree. ``max_table_bytes`` guards against deep trees.

Wiring into ``ChurnModel`` (built once per loaded model, reused for every chunk)::

    from inference.fast_shap import FastTreeShap
    explainer = FastTreeShap(model.booster, model.features)
    contrib = explainer.shap_values(model.prepare(frame), iteration_range=model._range())
    # == model.booster.predict(model.dmatrix(frame), pred_contribs=True, iteration_range=model._range())
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass

import numba
import numpy as np
import pandas as pd
import xgboost as xgb
from numba import njit, prange

__all__ = ["FastTreeShap"]

# numba caches compiled kernels next to this file (or in NUMBA_CACHE_DIR, or a user cache dir).
_CACHE = os.environ.get("FAST_SHAP_NUMBA_CACHE", "1") != "0"

# objectives whose base_score is stored as a probability (margin = logit) or a mean (margin = log)
_LOGIT_OBJECTIVES = {"binary:logistic", "reg:logistic", "binary:logitraw"}
_LOG_OBJECTIVES = {"count:poisson", "reg:gamma", "reg:tweedie", "survival:cox", "survival:aft"}
_SUPPORTED_BOOSTERS = {"gbtree", "dart"}


# ------------------------------------------------------------------------------------------ kernels
@njit(cache=_CACHE)
def _fill_tables(l_d, l_z, l_v, l_toff, table):  # pragma: no cover - compiled
    """T[l, P, j] = v (o_j - z_j) prod_{k notin Q, k != j} z_k sum_{S subset Q} w(|S|) prod_{k in Q \\ S} z_k."""
    max_d = l_z.shape[1]
    w = np.empty(max_d + 1)
    c = np.empty(max_d + 1)
    for leaf in range(l_d.shape[0]):
        d = l_d[leaf]
        if d == 0:
            continue
        v = l_v[leaf]
        # Shapley weights w(s) = s! (d-1-s)! / d!, built by recurrence to avoid factorial overflow
        w[0] = 1.0 / d
        for s in range(d - 1):
            w[s + 1] = w[s] * (s + 1) / (d - 1 - s)
        off = l_toff[leaf]
        for pat in range(1 << d):
            for j in range(d):
                # coefficients of prod_{k in Q} (t + z_k): c[s] = sum_{|S|=s} prod_{k in Q \ S} z_k
                c[0] = 1.0
                q = 0
                pz = 1.0
                for k in range(d):
                    if k == j:
                        continue
                    zk = l_z[leaf, k]
                    if (pat >> k) & 1:
                        q += 1
                        c[q] = c[q - 1]
                        for s in range(q - 1, 0, -1):
                            c[s] = c[s - 1] + zk * c[s]
                        c[0] = zk * c[0]
                    else:
                        pz *= zk
                inner = 0.0
                for s in range(q + 1):
                    inner += w[s] * c[s]
                o_j = float((pat >> j) & 1)
                table[off + pat * d + j] = v * (o_j - l_z[leaf, j]) * pz * inner


@njit(parallel=True, cache=_CACHE)
def _shap_kernel(X, out, t_begin, t_end, node_ptr, n_feat, n_thr, n_defl, n_cat, n_slot, n_left, n_right,
                 cat_bits, leaf_ptr, l_node, l_d, l_full, l_feats, l_toff, table, block):  # pragma: no cover
    """Accumulate every tree's leaf-table contributions into ``out`` (rows x features, zero on entry).

    Rows are processed in blocks, tree-major inside a block, so one tree's table and the block's
    output rows stay in cache while the block is swept.
    """
    n = X.shape[0]
    n_blocks = (n + block - 1) // block
    max_nodes = 1
    for t in range(t_begin, t_end):
        max_nodes = max(max_nodes, node_ptr[t + 1] - node_ptr[t])
    cat_width = cat_bits.shape[1]
    for b in prange(n_blocks):
        fail = np.zeros(max_nodes, dtype=np.int64)  # per node: bits of path features the row does NOT follow
        r0 = b * block
        r1 = min(n, r0 + block)
        for t in range(t_begin, t_end):
            n0 = node_ptr[t]
            nn = node_ptr[t + 1] - n0
            lb = leaf_ptr[t]
            le = leaf_ptr[t + 1]
            for r in range(r0, r1):
                fail[0] = 0
                for k in range(nn):  # pre-order: a parent is visited before its children
                    g = n0 + k
                    f = n_feat[g]
                    if f < 0:
                        continue
                    x = X[r, f]
                    if math.isnan(x):
                        right = n_defl[g] == 0
                    elif n_cat[g] >= 0:
                        # XGBoost common::Decision: in the category set -> right; not in it or invalid -> left
                        right = False
                        if x >= 0.0:
                            code = int(x)
                            if code < cat_width:
                                right = cat_bits[n_cat[g], code] != 0
                    else:
                        right = not (x < n_thr[g])
                    bit = np.int64(1) << n_slot[g]
                    m = fail[k]
                    if right:
                        fail[n_left[g]] = m | bit
                        fail[n_right[g]] = m
                    else:
                        fail[n_left[g]] = m
                        fail[n_right[g]] = m | bit
                for lf in range(lb, le):
                    d = l_d[lf]
                    if d == 0:
                        continue
                    pat = l_full[lf] & ~fail[l_node[lf]]
                    base = l_toff[lf] + pat * d
                    for j in range(d):
                        out[r, l_feats[lf, j]] += table[base + j]


# ------------------------------------------------------------------------------------------ parsing
def _parse_base_score(raw: object) -> float:
    """XGBoost 3.x writes ``"[5E-1]"`` (a vector); older versions ``"5E-1"``."""
    if isinstance(raw, list | tuple):
        vals = [float(v) for v in raw]
    else:
        s = str(raw).strip().strip("[]")
        vals = [float(v) for v in s.split(",") if v.strip()]
    if len(vals) != 1:
        raise NotImplementedError(f"FastTreeShap supports single-output models; base_score={raw!r}")
    return vals[0]


def _base_margin(base_score: float, objective: str) -> float:
    if objective in _LOGIT_OBJECTIVES:
        p = min(max(base_score, 1e-16), 1 - 1e-16)
        return math.log(p / (1 - p))
    if objective in _LOG_OBJECTIVES:
        return math.log(max(base_score, 1e-16))
    return base_score


@dataclass
class _Leaf:
    node: int  # local (pre-order) node index
    feats: list[int]
    z: list[float]
    value: float


def _flatten_tree(tree: dict, weight: float, cat_rows: list[np.ndarray]) -> tuple[dict, list[_Leaf]]:
    """Re-index one JSON tree in pre-order from the root and collect each leaf's path summary."""
    left, right = tree["left_children"], tree["right_children"]
    split_idx, cond = tree["split_indices"], tree["split_conditions"]
    default_left, cover = tree["default_left"], tree["sum_hessian"]
    split_type = tree.get("split_type") or [0] * len(left)
    if int(tree["tree_param"].get("size_leaf_vector", "1") or 1) > 1:
        raise NotImplementedError("FastTreeShap does not support vector-leaf (multi-target) trees")
    cats: dict[int, list[int]] = {}
    for nid, beg, size in zip(tree.get("categories_nodes", []), tree.get("categories_segments", []),
                              tree.get("categories_sizes", []), strict=True):
        cats[int(nid)] = [int(c) for c in tree["categories"][int(beg):int(beg) + int(size)]]

    feat, thr, defl, catrow, slot, lch, rch = [], [], [], [], [], [], []
    leaves: list[_Leaf] = []
    # explicit stack: (original node, path features, path zero-fractions, where to write my index)
    stack: list[tuple[int, list[int], list[float], int, int]] = [(0, [], [], -1, 0)]
    while stack:
        nid, pf, pz, parent, side = stack.pop()
        me = len(feat)
        if parent >= 0:
            (lch if side == 0 else rch)[parent] = me
        if left[nid] == -1:
            feat.append(-1), thr.append(0.0), defl.append(0), catrow.append(-1), slot.append(0)
            lch.append(0), rch.append(0)
            leaves.append(_Leaf(me, pf, pz, float(cond[nid]) * weight))
            continue
        f = int(split_idx[nid])
        feat.append(f)
        thr.append(float(cond[nid]))
        defl.append(int(default_left[nid]))
        if int(split_type[nid]) == 1:
            catrow.append(len(cat_rows))
            cat_rows.append(np.asarray(cats.get(nid, []), dtype=np.int64))
        else:
            catrow.append(-1)
        s = pf.index(f) if f in pf else len(pf)
        slot.append(s)
        lch.append(-1), rch.append(-1)
        w = float(cover[nid])
        children = []
        for side_, child in ((0, int(left[nid])), (1, int(right[nid]))):
            ratio = float(cover[child]) / w if w > 0 else 0.0
            if s < len(pf):
                cf, cz = list(pf), list(pz)
                cz[s] *= ratio
            else:
                cf, cz = pf + [f], pz + [ratio]
            children.append((child, cf, cz, me, side_))
        stack.append(children[1])  # right pushed first so the left subtree is numbered first
        stack.append(children[0])
    nodes = {"feat": feat, "thr": thr, "defl": defl, "cat": catrow, "slot": slot, "left": lch, "right": rch}
    return nodes, leaves


# ------------------------------------------------------------------------------------------ public
class FastTreeShap:
    """Exact path-dependent TreeSHAP for an XGBoost booster; same numbers as ``pred_contribs=True``.

    Parameters
    ----------
    booster:
        A single-output ``gbtree`` (or ``dart``) booster, numeric and/or categorical splits.
    feature_names:
        The booster's input columns in order (``ChurnModel.features``). A DataFrame passed to
        :meth:`shap_values` is reordered to these; defaults to ``booster.feature_names``.
    n_threads:
        numba threads for :meth:`shap_values` (default: numba's default, i.e. all cores).
    max_table_bytes:
        refuse models whose leaf tables would exceed this (very deep trees); use XGBoost then.
    """

    def __init__(self, booster: xgb.Booster, feature_names: list[str] | None = None, n_threads: int | None = None,
                 max_table_bytes: int = 2 << 30) -> None:
        model = json.loads(booster.save_raw("json"))
        learner = model["learner"]
        gb = learner["gradient_booster"]
        name = gb.get("name", "gbtree")
        if name not in _SUPPORTED_BOOSTERS:
            raise NotImplementedError(f"FastTreeShap supports tree boosters, not {name!r}")
        gbtree = gb["gbtree"]["model"] if name == "dart" else gb["model"]
        weights = [float(w) for w in gb.get("weight_drop", [])] if name == "dart" else []
        lmp = learner["learner_model_param"]
        if int(lmp.get("num_class", "0") or 0) > 1 or int(lmp.get("num_target", "1") or 1) > 1:
            raise NotImplementedError("FastTreeShap supports single-output models (binary/regression)")
        self.objective = learner.get("objective", {}).get("name", "")
        self.base_score = _parse_base_score(lmp["base_score"])
        self.base_margin = _base_margin(self.base_score, self.objective)
        self.n_features = int(lmp["num_feature"])
        names = feature_names if feature_names is not None else booster.feature_names
        if names is not None and len(names) != self.n_features:
            raise ValueError(f"{len(names)} feature names for a booster with {self.n_features} features")
        self.feature_names = list(names) if names is not None else None
        self.n_threads = n_threads

        trees = gbtree["trees"]
        indptr = gbtree.get("iteration_indptr")
        if indptr is None:  # models saved before iteration_indptr existed: one tree per iteration per parallel tree
            per = int(gbtree["gbtree_model_param"].get("num_parallel_tree", "1") or 1)
            indptr = list(range(0, len(trees) + 1, per))
        self._iter_ptr = np.asarray(indptr, dtype=np.int64)
        self.n_trees = len(trees)

        cat_rows: list[np.ndarray] = []
        node_ptr, leaf_ptr = [0], [0]
        cols: dict[str, list] = {k: [] for k in ("feat", "thr", "defl", "cat", "slot", "left", "right")}
        all_leaves: list[_Leaf] = []
        expected = np.zeros(self.n_trees)
        for t, tree in enumerate(trees):
            nodes, leaves = _flatten_tree(tree, weights[t] if weights else 1.0, cat_rows)
            for k in cols:
                cols[k].extend(nodes[k])
            node_ptr.append(len(cols["feat"]))
            all_leaves.extend(leaves)
            leaf_ptr.append(len(all_leaves))
            expected[t] = sum(leaf.value * math.prod(leaf.z) for leaf in leaves)
        self.expected_values = expected  # per tree, cover-weighted mean leaf value (XGBoost node_mean_values[0])

        self._node_ptr = np.asarray(node_ptr, dtype=np.int64)
        self._n_feat = np.asarray(cols["feat"], dtype=np.int32)
        self._n_thr = np.asarray(cols["thr"], dtype=np.float32)
        self._n_defl = np.asarray(cols["defl"], dtype=np.uint8)
        self._n_cat = np.asarray(cols["cat"], dtype=np.int32)
        self._n_slot = np.asarray(cols["slot"], dtype=np.int64)
        self._n_left = np.asarray(cols["left"], dtype=np.int32)
        self._n_right = np.asarray(cols["right"], dtype=np.int32)
        width = 1 + max((int(r.max()) for r in cat_rows if len(r)), default=0)
        self._cat_bits = np.zeros((max(len(cat_rows), 1), width), dtype=np.uint8)
        for i, r in enumerate(cat_rows):
            self._cat_bits[i, r[r >= 0]] = 1

        max_d = max((len(leaf.feats) for leaf in all_leaves), default=0)
        if max_d > 62:
            raise NotImplementedError(f"a leaf path uses {max_d} distinct features; at most 62 are supported")
        n_leaves = len(all_leaves)
        self._leaf_ptr = np.asarray(leaf_ptr, dtype=np.int64)
        self._l_node = np.asarray([leaf.node for leaf in all_leaves], dtype=np.int32)
        self._l_d = np.asarray([len(leaf.feats) for leaf in all_leaves], dtype=np.int64)
        self._l_full = (np.int64(1) << self._l_d) - 1
        self._l_v = np.asarray([leaf.value for leaf in all_leaves], dtype=np.float64)
        self._l_feats = np.zeros((n_leaves, max(max_d, 1)), dtype=np.int32)
        l_z = np.zeros((n_leaves, max(max_d, 1)), dtype=np.float64)
        for i, leaf in enumerate(all_leaves):
            self._l_feats[i, : len(leaf.feats)] = leaf.feats
            l_z[i, : len(leaf.z)] = leaf.z
        sizes = (np.int64(1) << self._l_d) * self._l_d
        sizes[self._l_d == 0] = 0
        self._l_toff = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64) if n_leaves else sizes
        total = int(sizes.sum())
        if total * 8 > max_table_bytes:
            raise MemoryError(f"FastTreeShap tables would need {total * 8 / 2**30:.1f} GiB (trees too deep); "
                              "use XGBoost pred_contribs for this model")
        self._table = np.zeros(max(total, 1), dtype=np.float64)
        _fill_tables(self._l_d, l_z, self._l_v, self._l_toff, self._table)
        self._check_base_margin(booster)

    def _check_base_margin(self, booster: xgb.Booster) -> None:
        """Cross-check the parsed base margin against XGBoost on an all-missing row (objective-proof)."""
        row = np.full((1, self.n_features), np.nan, dtype=np.float32)
        try:
            dm = xgb.DMatrix(row, feature_names=booster.feature_names, feature_types=booster.feature_types,
                             enable_categorical=True)
            xgb_margin = float(booster.predict(dm, output_margin=True)[0])
        except Exception:  # pragma: no cover - keep the parsed value if XGBoost refuses the probe
            return
        leaf_sum = 0.0
        for t in range(self.n_trees):  # follow default branches
            n0, k = int(self._node_ptr[t]), 0
            while self._n_feat[n0 + k] >= 0:
                k = int(self._n_left[n0 + k] if self._n_defl[n0 + k] else self._n_right[n0 + k])
            lf = int(self._leaf_ptr[t]) + int(np.searchsorted(self._l_node[self._leaf_ptr[t]:self._leaf_ptr[t + 1]], k))
            leaf_sum += float(self._l_v[lf])
        empirical = xgb_margin - leaf_sum
        if abs(empirical - self.base_margin) > 1e-4 * (1.0 + abs(empirical)):
            self.base_margin = empirical

    # -------------------------------------------------------------------------------- helpers
    @property
    def table_bytes(self) -> int:
        return int(self._table.nbytes)

    def _tree_range(self, iteration_range: tuple[int, int] | None) -> tuple[int, int]:
        n_iter = len(self._iter_ptr) - 1
        begin, end = iteration_range if iteration_range is not None else (0, 0)
        if end == 0:
            end = n_iter
        if not 0 <= begin <= end <= n_iter:
            raise ValueError(f"iteration_range {iteration_range} outside a model with {n_iter} iterations")
        return int(self._iter_ptr[begin]), int(self._iter_ptr[end])

    def to_matrix(self, X: np.ndarray | pd.DataFrame) -> np.ndarray:
        """Rows as the C-contiguous float32 matrix XGBoost sees (categoricals as codes, missing as NaN)."""
        if isinstance(X, pd.DataFrame):
            if self.feature_names is not None:
                missing = [f for f in self.feature_names if f not in X.columns]
                if missing:
                    raise ValueError(f"{len(missing)} model feature(s) missing: {missing[:10]}")
                X = X[self.feature_names]
            elif X.shape[1] != self.n_features:
                raise ValueError(f"{X.shape[1]} columns for a booster with {self.n_features} features")
            out = np.empty((len(X), X.shape[1]), dtype=np.float32)
            for i, col in enumerate(X.columns):
                s = X[col]
                if isinstance(s.dtype, pd.CategoricalDtype):
                    codes = s.cat.codes.to_numpy()
                    out[:, i] = np.where(codes < 0, np.nan, codes)
                else:
                    out[:, i] = s.to_numpy(dtype=np.float32, na_value=np.nan)
            return out
        arr = np.ascontiguousarray(X, dtype=np.float32)
        if arr.ndim != 2 or arr.shape[1] != self.n_features:
            raise ValueError(f"expected a 2-D array with {self.n_features} columns, got shape {arr.shape}")
        return arr

    # -------------------------------------------------------------------------------- API
    def shap_values(self, X: np.ndarray | pd.DataFrame, iteration_range: tuple[int, int] | None = None,
                    block: int = 256) -> np.ndarray:
        """SHAP values in margin (log-odds) units: (n_rows, n_features + 1), last column the bias.

        ``X``: rows prepared as the booster expects (``ChurnModel.prepare`` output: float32
        numerics, pandas categoricals whose codes are XGBoost's categories), or the equivalent
        numeric array. ``iteration_range`` as in ``Booster.predict`` ((0, 0) or None: all trees).
        """
        Xm = self.to_matrix(X)
        t0, t1 = self._tree_range(iteration_range)
        out = np.zeros((Xm.shape[0], self.n_features + 1), dtype=np.float64)
        if Xm.shape[0]:
            prev = numba.get_num_threads()
            if self.n_threads:
                numba.set_num_threads(min(self.n_threads, numba.config.NUMBA_NUM_THREADS))
            try:
                _shap_kernel(Xm, out, t0, t1, self._node_ptr, self._n_feat, self._n_thr, self._n_defl, self._n_cat,
                             self._n_slot, self._n_left, self._n_right, self._cat_bits, self._leaf_ptr, self._l_node,
                             self._l_d, self._l_full, self._l_feats, self._l_toff, self._table, int(block))
            finally:
                numba.set_num_threads(prev)
        out[:, -1] = self.base_margin + float(self.expected_values[t0:t1].sum())
        return out

    def expected_value(self, iteration_range: tuple[int, int] | None = None) -> float:
        """The bias column: base margin plus each tree's mean leaf value."""
        t0, t1 = self._tree_range(iteration_range)
        return self.base_margin + float(self.expected_values[t0:t1].sum())
