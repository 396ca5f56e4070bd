"""How long the load-time proof of a big tree ensemble takes (docs/performance.md, "Tree ensembles").

Trains LightGBM models of TREES trees with up to LEAVES leaves over FEATURES features on generated
data (every feature constrained, alternating increasing / decreasing), with each monotone
constraints method (basic, intermediate, advanced) and XGBoost's, converts them with onnxmltools
(default options), then times what the service does with the graph, on one core: the graph step
(contract.graph.check_graph: reading every tree, the hostile-input checks, the bounds) and the
certificate (contract.certificate.certify over every constrained feature, the per-tree proof).

    taskset -c 0 python -m bench.trees [--trees 1000] [--leaves 255] [--features 30] [--out bench/results/trees.json]

The models are cached under bench/results/trees-cache/ (training takes minutes; the proof is what is timed).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np

log = logging.getLogger("bench.trees")


def train(library: str, method: str, trees: int, leaves: int, features: int, cache: Path) -> Path:
    path = cache / f"{library}-{method}-{trees}x{leaves}x{features}.onnx"
    if path.exists():
        return path
    import onnx
    from onnxmltools import convert_lightgbm, convert_xgboost
    from onnxmltools.convert.common.data_types import FloatTensorType

    rng = np.random.default_rng(0)
    x = rng.standard_normal((20_000, features)).astype(np.float32)
    signs = np.where(np.arange(features) % 2 == 0, 1, -1)
    y = (x * signs).sum(axis=1) + np.sin(3 * x).sum(axis=1) + rng.standard_normal(len(x))
    types = [("features", FloatTensorType([None, features]))]
    if library == "lightgbm":
        import lightgbm

        model = lightgbm.LGBMRegressor(n_estimators=trees, num_leaves=leaves, min_child_samples=5, learning_rate=0.05,
                                       monotone_constraints=signs.tolist(), monotone_constraints_method=method,
                                       verbose=-1, n_jobs=1).fit(x, y)
        onnx_model = convert_lightgbm(model, initial_types=types)
    else:
        import xgboost

        model = xgboost.XGBRegressor(n_estimators=trees, max_leaves=leaves, grow_policy="lossguide", max_depth=0,
                                     monotone_constraints=tuple(signs.tolist()), tree_method="hist", n_jobs=1).fit(x, y)
        onnx_model = convert_xgboost(model, initial_types=types)
    cache.mkdir(parents=True, exist_ok=True)
    onnx.save(onnx_model, path)
    return path


def synthetic(trees: int, leaves: int, features: int, cache: Path, seed: int = 0) -> Path:
    """TREES trees of exactly LEAVES leaves, grown leaf-wise at random, monotone by construction (each split
    on feature f bounds its sides' values around a midpoint, as XGBoost does): the full-size case."""
    path = cache / f"synthetic-{trees}x{leaves}x{features}.onnx"
    if path.exists():
        return path
    import onnx
    from onnx import TensorProto, helper

    rng = np.random.default_rng(seed)
    signs = np.where(np.arange(features) % 2 == 0, 1, -1)
    columns: dict[str, list] = {k: [] for k in ("tree", "node", "feature", "mode", "value", "true", "false")}
    weights: dict[str, list] = {k: [] for k in ("tree", "node", "weight")}
    for t in range(trees):
        bounds = {0: (-1.0, 1.0)}  # open leaves and the value interval each must respect
        splits: dict[int, tuple[int, float, int, int]] = {}
        next_id = 1
        while len(bounds) < leaves:
            node = list(bounds)[rng.integers(len(bounds))]
            low, high = bounds.pop(node)
            feature = int(rng.integers(features))
            mid = rng.uniform(low, high)
            below, above = ((low, mid), (mid, high)) if signs[feature] > 0 else ((mid, high), (low, mid))
            bounds[next_id], bounds[next_id + 1] = below, above
            splits[node] = (feature, float(rng.standard_normal()), next_id, next_id + 1)
            next_id += 2
        for node in range(next_id):
            columns["tree"].append(t)
            columns["node"].append(node)
            if node in splits:
                feature, threshold, left, right = splits[node]
                values = (feature, "BRANCH_LEQ", threshold, left, right)
            else:
                values = (0, "LEAF", 0.0, 0, 0)
                weights["tree"].append(t)
                weights["node"].append(node)
                weights["weight"].append(float(rng.uniform(*bounds[node])))
            for key, value in zip(("feature", "mode", "value", "true", "false"), values):
                columns[key].append(value)
    node = helper.make_node(
        "TreeEnsembleRegressor", ["features"], ["variable"], domain="ai.onnx.ml", n_targets=1,
        nodes_treeids=columns["tree"], nodes_nodeids=columns["node"], nodes_featureids=columns["feature"],
        nodes_modes=columns["mode"], nodes_values=columns["value"], nodes_truenodeids=columns["true"],
        nodes_falsenodeids=columns["false"], target_treeids=weights["tree"], target_nodeids=weights["node"],
        target_ids=[0] * len(weights["tree"]), target_weights=weights["weight"])
    graph = helper.make_graph([node], "synthetic", [helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, features])],
                              [helper.make_tensor_value_info("variable", TensorProto.FLOAT, [None, 1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("ai.onnx.ml", 3), helper.make_opsetid("", 17)])
    model.ir_version = 8
    cache.mkdir(parents=True, exist_ok=True)
    onnx.save(model, path)
    return path


def prove(path: Path, features: int) -> dict:
    import onnx

    from contract.certificate import certify
    from contract.graph import IoSpec, check_graph
    from export.mlprep import with_default_opset

    model = with_default_opset(onnx.load(str(path)))
    output = model.graph.output[0].name
    signs = np.where(np.arange(features) % 2 == 0, 1, -1)
    start = time.perf_counter()
    info = check_graph(model, [IoSpec(model.graph.input[0].name, "float32", ["batch", features])],
                       [IoSpec(output, "float32", ["batch", 1])])
    graph_seconds = time.perf_counter() - start
    plan = [(i, f"f{i}", "increasing" if s > 0 else "decreasing") for i, s in enumerate(signs)]
    start = time.perf_counter()
    certificate = certify(info, model.graph.input[0].name, plan, outputs=[output])
    certificate_seconds = time.perf_counter() - start
    node = next(n for n in model.graph.node if n.domain == "ai.onnx.ml")
    leaves = sum(1 for m in next(a for a in node.attribute if a.name == "nodes_modes").strings if m == b"LEAF")
    trees = len(set(next(a for a in node.attribute if a.name == "nodes_treeids").ints))
    return {"file": path.name, "trees": trees, "leaves": leaves, "proved": certificate.ok,
            "graph_seconds": round(graph_seconds, 3), "certificate_seconds": round(certificate_seconds, 3),
            "total_seconds": round(graph_seconds + certificate_seconds, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trees", type=int, default=1000)
    parser.add_argument("--leaves", type=int, default=255)
    parser.add_argument("--features", type=int, default=30)
    parser.add_argument("--cache", type=Path, default=Path("bench/results/trees-cache"))
    parser.add_argument("--out", type=Path, default=Path("bench/results/trees.json"))
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    results = []
    path = synthetic(args.trees, args.leaves, args.features, args.cache)
    runs = [prove(path, args.features) for _ in range(args.repeat)]
    best = min(runs, key=lambda r: r["total_seconds"])
    best["method"] = "synthetic, monotone by construction"
    best["runs_total_seconds"] = [r["total_seconds"] for r in runs]
    log.info("%s: %s", best["method"], json.dumps(best))
    results.append(best)
    for library, method in (("lightgbm", "basic"), ("lightgbm", "intermediate"), ("lightgbm", "advanced"), ("xgboost", "exact")):
        path = train(library, method, args.trees, args.leaves, args.features, args.cache)
        runs = [prove(path, args.features) for _ in range(args.repeat)]
        best = min(runs, key=lambda r: r["total_seconds"])
        best["method"] = f"{library} {method}"
        best["runs_total_seconds"] = [r["total_seconds"] for r in runs]
        log.info("%s: %s", best["method"], json.dumps(best))
        results.append(best)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"trees": args.trees, "leaves": args.leaves, "features": args.features,
                                    "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
