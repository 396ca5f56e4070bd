"""Model repositories for the service tests, in the artifact contract's exact layout.

`reference_repo()` builds (once per test process, cached) a repository with
- smoother/1:   MonotoneSmoother (K=9) folded, FullCorrelation exported by torch.onnx.export + TorchScript;
- classifier/1: MonotoneClassifier (4 features: increasing, decreasing, increasing, free; one label)
                with a sigmoid head, folded weights, standardization inside the graph;
- multilabel/1: a classifier with two labels, all features increasing.
Tests copy it (`fresh_repo`) before changing anything. The tamper helpers below edit a copied
version and rewrite its manifest consistently, so exactly one proof step can catch the edit.

This module imports torch: only the tests that build artifacts use it; the service does not.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import shutil
import tempfile
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np

from export.manifest import (
    ClassifierInfo,
    ConstraintEntry,
    FeatureSpec,
    FileEntry,
    Manifest,
    Probe,
    SmootherInfo,
    TensorSpec,
)

KERNEL_SIZE = 9
CLASSIFIER_FEATURES = ["clicks", "complaints", "visits", "region"]
CLASSIFIER_DIRECTIONS = ["increasing", "decreasing", "increasing", "free"]
MULTILABEL_FEATURES = ["x", "y", "z"]
MULTILABEL_LABELS = ["urgent", "spam"]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def file_entries(version_dir: Path) -> list[FileEntry]:
    formats = {"model.onnx": "onnx", "model.ts": "torchscript", "model.pt2": "pt2"}
    return [FileEntry(path=name, format=fmt, sha256=_sha256(version_dir / name), size=(version_dir / name).stat().st_size)
            for name, fmt in formats.items() if (version_dir / name).exists()]


def _export_onnx(module, example, path: Path, input_name: str, output_name: str, dynamic: dict[int, str]) -> None:
    import torch

    dims = {axis: torch.export.Dim(name) for axis, name in dynamic.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), str(path), input_names=[input_name], output_names=[output_name],
                          dynamic_shapes={input_name: dims}, verbose=False)


def _export_torchscript(module, path: Path, example=None) -> None:
    """script (keeps dynamic shapes) or, for modules script cannot compile, trace with `example`."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated in torch 2.13; fine for fixtures
        scripted = torch.jit.script(module) if example is None else torch.jit.trace(module, (example,))
        torch.jit.save(scripted, str(path))


def _manifest(name: str, kind: str, version_dir: Path, **fields) -> Manifest:
    return Manifest(name=name, version=int(version_dir.name), kind=kind, created=datetime.now(timezone.utc),
                    monoserve_version="test", source_checkpoint_sha256="0" * 64, source_checkpoint_name="fixture.ckpt",
                    files=file_entries(version_dir), **fields)


