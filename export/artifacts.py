"""Export wrappers, and the writer and reader of each artifact format (ONNX, TorchScript, torch.export).

The wrappers hold only folded (plain) tensors, so every graph carries its constrained weights as
constants: ONNX initializers, TorchScript parameters/buffers, torch.export state_dict entries, all
under the model's state_dict names ("kernel", "layers.0.weight", "feature_scale", ...).
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from export.errors import ArtifactError
from models.classifier import MonotoneClassifier
from torchref.modules import ClassifierScores

logger = logging.getLogger(__name__)

# Ops that would compute a weight from a raw parameter at inference time (the parametrizations'
# maps). A folded graph has none of them; finding one means folding did not happen.
WEIGHT_COMPUTING_OPS = frozenset({"Softplus", "Exp", "CumSum", "Softmax", "LogSoftmax"})

Runner = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class GraphSignature:
    """The artifact contract of one model kind: names, shapes (dynamic dims named) and an example."""

    input_name: str
    output_name: str
    input_shape: list[int | str]
    output_shape: list[int | str]
    dynamic_axes: dict[int, str]  # input axis -> dimension name
    example: torch.Tensor = field(repr=False)


def classifier_scores(model: MonotoneClassifier) -> ClassifierScores:
    """The export wrapper of a folded MonotoneClassifier (torchref.modules.ClassifierScores)."""
    for layer in model.layers:
        if not isinstance(layer, nn.Linear) or parametrize.is_parametrized(layer):
            raise ArtifactError(f"expected folded plain nn.Linear layers, got {type(layer).__name__}")
    config = model.config
    calibration = (model.calibration_scale, model.calibration_bias) if config.calibrated else None
    return ClassifierScores(model.feature_mean, model.feature_scale, model.direction_sign,
                            [(layer.weight, layer.bias) for layer in model.layers], config.activation,
                            config.transform, calibration)


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The dynamo exporter prints progress and emits FutureWarnings from torch internals: keep them
    out of the CLI report, at debug level in the log."""
    captured = io.StringIO()
    chatty = [logging.getLogger(name) for name in ("onnxscript", "onnx_ir", "torch.onnx")]
    levels = [chatty_logger.level for chatty_logger in chatty]
    for chatty_logger in chatty:
        chatty_logger.setLevel(max(logging.WARNING, chatty_logger.getEffectiveLevel()))
    try:
        with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(captured):
            warnings.simplefilter("always")
            yield
    finally:
        for chatty_logger, level in zip(chatty, levels):
            chatty_logger.setLevel(level)
    for line in captured.getvalue().splitlines():
        logger.debug("onnx exporter: %s", line)
    for warning in caught:
        logger.debug("onnx exporter warning: %s", warning.message)


_jit_warning_logged = False


@contextlib.contextmanager
def _jit_deprecation_handled() -> Iterator[None]:
    """torch 2.13 deprecates torch.jit.script/save/load (DeprecationWarning on every call).

    TorchScript is still written because the service's TorchScript engine loads it; the
    forward-compatible artifact is model.pt2 (torch.export). Log the deprecation once per process
    instead of a warning per call, and let any other warning through.
    """
    global _jit_warning_logged
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for warning in caught:
        if issubclass(warning.category, DeprecationWarning) and "torch.jit" in str(warning.message):
            if not _jit_warning_logged:
                logger.info(
                    "TorchScript is deprecated in torch %s (%s); model.ts is still written for the "
                    "TorchScript engine, model.pt2 (torch.export) is its replacement",
                    torch.__version__,
                    warning.message,
                )
                _jit_warning_logged = True
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)


# -- writers: one function per format (tests monkeypatch them to inject failures) -------------


def write_onnx(wrapper: nn.Module, signature: GraphSignature, path: Path, opset: int | None, *,
               check: bool = True, refuse_weight_ops: bool = True) -> Any:
    """Write model.onnx with the dynamo exporter (dynamic dims named, one self-contained file): the one
    ONNX writer of every export path. Returns the written graph (onnx.ModelProto), loaded once and,
    with `check`, checked once (onnx.checker); a caller that changes the graph afterwards (a user's
    classifier, export.byom) checks its final graph itself instead. `refuse_weight_ops`: a graph
    that computes weights at inference time means folding failed (not asked of a user's own graph,
    whose hidden layers may use those ops)."""
    import onnx

    dynamic = (dict(signature.dynamic_axes),)  # by position: any name of forward's argument
    try:
        with _quiet_exporter():
            torch.onnx.export(
                wrapper,
                (signature.example,),
                str(path),
                input_names=[signature.input_name],
                output_names=[signature.output_name],
                opset_version=opset,
                dynamo=True,
                dynamic_shapes=dynamic,
                external_data=False,  # one self-contained file: its sha256 covers the weights
                verbose=False,
            )
    except Exception as exc:
        raise ArtifactError(f"ONNX export failed (opset {opset or 'default'}): {exc}") from exc
    model = onnx.load(str(path), load_external_data=False)  # nothing outside the file is read
    if check:
        onnx.checker.check_model(model)
    computing = sorted({node.op_type for node in model.graph.node} & WEIGHT_COMPUTING_OPS)
    if refuse_weight_ops and computing:
        raise ArtifactError(f"{path.name} computes weights at inference time (ops {computing}); folding failed")
    return model


