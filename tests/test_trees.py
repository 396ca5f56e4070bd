"""Tree ensembles and ONNX-ML ops (contract.trees, contract.mlops): the per-tree proof against ONNX
Runtime, the refusals with their reasons, and hostile tree graphs refused before their sizes cost.

Graphs are written with onnx.helper, as the converters write them (ai.onnx.ml opset 1/3 attribute
names, opset 5 TreeEnsemble); every claim about what a graph computes is checked with ONNX Runtime.
"""

from __future__ import annotations

import re

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from contract.certificate import certify
from contract.graph import GraphRefused, IoSpec, check_graph
from contract.trees import read_ensemble

F = 3


def regressor_node(trees: list[dict], op: str = "TreeEnsembleRegressor", **extra) -> onnx.NodeProto:
    """trees: each {"nodes": [(id, feature, mode, threshold, true, false)], "leaves": {id: weight}}."""
    attrs = {k: [] for k in ("nodes_treeids", "nodes_nodeids", "nodes_featureids", "nodes_modes", "nodes_values",
                             "nodes_truenodeids", "nodes_falsenodeids", "target_treeids", "target_nodeids",
                             "target_ids", "target_weights")}
    for t, tree in enumerate(trees):
        for node_id, feature, mode, threshold, true, false in tree["nodes"]:
            for key, value in (("nodes_treeids", t), ("nodes_nodeids", node_id), ("nodes_featureids", feature),
                               ("nodes_modes", mode), ("nodes_values", threshold), ("nodes_truenodeids", true),
                               ("nodes_falsenodeids", false)):
                attrs[key].append(value)
        for node_id, weight in tree["leaves"].items():
            for key, value in (("target_treeids", t), ("target_nodeids", node_id), ("target_ids", 0),
                               ("target_weights", weight)):
                attrs[key].append(value)
    attrs.update(extra)
    return helper.make_node(op, ["features"], ["scores"], domain="ai.onnx.ml", n_targets=1, **attrs)


def stump(feature: int, threshold: float, below: float, above: float, mode: str = "BRANCH_LEQ") -> dict:
    return {"nodes": [(0, feature, mode, threshold, 1, 2), (1, 0, "LEAF", 0.0, 0, 0), (2, 0, "LEAF", 0.0, 0, 0)],
            "leaves": {1: below, 2: above}}


def two_level(values: tuple[float, float, float, float]) -> dict:
    """x0 <= 0 ? (x1 <= 0 ? v0 : v1) : (x1 <= 1 ? v2 : v3): the boxes of v1 and v2 overlap in x1 on (0, 1]."""
    return {"nodes": [(0, 0, "BRANCH_LEQ", 0.0, 1, 2), (1, 1, "BRANCH_LEQ", 0.0, 3, 4), (2, 1, "BRANCH_LEQ", 1.0, 5, 6),
                      (3, 0, "LEAF", 0, 0, 0), (4, 0, "LEAF", 0, 0, 0), (5, 0, "LEAF", 0, 0, 0), (6, 0, "LEAF", 0, 0, 0)],
            "leaves": dict(zip((3, 4, 5, 6), values))}


def model_of(node: onnx.NodeProto, ml_opset: int = 3) -> onnx.ModelProto:
    graph = helper.make_graph([node], "trees", [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", F])],
                              [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", ml_opset)])
    model.ir_version = 10
    return model


def io() -> tuple[list[IoSpec], list[IoSpec]]:
    return [IoSpec("features", "float32", ["batch", F])], [IoSpec("scores", "float32", ["batch", 1])]


def prove(model: onnx.ModelProto, directions: dict[int, str]):
    info = check_graph(model, *io())
    return certify(info, "features", [(c, f"x{c}", d) for c, d in directions.items()], outputs=["scores"])


def ort_scores(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"features": np.asarray(x, dtype=np.float32)})[0][:, 0]


def pair_from(message: str) -> tuple[np.ndarray, np.ndarray]:
    found = re.search(r"inputs (\[[^\]]*\]) and (\[[^\]]*\])", message)
    assert found, message
    return (np.asarray(eval(found.group(1)), dtype=np.float32), np.asarray(eval(found.group(2)), dtype=np.float32))


def test_monotone_ensembles_are_proven_in_every_split_mode():
    trees = [stump(0, 0.5, -1.0, 2.0), stump(0, -1.0, 0.0, 0.5, "BRANCH_LT"), stump(1, 0.0, 1.0, -1.0, "BRANCH_GT"),
             two_level((0.0, 1.0, 1.5, 2.0))]
    model = model_of(regressor_node(trees))
    assert prove(model, {0: "increasing", 1: "increasing"}).ok  # x1: GT stump sends x1 > 0 to its true side (1.0)
    certificate = prove(model, {2: "decreasing"})
    assert certificate.ok and certificate.findings[0].found == "independent"
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, F)).astype(np.float32)
    for column in (0, 1):  # ONNX Runtime agrees: the proven directions hold on sweeps
        up = x.copy()
        up[:, column] += np.abs(rng.standard_normal(200)).astype(np.float32)
        assert np.all(ort_scores(model, up) >= ort_scores(model, x))


