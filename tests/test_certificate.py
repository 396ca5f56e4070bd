"""The monotonicity certificate on small hand-built ONNX graphs (no torch), and on exported ones."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from contract.certificate import certify

N_FEATURES = 3


def graph_model(nodes, initializers: dict[str, np.ndarray], n_features: int = N_FEATURES, output: str = "scores",
                out_width: int | None = 1) -> onnx.ModelProto:
    inputs = [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", n_features])]
    outputs = [helper.make_tensor_value_info(output, TensorProto.FLOAT, ["batch", out_width] if out_width else None)]
    inits = [numpy_helper.from_array(np.asarray(v, dtype=np.float32 if np.asarray(v).dtype.kind == "f" else np.asarray(v).dtype), k)
             for k, v in initializers.items()]
    graph = helper.make_graph(nodes, "g", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.checker.check_model(model)
    return model


def mlp(w0, w1, *, extra_nodes=(), first_input="features", hidden_act="Relu", inits=None) -> onnx.ModelProto:
    """features -> Gemm(w0, transB) -> act -> Gemm(w1, transB) -> Sigmoid -> scores."""
    nodes = [*extra_nodes,
             helper.make_node("Gemm", [first_input, "w0", "b0"], ["h0"], name="layer0", transB=1),
             helper.make_node(hidden_act, ["h0"], ["a0"], name="act0"),
             helper.make_node("Gemm", ["a0", "w1", "b1"], ["logits"], name="layer1", transB=1),
             helper.make_node("Sigmoid", ["logits"], ["scores"], name="head")]
    w0, w1 = np.asarray(w0, np.float32), np.asarray(w1, np.float32)
    initializers = {"w0": w0, "b0": np.full(w0.shape[0], -0.3), "w1": w1, "b1": np.zeros(w1.shape[0]), **(inits or {})}
    return graph_model(nodes, initializers, out_width=w1.shape[0])


POSITIVE_W0 = np.array([[0.5, 0.2, 0.1], [0.3, 0.0, 0.7]])
POSITIVE_W1 = np.array([[0.4, 0.9]])
ALL_INCREASING = [(i, f"f{i}", "increasing") for i in range(N_FEATURES)]


def test_nonnegative_mlp_is_certified_for_every_feature():
    certificate = certify(mlp(POSITIVE_W0, POSITIVE_W1), "features", ALL_INCREASING)
    assert certificate.ok, certificate.summary()
    assert len(certificate.findings) == N_FEATURES


def test_the_same_graph_is_refused_for_a_decreasing_claim():
    certificate = certify(mlp(POSITIVE_W0, POSITIVE_W1), "features", [(0, "f0", "decreasing")])
    assert not certificate.ok
    assert "non-decreasing, expected non-increasing" in certificate.summary()


def test_a_negative_hidden_weight_is_refused_naming_the_layer():
    w1 = POSITIVE_W1.copy()
    w1[0, 1] = -0.9
    certificate = certify(mlp(POSITIVE_W0, w1), "features", ALL_INCREASING)
    assert not certificate.ok
    failure = certificate.failures[0]
    assert failure.node is not None and "layer1" in failure.node
    assert "layer1" in certificate.summary() and "opposite directions" in certificate.summary()


def test_a_negative_first_layer_column_only_matters_for_its_feature():
    # A free feature (column 2) may have negative weights: features 0 and 1 are still provable.
    w0 = POSITIVE_W0.copy()
    w0[:, 2] = [-0.4, 0.6]
    model = mlp(w0, POSITIVE_W1)
    assert certify(model, "features", [(0, "f0", "increasing"), (1, "f1", "increasing")]).ok
    refused = certify(model, "features", [(2, "f2", "increasing")])
    assert not refused.ok
    # The proof breaks where layer1 mixes the directions; the message names layer0 as their source.
    assert refused.failures[0].node.startswith("layer1") and "reversed earlier at layer0" in refused.failures[0].message


def test_direction_signs_and_standardization_give_decreasing_features():
    nodes = [helper.make_node("Sub", ["features", "mean"], ["centred"], name="centre"),
             helper.make_node("Div", ["centred", "scale"], ["standard"], name="standardize"),
             helper.make_node("Mul", ["standard", "direction"], ["signed"], name="directions")]
    inits = {"mean": np.array([1.0, -2.0, 0.5]), "scale": np.array([2.0, 0.5, 1.0]), "direction": np.array([1.0, -1.0, 1.0])}
    model = mlp(POSITIVE_W0, POSITIVE_W1, extra_nodes=nodes, first_input="signed", inits=inits)
    features = [(0, "f0", "increasing"), (1, "f1", "decreasing"), (2, "f2", "increasing")]
    certificate = certify(model, "features", features)
    assert certificate.ok, certificate.summary()
    wrong = certify(model, "features", [(1, "f1", "increasing")])
    assert not wrong.ok and "directions" in wrong.summary()  # names the node that reversed it


def test_an_inserted_negative_scaling_node_is_named():
    nodes = [helper.make_node("Mul", ["features", "evil"], ["scaled"], name="inserted_mul")]
    model = mlp(POSITIVE_W0, POSITIVE_W1, extra_nodes=nodes, first_input="scaled", inits={"evil": np.array([-1.0, 1.0, 1.0])})
    certificate = certify(model, "features", ALL_INCREASING)
    assert [f.feature for f in certificate.failures] == ["f0"]
    assert certificate.failures[0].node.startswith("inserted_mul")
    assert "non-increasing, expected non-decreasing" in certificate.failures[0].message


@pytest.mark.parametrize("divisor, ok", [(np.array([2.0, 3.0, 4.0]), True), (np.array([-2.0, -3.0, -4.0]), False),
                                          (np.array([2.0, 0.0, 4.0]), False), (np.array([2.0, -1.0, 4.0]), False)])
def test_division_only_by_constants_of_one_strict_sign(divisor, ok):
    nodes = [helper.make_node("Div", ["features", "d"], ["scaled"], name="divide")]
    model = mlp(POSITIVE_W0, POSITIVE_W1, extra_nodes=nodes, first_input="scaled", inits={"d": divisor})
    certificate = certify(model, "features", [(0, "f0", "increasing")])
    assert certificate.ok is ok
    if not ok:
        assert "divide" in certificate.summary()


def test_neg_twice_is_increasing_again_and_sub_from_constant_flips():
    nodes = [helper.make_node("Neg", ["features"], ["n1"], name="neg1"),
             helper.make_node("Sub", ["c", "n1"], ["s1"], name="c_minus")]  # c - (-x) = c + x
    model = mlp(POSITIVE_W0, POSITIVE_W1, extra_nodes=nodes, first_input="s1", inits={"c": np.array(1.0)})
    assert certify(model, "features", ALL_INCREASING).ok


@pytest.mark.parametrize("op, attrs, ok", [
    ("Relu", {}, True), ("Tanh", {}, True), ("Softplus", {}, True), ("Elu", {"alpha": 1.0}, True),
    ("LeakyRelu", {"alpha": 0.1}, True), ("LeakyRelu", {"alpha": -0.5}, False), ("Abs", {}, False),
    ("Sin", {}, False),
])
def test_activations(op, attrs, ok):
    nodes = [helper.make_node("Gemm", ["features", "w0", "b0"], ["h0"], name="layer0", transB=1),
             helper.make_node(op, ["h0"], ["a0"], name="act0", **attrs),
             helper.make_node("Gemm", ["a0", "w1", "b1"], ["scores"], name="layer1", transB=1)]
    model = graph_model(nodes, {"w0": POSITIVE_W0, "b0": np.zeros(2), "w1": POSITIVE_W1, "b1": np.zeros(1)})
    certificate = certify(model, "features", ALL_INCREASING)
    assert certificate.ok is ok
    if not ok:
        assert "act0" in certificate.failures[0].node


def test_adding_opposite_directions_is_refused_at_the_add():
    nodes = [helper.make_node("Neg", ["features"], ["neg"], name="neg"),
             helper.make_node("Add", ["features", "neg"], ["zeroish"], name="mix"),
             helper.make_node("MatMul", ["zeroish", "w"], ["scores"], name="mm")]
    model = graph_model(nodes, {"w": np.ones((3, 1))})
    certificate = certify(model, "features", [(0, "f0", "increasing")])
    assert not certificate.ok and certificate.failures[0].node.startswith("mix")


def test_matmul_with_a_weight_transposed_by_a_constant_node_and_reshapes():
    # W is stored [out, in] and transposed by a Transpose node: the certificate folds constants.
    nodes = [helper.make_node("Transpose", ["w_stored"], ["w"], name="t", perm=[1, 0]),
             helper.make_node("Unsqueeze", ["features", "axis0"], ["x3"], name="unsq"),
             helper.make_node("MatMul", ["x3", "w"], ["h"], name="mm"),
             helper.make_node("Squeeze", ["h", "axis0"], ["scores"], name="sq")]
    model = graph_model(nodes, {"w_stored": np.array([[0.2, 0.3, 0.4]]), "axis0": np.array([0], dtype=np.int64)})
    assert certify(model, "features", ALL_INCREASING).ok
    flipped = graph_model(nodes, {"w_stored": np.array([[0.2, -0.3, 0.4]]), "axis0": np.array([0], dtype=np.int64)})
    certificate = certify(flipped, "features", ALL_INCREASING)
    assert [f.feature for f in certificate.failures] == ["f1"]


def test_a_weight_computed_at_run_time_is_not_trusted():
    # w = features^T-derived tensor: not a constant, so the product cannot be certified.
    nodes = [helper.make_node("Shape", ["features"], ["shape"], name="shape"),
             helper.make_node("Cast", ["shape"], ["shape_f"], name="cast", to=TensorProto.FLOAT),
             helper.make_node("Mul", ["features", "shape_f"], ["scores_all"], name="times_shape"),
             helper.make_node("ReduceSum", ["scores_all", "axes"], ["scores"], name="sum", keepdims=1)]
    model = graph_model(nodes, {"axes": np.array([1], dtype=np.int64)})
    certificate = certify(model, "features", [(0, "f0", "increasing")])
    assert not certificate.ok and "times_shape" in certificate.failures[0].node
    assert "not a constant" in certificate.failures[0].message


def test_unsupported_op_on_the_path_is_named_but_off_the_path_is_harmless():
    on_path = [helper.make_node("Gemm", ["features", "w0", "b0"], ["h0"], name="layer0", transB=1),
               helper.make_node("Cos", ["h0"], ["c"], name="mystery"),
               helper.make_node("Gemm", ["c", "w1", "b1"], ["scores"], name="layer1", transB=1)]
    inits = {"w0": POSITIVE_W0, "b0": np.zeros(2), "w1": POSITIVE_W1, "b1": np.zeros(1)}
    certificate = certify(graph_model(on_path, inits), "features", ALL_INCREASING)
    assert not certificate.ok and certificate.failures[0].node.startswith("mystery")
    assert "not supported" in certificate.failures[0].message
    off_path = [helper.make_node("Cos", ["features"], ["unused"], name="mystery"),
                helper.make_node("Gemm", ["features", "w0", "b0"], ["h0"], name="layer0", transB=1),
                helper.make_node("Relu", ["h0"], ["a0"], name="act0"),
                helper.make_node("Gemm", ["a0", "w1", "b1"], ["scores"], name="layer1", transB=1)]
    assert certify(graph_model(off_path, inits), "features", ALL_INCREASING).ok


def test_gemm_alpha_and_trans_flags():
    # Weight stored [in, out] (transB=0) with alpha -1: every score decreases in every feature.
    nodes = [helper.make_node("Gemm", ["features", "w", "b"], ["scores"], name="g", alpha=-1.0, transB=0)]
    model = graph_model(nodes, {"w": np.array([[0.1], [0.2], [0.0]]), "b": np.zeros(1)})
    assert certify(model, "features", [(0, "f0", "decreasing"), (1, "f1", "decreasing")]).ok
    assert certify(model, "features", [(2, "f2", "increasing")]).ok  # zero weight: independent
    assert not certify(model, "features", [(0, "f0", "increasing")]).ok


def test_smoother_shaped_graph_conv_with_positive_and_negative_kernels():
    def smoother(kernel):
        inputs = [helper.make_tensor_value_info("signal", TensorProto.FLOAT, ["b", "c", "l"])]
        outputs = [helper.make_tensor_value_info("full", TensorProto.FLOAT, None)]
        nodes = [helper.make_node("Shape", ["signal"], ["shape"], name="shape"),
                 helper.make_node("Reshape", ["signal", "flat_shape"], ["flat"], name="flatten"),
                 helper.make_node("Pad", ["flat", "pads"], ["padded"], name="pad", mode="edge"),
                 helper.make_node("Conv", ["padded", "kernel"], ["conv"], name="conv"),
                 helper.make_node("Reshape", ["conv", "out_shape"], ["full"], name="unflatten")]
        inits = [numpy_helper.from_array(np.asarray(kernel, np.float32).reshape(1, 1, -1), "kernel"),
                 numpy_helper.from_array(np.array([-1, 1, 0], np.int64), "flat_shape"),
                 numpy_helper.from_array(np.array([0, 0, 2, 0, 0, 2], np.int64), "pads"),
                 numpy_helper.from_array(np.array([1, -1, 0], np.int64), "out_shape")]
        return helper.make_model(helper.make_graph(nodes, "s", inputs, outputs, inits), opset_imports=[helper.make_opsetid("", 18)])

    assert certify(smoother([0.2, 0.3, 0.5]), "signal", [(None, "signal", "increasing")]).ok
    refused = certify(smoother([0.2, -0.3, 0.5]), "signal", [(None, "signal", "increasing")])
    assert not refused.ok and refused.failures[0].node.startswith("conv") and "negative at" in refused.failures[0].message


def test_columns_survive_reshapes_that_keep_the_last_axis_only():
    # Flip feature 1 via a per-column sign vector after a Reshape to [batch, 1, 3] (last axis kept).
    nodes = [helper.make_node("Reshape", ["features", "shape3"], ["x3"], name="to3d"),
             helper.make_node("Mul", ["x3", "signs"], ["signed"], name="signs"),
             helper.make_node("Reshape", ["signed", "shape2"], ["x2"], name="to2d"),
             helper.make_node("MatMul", ["x2", "w"], ["scores"], name="mm")]
    inits = {"shape3": np.array([-1, 1, 3], np.int64), "shape2": np.array([-1, 3], np.int64),
             "signs": np.array([1.0, -1.0, 1.0]), "w": np.ones((3, 1))}
    model = graph_model(nodes, inits)
    assert certify(model, "features", [(0, "f0", "increasing"), (1, "f1", "decreasing")]).ok
    # Transposing the last axis away loses the column structure: signs of both kinds then mix.
    swapped = [helper.make_node("Transpose", ["features"], ["t"], name="transpose", perm=[1, 0]),
               helper.make_node("Mul", ["t", "col_signs"], ["signed"], name="signs"),
               helper.make_node("Transpose", ["signed"], ["back"], name="back", perm=[1, 0]),
               helper.make_node("MatMul", ["back", "w"], ["scores"], name="mm")]
    model = graph_model(swapped, {"col_signs": np.array([[1.0], [-1.0], [1.0]]), "w": np.ones((3, 1))})
    assert not certify(model, "features", [(0, "f0", "increasing")]).ok


def test_exported_classifier_and_smoother_graphs(tmp_path):
    from service_fixtures import CLASSIFIER_DIRECTIONS, CLASSIFIER_FEATURES, reference_repo

    repo = reference_repo()
    classifier = onnx.load(str(repo / "classifier" / "1" / "model.onnx"))
    features = [(i, name, d) for i, (name, d) in enumerate(zip(CLASSIFIER_FEATURES, CLASSIFIER_DIRECTIONS)) if d != "free"]
    certificate = certify(classifier, "features", features)
    assert certificate.ok, certificate.summary()
    free = CLASSIFIER_DIRECTIONS.index("free")
    assert not certify(classifier, "features", [(free, "region", "increasing")]).ok  # unconstrained column
    smoother = onnx.load(str(repo / "smoother" / "1" / "model.onnx"))
    assert certify(smoother, "signal", [(None, "signal", "increasing")]).ok