def build_smoother(repo: Path, name: str = "smoother", version: int = 1, kernel_size: int = KERNEL_SIZE) -> Path:
    import torch

    from models.smoother import FullCorrelation, MonotoneSmoother, SmootherConfig

    torch.manual_seed(0)
    model = MonotoneSmoother(SmootherConfig(kernel_size=kernel_size, init_decay=0.3))
    with torch.no_grad():  # a kernel that is not the initial one, still positive/monotone/normalized
        model.parametrizations.kernel.original.add_(torch.rand(kernel_size) * 0.5)
        kernel = model.kernel.detach().clone()
    wrapper = FullCorrelation(kernel).eval()
    version_dir = repo / name / str(version)
    version_dir.mkdir(parents=True)
    _export_onnx(wrapper, torch.randn(2, 3, 20), version_dir / "model.onnx", "signal", "full",
                 {0: "batch", 1: "channels", 2: "length"})
    _export_torchscript(wrapper, version_dir / "model.ts")
    probe_input = torch.randn(1, 2, 12, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = wrapper(probe_input)
    constraints = [ConstraintEntry(**spec, locations={"onnx": "kernel", "torchscript": "kernel"})
                   for spec in MonotoneSmoother.constraint_specs(normalize=True)]
    manifest = _manifest(
        name, "smoother", version_dir,
        inputs=[TensorSpec(name="signal", dtype="float32", shape=["batch", "channels", "length"])],
        outputs=[TensorSpec(name="full", dtype="float32", shape=["batch", "channels", f"length + {kernel_size - 1}"])],
        constraints=constraints,
        smoother=SmootherInfo(kernel_size=kernel_size, param="exp-cumsum", normalized=True),
        probe=Probe(input=probe_input.tolist(), expected=expected.tolist(), atol=1e-5),
    )
    (version_dir / "manifest.json").write_text(manifest.to_json())
    return version_dir


def build_classifier(repo: Path, name: str, features: list[str], directions: list[str], labels: list[str],
                     version: int = 1, seed: int = 0) -> Path:
    import torch
    from torch import nn
    from torch.nn.utils import parametrize

    from models.classifier import ClassifierConfig, MonotoneClassifier

    torch.manual_seed(seed)
    config = ClassifierConfig(feature_names=features, labels=labels, hidden=[8, 6], scope="all",
                              method="reparam", directions=directions, threshold=0.5)
    model = MonotoneClassifier(config)
    with torch.no_grad():
        model.feature_mean.copy_(torch.randn(len(features)))
        model.feature_scale.copy_(torch.rand(len(features)) + 0.5)
        for layer in model.layers:
            layer.bias.copy_(torch.randn_like(layer.bias) * 0.1)
    for layer in model.layers:
        if parametrize.is_parametrized(layer, "weight"):
            parametrize.remove_parametrizations(layer, "weight", leave_parametrized=True)
    model.eval()

    class Scores(nn.Module):  # the contract: raw features in, sigmoid probabilities out
        def __init__(self, inner: nn.Module):
            super().__init__()
            self.model = inner

        def forward(self, features: torch.Tensor) -> torch.Tensor:
            return torch.sigmoid(self.model(features))

    wrapper = Scores(model).eval()
    version_dir = repo / name / str(version)
    version_dir.mkdir(parents=True)
    _export_onnx(wrapper, torch.randn(5, len(features)), version_dir / "model.onnx", "features", "scores", {0: "batch"})
    _export_torchscript(wrapper, version_dir / "model.ts", example=torch.randn(5, len(features)))
    probe_input = torch.randn(3, len(features), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = wrapper(probe_input)
    constraints = [ConstraintEntry(**spec, locations={"onnx": f"model.{spec['tensor']}", "torchscript": f"model.{spec['tensor']}"})
                   for spec in model.constraint_specs()]
    monotone = [f for f, d in zip(features, directions) if d != "free"]
    manifest = _manifest(
        name, "classifier", version_dir,
        inputs=[TensorSpec(name="features", dtype="float32", shape=["batch", len(features)])],
        outputs=[TensorSpec(name="scores", dtype="float32", shape=["batch", len(labels)])],
        constraints=constraints,
        classifier=ClassifierInfo(features=[FeatureSpec(name=f, direction=d) for f, d in zip(features, directions)],
                                  labels=labels, threshold=0.5, scope="all", method="reparam", monotone_features=monotone),
        probe=Probe(input=probe_input.tolist(), expected=expected.tolist(), atol=1e-5),
    )
    (version_dir / "manifest.json").write_text(manifest.to_json())
    return version_dir


@functools.lru_cache(maxsize=None)
def reference_repo() -> Path:
    """Built once per process; never modify it (copy with fresh_repo)."""
    root = Path(tempfile.mkdtemp(prefix="monoserve-test-repo-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    repo = root / "repo"
    build_smoother(repo)
    build_classifier(repo, "classifier", CLASSIFIER_FEATURES, CLASSIFIER_DIRECTIONS, ["spam"])
    build_classifier(repo, "multilabel", MULTILABEL_FEATURES, ["increasing"] * 3, MULTILABEL_LABELS, seed=1)
    return repo


def fresh_repo(destination: Path, models: tuple[str, ...] = ("smoother", "classifier", "multilabel")) -> Path:
    repo = destination / "repo"
    repo.mkdir(parents=True)
    for name in models:
        shutil.copytree(reference_repo() / name, repo / name)
    return repo


# -- tampering --------------------------------------------------------------------------------
def copy_version(repo: Path, name: str, source: int, target: int) -> Path:
    target_dir = repo / name / str(target)
    shutil.copytree(repo / name / str(source), target_dir)
    manifest = Manifest.read(target_dir)
    manifest.version = target
    (target_dir / "manifest.json").write_text(manifest.to_json())
    return target_dir


def reseal(version_dir: Path, refresh_probe: bool = True) -> None:
    """Rewrite the manifest's checksums (and the probe's expected output from the ONNX graph), as a
    careless or malicious exporter would: only the proof's own checks can then catch an edit."""
    manifest = Manifest.read(version_dir)
    if refresh_probe:
        import onnxruntime as ort

        session = ort.InferenceSession(str(version_dir / "model.onnx"), providers=["CPUExecutionProvider"])
        probe_input = np.asarray(manifest.probe.input, dtype=np.float32)
        manifest.probe.expected = session.run(None, {session.get_inputs()[0].name: probe_input})[0].tolist()
    manifest.files = file_entries(version_dir)
    (version_dir / "manifest.json").write_text(manifest.to_json())


def edit_onnx(version_dir: Path, edit: Callable[["onnx.ModelProto"], None]) -> None:  # noqa: F821
    import onnx

    model = onnx.load(str(version_dir / "model.onnx"))
    edit(model)
    onnx.save(model, str(version_dir / "model.onnx"))


def edit_initializer(version_dir: Path, name: str, change: Callable[[np.ndarray], np.ndarray]) -> None:
    from onnx import numpy_helper

    def edit(model) -> None:
        for index, init in enumerate(model.graph.initializer):
            if init.name == name:
                original = numpy_helper.to_array(init)
                changed = np.asarray(change(original.copy())).astype(original.dtype)  # keep the graph's dtype
                model.graph.initializer[index].CopyFrom(numpy_helper.from_array(changed, name))
                return
        raise KeyError(name)

    edit_onnx(version_dir, edit)


def insert_scaling_node(version_dir: Path, after_input_of: str, factor: np.ndarray, node_name: str = "tamper_scale") -> None:
    """Insert `x * factor` right after the graph input feeds node `after_input_of`'s first consumer."""
    import onnx
    from onnx import helper, numpy_helper

    def edit(model) -> None:
        graph = model.graph
        source = graph.input[0].name
        scaled = f"{node_name}_out"
        graph.initializer.append(numpy_helper.from_array(factor.astype(np.float32), f"{node_name}_factor"))
        for node in graph.node:
            for i, name in enumerate(node.input):
                if name == source:
                    node.input[i] = scaled
        graph.node.insert(0, helper.make_node("Mul", [source, f"{node_name}_factor"], [scaled], name=node_name))
        onnx.checker.check_model(model)

    edit_onnx(version_dir, edit)


# -- numpy references -------------------------------------------------------------------------
def onnx_initializers(version_dir: Path) -> dict[str, np.ndarray]:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(version_dir / "model.onnx"))
    return {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}


def numpy_smooth(signal: np.ndarray, kernel: np.ndarray, mode: str) -> np.ndarray:
    """Replicate-pad per mode, then a valid cross-correlation, per row, in float64."""
    k = kernel.reshape(-1).astype(np.float64)
    size = k.size
    left, right = {"same": (size // 2, size // 2), "causal": (size - 1, 0), "valid": (0, 0)}[mode]
    rows = np.asarray(signal, dtype=np.float64).reshape(-1, signal.shape[-1])
    out = [np.correlate(np.pad(row, (left, right), mode="edge"), k, mode="valid") for row in rows]
    return np.stack(out).reshape(*signal.shape[:-1], -1)


def numpy_classify(features: np.ndarray, weights: dict[str, np.ndarray]) -> np.ndarray:
    h = (np.asarray(features, np.float64) - weights["model.feature_mean"]) / weights["model.feature_scale"]
    h = h * weights["model.direction_sign"]
    index = 0
    while f"model.layers.{index}.weight" in weights:
        h = h @ weights[f"model.layers.{index}.weight"].astype(np.float64).T + weights[f"model.layers.{index}.bias"]
        index += 1
        if f"model.layers.{index}.weight" in weights:
            h = np.maximum(h, 0.0)
    return 1.0 / (1.0 + np.exp(-h))
