"""Bring your own model: users' own modules and ONNX files, exported with only a declaration, served, and compared.

Small modules written as users write them (tests/byom/user_models.py) are trained for a few steps,
published through both entry points (the Python API export.byom and the CLI `monoserve export
--module` / `monoserve import`), proven by the service's own prover, served by a real server, and
their answers (/smooth, /classify, OIP) compared with the eager modules'. Each planted mistake is
refused with the tensor named and nothing published.
"""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from contract.manifest import Manifest
from contract.spec import SpecError, load_spec, parse_spec
from export.byom import ModelRefusedError, export_module, import_onnx
from monoserve.cli import main as monoserve_main

sys.path.insert(0, str(Path(__file__).parent))
from byom.user_models import (  # noqa: E402
    ChannelLoopFir,
    ClampedClassifier,
    Fir1dCumsum,
    Fir1dSoftmax,
    MixingFir,
    ParametrizedMonotoneNet,
    SquaringFir,
    train_classifier,
    train_smoother,
)
from test_service_e2e import running_server  # noqa: E402

USER_MODELS = Path(__file__).parent / "byom" / "user_models.py"
FEATURES = ["age", "income", "debt"]


def write_toml(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# -- the declaration ---------------------------------------------------------------------------
@pytest.mark.parametrize("data, key", [
    ({"kind": "smoother", "mode": "same"}, "'normalized': missing"),
    ({"kind": "smoother", "mode": "same", "normalized": True, "taps": 5}, "'taps': unknown key"),
    ({"kind": "smoother", "mode": "sideways", "normalized": True}, "'mode'"),
    ({"kind": "smoother", "mode": "same", "normalized": "yes"}, "'normalized'"),
    ({"kind": "classifier", "features": ["a"], "labels": ["y"], "output": "logits", "monotone": {"b": 1}}, "'monotone'"),
    ({"kind": "classifier", "features": ["a"], "labels": ["y"], "output": "logits", "monotone": {"a": 2}}, "'monotone.a'"),
    ({"kind": "classifier", "features": ["a"], "labels": ["y"], "output": "scores", "monotone": "all"}, "'output'"),
    ({"kind": "classifier", "features": ["a"], "labels": ["y"], "monotone": "all"}, "'output': missing"),
    ({"kind": "ranker"}, "'kind'"),
    ({"kind": "regressor", "features": ["a"]}, "'monotone': missing"),
])
def test_declaration_errors_name_the_key(data, key):
    with pytest.raises(SpecError) as refused:
        parse_spec(data)
    assert key in str(refused.value)


def test_declaration_from_toml(tmp_path):
    spec = load_spec(write_toml(tmp_path / "spec.toml", 'kind = "classifier"\nfeatures = ["a", "b", "c"]\nlabels = ["y"]\n'
                                'output = "logits"\nthreshold = 0.3\n[monotone]\na = 1\nb = -1\n'))
    assert spec.scope == "all" and spec.directions() == ["increasing", "decreasing", "free"] and spec.threshold == 0.3
    bad = write_toml(tmp_path / "bad.toml", 'kind = "smoother"\nmode = "same"\nnormalised = true\n')
    code = monoserve_main(["export", "--module", f"{USER_MODELS}:Fir1dCumsum", "--spec", str(bad), "--repo",
                           str(tmp_path / "repo"), "--name", "fir"])
    assert code == 2 and not (tmp_path / "repo" / "fir").exists()


# -- publishing users' models ------------------------------------------------------------------
def helper_classifier(op: str = "Relu") -> onnx.ModelProto:
    """A classifier written with onnx.helper: Gemm -> BatchNormalization -> `op` -> MatMul (logits).
    Column 0 of the first layer >= 0 (income up), column 1 <= 0 (debt down), column 2 mixed (free)."""
    rng = np.random.default_rng(3)
    w1 = rng.uniform(0.1, 1.0, (3, 6)).astype(np.float32)
    w1[1] *= -1.0
    w1[2] = rng.standard_normal(6)
    w2 = rng.uniform(0.1, 1.0, (6, 1)).astype(np.float32)
    inits = [numpy_helper.from_array(w1, "dense_1/kernel"), numpy_helper.from_array(np.zeros(6, np.float32), "dense_1/bias"),
             numpy_helper.from_array(rng.uniform(0.5, 2.0, 6).astype(np.float32), "bn/gamma"),
             numpy_helper.from_array(rng.standard_normal(6).astype(np.float32), "bn/beta"),
             numpy_helper.from_array(rng.standard_normal(6).astype(np.float32), "bn/mean"),
             numpy_helper.from_array(rng.uniform(0.5, 2.0, 6).astype(np.float32), "bn/var"),
             numpy_helper.from_array(w2, "dense_2/kernel")]
    nodes = [helper.make_node("Gemm", ["x", "dense_1/kernel", "dense_1/bias"], ["h1"], name="dense_1"),
             helper.make_node("BatchNormalization", ["h1", "bn/gamma", "bn/beta", "bn/mean", "bn/var"], ["h2"], name="bn"),
             helper.make_node(op, ["h2"], ["h3"], name="act"),
             helper.make_node("MatMul", ["h3", "dense_2/kernel"], ["logits"], name="dense_2")]
    graph = helper.make_graph(nodes, "keras_like", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 1])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="onnx.helper")


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """Six users' models published through both entry points; returns (repo, eager callables)."""
    work = tmp_path_factory.mktemp("byom")
    repo = work / "repo"
    eager: dict[str, object] = {}
    torch.manual_seed(0)

    # 1. Fir1d, softmax(lin * alpha), valid alignment: the Python API with a dict
    fir = train_smoother(Fir1dSoftmax(5))
    result = export_module(fir, repo, "fir-softmax", {"kind": "smoother", "mode": "valid", "normalized": True})
    assert result.manifest.smoother.kernel_size == 5
    eager["fir-softmax"] = fir

    # 2. Fir1d, exp().cumsum(0), same alignment: the CLI with a state dict and a TOML declaration
    cumsum = train_smoother(Fir1dCumsum(7))
    weights = work / "fir.pt"
    torch.save(cumsum.state_dict(), weights)
    spec = write_toml(work / "fir.toml", 'kind = "smoother"\nmode = "same"\nnormalized = true\n')
    assert monoserve_main(["export", "--module", f"{USER_MODELS}:Fir1dCumsum", "--state-dict", str(weights),
                           "--spec", str(spec), "--repo", str(repo), "--name", "fir-cumsum"]) == 0
    eager["fir-cumsum"] = cumsum

    # 3. a clamped classifier with BatchNorm, GELU, Dropout, SiLU hidden layers, logits: the CLI
    classifier = train_classifier(ClampedClassifier())
    weights = work / "clf.pt"
    torch.save(classifier.state_dict(), weights)
    spec = write_toml(work / "clf.toml", f'kind = "classifier"\nfeatures = {FEATURES}\nlabels = ["default"]\n'
                                         'output = "logits"\nmonotone = "final"\nthreshold = 0.4\n'.replace("'", '"'))
    assert monoserve_main(["export", "--module", f"{USER_MODELS}:ClampedClassifier", "--state-dict", str(weights),
                           "--spec", str(spec), "--repo", str(repo), "--name", "clamped"]) == 0
    eager["clamped"] = lambda x: torch.sigmoid(classifier(x))

    # 4. a parametrized monotone network (every weight softplus'd), scope "all": the Python API
    monotone = train_classifier(ParametrizedMonotoneNet(), steps=10, clamp=False, logits=False)
    export_module(monotone, repo, "monotone", {"kind": "classifier", "features": FEATURES, "labels": ["default"],
                                               "output": "probabilities", "monotone": "all"})
    eager["monotone"] = monotone

    # 5. an onnx.helper graph with BatchNormalization, per-feature directions: `monoserve import`
    model = helper_classifier()
    onnx.save(model, work / "helper.onnx")
    spec = write_toml(work / "helper.toml", 'kind = "classifier"\nfeatures = ["income", "debt", "age"]\nlabels = ["default"]\n'
                                            'output = "logits"\n[monotone]\nincome = 1\ndebt = -1\nage = 0\n')
    assert monoserve_main(["import", str(work / "helper.onnx"), "--spec", str(spec), "--repo", str(repo), "--name", "helper"]) == 0
    import onnxruntime as ort

    session = ort.InferenceSession(str(work / "helper.onnx"), providers=["CPUExecutionProvider"])
    eager["helper"] = lambda x: torch.sigmoid(torch.from_numpy(session.run(None, {"x": x.numpy()})[0]))

    # 6. a torch-written ONNX file at opset 20 (a Gelu node): import_onnx
    torch.onnx.export(classifier, (torch.randn(3, 3),), str(work / "torch20.onnx"), dynamo=True, opset_version=20,
                      dynamic_shapes=({0: torch.export.Dim("batch", min=1)},), external_data=False)
    assert "Gelu" in {node.op_type for node in onnx.load(str(work / "torch20.onnx")).graph.node}
    import_onnx(work / "torch20.onnx", repo, "torch20", {"kind": "classifier", "features": FEATURES, "labels": ["default"],
                                                         "output": "logits", "monotone": "final"})
    eager["torch20"] = eager["clamped"]
    return repo, eager


