"""Monotone networks as people build them, beyond an MLP with a clamped head (issue 25, part B):

- Lipschitz-monotone networks (the `monotonicnetworks` package: g(x) + lambda * sum_i s_i x_i) proven
  by a sound per-feature rate bound, numerically checked (finite differences never exceed it), and
  refused with both numbers when g's bound exceeds lambda;
- hidden layers with LayerNorm, Softmax, Gelu, Reduce* in scope "final", refused in scope "all"
  naming the op;
- smoothers that pad with zeros, by reflection or circularly, served as declared: equal to the user's
  module in one-shot /smooth and in every stream transport (WebSocket, HTTP stream, gRPC sequence).

Everything goes through the real export (export_module / `monoserve export --module`), the service's
prover and policy, signing, and a real server.
"""

from __future__ import annotations

import json
import queue
import sys
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from contract.certificate import GraphInfo
from contract.lipschitz import certify_lipschitz
from export.byom import ModelRefusedError, export_module
from monoserve.cli import main as monoserve_main

sys.path.insert(0, str(Path(__file__).parent))
from byom.net_models import LayerNormClassifier, PaddedFir, ZeroPadFir, lipschitz_network  # noqa: E402
from test_service_e2e import free_port, running_server  # noqa: E402

NET_MODELS = Path(__file__).parent / "byom" / "net_models.py"
FEATURES = ["age", "income", "debt"]
LIPSCHITZ_SPEC = {"kind": "classifier", "features": FEATURES, "labels": ["y"], "output": "logits",
                  "monotone": {"age": 1, "debt": -1}}
LAYERNORM_SPEC = {"kind": "classifier", "features": FEATURES, "labels": ["y"], "output": "logits", "monotone": "final"}
ADMIN = {"authorization": "Bearer nets-admin-token"}
ADMIN_TOKEN = ADMIN["authorization"].split()[1]
PADDED = {"zeros": lambda: ZeroPadFir(5), "reflect": lambda: PaddedFir(7, "reflect"),
          "circular": lambda: PaddedFir(5, "circular")}


def refused(tmp_path: Path, publish) -> str:
    with pytest.raises(ModelRefusedError) as caught:
        publish(tmp_path / "repo")
    assert not (tmp_path / "repo" / "m").exists() or not any((tmp_path / "repo" / "m").iterdir())
    return "\n".join(caught.value.problems)


def trained_layernorm_classifier() -> LayerNormClassifier:
    torch.manual_seed(0)
    model = LayerNormClassifier()
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(128, 3, generator=generator)
    y = (x.sum(dim=1) > 0).float().unsqueeze(1)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(10):
        optimizer.zero_grad()
        torch.nn.functional.binary_cross_entropy_with_logits(model(x), y).backward()
        optimizer.step()
        with torch.no_grad():
            model.head.weight.clamp_(min=0.0)
    return model.eval()


