"""Exact path-dependent TreeSHAP for XGBoost boosters, many times faster per row than ``pred_contribs``.

XGBoost's ``predict(pred_contribs=True)`` (and therefore ``shap.TreeExplainer(booster)``) runs
Lundberg's path-dependent TreeSHAP: for every row and every tree it walks all root-to-leaf paths
and extends/unwinds a path polynomial, O(T L D^2) per row. This module computes *the same values*
(not an approximation) with the idea of "Fast TreeSHAP v2" (Yang 2021, arXiv:2109.09847): move the
path algebra into tables computed once per model, so that a row only looks numbers up.

Why it is exact
---------------
For a leaf ``l`` with value ``v`` whose root path uses the distinct features ``k = 1..d``, let
``z_k`` be the product of cover ratios (child cover / parent cover) over every split on ``k``
along the path, and ``o_k`` = 1 if the row follows the path at *every* split on ``k`` (missing
values take the default branch; categorical splits use XGBoost's category sets), else 0.
Path-dependent TreeSHAP is the Shapley value of the game
``v(S) = sum_l v_l prod_{k in S} o_k prod_{k not in S} z_k``; leaf ``l`` adds to feature ``j``

    phi_j += v (o_j - z_j) sum_{S subset of Q} w(|S|) prod_{k in D \\ S \\ {j}} z_k,
    Q = {k != j : o_k = 1},  w(s) = s! (d - 1 - s)! / d!

Because each ``o_k`` is 0 or 1, this depends on the row only through the bit pattern
``P = (o_1 .. o_d)``: Fast TreeSHAP v2 tabulates it for all ``2^d`` patterns of every leaf
(``O(T L D)`` per row instead of ``O(T L D^2)``).

This implementation goes one step further and tabulates small *subtrees* ("units") instead of
single leaves: a unit rooted at node ``n`` is indexed by the pattern of the ``d_n`` distinct
features above ``n`` plus the left/right decision of each of its ``m`` internal nodes, and stores
the summed contributions of all its leaves (``2^(d_n + m)`` entries, ``d_n + m <= unit_bits``).
For depth-6 trees the default (``unit_bits=7``) merges the 4 leaves below each depth-4 node: the
table is *smaller* than the per-leaf one and a row does ~3x fewer lookups. Per row and tree the
work is one vectorised pass over the internal nodes (row-blocked, column-major) plus one table
gather per unit and output feature; no floating-point path algebra happens per row, and the only
arithmetic difference from XGBoost is float32 (XGBoost) vs float64 (here) rounding.

The bias column is ``base_margin + sum_t E_t`` where ``E_t`` is tree ``t``'s cover-weighted mean
leaf value (XGBoost's ``node_mean_values[0]``), so each row sums to the margin.

Wiring into ``ChurnModel`` (build once per loaded model, reuse for every chunk)::

    from model.fast_shap import FastTreeShap
    explainer = FastTreeShap(model.booster, model.features, n_threads=model.meta.get("n_threads"))
    contrib = explainer.shap_values(model.prepare(frame), iteration_range=model._range())
    # same array (within float32 rounding) as
    # model.booster.predict(model.dmatrix(frame), pred_contribs=True, iteration_range=model._range())
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field

import numba
import numpy as np
import pandas as pd
import xgboost as xgb
from numba import njit, prange

__all__ = ["FastTreeShap"]

# numba caches compiled kernels next to this file (or NUMBA_CACHE_DIR / a user cache dir);
# FAST_SHAP_NUMBA_CACHE=0 turns caching off (read-only installs).
_CACHE = os.environ.get("FAST_SHAP_NUMBA_CACHE", "1") != "0"

# objectives whose base_score is stored as a probability (margin = logit) or a mean (margin = log);
# the parsed value is cross-checked against XGBoost itself in FastTreeShap._check_base_margin.
_LOGIT_OBJECTIVES = {"binary:logistic", "reg:logistic", "binary:logitraw", "binary:hinge"}
_LOG_OBJECTIVES = {"count:poisson", "reg:gamma", "reg:tweedie", "survival:cox", "survival:aft"}
_MAX_BITS = 30  # masks and unit indices are int32


# ------------------------------------------------------------------------------------------ kernels
@njit(cache=_CACHE)
def _leaf_table(d, z, v, out):  # pragma: no cover - compiled
    """out[P * d + j] = v (o_j - z_j) prod_{k notin P, k != j} z_k sum_{S subset Q} w(|S|) prod_{k in Q \\ S} z_k.

    Q = P minus j. For each pattern P the polynomial prod_{k in P} (t + z_k) (coefficient of t^s:
    subsets S of size s, weighted by the z of the members left out) is built once; for j in P its
    factor is divided out again (the "unwind" of TreeSHAP), O(d^2) per pattern.
    """
    w = np.empty(d + 1)
    c = np.empty(d + 1)
    cu = np.empty(d + 1)
    # Shapley weights w(s) = s! (d-1-s)! / d!, by recurrence (no factorial overflow)
    w[0] = 1.0 / d
    for s in range(d - 1):
        w[s + 1] = w[s] * (s + 1) / (d - 1 - s)
    for pat in range(1 << d):
        c[0] = 1.0
        q = 0
        for k in range(d):
            if (pat >> k) & 1:
                zk = z[k]
                q += 1
                c[q] = c[q - 1]
                for s in range(q - 1, 0, -1):
                    c[s] = c[s - 1] + zk * c[s]
                c[0] = zk * c[0]
        inner_full = 0.0
        for s in range(q + 1):
            inner_full += w[s] * c[s]
        for j in range(d):
            zj = z[j]
            pz = 1.0  # prod of z over features outside P (and not j)
            for k in range(d):
                if k != j and not (pat >> k) & 1:
                    pz *= z[k]
            if (pat >> j) & 1:
                # divide prod (t + z_k) by (t + z_j), top-down (stable for 0 <= z <= 1)
                cu[q - 1] = c[q]
                for s in range(q - 1, 0, -1):
                    cu[s - 1] = c[s] - zj * cu[s]
                inner = 0.0
                for s in range(q):
                    inner += w[s] * cu[s]
                out[pat * d + j] = v * (1.0 - zj) * pz * inner
            else:
                out[pat * d + j] = -v * zj * pz * inner_full


@njit(cache=_CACHE)
def _fill_unit_tables(u_bits, u_dp, u_nout, u_off, um_ptr, um_leaf, um_map, mp_ptr, mp_rel, mp_slot, mp_dir,
                      l_d, l_z, l_v, table):  # pragma: no cover - compiled
    """For every (pattern above the unit, decisions inside it), sum the member leaves' table rows."""
    max_d = l_z.shape[1]
    scratch = np.empty((np.int64(1) << max_d) * max_d)
    for u in range(u_bits.shape[0]):
        nout = u_nout[u]
        if nout == 0:
            continue
        dp = u_dp[u]
        low = (np.int64(1) << dp) - 1
        for m in range(um_ptr[u], um_ptr[u + 1]):
            leaf = um_leaf[m]
            d = l_d[leaf]
            if d == 0:
                continue
            _leaf_table(d, l_z[leaf], l_v[leaf], scratch)
            new_bits = ((np.int64(1) << d) - 1) & ~low  # slots first used inside the unit start "followed"
            for idx in range(np.int64(1) << u_bits[u]):
                pat = (idx & low) | new_bits
                dec = idx >> dp
                for k in range(mp_ptr[m], mp_ptr[m + 1]):
                    if ((dec >> mp_rel[k]) & 1) != mp_dir[k]:
                        pat &= ~(np.int64(1) << mp_slot[k])
                row = u_off[u] + idx * nout
                base = pat * d
                for j in range(d):
                    table[row + um_map[m, j]] += scratch[base + j]