def test_published_versions_declare_what_was_found(published):
    repo, _ = published
    fir = Manifest.read(repo / "fir-softmax" / "1")
    assert fir.smoother.default_mode == "valid" and fir.smoother.normalized and fir.files[0].path == "model.onnx"
    assert {c.rule for c in fir.constraints} == {"positive", "monotone_nondecreasing", "sums_to_one"}
    clamped = Manifest.read(repo / "clamped" / "1")
    assert clamped.constraints[0].tensor == "head.weight" and clamped.classifier.threshold == 0.4
    assert [f.name for f in clamped.classifier.features] == FEATURES
    helper_manifest = Manifest.read(repo / "helper" / "1")
    assert helper_manifest.classifier.scope == "all" and helper_manifest.constraints[0].tensor == "dense_2/kernel"
    assert [f.direction for f in helper_manifest.classifier.features] == ["increasing", "decreasing", "free"]
    graph = onnx.load(str(repo / "helper" / "1" / "model.onnx")).graph
    assert "BatchNormalization" not in {n.op_type for n in graph.node} and graph.node[-1].op_type == "Sigmoid"
    assert not any(init.data_location == TensorProto.EXTERNAL for init in graph.initializer)


def test_served_answers_equal_the_eager_modules(published):
    repo, eager = published
    rng = np.random.default_rng(7)
    with running_server(repo) as server:
        for name, mode in (("fir-softmax", "valid"), ("fir-cumsum", "same")):
            signal = (rng.standard_normal((2, 3, 60)) * 4 + 10).astype(np.float32)
            with torch.no_grad():
                expected = eager[name](torch.from_numpy(signal)).numpy()
            response = httpx.post(f"{server.base}/smooth", json={"signal": signal.tolist(), "model": name})
            assert response.status_code == 200, response.text
            assert response.json()["mode"] == mode  # the declared alignment is the default mode
            np.testing.assert_allclose(np.asarray(response.json()["smoothed"]), expected, atol=1e-4, rtol=1e-5)
            oip = httpx.post(f"{server.base}/v2/models/{name}/infer", json={"inputs": [
                {"name": "signal", "shape": list(signal.shape), "datatype": "FP32", "data": signal.ravel().tolist()}]})
            assert oip.status_code == 200, oip.text
            np.testing.assert_allclose(np.asarray(oip.json()["outputs"][0]["data"]).reshape(expected.shape), expected,
                                       atol=1e-4, rtol=1e-5)
        names = {"helper": ["income", "debt", "age"]}
        for name in ("clamped", "monotone", "helper", "torch20"):
            features = names.get(name, FEATURES)
            rows = (rng.standard_normal((5, 3)) * 2).astype(np.float32)
            with torch.no_grad():
                expected = eager[name](torch.from_numpy(rows)).numpy()
            instances = [dict(zip(features, map(float, row))) for row in rows]
            response = httpx.post(f"{server.base}/classify", json={"instances": instances, "model": name})
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["labels"] == ["default"]
            np.testing.assert_allclose(np.asarray(body["scores"]).reshape(expected.shape), expected, atol=1e-5)
            oip = httpx.post(f"{server.base}/v2/models/{name}/infer", json={"inputs": [
                {"name": "features", "shape": [5, 3], "datatype": "FP32", "data": rows.ravel().tolist()}]})
            assert oip.status_code == 200, oip.text
            np.testing.assert_allclose(np.asarray(oip.json()["outputs"][0]["data"]).reshape(expected.shape), expected, atol=1e-5)


