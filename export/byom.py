"""Bring your own model: export any constrained nn.Module, or import any ONNX file, with only a declaration.

    export_module(module, repo, name, spec)   # a user's nn.Module (parametrized or clamped)
    import_onnx(path, repo, name, spec)       # an ONNX file written by anything

`spec` is the small declaration of contract.spec (a TOML path or a dict). The export finds the
rest itself: a smoother's kernel by probing the module (export.fir), a classifier's output layer
in its graph (export.graphprep, contract.certificate.output_layer); it writes the manifest
(locations, checksums, probe, parity), proves the staged version with the service's own prover
and policy, and publishes it atomically (export.publish), exactly as `export_checkpoint` does.
Nothing is written when anything is refused. The published version is ONNX only (model.onnx):
a user's graph has no trusted TorchScript reference module to be proven equal to.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from contract.files import sha256_file
from contract.manifest import MANIFEST_NAME, ConstraintEntry, FileEntry, Manifest, Probe, TensorSpec
from contract.spec import ClassifierSpec, SmootherSpec, load_spec
from export import card, publish
from export.errors import ExportError, ExportInputError, bounded
from export.fir import ProbeRefused
from export.parity import DEFAULT_ATOL, DEFAULT_RTOL
from export.ranges import feature_ranges
from export.validation import validate_name, validate_tolerance

logger = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
MAX_ONNX_BYTES = 2 * 1024**3 - 1  # protobuf's limit: a bigger graph would need external data, which is refused


class ModelRefusedError(ExportError):
    """The user's model breaks its declared rules, or is not a model of the declared kind; nothing published."""

    def __init__(self, problems: list[str], source: str):
        self.problems = list(problems)
        self.source = source
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__(f"refusing {source}: {problems[0]}{more}; nothing was published")


@dataclass
class Prepared:
    """What a kind adapter hands back for one user model: the graph and every manifest fact."""

    onnx_model: Any  # onnx.ModelProto, final
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    constraints: list[ConstraintEntry]
    probe: Probe
    parity: dict[str, Any]
    info: dict[str, Any]  # Manifest keyword arguments of the kind section
    found: list[str] = field(default_factory=list)  # what the export found on its own (the report)
    draw_card: Callable[[Any], None] | None = None  # the card plot (a matplotlib Figure)


@dataclass
class ByomResult:
    version_dir: Path
    manifest: Manifest
    found: list[str]

    def render(self) -> str:
        lines = [f"exported {self.manifest.kind} {self.manifest.name!r} as version {self.manifest.version}: {self.version_dir}",
                 "found on its own:"]
        lines += [f"  {line}" for line in self.found]
        lines.append("proven by the service's prover and policy (engine onnx) before publishing")
        return "\n".join(lines)


class ProbeRefusedError(ModelRefusedError, ProbeRefused):
    """A probe of the user's graph refused before it ran (its memory cannot be bounded)."""


# -- probing a user's graph: bounded, and blind to anything outside it --------------------------
@dataclass(frozen=True)
class ProbeLimits:
    max_file_bytes: int  # MONOSERVE_MAX_ARTIFACT_BYTES: per file and per declared tensor
    budget_bytes: int  # the in-flight memory budget: the most one tensor of a probe run may take


def probe_limits() -> ProbeLimits:
    """The service's caps, from the same settings (MONOSERVE_MAX_ARTIFACT_BYTES, the in-flight budget)."""
    from service.settings import Settings

    settings = Settings()
    return ProbeLimits(int(settings.max_artifact_bytes), int(settings.inflight_budget))