def onnx_opset(model) -> int:
    return next(int(entry.version) for entry in model.opset_import if entry.domain in ("", "ai.onnx"))


def write_torchscript(wrapper: nn.Module, signature: GraphSignature, path: Path, opset: int | None) -> None:
    del signature, opset  # scripting keeps every dimension dynamic
    with _jit_deprecation_handled():
        scripted = torch.jit.script(wrapper)
        torch.jit.save(scripted, str(path))


def write_pt2(wrapper: nn.Module, signature: GraphSignature, path: Path, opset: int | None) -> None:
    del opset
    from torch.export import Dim

    dims = {axis: Dim(name, min=1) for axis, name in signature.dynamic_axes.items()}
    program = torch.export.export(wrapper, (signature.example,), dynamic_shapes={signature.input_name: dims})
    torch.export.save(program, str(path))


WRITERS: dict[str, str] = {"onnx": "write_onnx", "torchscript": "write_torchscript", "pt2": "write_pt2"}


def write_artifact(fmt: str, wrapper: nn.Module, signature: GraphSignature, path: Path, opset: int | None) -> Any:
    """Dispatch by name at call time, so a monkeypatched writer is the one that runs. ONNX: the written
    graph (write_onnx), to be handed to load_artifact; the other formats: None."""
    writer = globals()[WRITERS[fmt]]
    return writer(wrapper, signature, path, opset)


# -- readers: load an artifact back, run it, list its named tensors -----------------------------


@dataclass
class LoadedArtifact:
    format: str
    path: Path
    run: Runner  # float32 input -> output array
    tensors: dict[str, np.ndarray]  # every named constant inside the artifact
    ops: list[str] = field(default_factory=list)  # ONNX only: the node op types in order


def load_artifact(fmt: str, path: Path, signature: GraphSignature, onnx_model: Any = None) -> LoadedArtifact:
    """An artifact read back: its runner and its named constants. `onnx_model`: the graph write_onnx
    returned for this file, used instead of parsing the file again."""
    if fmt == "onnx":
        return _load_onnx(path, signature, onnx_model)
    if fmt == "torchscript":
        with _jit_deprecation_handled():
            module = torch.jit.load(str(path), map_location="cpu").eval()
        tensors = {name: t.detach().cpu().numpy() for name, t in module.named_parameters()}
        tensors.update({name: t.detach().cpu().numpy() for name, t in module.named_buffers()})
        return LoadedArtifact(fmt, path, _torch_runner(module), tensors)
    if fmt == "pt2":
        program = torch.export.load(str(path))
        tensors = {name: t.detach().cpu().numpy() for name, t in program.state_dict.items()}
        tensors.update({name: t.detach().cpu().numpy() for name, t in program.constants.items() if torch.is_tensor(t)})
        return LoadedArtifact(fmt, path, _torch_runner(program.module()), tensors)
    raise ArtifactError(f"unknown format {fmt!r}")


def _torch_runner(module: Callable[[torch.Tensor], torch.Tensor]) -> Runner:
    def run(inputs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(np.ascontiguousarray(inputs, dtype=np.float32))).numpy()

    return run


def _load_onnx(path: Path, signature: GraphSignature, model: Any = None) -> LoadedArtifact:
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    if model is None:
        model = onnx.load(str(path))
    tensors = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # tiny graphs; the machine is shared
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])

    def run(inputs: np.ndarray) -> np.ndarray:
        feed = {signature.input_name: np.ascontiguousarray(inputs, dtype=np.float32)}
        return session.run([signature.output_name], feed)[0]

    return LoadedArtifact("onnx", path, run, tensors, ops=[node.op_type for node in model.graph.node])


def same_tensor(stored: np.ndarray, folded: np.ndarray) -> bool:
    """True when `stored` holds exactly `folded`, possibly with leading singleton dims ([1, 1, K] for [K])."""
    stored = np.asarray(stored)
    if stored.size != folded.size or stored.ndim < folded.ndim:
        return False
    lead = stored.shape[: stored.ndim - folded.ndim]
    if any(d != 1 for d in lead) or tuple(stored.shape[stored.ndim - folded.ndim :]) != tuple(folded.shape):
        return False
    return bool(np.array_equal(stored.astype(np.float32).ravel(), folded.astype(np.float32).ravel()))


def locate_tensor(name: str, folded: np.ndarray, tensors: dict[str, np.ndarray]) -> str | None:
    """The name under which an artifact stores the folded tensor `name`: itself if present and equal,
    otherwise the first tensor with exactly the same values (an exporter may rename constants)."""
    if name in tensors and same_tensor(tensors[name], folded):
        return name
    return next((other for other, values in tensors.items() if same_tensor(values, folded)), None)
