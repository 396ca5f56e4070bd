"""What a batch run is (`BatchJob`), what it reports (`BatchSummary`), and the two steps both engines
share: proving the version as the service does, and the metadata the output carries."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batch.errors import BatchError, VersionRefusedError
from batch.kinds import BAD_ROWS, Layout
from batch.serving import RefusedVersionError, load_version, proof_summary

ENGINES = ("local", "ray")
DEFAULT_BATCH_ROWS = 65_536


@dataclass
class BatchJob:
    repo: str | Path
    model: str
    input: str | Path
    output: str | Path
    version: int | None = None
    engine: str = "local"
    ray_address: str | None = None
    keep: list[str] = field(default_factory=list)
    column: str | None = None
    id: str | None = None
    time: str | None = None
    value: str | None = None
    mode: str | None = None
    on_bad_rows: str = "fail"
    batch_rows: int = DEFAULT_BATCH_ROWS
    threads: int | None = None  # ONNX Runtime threads: local, all usable CPUs; Ray, per actor (default 1)
    actors: int | None = None  # Ray: actors scoring in parallel (default: the cluster's CPUs / threads, less one)
    trusted_keys: list[str] | None = None  # PEM paths; default MONOSERVE_TRUSTED_KEYS
    max_buffered_rows: int = 10_000_000  # local long format: rows of unfinished series held at most

    def layout(self) -> Layout:
        return Layout(keep=list(self.keep), column=self.column, id=self.id, time=self.time, value=self.value,
                      mode=self.mode, on_bad=self.on_bad_rows)

    def check(self) -> None:
        if self.engine not in ENGINES:
            raise BatchError(f"unknown engine {self.engine!r}; expected one of {list(ENGINES)}")
        if self.on_bad_rows not in BAD_ROWS:
            raise BatchError(f"--on-bad-rows must be one of {list(BAD_ROWS)}, got {self.on_bad_rows!r}")
        if self.batch_rows < 1:
            raise BatchError("--batch-rows must be at least 1")
        if self.ray_address and self.engine != "ray":
            raise BatchError("--ray-address needs --engine ray")
        long = [self.id, self.time, self.value]
        if any(long) and not all(long):
            raise BatchError("the long format needs all of --id, --time and --value")


@dataclass
class BatchSummary:
    output: str
    rows_in: int
    rows_out: int
    bad_rows: int
    seconds: float
    metadata: dict[str, Any]
    prove_seconds: float = 0.0  # the driver's proof (and, on Ray, the start of its actors: not counted)

    @property
    def rows_per_second(self) -> float:
        return self.rows_in / self.seconds if self.seconds > 0 else 0.0


def prove(job: BatchJob, threads: int, expect_digest: str | None = None):
    """The version, proven as the service proves it; VersionRefusedError otherwise."""
    try:
        return load_version(job.repo, job.model, job.version, threads=threads, trusted_key_paths=job.trusted_keys,
                            expect_digest=expect_digest)
    except RefusedVersionError as exc:
        raise VersionRefusedError(f"refused: {exc}") from None
    except ValueError as exc:  # unreadable trusted keys, an invalid MONOSERVE_* setting
        raise BatchError(str(exc)) from None


def metadata_for(proven: Any, job: BatchJob, adapter: Any) -> dict[str, Any]:
    meta = proof_summary(proven)
    if proven.kind == "smoother":
        meta["mode"] = job.mode or proven.manifest.smoother.default_mode
    meta["layout"] = type(adapter).__name__
    meta["on_bad_rows"] = job.on_bad_rows
    meta["engine"] = job.engine
    return meta
