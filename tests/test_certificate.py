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


# -- soundness: what may not be trusted ---------------------------------------------------------
def _with_hidden(nodes_after_h0, last_input, inits=None):
    """features -> layer0 -> <nodes_after_h0> -> layer1 (reads `last_input`)."""
    nodes = [helper.make_node("Gemm", ["features", "w0", "b0"], ["h0"], name="layer0", transB=1), *nodes_after_h0,
             helper.make_node("Gemm", [last_input, "w1", "b1"], ["scores"], name="layer1", transB=1)]
    return graph_model(nodes, {"w0": POSITIVE_W0, "b0": np.zeros(2), "w1": POSITIVE_W1, "b1": np.zeros(1), **(inits or {})})


def test_zero_times_an_unproven_term_stays_unproven():
    # x * x is unproven; multiplying it by 0 must not make it "independent" (inf * 0 is NaN).
    nodes = [helper.make_node("Mul", ["h0", "h0"], ["square"], name="square"),
             helper.make_node("Mul", ["square", "zero"], ["nothing"], name="times_zero"),
             helper.make_node("Add", ["h0", "nothing"], ["h1"], name="add")]
    certificate = certify(_with_hidden(nodes, "h1", {"zero": np.zeros(1)}), "features", ALL_INCREASING)
    assert not certificate.ok and certificate.failures[0].node.startswith("square")


@pytest.mark.parametrize("chain, ok", [
    ([("Relu", "h0", "r"), ("Add", "r", "one", "s"), ("Log", "s", "out")], True),  # log1p(max(x, 0)): input >= 1
    ([("Relu", "h0", "r"), ("Log", "r", "out")], False),  # log(0) = -inf
    ([("Sigmoid", "h0", "r"), ("Log", "r", "out")], False),  # a sigmoid underflows to 0 in float32
    ([("Relu", "h0", "r"), ("Sqrt", "r", "out")], True),
    ([("Sqrt", "h0", "out")], False),
    ([("Tanh", "h0", "r"), ("Exp", "r", "out")], True),  # exp of a bounded value cannot overflow
    ([("Exp", "h0", "out")], True),  # monotone: the overflow is the graph checks' to refuse
])
def test_log_and_sqrt_only_where_the_bounds_allow(chain, ok):
    nodes = [helper.make_node(op, list(args[:-1]), [args[-1]], name=f"n_{op.lower()}") for op, *args in chain]
    model = _with_hidden(nodes, "out", {"one": np.ones(1)})
    assert certify(model, "features", ALL_INCREASING).ok is ok


@pytest.mark.parametrize("exponent, ok", [(3.0, True), (2.0, False), (0.5, False), (-1.0, False)])
def test_pow_of_a_signed_base(exponent, ok):
    # tanh bounds the base, so an odd power cannot overflow; it is monotone on a signed base
    nodes = [helper.make_node("Tanh", ["h0"], ["t"], name="bound"), helper.make_node("Pow", ["t", "p"], ["out"], name="power")]
    model = _with_hidden(nodes, "out", {"p": np.array(exponent)})
    assert certify(model, "features", ALL_INCREASING).ok is ok
    unbounded = _with_hidden([helper.make_node("Pow", ["h0", "p"], ["out"], name="power")], "out", {"p": np.array(3.0)})
    assert "may overflow to inf" in certify(unbounded, "features", ALL_INCREASING).summary()


@pytest.mark.parametrize("op, attrs", [("ThresholdedRelu", {"alpha": -1.0}), ("Celu", {"alpha": 0.0}),
                                       ("HardSigmoid", {"alpha": -0.2}), ("Cast", {"to": TensorProto.INT32})])
def test_attributes_that_break_monotonicity(op, attrs):
    nodes = [helper.make_node(op, ["h0"], ["a0"], name="act0", **attrs)]
    if op == "Cast":
        nodes.append(helper.make_node("Cast", ["a0"], ["a1"], name="back", to=TensorProto.FLOAT))
    certificate = certify(_with_hidden(nodes, "a1" if op == "Cast" else "a0"), "features", ALL_INCREASING)
    assert not certificate.ok and certificate.failures[0].node.startswith("act0")


