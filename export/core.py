"""export_checkpoint: checkpoint -> folded, checked, written, parity-verified, atomically published version.

Steps (nothing is written before step 3 passes, nothing is visible before step 8):
1. load the checkpoint (weights_only) and rebuild the model;
2. fold every parametrization into a plain tensor;
3. check the folded tensors with the shared numpy checkers; refuse on any violation;
4. write the requested formats into a staging directory inside REPO/NAME/;
5. load every artifact back, find each constrained tensor inside it (-> manifest locations);
6. parity: every artifact against eager torch, every mismatch reported at once;
7. model card, manifest (checksums, io specs, constraints, probe, parity, metrics, provenance);
8. prove the staged version with the service's own prover and policy (service.repository.prover): export
   never publishes what the service would refuse; sign it when asked;
9. rename the staging directory to the next integer version.
Steps 7 (card, manifest) to 9 are export.finalize.finalize_staged, the tail every export path shares.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from torch import nn

from contract.checks import ConstraintViolationError, Violation, check_all
from contract.files import sha256_file
from contract.manifest import (
    FORMAT_FILES,
    FORMATS,
    ConstraintEntry,
    FileEntry,
    Manifest,
    TensorSpec,
)
from export import artifacts, card, publish
from export.errors import ArtifactError
from export.finalize import Signing, finalize_staged, package_version
from export.folding import fold_parametrizations
from export.kinds import export_kind
from export.parity import DEFAULT_ATOL, DEFAULT_RTOL, ParityReport, check_parity
from export.ranges import feature_ranges
from export.validation import normalize_formats, validate_name, validate_opset, validate_tolerance
from models.checkpoint import build_model, load_checkpoint

logger = logging.getLogger(__name__)

DEFAULT_FORMATS: tuple[str, ...] = FORMATS


class ConstraintRefusedError(ConstraintViolationError):
    """The folded tensors break the model's declared rules: nothing was exported."""

    def __init__(self, violations: Sequence[Violation], checkpoint: Path):
        self.checkpoint = checkpoint
        super().__init__(violations, context=f"refusing to export {checkpoint}: folded weights break their constraints")


@dataclass(frozen=True)
class ConstraintCheck:
    tensor: str
    rule: str
    tolerance: float
    columns: list[int] | None
    locations: dict[str, str]


@dataclass
class ExportReport:
    name: str
    version: int
    kind: str
    version_dir: Path
    files: list[FileEntry]
    extra_files: dict[str, int]  # card files: name -> size
    constraints: list[ConstraintCheck]
    parity: ParityReport

    def render(self) -> str:
        lines = [f"exported {self.kind} {self.name!r} as version {self.version}: {self.version_dir}", "files:"]
        for entry in self.files:
            lines.append(f"  {entry.path:<14} {_human_size(entry.size):>10}  sha256 {entry.sha256[:16]}…")
        for name, size in self.extra_files.items():
            lines.append(f"  {name:<14} {_human_size(size):>10}")
        lines.append("constraints (checked on the folded tensors, all passed):")
        for check in self.constraints:
            columns = "" if check.columns is None else f" columns {check.columns}"
            where = ", ".join(f"{fmt}:{name}" for fmt, name in check.locations.items())
            lines.append(f"  ok  {check.tensor} {check.rule} (tolerance {check.tolerance:g}){columns}  [{where}]")
        p = self.parity
        lines.append(f"parity vs eager torch: {p.comparisons} comparisons on {len(p.cases)} inputs, atol {p.atol:g}, rtol {p.rtol:g}")
        for fmt, error in p.max_abs_error.items():
            lines.append(f"  {fmt:<12} max abs error {error:.3g}")
        return "\n".join(lines)


@dataclass
class ExportResult:
    version_dir: Path
    manifest: Manifest
    report: ExportReport


# -- folding and checking ---------------------------------------------------------------------


def folded_tensors(model: nn.Module, specs: list[dict]) -> dict[str, np.ndarray]:
    state = model.state_dict()
    missing = sorted({spec["tensor"] for spec in specs} - set(state))
    if missing:
        raise ArtifactError(f"constrained tensors {missing} not found after folding (have {sorted(state)})")
    return {spec["tensor"]: state[spec["tensor"]].detach().cpu().float().numpy() for spec in specs}