def test_the_exact_check_accepts_overlapping_boxes_in_order_and_refuses_naming_an_ort_confirmed_pair():
    # v1 (x0 <= 0, x1 > 0) and v2 (x0 > 0, x1 <= 1) overlap in x1: v1 <= v2 is needed, v0 vs v3 never meet
    fine = model_of(regressor_node([two_level((0.0, 1.0, 1.0, 3.0))]))
    assert prove(fine, {0: "increasing"}).ok
    broken = model_of(regressor_node([stump(2, 0.0, 0.0, 0.1), two_level((0.0, 2.0, 1.0, 3.0))]))
    certificate = prove(broken, {0: "increasing"})
    assert not certificate.ok
    message = certificate.failures[0].message
    assert "tree 1 is not non-decreasing in input column 0" in message and "x0" in message
    low, high = pair_from(message)
    assert np.array_equal(np.delete(low, 0), np.delete(high, 0)) and low[0] < high[0]
    scores = ort_scores(broken, np.stack([low, high]))
    assert scores[1] < scores[0], (low, high, scores)  # ONNX Runtime confirms the violation


def test_a_decreasing_tree_declared_increasing_is_refused_with_the_reversed_direction():
    model = model_of(regressor_node([stump(0, 0.0, 1.0, -1.0)]))
    assert prove(model, {0: "decreasing"}).ok
    certificate = prove(model, {0: "increasing"})
    message = certificate.failures[0].message
    assert not certificate.ok and "is non-increasing, expected non-decreasing" in message
    assert "tree 0 is not non-decreasing in input column 0" in message
    low, high = pair_from(message)
    assert ort_scores(model, np.stack([low, high]))[1] < ort_scores(model, np.stack([low, high]))[0]


def test_set_splits_on_a_monotone_feature_are_refused_and_widen_boxes_on_a_free_one():
    equal_on_x0 = model_of(regressor_node([stump(0, 1.0, 0.0, 1.0, "BRANCH_EQ")]))
    certificate = prove(equal_on_x0, {0: "increasing"})
    assert not certificate.ok and "BRANCH_EQ/NEQ/MEMBER" in certificate.failures[0].message
    # x2 == 1 ? (x0 <= 0 ? 0 : 1) : (x0 <= 0 ? 0 : 1): a free equality split above splits on x0
    free_split = {"nodes": [(0, 2, "BRANCH_EQ", 1.0, 1, 2), (1, 0, "BRANCH_LEQ", 0.0, 3, 4), (2, 0, "BRANCH_LEQ", 0.0, 5, 6),
                            (3, 0, "LEAF", 0, 0, 0), (4, 0, "LEAF", 0, 0, 0), (5, 0, "LEAF", 0, 0, 0), (6, 0, "LEAF", 0, 0, 0)],
                  "leaves": {3: 0.0, 4: 1.0, 5: 0.0, 6: 1.0}}
    # the boxes ignore the equality on x2, so leaves on either side of it are compared too (and must be equal
    # where their boxes overlap on x0: a sound over-approximation)
    assert prove(model_of(regressor_node([free_split])), {0: "increasing"}).ok
    # conservative: with 0.5 in place of 0.0, leaves 0.5 and 0.0 (both x0 <= 0, split only on x2) must be equal
    free_split["leaves"][5] = 0.5
    assert not prove(model_of(regressor_node([free_split])), {0: "increasing"}).ok