# -- planted mistakes --------------------------------------------------------------------------
def refused(tmp_path, publish) -> str:
    with pytest.raises(ModelRefusedError) as caught:
        publish(tmp_path / "repo")
    assert not (tmp_path / "repo" / "m").exists() or not any((tmp_path / "repo" / "m").iterdir())
    return str(caught.value) + "\n" + "\n".join(caught.value.problems)


SMOOTHER = {"kind": "smoother", "mode": "same", "normalized": True}


def test_reversed_kernel_is_refused_naming_the_parameter(tmp_path):
    message = refused(tmp_path, lambda repo: export_module(train_smoother(Fir1dCumsum(7, reverse=True), steps=3),
                                                           repo, "m", SMOOTHER))
    assert "monotone_nondecreasing" in message and "kernel_parameters" in message and "reversed" in message


def test_kernel_not_summing_to_one_is_refused_when_declared_normalized(tmp_path):
    loop = ChannelLoopFir(torch.tensor([1.0, 2.0, 3.0]))
    message = refused(tmp_path, lambda repo: export_module(loop, repo, "m", {**SMOOTHER, "mode": "causal"}))
    assert "sums_to_one" in message and "kernel" in message


def test_channel_loop_smoother_unnormalized_is_published(tmp_path):
    loop = ChannelLoopFir(torch.tensor([0.5, 1.0, 2.0]))
    result = export_module(loop, tmp_path / "repo", "loop", {"kind": "smoother", "mode": "causal", "normalized": False})
    assert result.manifest.smoother.kernel_size == 3 and not result.manifest.smoother.normalized


