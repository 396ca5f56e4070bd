"""The model repository as the service sees it: every version of every model proved at load.

REPO/NAME/VERSION (VERSION an integer). Hidden or non-integer directories are ignored (export
writes into a temporary directory inside the repository and renames it when complete).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from contract.manifest import Manifest
from contract.policy import Policy
from service.errors import BadRequestError, ModelUnavailableError, NotFoundError
from service.kinds import service_kind
from service.prover import ProvenVersion, VersionReport, prove_version

log = logging.getLogger(__name__)


@dataclass
class ModelEntry:
    """One model name: the report of each version, and the versions that passed."""

    name: str
    path: Path
    reports: dict[int, VersionReport] = field(default_factory=dict)
    served: dict[int, ProvenVersion] = field(default_factory=dict)
    declared_kind: str | None = None  # from a readable manifest, even of a refused version

    @property
    def latest(self) -> ProvenVersion | None:
        return self.served[max(self.served)] if self.served else None

    @property
    def kind(self) -> str | None:
        latest = self.latest
        return latest.kind if latest is not None else self.declared_kind

    @property
    def reason(self) -> str | None:
        """Why no version serves (None when one does)."""
        if self.served:
            return None
        if not self.reports:
            return f"model {self.name!r} has no version directories"
        parts = [f"version {v}: {r.reason}" for v, r in sorted(self.reports.items(), reverse=True)]
        return f"model {self.name!r} has no valid version (" + "; ".join(parts) + ")"

    def summary(self) -> dict[str, Any]:
        latest = self.latest
        return {
            "name": self.name,
            "kind": self.kind,
            "state": "serving" if latest else "unavailable",
            "serving_version": latest.manifest.version if latest else None,
            "versions": {str(v): ("ok" if r.ok else "refused") for v, r in sorted(self.reports.items())},
            "reason": self.reason,
        }

    def detail(self) -> dict[str, Any]:
        latest = self.latest
        versions = []
        for number, report in sorted(self.reports.items(), reverse=True):
            item: dict[str, Any] = {"version": number, "state": "serving" if number in self.served else "refused",
                                    "report": report.to_dict()}
            proven = self.served.get(number)
            if proven is not None:
                item.update(describe_manifest(proven.manifest))
            versions.append(item)
        return {**self.summary(), "default_version": latest.manifest.version if latest else None, "versions": versions}


def describe_manifest(manifest: Manifest) -> dict[str, Any]:
    """The io spec and model-kind facts a client needs (checksums included)."""
    info: dict[str, Any] = {
        "kind": manifest.kind,
        "created": manifest.created.isoformat(),
        "inputs": [t.model_dump() for t in manifest.inputs],
        "outputs": [t.model_dump() for t in manifest.outputs],
        "files": [f.model_dump() for f in manifest.files],
        "constraints": [c.model_dump() for c in manifest.constraints],
        "training_metrics": manifest.training_metrics,
    }
    info.update(service_kind(manifest.kind).describe(manifest))
    return info


class ModelRegistry:
    """Proves and holds every model of a repository. `load()` once; then `resolve()` per request."""

    def __init__(
        self,
        repo: str | Path,
        engine: str = "onnx",
        device: str = "cpu",
        threads: int = 1,
        defaults: dict[str, str | None] | None = None,
        on_version: Callable[[str, VersionReport], None] | None = None,
        policy: Policy | None = None,
    ):
        self.repo = Path(repo)
        self.engine = engine
        self.device = device
        self.threads = threads
        self.defaults = defaults or {}
        self.on_version = on_version
        self.policy = policy  # None: the default policy
        self.models: dict[str, ModelEntry] = {}
        self.problem: str | None = None  # a repository-level reason not to be ready
        self.loaded = False

    # -- loading ----------------------------------------------------------------------------
    def load(self) -> None:
        self.models = {}
        if not self.repo.is_dir():
            self.problem = f"model repository {str(self.repo)!r} does not exist or is not a directory"
            log.error(self.problem)
            self.loaded = True
            return
        for model_dir in sorted(p for p in self.repo.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))):
            entry = ModelEntry(model_dir.name, model_dir)
            for version_dir in sorted(model_dir.iterdir(), key=lambda p: p.name):
                if not version_dir.is_dir() or not version_dir.name.isdigit():
                    continue
                self._prove(entry, version_dir)
            self.models[entry.name] = entry
            if entry.served:
                log.info("model %s serves version %d (%s)", entry.name, entry.latest.manifest.version, entry.kind)
            else:
                log.error("model %s has no valid version: %s", entry.name, entry.reason)
        self.problem = None if self.models else f"model repository {str(self.repo)!r} holds no models"
        self.loaded = True

    def _prove(self, entry: ModelEntry, version_dir: Path) -> None:
        number = int(version_dir.name)
        report, proven = prove_version(version_dir, engine=self.engine, device=self.device, threads=self.threads,
                                       policy=self.policy)
        entry.reports[number] = report
        try:
            entry.declared_kind = entry.declared_kind or Manifest.read(version_dir).kind
        except Exception:  # unreadable manifests are already reported by the proof
            pass
        if proven is not None:
            entry.served[number] = proven
            log.info("proved %s/%d: %s", entry.name, number, "; ".join(f"{s.step} {s.status}" for s in report.steps))
        else:
            log.warning("refused %s/%d: %s", entry.name, number, report.reason)
        if self.on_version is not None:
            self.on_version(entry.name, report)

    # -- state --------------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return self.loaded and self.problem is None and all(m.served for m in self.models.values())

    def not_ready_reasons(self) -> list[str]:
        if not self.loaded:
            return ["models are still loading"]
        if self.problem:
            return [self.problem]
        return [m.reason for m in self.models.values() if m.reason]

    def close(self) -> None:
        self.models = {}

    # -- lookup -------------------------------------------------------------------------------
    def model(self, name: str) -> ModelEntry:
        entry = self.models.get(name)
        if entry is None:
            raise NotFoundError(f"unknown model {name!r}", model=name, known=sorted(self.models))
        return entry

    def default_name(self, kind: str) -> str:
        configured = self.defaults.get(kind)
        if configured:
            return configured
        candidates = sorted(name for name, entry in self.models.items() if entry.kind == kind)
        if not candidates:
            if self.problem:
                raise ModelUnavailableError(self.problem)
            raise NotFoundError(f"the repository has no {kind} model", kind=kind)
        if len(candidates) > 1:
            raise BadRequestError(
                f"the repository has several {kind} models ({', '.join(candidates)}): name one with 'model', "
                f"or set MONOSERVE_DEFAULT_{kind.upper()}", kind=kind, models=candidates)
        return candidates[0]

    def resolve(self, kind: str, name: str | None = None, version: int | None = None) -> ProvenVersion:
        """The version that serves a request: 404 unknown, 400 wrong kind, 503 not valid."""
        entry = self.model(name if name else self.default_name(kind))
        if entry.kind is not None and entry.kind != kind:
            raise BadRequestError(f"model {entry.name!r} is a {entry.kind}, not a {kind}", model=entry.name)
        if version is None:
            latest = entry.latest
            if latest is None:
                raise ModelUnavailableError(entry.reason or f"model {entry.name!r} is unavailable", model=entry.name)
            return latest
        proven = entry.served.get(version)
        if proven is not None:
            if proven.kind != kind:
                raise BadRequestError(f"model {entry.name!r} version {version} is a {proven.kind}, not a {kind}",
                                      model=entry.name, version=version)
            return proven
        report = entry.reports.get(version)
        if report is None:
            raise NotFoundError(f"model {entry.name!r} has no version {version}", model=entry.name, version=version,
                                versions=sorted(entry.reports))
        raise ModelUnavailableError(f"model {entry.name!r} version {version} was refused at load: {report.reason}",
                                    model=entry.name, version=version)