@njit(inline="always", cache=_CACHE)
def _decisions(xs, nb, thr, defl, cat, cat_bits, dec):  # pragma: no cover - compiled
    """dec[r] = 1 if row r goes right at this node (XGBoost GetNextNode semantics), 0 if left."""
    if cat < 0:
        nd = np.int32(1) - np.int32(defl)
        for r in range(nb):
            x = xs[r]
            dec[r] = np.int32(x >= thr) | (np.int32(x != x) & nd)
    else:
        dr = np.int32(1) - np.int32(defl)
        cat_width = cat_bits.shape[1]
        for r in range(nb):
            x = xs[r]
            if x != x:
                dec[r] = dr
            elif x >= 0.0 and x < cat_width:  # in the category set -> right; else (unseen, invalid) left
                dec[r] = np.int32(cat_bits[cat, int(x)])
            else:
                dec[r] = 0


@njit(inline="always", cache=_CACHE)
def _propagate_fail(fk, fl, fr, bit, dec, nb):  # pragma: no cover - compiled
    """Above the units: each child's "not followed" mask is the parent's plus this split's bit if not taken."""
    for r in range(nb):
        m = fk[r]
        dr_ = dec[r]
        fl[r] = m | (bit * dr_)
        fr[r] = m | (bit * (np.int32(1) - dr_))


