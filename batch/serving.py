"""Everything batch uses from the service, in one place: loading a version through the service's
own prover and policy (and its signature check when trusted keys are set), and the service's kind
adapters (`prepare` -> `infer` -> `result`, the same steps /classify and /smooth run).

No other module of this package imports `service`: when the service's modules move, only this file
follows them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from contract.signing import TrustedKeys
from service.compute.kinds import ServiceKind, service_kind
from service.compute.request import InferRequest, InferResult, Limits, MemoryBudget
from service.compute.version import ProvenVersion, VersionReport
from service.repository.prover import prove_version
from service.settings import Settings, available_cpus

log = logging.getLogger(__name__)

__all__ = ["InferResult", "ProvenVersion", "ServiceKind", "VersionReport", "available_cpus", "service_kind",
           "RefusedVersionError", "Scorer", "load_version", "proof_summary"]

_UNLIMITED = 2**62  # batch is not a hostile client: the kinds' size limits are the HTTP edge's, not ours


class RefusedVersionError(Exception):
    """The version failed the service's proof (or its signature check): it must not score a row."""

    def __init__(self, message: str, report: VersionReport | None = None):
        super().__init__(message)
        self.report = report


def trusted_keys(paths: list[str] | None, settings: Settings) -> TrustedKeys | None:
    """--trusted-key PEMs, else MONOSERVE_TRUSTED_KEYS, else None (unsigned versions are allowed)."""
    return TrustedKeys.from_paths(paths) if paths else TrustedKeys.from_setting(settings.trusted_keys)


def version_numbers(repo: Path, name: str) -> list[int]:
    model_dir = repo / name
    if not model_dir.is_dir() or name.startswith((".", "_")):
        raise RefusedVersionError(f"no model {name!r} in the repository {str(repo)!r}")
    return sorted((int(p.name) for p in model_dir.iterdir() if p.name.isdigit() and p.is_dir()), reverse=True)


def load_version(repo: str | Path, name: str, version: int | None = None, *, threads: int = 1,
                 trusted_key_paths: list[str] | None = None, expect_digest: str | None = None) -> ProvenVersion:
    """Prove REPO/NAME/VERSION exactly as `monoserve serve` does (same prover, the MONOSERVE_*
    policy, the trusted keys) and return it loaded, or raise RefusedVersionError with the report.

    No `version`: the newest version that passes, as the service serves it. `expect_digest`: the
    artifact digest the driver proved; a worker that finds other files refuses to score.
    """
    repo = Path(repo)
    settings = Settings()
    keys = trusted_keys(trusted_key_paths, settings)
    candidates = [version] if version is not None else version_numbers(repo, name)
    if not candidates:
        raise RefusedVersionError(f"model {name!r} has no version directories in {str(repo)!r}")
    reasons: list[str] = []
    for number in candidates:
        version_dir = repo / name / str(number)
        if not version_dir.is_dir():
            raise RefusedVersionError(f"model {name!r} has no version {number} in {str(repo)!r}")
        report, proven = prove_version(version_dir, engine="onnx", device="cpu", threads=threads,
                                       policy=settings.policy, repo=repo, trusted_keys=keys)
        if proven is None:
            if version is not None:
                raise RefusedVersionError(f"{name} version {number} was refused by the service's proof: {report.reason}",
                                          report)
            log.warning("%s version %d refused (%s): trying the next older version, as the service would",
                        name, number, report.reason)
            reasons.append(f"version {number}: {report.reason}")
            continue
        if expect_digest is not None and proven.artifact_digest != expect_digest:
            raise RefusedVersionError(
                f"{name} version {number} on this worker has artifact digest {proven.artifact_digest}, the run proved "
                f"{expect_digest}: the repository changed under the run (or differs between nodes)", report)
        return proven
    raise RefusedVersionError(f"model {name!r} has no version that passes the service's proof ("
                              + "; ".join(reasons) + ")")


def proof_summary(proven: ProvenVersion) -> dict[str, Any]:
    """What the output's metadata says about the version that scored it."""
    report = proven.report
    return {"model": proven.manifest.name, "version": proven.manifest.version, "kind": proven.kind,
            "artifact_digest": proven.artifact_digest, "proof": "passed" if report.ok else "failed",
            "steps": {step.step: step.status for step in report.steps}, "signature": report.signature}


@dataclass
class Scorer:
    """One proven version and its service kind adapter: `run` is what an endpoint does to a decoded
    request (prepare -> infer -> result), with the service's own settings (e.g. the smoothing method)."""

    proven: ProvenVersion
    settings: Settings

    @classmethod
    def of(cls, proven: ProvenVersion) -> "Scorer":
        return cls(proven, Settings())

    @property
    def kind(self) -> ServiceKind:
        return service_kind(self.proven.kind)

    def run(self, inputs: np.ndarray, **params: Any) -> InferResult:
        kind = self.kind
        limits = Limits(MemoryBudget(_UNLIMITED), _UNLIMITED, _UNLIMITED, _UNLIMITED)
        request = InferRequest(self.proven.kind, self.proven.manifest.name, self.proven.manifest.version,
                               inputs=inputs, params={k: v for k, v in params.items() if v is not None})
        call = kind.prepare(self.proven, request, limits)
        return kind.result(call, kind.infer(call, self.settings))
