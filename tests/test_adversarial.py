"""The adversarial corpus: versions crafted as a hostile publisher would, each refused by the proof.

Every case copies a real exported version, edits it, then reseals it (recomputes every checksum
and the probe's expected output with ONNX Runtime), so that only the proof itself can catch the
edit. Each must be refused with a reason that names the node, tensor or file. Honest exports of
every kind, parametrization, scope, method and direction pass; random honest monotone classifiers
built directly with onnx.helper pass, and a random sign flip of one of their weights is refused.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Callable

import httpx
import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from contract.manifest import Manifest
from contract.policy import Policy
from service.repository.prover import STEPS, prove_version
from service_fixtures import copy_version, edit_onnx, fresh_repo, reseal

OPSET = 20


@pytest.fixture
def repo(tmp_path):
    return fresh_repo(tmp_path, models=("smoother", "classifier"))


# -- editing helpers ----------------------------------------------------------------------------
def node_named(model: onnx.ModelProto, op: str, occurrence: int = 0) -> tuple[int, onnx.NodeProto]:
    found = [(i, n) for i, n in enumerate(model.graph.node) if n.op_type == op]
    return found[occurrence]


def initializer(model: onnx.ModelProto, name: str) -> onnx.TensorProto:
    return next(i for i in model.graph.initializer if i.name == name)


def add_constant(model: onnx.ModelProto, name: str, value) -> str:
    array = np.asarray(value)
    if array.dtype == np.float64:
        array = array.astype(np.float32)
    model.graph.initializer.append(numpy_helper.from_array(array, name))
    return name


def rewire(model: onnx.ModelProto, old: str, new: str, skip: onnx.NodeProto | None = None) -> None:
    """Every consumer of `old` (but `skip`) reads `new` instead."""
    for node in model.graph.node:
        if node is skip:
            continue
        node.input[:] = [new if name == old else name for name in node.input]


def insert_after(model: onnx.ModelProto, tensor: str, nodes: list[onnx.NodeProto], result: str) -> None:
    """Insert `nodes` (which read `tensor`) right after its producer, and make every other consumer read `result`."""
    graph = model.graph
    producer = next((i for i, n in enumerate(graph.node) if tensor in n.output), -1)
    for node in graph.node:  # the inserted nodes are not in the graph yet: they keep reading `tensor`
        node.input[:] = [result if name == tensor else name for name in node.input]
    for offset, node in enumerate(nodes):
        graph.node.insert(producer + 1 + offset, node)
    for output in graph.output:
        if output.name == tensor:
            output.name = result


def edit_manifest(version_dir: Path, change: Callable[[dict], None]) -> None:
    path = version_dir / "manifest.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def seal(version_dir: Path) -> None:
    """Recompute checksums and, when ONNX Runtime can run the edited graph, the probe's expected output."""
    try:
        reseal(version_dir)
    except Exception:  # the runtime refuses it too (e.g. external data outside the model's folder)
        reseal(version_dir, refresh_probe=False)


# -- the corpus ---------------------------------------------------------------------------------
# Each case: (model, edit of the ONNX graph or None, edit of the manifest or None, refusing step, fragments).
def _graph_output_renamed(data: dict) -> None:
    data["outputs"][0]["name"] = "ghost"


def _extra_output(model):
    model.graph.output.append(helper.make_tensor_value_info("conv1d", TensorProto.FLOAT, None))


def _initializer_as_input(model):
    model.graph.input.append(helper.make_tensor_value_info("kernel", TensorProto.FLOAT, [1, 1, 9]))


def _dynamic_feature_axis(model):
    model.graph.input[0].type.tensor_type.shape.dim[1].ClearField("dim_value")
    model.graph.input[0].type.tensor_type.shape.dim[1].dim_param = "n"


def _sparse_output_weight(model):
    dense = initializer(model, "layers.2.weight")
    values = -np.abs(numpy_helper.to_array(dense)).reshape(-1)
    model.graph.initializer.remove(dense)
    indices = numpy_helper.from_array(np.arange(values.size, dtype=np.int64), "layers.2.weight_indices")
    sparse = helper.make_sparse_tensor(numpy_helper.from_array(values.astype(np.float32), "layers.2.weight"),
                                       indices, list(dense.dims))
    model.graph.sparse_initializer.append(sparse)


