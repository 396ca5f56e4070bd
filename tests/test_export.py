"""export_checkpoint end to end: fold, check, write, reload every artifact, parity, manifest, publish.

Checkpoints are built here from configs and trained for a few steps (no training CLI needed).
Exports cost seconds each, so every model is exported once per module and shared by the tests.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from torch import nn

from contract.checks import check_rule
from contract.manifest import FORMAT_FILES, Manifest
from contract.modes import EDGE_MODES, mode_slice
from export import artifacts
from export.core import ConstraintRefusedError, export_checkpoint
from export.errors import ExportInputError, ParityError
from export.kinds import SmootherExport
from models.checkpoint import load_checkpoint, save_checkpoint
from models.classifier import ClassifierConfig, MonotoneClassifier
from models.smoother import MonotoneSmoother, SmootherConfig

WEIGHT_COMPUTING_OPS = {"Softplus", "Exp", "CumSum", "Softmax", "LogSoftmax"}
FEATURES = ["income", "debt", "noise", "savings"]


# -- checkpoints built and trained in the test --------------------------------------------------


def train_smoother(param: str, kernel_size: int, steps: int = 15) -> MonotoneSmoother:
    torch.manual_seed(0)
    model = MonotoneSmoother(SmootherConfig(kernel_size=kernel_size, param=param))
    t = torch.linspace(0, 6, 200)
    clean = torch.sin(t).repeat(2, 1)  # [2, 200]
    noisy = clean + 0.3 * torch.randn_like(clean)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(steps):
        optimizer.zero_grad()
        loss = F.mse_loss(model(noisy, "causal"), clean)
        loss.backward()
        optimizer.step()
    return model.eval()


def train_classifier(method: str, scope: str, steps: int = 25) -> MonotoneClassifier:
    torch.manual_seed(1)
    directions = ["increasing", "decreasing", "free", "increasing"] if scope == "all" else None
    config = ClassifierConfig(
        feature_names=FEATURES, labels=["default", "fraud"], hidden=[8, 6], scope=scope, method=method,
        directions=directions,
    )
    model = MonotoneClassifier(config)
    x = torch.randn(256, 4) * torch.tensor([20.0, 5.0, 1.0, 100.0]) + torch.tensor([50.0, 10.0, 0.0, 500.0])
    y = torch.stack([(x[:, 0] - 2 * x[:, 1] > 30).float(), (x[:, 3] > 500).float()], dim=1)
    model.fit_standardization(x)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(steps):
        optimizer.zero_grad()
        loss = F.binary_cross_entropy_with_logits(model(x), y)
        loss.backward()
        optimizer.step()
        model.project_()  # a no-op for reparam
    return model.eval()


CASES = {
    "smoother-expcumsum": lambda: train_smoother("exp-cumsum", 9),
    "smoother-softmax": lambda: train_smoother("softmax", 7),
    "classifier-reparam-all": lambda: train_classifier("reparam", "all"),
    "classifier-reparam-final": lambda: train_classifier("reparam", "final"),
    "classifier-project-all": lambda: train_classifier("project", "all"),
    "classifier-project-final": lambda: train_classifier("project", "final"),
}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("export")


@pytest.fixture(scope="module")
def checkpoints(workdir) -> dict[str, Path]:
    paths = {}
    for case, build in CASES.items():
        paths[case] = save_checkpoint(
            workdir / "ckpt" / f"{case}.pt", build(), metrics={"val_loss": 0.125, "steps": 15},
            provenance={"data": f"synthetic ({case})"},
        )
    return paths


@pytest.fixture(scope="module")
def exported(workdir, checkpoints):
    """Every case exported once, in all formats, into one shared repository (names = case names)."""
    repo = workdir / "repo"
    return {case: export_checkpoint(path, repo, name=case) for case, path in checkpoints.items()}


def _eager(case: str, checkpoints) -> nn.Module:
    model, _ = load_checkpoint(checkpoints[case])
    return model


def _load_all(version_dir: Path):
    """Load each artifact with its own runtime, as a consumer would."""
    session = ort.InferenceSession(str(version_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    scripted = torch.jit.load(str(version_dir / "model.ts"))
    program = torch.export.load(str(version_dir / "model.pt2")).module()

    def onnx_run(x: np.ndarray) -> np.ndarray:
        return session.run(None, {session.get_inputs()[0].name: x})[0]

    def torch_run(module):
        return lambda x: module(torch.from_numpy(x)).detach().numpy()

    return {"onnx": onnx_run, "torchscript": torch_run(scripted), "pt2": torch_run(program)}


# -- every artifact against eager torch ------------------------------------------------------


@pytest.mark.parametrize("case", [c for c in CASES if c.startswith("smoother")])
def test_smoother_artifacts_match_eager_in_every_mode(case, exported, checkpoints):
    model = _eager(case, checkpoints)
    k = model.kernel_size
    runners = _load_all(exported[case].version_dir)
    rng = np.random.default_rng(7)
    for shape in [(1, 1, 1), (2, 3, k - 2), (1, 1, k), (5, 2, 61)]:
        x = rng.normal(size=shape).astype(np.float32)
        for fmt, run in runners.items():
            full = run(x)
            assert full.shape == (*shape[:2], shape[2] + k - 1), (fmt, shape)
            for mode in EDGE_MODES:
                got = full[..., mode_slice(mode, shape[2], k)]
                if mode == "valid" and shape[2] < k:
                    assert got.shape[-1] == 0
                    continue
                with torch.no_grad():
                    want = model(torch.from_numpy(x), mode).numpy()
                np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5, err_msg=f"{fmt} {mode} {shape}")


@pytest.mark.parametrize("case", [c for c in CASES if c.startswith("classifier")])
def test_classifier_artifacts_match_eager_probabilities(case, exported, checkpoints):
    model = _eager(case, checkpoints)
    runners = _load_all(exported[case].version_dir)
    rng = np.random.default_rng(3)
    for batch in (1, 64):
        x = (rng.normal(size=(batch, 4)) * [20, 5, 1, 100] + [50, 10, 0, 500]).astype(np.float32)  # raw units
        with torch.no_grad():
            want = torch.sigmoid(model(torch.from_numpy(x))).numpy()
        for fmt, run in runners.items():
            got = run(x)
            assert got.shape == (batch, 2)
            assert np.all((got >= 0) & (got <= 1)), f"{fmt} must output probabilities"
            np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5, err_msg=f"{fmt} batch {batch}")


def test_scope_all_classifier_onnx_is_monotone_in_each_declared_direction(exported):
    session = ort.InferenceSession(str(exported["classifier-reparam-all"].version_dir / "model.onnx"))
    base = np.array([50, 10, 0, 500], dtype=np.float32)
    sweep = np.linspace(-60, 60, 41, dtype=np.float32)
    for feature, sign in ((0, 1), (1, -1), (3, 1)):  # income up, debt down, savings up
        x = np.repeat(base[None, :], len(sweep), axis=0)
        x[:, feature] += sweep * (5.0 if feature == 3 else 1.0)
        scores = session.run(None, {"features": x})[0]
        steps = np.diff(scores, axis=0) * sign
        assert np.all(steps >= -1e-6), f"feature {FEATURES[feature]} breaks its direction"


# -- the ONNX graph holds folded weights as plain initializers -------------------------------------


@pytest.mark.parametrize("case", list(CASES))
def test_onnx_graph_holds_folded_weights_as_initializers(case, exported, checkpoints):
    model = onnx.load(str(exported[case].version_dir / "model.onnx"))
    ops = [node.op_type for node in model.graph.node]
    assert not WEIGHT_COMPUTING_OPS & set(ops), ops
    initializers = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    assert not any("original" in name or "parametrizations" in name for name in initializers)
    folded = _eager(case, checkpoints)
    if case.startswith("smoother"):
        conv = [node for node in model.graph.node if node.op_type == "Conv"]
        assert len(conv) == 1 and conv[0].input[1] in initializers  # the kernel feeds Conv directly
        kernel = initializers[conv[0].input[1]]
        assert kernel.shape == (1, 1, folded.kernel_size)
        np.testing.assert_array_equal(kernel.ravel(), folded.kernel.detach().numpy())
    else:
        gemms = [node for node in model.graph.node if node.op_type == "Gemm"]
        assert len(gemms) == len(folded.layers)
        for gemm, layer in zip(gemms, folded.layers):
            weight_name = gemm.input[1]
            assert weight_name in initializers
            np.testing.assert_array_equal(initializers[weight_name], layer.weight.detach().numpy())
        assert ops[-1] == "Sigmoid"  # scores are probabilities


# -- the manifest -------------------------------------------------------------------------------


@pytest.mark.parametrize("case", list(CASES))
def test_manifest_checksums_locations_io_and_probe(case, exported):
    result = exported[case]
    version_dir = result.version_dir
    manifest = Manifest.read(version_dir)
    assert manifest == result.manifest
    assert manifest.version == int(version_dir.name) and manifest.name == case
    assert {f.format for f in manifest.files} == set(FORMAT_FILES)
    for entry in manifest.files:
        data = (version_dir / entry.path).read_bytes()
        assert entry.sha256 == hashlib.sha256(data).hexdigest() and entry.size == len(data)

    # Every constraint names a tensor that exists inside each artifact and obeys the rule there.
    onnx_model = onnx.load(str(version_dir / "model.onnx"))
    inits = {init.name: numpy_helper.to_array(init) for init in onnx_model.graph.initializer}
    ts = torch.jit.load(str(version_dir / "model.ts"))
    ts_tensors = dict(ts.named_parameters()) | dict(ts.named_buffers())
    pt2_state = torch.export.load(str(version_dir / "model.pt2")).state_dict
    for constraint in manifest.constraints:
        assert set(constraint.locations) == set(FORMAT_FILES)
        for fmt, store in (("onnx", inits), ("torchscript", ts_tensors), ("pt2", pt2_state)):
            values = store[constraint.locations[fmt]]
            values = values.detach().numpy() if torch.is_tensor(values) else values
            assert check_rule(constraint.rule, constraint.tensor, values, constraint.tolerance, constraint.axis,
                              constraint.columns) == []

    # io specs agree with the ONNX graph, dynamic dims included
    def dims(value_info):
        return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]

    assert [i.name for i in manifest.inputs] == [i.name for i in onnx_model.graph.input]
    assert [o.name for o in manifest.outputs] == [o.name for o in onnx_model.graph.output]
    assert manifest.inputs[0].shape == dims(onnx_model.graph.input[0])
    assert manifest.outputs[0].shape == dims(onnx_model.graph.output[0])
    assert manifest.opset == next(o.version for o in onnx_model.opset_import if o.domain == "")

    # the probe reproduces through ONNX Runtime
    session = ort.InferenceSession(str(version_dir / "model.onnx"))
    probe = manifest.probe
    got = session.run(None, {manifest.inputs[0].name: np.asarray(probe.input, dtype=np.float32)})[0]
    np.testing.assert_allclose(got, np.asarray(probe.expected), atol=probe.atol, rtol=probe.rtol)

    assert manifest.training_metrics == {"val_loss": 0.125, "steps": 15}
    assert manifest.provenance["data"] == f"synthetic ({case})"
    assert set(manifest.parity["max_abs_error"]) == set(FORMAT_FILES)
    assert all(error <= 1e-3 for error in manifest.parity["max_abs_error"].values())
    if case.startswith("smoother"):
        assert manifest.smoother.edge_modes == list(EDGE_MODES) and manifest.classifier is None
        assert manifest.inputs[0].shape == ["batch", "channels", "length"]
    else:
        info = manifest.classifier
        assert [f.name for f in info.features] == FEATURES and info.labels == ["default", "fraud"]
        if case.endswith("-all"):
            assert [f.direction for f in info.features] == ["increasing", "decreasing", "free", "increasing"]
            assert info.monotone_features == ["income", "debt", "savings"]
            first = next(c for c in manifest.constraints if c.tensor == "layers.0.weight")
            assert first.columns == [0, 1, 3]  # the free feature's weights are unconstrained
        else:
            assert info.monotone_features == []
            assert [c.tensor for c in manifest.constraints] == ["feature_scale", "layers.2.weight"]


@pytest.mark.parametrize("case", ["smoother-expcumsum", "classifier-project-all"])
def test_model_card_has_metrics_and_a_png_plot(case, exported):
    version_dir = exported[case].version_dir
    text = (version_dir / "card.md").read_text()
    assert f"# {case} version {exported[case].manifest.version}" in text
    assert "val_loss" in text and "0.125" in text and "card.png" in text
    png = (version_dir / "card.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert width >= 300 and height >= 200


def test_report_lists_files_constraints_and_parity(exported):
    text = exported["classifier-reparam-all"].report.render()
    for expected in ("model.onnx", "model.ts", "model.pt2", "layers.0.weight nonnegative", "columns [0, 1, 3]",
                     "max abs error", "onnx:layers.0.weight"):
        assert expected in text


# -- refusals: nothing is written ---------------------------------------------------------------


def _edited_checkpoint(source: Path, target: Path, edit) -> Path:
    payload = torch.load(source, weights_only=True)
    edit(payload["state_dict"])
    torch.save(payload, target)
    return target


def test_negative_weights_are_refused_naming_every_tensor_and_index(checkpoints, tmp_path):
    def edit(state):
        state["layers.1.weight"][0, 2] = -0.5
        state["layers.1.weight"][3, 1] = -0.25
        state["layers.2.weight"][1, 4] = -1.0
        state["feature_scale"][2] = 0.0

    ckpt = _edited_checkpoint(checkpoints["classifier-project-all"], tmp_path / "bad.pt", edit)
    repo = tmp_path / "repo"
    with pytest.raises(ConstraintRefusedError) as caught:
        export_checkpoint(ckpt, repo)
    found = {(v.tensor, v.rule, v.index) for v in caught.value.violations}
    assert found == {
        ("layers.1.weight", "nonnegative", (0, 2)),
        ("layers.1.weight", "nonnegative", (3, 1)),
        ("layers.2.weight", "nonnegative", (1, 4)),
        ("feature_scale", "positive", (2,)),
    }
    assert "layers.1.weight[3, 1]" in str(caught.value)
    assert not repo.exists()  # refused before anything was written


def test_refused_free_column_is_allowed_but_constrained_column_is_not(checkpoints, tmp_path):
    """Scope all with a free feature: a negative weight on the free column is legal, on a monotone one not."""

    def edit(state):
        state["layers.0.weight"][0, 2] = -3.0  # "noise" is free
        state["layers.0.weight"][1, 1] = -0.1  # "debt" is monotone (enters negated)

    ckpt = _edited_checkpoint(checkpoints["classifier-project-all"], tmp_path / "bad.pt", edit)
    with pytest.raises(ConstraintRefusedError) as caught:
        export_checkpoint(ckpt, tmp_path / "repo")
    assert [(v.tensor, v.index) for v in caught.value.violations] == [("layers.0.weight", (1, 1))]


def test_smoother_kernel_breaking_its_rules_is_refused(checkpoints, tmp_path):
    """exp(-1000) underflows to 0: the first tap is no longer positive; a NaN logit poisons the rest."""

    def edit(state):
        logits = state["parametrizations.kernel.original"]
        logits[0] = -1000.0

    ckpt = _edited_checkpoint(checkpoints["smoother-expcumsum"], tmp_path / "zero.pt", edit)
    with pytest.raises(ConstraintRefusedError) as caught:
        export_checkpoint(ckpt, tmp_path / "repo")
    assert [(v.tensor, v.rule, v.index) for v in caught.value.violations] == [("kernel", "positive", (0,))]

    def poison(state):
        state["parametrizations.kernel.original"][5] = float("nan")

    ckpt = _edited_checkpoint(checkpoints["smoother-expcumsum"], tmp_path / "nan.pt", poison)
    with pytest.raises(ConstraintRefusedError) as caught:
        export_checkpoint(ckpt, tmp_path / "repo")
    assert {v.index for v in caught.value.violations if v.rule == "monotone_nondecreasing"} >= {(5,), (8,)}
    assert not (tmp_path / "repo").exists()


# -- failures after writing started leave the repository unchanged -----------------------------------


def _snapshot(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def test_failure_after_the_first_file_leaves_the_repository_unchanged(exported, checkpoints, tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    shutil.copytree(exported["smoother-softmax"].version_dir, repo / "smoother" / "1")  # an existing good version
    before = _snapshot(repo)
    seen_files: list[str] = []

    def failing_writer(wrapper, signature, path, opset):
        seen_files.extend(sorted(os.listdir(path.parent)))
        raise RuntimeError("disk full (injected)")

    monkeypatch.setattr(artifacts, "write_torchscript", failing_writer)
    with pytest.raises(RuntimeError, match="injected"):
        export_checkpoint(checkpoints["smoother-softmax"], repo, formats=("onnx", "torchscript"))
    assert seen_files == ["model.onnx"]  # the failure came after a file was written
    assert _snapshot(repo) == before


def test_interrupt_in_a_fresh_repository_leaves_nothing(checkpoints, tmp_path, monkeypatch):
    repo = tmp_path / "new" / "repo"

    def interrupted(wrapper, signature, path, opset):
        path.write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(artifacts, "write_onnx", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export_checkpoint(checkpoints["classifier-reparam-final"], repo, formats=("onnx",))
    assert not (tmp_path / "new").exists()  # every directory the export created is gone again


class _Shifted(nn.Module):
    """A wrapper whose output drifts from eager torch by 1e-3: parity must catch every case."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, signal: torch.Tensor) -> torch.Tensor:
        return self.inner(signal) + 1e-3