@njit(inline="always", cache=_CACHE)
def _gather_unit(acc, table, idx, full, off, fr, cu, nout, feats, nb):  # pragma: no cover - compiled
    """Add one unit's table row (index: followed bits above it | decisions inside it) to each output feature."""
    for r in range(nb):
        idx[r] = off + np.int64((full & ~fr[r]) | cu[r]) * nout
    for j in range(nout):
        a = acc[feats[j]]
        for r in range(nb):
            a[r] += table[idx[r] + j]


@njit(inline="always", cache=_CACHE)
def _sweep_tree(t, xt, nb, acc, fail, code, dec, idx, node_ptr, n_feat, n_thr, n_defl, n_cat, n_slot, n_fs, n_lfs,
                n_rfs, n_unit, n_pos, cat_bits, unit_ptr, u_rootfs, u_full, u_nout, u_off, u_feats,
                table):  # pragma: no cover - compiled
    """One tree over one block of rows: decisions node by node (pre-order), then one table gather per unit."""
    n0 = node_ptr[t]
    u0 = unit_ptr[t]
    nu = unit_ptr[t + 1] - u0
    for u in range(nu):
        cu = code[u]
        for r in range(nb):
            cu[r] = 0
    for k in range(node_ptr[t + 1] - n0):  # pre-order: a parent is visited before its children
        g = n0 + k
        f = n_feat[g]
        if f < 0:
            continue
        _decisions(xt[f], nb, n_thr[g], n_defl[g], n_cat[g], cat_bits, dec)
        ug = n_unit[g]
        if ug < 0:  # above the units: propagate the "not followed" masks to both children
            _propagate_fail(fail[n_fs[g]], fail[n_lfs[g]], fail[n_rfs[g]], np.int32(1) << n_slot[g], dec, nb)
        else:  # inside a unit: record the decision bit
            cu = code[ug]
            pos = n_pos[g]
            for r in range(nb):
                cu[r] |= dec[r] << pos
    for u in range(nu):
        gu = u0 + u
        nout = u_nout[gu]
        if nout != 0:
            _gather_unit(acc, table, idx, np.int32(u_full[gu]), u_off[gu], fail[u_rootfs[gu]], code[u], nout,
                         u_feats[gu], nb)


@njit(parallel=True, cache=_CACHE)
def _shap_kernel(X, out, t_begin, t_end, node_ptr, n_feat, n_thr, n_defl, n_cat, n_slot, n_fs, n_lfs, n_rfs,
                 n_unit, n_pos, cat_bits, unit_ptr, u_rootfs, u_full, u_nout, u_off, u_feats, table,
                 max_fail, max_units, block):  # pragma: no cover - compiled
    """Add every tree's unit-table contributions to ``out[:, :F]`` (rows x F+1, zero on entry).

    Rows are processed in blocks held column-major (features x rows) so the per-node and
    per-unit loops run over contiguous rows; inside a block the loop is tree-major so one tree's
    tables stay in cache while the block is swept.
    """
    n, n_cols = X.shape
    n_blocks = (n + block - 1) // block
    n_out = out.shape[1] - 1
    for b in prange(n_blocks):
        r0 = b * block
        r1 = min(n, r0 + block)
        nb = r1 - r0
        xt = np.empty((n_cols, nb), dtype=np.float32)
        for r in range(nb):
            for f in range(n_cols):
                xt[f, r] = X[r0 + r, f]
        acc = np.zeros((n_out, nb), dtype=np.float64)
        # per node above the units and per unit root: bits of path features the row does NOT follow
        fail = np.zeros((max_fail, nb), dtype=np.int32)
        code = np.zeros((max_units, nb), dtype=np.int32)  # per unit: index bits (decisions inside the unit)
        dec = np.empty(nb, dtype=np.int32)
        idx = np.empty(nb, dtype=np.int64)
        for t in range(t_begin, t_end):
            _sweep_tree(t, xt, nb, acc, fail, code, dec, idx, node_ptr, n_feat, n_thr, n_defl, n_cat, n_slot, n_fs,
                        n_lfs, n_rfs, n_unit, n_pos, cat_bits, unit_ptr, u_rootfs, u_full, u_nout, u_off, u_feats,
                        table)
        for r in range(nb):
            for f in range(n_out):
                out[r0 + r, f] += acc[f, r]


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
class _Tree:
    """One tree re-indexed in pre-order, with its leaves' path summaries and its units."""

    feat: list[int] = field(default_factory=list)
    thr: list[float] = field(default_factory=list)
    defl: list[int] = field(default_factory=list)
    cat: list[int] = field(default_factory=list)
    slot: list[int] = field(default_factory=list)
    left: list[int] = field(default_factory=list)
    right: list[int] = field(default_factory=list)
    path: list[list[int]] = field(default_factory=list)  # distinct features above each node (slot order)
    leaf_of: dict[int, int] = field(default_factory=dict)  # node -> index in leaves
    leaves: list[tuple[int, list[int], list[float], float]] = field(default_factory=list)  # node, feats, z, value
    depth: int = 0