def _duplicate_kernel(model):
    kernel = numpy_helper.to_array(initializer(model, "kernel"))
    model.graph.initializer.append(numpy_helper.from_array(-kernel[..., ::-1].copy(), "kernel"))


def _node_output_shadows_initializer(model):
    index, conv = node_named(model, "Conv")
    model.graph.node.insert(index, helper.make_node("Neg", ["signal"], ["kernel"], name="shadow"))


def _external(location: str, folder_of_file: Callable[[Path], Path]):
    def edit(version_dir: Path) -> None:
        def change(model):
            kernel = initializer(model, "kernel")
            data = (-numpy_helper.to_array(kernel)).astype(np.float32).tobytes()
            (folder_of_file(version_dir) / Path(location).name).write_bytes(data)
            kernel.ClearField("raw_data")
            kernel.data_location = TensorProto.EXTERNAL
            for key, value in (("location", location), ("offset", "0"), ("length", str(len(data)))):
                entry = kernel.external_data.add()
                entry.key, entry.value = key, value
        edit_onnx(version_dir, change)
    return edit


def _two_data_fields(model):
    kernel = initializer(model, "kernel")
    kernel.float_data.extend((-numpy_helper.to_array(kernel)).reshape(-1).tolist())


def _replace_op(op: str, **attrs):
    def edit(model):
        index, relu = node_named(model, "Relu")
        model.graph.node[index].CopyFrom(helper.make_node(op, list(relu.input), list(relu.output), name=f"evil_{op.lower()}", **attrs))
    return edit


def _cast_to_int(model):
    _, relu = node_named(model, "Relu")
    insert_after(model, relu.output[0], [
        helper.make_node("Cast", [relu.output[0]], ["as_int"], name="wrap_cast", to=TensorProto.INT8),
        helper.make_node("Cast", ["as_int"], ["back_to_float"], name="back_cast", to=TensorProto.FLOAT)], "back_to_float")


def _reversed_taps(model):
    _, conv = node_named(model, "Conv")
    add_constant(model, "taps_reversed", np.arange(8, -1, -1, dtype=np.int64))
    index, _ = node_named(model, "Conv")
    model.graph.node.insert(index, helper.make_node("Gather", ["kernel", "taps_reversed"], ["kernel_used"], name="reorder_taps", axis=2))
    conv.input[1] = "kernel_used"


def _negated_output_layer(model):
    _, last = node_named(model, "Gemm", 2)
    add_constant(model, "minus_one", np.array(-1.0))
    index, _ = node_named(model, "Gemm", 2)
    model.graph.node.insert(index, helper.make_node("Mul", [last.input[1], "minus_one"], ["w_negated"], name="negate_weight"))
    last.input[1] = "w_negated"


def _zero_times_unproven(model):
    _, last = node_named(model, "Gemm", 0)  # into the first layer: the output layer stays locatable
    add_constant(model, "zeros4", np.zeros(4))
    add_constant(model, "ones41", np.ones((4, 1)))
    nodes = [helper.make_node("Mul", ["features", "features"], ["squares"], name="square"),
             helper.make_node("Mul", ["squares", "zeros4"], ["nothing"], name="times_zero"),
             helper.make_node("MatMul", ["nothing", "ones41"], ["nothing_sum"], name="sum_nothing"),
             helper.make_node("Add", [last.output[0], "nothing_sum"], ["logits_plus"], name="add_nothing")]
    insert_after(model, last.output[0], nodes, "logits_plus")


def _exp_overflow_times_zero(model):
    _, last = node_named(model, "Gemm", 2)
    add_constant(model, "zeros4", np.zeros(4))
    add_constant(model, "ones41", np.ones((4, 1)))
    nodes = [helper.make_node("Exp", ["features"], ["grown"], name="overflowing_exp"),
             helper.make_node("Mul", ["grown", "zeros4"], ["nothing"], name="times_zero"),
             helper.make_node("MatMul", ["nothing", "ones41"], ["nothing_sum"], name="sum_nothing"),
             helper.make_node("Add", [last.output[0], "nothing_sum"], ["logits_plus"], name="add_nothing")]
    insert_after(model, last.output[0], nodes, "logits_plus")