def test_softmax_and_non_monotone_post_transforms_are_refused_with_one_plain_sentence_first():
    node = regressor_node([stump(0, 0.0, 0.0, 1.0)])
    node.attribute.append(helper.make_attribute("post_transform", "SOFTMAX"))
    with pytest.raises(GraphRefused) as caught:
        check_graph(model_of(node), *io())
    assert str(caught.value).startswith("tree ensembles and linear models with softmax over classes are not monotone "
                                        "per class and are not served")
    probit = regressor_node([stump(0, 0.0, 0.0, 1.0)], post_transform="PROBIT")
    with pytest.raises(GraphRefused, match="post_transform PROBIT is not served"):
        check_graph(model_of(probit), *io())


def test_other_ml_ops_zipmap_and_normalizer_are_refused_naming_why():
    def graph_with(op: str, **attrs) -> onnx.ModelProto:
        node = helper.make_node(op, ["features"], ["scores"], domain="ai.onnx.ml", **attrs)
        return model_of(node)

    with pytest.raises(GraphRefused, match="Normalizer .* is not monotone in any one feature"):
        check_graph(graph_with("Normalizer", norm="L2"), *io())
    with pytest.raises(GraphRefused, match="op ai.onnx.ml.Imputer is not served"):
        check_graph(graph_with("Imputer", imputed_value_floats=[0.0], replaced_value_float=0.0), *io())
    with pytest.raises(GraphRefused, match=r"zipmap': False"):
        check_graph(graph_with("ZipMap", classlabels_int64s=[0, 1]), *io())


def test_scaler_and_linear_regressor_are_proven_with_their_signs():
    scaler = helper.make_node("Scaler", ["features"], ["scaled"], domain="ai.onnx.ml", offset=[1.0, 0.0, 0.0],
                              scale=[2.0, -0.5, 0.0])
    linear = helper.make_node("LinearRegressor", ["scaled"], ["scores"], domain="ai.onnx.ml",
                              coefficients=[1.0, 1.0, -3.0], intercepts=[0.5], targets=1)
    graph = helper.make_graph([scaler, linear], "linear",
                              [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", F])],
                              [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 1)])
    model.ir_version = 10
    # x0: +2 * +1 -> up; x1: -0.5 * +1 -> down; x2: scale 0 -> independent (despite the -3)
    assert prove(model, {0: "increasing", 1: "decreasing", 2: "increasing"}).ok
    assert not prove(model, {1: "increasing"}).ok
    x = np.random.default_rng(1).standard_normal((50, F)).astype(np.float32)
    expected = (x[:, 0] - 1) * 2 + x[:, 1] * -0.5 + 0.5
    np.testing.assert_allclose(ort_scores(model, x), expected, rtol=1e-5, atol=1e-5)


def test_tree_ensemble_opset_5_is_read_and_proven():
    # tree 0: x0 <= 0 ? leaf0 (0.0) : leaf1 (1.0); tree 1: x1 < 0.5 ? leaf2 (2.0) : leaf3 (1.0) (decreasing in x1)
    node = helper.make_node(
        "TreeEnsemble", ["features"], ["scores"], domain="ai.onnx.ml", n_targets=1, aggregate_function=1, post_transform=0,
        tree_roots=[0, 1], nodes_featureids=[0, 1], nodes_splits=numpy_helper.from_array(np.asarray([0.0, 0.5], np.float32)),
        nodes_modes=numpy_helper.from_array(np.asarray([0, 1], np.uint8)), nodes_truenodeids=[0, 2],
        nodes_trueleafs=[1, 1], nodes_falsenodeids=[1, 3], nodes_falseleafs=[1, 1], leaf_targetids=[0, 0, 0, 0],
        leaf_weights=numpy_helper.from_array(np.asarray([0.0, 1.0, 2.0, 1.0], np.float32)))
    model = model_of(node, ml_opset=5)
    assert prove(model, {0: "increasing", 1: "decreasing"}).ok
    refused = prove(model, {1: "increasing"})
    low, high = pair_from(refused.failures[0].message)
    scores = ort_scores(model, np.stack([low, high]))
    assert scores[1] < scores[0]