def _flatten_tree(tree: dict, weight: float, cat_rows: list[np.ndarray]) -> _Tree:
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

    out = _Tree()
    # explicit stack: (original node, path features, path zero fractions, parent's new index, side, depth)
    stack: list[tuple[int, list[int], list[float], int, int, int]] = [(0, [], [], -1, 0, 0)]
    while stack:
        nid, pf, pz, parent, side, depth = stack.pop()
        out.depth = max(out.depth, depth)
        me = len(out.feat)
        if parent >= 0:
            (out.left if side == 0 else out.right)[parent] = me
        out.path.append(pf)
        if left[nid] == -1:
            out.feat.append(-1), out.thr.append(0.0), out.defl.append(0), out.cat.append(-1), out.slot.append(0)
            out.left.append(-1), out.right.append(-1)
            out.leaf_of[me] = len(out.leaves)
            out.leaves.append((me, pf, pz, float(cond[nid]) * weight))
            continue
        f = int(split_idx[nid])
        out.feat.append(f)
        out.thr.append(float(cond[nid]))
        out.defl.append(int(default_left[nid]))
        if int(split_type[nid]) == 1:
            out.cat.append(len(cat_rows))
            cat_rows.append(np.asarray(cats.get(nid, []), dtype=np.int64))
        else:
            out.cat.append(-1)
        s = pf.index(f) if f in pf else len(pf)
        out.slot.append(s)
        out.left.append(-1), out.right.append(-1)
        w = float(cover[nid])
        children = []
        for side_, child in ((0, int(left[nid])), (1, int(right[nid]))):
            ratio = float(cover[child]) / w if w > 0 else 0.0
            if s < len(pf):
                cf, cz = pf, list(pz)
                cz[s] *= ratio
            else:
                cf, cz = pf + [f], pz + [ratio]
            children.append((child, cf, cz, me, side_, depth + 1))
        stack.append(children[1])  # right pushed first so the left subtree is numbered first
        stack.append(children[0])
    return out