def _log_of_relu(model):
    _, relu = node_named(model, "Relu")
    insert_after(model, relu.output[0], [helper.make_node("Log", [relu.output[0]], ["logged"], name="log_of_relu")], "logged")


def _divide_by_centred(model):
    _, sub = node_named(model, "Sub")
    insert_after(model, sub.output[0], [helper.make_node("Div", [sub.output[0], sub.output[0]], ["ratio"], name="self_divide")], "ratio")


def _output_falls(model):
    _, conv = node_named(model, "Conv")
    insert_after(model, conv.output[0], [helper.make_node("Neg", [conv.output[0]], ["falling"], name="turn_down")], "falling")


def _offset_after_conv(model):
    # monotone, but the served fast paths (direct, FFT) would answer without the offset
    _, conv = node_named(model, "Conv")
    add_constant(model, "five", np.array(5.0))
    insert_after(model, conv.output[0], [helper.make_node("Add", [conv.output[0], "five"], ["shifted"], name="shift_up")], "shifted")


def _reflect_padding(model):
    _, pad = node_named(model, "Pad")
    for attr in pad.attribute:
        if attr.name == "mode":
            attr.s = b"reflect"


def _negative_tap(model):
    kernel = initializer(model, "kernel")
    values = numpy_helper.to_array(kernel).copy()
    values[..., 0] = -0.05
    kernel.CopyFrom(numpy_helper.from_array(values, "kernel"))


def _subgraph(model):
    _, relu = node_named(model, "Relu")
    then = helper.make_graph([helper.make_node("Neg", [relu.output[0]], ["then_out"])], "then", [],
                             [helper.make_tensor_value_info("then_out", TensorProto.FLOAT, None)])
    other = helper.make_graph([helper.make_node("Identity", [relu.output[0]], ["else_out"])], "else", [],
                              [helper.make_tensor_value_info("else_out", TensorProto.FLOAT, None)])
    add_constant(model, "flag", np.array(True))
    insert_after(model, relu.output[0], [helper.make_node("If", ["flag"], ["branch"], name="branching", then_branch=then,
                                                          else_branch=other)], "branch")


def _local_function(model):
    function = helper.make_function("evil", "Flip", ["x"], ["y"], [helper.make_node("Neg", ["x"], ["y"])],
                                    [helper.make_opsetid("", OPSET)])
    model.functions.append(function)
    model.opset_import.append(helper.make_opsetid("evil", 1))
    _, relu = node_named(model, "Relu")
    insert_after(model, relu.output[0], [helper.make_node("Flip", [relu.output[0]], ["flipped"], name="call_flip", domain="evil")], "flipped")


def _custom_domain(model):
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    _, relu = node_named(model, "Relu")
    insert_after(model, relu.output[0], [helper.make_node("Gelu", [relu.output[0]], ["gelu"], name="ms_gelu", domain="com.microsoft")], "gelu")


def _unknown_op(model):
    _, relu = node_named(model, "Relu")
    insert_after(model, relu.output[0], [helper.make_node("Abs", [relu.output[0]], ["absolute"], name="abs_value")], "absolute")


def _dropout_training(model):
    add_constant(model, "train", np.array(True))
    add_constant(model, "ratio", np.array(0.5, dtype=np.float32))
    _, relu = node_named(model, "Relu")
    insert_after(model, relu.output[0], [helper.make_node("Dropout", [relu.output[0], "ratio", "train"], ["dropped"],
                                                          name="random_drop")], "dropped")


def _clip_runtime_bound(model):
    _, relu = node_named(model, "Relu")
    add_constant(model, "zero_index", np.array(0, dtype=np.int64))
    nodes = [helper.make_node("Shape", ["features"], ["feature_shape"], name="shape_of_features"),
             helper.make_node("Gather", ["feature_shape", "zero_index"], ["batch_size"], name="batch_size"),
             helper.make_node("Cast", ["batch_size"], ["batch_float"], name="batch_float", to=TensorProto.FLOAT),
             helper.make_node("Clip", [relu.output[0], "batch_float"], ["clipped"], name="clip_at_runtime")]
    insert_after(model, relu.output[0], nodes, "clipped")


def _drop_constraints(data):
    data["constraints"] = []


