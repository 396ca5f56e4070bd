"""Model repositories for the service tests, in the artifact contract's exact layout.

`reference_repo()` builds (once per test process, cached) a repository with export_checkpoint, the
real export, from checkpoints made here:
- smoother/1:   MonotoneSmoother (K=9), ONNX + TorchScript + pt2;
- classifier/1: MonotoneClassifier (4 features: increasing, decreasing, increasing, free; one label),
                standardization and biases set, ONNX + TorchScript;
- multilabel/1: a classifier with two labels, all features increasing.
Tests copy it (`fresh_repo`) before changing anything. The tamper helpers below edit a copied
version and rewrite its manifest consistently, so exactly one proof step can catch the edit.

This module imports torch: only the tests that build artifacts use it; the service does not.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from contract.files import sha256_file
from contract.manifest import FORMAT_FILES, FileEntry, Manifest

KERNEL_SIZE = 9
CLASSIFIER_FEATURES = ["clicks", "complaints", "visits", "region"]
CLASSIFIER_DIRECTIONS = ["increasing", "decreasing", "increasing", "free"]
MULTILABEL_FEATURES = ["x", "y", "z"]
MULTILABEL_LABELS = ["urgent", "spam"]


def file_entries(version_dir: Path) -> list[FileEntry]:
    return [FileEntry(path=name, format=fmt, sha256=sha256_file(version_dir / name), size=(version_dir / name).stat().st_size)
            for fmt, name in FORMAT_FILES.items() if (version_dir / name).exists()]


def build_smoother(repo: Path, workdir: Path, name: str = "smoother", kernel_size: int = KERNEL_SIZE,
                   formats: tuple[str, ...] = ("onnx", "torchscript")) -> Path:
    """A trained-looking smoother checkpoint, exported by export_checkpoint (the real export)."""
    import torch

    from export.core import export_checkpoint
    from models.checkpoint import save_checkpoint
    from models.smoother import MonotoneSmoother, SmootherConfig

    torch.manual_seed(0)
    model = MonotoneSmoother(SmootherConfig(kernel_size=kernel_size, init_decay=0.3))
    with torch.no_grad():  # a kernel that is not the initial one, still positive/monotone/normalized
        model.parametrizations.kernel.original.add_(torch.rand(kernel_size) * 0.5)
    checkpoint = save_checkpoint(workdir / f"{name}.ckpt", model, metrics={"fixture": True})
    return export_checkpoint(checkpoint, repo, name=name, formats=formats).version_dir


def build_classifier(repo: Path, workdir: Path, name: str, features: list[str], directions: list[str],
                     labels: list[str], seed: int = 0) -> Path:
    """A classifier checkpoint with fitted-looking standardization and biases, exported for real."""
    import torch

    from export.core import export_checkpoint
    from models.checkpoint import save_checkpoint
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
    checkpoint = save_checkpoint(workdir / f"{name}.ckpt", model, metrics={"fixture": True})
    return export_checkpoint(checkpoint, repo, name=name, formats=("onnx", "torchscript")).version_dir


@functools.lru_cache(maxsize=None)
def reference_repo() -> Path:
    """Built once per process; never modify it (copy with fresh_repo)."""
    root = Path(tempfile.mkdtemp(prefix="monoserve-test-repo-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    repo = root / "repo"
    build_smoother(repo, root, formats=("onnx", "torchscript", "pt2"))  # pt2 too: listed files the service only hashes
    build_classifier(repo, root, "classifier", CLASSIFIER_FEATURES, CLASSIFIER_DIRECTIONS, ["spam"])
    build_classifier(repo, root, "multilabel", MULTILABEL_FEATURES, ["increasing"] * 3, MULTILABEL_LABELS, seed=1)
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


def onnx_name(version_dir: Path, tensor: str) -> str:
    """The initializer that holds a constrained tensor, from the manifest's locations."""
    manifest = Manifest.read(version_dir)
    return next(c.locations["onnx"] for c in manifest.constraints if c.tensor == tensor)


def numpy_classify(features: np.ndarray, weights: dict[str, np.ndarray]) -> np.ndarray:
    """The classifier's forward pass in numpy from the exported initializers (export's names)."""
    h = (np.asarray(features, np.float64) - weights["feature_mean"]) / weights["feature_scale"]
    h = h * weights["direction_sign"]
    index = 0
    while f"layers.{index}.weight" in weights:
        h = h @ weights[f"layers.{index}.weight"].astype(np.float64).T + weights[f"layers.{index}.bias"]
        index += 1
        if f"layers.{index}.weight" in weights:
            h = np.maximum(h, 0.0)
    return 1.0 / (1.0 + np.exp(-h))