# ------------------------------------------------------------------------------------------ unit layout
def _leaf_summaries(trees: list[_Tree]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per leaf of every tree: its number of distinct path features, their zero fractions (padded), its value."""
    leaves = [lf for tr in trees for lf in tr.leaves]
    l_d = np.asarray([len(f) for _, f, _, _ in leaves], dtype=np.int64)
    max_d = int(l_d.max()) if len(l_d) else 0
    if max_d > _MAX_BITS:
        raise NotImplementedError(f"a leaf path uses {max_d} distinct features; at most {_MAX_BITS} supported")
    l_z = np.zeros((len(leaves), max(max_d, 1)))
    for i, (_, _, z, _) in enumerate(leaves):
        l_z[i, : len(z)] = z
    return l_d, l_z, np.asarray([v for _, _, _, v in leaves], dtype=np.float64)


def _padded(rows: list[list[int]], n: int, width: int, dtype: type) -> np.ndarray:
    """Ragged integer lists as an (n, width) zero-padded array."""
    out = np.zeros((n, width), dtype=dtype)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


@dataclass
class _UnitLayout:
    """Every tree's units and how the kernels find them, filled tree by tree (global node / unit / leaf ids).

    Per node: ``n_unit`` (its unit, -1 above the units), ``n_pos`` (its decision bit in the unit's index),
    ``n_fs`` / ``n_lfs`` / ``n_rfs`` (fail-mask rows of an upper node and of its children). Per unit: root, bits
    above it (``u_dp``), index bits, output features, fail-mask row of its root; per member leaf (``um_*``) its
    leaf id and output slots; per (member leaf, internal node on its way) the decision it needs (``mp_*``).
    """

    n_unit: np.ndarray
    n_pos: np.ndarray
    n_fs: np.ndarray
    n_lfs: np.ndarray
    n_rfs: np.ndarray
    u_rootfs: list[int] = field(default_factory=list)
    unit_ptr: list[int] = field(default_factory=lambda: [0])
    u_root: list[int] = field(default_factory=list)
    u_dp: list[int] = field(default_factory=list)
    u_bits: list[int] = field(default_factory=list)
    u_feats: list[list[int]] = field(default_factory=list)
    um_ptr: list[int] = field(default_factory=lambda: [0])
    um_leaf: list[int] = field(default_factory=list)
    um_map: list[list[int]] = field(default_factory=list)
    mp_ptr: list[int] = field(default_factory=lambda: [0])
    mp_rel: list[int] = field(default_factory=list)
    mp_slot: list[int] = field(default_factory=list)
    mp_dir: list[int] = field(default_factory=list)
    max_fail: int = 1
    max_units: int = 1


def _layout_units(trees: list[_Tree], node_ptr: np.ndarray, n_nodes: int, unit_bits: int) -> _UnitLayout:
    """Units: the highest subtrees whose index (features above + internal nodes) fits ``unit_bits``."""
    zeros = lambda: np.zeros(n_nodes, dtype=np.int32)  # noqa: E731
    lay = _UnitLayout(np.full(n_nodes, -1, dtype=np.int32), zeros(), zeros(), zeros(), zeros())
    leaf_base = 0
    for t, tr in enumerate(trees):
        g0 = int(node_ptr[t])
        n_int, units = _unit_roots(tr, unit_bits)
        for ui, root in enumerate(units):
            _add_unit(lay, tr, root, ui, g0, leaf_base, n_int)
        _add_fail_rows(lay, tr, units, g0)
        lay.unit_ptr.append(len(lay.u_root))
        leaf_base += len(tr.leaves)
    return lay


def _unit_roots(tr: _Tree, unit_bits: int) -> tuple[list[int], list[int]]:
    """Internal nodes below each node (``n_int``) and the tree's unit roots, in pre-order."""
    nn = len(tr.feat)
    n_int = [0] * nn
    for k in range(nn - 1, -1, -1):  # children have larger pre-order indices
        if tr.feat[k] >= 0:
            n_int[k] = 1 + n_int[tr.left[k]] + n_int[tr.right[k]]
    stack = [0]
    units: list[int] = []
    while stack:
        k = stack.pop()
        if tr.feat[k] < 0 or len(tr.path[k]) + n_int[k] <= unit_bits:
            units.append(k)
        else:
            stack.append(tr.right[k]), stack.append(tr.left[k])
    return n_int, units


def _add_unit(lay: _UnitLayout, tr: _Tree, root: int, ui: int, g0: int, leaf_base: int, n_int: list[int]) -> None:
    """Walk one unit in pre-order: number its internal nodes, collect its member leaves and their paths."""
    if tr.feat[root] < 0:  # a single leaf: index = its own pattern
        _, feats, _, _ = tr.leaves[tr.leaf_of[root]]
        dp, bits = len(feats), len(feats)
    else:
        dp, bits = len(tr.path[root]), len(tr.path[root]) + n_int[root]
    if bits > _MAX_BITS:
        raise NotImplementedError(f"a unit needs {bits} index bits; at most {_MAX_BITS} supported")
    out_feats = list(tr.path[root][:dp])
    walk: list[tuple[int, list[tuple[int, int, int]]]] = [(root, [])]
    rel = 0
    while walk:
        k, path = walk.pop()
        if tr.feat[k] < 0:
            _, feats, _, _ = tr.leaves[tr.leaf_of[k]]
            for f in feats:
                if f not in out_feats:
                    out_feats.append(f)
            lay.um_leaf.append(leaf_base + tr.leaf_of[k])
            lay.um_map.append([out_feats.index(f) for f in feats])
            for r_, s_, d_ in path:
                lay.mp_rel.append(r_), lay.mp_slot.append(s_), lay.mp_dir.append(d_)
            lay.mp_ptr.append(len(lay.mp_rel))
            continue
        lay.n_unit[g0 + k] = ui
        lay.n_pos[g0 + k] = dp + rel
        walk.append((tr.right[k], path + [(rel, tr.slot[k], 1)]))
        walk.append((tr.left[k], path + [(rel, tr.slot[k], 0)]))
        rel += 1
    lay.um_ptr.append(len(lay.um_leaf))
    lay.u_root.append(root), lay.u_dp.append(dp), lay.u_bits.append(bits), lay.u_feats.append(out_feats)


def _add_fail_rows(lay: _UnitLayout, tr: _Tree, units: list[int], g0: int) -> None:
    """Fail masks are needed only above the units and at unit roots: number those rows compactly."""
    roots = set(units)
    fs = {}
    for k in range(len(tr.feat)):  # pre-order, so the tree root gets row 0 (all zero, never written)
        if k in roots or (tr.feat[k] >= 0 and lay.n_unit[g0 + k] < 0):
            fs[k] = len(fs)
    for k, row in fs.items():
        if k not in roots:
            lay.n_fs[g0 + k], lay.n_lfs[g0 + k], lay.n_rfs[g0 + k] = row, fs[tr.left[k]], fs[tr.right[k]]
    lay.u_rootfs.extend(fs[root] for root in units)
    lay.max_fail, lay.max_units = max(lay.max_fail, len(fs)), max(lay.max_units, len(units))


# ------------------------------------------------------------------------------------------ public
class FastTreeShap:
    """Exact path-dependent TreeSHAP for an XGBoost booster; same numbers as ``pred_contribs=True``.

    Parameters
    ----------
    booster:
        A single-output ``gbtree`` or ``dart`` booster, numeric and/or categorical splits.
    feature_names:
        The booster's input columns in order (``ChurnModel.features``). A DataFrame passed to
        :meth:`shap_values` is reordered to these; defaults to ``booster.feature_names``.
    n_threads:
        numba threads for :meth:`shap_values` (default: numba's default, all cores).
    unit_bits:
        largest table index per unit (distinct features above a subtree + its internal nodes).
        0 gives plain per-leaf Fast TreeSHAP v2 tables; default: tree depth + 1, within [4, 10]
        (7 for depth-6 trees: 4-leaf units, 26 MB for 300 trees; 9 for depth 8: 1.7 MB per tree).
    max_table_bytes:
        refuse models whose tables would exceed this (very deep trees); use XGBoost then.
    """

    def __init__(self, booster: xgb.Booster, feature_names: list[str] | None = None, n_threads: int | None = None,
                 unit_bits: int | None = None, max_table_bytes: int = 2 << 30) -> None:
        model = json.loads(booster.save_raw("json"))
        learner = model["learner"]
        gb = learner["gradient_booster"]
        name = gb.get("name", "gbtree")
        if name not in ("gbtree", "dart"):
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

        trees_json = gbtree["trees"]
        indptr = gbtree.get("iteration_indptr")
        if indptr is None:  # models saved before iteration_indptr existed
            per = int(gbtree["gbtree_model_param"].get("num_parallel_tree", "1") or 1)
            indptr = list(range(0, len(trees_json) + 1, per))
        self._iter_ptr = np.asarray(indptr, dtype=np.int64)
        self.n_trees = len(trees_json)

        cat_rows: list[np.ndarray] = []
        trees = [_flatten_tree(tr, weights[t] if weights else 1.0, cat_rows) for t, tr in enumerate(trees_json)]
        self.max_depth = max((tr.depth for tr in trees), default=0)
        self.unit_bits = int(unit_bits) if unit_bits is not None else min(10, max(4, self.max_depth + 1))
        self.expected_values = np.array([sum(v * math.prod(z) for _, _, z, v in tr.leaves) for tr in trees])
        self._build_nodes(trees, cat_rows)
        self._build_tables(trees, max_table_bytes)
        self._check_base_margin(booster)

    # -------------------------------------------------------------------------------- construction
    def _build_nodes(self, trees: list[_Tree], cat_rows: list[np.ndarray]) -> None:
        lens = [len(tr.feat) for tr in trees]
        self._node_ptr = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
        cat = lambda k: [x for tr in trees for x in getattr(tr, k)]  # noqa: E731
        self._n_feat = np.asarray(cat("feat"), dtype=np.int32)
        self._n_thr = np.asarray(cat("thr"), dtype=np.float32)
        self._n_defl = np.asarray(cat("defl"), dtype=np.uint8)
        self._n_cat = np.asarray(cat("cat"), dtype=np.int32)
        self._n_slot = np.asarray(cat("slot"), dtype=np.int32)
        self._n_left = np.asarray(cat("left"), dtype=np.int32)
        self._n_right = np.asarray(cat("right"), dtype=np.int32)
        width = 1 + max((int(r.max()) for r in cat_rows if len(r)), default=0)
        self._cat_bits = np.zeros((max(len(cat_rows), 1), width), dtype=np.uint8)
        for i, r in enumerate(cat_rows):
            self._cat_bits[i, r[r >= 0]] = 1

    def _build_tables(self, trees: list[_Tree], max_table_bytes: int) -> None:
        """Lay every tree out in units, then fill the units' Fast TreeSHAP v2 tables from the leaves' paths."""
        l_d, l_z, l_v = _leaf_summaries(trees)
        lay = _layout_units(trees, self._node_ptr, len(self._n_feat), self.unit_bits)
        n_units = len(lay.u_root)
        max_out = max((len(f) for f in lay.u_feats), default=1) or 1
        self._unit_ptr = np.asarray(lay.unit_ptr, dtype=np.int64)
        self._u_rootfs = np.asarray(lay.u_rootfs, dtype=np.int32)
        self._n_fs, self._n_lfs, self._n_rfs = lay.n_fs, lay.n_lfs, lay.n_rfs
        self._max_fail, self._max_units = lay.max_fail, lay.max_units
        u_dp_a = np.asarray(lay.u_dp, dtype=np.int64)
        u_bits_a = np.asarray(lay.u_bits, dtype=np.int64)
        self._u_full = ((np.int64(1) << u_dp_a) - 1).astype(np.int32)
        self._u_nout = np.asarray([len(f) for f in lay.u_feats], dtype=np.int64)
        self._u_feats = _padded(lay.u_feats, n_units, max_out, np.int32)
        sizes = np.where(self._u_nout > 0, (np.int64(1) << u_bits_a) * self._u_nout, 0)
        total = int(sizes.sum())
        if total * 8 > max_table_bytes:
            raise MemoryError(f"FastTreeShap tables would need {total * 8 / 2**30:.1f} GiB; lower unit_bits "
                              "or use XGBoost pred_contribs for this model")
        self._u_off = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        um_map_a = _padded(lay.um_map, len(lay.um_map), max((len(m) for m in lay.um_map), default=1) or 1, np.int64)
        self._n_unit, self._n_pos = lay.n_unit, lay.n_pos
        self._table = np.zeros(max(total, 1))
        i64 = lambda v: np.asarray(v, dtype=np.int64)  # noqa: E731
        _fill_unit_tables(u_bits_a, u_dp_a, self._u_nout, self._u_off, i64(lay.um_ptr), i64(lay.um_leaf), um_map_a,
                          i64(lay.mp_ptr), i64(lay.mp_rel), i64(lay.mp_slot), i64(lay.mp_dir), l_d, l_z, l_v,
                          self._table)
        self._leaf_values = [np.asarray([v for _, _, _, v in tr.leaves]) for tr in trees]
        self._leaf_nodes = [np.asarray([k for k, _, _, _ in tr.leaves]) for tr in trees]

    def _check_base_margin(self, booster: xgb.Booster) -> None:
        """Cross-check the parsed base margin against XGBoost on an all-missing row (any objective)."""
        row = np.full((1, self.n_features), np.nan, dtype=np.float32)
        try:
            dm = xgb.DMatrix(row, feature_names=booster.feature_names, feature_types=booster.feature_types,
                             enable_categorical=True)
            xgb_margin = float(booster.predict(dm, output_margin=True)[0])
        except Exception:  # pragma: no cover - keep the parsed value if XGBoost refuses the probe
            return
        leaf_sum = 0.0
        for t in range(self.n_trees):  # follow the default branches
            g0, k = int(self._node_ptr[t]), 0
            while self._n_feat[g0 + k] >= 0:
                k = int(self._n_left[g0 + k] if self._n_defl[g0 + k] else self._n_right[g0 + k])
            leaf_sum += float(self._leaf_values[t][np.searchsorted(self._leaf_nodes[t], k)])
        empirical = xgb_margin - leaf_sum
        if abs(empirical - self.base_margin) > 1e-4 * (1.0 + abs(empirical)):
            self.base_margin = empirical

    # -------------------------------------------------------------------------------- helpers
    @property
    def table_bytes(self) -> int:
        return int(self._table.nbytes)

    def default_block(self, n_rows: int) -> int:
        """Rows per block: large blocks amortise the per-tree, per-unit loop overhead (measured: 2048 is
        ~10% faster than 1024 and 4096 no faster); small inputs are still split across the threads."""
        threads = max(1, min(int(self.n_threads or numba.get_num_threads()), numba.config.NUMBA_NUM_THREADS))
        return int(min(2048, max(64, -(-n_rows // threads))))

    def _tree_range(self, iteration_range: tuple[int, int] | None) -> tuple[int, int]:
        n_iter = len(self._iter_ptr) - 1
        begin, end = iteration_range if iteration_range is not None else (0, 0)
        if end == 0:
            end = n_iter
        if not 0 <= begin <= end <= n_iter:
            raise ValueError(f"iteration_range {iteration_range} outside a model with {n_iter} iterations")
        return int(self._iter_ptr[begin]), int(self._iter_ptr[end])

    def to_matrix(self, X: np.ndarray | pd.DataFrame) -> np.ndarray:
        """Rows as the C-contiguous float32 matrix XGBoost sees (categoricals as codes, missing as NaN).

        Infinite values are rejected, as XGBoost's DMatrix rejects them.
        """
        arr = self._to_matrix(X)
        if np.isinf(arr).any():
            raise ValueError("input contains inf (XGBoost rejects it too unless missing=inf)")
        return arr

    def _to_matrix(self, X: np.ndarray | pd.DataFrame) -> np.ndarray:
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
                    block: int | None = None) -> np.ndarray:
        """SHAP values in margin (log-odds) units: (n_rows, n_features + 1), last column the bias.

        ``X``: rows prepared as the booster expects (``ChurnModel.prepare`` output: float32
        numerics, pandas categoricals whose codes are XGBoost's categories), or the equivalent
        numeric array (NaN = missing). ``iteration_range`` as in ``Booster.predict``: ``(0, 0)`` or
        None means all trees; ``(0, best_iteration + 1)`` the early-stopped model.
        """
        Xm = self.to_matrix(X)
        t0, t1 = self._tree_range(iteration_range)
        block = max(1, int(block)) if block else self.default_block(Xm.shape[0])
        out = np.zeros((Xm.shape[0], self.n_features + 1), dtype=np.float64)
        if Xm.shape[0] and t1 > t0:
            prev = numba.get_num_threads()
            if self.n_threads:
                numba.set_num_threads(max(1, min(int(self.n_threads), numba.config.NUMBA_NUM_THREADS)))
            try:
                _shap_kernel(Xm, out, t0, t1, self._node_ptr, self._n_feat, self._n_thr, self._n_defl, self._n_cat,
                             self._n_slot, self._n_fs, self._n_lfs, self._n_rfs, self._n_unit, self._n_pos,
                             self._cat_bits, self._unit_ptr, self._u_rootfs, self._u_full, self._u_nout,
                             self._u_off, self._u_feats, self._table, self._max_fail, self._max_units, block)
            finally:
                numba.set_num_threads(prev)
        out[:, -1] = self.base_margin + float(self.expected_values[t0:t1].sum())
        return out

    def expected_value(self, iteration_range: tuple[int, int] | None = None) -> float:
        """The bias column: base margin plus each tree's mean leaf value over the trees in range."""
        t0, t1 = self._tree_range(iteration_range)
        return self.base_margin + float(self.expected_values[t0:t1].sum())