@pytest.mark.parametrize("module, why", [(MixingFir(), "mixes channels"), (SquaringFir(), "not linear")])
def test_modules_that_are_not_one_shared_fir_kernel_are_refused(tmp_path, module, why):
    message = refused(tmp_path, lambda repo: export_module(module, repo, "m", {**SMOOTHER, "mode": "valid", "normalized": False}))
    assert why in message


def test_wrong_alignment_is_refused(tmp_path):
    message = refused(tmp_path, lambda repo: export_module(train_smoother(Fir1dCumsum(7), steps=2), repo, "m",
                                                           {**SMOOTHER, "mode": "causal"}))
    assert "shifted" in message and "'causal'" in message


def test_unclamped_final_weight_is_refused_naming_the_parameter(tmp_path):
    classifier = train_classifier(ClampedClassifier(), steps=3, clamp=False)
    with torch.no_grad():
        classifier.head.weight[0, 0] = -0.5
    message = refused(tmp_path, lambda repo: export_module(classifier, repo, "m", {
        "kind": "classifier", "features": FEATURES, "labels": ["y"], "output": "logits", "monotone": "final"}))
    assert "head.weight" in message and "your parameter" in message and "nonnegative" in message


def test_an_op_the_proof_cannot_model_is_refused_naming_node_and_op(tmp_path):
    """Cos in a hidden layer: allowed in scope "final" (tests/test_byom_nets.py), not in scope "all"."""
    path = tmp_path / "cos.onnx"
    onnx.save(helper_classifier(op="Cos"), path)
    message = refused(tmp_path, lambda repo: import_onnx(path, repo, "m", {
        "kind": "classifier", "features": FEATURES, "labels": ["y"], "output": "logits", "monotone": "all"}))
    assert "act" in message and "Cos" in message and "not modelled" in message


