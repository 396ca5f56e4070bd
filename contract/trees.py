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
MONOTONE_POST = {"NONE", "LOGISTIC"}  # elementwise non-decreasing; SOFTMAX mixes classes, PROBIT is NaN outside (0, 1)


class TreeRefused(ValueError):
    """The node is not a tree ensemble the proof reads; the message says why."""


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: a for a in node.attribute}


def _ints(attrs: dict, name: str) -> np.ndarray:
    a = attrs.get(name)
    if a is None:
        return np.zeros(0, np.int64)
    fast = _wire_ints(a)
    return fast if fast is not None else np.asarray(a.ints, dtype=np.int64)


# The attribute's own wire bytes, decoded with numpy: protobuf's Python containers cost ~0.4 us per
# element (2 s for a big ensemble's attributes). Anything unexpected falls back to the containers.
_NAME_TAG, _FLOATS_TAG, _FLOATS_PACKED, _INTS_TAG, _INTS_PACKED = 0x0A, 0x3D, 0x3A, 0x40, 0x42


def _varint(buffer: bytes, at: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        byte = buffer[at]
        value |= (byte & 0x7F) << shift
        at += 1
        if byte < 0x80:
            return value, at
        shift += 7


def _after_name(a: onnx.AttributeProto) -> tuple[bytes, int]:
    buffer = a.SerializeToString()
    at = 0
    if buffer[:1] == bytes([_NAME_TAG]):
        length, at = _varint(buffer, 1)
        at += length
    return buffer, at


def _wire_ints(a: onnx.AttributeProto) -> np.ndarray | None:
    count = len(a.ints)
    if count < 1024:
        return None
    try:
        buffer, at = _after_name(a)
        if buffer[at] == _INTS_PACKED:
            length, at = _varint(buffer, at + 1)
            data = np.frombuffer(buffer, np.uint8, length, at)
            ends = np.flatnonzero(data < 0x80)
            starts = np.r_[0, ends[:-1] + 1]
        elif buffer[at] == _INTS_TAG:
            data = np.frombuffer(buffer, np.uint8, len(buffer) - at, at)
            low = np.flatnonzero(data < 0x80)[: 2 * count]  # tag, last byte of its varint, tag, ...
            tags, ends = low[0::2], low[1::2]
            if ends.size != count or np.any(data[tags] != _INTS_TAG) or np.any(tags[1:] != ends[:-1] + 1):
                return None
            starts = tags + 1
        else:
            return None
        if ends.size != count or np.any(ends - starts >= 10):
            return None
        lengths = ends - starts + 1
        offsets = np.r_[0, np.cumsum(lengths)[:-1]]
        position = np.arange(int(lengths.sum())) - np.repeat(offsets, lengths)  # byte index within its varint
        payload = (data[_spans(starts, ends)] & 0x7F).astype(np.uint64) << (7 * position).astype(np.uint64)
        return np.bitwise_or.reduceat(payload, offsets).view(np.int64)
    except (IndexError, ValueError):
        return None


def _spans(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """The indices starts[i]..ends[i] of every i, concatenated."""
    lengths = ends - starts + 1
    offsets = np.repeat(starts - np.r_[0, np.cumsum(lengths)[:-1]], lengths)
    return np.arange(lengths.sum()) + offsets


def _wire_floats(a: onnx.AttributeProto) -> np.ndarray | None:
    count = len(a.floats)
    if count < 1024:
        return None
    try:
        buffer, at = _after_name(a)
        if buffer[at] == _FLOATS_PACKED:
            length, at = _varint(buffer, at + 1)
            if length != 4 * count:
                return None
            return np.frombuffer(buffer, "<f4", count, at).astype(np.float64)
        records = np.frombuffer(buffer, np.uint8, 5 * count, at).reshape(count, 5)
        if np.any(records[:, 0] != _FLOATS_TAG):
            return None
        return np.ascontiguousarray(records[:, 1:]).view("<f4").reshape(-1).astype(np.float64)
    except (IndexError, ValueError):
        return None


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
    fast = _wire_floats(a)
    return fast if fast is not None else np.asarray(a.floats, dtype=np.float64)


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
    levels: list[np.ndarray] = field(default_factory=list, repr=False)  # nodes by depth, roots first
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
    def _parents(self) -> np.ndarray:
        if "parent" not in self._sides:
            parent = np.full(len(self.feature), -1, dtype=np.int64)
            interior = np.flatnonzero(self.leaf_of < 0)
            parent[self.low[interior]] = interior
            parent[self.high[interior]] = interior
            self._sides["parent"] = parent
        return self._sides["parent"]

    def boxes_of(self, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """[len(nodes), features] lower (inclusive) and upper (exclusive) float32 bounds of the box of each
        node, walking up to the roots (set splits leave the box wide: sound, more pairs are compared)."""
        lo = np.full((len(nodes), self.n_features), -np.inf, dtype=np.float32)
        hi = np.full((len(nodes), self.n_features), np.inf, dtype=np.float32)
        parent = self._parents()
        rows = np.arange(len(nodes))
        child = np.asarray(nodes, dtype=np.int64)
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
        return lo, hi

    def leaves_under(self, node: int) -> np.ndarray:
        """The leaf nodes of the subtree rooted at `node`."""
        frontier, found = np.asarray([node]), []
        while frontier.size:
            is_leaf = self.leaf_of[frontier] >= 0
            found.append(frontier[is_leaf])
            inner = frontier[~is_leaf]
            frontier = np.concatenate([self.low[inner], self.high[inner]])
        return np.concatenate(found)

    def _summaries(self, target: int) -> tuple[np.ndarray, np.ndarray]:
        """Per node, the max and min leaf value of its subtree for one target, bottom-up level by level."""
        if ("summary", target) not in self._sides:
            top = np.full(len(self.feature), -np.inf)
            bottom = np.full(len(self.feature), np.inf)
            leaves = self.leaf_of >= 0
            top[leaves] = bottom[leaves] = self.values[self.leaf_of[leaves], target]
            for level in reversed(self.levels):
                inner = level[self.leaf_of[level] < 0]
                top[inner] = np.maximum(top[self.low[inner]], top[self.high[inner]])
                bottom[inner] = np.minimum(bottom[self.low[inner]], bottom[self.high[inner]])
            self._sides[("summary", target)] = (top, bottom)
        return self._sides[("summary", target)]

    def _suspects(self, feature: int, sign: int, target: int) -> tuple[np.ndarray, np.ndarray]:
        """(interval splits on `feature` whose cheap bound fails, set splits anywhere): where pairs must be checked."""
        top, bottom = self._summaries(target)
        on_feature = np.flatnonzero((self.feature == feature) & (self.mode >= 0) & (self.mode < 4))
        low, high = self.low[on_feature], self.high[on_feature]
        if sign > 0:
            bad = top[low] > bottom[high]
        else:
            bad = bottom[low] < top[high]
        return on_feature[bad], np.flatnonzero(np.isin(self.mode, SET_MODES))

    def constant_in(self, feature: int, target: int) -> bool:
        """Whether output `target` cannot change with `feature`: at every split on it, the leaves on both
        sides have one and the same value (the cheap bound both ways; no set split anywhere)."""
        up, sets = self._suspects(feature, 1, target)
        down, _ = self._suspects(feature, -1, target)
        return up.size == 0 and down.size == 0 and sets.size == 0

    def holds(self, feature: int, sign: int, target: int) -> bool:
        """Whether every tree is monotone in `feature` with `sign` (+1 non-decreasing, -1 non-increasing)
        for output `target`: the cheap bound at each split on the feature, the exact pairs where it fails."""
        key = ("holds", feature, sign, target)
        if key not in self._verdicts:
            suspects, set_nodes = self._suspects(feature, sign, target)
            self._verdicts[key] = (suspects.size == 0 and set_nodes.size == 0) or \
                not self._violations(feature, sign, target, suspects, set_nodes, limit=1)
        return self._verdicts[key]

    def violation(self, feature: int, sign: int, target: int, tries: int = MAX_CANDIDATES) -> Violation | None:
        """None when the direction holds; else a violating pair of leaves and two inputs reaching them
        (the whole ensemble's scores at those inputs preferred violating too)."""
        if self.holds(feature, sign, target):
            return None
        key = ("violation", feature, sign, target, tries)
        if key not in self._verdicts:
            suspects, set_nodes = self._suspects(feature, sign, target)
            candidates = self._violations(feature, sign, target, suspects, set_nodes, limit=tries, expected=True)
            chosen = candidates[0]
            for candidate in candidates:  # prefer a pair the whole ensemble also gets wrong
                self._score(candidate)
                if (candidate.high_score - candidate.low_score) * sign < 0:
                    chosen = candidate
                    break
            self._verdicts[key] = chosen
        return self._verdicts[key]

    def set_split_on(self, feature: int) -> int | None:
        hits = np.flatnonzero((self.feature == feature) & np.isin(self.mode, SET_MODES))
        return int(hits[0]) if hits.size else None

    def _leaf_boxes(self) -> tuple[np.ndarray, np.ndarray]:
        """Every leaf's box (computed once, only when some split needs the exact pairwise check)."""
        if "boxes" not in self._sides:
            self._sides["boxes"] = self.boxes_of(self.leaves)
        return self._sides["boxes"]

    def _sides_of(self, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(node, side 0 below / 1 above, leaf row) for every leaf under each of `nodes`, sorted by (node, side):
        one walk from every leaf up to its root, keeping only the steps that pass one of `nodes`."""
        wanted = np.zeros(len(self.feature), dtype=bool)
        wanted[nodes] = True
        parent = self._parents()
        rows = np.arange(len(self.leaves))
        child = self.leaves.copy()
        found_nodes, found_sides, found_rows = [], [], []
        while rows.size:
            up = parent[child]
            alive = up >= 0
            rows, child, up = rows[alive], child[alive], up[alive]
            keep = wanted[up]
            found_nodes.append(up[keep])
            found_sides.append((self.high[up[keep]] == child[keep]).astype(np.int8))
            found_rows.append(rows[keep])
            child = up
        a, b, c = (np.concatenate(x) if x else np.zeros(0, np.int64) for x in (found_nodes, found_sides, found_rows))
        order = np.lexsort((b, a))
        return a[order], b[order], c[order]

    def _violations(self, feature: int, sign: int, target: int, suspects: np.ndarray, set_nodes: np.ndarray,
                    limit: int, expected: bool = False) -> list[Violation]:
        """Up to `limit` violating leaf pairs (at most one per split node), each with its witness inputs.
        The first few splits are searched one by one (a refusal usually stops there); the rest at once.
        `expected`: a violation is known to exist (a witness is wanted): the first splits' leaves get
        boxes of their own instead of every leaf's."""
        values = self.values[:, target] * sign
        nodes = np.concatenate([suspects, set_nodes])
        lo, hi = (None, None) if expected or "boxes" not in self._sides else self._leaf_boxes()  # every leaf's, once made
        leaf_row = self.leaf_of
        pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        found: list[Violation] = []
        pending_size = 0

        def sides(index: int) -> list[tuple[np.ndarray, np.ndarray]]:
            node = nodes[index]
            if index < FIRST_ONE_BY_ONE:
                below = leaf_row[self.leaves_under(int(self.low[node]))]
                above = leaf_row[self.leaves_under(int(self.high[node]))]
                if lo is None:  # their boxes alone
                    local[0] = np.concatenate([below, above])
                    local[1], local[2] = self.boxes_of(self.leaves[local[0]])
            else:
                start, middle, end = bounds[index - FIRST_ONE_BY_ONE]
                below, above = rows[start:middle], rows[middle:end]
            return [(below, above)] + ([(above, below)] if index >= suspects.size else [])

        def flush() -> bool:
            """Test the pending pairs at once; record the first violating pair of each node."""
            nonlocal pending, pending_size
            if not pending:
                return False
            pa, pb, owner = (np.concatenate(x) for x in zip(*pending))
            pending, pending_size = [], 0
            if lo is None:  # one split's leaves: index its own boxes
                position = np.full(len(self.leaves), -1, dtype=np.int64)
                position[local[0]] = np.arange(local[0].size)
                box_lo, box_hi, ia, ib = local[1], local[2], position[pa], position[pb]
            else:
                box_lo, box_hi, ia, ib = lo, hi, pa, pb
            hits = np.flatnonzero(_overlapping(ia, ib, feature, box_lo, box_hi))
            seen: set[int] = set()
            for hit in hits:
                if int(owner[hit]) in seen:
                    continue
                seen.add(int(owner[hit]))
                a, b = int(pa[hit]), int(pb[hit])
                pair = [int(ia[hit]), int(ib[hit])]
                found.append(self._witness(a, b, feature, target, box_lo[pair], box_hi[pair]))
                if len(found) >= limit:
                    return True
            return False

        rows = bounds = None
        local: list = [None, None, None]  # the current split's leaf rows and their boxes (one by one)
        for index in range(len(nodes)):
            if index == FIRST_ONE_BY_ONE:  # many splits to search: their leaves and boxes in one walk
                if lo is None:
                    lo, hi = self._leaf_boxes()
                owner_nodes, side, rows = self._sides_of(nodes[FIRST_ONE_BY_ONE:])
                rest = nodes[FIRST_ONE_BY_ONE:]
                bounds = list(zip(np.searchsorted(owner_nodes, rest), np.searchsorted(owner_nodes * 2 + side, rest * 2 + 1),
                                  np.searchsorted(owner_nodes, rest, side="right")))
            for below, above in sides(index):
                ia, ib = np.nonzero(values[below][:, None] > values[above][None, :])
                if ia.size:
                    pending.append((below[ia], above[ib], np.full(ia.size, index)))
                    pending_size += ia.size
            if (index < FIRST_ONE_BY_ONE or pending_size >= PAIRS_PER_BATCH) and flush():
                return found
        flush()
        return found[:limit]

    def _witness(self, a: int, b: int, feature: int, target: int, lo: np.ndarray, hi: np.ndarray) -> Violation:
        """Two float32 inputs, equal except in `feature`, reaching leaf rows a (lower, box lo[0]/hi[0]) and b."""
        point = _inside(np.maximum(lo[0], lo[1]), np.minimum(hi[0], hi[1]))
        low, high = point.copy(), point.copy()
        low[feature] = _inside(lo[0, feature:feature + 1], hi[0, feature:feature + 1])[0]
        b_lo = max(float(lo[1, feature]), float(np.nextafter(low[feature], np.float32(np.inf))))
        high[feature] = _inside(np.asarray([b_lo], np.float32), hi[1, feature:feature + 1])[0]
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


FIRST_ONE_BY_ONE = 4  # splits searched one by one (with their own boxes) before the rest are gathered in one walk
PAIRS_PER_BATCH = 1 << 16


def _overlapping(pa: np.ndarray, pb: np.ndarray, feature: int, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Whether leaf a's box can reach leaf b's by increasing `feature` alone: overlapping in every other
    feature, a starting below b's end on this one, neither box empty (in chunks: bounded memory)."""
    result = np.zeros(pa.size, dtype=bool)
    for start in range(0, pa.size, PAIRS_PER_BATCH):
        a, b = pa[start:start + PAIRS_PER_BATCH], pb[start:start + PAIRS_PER_BATCH]
        overlap = np.maximum(lo[a], lo[b]) < np.minimum(hi[a], hi[b])
        overlap[:, feature] = lo[a, feature] < hi[b, feature]
        nonempty = np.all(lo[a] < hi[a], axis=1) & np.all(lo[b] < hi[b], axis=1)
        result[start:start + PAIRS_PER_BATCH] = np.all(overlap, axis=1) & nonempty
    return result


def _inside(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """A float32 point of each [lo, hi): lo when finite, else just below hi, else 0."""
    lo32, hi32 = lo.astype(np.float32), hi.astype(np.float32)
    below_hi = np.nextafter(hi32, np.float32(-np.inf))
    point = np.where(np.isfinite(lo32), lo32, np.where(np.isfinite(hi32), np.minimum(below_hi, np.float32(0)), 0))
    return np.where(np.isfinite(hi32) & (point >= hi32), below_hi, point).astype(np.float32)


# -- reading the attributes --------------------------------------------------------------------
_READ: dict[int, tuple[onnx.NodeProto, int, str, Ensemble]] = {}  # the last few nodes read (graph check, then proof)
_READ_KEPT = 4


def read_ensemble(node: onnx.NodeProto, n_features: int, label: str) -> Ensemble:
    """The node's trees as flat arrays; TreeRefused naming the attribute when the node is malformed.
    The graph check and the certificate read the same node: the last few reads are kept (by the node
    object itself, held here, so its id cannot be reused while cached)."""
    cached = _READ.get(id(node))
    if cached is not None and cached[0] is node and cached[1] == n_features and cached[2] == label:
        return cached[3]
    ensemble = _read_v5(node, n_features, label) if node.op_type == "TreeEnsemble" else _read_v1(node, n_features, label)
    if len(_READ) >= _READ_KEPT:
        _READ.pop(next(iter(_READ)))
    _READ[id(node)] = (node, n_features, label, ensemble)
    return ensemble


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
    raw_modes = list(mode_attr.strings) if mode_attr else []
    if raw_modes and max(map(len, raw_modes)) > 16:  # no mode word is longer: fixed-width bytes sort fast
        raise TreeRefused(f"{label}: unknown node mode {max(raw_modes, key=len)[:40]!r}")
    mode_words = np.asarray(raw_modes, dtype="S16")
    thresholds = _floats(attrs, "nodes_values")
    count = _same_length(label, {"nodes_treeids": tree_ids, "nodes_nodeids": node_ids, "nodes_featureids": features,
                                 "nodes_truenodeids": true_ids, "nodes_falsenodeids": false_ids,
                                 "nodes_modes": mode_words, "nodes_values": thresholds})
    if count == 0:
        raise TreeRefused(f"{label}: no tree nodes")
    if count > MAX_NODES:
        raise TreeRefused(f"{label}: {count} nodes, over the limit of {MAX_NODES}")
    mode = np.full(len(mode_words), -2, dtype=np.int64)
    for word, number in _MODE_WORDS.items():  # a few comparisons of fixed-width bytes, no sort
        mode[mode_words == word.encode()] = number
    if np.any(mode == -2):
        raise TreeRefused(f"{label}: unknown node mode {mode_words[np.flatnonzero(mode == -2)[0]][:40]!r}")
    interior = mode >= 0
    _finite(label, "nodes_values", thresholds[interior])
    _check_ids(label, "nodes_featureids", features[interior], n_features)
    # ids: a node is (tree id, node id); both bounded by the node count, so nothing is sized by them
    _check_ids(label, "nodes_treeids", tree_ids, count)
    _check_ids(label, "nodes_nodeids", node_ids, count)
    key = tree_ids * count + node_ids
    locate = _locator(tree_ids, node_ids, key, count, label)

    def child(ids: np.ndarray, what: str) -> np.ndarray:
        position, found = locate(tree_ids, ids)
        missing = np.flatnonzero(interior & ~found)
        if missing.size:
            i = int(missing[0])
            raise TreeRefused(f"{label}: node ({int(tree_ids[i])}, {int(node_ids[i])}) has {what} {int(ids[i])}, "
                              "which is not a node of its tree")
        return np.where(interior, position, -1)

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
    ok = (w_tree >= 0) & (w_tree < count) & (w_node >= 0) & (w_node < count)
    target_node, found = locate(np.where(ok, w_tree, 0), np.where(ok, w_node, 0))
    found &= ok
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


def _locator(tree_ids: np.ndarray, node_ids: np.ndarray, key: np.ndarray, count: int, label: str):
    """(tree id, node id) -> (position in the node arrays, found). Converters write trees in order with
    node ids 0..n-1: then a position is the tree's first position plus the node id (no sort, no search)."""
    increasing = bool(np.all(key[1:] > key[:-1]))
    if increasing:
        starts = np.flatnonzero(np.r_[True, tree_ids[1:] != tree_ids[:-1]])
        first = np.repeat(starts, np.diff(np.r_[starts, count]))
        if np.array_equal(node_ids, np.arange(count) - first):  # dense: ids 0..n-1 in every tree
            trees, sizes = tree_ids[starts], np.diff(np.r_[starts, count])

            def dense(query_trees: np.ndarray, query_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
                index = np.minimum(np.searchsorted(trees, query_trees), trees.size - 1)
                ok = (trees[index] == query_trees) & (query_ids >= 0) & (query_ids < sizes[index])
                return np.where(ok, starts[index] + query_ids, 0), ok
            return dense
        order = np.arange(count)
    else:
        order = np.argsort(key, kind="stable")
        repeated = np.flatnonzero(np.diff(key[order]) == 0)
        if repeated.size:
            dup = int(order[repeated[0]])
            raise TreeRefused(f"{label}: node ({int(tree_ids[dup])}, {int(node_ids[dup])}) is defined twice")
    ordered = key[order]

    def search(query_trees: np.ndarray, query_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ok = (query_ids >= 0) & (query_ids < count)
        wanted = query_trees * count + query_ids
        position = np.minimum(np.searchsorted(ordered, np.where(ok, wanted, 0)), count - 1)
        return order[position], ok & (ordered[position] == wanted)
    return search


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
    levels = [roots]
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
        levels.append(nxt)
    if not reached.all():
        i = int(np.flatnonzero(~reached)[0])
        raise TreeRefused(f"{label}: {name(i)} is not reached from any tree's root (a cycle or an orphan)")
    ensemble.tree = tree_of
    ensemble.levels = levels


def describe_violation(ensemble: Ensemble, violation: Violation, sign: int) -> str:
    words = "non-decreasing" if sign > 0 else "non-increasing"
    column = violation.feature
    pair = (f"inputs {_row(violation.low)} and {_row(violation.high)} (equal except column {column}: "
            f"{violation.low[column]:.9g} -> {violation.high[column]:.9g})")
    output = f" (output {violation.target})" if ensemble.n_targets > 1 else ""
    text = (f"tree {violation.tree} is not {words} in input column {column}{output}: "
            f"a leaf of {violation.low_leaf:.9g} is reached before a leaf of {violation.high_leaf:.9g}; {pair}")
    if violation.low_score is not None:
        broken = (violation.high_score - violation.low_score) * sign < 0
        text += (f"; the ensemble's raw score goes {violation.low_score:.9g} -> {violation.high_score:.9g}"
                 + (" (violated by the whole ensemble)" if broken else " (the other trees hide it at these inputs)"))
    return text


def _row(values: np.ndarray) -> str:
    return "[" + ", ".join(f"{float(v):.9g}" for v in values) + "]"