def _negate_output_weight(model):
    weight = initializer(model, "layers.2.weight")
    weight.CopyFrom(numpy_helper.from_array(-numpy_helper.to_array(weight), "layers.2.weight"))


def _scope_final_all_free(data):
    data["classifier"]["scope"] = "final"
    data["classifier"]["monotone_features"] = []
    for feature in data["classifier"]["features"]:
        feature["direction"] = "free"


def _drop_monotone_features(data):
    data["classifier"]["monotone_features"] = []


def _smoother_rules_dropped(data):
    data["constraints"] = [c for c in data["constraints"] if c["rule"] != "monotone_nondecreasing"]


CORPUS = {
    # the manifest's io names are trusted
    "manifest output not in the graph": ("smoother", None, _graph_output_renamed, "graph", ["['full']", "['ghost']"]),
    "extra graph output": ("smoother", _extra_output, None, "graph", ["['full', 'conv1d']"]),
    "initializer listed as an input": ("smoother", _initializer_as_input, None, "graph", ["['signal', 'kernel']"]),
    "input axis made dynamic": ("classifier", _dynamic_feature_axis, None, "graph", ["graph input 'features' axis 1"]),
    # tensors read differently from ONNX Runtime
    "sparse initializer": ("classifier", _sparse_output_weight, None, "graph", ["sparse_initializer 'layers.2.weight'"]),
    "duplicate initializer name": ("smoother", _duplicate_kernel, None, "graph", ["tensor name 'kernel' is defined twice"]),
    "node output shadows an initializer": ("smoother", _node_output_shadows_initializer, None, "graph",
                                           ["'kernel' is defined twice", "shadow"]),
    "two data fields in one tensor": ("smoother", _two_data_fields, None, "graph", ["initializer 'kernel'", "raw_data, float_data"]),
    # attributes and dtypes
    "threshold attribute below zero": ("classifier", _replace_op("ThresholdedRelu", alpha=-2.0), None, "graph",
                                       ["evil_thresholdedrelu", "alpha -2 < 0"]),
    "leaky relu with a negative slope": ("classifier", _replace_op("LeakyRelu", alpha=-0.5), None, "graph",
                                         ["evil_leakyrelu", "alpha -0.5"]),
    "cast to an integer type": ("classifier", _cast_to_int, None, "graph", ["wrap_cast", "Cast", "INT8"]),
    # data movement between the checked tensor and its consumer
    "taps reordered before the Conv": ("smoother", _reversed_taps, None, "constraints",
                                       ["Conv", "model.onnx:kernel_used", "monotone_nondecreasing violated"]),
    "output layer negated by a constant node": ("classifier", _negated_output_layer, None, "constraints",
                                                ["model.onnx:w_negated", "nonnegative violated"]),
    # 0 * unproven, NaN/Inf from finite input
    "zero times an unproven term": ("classifier", _zero_times_unproven, None, "certificate", ["square"]),
    "exp overflow times zero": ("classifier", _exp_overflow_times_zero, None, "graph", ["overflowing_exp", "inf from finite input"]),
    "log of a value that may be zero": ("classifier", _log_of_relu, None, "graph", ["log_of_relu", "may be <= 0"]),
    "division by a value that may be zero": ("classifier", _divide_by_centred, None, "graph", ["self_divide", "may be 0"]),
    # what the service must refuse whatever the manifest says
    "negative kernel tap": ("smoother", _negative_tap, None, "constraints", ["model.onnx:kernel[0, 0, 0]: positive violated"]),
    "smoother output falls when a sample rises": ("smoother", _output_falls, None, "constraints",
                                                  ["turn_down", "stands between the Conv"]),
    "offset added after the Conv": ("smoother", _offset_after_conv, None, "constraints", ["shift_up", "only reshaped"]),
    "padding mode changed": ("smoother", _reflect_padding, None, "constraints", ["Pad", "edge replication"]),
    "smoother rule dropped from the manifest": ("smoother", None, _smoother_rules_dropped, "constraints",
                                                ["'monotone_nondecreasing'", "policy"]),
    "constraints dropped, output layer negated": ("classifier", _negate_output_weight, _drop_constraints, "constraints",
                                                  ["policy", "'nonnegative' output layer"]),
    "scope final, every feature free, output layer negated": (
        "classifier", _negate_output_weight, _scope_final_all_free, "constraints", ["model.onnx:layers.2.weight", "nonnegative violated"]),
    "monotone_features dropped": ("classifier", None, _drop_monotone_features, "constraints", ["monotone_features omits"]),
    # what the proof does not model
    "subgraph": ("classifier", _subgraph, None, "graph", ["branching", "subgraph"]),
    "local function": ("classifier", _local_function, None, "graph", ["local function evil.Flip"]),
    "custom domain op": ("classifier", _custom_domain, None, "graph", ["'com.microsoft'"]),
    "unknown op": ("classifier", _unknown_op, None, "graph", ["abs_value", "op Abs is not modelled"]),
    "dropout in training mode": ("classifier", _dropout_training, None, "graph", ["random_drop", "training_mode"]),
    "clip bound computed at run time": ("classifier", _clip_runtime_bound, None, "graph", ["clip_at_runtime", "Clip bound 'batch_float' is not a constant"]),
}