def test_seeding_an_inner_tensor_holds_its_producer_fixed():
    from contract.certificate import GraphInfo, output_layer

    nodes = [helper.make_node("Relu", ["h0"], ["a0"], name="act0"),
             helper.make_node("Mul", ["a0", "calib"], ["scaled"], name="calibration")]
    model = _with_hidden(nodes, "scaled", {"calib": np.array(-2.0)})
    info = GraphInfo.build(model)
    layer = output_layer(info, "scores")
    assert layer.node.startswith("layer1") and layer.data_input == "scaled" and np.all(layer.values >= 0)
    # the calibration scale is negative but comes before the output layer: the score rises with its input
    assert certify(info, "scaled", [(None, "scaled", "increasing")]).ok
    assert not certify(info, "features", ALL_INCREASING).ok  # ...and falls with every feature


# -- default deny (contract.graph) --------------------------------------------------------------
def _io(n_features=N_FEATURES, width=1):
    from contract.graph import IoSpec

    return [IoSpec("features", "float32", ["batch", n_features])], [IoSpec("scores", "float32", ["batch", width])]


def test_an_honest_graph_passes_the_graph_checks():
    from contract.graph import check_graph

    info = check_graph(mlp(POSITIVE_W0, POSITIVE_W1), *_io())
    assert info.hazards == [] and "w0" in info.constants


@pytest.mark.parametrize("edit, fragment", [
    (lambda m: m.graph.output[0].__setattr__("name", "other") or m.graph.node[-1].output.__setitem__(0, "other"),
     "the graph's outputs are ['other'], the manifest's are ['scores']"),
    (lambda m: m.opset_import.append(helper.make_opsetid("com.microsoft", 1)), "imports opset domain 'com.microsoft'"),
    (lambda m: m.opset_import.append(helper.make_opsetid("ai.onnx.ml", 9)), "imports ai.onnx.ml opset 9"),
    (lambda m: m.graph.node.insert(0, helper.make_node("Sin", ["features"], ["unused"], name="off_path")),
     "node off_path (#0 Sin -> unused): op Sin is not modelled"),
    (lambda m: m.graph.node[3].CopyFrom(helper.make_node("Div", ["logits", "logits"], ["scores"], name="head")),
     "node head (#3 Div -> scores) divides by 'logits', which may be 0"),
    (lambda m: m.graph.node.insert(2, helper.make_node("Cast", ["a0"], ["a0_half"], name="half", to=TensorProto.FLOAT16)),
     "node half (#2 Cast -> a0_half) casts 'a0' to FLOAT16"),
])
def test_the_graph_checks_refuse_naming_the_culprit(edit, fragment):
    from contract.graph import GraphRefused, check_graph

    model = mlp(POSITIVE_W0, POSITIVE_W1)
    edit(model)
    with pytest.raises(GraphRefused) as refused:
        check_graph(model, *_io())
    assert any(fragment in p for p in refused.value.problems), refused.value.problems


def test_a_lying_value_info_does_not_change_the_shapes_the_proof_uses():
    from contract.certificate import GraphInfo

    model = mlp(POSITIVE_W0, POSITIVE_W1)
    model.graph.value_info.append(helper.make_tensor_value_info("h0", TensorProto.FLOAT, ["batch", 3]))  # really 2
    assert GraphInfo.build(model).last_dims["h0"] == 2


@pytest.mark.parametrize("threshold, f_op, ok", [(20.0, "Softplus", True), (1.0, "Softplus", False), (0.0, "Relu", True),
                                                 (-1.0, "Sigmoid", False)])
def test_where_greater_threshold_pattern_of_torch_softplus(threshold, f_op, ok):
    # torch exports softplus as Where(X > 20, X, Softplus(X)): monotone because Softplus(20) rounds to 20 in float32.
    from contract.graph import check_graph

    nodes = [helper.make_node(f_op, ["h0"], ["fx"], name="f"),
             helper.make_node("Greater", ["h0", "c"], ["above"], name="above"),
             helper.make_node("Where", ["above", "h0", "fx"], ["a0"], name="switch")]
    model = _with_hidden(nodes, "a0", {"c": np.array(threshold)})
    certificate = certify(model, "features", ALL_INCREASING)
    assert certificate.ok is ok, certificate.summary()
    if ok:
        check_graph(model, *_io())
    else:
        assert certificate.failures[0].node.startswith("switch") and "steps down" in certificate.summary()


def test_where_with_a_condition_computed_otherwise_is_unproven():
    nodes = [helper.make_node("Greater", ["h0", "c"], ["above"], name="above"),
             helper.make_node("Neg", ["h0"], ["negated"], name="neg"),
             helper.make_node("Where", ["above", "h0", "negated"], ["a0"], name="switch")]
    certificate = certify(_with_hidden(nodes, "a0", {"c": np.array(0.0)}), "features", ALL_INCREASING)
    assert not certificate.ok
