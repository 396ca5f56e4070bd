"""Tree ensembles of the ONNX-ML domain, read and proven monotone from their own attributes.

`read_ensemble(node, n_features)` turns a `TreeEnsembleClassifier` / `TreeEnsembleRegressor`
(ai.onnx.ml opset 1 and 3, as onnxmltools and skl2onnx write them) or a `TreeEnsemble` (opset 5)
into flat numpy arrays, refusing a hostile node before anything its declared sizes would cost is
allocated: attribute lengths that disagree, ids out of range, node counts over MAX_NODES, targets
over MAX_TARGETS, children shared or looping (every node must be reached exactly once from its
tree's root), depth over MAX_DEPTH, non-finite thresholds or leaf values.

`Ensemble.violation(feature, sign, target)` is the exact per-tree check: a tree is non-decreasing
in feature f when no leaf is greater than a leaf reached from it by increasing f alone, i.e. for
every two leaves whose boxes overlap in every other feature and are ordered on f. Two such leaves
always meet at a split on f (their lowest common ancestor), so only the splits on f are visited:
first the cheap bound (the largest leaf below the split <= the smallest above it, what XGBoost
and LightGBM's `basic` method enforce), and only where that fails, the exact pairwise box test
(LightGBM's `intermediate` and `advanced` methods). Set splits (BRANCH_EQ/NEQ, MEMBER) on a free
feature only widen the boxes (sound: more pairs are compared); on a checked feature they refuse.

Thresholds are compared in float32, as ONNX Runtime compares a float32 input: `x <= t` is
`x < nextafter(t)`, so every split is "x < cut" on its low side and every leaf box is [lo, hi).
numpy and onnx only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

MAX_NODES = 8_000_000  # far above any model the service loads (1,000 trees of 255 leaves: 509,000)
MAX_TARGETS = 4096
MAX_DEPTH = 2048
MAX_CANDIDATES = 64  # tree-level violations tried as ensemble-level witnesses

TREE_OPS = {"TreeEnsembleClassifier", "TreeEnsembleRegressor", "TreeEnsemble"}
# opset 1/3 mode words; opset 5 numbers: 0 LEQ, 1 LT, 2 GTE, 3 GT, 4 EQ, 5 NEQ, 6 MEMBER
_MODE_WORDS = {"BRANCH_LEQ": 0, "BRANCH_LT": 1, "BRANCH_GTE": 2, "BRANCH_GT": 3, "BRANCH_EQ": 4, "BRANCH_NEQ": 5,
               "BRANCH_MEMBER": 6, "LEAF": -1}
SET_MODES = (4, 5, 6)
MODE_NAMES = {0: "BRANCH_LEQ", 1: "BRANCH_LT", 2: "BRANCH_GTE", 3: "BRANCH_GT", 4: "BRANCH_EQ", 5: "BRANCH_NEQ",
              6: "BRANCH_MEMBER"}
POST_WORDS = {0: "NONE", 1: "SOFTMAX", 2: "LOGISTIC", 3: "SOFTMAX_ZERO", 4: "PROBIT"}
AGGREGATES = {0: "AVERAGE", 1: "SUM", 2: "MIN", 3: "MAX"}
MONOTONE_POST = {"NONE", "LOGISTIC", "PROBIT"}  # elementwise non-decreasing; SOFTMAX mixes classes


class TreeRefused(ValueError):
    """The node is not a tree ensemble the proof reads; the message says why."""


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: a for a in node.attribute}


def _ints(attrs: dict, name: str) -> np.ndarray:
    a = attrs.get(name)
    return np.asarray(a.ints, dtype=np.int64) if a is not None else np.zeros(0, np.int64)


def _floats(attrs: dict, name: str) -> np.ndarray:
    """A float list attribute, or its `_as_tensor` form (opset 3), as float64."""
    tensor = attrs.get(name + "_as_tensor")
    if tensor is not None:
        return np.asarray(numpy_helper.to_array(tensor.t), dtype=np.float64).reshape(-1)
    a = attrs.get(name)
    if a is None:
        return np.zeros(0)
    if a.type == onnx.AttributeProto.TENSOR:
        return np.asarray(numpy_helper.to_array(a.t), dtype=np.float64).reshape(-1)
    return np.asarray(a.floats, dtype=np.float64)


def _text(attrs: dict, name: str, default: str) -> str:
    a = attrs.get(name)
    if a is None:
        return default
    value = helper.get_attribute_value(a)
    return value.decode() if isinstance(value, bytes) else str(value)


def _same_length(label: str, arrays: dict[str, np.ndarray]) -> int:
    lengths = {name: len(array) for name, array in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise TreeRefused(f"{label}: attribute lengths disagree ({', '.join(f'{k} {v}' for k, v in lengths.items())})")
    return next(iter(lengths.values()), 0)


def _finite(label: str, what: str, values: np.ndarray) -> None:
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        raise TreeRefused(f"{label}: {what} [{int(bad[0])}] is {values[bad[0]]} (non-finite values are refused)")


def _cut(threshold: np.ndarray, mode: np.ndarray) -> np.ndarray:
    """The float32 cut c of each interval split, its low side being x < c."""
    t = threshold.astype(np.float32)
    up = np.nextafter(t, np.float32(np.inf))
    return np.where((mode == 0) | (mode == 3), up, t).astype(np.float32)  # LEQ, GT: x <= t  <=>  x < next(t)


@dataclass
class Violation:
    tree: int
    feature: int
    target: int
    low: np.ndarray  # an input ...
    high: np.ndarray  # ... and the same input with `feature` increased
    low_leaf: float
    high_leaf: float
    low_score: float | None = None  # the ensemble's raw score (before the post-transform), when evaluated
    high_score: float | None = None

    @property
    def ensemble_confirms(self) -> bool:
        return self.low_score is not None and self.high_score is not None and self.low_score != self.high_score


@dataclass
class Ensemble:
    """Every tree of one node, flat: interior nodes and leaves share one index space."""

    label: str
    op: str
    n_features: int
    n_targets: int
    feature: np.ndarray  # [nodes] interior: the split feature; leaves: -1
    mode: np.ndarray  # [nodes] 0..6 for interior nodes, -1 for leaves
    cut: np.ndarray  # [nodes] float32
    low: np.ndarray  # [nodes] the child for x < cut (the true child of LT/LEQ, the false child of GT/GTE)
    high: np.ndarray  # [nodes]
    tree: np.ndarray  # [nodes] the tree of each node (0..trees-1)
    roots: np.ndarray  # [trees]
    leaf_of: np.ndarray  # [nodes] the leaf row of a leaf, -1 for interior nodes
    values: np.ndarray  # [leaves, targets] float64: each leaf's weight per target
    base: np.ndarray  # [targets]
    aggregate: str  # SUM | AVERAGE | MIN | MAX
    post_transform: str
    binary: bool = False  # TreeEnsembleClassifier's binary form: one score, probabilities [1 - p, p]
    columns: int = 0  # the width of the output the node gives (classes, or targets)
    tree_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # [trees] the ids the graph gives
    _boxes: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)
    _sides: dict = field(default_factory=dict, repr=False)
    _verdicts: dict = field(default_factory=dict, repr=False)

    @property
    def trees(self) -> int:
        return len(self.roots)

    @property
    def leaves(self) -> np.ndarray:
        return np.flatnonzero(self.leaf_of >= 0)

    def uses(self, feature: int) -> bool:
        return bool(np.any(self.feature == feature))

    # -- the proof ---------------------------------------------------------------------------
    def boxes(self) -> tuple[np.ndarray, np.ndarray]:
        """[leaves, features] lower (inclusive) and upper (exclusive) float32 bounds of each leaf's box,
        walking every leaf up to its root at once (set splits leave the box wide: sound)."""
        if self._boxes is None:
            leaves = self.leaves
            lo = np.full((len(leaves), self.n_features), -np.inf, dtype=np.float32)
            hi = np.full((len(leaves), self.n_features), np.inf, dtype=np.float32)
            parent, _ = self._parents()
            rows = np.arange(len(leaves))
            child = leaves.copy()
            while rows.size:
                up = parent[child]
                alive = up >= 0
                rows, child, up = rows[alive], child[alive], up[alive]
                interval = self.mode[up] < 4
                r, c, u = rows[interval], child[interval], up[interval]
                f, cut = self.feature[u], self.cut[u]
                below = self.low[u] == c
                hi[r[below], f[below]] = np.minimum(hi[r[below], f[below]], cut[below])
                lo[r[~below], f[~below]] = np.maximum(lo[r[~below], f[~below]], cut[~below])
                child = up
            self._boxes = (lo, hi)
        return self._boxes

    def _parents(self) -> tuple[np.ndarray, np.ndarray]:
        parent = np.full(len(self.feature), -1, dtype=np.int64)
        interior = np.flatnonzero(self.leaf_of < 0)
        parent[self.low[interior]] = interior
        parent[self.high[interior]] = interior
        return parent, interior

    def _subtree_leaves(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ancestor, side 0 low / 1 high, leaf row) for every leaf and every split above it, sorted by ancestor."""
        if "triples" not in self._sides:
            parent, _ = self._parents()
            leaves = self.leaves
            rows = np.arange(len(leaves))
            child = leaves.copy()
            ancestors, sides, members = [], [], []
            while rows.size:
                up = parent[child]
                alive = up >= 0
                rows, child, up = rows[alive], child[alive], up[alive]
                ancestors.append(up)
                sides.append((self.high[up] == child).astype(np.int8))
                members.append(rows)
                child = up
            a = np.concatenate(ancestors) if ancestors else np.zeros(0, np.int64)
            s = np.concatenate(sides) if sides else np.zeros(0, np.int8)
            m = np.concatenate(members) if members else np.zeros(0, np.int64)
            order = np.lexsort((s, a))
            self._sides["triples"] = (a[order], s[order], m[order])
        return self._sides["triples"]

    def violation(self, feature: int, sign: int, target: int) -> Violation | None:
        """None when every tree is monotone in `feature` with `sign` (+1 non-decreasing, -1 non-increasing)
        for output `target`; else a violating pair of leaves, with two inputs that reach them."""
        key = (feature, sign, target)
        if key not in self._verdicts:
            self._verdicts[key] = self._first_violation(feature, sign, target)
        return self._verdicts[key]

    def set_split_on(self, feature: int) -> int | None:
        hits = np.flatnonzero((self.feature == feature) & np.isin(self.mode, SET_MODES))
        return int(hits[0]) if hits.size else None

    def _first_violation(self, feature: int, sign: int, target: int) -> Violation | None:
        values = self.values[:, target] * sign
        ancestors, sides, members = self._subtree_leaves()
        # splits that can separate two leaves reachable from each other by moving `feature` alone
        split = self.feature[ancestors]
        on_feature = (split == feature) & (self.mode[ancestors] < 4)
        on_sets = np.isin(self.mode[ancestors], SET_MODES)
        relevant = on_feature | on_sets
        a, s, m = ancestors[relevant], sides[relevant], members[relevant]
        if a.size == 0:
            return None
        v = values[m]
        nodes = len(self.feature)
        low_max = np.full(nodes, -np.inf)
        high_min = np.full(nodes, np.inf)
        np.maximum.at(low_max, a[s == 0], v[s == 0])
        np.minimum.at(high_min, a[s == 1], v[s == 1])
        interval_nodes = np.unique(a[on_feature[relevant]])
        suspects = interval_nodes[low_max[interval_nodes] > high_min[interval_nodes]]
        set_nodes = np.unique(a[on_sets[relevant]])
        if suspects.size == 0 and set_nodes.size == 0:
            return None
        lo, hi = self.boxes()
        candidates: list[Violation] = []
        starts = np.searchsorted(a, np.concatenate([suspects, set_nodes]))
        ends = np.searchsorted(a, np.concatenate([suspects, set_nodes]), side="right")
        for index, (start, end) in enumerate(zip(starts, ends)):
            node = (list(suspects) + list(set_nodes))[index]
            both = m[start:end]
            side = s[start:end]
            pairs = [(both[side == 0], both[side == 1])]
            if index >= suspects.size:  # a set split: either side may be the lower on `feature`
                pairs.append((both[side == 1], both[side == 0]))
            for below, above in pairs:
                found = self._pairs(below, above, feature, values, lo, hi)
                if found is not None:
                    candidates.append(self._witness(int(node), found[0], found[1], feature, target, lo, hi))
                    if len(candidates) >= MAX_CANDIDATES:
                        break
            if len(candidates) >= MAX_CANDIDATES:
                break
        if not candidates:
            return None
        for candidate in candidates:  # prefer a pair the whole ensemble also gets wrong
            self._score(candidate)
            if (candidate.high_score - candidate.low_score) * sign < 0:
                return candidate
        return candidates[0]

    def _pairs(self, below: np.ndarray, above: np.ndarray, feature: int, values: np.ndarray,
               lo: np.ndarray, hi: np.ndarray) -> tuple[int, int] | None:
        """The first (a, b) with a's box below b's on `feature`, overlapping in every other feature, and
        values[a] > values[b]; leaves with empty boxes are never reached and are skipped."""
        bad = values[below][:, None] > values[above][None, :]
        if not bad.any():
            return None
        ia, ib = np.nonzero(bad)
        # test only the offending pairs, in chunks: memory stays bounded on big subtrees
        for start in range(0, ia.size, 65536):
            pa, pb = below[ia[start:start + 65536]], above[ib[start:start + 65536]]
            top = np.minimum(hi[pa], hi[pb])
            bottom = np.maximum(lo[pa], lo[pb])
            overlap = bottom < top
            overlap[:, feature] = lo[pa, feature] < hi[pb, feature]
            nonempty = np.all(lo[pa] < hi[pa], axis=1) & np.all(lo[pb] < hi[pb], axis=1)
            ok = np.all(overlap, axis=1) & nonempty
            hit = np.flatnonzero(ok)
            if hit.size:
                return int(pa[hit[0]]), int(pb[hit[0]])
        return None

    def _witness(self, node: int, a: int, b: int, feature: int, target: int, lo: np.ndarray, hi: np.ndarray) -> Violation:
        """Two float32 inputs, equal except in `feature`, reaching leaves a (lower) and b."""
        point = _inside(np.maximum(lo[a], lo[b]), np.minimum(hi[a], hi[b]))
        low, high = point.copy(), point.copy()
        low[feature] = _inside(lo[a, feature:feature + 1], hi[a, feature:feature + 1])[0]
        b_lo = max(float(lo[b, feature]), float(np.nextafter(low[feature], np.float32(np.inf))))
        high[feature] = _inside(np.asarray([b_lo], np.float32), hi[b, feature:feature + 1])[0]
        return Violation(int(self.tree_ids[self.tree[self.leaves[a]]]), feature, target, low, high,
                         float(self.values[a, target]), float(self.values[b, target]))

    # -- evaluation (witnesses only: the service serves with ONNX Runtime) -------------------
    def raw_scores(self, x: np.ndarray) -> np.ndarray:
        """[N, targets] aggregated leaf values plus base values, before the post-transform."""
        x = np.asarray(x, dtype=np.float32)
        n = x.shape[0]
        node = np.broadcast_to(self.roots, (n, self.trees)).copy()
        rows = np.arange(n)[:, None]
        for _ in range(MAX_DEPTH + 1):
            interior = self.leaf_of[node] < 0
            if not interior.any():
                break
            f = np.where(interior, self.feature[node], 0)
            go_low = x[rows, f] < self.cut[node]
            node = np.where(interior, np.where(go_low, self.low[node], self.high[node]), node)
        leaf_values = self.values[self.leaf_of[node]]  # [N, trees, targets]
        if self.aggregate == "SUM":
            total = leaf_values.sum(axis=1)
        elif self.aggregate == "AVERAGE":
            total = leaf_values.mean(axis=1)
        elif self.aggregate == "MIN":
            total = leaf_values.min(axis=1)
        else:
            total = leaf_values.max(axis=1)
        return total + self.base

    def _score(self, violation: Violation) -> None:
        scores = self.raw_scores(np.stack([violation.low, violation.high]))[:, violation.target]
        violation.low_score, violation.high_score = float(scores[0]), float(scores[1])

    def score_range(self) -> tuple[np.ndarray, np.ndarray]:
        """Per target, bounds of the aggregated raw score over every input."""
        leaves = self.leaves
        trees = self.tree[leaves]
        low = np.full((self.trees, self.n_targets), np.inf)
        high = np.full((self.trees, self.n_targets), -np.inf)
        np.minimum.at(low, trees, self.values)
        np.maximum.at(high, trees, self.values)
        if self.aggregate == "SUM":
            return low.sum(0) + self.base, high.sum(0) + self.base
        if self.aggregate == "AVERAGE":
            return low.mean(0) + self.base, high.mean(0) + self.base
        if self.aggregate == "MIN":
            return low.min(0) + self.base, high.min(0) + self.base
        return low.max(0) + self.base, high.max(0) + self.base