class ProbeSession:
    """An ONNX Runtime session over a user's graph for probing it: one thread, no memory arena, made
    from bytes with external data pointed at an empty private folder (contract.tensors.
    seal_external_data); before each new input shape runs, every tensor the graph would compute is
    bounded by the in-flight memory budget (contract.tensors.allocation_problems), or it is refused."""

    def __init__(self, model: Any, label: str, input_name: str, limits: ProbeLimits | None = None):
        import onnxruntime as ort

        from contract.tensors import seal_external_data

        from contract.tensors import allocation_problems

        self.model, self.label, self.input_name = model, label, input_name
        self.limits = limits or probe_limits()
        self._checked: set[tuple[int, ...]] = set()
        # what needs no input shape (constants, ConstantOfShape of a constant) before the session exists
        problems = allocation_problems(model, {}, self.limits.budget_bytes, label, require_known=False)
        if problems:
            raise ProbeRefusedError(problems, label)
        options = ort.SessionOptions()
        # no constant folding at load: the probe runs a graph once or twice, and folding would
        # evaluate its constant subgraphs before any check of the input shapes could run
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.enable_cpu_mem_arena = False  # memory returns to the system after each probe
        options.log_severity_level = 3
        seal_external_data(options)
        try:
            self.session = ort.InferenceSession(model.SerializeToString(), sess_options=options,
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise ModelRefusedError([f"ONNX Runtime cannot load it: {bounded(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)}"],
                                    label) from exc

    def check_shape(self, shape: tuple[int, ...]) -> None:
        from contract.tensors import allocation_problems

        if shape in self._checked:
            return
        problems = allocation_problems(self.model, {self.input_name: shape}, self.limits.budget_bytes, self.label)
        if problems:
            raise ProbeRefusedError(problems, self.label)
        self._checked.add(shape)

    def run_all(self, inputs: np.ndarray, outputs: list[str] | None = None) -> list[np.ndarray]:
        self.check_shape(tuple(int(d) for d in inputs.shape))
        return self.session.run(outputs, {self.input_name: inputs})


# -- the user's model, as a black box the kind adapters can query ------------------------------


class UserSource:
    """A user's model: what the adapters ask of it, whatever it is (a module or an ONNX file)."""

    label: str  # for messages: "module Fir1d" / "model.onnx"

    def run(self, inputs: np.ndarray) -> np.ndarray:
        """The model's own answer (eager torch, or ONNX Runtime on the file as given)."""
        raise NotImplementedError

    def classifier_graph(self, n_features: int) -> Any:
        """The model as an ONNX graph [N, F] -> [N, L] (onnx.ModelProto)."""
        raise NotImplementedError

    def parameter_names(self) -> list[str]:
        return []

    def fingerprint(self) -> tuple[str, str]:
        """(name, sha256) of the source, for the manifest's provenance."""
        raise NotImplementedError


class ModuleSource(UserSource):
    def __init__(self, module: Any):
        import torch
        from torch import nn
        from torch.nn.utils import parametrize

        if not isinstance(module, nn.Module):
            raise ExportInputError(f"export_module needs a torch.nn.Module, got {type(module).__name__}")
        self.original = module
        self.label = f"module {type(module).__name__}"
        self.names = [name for name, _ in module.named_parameters()]
        folded = copy.deepcopy(module).eval()
        # torch.nn.utils.parametrize: fold each parametrization into a plain parameter of the same name
        for sub in list(folded.modules()):
            if parametrize.is_parametrized(sub):
                # the copy shares parametrize's generated class with the user's module, and removing a
                # parametrization deletes its property from that class: give the copy its own class first
                cls = type(sub)
                sub.__class__ = type(cls.__name__, cls.__bases__,
                                     {k: v for k, v in cls.__dict__.items() if k not in ("__dict__", "__weakref__")})
                for tensor_name in list(sub.parametrizations.keys()):
                    parametrize.remove_parametrizations(sub, tensor_name, leave_parametrized=True)
        folded.requires_grad_(False)
        self.module = folded
        self.torch = torch

    def run(self, inputs: np.ndarray) -> np.ndarray:
        torch = self.torch
        with torch.no_grad():
            out = self.module(torch.from_numpy(np.ascontiguousarray(inputs, dtype=np.float32)))
        if not torch.is_tensor(out):
            raise ExportInputError(f"{self.label}.forward returned {type(out).__name__}, not one tensor")
        return out.detach().cpu().float().numpy()

    def parameter_names(self) -> list[str]:
        return self.names

    def classifier_graph(self, n_features: int) -> Any:
        import onnx
        import torch

        from export.artifacts import _quiet_exporter

        example = torch.randn(3, n_features, generator=torch.Generator().manual_seed(0))
        with tempfile.TemporaryDirectory(prefix="monoserve-byom-") as tmp:
            path = Path(tmp) / ONNX_FILE
            try:
                with _quiet_exporter():
                    torch.onnx.export(self.module, (example,), str(path), input_names=["features"],
                                      output_names=["output"], dynamo=True,
                                      dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
                                      external_data=False, verbose=False)
            except Exception as exc:
                raise ModelRefusedError([f"torch.onnx.export cannot export it: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"],
                                        self.label) from exc
            model = onnx.load(str(path), load_external_data=False)
        from contract.tensors import tensor_problems

        problems = tensor_problems(model, ONNX_FILE, probe_limits().max_file_bytes)
        if problems:
            raise ModelRefusedError(problems, self.label)
        return model

    def fingerprint(self) -> tuple[str, str]:
        digest = hashlib.sha256()
        for name, tensor in sorted(self.original.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return f"{type(self.original).__module__}.{type(self.original).__qualname__}", digest.hexdigest()


class OnnxSource(UserSource):
    """An ONNX file written by anything. Nothing outside the file is ever read: the file's size is
    checked against the service's cap before parsing, every tensor it carries is checked for
    external data and declared sizes before any is read (contract.tensors), and it is run only in
    a probe session that cannot read external data, once each input shape's memory is bounded."""

    def __init__(self, path: str | Path):
        import onnx

        from contract.tensors import tensor_problems

        self.path = Path(path)
        self.label = str(self.path.name)
        if not self.path.is_file():
            raise ExportInputError(f"ONNX file not found: {self.path}")
        limits = probe_limits()
        size = self.path.stat().st_size
        if size > limits.max_file_bytes:
            raise ModelRefusedError([f"the file is {size} bytes, over the {limits.max_file_bytes}-byte limit per "
                                     "file (MONOSERVE_MAX_ARTIFACT_BYTES); not read"], self.label)
        try:
            self.model = onnx.load(str(self.path), load_external_data=False)
        except Exception as exc:
            raise ExportInputError(f"{self.path}: not a readable ONNX model: {bounded(str(exc))}") from exc
        problems = tensor_problems(self.model, self.label, limits.max_file_bytes)
        if problems:
            raise ModelRefusedError(problems, self.label)
        self._probe: ProbeSession | None = None

    def _input_name(self) -> str:
        initializers = {i.name for i in self.model.graph.initializer}
        names = [v.name for v in self.model.graph.input if v.name not in initializers]
        if len(names) != 1:
            raise ModelRefusedError([f"the graph has inputs {names}: expected exactly one"], self.label)
        return names[0]

    def run(self, inputs: np.ndarray) -> np.ndarray:
        if self._probe is None:
            self._probe = ProbeSession(self.model, self.label, self._input_name())
        outputs = self._probe.run_all(np.ascontiguousarray(inputs, dtype=np.float32))
        if len(outputs) != 1:
            raise ModelRefusedError([f"the graph has {len(outputs)} outputs: expected exactly one"], self.label)
        return np.asarray(outputs[0], dtype=np.float32)

    def classifier_graph(self, n_features: int) -> Any:
        del n_features
        return self.model

    def fingerprint(self) -> tuple[str, str]:
        return self.path.name, sha256_file(self.path)


# -- the entry points -------------------------------------------------------------------------


def export_module(module: Any, repo: str | Path, name: str, spec: str | Path | Mapping[str, Any] | ClassifierSpec | SmootherSpec,
                  *, atol: float = DEFAULT_ATOL, rtol: float = DEFAULT_RTOL, seed: int = 0,
                  replace_kind: bool = False, sign_key: str | Path | None = None,
                  sign_key_password: str | None = None) -> ByomResult:
    """Publish the user's `module` (any torch.nn.Module) as the next version of REPO/NAME.

    `spec`: the declaration (contract.spec: a TOML path or a dict). Kernels computed in forward and
    torch.nn.utils.parametrize parametrizations are constant-folded; the constrained tensors are
    located by the export. Raises SpecError / ExportInputError for bad input, ModelRefusedError
    when the module breaks its declaration (naming the tensor and the user's parameter), and
    ProofRefusedError when the service's proof refuses the staged version (nothing published).
    `sign_key`: as for export_checkpoint, the version is published signed (VERSION/model.sig).
    """
    return _publish_user_model(ModuleSource(module), repo, name, spec, atol, rtol, seed, replace_kind,
                               sign_key, sign_key_password)


def import_onnx(path: str | Path, repo: str | Path, name: str, spec: str | Path | Mapping[str, Any] | ClassifierSpec | SmootherSpec,
                *, atol: float = DEFAULT_ATOL, rtol: float = DEFAULT_RTOL, seed: int = 0,
                replace_kind: bool = False, sign_key: str | Path | None = None,
                sign_key_password: str | None = None) -> ByomResult:
    """Publish an ONNX file written by anything (torch, Keras, tf2onnx, onnx.helper) as REPO/NAME's next version."""
    return _publish_user_model(OnnxSource(path), repo, name, spec, atol, rtol, seed, replace_kind,
                               sign_key, sign_key_password)


def _publish_user_model(source: UserSource, repo: str | Path, name: str, spec: Any, atol: float, rtol: float,
                        seed: int, replace_kind: bool, sign_key: str | Path | None = None,
                        sign_key_password: str | None = None) -> ByomResult:
    import onnx

    from export.core import _package_version, prove_staged
    from export.kinds import export_kind

    declaration = load_spec(spec)
    repo = Path(repo)
    name = validate_name(name)
    atol, rtol = validate_tolerance("atol", atol), validate_tolerance("rtol", rtol)
    publish.check_repository_writable(repo)
    kind = declaration.kind
    publish.check_kind(repo / name, kind, replace_kind)
    adapter = export_kind(kind)
    prepared: Prepared = adapter.prepare_user_model(source, declaration, atol, rtol, seed)
    data = prepared.onnx_model.SerializeToString()
    if len(data) > MAX_ONNX_BYTES:
        raise ModelRefusedError(["the graph is over 2 GiB, which needs external data (refused by the service)"], source.label)
    source_name, source_sha256 = source.fingerprint()
    with publish.staging_directory(repo, name) as staging:
        (staging / ONNX_FILE).write_bytes(data)
        onnx.checker.check_model(str(staging / ONNX_FILE))
        if prepared.draw_card is not None:
            card.write_card_plot(staging / card.CARD_PNG, prepared.draw_card)
        files = [FileEntry(path=ONNX_FILE, format="onnx", sha256=sha256_file(staging / ONNX_FILE), size=len(data))]
        opset = next(int(o.version) for o in prepared.onnx_model.opset_import if o.domain in ("", "ai.onnx"))
        base = dict(
            name=name, kind=kind, created=datetime.now(timezone.utc), monoserve_version=_package_version("monoserve"),
            source_checkpoint_sha256=source_sha256, source_checkpoint_name=source_name,
            provenance={"declaration": declaration.model_dump(), "source": source.label,
                        "export": {"entry": "export_module" if isinstance(source, ModuleSource) else "import_onnx",
                                   "onnx": _package_version("onnx"), "onnxruntime": _package_version("onnxruntime"),
                                   "found": prepared.found}},
            inputs=prepared.inputs, outputs=prepared.outputs, files=files, constraints=prepared.constraints,
            probe=prepared.probe, parity=prepared.parity, opset=opset, **prepared.info,
            feature_ranges=feature_ranges(getattr(declaration, "ranges", None),
                                          getattr(declaration, "features", None) or [], "declaration"))
        manifests: dict[int, Manifest] = {}

        def finalize(version: int) -> None:
            publish.check_kind(repo / name, kind, replace_kind)
            manifest = Manifest(version=version, **base)
            (staging / card.CARD_MD).write_text(card.render_card(manifest, adapter.card_caption), encoding="utf-8")
            (staging / MANIFEST_NAME).write_text(manifest.to_json(), encoding="utf-8")
            prove_staged(staging, repo, ["onnx"], allow_unconstrained=False)
            if sign_key is not None:  # last: it covers the card and the manifest just written
                from contract.signing import sign_version

                sign_version(staging, sign_key, sign_key_password)
            manifests[version] = manifest

        version, version_dir = publish.publish(staging, repo / name, finalize)
    logger.info("published %s version %d at %s", name, version, version_dir)
    return ByomResult(version_dir, manifests[version], prepared.found)


def tensor_specs(input_name: str, input_shape: list, output_name: str, output_shape: list) -> tuple[list[TensorSpec], list[TensorSpec]]:
    return ([TensorSpec(name=input_name, dtype="float32", shape=list(input_shape))],
            [TensorSpec(name=output_name, dtype="float32", shape=list(output_shape))])