# -- hostile tree graphs ---------------------------------------------------------------------------
def hostile(change) -> str:
    node = regressor_node([stump(0, 0.0, 0.0, 1.0), two_level((0.0, 1.0, 1.0, 2.0))])
    change(node)
    with pytest.raises(GraphRefused) as caught:
        check_graph(model_of(node), *io())
    return str(caught.value)


def set_ints(name: str, values: list[int]):
    def change(node: onnx.NodeProto) -> None:
        attribute = next(a for a in node.attribute if a.name == name)
        del attribute.ints[:]
        attribute.ints.extend(values)
    return change


def set_floats(name: str, index: int, value: float):
    def change(node: onnx.NodeProto) -> None:
        attribute = next(a for a in node.attribute if a.name == name)
        attribute.floats[index] = value
    return change


@pytest.mark.parametrize("change, why", [
    (set_floats("nodes_values", 0, float("nan")), r"nodes_values \[0\] is nan"),
    (set_floats("target_weights", 1, float("inf")), r"target_weights \[1\] is inf"),
    (set_ints("nodes_featureids", [99, 0, 0, 0, 1, 1, 0, 0, 0, 0]), r"nodes_featureids \[0\] is 99, outside 0..2"),
    (set_ints("nodes_truenodeids", [1, 0, 0, 1, 3, 9, 0, 0, 0, 0]), r"node \(1, 2\) has nodes_truenodeids 9, which is not a node"),
    (set_ints("nodes_truenodeids", [1, 0, 0, 1, 3, 3, 0, 0, 0, 0]), r"node \(1, 3\) is the child of more than one split"),
    (set_ints("nodes_truenodeids", [0, 0, 0, 1, 3, 5, 0, 0, 0, 0]), "root|cycle"),  # a self-loop at a root
    (set_ints("nodes_nodeids", [0, 1, 2, 0, 1, 2, 3, 4, 5, 2**40]), r"nodes_nodeids \[9\] is 1099511627776"),
    (set_ints("nodes_treeids", [0, 0, 0, 1, 1, 1, 1, 1, 1]), "attribute lengths disagree"),
    (set_ints("target_ids", [0, 0, 0, 0, 0, 7]), r"target_ids \[5\] is 7, outside 0..0"),
])
def test_hostile_tree_graphs_are_refused_naming_the_defect(change, why):
    assert re.search(why, hostile(change)), hostile(change)


def test_declared_sizes_are_refused_before_anything_is_allocated_for_them():
    def huge_targets(node: onnx.NodeProto) -> None:
        next(a for a in node.attribute if a.name == "n_targets").i = 2**40

    assert "n_targets 1099511627776" in hostile(huge_targets)
    # a cycle back to the root: tree 1's node 2 has the root as its false child (node 6 is then an orphan)
    assert re.search("cycle", hostile(set_ints("nodes_falsenodeids", [2, 0, 0, 2, 4, 0, 0, 0, 0, 0])))


def test_read_ensemble_walks_a_deep_chain_without_recursion():
    depth = 600  # a chain of splits, deeper than Python's default recursion would allow per node
    nodes = [(i, 0, "BRANCH_LEQ", float(i), depth + 1 + i, i + 1) for i in range(depth)]
    nodes += [(depth, 0, "LEAF", 0, 0, 0)] + [(depth + 1 + i, 0, "LEAF", 0, 0, 0) for i in range(depth)]
    leaves = {depth: float(depth)} | {depth + 1 + i: float(i) for i in range(depth)}
    node = regressor_node([{"nodes": nodes, "leaves": leaves}])
    ensemble = read_ensemble(node, F, "chain")
    assert ensemble.trees == 1 and len(ensemble.leaves) == depth + 1
    assert ensemble.violation(0, 1, 0) is None and ensemble.violation(0, -1, 0) is not None


@pytest.mark.parametrize("leaves, accepted", [((0.5, 2.0), True), ((-0.25, 2.0), False)])
def test_a_regressor_declared_nonnegative_is_proven_from_its_leaves(tmp_path, leaves, accepted):
    from export.byom import ModelRefusedError, import_onnx

    model = model_of(regressor_node([stump(0, 0.0, *leaves), stump(1, 1.0, 0.0, 0.5)]))
    onnx.save(model, tmp_path / "m.onnx")
    spec = {"kind": "regressor", "features": ["a", "b", "c"], "monotone": {"a": 1, "b": 1}, "nonnegative": True}
    if accepted:
        result = import_onnx(tmp_path / "m.onnx", tmp_path / "repo", "m", spec)
        assert result.manifest.regressor.nonnegative and result.manifest.regressor.monotone_features == ["a", "b"]
    else:
        with pytest.raises(ModelRefusedError, match=r"declared nonnegative, but the graph's output may be negative \(bounds \[-0.25"):
            import_onnx(tmp_path / "m.onnx", tmp_path / "repo", "m", spec)