def craft(repo: Path, case: str, number: int = 2) -> Path:
    model, graph_edit, manifest_edit, _, _ = CORPUS[case]
    bad = copy_version(repo, model, 1, number)
    if graph_edit is not None:
        edit_onnx(bad, graph_edit)
    if manifest_edit is not None:
        edit_manifest(bad, manifest_edit)
    seal(bad)
    return bad


@pytest.mark.parametrize("case", sorted(CORPUS))
def test_the_corpus_is_refused_naming_the_culprit(repo, case):
    step, fragments = CORPUS[case][3], CORPUS[case][4]
    report, proven = prove_version(craft(repo, case))
    assert proven is None, report.render()
    failed = report.failed_step
    assert failed is not None and failed.step == step, report.render()
    for fragment in fragments:
        assert fragment in failed.message, (fragment, failed.message)


@pytest.mark.parametrize("location, where", [("kernel.bin", "inside"), ("../../outside.bin", "outside")])
def test_external_data_is_refused_inside_or_outside_the_version(repo, location, where):
    bad = copy_version(repo, "smoother", 1, 2)
    folder = (lambda d: d) if where == "inside" else (lambda d: d.parent.parent)
    _external(location, folder)(bad)
    seal(bad)
    report, _ = prove_version(bad)
    assert report.failed_step.step == "graph", report.render()
    assert f"initializer 'kernel' stores its data externally (location {location!r})" in report.reason


def test_the_probe_of_a_crafted_version_was_recomputed(repo):
    # The corpus really is hostile: the probe agrees with the edited graph, so only the proof refuses it.
    bad = craft(repo, "taps reordered before the Conv")
    report, _ = prove_version(bad, policy=Policy())
    assert report.failed_step.step == "constraints"
    import onnxruntime as ort

    manifest = Manifest.read(bad)
    session = ort.InferenceSession(str(bad / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {"signal": np.asarray(manifest.probe.input, dtype=np.float32)})[0]
    np.testing.assert_allclose(got, np.asarray(manifest.probe.expected), rtol=1e-6, atol=1e-6)


def test_scope_final_downgrade_is_refused_by_a_stricter_policy(repo):
    # Scope final with every feature free is a legitimate model under the default policy (its output
    # layer is still checked); an operator who needs monotone features refuses it by setting.
    bad = copy_version(repo, "classifier", 1, 2)
    edit_manifest(bad, _scope_final_all_free)
    seal(bad)
    report, _ = prove_version(bad)
    assert report.ok, report.render()
    strict, _ = prove_version(bad, policy=Policy(allow_free_features=False))
    assert strict.failed_step.step == "constraints"
    assert "refuses free features" in strict.reason and "'clicks'" in strict.reason
    decreasing, _ = prove_version(repo / "classifier" / "1", policy=Policy(allow_decreasing_features=False))
    assert "['complaints'] are decreasing" in decreasing.reason


# One case of each class of hole, through the real CLI (a process each: one per class keeps it quick).
ONE_PER_CLASS = ["manifest output not in the graph", "sparse initializer", "cast to an integer type",
                 "taps reordered before the Conv", "zero times an unproven term", "log of a value that may be zero",
                 "constraints dropped, output layer negated", "subgraph"]


def run_verify(path: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "monoserve.cli", "verify", str(path)], capture_output=True, text=True,
                          timeout=120, env={**os.environ, **(env or {})})