def test_a_decreasing_feature_declared_increasing_is_refused_by_the_certificate(tmp_path):
    path = tmp_path / "helper.onnx"
    onnx.save(helper_classifier(), path)
    with pytest.raises(Exception) as caught:
        import_onnx(path, tmp_path / "repo", "m", {"kind": "classifier", "features": FEATURES, "labels": ["y"],
                                                   "output": "logits", "monotone": "all"})
    assert "certificate" in str(caught.value) and not (tmp_path / "repo" / "m" / "1").exists()


# -- GELU, modelled for users' hidden layers --------------------------------------------------
@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("bound", [0.05, 0.8, 3.0, 40.0])
def test_gelu_bounds_are_sound_and_it_is_not_certified_monotone(approximate, bound):
    """x clipped to [-bound, bound] -> MatMul -> Gelu: every output ONNX Runtime gives lies in the
    interval the proof computes, which is finite and never below GELU's minimum (about -0.17)."""
    import onnxruntime as ort

    from contract.certificate import GraphInfo, certify

    rng = np.random.default_rng(5)
    weight = rng.standard_normal((2, 4)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Clip", ["x", "low", "high"], ["c"]), helper.make_node("MatMul", ["c", "w"], ["h"]),
         helper.make_node("Gelu", ["h"], ["y"], approximate=approximate)],
        "gelu", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(np.float32(-bound), "low"),
         numpy_helper.from_array(np.float32(bound), "high")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    info = GraphInfo.build(model)
    assert not info.hazards
    low, high = info.range_of("y")
    assert -0.1702 <= low and np.isfinite(high)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.concatenate([rng.standard_normal((4000, 2)) * bound * 2, rng.uniform(-bound, bound, (4000, 2)),
                        np.array([[bound, bound], [-bound, -bound], [bound, -bound], [-bound, bound]])]).astype(np.float32)
    y = session.run(None, {"x": x})[0]
    assert low <= float(y.min()) and float(y.max()) <= high
    certificate = certify(info, "x", [(0, "x0", "increasing")], outputs=["y"])
    assert certificate.failures and "Gelu is not monotone" in certificate.failures[0].message


def test_logits_declared_as_probabilities_are_refused(tmp_path):
    path = tmp_path / "logits.onnx"
    onnx.save(helper_classifier(), path)
    message = refused(tmp_path, lambda repo: import_onnx(path, repo, "m", {
        "kind": "classifier", "features": FEATURES, "labels": ["y"], "output": "probabilities", "monotone": "final"}))
    assert "output = \"logits\"" in message


def test_an_onnx_smoother_from_onnx_helper_is_probed_and_published(tmp_path):
    """A one-channel valid-mode Conv written with onnx.helper: its kernel is found through ONNX Runtime
    and published as the service's smoother, which then serves any number of channels."""
    kernel = np.array([0.1, 0.2, 0.3, 0.4], np.float32)
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], name="fir")], "fir",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, "L"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1, "M"])],
                              [numpy_helper.from_array(kernel.reshape(1, 1, 4), "w")])
    path = tmp_path / "fir.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    result = import_onnx(path, tmp_path / "repo", "fir", {"kind": "smoother", "mode": "valid", "normalized": True})
    from service.repository.prover import prove_version

    report, proven = prove_version(result.version_dir)
    assert report.ok, report.render()
    np.testing.assert_array_equal(proven.tensors["kernel"].reshape(-1), kernel)
    signal = np.random.default_rng(2).standard_normal((2, 3, 20)).astype(np.float32)
    full = proven.engine.run(signal)
    expected = np.stack([[np.correlate(row, kernel, mode="valid") for row in batch] for batch in signal])
    np.testing.assert_allclose(full[..., 3:20], expected, atol=1e-5)


