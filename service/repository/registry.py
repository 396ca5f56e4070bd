"""The model repository as the service sees it: every version of every model proved before it serves.

REPO/NAME/VERSION (VERSION an integer). Hidden or non-integer directories are ignored (export
writes into a temporary directory inside the repository and renames it when complete).

The repository may change while the service runs (service.repository.lifecycle polls it; the control API
loads and unloads models). A refresh happens in two parts:
- `plan()` (a worker thread) looks at the directories and proves what is new or changed. A version
  is keyed by a fingerprint of its files (`fingerprint`: stat results only): an unchanged version
  is never proved again, a changed one always is. A version whose
  files change while it is being proved is refused ("stable" step) and retried when it changes.
- `commit(plan)` (the event loop) swaps the new state in with one assignment. The published
  ModelEntry objects are never mutated, so a request sees either the old state or the new one, and
  a request that resolved a version keeps it (and its engine) until it finishes: engines are never
  closed here, the garbage collector frees one when its last request is done.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from contract.manifest import KINDS, Manifest
from contract.walk import MAX_FILES, WalkRefused, bounded_listing, bounded_walk
from contract.policy import Policy
from service.base.errors import BadRequestError, ModelUnavailableError, NotFoundError
from service.compute.kinds import service_kind
from service.repository.prover import ProvenVersion, StepReport, VersionReport, prove_version
from service.compute.version import STEPS

log = logging.getLogger(__name__)

MAX_REPOSITORY_ENTRIES = 4096  # model folders listed per poll; past it nothing is refreshed
MAX_MODEL_ENTRIES = 1024  # entries of one model folder listed per poll; past it the model is not refreshed
MAX_FINGERPRINT_FILES = MAX_FILES  # a version directory holds a handful of files; a hostile one is refused
REFUSED = "refused"  # the first item of a refused directory's fingerprint: ("refused", why)
DIRECTORY_STEP = "directory"  # the step a version refused by its folder alone fails (contract.walk)

Fingerprint = tuple


def fingerprint(version_dir: Path) -> Fingerprint | None:
    """What identifies the contents of a version directory without reading them (None: unreadable).

    Every entry below it (relative path, inode, size, mtime and ctime in ns) and the directory's own
    inode and ctime: an atomic publish (rename) gives a new inode or ctime, an in-place edit a new
    size, mtime or ctime (ctime cannot be set back by a publisher, unlike mtime). The walk is
    contract.walk's, bounded as it goes: a directory past a limit (depth, folders, files, entries)
    is fingerprinted as (("", inode, ctime), ("refused", why)) and refused without being proved.
    """
    try:
        top = os.stat(version_dir)
        entries: list[tuple] = [("", top.st_ino, top.st_ctime_ns)]
        try:
            for relative, st in bounded_walk(version_dir):
                if stat.S_ISDIR(st.st_mode):
                    continue
                entries.append((relative, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
        except WalkRefused as exc:
            return (entries[0], (REFUSED, str(exc)))
        return tuple(entries)
    except OSError:
        return None


def refusal_of(current: Fingerprint | None) -> str | None:
    """Why a fingerprint says its directory is refused (None: it may be proved)."""
    if current is not None and len(current) == 2 and current[1][0] == REFUSED:
        return current[1][1]
    return None


@dataclass
class VersionRecord:
    """The outcome of proving one version directory as it was (its fingerprint) at that time."""

    fingerprint: Fingerprint | None  # None: prove again on the next refresh
    report: VersionReport
    proven: ProvenVersion | None
    proved_at: float  # time.time()
    kind: str | None = None  # from a readable manifest, even of a refused version

@dataclass
class ModelEntry:
    """One model name: the report of each version, and the versions that passed.

    Published entries are treated as immutable (a refresh builds new ones)."""

    name: str
    path: Path
    reports: dict[int, VersionReport] = field(default_factory=dict)
    served: dict[int, ProvenVersion] = field(default_factory=dict)
    declared_kind: str | None = None  # from a readable manifest, even of a refused version
    proved_at: dict[int, float] = field(default_factory=dict)
    problem: str | None = None  # why its folder was not looked at (past a listing limit)

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
        if self.problem is not None:
            return f"model {self.name!r}: {self.problem}"
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
            "signatures": {str(v): r.signature["status"] for v, r in sorted(self.reports.items())},
            "reason": self.reason,
            # e.g. a classifier's labels and its decision threshold per label
            **(service_kind(latest.manifest.kind).summary(latest.manifest) if latest else {}),
        }

    def detail(self) -> dict[str, Any]:
        latest = self.latest
        versions = []
        for number, report in sorted(self.reports.items(), reverse=True):
            item: dict[str, Any] = {"version": number, "state": "serving" if number in self.served else "refused",
                                    "proved_at": iso_time(self.proved_at.get(number)), "report": report.to_dict()}
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


@dataclass
class Plan:
    """The state a refresh computed, to be swapped in by `commit`, and what changed."""

    models: dict[str, ModelEntry]
    problem: str | None
    proved: list[tuple[str, int]] = field(default_factory=list)  # newly proved and serving
    refused: list[tuple[str, int, str]] = field(default_factory=list)  # newly refused, with the reason
    removed: list[tuple[str, int]] = field(default_factory=list)  # versions that vanished or were unloaded

    @property
    def changed(self) -> bool:
        return bool(self.proved or self.refused or self.removed)


class ModelRegistry:
    """Proves and holds every model of a repository: `refresh()` (or `plan()` + `commit()`) whenever
    the repository may have changed; `resolve()` per request."""

    def __init__(
        self,
        repo: str | Path,
        engine: str = "onnx",
        device: str = "cpu",
        threads: int = 1,
        defaults: dict[str, str | None] | None = None,
        on_version: Callable[[str, VersionReport], None] | None = None,
        policy: Policy | None = None,
        trusted_keys: Any = None,
    ):
        self.repo = Path(repo)
        self.trusted_keys = trusted_keys  # contract.signing.TrustedKeys: every version must be signed by one
        self.engine = engine
        self.device = device
        self.threads = threads
        self.defaults = defaults or {}
        self.on_version = on_version
        self.policy = policy  # None: the default policy
        self.models: dict[str, ModelEntry] = {}
        self.problem: str | None = None  # a repository-level reason not to be ready
        self.loaded = False
        # unloaded through the control API (name -> kind): not served until loaded again
        self.unloaded: dict[str, str | None] = {}
        # (the models dict it was computed from, {(kind, name or None): the latest version}): what
        # resolve() answers for a request naming no version. Every change of what serves replaces
        # self.models (commit, close), and the entries of a committed dict are never changed in
        # place, so the dict's identity says whether the cache still holds.
        self._latest: tuple[dict[str, ModelEntry], dict[tuple[str, str | None], ProvenVersion]] = ({}, {})
        self.refreshed_at: float | None = None
        self._records: dict[tuple[str, int], VersionRecord] = {}
        self._was_ready = False  # see `ready`
        self._has_served: set[str] = set()  # model names that had a valid version at some point
        self._plan_lock = threading.Lock()  # one plan at a time: the records are shared

    # -- loading ----------------------------------------------------------------------------
    def load(self) -> Plan:
        """Prove the whole repository and serve it (also what a refresh does)."""
        return self.refresh()

    def refresh(self, only: Iterable[str] | None = None, retry_refused: bool = False) -> Plan:
        plan = self.plan(only, retry_refused)
        self.commit(plan)
        return plan

    def plan(self, only: Iterable[str] | None = None, retry_refused: bool = False) -> Plan:
        """Look at the repository and prove what is new or changed (blocking: call it in a thread).

        `only`: refresh these model names and keep the others as they are; `retry_refused`: prove
        refused versions again even when their files did not change (an explicit load).
        """
        with self._plan_lock:
            return self._plan(None if only is None else set(only), retry_refused)

    def _plan(self, only: set[str] | None, retry_refused: bool) -> Plan:
        if not self.repo.is_dir():
            problem = f"model repository {str(self.repo)!r} does not exist or is not a directory"
            plan = Plan({}, problem, removed=sorted(self._records))
            self._records = {}
            return plan
        try:
            model_dirs = {e.name: Path(e.path) for e in bounded_listing(self.repo, MAX_REPOSITORY_ENTRIES)
                          if e.is_dir() and not e.name.startswith((".", "_"))}
        except WalkRefused as exc:  # every model keeps what it serves
            return Plan(dict(self.models), f"model repository not refreshed: {exc}")
        except OSError as exc:
            return Plan(dict(self.models), f"model repository {str(self.repo)!r} cannot be listed: {exc}")
        plan = Plan({}, None)
        for name in sorted(model_dirs.keys() | {n for n, _ in self._records}):
            if name in self.unloaded or (only is not None and name not in only):
                if name in self.models and name not in self.unloaded:
                    plan.models[name] = self.models[name]  # not refreshed this time: kept as it is
                continue
            model_dir = model_dirs.get(name)
            if model_dir is None:  # the model's directory vanished: all its versions go
                for key in sorted(k for k in self._records if k[0] == name):
                    del self._records[key]
                    plan.removed.append(key)
                continue
            entry = self._plan_model(name, model_dir, retry_refused, plan)
            if entry.reports or entry.problem:  # no version directory yet (e.g. export still staging): not a model yet
                plan.models[name] = entry
        for key in [k for k in self._records if k[0] in self.unloaded]:  # unloaded: let their engines go
            del self._records[key]
            plan.removed.append(key)
        if not plan.models:
            plan.problem = f"model repository {str(self.repo)!r} holds no models"
        return plan

    def _plan_model(self, name: str, model_dir: Path, retry_refused: bool, plan: Plan) -> ModelEntry:
        entry = ModelEntry(name, model_dir)
        try:  # bounded like a version's walk; ASCII digits only ('²'.isdigit() is true, int('²') fails)
            version_dirs = {int(e.name): Path(e.path) for e in bounded_listing(model_dir, MAX_MODEL_ENTRIES)
                            if e.name.isascii() and e.name.isdigit() and e.is_dir()}
        except WalkRefused as exc:  # this model alone keeps what it serves; the others load on
            log.warning("model %s not refreshed: %s", name, exc)
            return self.models.get(name) or ModelEntry(name, model_dir, problem=str(exc))
        except OSError:
            version_dirs = {}
        for key in [k for k in self._records if k[0] == name and k[1] not in version_dirs]:
            del self._records[key]
            plan.removed.append(key)
            log.warning("version %s/%d vanished from the repository: unloaded", *key)
        for number in sorted(version_dirs):
            version_dir = version_dirs[number]
            current = fingerprint(version_dir)
            record = self._records.get((name, number))
            stale = record is None or record.fingerprint is None or record.fingerprint != current
            if stale or (retry_refused and record.proven is None):
                try:  # one version's folder never stops the others (nor startup)
                    record = self._prove(name, number, version_dir, current)
                except Exception as exc:  # noqa: BLE001 - a bug or an unforeseen folder: this version only
                    log.exception("proving %s/%d failed", name, number)
                    # remembered under its fingerprint: proved again once its folder changes, not on every poll
                    record = self._refused(name, number, version_dir, current, DIRECTORY_STEP,
                                           f"unexpected error: {type(exc).__name__}: {str(exc)[:200]}")
                self._records[(name, number)] = record
                if record.proven is not None:
                    plan.proved.append((name, number))
                else:
                    plan.refused.append((name, number, record.report.reason or "refused"))
            entry.reports[number] = record.report
            entry.proved_at[number] = record.proved_at
            if record.proven is not None:
                entry.served[number] = record.proven
            entry.declared_kind = entry.declared_kind or record.kind
        return entry

    def _refused(self, name: str, number: int, version_dir: Path, current: Fingerprint | None, step: str,
                 reason: str) -> VersionRecord:
        """A version refused before its proof ran (its folder past a walk limit, say): reported and
        counted like a failed proof (on_version), remembered under its fingerprint."""
        report = VersionReport(str(version_dir), name, number, self.engine, self.device)
        report.steps.append(StepReport(step, "failed", reason))
        report.steps += [StepReport(s, "skipped", "not run: an earlier step failed") for s in STEPS]
        log.warning("refused %s/%d: %s", name, number, report.reason)
        if self.on_version is not None:
            self.on_version(name, report)
        return VersionRecord(current, report, None, time.time(), None)

    def _prove(self, name: str, number: int, version_dir: Path, before: Fingerprint | None) -> VersionRecord:
        refusal = refusal_of(before)
        if refusal is not None:
            return self._refused(name, number, version_dir, before, DIRECTORY_STEP, refusal)
        report, proven = prove_version(version_dir, engine=self.engine, device=self.device, threads=self.threads,
                                       policy=self.policy, trusted_keys=self.trusted_keys)
        after = fingerprint(version_dir)
        if before is None or after != before:
            # Files changed while they were read (a publisher writing in place): what was proved may
            # not be what is on disk. Refuse now, prove again once it holds still.
            report.steps.append(StepReport(
                "stable", "failed", "the version directory changed while it was being proved (written in place, "
                "not published by rename?); it is proved again when it changes"))
            proven, after = None, None
        kind = None
        try:
            kind = Manifest.read(version_dir).kind
        except Exception:  # unreadable manifests are already reported by the proof
            pass
        if proven is not None:
            log.info("proved %s/%d: %s", name, number, "; ".join(f"{s.step} {s.status}" for s in report.steps))
        else:
            log.warning("refused %s/%d: %s", name, number, report.reason)
        if self.on_version is not None:
            self.on_version(name, report)
        return VersionRecord(after, report, proven, time.time(), kind)

    def commit(self, plan: Plan) -> None:
        """Serve what `plan` computed: one assignment each, cheap (call it on the event loop)."""
        previous = self.models
        self.models = plan.models
        self.problem = plan.problem
        self.loaded = True
        self.refreshed_at = time.time()
        self._has_served |= {name for name, entry in plan.models.items() if entry.served}
        self._was_ready = self._was_ready or self.ready
        for name, entry in plan.models.items():
            before = previous.get(name)
            was = before.latest.manifest.version if before is not None and before.latest else None
            now = entry.latest.manifest.version if entry.latest else None
            if was != now:
                if now is not None:
                    log.info("model %s serves version %d (%s)%s", name, now, entry.kind,
                             f", was version {was}" if was is not None else "")
                else:
                    log.error("model %s has no valid version: %s", name, entry.reason)
        for name in previous.keys() - plan.models.keys():
            log.warning("model %s is no longer served (%s)", name,
                        "unloaded" if name in self.unloaded else "its directory vanished")

    def unload_plan(self, name: str) -> Plan:
        """The state without `name` (which stays unloaded until `load_plan(name)`)."""
        if name not in self.models and not (self.repo / name).is_dir() and name not in self.unloaded:
            raise NotFoundError(f"unknown model {name!r}", model=name, known=sorted(self.models))
        with self._plan_lock:
            entry = self.models.get(name)
            self.unloaded[name] = entry.kind if entry is not None else None
            removed = sorted(k for k in self._records if k[0] == name)
            for key in removed:
                del self._records[key]
            models = {n: e for n, e in self.models.items() if n != name}
            problem = None if models else f"model repository {str(self.repo)!r} holds no models"
            return Plan(models, problem, removed=removed)

    def load_plan(self, name: str) -> Plan:
        """Prove `name` now (refused versions too) and serve it again if it was unloaded (blocking)."""
        if not (self.repo / name).is_dir() or name.startswith((".", "_")):
            raise NotFoundError(f"no model directory {name!r} in the repository {str(self.repo)!r}", model=name)
        with self._plan_lock:
            self.unloaded.pop(name, None)
            return self._plan({name}, retry_refused=True)

    # -- state --------------------------------------------------------------------------------
    # Readiness: until the service has first been ready, every model must have a valid version (a
    # rollout with a broken model never becomes ready). Afterwards a model that appears and has never
    # served (a new name whose first version is refused) is reported but does not take readiness
    # away: every replica polls the same repository, and one bad publish would otherwise take them
    # all out of their load balancer. A model that served and lost every valid version does.
    def _required(self) -> list[ModelEntry]:
        if not self._was_ready:
            return list(self.models.values())
        return [entry for name, entry in self.models.items() if name in self._has_served]

    @property
    def ready(self) -> bool:
        return self.loaded and self.problem is None and all(m.served for m in self._required())

    def not_ready_reasons(self) -> list[str]:
        if not self.loaded:
            return ["models are still loading"]
        if self.problem:
            return [self.problem]
        return [m.reason for m in self._required() if m.reason]

    def served_versions(self) -> list[ProvenVersion]:
        return [proven for entry in self.models.values() for proven in entry.served.values()]

    def index(self) -> list[dict[str, Any]]:
        """Triton's repository index: one row per model version, {name, version, state, reason}."""
        rows: list[dict[str, Any]] = []
        for name, entry in sorted(self.models.items()):
            for number, report in sorted(entry.reports.items()):
                ok = number in entry.served
                rows.append({"name": name, "version": str(number), "state": "READY" if ok else "UNAVAILABLE",
                             "reason": "" if ok else (report.reason or "refused")})
        for name in sorted(self.unloaded):
            rows.append({"name": name, "version": "", "state": "UNAVAILABLE", "reason": "unloaded"})
        return rows

    def close(self) -> None:
        self.models = {}
        self._records = {}

    # -- lookup -------------------------------------------------------------------------------
    def model(self, name: str) -> ModelEntry:
        entry = self.models.get(name)
        if entry is None and name in self.unloaded:
            raise NotFoundError(f"model {name!r} is unloaded (POST /v2/repository/models/{name}/load serves it again)",
                                model=name)
        if entry is None:
            raise NotFoundError(f"unknown model {name!r}", model=name, known=sorted(self.models))
        return entry

    def default_name(self, kind: str) -> str:
        configured = self.defaults.get(kind)
        if configured:
            return configured
        candidates = sorted(name for name, entry in self.models.items() if entry.kind == kind)
        if not candidates:
            unloaded = sorted(name for name, unloaded_kind in self.unloaded.items() if unloaded_kind == kind)
            if unloaded:
                raise NotFoundError(f"the repository's {kind} model {unloaded[0]!r} is unloaded (POST "
                                    f"/v2/repository/models/{unloaded[0]}/load serves it again)", kind=kind)
            if self.problem:
                raise ModelUnavailableError(self.problem)
            raise NotFoundError(f"the repository has no {kind} model", kind=kind)
        if len(candidates) > 1:
            raise BadRequestError(
                f"the repository has several {kind} models ({', '.join(candidates)}): name one with 'model'"
                # a registered kind has no MONOSERVE_DEFAULT_* setting (service.settings names the built-in ones)
                + (f", or set MONOSERVE_DEFAULT_{kind.upper()}" if kind in KINDS else ""), kind=kind, models=candidates)
        return candidates[0]

    def resolve(self, kind: str, name: str | None = None, version: int | None = None) -> ProvenVersion:
        """The version that serves a request: 404 unknown, 400 wrong kind, 503 not valid."""
        if version is not None:
            return self._resolve(kind, name, version)
        # the common request (the latest version): cached until what serves changes (a default
        # model's name took a scan of every model per request). Only answers are cached, never
        # refusals, so a client's made-up names cannot grow it.
        models = self.models
        computed_from, latest = self._latest
        if computed_from is not models:
            latest = {}
            self._latest = (models, latest)
        key = (kind, name or None)
        found = latest.get(key)
        if found is None:
            found = latest[key] = self._resolve(kind, name, None)
        return found

    def _resolve(self, kind: str, name: str | None, version: int | None) -> ProvenVersion:
        entry = self.model(name if name else self.default_name(kind))
        entry_kind = entry.kind  # a property that looks up the newest version: read once
        if entry_kind is not None and entry_kind != kind:
            raise BadRequestError(f"model {entry.name!r} is a {entry_kind}, not a {kind}", model=entry.name)
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


def iso_time(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    from datetime import datetime, timezone

    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat()
