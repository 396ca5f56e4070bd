"""Bring your own model: export any constrained nn.Module, or import any ONNX file, with only a declaration.

    export_module(module, repo, name, spec)   # a user's nn.Module (parametrized or clamped)
    import_onnx(path, repo, name, spec)       # an ONNX file written by anything

`spec` is the small declaration of contract.spec (a TOML path or a dict). The export finds the
rest itself: a smoother's kernel by probing the module (export.fir), a classifier's output layer
in its graph (export.graphprep, contract.certificate.output_layer); it writes the manifest
(locations, checksums, probe, parity), proves the staged version with the service's own prover
and policy, signs it when asked and publishes it atomically: export.finalize.finalize_staged, the
tail `export_checkpoint` ends in too.
Nothing is written when anything is refused. The published version is ONNX only (model.onnx):
a user's graph has no trusted TorchScript reference module to be proven equal to.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from contract.files import sha256_file
from contract.manifest import FileEntry, Manifest
from contract.spec import ClassifierSpec, SmootherSpec, load_spec
from export import card, mlprep, publish
from export.errors import ExportInputError, ModelRefusedError, bounded
from export.finalize import Signing, finalize_staged, package_version
from export.prepared import Prepared
from export.probe import ProbeSession, probe_limits
from export.parity import DEFAULT_ATOL, DEFAULT_RTOL
from export.ranges import feature_ranges
from export.validation import validate_name, validate_tolerance

logger = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
MAX_ONNX_BYTES = 2 * 1024**3 - 1  # protobuf's limit: a bigger graph would need external data, which is refused


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

        from export.folding import fold_parametrizations

        if not isinstance(module, nn.Module):
            raise ExportInputError(f"export_module needs a torch.nn.Module, got {type(module).__name__}")
        self.original = module
        self.label = f"module {type(module).__name__}"
        self.names = [name for name, _ in module.named_parameters()]
        folded = fold_parametrizations(copy.deepcopy(module).eval())
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
        import torch

        from export import artifacts
        from export.errors import ArtifactError

        # names the io and the dynamic batch axis for the writer (the output's width is the graph's own)
        signature = artifacts.GraphSignature(
            input_name="features", output_name="output", input_shape=["batch", n_features], output_shape=["batch", "outputs"],
            dynamic_axes={0: "batch"}, example=torch.randn(3, n_features, generator=torch.Generator().manual_seed(0)))
        with tempfile.TemporaryDirectory(prefix="monoserve-byom-") as tmp:
            try:  # the final graph is checked once, after the kind prepared it (_publish_user_model)
                model = artifacts.write_onnx(self.module, signature, Path(tmp) / ONNX_FILE, None,
                                             check=False, refuse_weight_ops=False)
            except ArtifactError as exc:
                cause = exc.__cause__ if exc.__cause__ is not None else exc
                detail = str(cause).splitlines()[0] if str(cause) else type(cause).__name__
                raise ModelRefusedError([f"torch.onnx.export cannot export it: {detail}"], self.label) from exc
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
        feed = np.ascontiguousarray(inputs, dtype=np.float32)
        if len(self.model.graph.output) > 1 and mlprep.is_ml_graph(self.model):  # a converter's (label, probabilities)
            try:
                wanted = mlprep.score_output(self.model)
            except mlprep.ConverterGraphError as exc:
                raise ModelRefusedError([str(exc)], self.label) from exc
            return np.asarray(self._probe.run_all(feed, [wanted])[0], dtype=np.float32)
        outputs = self._probe.run_all(feed)
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
    onnx.checker.check_model(prepared.onnx_model)  # the one check of the final graph, before anything is written
    with publish.staging_directory(repo, name) as staging:
        (staging / ONNX_FILE).write_bytes(data)
        if prepared.draw_card is not None:
            card.write_card_plot(staging / card.CARD_PNG, prepared.draw_card)
        files = [FileEntry(path=ONNX_FILE, format="onnx", sha256=sha256_file(staging / ONNX_FILE), size=len(data))]
        opset = next(int(o.version) for o in prepared.onnx_model.opset_import if o.domain in ("", "ai.onnx"))
        base = dict(
            name=name, kind=kind, created=datetime.now(timezone.utc), monoserve_version=package_version("monoserve"),
            source_checkpoint_sha256=source_sha256, source_checkpoint_name=source_name,
            provenance={"declaration": declaration.model_dump(), "source": source.label,
                        "export": {"entry": "export_module" if isinstance(source, ModuleSource) else "import_onnx",
                                   "onnx": package_version("onnx"), "onnxruntime": package_version("onnxruntime"),
                                   "found": prepared.found}},
            inputs=prepared.inputs, outputs=prepared.outputs, files=files, constraints=prepared.constraints,
            probe=prepared.probe, parity=prepared.parity, opset=opset, **prepared.info,
            feature_ranges=feature_ranges(getattr(declaration, "ranges", None),
                                          getattr(declaration, "features", None) or [], "declaration"))
        signing = Signing(sign_key, sign_key_password) if sign_key is not None else None
        _, version_dir, manifest = finalize_staged(
            staging, repo, name, base, card_caption=adapter.card_caption, formats=["onnx"],
            allow_unconstrained=False, replace_kind=replace_kind, signing=signing)
    return ByomResult(version_dir, manifest, prepared.found)
