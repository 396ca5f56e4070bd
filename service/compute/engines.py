"""Inference engines: ONNX Runtime (default, no torch) and TorchScript (imports torch on load()).

Each engine is a small runtime object: construct it (cheap), `load()` it (creates the session),
then `run(array) -> array`. `ready` says whether it was loaded.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Protocol

import numpy as np

from contract.tensors import seal_external_data

log = logging.getLogger(__name__)

ENGINES = ("onnx", "torchscript")
DEVICES = ("auto", "cpu", "cuda")
# Which manifest file format each engine serves from.
ENGINE_FORMAT = {"onnx": "onnx", "torchscript": "torchscript"}


class EngineError(RuntimeError):
    """The artifact could not be loaded or run by the engine."""


class DeviceUnavailableError(RuntimeError):
    """`--device cuda` was asked for where the engine has no CUDA."""


def onnx_cuda_available() -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


def torch_cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def _preload_cuda_libraries(ort) -> None:
    """Load CUDA/cuDNN from the nvidia-* wheels (torch's, or onnxruntime-gpu's extras) when present.

    onnxruntime-gpu >= 1.21 can load them itself; without this, a pip-installed CUDA stack that is not
    on LD_LIBRARY_PATH leaves the CUDA provider unable to start.
    """
    preload = getattr(ort, "preload_dlls", None)
    if preload is None:
        return
    try:
        preload()
    except Exception as exc:  # a partial CUDA stack: the provider check after loading reports it
        log.warning("onnxruntime.preload_dlls() failed: %s", exc)


def resolve_device(engine: str, device: str) -> str:
    """auto|cpu|cuda -> cpu|cuda for this engine on this machine; cuda without CUDA is an error."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; expected one of {', '.join(ENGINES)}")
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}; expected one of {', '.join(DEVICES)}")
    if device == "cpu":
        return "cpu"
    available = onnx_cuda_available() if engine == "onnx" else torch_cuda_available()
    if device == "cuda" and not available:
        if engine == "onnx":
            raise DeviceUnavailableError(
                "--device cuda: ONNX Runtime has no CUDAExecutionProvider here (install onnxruntime-gpu "
                "and the CUDA libraries on a machine with an NVIDIA GPU), or use --device cpu|auto"
            )
        raise DeviceUnavailableError(
            "--device cuda: torch.cuda.is_available() is False (no GPU, or a CPU-only torch build); "
            "use --device cpu|auto"
        )
    return "cuda" if available else "cpu"


class Engine(Protocol):
    format: str
    device: str

    @property
    def ready(self) -> bool: ...

    def load(self) -> None: ...

    def run(self, array: np.ndarray) -> np.ndarray: ...


class OnnxEngine:
    """One ONNX Runtime InferenceSession over one model.onnx (bytes or path)."""

    format = "onnx"

    def __init__(self, path: str | Path, device: str = "cpu", threads: int = 1, model_bytes: bytes | None = None):
        self.path = Path(path)
        self.device = device
        self.threads = max(1, int(threads))
        self._model_bytes = model_bytes
        self._session = None
        self.input_name = ""
        self.output_name = ""

    @property
    def ready(self) -> bool:
        return self._session is not None

    @property
    def providers(self) -> list[str]:
        return list(self._session.get_providers()) if self._session is not None else []

    def load(self) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle intra-op threads would otherwise spin and steal the CPU from the event loop.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        seal_external_data(options)  # never reads a file beside the graph (the proof refuses external data first)
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if self.device == "cuda" else ["CPUExecutionProvider"]
        if self.device == "cuda":
            _preload_cuda_libraries(ort)
        source = self._model_bytes if self._model_bytes is not None else str(self.path)
        try:
            session = ort.InferenceSession(source, sess_options=options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types for bad graphs
            raise EngineError(f"ONNX Runtime cannot load {self.path.name}: {exc}") from exc
        if self.device == "cuda" and "CUDAExecutionProvider" not in session.get_providers():
            # ONNX Runtime falls back to the CPU silently when the CUDA provider cannot start (missing
            # CUDA/cuDNN libraries): a service asked for CUDA must say so instead of serving on the CPU.
            raise EngineError(f"ONNX Runtime could not start its CUDAExecutionProvider for {self.path.name} "
                              f"(session providers: {session.get_providers()}); are the CUDA 12/13 and cuDNN "
                              f"libraries installed? Use --device cpu|auto to serve on the CPU")
        inputs, outputs = session.get_inputs(), session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise EngineError(
                f"{self.path.name}: expected one input and one output, got inputs {[i.name for i in inputs]} "
                f"and outputs {[o.name for o in outputs]}"
            )
        self.input_name, self.output_name = inputs[0].name, outputs[0].name
        self._model_bytes = None  # the session holds its own copy
        self._session = session

    def run(self, array: np.ndarray) -> np.ndarray:
        session = self._session
        if session is None:
            raise EngineError("engine not loaded")
        # The session's native run, without the Python wrapper's per-call checks (the feed's names,
        # WebGPU graph capture, OrtValue ownership: none can fail for one named numpy input) and its
        # silent fallback from CUDA to the CPU (load() refuses a session that fell back): 3 us of a
        # 1-row classify's 14 us here.
        return session._sess.run([self.output_name], {self.input_name: array}, None)[0]


class TorchScriptEngine:
    """A torch.jit ScriptModule (model.ts). torch is imported only here, on load()."""

    format = "torchscript"

    def __init__(self, path: str | Path, device: str = "cpu", threads: int = 1, model_bytes: bytes | None = None):
        self.path = Path(path)
        self.device = device
        self.threads = max(1, int(threads))
        self._model_bytes = model_bytes
        self._module = None
        self._torch = None

    @property
    def ready(self) -> bool:
        return self._module is not None

    def load(self) -> None:
        import torch

        torch.set_num_threads(self.threads)
        source = io.BytesIO(self._model_bytes) if self._model_bytes is not None else str(self.path)
        try:
            module = torch.jit.load(source, map_location=self.device)
        except Exception as exc:  # torch raises RuntimeError and others for corrupt archives
            raise EngineError(f"torch.jit cannot load {self.path.name}: {exc}") from exc
        module.eval()
        self._model_bytes = None  # the module holds its own copy
        self._torch = torch
        self._module = module

    def tensors(self) -> dict[str, np.ndarray]:
        """Every parameter and buffer of the scripted module by name, as numpy (for the checkers)."""
        if self._module is None:
            raise EngineError("engine not loaded")
        named = dict(self._module.named_buffers())
        named.update(dict(self._module.named_parameters()))
        return {name: tensor.detach().cpu().numpy() for name, tensor in named.items()}

    def run(self, array: np.ndarray) -> np.ndarray:
        torch, module = self._torch, self._module
        if module is None or torch is None:
            raise EngineError("engine not loaded")
        if not array.flags.writeable:  # torch.from_numpy warns on read-only buffers (e.g. .npy bodies)
            array = array.copy()
        with torch.inference_mode():
            out = module(torch.from_numpy(array).to(self.device))
        return out.detach().cpu().numpy()


def create_engine(engine: str, version_dir: Path, file_name: str, device: str, threads: int,
                  model_bytes: bytes | None = None) -> OnnxEngine | TorchScriptEngine:
    path = version_dir / file_name
    if engine == "onnx":
        return OnnxEngine(path, device=device, threads=threads, model_bytes=model_bytes)
    if engine == "torchscript":
        return TorchScriptEngine(path, device=device, threads=threads, model_bytes=model_bytes)
    raise ValueError(f"unknown engine {engine!r}; expected one of {', '.join(ENGINES)}")