def eager(module: torch.nn.Module, x: np.ndarray, sigmoid: bool = False) -> np.ndarray:
    with torch.no_grad():
        out = module(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
    return torch.sigmoid(out).numpy() if sigmoid else out.numpy()


# -- Lipschitz-monotone networks: the bound is sound -------------------------------------------
def _random_lipschitz_graph(rng: np.random.Generator, n_features: int, width: int, activation: str,
                            lam: float) -> onnx.ModelProto:
    """x -> Gemm -> act -> MatMul -> act -> Gemm -> + lam * (x * s) @ 1, weights random (not normalized)."""
    w1 = rng.standard_normal((width, n_features)).astype(np.float32)
    w2 = (rng.standard_normal((width, width)) / width).astype(np.float32)
    w3 = rng.standard_normal((1, width)).astype(np.float32)
    signs = rng.choice([-1.0, 0.0, 1.0], n_features).astype(np.float32)
    inits = [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(rng.standard_normal(width).astype(np.float32), "b1"),
             numpy_helper.from_array(w2, "w2"), numpy_helper.from_array(w3, "w3"),
             numpy_helper.from_array(np.float32([lam]), "lam"), numpy_helper.from_array(signs, "signs"),
             numpy_helper.from_array(np.ones((n_features, 1), np.float32), "ones"),
             numpy_helper.from_array(np.array([-1, width // 2, 2], np.int64), "grouped"),
             numpy_helper.from_array(np.array([-1, width], np.int64), "flat"),
             numpy_helper.from_array(np.array([2], np.int64), "two")]

    def act(source: str, target: str, index: int) -> list[onnx.NodeProto]:
        if activation == "groupsort":  # as torch writes x.view(-1, n, 2).sort(-1)
            return [helper.make_node("Reshape", [source, "grouped"], [f"g{index}"]),
                    helper.make_node("TopK", [f"g{index}", "two"], [f"s{index}", f"i{index}"], axis=-1, largest=0),
                    helper.make_node("Reshape", [f"s{index}", "flat"], [target])]
        if activation == "maxmin":
            return [helper.make_node("Split", [source], [f"left{index}", f"right{index}"], axis=-1, num_outputs=2),
                    helper.make_node("Max", [f"left{index}", f"right{index}"], [f"hi{index}"]),
                    helper.make_node("Min", [f"left{index}", f"right{index}"], [f"lo{index}"]),
                    helper.make_node("Concat", [f"hi{index}", f"lo{index}"], [target], axis=-1)]
        return [helper.make_node(activation, [source], [target])]

    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["h1"], transB=1), *act("h1", "a1", 1),
             helper.make_node("MatMul", ["a1", "w2"], ["h2"]), *act("h2", "a2", 2),
             helper.make_node("Gemm", ["a2", "w3"], ["g"], transB=1),
             helper.make_node("Mul", ["x", "signs"], ["xs"]), helper.make_node("Mul", ["xs", "lam"], ["xl"]),
             helper.make_node("MatMul", ["xl", "ones"], ["residual"]), helper.make_node("Add", ["g", "residual"], ["y"])]
    graph = helper.make_graph(nodes, "lipschitz", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", n_features])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])


@pytest.mark.parametrize("activation", ["groupsort", "maxmin", "Relu", "Tanh", "LeakyRelu", "Sigmoid"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_rate_bound_is_sound_by_finite_differences(activation, seed):
    """At random points, along every input, with small and large steps: the output's change minus the
    exact linear part never exceeds the bound times the step (ONNX Runtime computes the network)."""
    import onnxruntime as ort

    rng = np.random.default_rng(seed)
    n_features, width, lam = 4, 8, 1.5
    model = _random_lipschitz_graph(rng, n_features, width, activation, lam)
    info = GraphInfo.build(model)
    features = [(i, f"x{i}", "increasing") for i in range(n_features)]
    certificate, rates = certify_lipschitz(info, "x", features, ["y"])
    assert len(rates) == n_features, certificate.findings
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    signs = numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == "signs"))
    points = (rng.standard_normal((400, n_features)) * 3.0).astype(np.float64)
    base = session.run(None, {"x": points.astype(np.float32)})[0][:, 0].astype(np.float64)
    worst_ratio = 0.0
    for i, rate in enumerate(rates):
        assert rate.coefficient == pytest.approx(lam * signs[i], abs=1e-6)  # the exact part is the residual's
        for step in (1e-2, 0.3, 2.0):
            moved = points.copy()
            moved[:, i] += step
            change = session.run(None, {"x": moved.astype(np.float32)})[0][:, 0].astype(np.float64) - base
            rest = np.abs(change - lam * signs[i] * step)
            slack = 1e-4 * (1.0 + np.abs(base))  # float32 rounding of the network itself
            assert np.all(rest <= rate.bound * step + slack), (i, step, float(rest.max() / step), rate.bound)
            worst_ratio = max(worst_ratio, float(np.max(rest / step)) / rate.bound)
    assert worst_ratio > 0.05  # the bound is not vacuous: finite differences come within range of it


def test_a_monotonicnetworks_model_is_proven_and_monotone_where_proven(tmp_path):
    """The package's own construction (LipschitzLinear one-inf then inf, GroupSort, MonotonicWrapper)
    is proven; the proven directions hold on random points and one-feature sweeps."""
    model = lipschitz_network(3, [1, 0, -1], 2.0)
    result = export_module(model, tmp_path / "repo", "lmn", LIPSCHITZ_SPEC)
    manifest = result.manifest
    assert manifest.classifier.proof == "lipschitz" and manifest.classifier.scope == "all"
    assert manifest.classifier.monotone_features == ["age", "debt"] and manifest.constraints == []
    assert any("lambda 2 >= bound" in line for line in result.found)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 3)).astype(np.float32) * 3
    for column, sign in ((0, 1.0), (2, -1.0)):
        sweep = np.repeat(x[:, None, :], 25, axis=1)
        sweep[:, :, column] = np.linspace(-6, 6, 25)[None, :]
        scores = eager(model, sweep.reshape(-1, 3)).reshape(200, 25)
        assert np.all(sign * np.diff(scores, axis=1) >= -1e-5)


def test_a_network_at_its_norm_limit_is_proven(tmp_path):
    """Every layer normalized to exactly its share of lambda (as long training drives it): the bound
    meets lambda up to float32 rounding, and the network is proven, not refused for the last bit."""
    import monotonicnetworks as lmn
    from torch.nn.utils import parametrize

    model = lipschitz_network(3, [1, 0, -1], 2.0)
    share = 2.0 ** (1.0 / 3.0)
    layers = [m for m in model.nn if isinstance(m, torch.nn.Linear)]
    for index, layer in enumerate(layers):
        parametrize.remove_parametrizations(layer, "weight", leave_parametrized=True)
        with torch.no_grad():
            layer.weight.copy_(lmn.get_normed_weights(layer.weight * 10.0, "one-inf" if index == 0 else "inf",
                                                      always_norm=True, max_norm=share, vectorwise=True))
    result = export_module(model, tmp_path / "repo", "lmn", LIPSCHITZ_SPEC)
    assert result.manifest.classifier.proof == "lipschitz"


def test_a_relu_lipschitz_network_is_proven_too(tmp_path):
    result = export_module(lipschitz_network(3, [1, 0, -1], 2.0, activation="relu"), tmp_path / "repo", "lmn",
                           LIPSCHITZ_SPEC)
    assert result.manifest.classifier.proof == "lipschitz"


def test_an_oversized_g_is_refused_with_both_numbers(tmp_path):
    model = lipschitz_network(3, [1, 0, -1], 2.0, oversize=1.6)
    message = refused(tmp_path, lambda repo: export_module(model, repo, "m", LIPSCHITZ_SPEC))
    first = message.splitlines()[0]
    assert first.startswith("the network is not proven monotone, because a bound on g's rate exceeds lambda")
    # both numbers, as the proof computes them
    from export.byom import ModuleSource
    from export.graphprep import prepare_classifier_graph

    graph = prepare_classifier_graph(ModuleSource(model).classifier_graph(3), 3, 1, "logits").model
    _, rates = certify_lipschitz(GraphInfo.build(graph), "features", [(0, "age", "increasing"), (2, "debt", "decreasing")],
                                 ["scores"])
    too_fast = [r for r in rates if r.bound > r.coefficient]
    assert too_fast
    for rate in too_fast:
        assert f"up to {rate.bound:.6g} per unit of {rate.feature!r}" in message
        assert f"lambda = {rate.coefficient:.6g}" in message and rate.coefficient == pytest.approx(2.0)


def test_scope_final_and_unrecognised_forms_get_one_plain_sentence_first(tmp_path):
    model = lipschitz_network(3, [1, 0, -1], 2.0)
    message = refused(tmp_path, lambda repo: export_module(model, repo, "m", {**LIPSCHITZ_SPEC, "monotone": "final"}))
    assert message.startswith("a Lipschitz-monotone network (g(x) + lambda * sum_i s_i x_i) has no output layer")

    class SquaringG(torch.nn.Module):  # g squares a hidden layer: it has no global Lipschitz bound
        def __init__(self):
            super().__init__()
            self.first, self.last = torch.nn.Linear(3, 4), torch.nn.Linear(4, 1)

        def forward(self, x):
            h = self.first(x)
            return self.last(h * h) + 2.0 * x.sum(dim=-1, keepdim=True)

    message = refused(tmp_path, lambda repo: export_module(SquaringG(), repo, "m", {**LIPSCHITZ_SPEC, "monotone": "all"}))
    assert message.startswith("Lipschitz-monotone networks are proven only when g is built from linear layers")
    assert "Mul of two tensors that both depend on the input" in message.splitlines()[0]


def test_the_service_proves_it_again_and_refuses_a_swapped_graph(tmp_path):
    """The load-time proof is the service's own: a published Lipschitz version whose graph is replaced by
    an oversized one (checksums updated, as a publisher could) is refused at the certificate step."""
    from contract.files import sha256_file
    from contract.manifest import Manifest
    from export.byom import ModuleSource
    from export.graphprep import prepare_classifier_graph
    from service.repository.prover import prove_version

    result = export_module(lipschitz_network(3, [1, 0, -1], 2.0), tmp_path / "repo", "lmn", LIPSCHITZ_SPEC)
    report, proven = prove_version(result.version_dir)
    assert proven is not None, report.render()
    certificate = next(s for s in report.steps if s.step == "certificate")
    assert certificate.status == "ok" and "lambda" in certificate.message
    oversized = prepare_classifier_graph(ModuleSource(lipschitz_network(3, [1, 0, -1], 2.0, oversize=1.6))
                                         .classifier_graph(3), 3, 1, "logits").model
    onnx.save(oversized, result.version_dir / "model.onnx")
    manifest = Manifest.read(result.version_dir)
    manifest.files[0].sha256 = sha256_file(result.version_dir / "model.onnx")
    manifest.files[0].size = (result.version_dir / "model.onnx").stat().st_size
    (result.version_dir / "manifest.json").write_text(manifest.to_json())
    report, proven = prove_version(result.version_dir)
    assert proven is None and report.failed_step.step == "certificate", report.render()
    assert "more than lambda = 2" in report.failed_step.message


def test_the_policy_requires_scope_all_for_a_lipschitz_proof(tmp_path):
    from contract.manifest import Manifest
    from contract.policy import Policy

    result = export_module(lipschitz_network(3, [1, 0, -1], 2.0), tmp_path / "repo", "lmn", LIPSCHITZ_SPEC)
    manifest = Manifest.read(result.version_dir)
    assert Policy().shortfalls(manifest) == []
    manifest.classifier.scope = "final"
    assert any("scope must be 'all'" in p for p in Policy().shortfalls(manifest))


def test_cli_export_module_of_a_monotonicnetworks_factory_signed(tmp_path, capsys):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from contract.signing import TrustedKeys
    from service.repository.prover import prove_version

    key = ec.generate_private_key(ec.SECP256R1())
    private, public = tmp_path / "k.key", tmp_path / "k.pub"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    spec = tmp_path / "lmn.toml"
    spec.write_text('kind = "classifier"\nfeatures = ["age", "income", "debt"]\nlabels = ["y"]\noutput = "logits"\n'
                    'monotone = {age = 1, debt = -1}\n', encoding="utf-8")
    code = monoserve_main(["export", "--module", f"{NET_MODELS}:lipschitz_groupsort", "--spec", str(spec),
                           "--repo", str(tmp_path / "repo"), "--name", "lmn", "--sign-key", str(private)])
    assert code == 0, capsys.readouterr().err
    report, proven = prove_version(tmp_path / "repo" / "lmn" / "1", trusted_keys=TrustedKeys.from_paths([public]))
    assert proven is not None and report.signature["status"] == "verified", report.render()


# -- hidden layers in scope "final" ------------------------------------------------------------
def test_layernorm_hidden_layers_are_refused_in_scope_all_naming_the_op(tmp_path):
    message = refused(tmp_path, lambda repo: export_module(trained_layernorm_classifier(), repo, "m",
                                                            {**LAYERNORM_SPEC, "monotone": "all"}))
    assert "op LayerNormalization is not modelled by the certificate" in message and "scope 'all'" in message
    assert "Softmax" in message


def test_hidden_only_ops_after_the_output_layer_are_refused(tmp_path):
    """Scope final allows them upstream of the output layer only: a LayerNorm after it is refused."""
    class NormAfterHead(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.first, self.head, self.norm = torch.nn.Linear(3, 4), torch.nn.Linear(4, 2), torch.nn.LayerNorm(2)

        def forward(self, x):
            return self.norm(self.head(torch.relu(self.first(x))))[:, :1]

    model = NormAfterHead().eval()
    with torch.no_grad():
        model.head.weight.clamp_(min=0.0)
    message = refused(tmp_path, lambda repo: export_module(model, repo, "m", LAYERNORM_SPEC))
    assert "LayerNormalization" in message


def test_a_nondeterministic_op_is_refused_in_every_scope(tmp_path):
    from contract.graph import GraphRefused, IoSpec, check_graph

    w = numpy_helper.from_array(np.ones((3, 1), np.float32), "w")
    nodes = [helper.make_node("RandomNormalLike", ["x"], ["noise"]), helper.make_node("Add", ["x", "noise"], ["h"]),
             helper.make_node("MatMul", ["h", "w"], ["y"])]
    graph = helper.make_graph(nodes, "noisy", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    with pytest.raises(GraphRefused) as caught:
        check_graph(model, [IoSpec("x", "float32", ["batch", 3])], [IoSpec("y", "float32", ["batch", 1])], scope="final")
    assert "op RandomNormalLike is not modelled by the proof, in any scope" in str(caught.value)


# -- padding as declared -----------------------------------------------------------------------
def test_a_zero_padded_module_declared_replicate_is_refused_naming_its_padding(tmp_path):
    message = refused(tmp_path, lambda repo: export_module(ZeroPadFir(5), repo, "m",
                                                            {"kind": "smoother", "mode": "same", "normalized": True}))
    assert "the module pads with 'zeros' padding" in message and "declare padding = 'zeros'" in message


@pytest.mark.parametrize("padding", ["zeros", "reflect", "circular"])
def test_a_padding_other_than_declared_is_refused(tmp_path, padding):
    other = "reflect" if padding != "reflect" else "zeros"
    message = refused(tmp_path, lambda repo: export_module(PADDED[padding](), repo, "m",
                                                            {"kind": "smoother", "mode": "same", "normalized": True,
                                                             "padding": other}))
    assert f"pads with {padding!r} padding" in message


# -- served, one-shot and streamed, through a real server --------------------------------------
@pytest.fixture(scope="module")
def served(tmp_path_factory):
    work = tmp_path_factory.mktemp("nets")
    repo = work / "repo"
    modules: dict[str, Any] = {}  # the eager modules by served name, and the repository ("repo")
    for padding, build in PADDED.items():
        modules[padding] = build()
        export_module(modules[padding], repo, padding, {"kind": "smoother", "mode": "same", "normalized": True,
                                                        "padding": padding})
    modules["layernorm"] = trained_layernorm_classifier()
    export_module(modules["layernorm"], repo, "layernorm", LAYERNORM_SPEC)
    modules["lipschitz"] = lipschitz_network(3, [1, 0, -1], 2.0)
    export_module(modules["lipschitz"], repo, "lipschitz", LIPSCHITZ_SPEC)
    export_module(modules["lipschitz"], repo, "reloaded", LIPSCHITZ_SPEC)  # test_hot_reload publishes more
    modules["repo"] = repo
    grpc_port = free_port()
    with running_server(repo, env={"MONOSERVE_GRPC_PORT": str(grpc_port), "MONOSERVE_ADMIN_TOKEN": ADMIN_TOKEN}) as server:
        yield server, f"127.0.0.1:{grpc_port}", modules


@pytest.mark.parametrize("name", ["layernorm", "lipschitz"])
def test_classifiers_serve_the_eager_modules_answers(served, name):
    server, _, modules = served
    rows = (np.random.default_rng(4).standard_normal((16, 3)) * 2).astype(np.float32)
    response = httpx.post(f"{server.base}/classify", json={"model": name, "instances": rows.tolist()})
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(response.json()["scores"], eager(modules[name], rows, sigmoid=True)[:, 0], atol=1e-5)
    described = json.dumps(httpx.get(f"{server.base}/models/{name}").json())
    assert f'"proof": "{"lipschitz" if name == "lipschitz" else "signs"}"' in described, described


@pytest.mark.parametrize("padding", list(PADDED))
def test_padded_smoothers_serve_the_modules_answers_one_shot_and_streamed(served, padding):
    """/smooth (mode same) equals the user's module; WebSocket and HTTP streams (JSON and binary) and a
    gRPC sequence, cut into uneven chunks, equal /smooth; each mode streamed equals its one-shot."""
    import tritonclient.grpc as triton

    from monoserve.client import Client

    server, grpc_target, modules = served
    rng = np.random.default_rng(7)
    signal = (rng.standard_normal((2, 61)) * 3 + 10).astype(np.float32)
    response = httpx.post(f"{server.base}/smooth", json={"model": padding, "signal": signal.tolist(), "mode": "same"})
    assert response.status_code == 200, response.text
    one_shot = np.asarray(response.json()["smoothed"], np.float32)
    np.testing.assert_allclose(one_shot, eager(modules[padding], signal[None])[0], atol=1e-5)
    chunks = [signal[:, a:b] for a, b in ((0, 1), (1, 4), (4, 4), (4, 30), (30, 61))]
    with Client(server.base) as client:
        for mode in ("same", "causal", "valid"):
            whole = np.asarray(client.smooth(signal, model=padding, mode=mode).smoothed)
            for transport, use_json in (("websocket", False), ("websocket", True), ("http", False), ("http", True)):
                outputs = list(client.stream_smooth(iter(chunks), model=padding, mode=mode, transport=transport,
                                                    json=use_json, window=2))
                np.testing.assert_allclose(np.concatenate(outputs, axis=1), whole, rtol=1e-6, atol=1e-4,
                                           err_msg=f"{padding} {mode} {transport} json={use_json}")
    answers: queue.Queue = queue.Queue()
    with triton.InferenceServerClient(grpc_target) as grpc_client:
        grpc_client.start_stream(callback=lambda result, error: answers.put((result, error)))
        try:
            for index, chunk in enumerate(chunks):
                tensor = triton.InferInput("signal", list(chunk.shape), "FP32")
                tensor.set_data_from_numpy(np.ascontiguousarray(chunk))
                grpc_client.async_stream_infer(model_name=padding, inputs=[tensor], sequence_id=5,
                                               sequence_start=index == 0, sequence_end=index == len(chunks) - 1,
                                               parameters={"mode": "same"})
        finally:
            grpc_client.stop_stream()
        got = []
        for _ in chunks:
            result, error = answers.get(timeout=30)
            assert error is None, error
            got.append(result.as_numpy("smoothed"))
    np.testing.assert_allclose(np.concatenate(got, axis=1), one_shot, rtol=1e-6, atol=1e-4)


def test_reflect_padding_needs_the_kernel_size_in_samples(served):
    server, _, _ = served
    response = httpx.post(f"{server.base}/smooth", json={"model": "reflect", "signal": [1.0, 2.0, 3.0]})
    assert response.status_code == 400 and "reflect padding needs at least 7 samples" in response.text


def test_hot_reload_serves_a_new_lipschitz_version_and_refuses_a_tampered_one(served):
    """A new Lipschitz version loads through the control API and serves; a version whose graph was
    swapped for an oversized g (checksums updated, as a hostile publisher would) is refused by the
    load-time certificate with both numbers, and the previous version keeps serving."""
    import shutil

    from contract.files import sha256_file
    from contract.manifest import Manifest
    from export.byom import ModuleSource
    from export.graphprep import prepare_classifier_graph

    server, _, modules = served
    repo = modules["repo"]
    newer = lipschitz_network(3, [1, 0, -1], 2.0, seed=1)
    export_module(newer, repo, "reloaded", LIPSCHITZ_SPEC)
    response = httpx.post(f"{server.base}/v2/repository/models/reloaded/load", headers=ADMIN)
    assert response.status_code == 200 and response.json()["serving_version"] == 2, response.text
    rows = (np.random.default_rng(9).standard_normal((8, 3)) * 2).astype(np.float32)
    answer = httpx.post(f"{server.base}/classify", json={"model": "reloaded", "instances": rows.tolist()}).json()
    assert answer["version"] == 2
    np.testing.assert_allclose(answer["scores"], eager(newer, rows, sigmoid=True)[:, 0], atol=1e-5)

    tampered = repo / "reloaded" / "3"
    shutil.copytree(repo / "reloaded" / "2", tampered)
    oversized = prepare_classifier_graph(ModuleSource(lipschitz_network(3, [1, 0, -1], 2.0, oversize=1.6))
                                         .classifier_graph(3), 3, 1, "logits").model
    onnx.save(oversized, tampered / "model.onnx")
    manifest = Manifest.read(tampered)
    manifest.version = 3
    manifest.files[0].sha256, manifest.files[0].size = sha256_file(tampered / "model.onnx"), (tampered / "model.onnx").stat().st_size
    (tampered / "manifest.json").write_text(manifest.to_json())
    response = httpx.post(f"{server.base}/v2/repository/models/reloaded/load", headers=ADMIN)
    assert response.status_code == 400, response.text
    assert "version 3 was refused: certificate" in response.json()["error"] and "more than lambda = 2" in response.text
    assert response.json()["serving_version"] == 2
    again = httpx.post(f"{server.base}/classify", json={"model": "reloaded", "instances": rows.tolist()}).json()
    assert again["version"] == 2 and again["scores"] == answer["scores"]


def test_groupsort_keeps_a_sign_proof_and_its_indices_are_refused():
    """TopK (torch's sort) is non-decreasing in every element: a GroupSort network with nonnegative
    weights is proven by the sign certificate in scope all; a graph that uses TopK's indices is refused."""
    from contract.certificate import certify
    from contract.graph import GraphRefused, IoSpec, check_graph

    rng = np.random.default_rng(3)
    inits = [numpy_helper.from_array(rng.uniform(0.1, 1.0, (3, 4)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.uniform(0.1, 1.0, (4, 1)).astype(np.float32), "w2"),
             numpy_helper.from_array(np.array([-1, 2, 2], np.int64), "grouped"),
             numpy_helper.from_array(np.array([-1, 4], np.int64), "flat"), numpy_helper.from_array(np.array([2], np.int64), "two")]

    def model(use_indices: bool) -> onnx.ModelProto:
        nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Reshape", ["h", "grouped"], ["g"]),
                 helper.make_node("TopK", ["g", "two"], ["s", "i"], axis=-1, largest=0),
                 helper.make_node("Reshape", ["s", "flat"], ["a"]), helper.make_node("MatMul", ["a", "w2"], ["z"])]
        if use_indices:
            nodes += [helper.make_node("Cast", ["i"], ["fi"], to=TensorProto.FLOAT),
                      helper.make_node("ReduceSum", ["fi"], ["si"], keepdims=0),
                      helper.make_node("Add", ["z", "si"], ["y"])]
        else:
            nodes.append(helper.make_node("Sigmoid", ["z"], ["y"]))
        graph = helper.make_graph(nodes, "groupsort", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1])], inits)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])

    io = ([IoSpec("x", "float32", ["batch", 3])], [IoSpec("y", "float32", ["batch", 1])])
    info = check_graph(model(False), *io, scope="all")
    certificate = certify(info, "x", [(j, f"x{j}", "increasing") for j in range(3)])
    assert certificate.ok, certificate.summary()
    with pytest.raises(GraphRefused, match="TopK's indices output 'i' is used"):
        check_graph(model(True), *io, scope="all")