def _inside(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """A float32 point of each [lo, hi): lo when finite, else just below hi, else 0."""
    lo32, hi32 = lo.astype(np.float32), hi.astype(np.float32)
    below_hi = np.nextafter(hi32, np.float32(-np.inf))
    point = np.where(np.isfinite(lo32), lo32, np.where(np.isfinite(hi32), np.minimum(below_hi, np.float32(0)), 0))
    return np.where(np.isfinite(hi32) & (point >= hi32), below_hi, point).astype(np.float32)


# -- reading the attributes --------------------------------------------------------------------
def read_ensemble(node: onnx.NodeProto, n_features: int, label: str) -> Ensemble:
    """The node's trees as flat arrays; TreeRefused naming the attribute when the node is malformed."""
    if node.op_type == "TreeEnsemble":
        return _read_v5(node, n_features, label)
    return _read_v1(node, n_features, label)


def _check_ids(label: str, what: str, ids: np.ndarray, bound: int) -> None:
    if ids.size and (ids.min() < 0 or ids.max() >= bound):
        bad = int(np.flatnonzero((ids < 0) | (ids >= bound))[0])
        raise TreeRefused(f"{label}: {what} [{bad}] is {int(ids[bad])}, outside 0..{bound - 1}")


def _read_v1(node: onnx.NodeProto, n_features: int, label: str) -> Ensemble:
    attrs = _attrs(node)
    classifier = node.op_type == "TreeEnsembleClassifier"
    tree_ids, node_ids = _ints(attrs, "nodes_treeids"), _ints(attrs, "nodes_nodeids")
    features = _ints(attrs, "nodes_featureids")
    true_ids, false_ids = _ints(attrs, "nodes_truenodeids"), _ints(attrs, "nodes_falsenodeids")
    mode_attr = attrs.get("nodes_modes")
    modes_text = [m.decode() if isinstance(m, bytes) else str(m) for m in (mode_attr.strings if mode_attr else [])]
    thresholds = _floats(attrs, "nodes_values")
    count = _same_length(label, {"nodes_treeids": tree_ids, "nodes_nodeids": node_ids, "nodes_featureids": features,
                                 "nodes_truenodeids": true_ids, "nodes_falsenodeids": false_ids,
                                 "nodes_modes": np.zeros(len(modes_text)), "nodes_values": thresholds})
    if count == 0:
        raise TreeRefused(f"{label}: no tree nodes")
    if count > MAX_NODES:
        raise TreeRefused(f"{label}: {count} nodes, over the limit of {MAX_NODES}")
    unknown = next((m for m in modes_text if m not in _MODE_WORDS), None)
    if unknown is not None:
        raise TreeRefused(f"{label}: unknown node mode {unknown[:40]!r}")
    mode = np.asarray([_MODE_WORDS[m] for m in modes_text], dtype=np.int64)
    interior = mode >= 0
    _finite(label, "nodes_values", thresholds[interior])
    _check_ids(label, "nodes_featureids", features[interior], n_features)
    # ids: a node is (tree id, node id); both bounded by the node count, so nothing is sized by them
    _check_ids(label, "nodes_treeids", tree_ids, count)
    _check_ids(label, "nodes_nodeids", node_ids, count)
    key = tree_ids * count + node_ids
    order = np.argsort(key, kind="stable")
    if np.any(np.diff(key[order]) == 0):
        dup = int(order[np.flatnonzero(np.diff(key[order]) == 0)[0]])
        raise TreeRefused(f"{label}: node ({int(tree_ids[dup])}, {int(node_ids[dup])}) is defined twice")

    def child(ids: np.ndarray, what: str) -> np.ndarray:
        wanted = tree_ids * count + ids
        ids_ok = (ids >= 0) & (ids < count)
        position = np.searchsorted(key[order], np.where(ids_ok, wanted, 0))
        position = np.minimum(position, count - 1)
        found = ids_ok & (key[order][position] == wanted)
        missing = np.flatnonzero(interior & ~found)
        if missing.size:
            i = int(missing[0])
            raise TreeRefused(f"{label}: node ({int(tree_ids[i])}, {int(node_ids[i])}) has {what} {int(ids[i])}, "
                              "which is not a node of its tree")
        return np.where(interior, order[position], -1)

    true_child, false_child = child(true_ids, "nodes_truenodeids"), child(false_ids, "nodes_falsenodeids")
    leaf_of = np.full(count, -1, dtype=np.int64)
    leaf_of[~interior] = np.arange(int((~interior).sum()))
    if classifier:
        labels = attrs.get("classlabels_int64s") or attrs.get("classlabels_strings")
        n_classes = len(labels.ints) + len(labels.strings) if labels is not None else 0
        if not 1 <= n_classes <= MAX_TARGETS:
            raise TreeRefused(f"{label}: {n_classes} class labels (1..{MAX_TARGETS} are read)")
        prefix = "class"
    else:
        n_targets_attr = attrs.get("n_targets")
        n_classes = int(n_targets_attr.i) if n_targets_attr is not None else 1
        if not 1 <= n_classes <= MAX_TARGETS:
            raise TreeRefused(f"{label}: n_targets {n_classes} (1..{MAX_TARGETS} are read)")
        prefix = "target"
    w_tree, w_node, w_id = (_ints(attrs, f"{prefix}_{s}") for s in ("treeids", "nodeids", "ids"))
    weights = _floats(attrs, f"{prefix}_weights")
    entries = _same_length(label, {f"{prefix}_treeids": w_tree, f"{prefix}_nodeids": w_node, f"{prefix}_ids": w_id,
                                   f"{prefix}_weights": weights})
    if entries > MAX_NODES:
        raise TreeRefused(f"{label}: {entries} leaf weights, over the limit of {MAX_NODES}")
    _finite(label, f"{prefix}_weights", weights)
    _check_ids(label, f"{prefix}_ids", w_id, n_classes)
    wanted = w_tree * count + w_node
    ok = (w_tree >= 0) & (w_tree < count) & (w_node >= 0) & (w_node < count)
    position = np.minimum(np.searchsorted(key[order], np.where(ok, wanted, 0)), count - 1)
    target_node = order[position]
    found = ok & (key[order][position] == wanted)
    bad = np.flatnonzero(~found | (found & interior[target_node]))
    if bad.size:
        i = int(bad[0])
        raise TreeRefused(f"{label}: {prefix} weight {i} names node ({int(w_tree[i])}, {int(w_node[i])}), which is not a leaf")
    binary = classifier and n_classes == 2 and np.unique(w_id).size <= 1
    targets = 1 if binary else n_classes
    values = np.zeros((int((~interior).sum()), targets))
    np.add.at(values, (leaf_of[target_node], 0 if binary else w_id), weights)
    base = _floats(attrs, "base_values")
    _finite(label, "base_values", base)
    if base.size not in (0, n_classes, targets):
        raise TreeRefused(f"{label}: {base.size} base_values for {n_classes} output(s)")
    if binary:
        base_value = base[int(w_id[0]) if w_id.size else 0] if base.size == 2 else (base[0] if base.size else 0.0)
        base = np.asarray([base_value])
    base = base if base.size == targets else np.zeros(targets)
    cut = _cut(thresholds, np.maximum(mode, 0))
    low = np.where(np.isin(mode, (2, 3)), false_child, true_child)  # GTE/GT: the true side is the high side
    high = np.where(np.isin(mode, (2, 3)), true_child, false_child)
    aggregate = "SUM" if classifier else _text(attrs, "aggregate_function", "SUM")
    ensemble = Ensemble(label, node.op_type, n_features, targets, np.where(interior, features, -1), mode, cut, low, high,
                        tree_ids, np.zeros(0, np.int64), leaf_of, values, base, aggregate,
                        _text(attrs, "post_transform", "NONE"), binary, n_classes)
    _check_structure(ensemble, label, lambda i: f"node ({int(tree_ids[i])}, {int(node_ids[i])})")
    return ensemble


def _read_v5(node: onnx.NodeProto, n_features: int, label: str) -> Ensemble:
    attrs = _attrs(node)
    features = _ints(attrs, "nodes_featureids")
    true_ids, false_ids = _ints(attrs, "nodes_truenodeids"), _ints(attrs, "nodes_falsenodeids")
    true_leaf, false_leaf = _ints(attrs, "nodes_trueleafs"), _ints(attrs, "nodes_falseleafs")
    splits = _floats(attrs, "nodes_splits")
    modes = _floats(attrs, "nodes_modes").astype(np.int64)
    count = _same_length(label, {"nodes_featureids": features, "nodes_truenodeids": true_ids, "nodes_trueleafs": true_leaf,
                                 "nodes_falsenodeids": false_ids, "nodes_falseleafs": false_leaf,
                                 "nodes_splits": splits, "nodes_modes": modes})
    targets_ids, weights = _ints(attrs, "leaf_targetids"), _floats(attrs, "leaf_weights")
    leaves = _same_length(label, {"leaf_targetids": targets_ids, "leaf_weights": weights})
    roots = _ints(attrs, "tree_roots")
    if count == 0 or leaves == 0 or roots.size == 0:
        raise TreeRefused(f"{label}: no trees")
    if count + leaves > MAX_NODES:
        raise TreeRefused(f"{label}: {count + leaves} nodes, over the limit of {MAX_NODES}")
    if np.any((modes < 0) | (modes > 6)):
        raise TreeRefused(f"{label}: nodes_modes holds a value outside 0..6")
    n_targets_attr = attrs.get("n_targets")
    n_targets = int(n_targets_attr.i) if n_targets_attr is not None else 0
    if not 1 <= n_targets <= MAX_TARGETS:
        raise TreeRefused(f"{label}: n_targets {n_targets} (1..{MAX_TARGETS} are read)")
    interval = modes < 4
    _finite(label, "nodes_splits", splits[interval])
    _finite(label, "leaf_weights", weights)
    _check_ids(label, "nodes_featureids", features, n_features)
    _check_ids(label, "leaf_targetids", targets_ids, n_targets)
    _check_ids(label, "tree_roots", roots, count)
    for ids, leaf, what in ((true_ids, true_leaf, "true"), (false_ids, false_leaf, "false")):
        _check_ids(label, f"nodes_{what}leafs", leaf, 2)
        _check_ids(label, f"nodes_{what}nodeids (leaves)", ids[leaf == 1], leaves)
        _check_ids(label, f"nodes_{what}nodeids", ids[leaf == 0], count)
    true_child = np.where(true_leaf == 1, count + true_ids, true_ids)
    false_child = np.where(false_leaf == 1, count + false_ids, false_ids)
    total = count + leaves
    mode = np.concatenate([modes, np.full(leaves, -1)])
    leaf_of = np.concatenate([np.full(count, -1), np.arange(leaves)])
    values = np.zeros((leaves, n_targets))
    values[np.arange(leaves), targets_ids] = weights
    cut = _cut(np.concatenate([np.where(interval, splits, 0.0), np.zeros(leaves)]), np.maximum(mode, 0))
    low = np.concatenate([np.where(np.isin(modes, (2, 3)), false_child, true_child), np.full(leaves, -1)])
    high = np.concatenate([np.where(np.isin(modes, (2, 3)), true_child, false_child), np.full(leaves, -1)])
    tree = np.full(total, -1, dtype=np.int64)
    tree[roots] = np.arange(roots.size)
    base = np.zeros(n_targets)
    aggregate = AGGREGATES.get(int(attrs["aggregate_function"].i) if "aggregate_function" in attrs else 1, "SUM")
    post = POST_WORDS.get(int(attrs["post_transform"].i) if "post_transform" in attrs else 0, "?")
    ensemble = Ensemble(label, node.op_type, n_features, n_targets, np.concatenate([features, np.full(leaves, -1)]), mode,
                        cut, low, high, tree, roots, leaf_of, values, base, aggregate, post, False, n_targets)
    ensemble.tree_ids = np.arange(roots.size)
    _check_structure(ensemble, label, lambda i: f"node {i}" if i < count else f"leaf {i - count}", roots_given=True)
    return ensemble


def _check_structure(ensemble: Ensemble, label: str, name, roots_given: bool = False) -> None:
    """Every node reached exactly once from its tree's root: no shared child, no cycle, no orphan.
    Fills `roots` and `tree` (opset 5: the tree of each node, from its root's)."""
    total = len(ensemble.feature)
    interior = np.flatnonzero(ensemble.leaf_of < 0)
    children = np.concatenate([ensemble.low[interior], ensemble.high[interior]])
    parents = np.concatenate([interior, interior])
    indegree = np.bincount(children, minlength=total)
    if np.any(indegree > 1):
        i = int(np.flatnonzero(indegree > 1)[0])
        raise TreeRefused(f"{label}: {name(i)} is the child of more than one split (a tree's nodes have one parent)")
    if roots_given:
        roots = ensemble.roots
        if np.unique(roots).size != roots.size or np.any(indegree[roots] > 0):
            raise TreeRefused(f"{label}: tree_roots repeat or name a node that is some split's child")
    else:
        roots = np.flatnonzero(indegree == 0)
        raw = ensemble.tree  # the converter's tree ids
        if np.unique(raw[roots]).size != roots.size or np.unique(raw).size != roots.size:
            raise TreeRefused(f"{label}: {roots.size} root(s) for {np.unique(raw).size} tree id(s): every tree needs "
                              "exactly one root (a cycle in the node links, or a second root)")
        same_tree = raw[parents] == raw[children]
        if not same_tree.all():
            i = int(children[np.flatnonzero(~same_tree)[0]])
            raise TreeRefused(f"{label}: {name(i)} is the child of a split of another tree")
        ensemble.roots = roots
        ensemble.tree_ids = raw[roots]
    reached = np.zeros(total, dtype=bool)
    tree_of = np.full(total, -1, dtype=np.int64)
    tree_of[roots] = np.arange(roots.size)
    reached[roots] = True
    frontier = roots
    for depth in range(MAX_DEPTH + 1):
        frontier = frontier[ensemble.leaf_of[frontier] < 0]
        if frontier.size == 0:
            break
        if depth == MAX_DEPTH:
            raise TreeRefused(f"{label}: a tree deeper than {MAX_DEPTH} levels")
        nxt = np.concatenate([ensemble.low[frontier], ensemble.high[frontier]])
        owner = np.concatenate([tree_of[frontier], tree_of[frontier]])
        if reached[nxt].any():
            i = int(nxt[reached[nxt]][0])
            raise TreeRefused(f"{label}: {name(i)} is reached twice (a cycle in the node links)")
        reached[nxt] = True
        tree_of[nxt] = owner
        frontier = nxt
    if not reached.all():
        i = int(np.flatnonzero(~reached)[0])
        raise TreeRefused(f"{label}: {name(i)} is not reached from any tree's root (a cycle or an orphan)")
    ensemble.tree = tree_of


def describe_violation(ensemble: Ensemble, violation: Violation, feature_name: str, sign: int) -> str:
    words = "non-decreasing" if sign > 0 else "non-increasing"
    pair = (f"inputs {_row(violation.low)} and {_row(violation.high)} (equal except feature {feature_name!r}: "
            f"{violation.low[violation.feature]:.9g} -> {violation.high[violation.feature]:.9g})")
    text = (f"tree {violation.tree} is not {words} in feature {feature_name!r} (column {violation.feature}): "
            f"a leaf of {violation.low_leaf:.9g} is reached before a leaf of {violation.high_leaf:.9g}; {pair}")
    if violation.low_score is not None:
        broken = (violation.high_score - violation.low_score) * sign < 0
        text += (f"; the ensemble's raw score goes {violation.low_score:.9g} -> {violation.high_score:.9g}"
                 + (" (violated by the whole ensemble)" if broken else " (the other trees hide it at these inputs)"))
    return text


def _row(values: np.ndarray) -> str:
    return "[" + ", ".join(f"{float(v):.9g}" for v in values) + "]"