# -- helpers ----------------------------------------------------------------------------------


def _human_size(size: int) -> str:
    for unit in ("B", "KiB", "MiB"):
        if size < 1024 or unit == "MiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size} B"


def _jsonable(value: Any) -> Any:
    """Metrics/provenance from a checkpoint as plain JSON values (tensors and numpy scalars included)."""
    if torch.is_tensor(value):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/Infinity
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


# -- the entry point --------------------------------------------------------------------------


def export_checkpoint(
    checkpoint: str | Path,
    repo: str | Path,
    name: str | None = None,
    formats: Iterable[str] | str = DEFAULT_FORMATS,
    opset: int | None = None,
    atol: float = DEFAULT_ATOL,
    rtol: float = DEFAULT_RTOL,
    *,
    seed: int = 0,
    allow_unconstrained: bool = False,
    replace_kind: bool = False,
    sign_key: str | Path | None = None,
    sign_key_password: str | None = None,
) -> ExportResult:
    """Export `checkpoint` as the next version of REPO/NAME (NAME defaults to the model kind).

    Raises CheckpointError / ExportInputError for bad input, ConstraintRefusedError when the folded
    weights break their rules (nothing written), ParityError when an artifact disagrees with eager
    torch, ArtifactError when an artifact cannot be written, KindConflictError when NAME holds
    versions of another kind and `replace_kind` is False (nothing published in every case).
    ProofRefusedError when the service's proof refuses the staged version (nothing published).
    `sign_key`: an elliptic-curve private key (PEM); the version is published with VERSION/model.sig,
    a model-signing signature over every file of it (contract.signing), written before the rename.
    Tolerance: |artifact - eager| <= atol + rtol * |eager|, element-wise. `allow_unconstrained`
    proves with Policy(allow_unconstrained=True), so a scope-"none" baseline classifier can be
    published (a service with the default policy still refuses it).
    """
    checkpoint, repo = Path(checkpoint), Path(repo)
    formats = normalize_formats(formats)
    validate_opset(opset)
    atol, rtol = validate_tolerance("atol", atol), validate_tolerance("rtol", rtol)
    if name is not None:
        validate_name(name)
    publish.check_repository_writable(repo)

    # 1. load (weights_only); keep an unfolded copy as the parity reference
    checkpoint_sha256 = sha256_file(checkpoint) if checkpoint.is_file() else ""
    model, payload = load_checkpoint(checkpoint)
    kind: str = payload["kind"]
    adapter = export_kind(kind)
    name = validate_name(name or kind)
    publish.check_kind(repo / name, kind, replace_kind)  # before any work; again just before publishing
    reference = build_model(kind, payload["config"])
    reference.load_state_dict(payload["state_dict"])
    reference.eval()

    # 2-3. fold, then check the folded tensors before anything is written
    folded = fold_parametrizations(model).eval()
    specs = adapter.constraint_specs(folded)
    tensors = folded_tensors(folded, specs)
    violations = check_all((spec, tensors[spec["tensor"]]) for spec in specs)
    if violations:
        raise ConstraintRefusedError(violations, checkpoint)
    logger.info("%s: %d constraint(s) hold on the folded tensors", checkpoint.name, len(specs))

    # the training data's range of each feature (recorded by training in the provenance), for /explain
    model_info = adapter.model_info(folded)
    section = model_info.get(kind)
    names = [f.name for f in getattr(section, "features", None) or []]
    ranges = feature_ranges((payload.get("provenance") or {}).get("feature_ranges"), names,
                            f"{checkpoint.name}: provenance") if names else None

    wrapper, signature = adapter.build_wrapper(folded)
    with publish.staging_directory(repo, name) as staging:
        # 4. write every format
        opset_used: int | None = None
        written: dict[str, Any] = {}  # the ONNX graph as written, loaded and checked once
        for fmt in formats:
            written[fmt] = artifacts.write_artifact(fmt, wrapper, signature, staging / FORMAT_FILES[fmt], opset)
            if fmt == "onnx":
                opset_used = artifacts.onnx_opset(written[fmt])
            logger.info("wrote %s", FORMAT_FILES[fmt])

        # 5. load each artifact back (ONNX: the graph already loaded); find every constrained tensor inside it
        loaded = [artifacts.load_artifact(fmt, staging / FORMAT_FILES[fmt], signature, written[fmt]) for fmt in formats]
        entries: list[ConstraintEntry] = []
        missing: list[str] = []
        for spec in specs:
            locations: dict[str, str] = {}
            for artifact in loaded:
                found = artifacts.locate_tensor(spec["tensor"], tensors[spec["tensor"]], artifact.tensors)
                if found is None:
                    missing.append(f"{spec['tensor']} in {artifact.path.name}")
                else:
                    locations[artifact.format] = found
            entries.append(
                ConstraintEntry(
                    tensor=spec["tensor"],
                    rule=spec["rule"],
                    tolerance=float(spec.get("tolerance", 0.0)),
                    axis=int(spec.get("axis", -1)),
                    columns=spec.get("columns"),
                    locations=locations,
                )
            )
        if missing:
            raise ArtifactError(f"folded tensors not found as constants inside the artifacts: {', '.join(missing)}")

        # 6. parity against eager torch (the unfolded model)
        parity = check_parity(adapter, reference, loaded, adapter.parity_cases(folded, seed), atol, rtol)

        # 7. card plot, files, manifest
        folded_state = {k: v.detach().cpu().numpy() for k, v in folded.state_dict().items()}
        card.write_card_plot(staging / card.CARD_PNG, lambda figure: adapter.draw_card(figure, folded_state))
        curves = card.training_curves(payload.get("history"))  # the checkpoint's loss curve(s), if it kept any
        if curves:
            card.write_curve_plot(staging / card.CARD_CURVE_PNG, curves)
        files = [
            FileEntry(path=FORMAT_FILES[fmt], format=fmt, sha256=sha256_file(staging / FORMAT_FILES[fmt]),
                      size=(staging / FORMAT_FILES[fmt]).stat().st_size)
            for fmt in formats
        ]
        provenance = _jsonable(payload.get("provenance") or {})
        provenance["export"] = {
            "torch": torch.__version__,
            "onnx": package_version("onnx"),
            "onnxruntime": package_version("onnxruntime"),
            "onnxscript": package_version("onnxscript"),
            "formats": list(formats),
        }
        base = dict(
            name=name,
            kind=kind,
            created=datetime.now(timezone.utc),
            monoserve_version=package_version("monoserve"),
            source_checkpoint_sha256=checkpoint_sha256,
            source_checkpoint_name=checkpoint.name,
            training_metrics=_jsonable(payload.get("metrics") or {}),
            provenance=provenance,
            inputs=[TensorSpec(name=signature.input_name, dtype="float32", shape=list(signature.input_shape))],
            outputs=[TensorSpec(name=signature.output_name, dtype="float32", shape=list(signature.output_shape))],
            files=files,
            constraints=entries,
            probe=adapter.probe(reference, wrapper, atol, rtol),
            parity=parity.to_manifest(),
            opset=opset_used,
            feature_ranges=ranges,
            **model_info,
        )
        # 8-9. the one tail of every export path: card, manifest, proof, signature, atomic publish
        signing = Signing(sign_key, sign_key_password) if sign_key is not None else None
        version, version_dir, manifest = finalize_staged(
            staging, repo, name, base, card_caption=adapter.card_caption, formats=formats,
            allow_unconstrained=allow_unconstrained, replace_kind=replace_kind, signing=signing, curve=bool(curves))

    report = ExportReport(
        name=name,
        version=version,
        kind=kind,
        version_dir=version_dir,
        files=files,
        extra_files={f: (version_dir / f).stat().st_size for f in (card.CARD_MD, card.CARD_PNG, card.CARD_CURVE_PNG)
                     if (version_dir / f).is_file()},
        constraints=[ConstraintCheck(e.tensor, e.rule, e.tolerance, e.columns, dict(e.locations)) for e in entries],
        parity=parity,
    )
    return ExportResult(version_dir=version_dir, manifest=manifest, report=report)