@pytest.mark.parametrize("case", ONE_PER_CLASS)
def test_verify_cli_refuses_one_case_of_each_class(repo, case):
    result = run_verify(craft(repo, case))
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"FAILED at {CORPUS[case][3]}" in result.stdout
    assert all(fragment in result.stdout for fragment in CORPUS[case][4]), result.stdout


def test_verify_cli_applies_the_policy_settings(repo):
    strict = run_verify(repo / "classifier" / "1", env={"MONOSERVE_ALLOW_FREE_FEATURES": "false"})
    assert strict.returncode == 1 and "refuses free features" in strict.stdout
    assert run_verify(repo / "classifier" / "1").returncode == 0


def test_running_service_refuses_the_whole_corpus_and_keeps_serving_the_good_versions(repo):
    from test_service_e2e import free_port, start_server, stop, wait_ready

    numbers: dict[str, int] = {"smoother": 1, "classifier": 1}
    crafted = {}
    for case in sorted(CORPUS):
        model = CORPUS[case][0]
        numbers[model] += 1
        crafted[case] = (model, numbers[model])
        craft(repo, case, numbers[model])
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = start_server(repo, port)
    try:
        wait_ready(process, base)
        assert httpx.post(f"{base}/smooth", json={"signal": [1.0, 2.0, 3.0]}).json()["version"] == 1
        assert httpx.post(f"{base}/classify", json={"instances": [[1, 2, 3, 4]]}).json()["version"] == 1
        details = {name: httpx.get(f"{base}/models/{name}").json() for name in numbers}
        assert all(detail["serving_version"] == 1 for detail in details.values())
        for case, (model, number) in crafted.items():
            version = next(v for v in details[model]["versions"] if v["version"] == number)
            reason = version["report"]["reason"]
            assert version["state"] == "refused" and reason.startswith(f"{CORPUS[case][3]}:"), (case, reason)
            assert all(fragment in reason for fragment in CORPUS[case][4]), (case, reason)
    finally:
        stop(process)


# -- honest exports pass --------------------------------------------------------------------------
HONEST = {
    "smoother-expcumsum-raw": dict(kind="smoother", param="exp-cumsum", normalize=False),
    "smoother-softmax": dict(kind="smoother", param="softmax", normalize=True),
    "classifier-all-project": dict(kind="classifier", scope="all", method="project",
                                   directions=["increasing", "decreasing", "free"]),
    "classifier-final-reparam": dict(kind="classifier", scope="final", method="reparam",
                                     directions=["increasing"] * 3),
    "classifier-final-project": dict(kind="classifier", scope="final", method="project",
                                     directions=["increasing"] * 3),
}


@pytest.fixture(scope="module")
def honest_repo(tmp_path_factory):
    import torch

    from export.core import export_checkpoint
    from models.checkpoint import save_checkpoint
    from models.classifier import ClassifierConfig, MonotoneClassifier
    from models.smoother import MonotoneSmoother, SmootherConfig

    root = tmp_path_factory.mktemp("honest")
    repo = root / "repo"
    torch.manual_seed(0)
    for name, spec in HONEST.items():
        if spec["kind"] == "smoother":
            model = MonotoneSmoother(SmootherConfig(kernel_size=7, param=spec["param"], normalize=spec["normalize"]))
        else:
            config = ClassifierConfig(feature_names=["a", "b", "c"], hidden=[5], scope=spec["scope"],
                                      method=spec["method"], directions=spec["directions"])
            model = MonotoneClassifier(config)
            with torch.no_grad():
                for layer in model.layers:
                    layer.bias.copy_(torch.randn_like(layer.bias) * 0.1)
                model.project_()
        checkpoint = save_checkpoint(root / f"{name}.ckpt", model, metrics={"fixture": True})
        export_checkpoint(checkpoint, repo, name=name, formats=("onnx",))
    return repo


@pytest.mark.parametrize("name", sorted(HONEST))
def test_honest_exports_pass(honest_repo, name):
    report, proven = prove_version(honest_repo / name / "1")
    assert report.ok, report.render()
    assert [s.step for s in report.steps] == list(STEPS)