def test_parity_mismatches_are_all_reported_and_nothing_is_published(checkpoints, tmp_path, monkeypatch):
    real_build = SmootherExport.build_wrapper

    def drifting(self, folded):
        wrapper, signature = real_build(self, folded)
        return _Shifted(wrapper).eval(), signature

    monkeypatch.setattr(SmootherExport, "build_wrapper", drifting)
    repo = tmp_path / "repo"
    with pytest.raises(ParityError) as caught:
        export_checkpoint(checkpoints["smoother-expcumsum"], repo, formats=("onnx", "torchscript"))
    mismatches = caught.value.mismatches
    assert {m.format for m in mismatches} == {"onnx", "torchscript"}
    assert {"length_1", "long_random_walk", "batch_64_random"} <= {m.case for m in mismatches}
    assert {"full", "same", "causal", "valid"} <= {m.output for m in mismatches}
    assert all(m.max_abs_error == pytest.approx(1e-3, rel=0.2) for m in mismatches)
    assert "nothing was published" in str(caught.value)
    assert not repo.exists()


# -- versions -----------------------------------------------------------------------------------


def test_two_exports_get_versions_one_and_two(checkpoints, tmp_path):
    repo = tmp_path / "repo"
    first = export_checkpoint(checkpoints["classifier-project-final"], repo, formats=("onnx",))
    second = export_checkpoint(checkpoints["classifier-project-final"], repo, formats=("onnx",))
    assert (first.manifest.version, second.manifest.version) == (1, 2)
    assert first.version_dir == repo / "classifier" / "1" and second.version_dir == repo / "classifier" / "2"
    assert Manifest.read(second.version_dir).version == 2
    assert sorted(os.listdir(repo / "classifier")) == ["1", "2"]  # no staging directory left
    assert [f.path for f in second.manifest.files] == ["model.onnx"]
    assert set(second.manifest.constraints[0].locations) == {"onnx"}