def test_cli_usage_errors_exit_2_and_publish_nothing(tmp_path, capsys):
    spec = write_toml(tmp_path / "ok.toml", 'kind = "smoother"\nmode = "same"\nnormalized = true\n')
    typo = write_toml(tmp_path / "typo.toml", 'kind = "classifier"\nfeatures = ["a"]\nlabels = ["y"]\noutput = "logits"\n'
                                              'monotone = "final"\nthreshhold = 0.3\n')
    repo = tmp_path / "repo"
    onnx.save(helper_classifier(), tmp_path / "m.onnx")
    cases = [
        (["import", str(tmp_path / "m.onnx"), "--spec", str(typo), "--repo", str(repo), "--name", "m"], "'threshhold': unknown key"),
        (["import", str(tmp_path / "missing.onnx"), "--spec", str(spec), "--repo", str(repo), "--name", "m"], "not found"),
        (["export", "--module", f"{tmp_path / 'nope.py'}:Fir", "--spec", str(spec), "--repo", str(repo), "--name", "m"], "file not found"),
        (["export", "--module", f"{USER_MODELS}:NoSuchFactory", "--spec", str(spec), "--repo", str(repo), "--name", "m"],
         "no class or function 'NoSuchFactory'"),
        (["export", "--module", f"{USER_MODELS}:Fir1dCumsum", "--repo", str(repo), "--name", "m"], "go together"),
        (["export", "--module", f"{USER_MODELS}:Fir1dCumsum", "--state-dict", str(tmp_path / "w.pt"), "--spec", str(spec),
          "--repo", str(repo), "--name", "m"], "--state-dict: file not found"),
    ]
    for argv, expected in cases:
        assert monoserve_main(argv) == 2, argv
        assert expected in capsys.readouterr().err, argv
    assert not repo.exists() or not any(repo.rglob("manifest.json"))


def test_a_weight_computed_in_forward_is_folded_and_checked(tmp_path):
    """F.linear(h, self.raw.exp()): the exporter folds exp(raw) into an initializer; the export finds it as the
    output layer's weight (nonnegative by construction) and publishes; negating it is refused."""
    import torch.nn.functional as F
    from torch import nn

    class ExpHead(nn.Module):
        def __init__(self, sign: float = 1.0):
            super().__init__()
            self.body = nn.Linear(3, 4)
            self.raw = nn.Parameter(torch.randn(1, 4))
            self.sign = sign

        def forward(self, x):
            return F.linear(torch.relu(self.body(x)), self.sign * self.raw.exp())

    spec = {"kind": "classifier", "features": FEATURES, "labels": ["y"], "output": "logits", "monotone": "final"}
    result = export_module(ExpHead(), tmp_path / "repo", "exp", spec)
    graph = onnx.load(str(result.version_dir / "model.onnx")).graph
    assert "Exp" not in {node.op_type for node in graph.node}  # folded into a plain initializer
    message = refused(tmp_path, lambda repo: export_module(ExpHead(-1.0), repo, "m", spec))
    assert "computed in forward from your parameters" in message and "raw" in message


def test_an_older_style_graph_with_initializers_as_inputs_ending_in_sigmoid_is_imported(tmp_path):
    """Initializers listed among the graph inputs (older exporters), a Sigmoid already at the end, other io names."""
    model = helper_classifier()
    graph = model.graph
    graph.node.append(helper.make_node("Sigmoid", ["logits"], ["prob"], name="sigmoid"))
    graph.output[0].name = "prob"
    graph.input.extend([helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)) for init in graph.initializer])
    path = tmp_path / "old.onnx"
    onnx.save(model, path)
    result = import_onnx(path, tmp_path / "repo", "old", {"kind": "classifier", "features": FEATURES, "labels": ["y"],
                                                          "output": "probabilities", "monotone": "final"})
    published = onnx.load(str(result.version_dir / "model.onnx")).graph
    assert [i.name for i in published.input] == ["features"] and [o.name for o in published.output] == ["scores"]
    assert [n.op_type for n in published.node].count("Sigmoid") == 1
    import onnxruntime as ort

    rows = np.random.default_rng(4).standard_normal((6, 3)).astype(np.float32)
    original = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {"x": rows, **{init.name: numpy_helper.to_array(init) for init in graph.initializer}}
    expected = original.run(["prob"], feeds)[0]
    got = ort.InferenceSession(str(result.version_dir / "model.onnx"), providers=["CPUExecutionProvider"]).run(
        ["scores"], {"features": rows})[0]
    np.testing.assert_allclose(got, expected, atol=1e-6)