@pytest.mark.parametrize("name", ["smoother", "classifier", "multilabel"])
def test_reference_exports_pass(tmp_path, name):
    repo = fresh_repo(tmp_path, models=(name,))
    report, _ = prove_version(repo / name / "1")
    assert report.ok, report.render()
    assert all(s.status == "ok" for s in report.steps)


# -- property: random honest monotone classifiers ---------------------------------------------------
ACTIVATIONS = [("Relu", {}), ("LeakyRelu", {"alpha": 0.1}), ("Tanh", {}), ("Sigmoid", {}), ("Softplus", {}),
               ("Elu", {"alpha": 1.0}), ("LeakyRelu", {"alpha": 0.0})]


@st.composite
def honest_classifiers(draw):
    n_features = draw(st.integers(1, 4))
    widths = draw(st.lists(st.integers(1, 4), min_size=0, max_size=2))
    n_labels = draw(st.integers(1, 2))
    sizes = [n_features, *widths, n_labels]
    weights = [np.asarray(draw(st.lists(st.floats(0.05, 2.0), min_size=a * b, max_size=a * b)), np.float32).reshape(b, a)
               for a, b in zip(sizes[:-1], sizes[1:])]
    activations = [draw(st.sampled_from(ACTIVATIONS)) for _ in widths]
    directions = draw(st.lists(st.sampled_from(["increasing", "decreasing"]), min_size=n_features, max_size=n_features))
    log1p = draw(st.booleans())
    calibrate = draw(st.booleans())
    return dict(weights=weights, activations=activations, directions=directions, log1p=log1p, calibrate=calibrate)


def classifier_graph(spec: dict) -> onnx.ModelProto:
    """features -> [log1p(max(x, 0))] -> direction signs -> Gemm/act ... -> Gemm -> [a * z + b] -> Sigmoid."""
    weights, n_features = spec["weights"], spec["weights"][0].shape[1]
    n_labels = weights[-1].shape[0]
    inits = {"signs": np.array([-1.0 if d == "decreasing" else 1.0 for d in spec["directions"]], np.float32)}
    nodes, current = [], "features"
    if spec["log1p"]:
        inits["one"] = np.array(1.0, np.float32)
        nodes += [helper.make_node("Relu", [current], ["nonneg"], name="clamp"),
                  helper.make_node("Add", ["nonneg", "one"], ["shifted"], name="plus_one"),
                  helper.make_node("Log", ["shifted"], ["log1p"], name="log")]
        current = "log1p"
    nodes.append(helper.make_node("Mul", [current, "signs"], ["signed"], name="directions"))
    current = "signed"
    for index, weight in enumerate(weights):
        inits[f"w{index}"], inits[f"b{index}"] = weight, np.full(weight.shape[0], 0.1, np.float32)
        nodes.append(helper.make_node("Gemm", [current, f"w{index}", f"b{index}"], [f"z{index}"], name=f"layer{index}", transB=1))
        current = f"z{index}"
        if index < len(weights) - 1:
            op, attrs = spec["activations"][index]
            nodes.append(helper.make_node(op, [current], [f"a{index}"], name=f"act{index}", **attrs))
            current = f"a{index}"
    if spec["calibrate"]:
        inits["scale"], inits["bias"] = np.array(1.7, np.float32), np.array(-0.3, np.float32)
        nodes += [helper.make_node("Mul", [current, "scale"], ["scaled"], name="calibration_scale"),
                  helper.make_node("Add", ["scaled", "bias"], ["calibrated"], name="calibration_bias")]
        current = "calibrated"
    nodes.append(helper.make_node("Sigmoid", [current], ["scores"], name="head"))
    graph = helper.make_graph(
        nodes, "random_classifier",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", n_features])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", n_labels])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 10
    onnx.checker.check_model(model)
    return model


_COUNTER = iter(range(10**9))