def test_bad_arguments_are_refused_before_any_work(checkpoints, tmp_path):
    ckpt = checkpoints["smoother-softmax"]
    with pytest.raises(ExportInputError, match="unknown format"):
        export_checkpoint(ckpt, tmp_path / "r", formats=("onnx", "tflite"))
    with pytest.raises(ExportInputError, match="invalid model name"):
        export_checkpoint(ckpt, tmp_path / "r", name="../escape")
    with pytest.raises(ExportInputError, match="opset"):
        export_checkpoint(ckpt, tmp_path / "r", opset=9)
    with pytest.raises(ExportInputError, match="atol"):
        export_checkpoint(ckpt, tmp_path / "r", atol=float("nan"))
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ExportInputError, match="not a directory"):
        export_checkpoint(ckpt, blocker / "repo")
    assert not (tmp_path / "r").exists()


def test_every_manifest_format_has_a_file_name():
    from contract.manifest import FORMATS

    assert FORMATS == tuple(FORMAT_FILES)


def test_locate_tensor_matches_by_name_then_by_exact_value():
    tensors = {"kernel": np.array([[[0.2, 0.3, 0.5]]], dtype=np.float32)}
    assert artifacts.locate_tensor("kernel", np.array([0.2, 0.3, 0.5], dtype=np.float32), tensors) == "kernel"
    assert artifacts.locate_tensor("other", np.array([0.2, 0.3, 0.5], dtype=np.float32), tensors) == "kernel"
    assert artifacts.locate_tensor("kernel", np.array([0.2, 0.3, 0.6], dtype=np.float32), tensors) is None
    assert not artifacts.same_tensor(np.ones((2, 3)), np.ones((3, 2)))  # a transposed weight is not the same tensor


