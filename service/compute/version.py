"""The proven version: what the proof (service.repository.prover) hands the layers above, a version
that passed every step with its loaded engine, its proven tensors and its report.

It lives in the compute room, the lowest that needs it (the kinds and the inference run on it), so
the pipeline, the protocols and the stream sessions never import the prover to name it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np

from contract.checks import MAX_REPORTED
from contract.manifest import Manifest

SIGNATURE_STEP = "signature"  # first, and only when trusted keys are configured
STEPS = ("manifest", "checksums", "graph", "constraints", "certificate", "probe", "warmup")
Status = Literal["ok", "failed", "skipped"]



@dataclass
class StepReport:
    step: str
    status: Status
    message: str
    details: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "status": self.status, "message": self.message,
                "seconds": round(self.seconds, 6), "details": self.details}


@dataclass
class VersionReport:
    path: str
    name: str
    version: int | None
    engine: str
    device: str
    steps: list[StepReport] = field(default_factory=list)
    # {"status": "verified", "signer", "files"} | {"status": "refused", "reason"} | {"status": "unsigned"}
    # | {"status": "signed, not checked", "signer"} (a model.sig, and no trusted keys configured)
    signature: dict[str, Any] = field(default_factory=lambda: {"status": "unsigned"})

    @property
    def ok(self) -> bool:
        core = [s.step for s in self.steps if s.step != SIGNATURE_STEP]
        return core == list(STEPS) and all(s.status == "ok" or (s.status == "skipped" and s.step == "certificate") for s in self.steps)

    @property
    def failed_step(self) -> StepReport | None:
        return next((s for s in self.steps if s.status == "failed"), None)

    @property
    def reason(self) -> str | None:
        failed = self.failed_step
        return None if failed is None else f"{failed.step}: {failed.message}"

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "name": self.name, "version": self.version, "engine": self.engine,
                "device": self.device, "ok": self.ok, "reason": self.reason, "signature": self.signature,
                "steps": [s.to_dict() for s in self.steps]}

    def render(self) -> str:
        """A short human report (the CLI prints it)."""
        lines = [f"monoserve verify {self.path} (engine {self.engine}, device {self.device})"]
        if not any(step.step == SIGNATURE_STEP for step in self.steps):
            lines.append(f"  {'-':<7} {SIGNATURE_STEP:<12} {self.signature['status']}"
                         + (f" ({self.signature['signer']})" if "signer" in self.signature else ""))
        for step in self.steps:
            lines.append(f"  {step.status:<7} {step.step:<12} {step.message}")
            if step.status == "failed":
                for line in _detail_lines(step):
                    lines.append(f"          {'':<12} {line}")
        lines.append("PASSED" if self.ok else f"FAILED at {self.reason}")
        return "\n".join(lines)


def _detail_lines(step: StepReport) -> list[str]:
    problems = step.details.get("problems", [])
    if len(problems) < 2:  # a single problem is the step's message already
        return []
    lines = [f"- {item}" for item in problems[:MAX_REPORTED]]
    if len(problems) > MAX_REPORTED:
        lines.append(f"... and {len(problems) - MAX_REPORTED} more")
    return lines


@dataclass
class ProvenVersion:
    """A version that passed every step, with its loaded engine."""

    manifest: Manifest
    engine: Any  # OnnxEngine | TorchScriptEngine, loaded
    report: VersionReport
    path: Path
    # The constrained tensors as checked, read out of the served engine's artifact, by model-level
    # name (e.g. "kernel"): the smoother's FFT path convolves with exactly the proven kernel.
    tensors: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return self.manifest.kind

    @cached_property
    def artifact_digest(self) -> str:
        """What identifies the version's artifact beyond its number: the checksums its manifest lists
        (computed once: a carried stream state names it on every request)."""
        import hashlib

        manifest = self.manifest
        text = "\n".join(f"{f.path}:{f.sha256}" for f in manifest.files)
        return hashlib.sha256(f"{manifest.name}\n{manifest.version}\n{text}".encode()).hexdigest()[:32]

    @cached_property
    def _cost(self) -> tuple[float, float]:
        warmup = next(s for s in self.report.steps if s.step == "warmup")
        cost = warmup.details["cost"]
        return cost["fixed_seconds"], cost["seconds_per_element"]

    def predicted_seconds(self, elements: int) -> float:
        """The inference time of an input of `elements` values, from the warm-up's timings."""
        fixed, per_element = self._cost
        return fixed + per_element * elements