def test_the_prover_refuses_a_manifest_claiming_nonnegative_scores_the_trees_do_not_give(tmp_path):
    import json

    from export.byom import import_onnx
    from service.repository.prover import prove_version

    model = model_of(regressor_node([stump(0, 0.0, -0.25, 2.0)]))
    onnx.save(model, tmp_path / "m.onnx")
    result = import_onnx(tmp_path / "m.onnx", tmp_path / "repo", "m",
                         {"kind": "regressor", "features": ["a", "b", "c"], "monotone": {"a": 1}})
    manifest = json.loads((result.version_dir / "manifest.json").read_text())
    manifest["regressor"]["nonnegative"] = True  # a publisher's claim the graph does not keep
    (result.version_dir / "manifest.json").write_text(json.dumps(manifest))
    report, proven = prove_version(result.version_dir)
    assert proven is None and report.failed_step.step == "constraints"
    assert "declared nonnegative, but its output 'scores' may be negative (bounds [-0.25" in report.reason


def test_multi_label_trees_one_logistic_output_per_label_are_proven_per_column_and_imported(tmp_path):
    """TreeEnsembleClassifier with three classes and LOGISTIC: each column is sigmoid(its own trees' sum)
    (ONNX Runtime confirms), proven per column; imported as a three-label classifier."""
    from export.byom import import_onnx

    trees = [stump(0, 0.0, -1.0, 1.0), stump(1, 0.5, 0.5, -0.5), stump(0, 1.0, 0.0, 2.0)]
    node = regressor_node(trees, op="TreeEnsembleClassifier")
    for attribute in list(node.attribute):  # regressor_node writes target_*: rename to class_*, one class per tree
        if attribute.name.startswith("target_") or attribute.name == "n_targets":
            node.attribute.remove(attribute)
    node.attribute.extend([helper.make_attribute("class_treeids", [0, 0, 1, 1, 2, 2]),
                           helper.make_attribute("class_nodeids", [1, 2, 1, 2, 1, 2]),
                           helper.make_attribute("class_ids", [0, 0, 1, 1, 2, 2]),
                           helper.make_attribute("class_weights", [-1.0, 1.0, 0.5, -0.5, 0.0, 2.0]),
                           helper.make_attribute("classlabels_int64s", [0, 1, 2]),
                           helper.make_attribute("post_transform", "LOGISTIC")])
    del node.output[:]
    node.output.extend(["label", "probabilities"])
    graph = helper.make_graph([node], "multi", [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", F])],
                              [helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"]),
                               helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)])
    model.ir_version = 10
    x = np.random.default_rng(3).standard_normal((64, F)).astype(np.float32)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    sums = np.stack([np.where(x[:, 0] <= 0, -1.0, 1.0), np.where(x[:, 1] <= 0.5, 0.5, -0.5),
                     np.where(x[:, 0] <= 1.0, 0.0, 2.0)], axis=1)
    np.testing.assert_allclose(session.run(["probabilities"], {"features": x})[0], 1 / (1 + np.exp(-sums)), rtol=1e-6)
    onnx.save(model, tmp_path / "multi.onnx")
    spec = {"kind": "classifier", "features": ["a", "b", "c"], "labels": ["p", "q", "r"], "output": "probabilities",
            "monotone": {"a": 1, "b": -1}}
    result = import_onnx(tmp_path / "multi.onnx", tmp_path / "repo", "multi", spec)
    assert result.manifest.outputs[0].shape == ["batch", 3]
    refused = {"kind": "classifier", "features": ["a", "b", "c"], "labels": ["p", "q", "r"], "output": "probabilities",
               "monotone": {"b": 1}}  # column q falls with b
    with pytest.raises(Exception, match="feature 'b'"):
        import_onnx(tmp_path / "multi.onnx", tmp_path / "repo2", "multi", refused)