# -- export runs the service's proof before it publishes ------------------------------------------


class _WithSine(nn.Module):
    """The same function for finite input (0 * sin(x) == 0, so parity passes), but a graph with an
    op the service's proof does not model: the service would refuse it, so export must not publish it."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, signal: torch.Tensor) -> torch.Tensor:
        full = self.inner(signal)
        return full + 0.0 * torch.sin(full)


def test_export_refuses_to_publish_what_the_service_would_refuse(checkpoints, tmp_path, monkeypatch):
    from export.errors import ProofRefusedError

    real_build = SmootherExport.build_wrapper
    monkeypatch.setattr(SmootherExport, "build_wrapper",
                        lambda self, folded: (lambda w, s: (_WithSine(w).eval(), s))(*real_build(self, folded)))
    repo = tmp_path / "repo"
    with pytest.raises(ProofRefusedError) as caught:
        export_checkpoint(checkpoints["smoother-expcumsum"], repo, formats=("onnx",))
    assert "engine onnx" in caught.value.reason and "Sin" in caught.value.report
    assert "nothing was published" in str(caught.value)
    assert not repo.exists()  # no version, no staging directory, no model directory left


def test_every_published_version_passes_the_services_proof(exported):
    from service.repository.prover import prove_version

    for case, result in exported.items():
        for engine in ("onnx", "torchscript"):
            report, _ = prove_version(result.version_dir, engine=engine)
            assert report.ok, f"{case} ({engine}): {report.render()}"


def test_an_unconstrained_classifier_needs_allow_unconstrained(checkpoints, tmp_path, monkeypatch, capsys):
    """A manifest declaring scope 'none' (the models' unconstrained baseline): the default policy refuses
    it, so export does too; --allow-unconstrained proves it with Policy(allow_unconstrained=True)."""
    from contract.manifest import ClassifierInfo
    from export.errors import ProofRefusedError
    from export.kinds import ClassifierExport
    from service.repository.prover import prove_version

    real_info = ClassifierExport.model_info

    def unconstrained(self, model):
        info = real_info(self, model)["classifier"].model_dump()
        return {"classifier": ClassifierInfo(**{**info, "scope": "none", "monotone_features": []})}

    monkeypatch.setattr(ClassifierExport, "model_info", unconstrained)
    repo = tmp_path / "repo"
    with pytest.raises(ProofRefusedError, match="scope 'none'"):
        export_checkpoint(checkpoints["classifier-reparam-final"], repo, formats=("onnx",))
    assert not repo.exists()
    result = export_checkpoint(checkpoints["classifier-reparam-final"], repo, formats=("onnx",), allow_unconstrained=True)
    assert result.manifest.classifier.scope == "none"
    report, proven = prove_version(result.version_dir)  # a service with the default policy
    assert proven is None and "scope 'none'" in report.reason

    # the CLI (in process, so the same declared scope applies): exit 1 without the flag, 0 with it
    from monoserve.cli import main

    checkpoint = str(checkpoints["classifier-reparam-final"])
    cli_repo = tmp_path / "cli-repo"
    assert main(["export", checkpoint, "--repo", str(cli_repo), "--formats", "onnx"]) == 1
    assert "refused: the service's proof refuses" in capsys.readouterr().err and not cli_repo.exists()
    assert main(["export", checkpoint, "--repo", str(cli_repo), "--formats", "onnx", "--allow-unconstrained"]) == 0
    assert Manifest.read(cli_repo / "classifier" / "1").classifier.scope == "none"