def publish(root: Path, spec: dict, model: onnx.ModelProto) -> Path:
    """A version directory for `model`: the manifest, its checksums and probe, as export would write them."""
    template = Manifest.read(fresh_template())
    version_dir = root / "random" / str(next(_COUNTER) + 1)
    version_dir.mkdir(parents=True)
    onnx.save(model, str(version_dir / "model.onnx"))
    n_features, n_labels = spec["weights"][0].shape[1], spec["weights"][-1].shape[0]
    data = json.loads(template.to_json())
    data.update(name="random", version=int(version_dir.name))
    data["inputs"] = [{"name": "features", "dtype": "float32", "shape": ["batch", n_features]}]
    data["outputs"] = [{"name": "scores", "dtype": "float32", "shape": ["batch", n_labels]}]
    last = len(spec["weights"]) - 1
    # Only the output layer is declared (all the policy requires): a flip in a hidden layer is then
    # the certificate's to catch, not the manifest's rule check.
    data["constraints"] = [{"tensor": f"layers.{last}.weight", "rule": "nonnegative", "locations": {"onnx": f"w{last}"}}]
    names = [f"f{i}" for i in range(n_features)]
    data["classifier"] = {"features": [{"name": n, "direction": d} for n, d in zip(names, spec["directions"])],
                          "labels": [f"label{j}" for j in range(n_labels)], "scope": "all", "method": "reparam",
                          "monotone_features": names}
    data["probe"] = {"input": np.linspace(-2, 3, 3 * n_features).reshape(3, n_features).tolist(),
                     "expected": [], "atol": 1e-5, "rtol": 1e-5}
    (version_dir / "manifest.json").write_text(json.dumps(data))
    reseal(version_dir)
    return version_dir


def fresh_template() -> Path:
    from service_fixtures import reference_repo

    return reference_repo() / "classifier" / "1"


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec=honest_classifiers(), data=st.data())
def test_random_honest_classifiers_pass_and_sign_flips_are_refused(tmp_path, spec, data):
    honest = publish(tmp_path, spec, classifier_graph(spec))
    report, _ = prove_version(honest)
    assert report.ok, report.render()

    layer = data.draw(st.integers(0, len(spec["weights"]) - 1), label="layer")
    weight = spec["weights"][layer]
    row = data.draw(st.integers(0, weight.shape[0] - 1), label="row")
    column = data.draw(st.integers(0, weight.shape[1] - 1), label="column")
    flipped_weights = [w.copy() for w in spec["weights"]]
    flipped_weights[layer][row, column] *= -1
    flipped = {**spec, "weights": flipped_weights}
    report, proven = prove_version(publish(tmp_path, flipped, classifier_graph(flipped)))
    assert proven is None, f"flip of w{layer}[{row}, {column}] was not refused:\n{report.render()}"
    assert report.failed_step.step in ("constraints", "certificate")
    assert re.search(r"\b(w|layer|act)\d", report.reason), report.reason  # names the node or tensor


@st.composite
def monotone_kernels(draw):
    steps = draw(st.lists(st.floats(0.0, 1.0), min_size=9, max_size=9))
    kernel = np.cumsum(np.asarray(steps) + 1e-3)  # positive, non-decreasing
    return (kernel / kernel.sum()).astype(np.float32)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kernel=monotone_kernels(), data=st.data())
def test_random_positive_monotone_kernels_pass_and_a_broken_order_is_refused(tmp_path, kernel, data):
    repo = tmp_path / f"r{next(_COUNTER)}"
    repo.mkdir()
    repo = fresh_repo(repo, models=("smoother",))
    good = copy_version(repo, "smoother", 1, 2)
    edit_onnx(good, lambda m: initializer(m, "kernel").CopyFrom(numpy_helper.from_array(kernel.reshape(1, 1, -1), "kernel")))
    seal(good)
    report, proven = prove_version(good)
    assert report.ok, report.render()
    np.testing.assert_array_equal(proven.tensors["kernel"].reshape(-1), kernel)  # the fast paths get the proven kernel

    tap = data.draw(st.integers(0, 7), label="tap")
    broken = kernel.copy()
    broken[tap], broken[tap + 1] = kernel[tap + 1] + 0.01, kernel[tap]  # tap now exceeds the next one
    bad = copy_version(repo, "smoother", 1, 3)
    edit_onnx(bad, lambda m: initializer(m, "kernel").CopyFrom(numpy_helper.from_array(broken.reshape(1, 1, -1), "kernel")))
    seal(bad)
    report, proven = prove_version(bad)
    assert proven is None and report.failed_step.step == "constraints"
    assert f"model.onnx:kernel[0, 0, {tap + 1}]: monotone_nondecreasing violated" in report.reason
