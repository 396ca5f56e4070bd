"""The benchmark's workloads (issue 6) and their request bodies, written once as files for wrk."""

from __future__ import annotations

import io
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

N_FEATURES = 6  # spam7


@dataclass(frozen=True)
class Workload:
    name: str  # e.g. "smooth_large_npy"
    kind: str  # "smooth" | "classify"
    model: str
    rows: int  # smooth: channels; classify: instances
    length: int  # smooth: samples per channel; classify: features
    fmt: str  # "json" | "npy"

    @property
    def route(self) -> str:
        return f"/{self.kind}"

    @property
    def family(self) -> str:
        """The workload without its body format: the naive server's JSON counterpart of an .npy one."""
        return self.name.rsplit("_", 1)[0]

    @property
    def samples(self) -> int:
        """Samples per request: signal values for /smooth, instances for /classify."""
        return self.rows * self.length if self.kind == "smooth" else self.rows

    @property
    def query(self) -> str:
        return f"?model={self.model}&mode=same" if self.kind == "smooth" else f"?model={self.model}"

    @property
    def content_type(self) -> str:
        return "application/x-npy" if self.fmt == "npy" else "application/json"

    @property
    def accept(self) -> str:
        return "application/x-npy" if self.fmt == "npy" else "application/json"

    @property
    def url_path(self) -> str:
        return self.route + (self.query if self.fmt == "npy" else "")

    def array(self) -> np.ndarray:
        """The request's data, deterministic: random walks for signals, spam7-like rows for features."""
        rng = np.random.default_rng(zlib.crc32(f"{self.kind}:{self.rows}x{self.length}".encode()))
        if self.kind == "smooth":
            steps = rng.standard_normal((self.rows, self.length)).astype(np.float32)
            return (np.cumsum(steps, axis=-1, dtype=np.float32) + 100.0).astype(np.float32)
        return np.abs(rng.standard_normal((self.rows, self.length))).astype(np.float32) * 2.0

    def body(self) -> bytes:
        data = self.array()
        if self.fmt == "npy":
            buffer = io.BytesIO()
            np.save(buffer, data, allow_pickle=False)
            return buffer.getvalue()
        import orjson

        # What a client does: numpy -> tolist() -> JSON (float32 values written as Python floats).
        key = "signal" if self.kind == "smooth" else "instances"
        payload = {"model": self.model, key: data.tolist()}
        if self.kind == "smooth":
            payload["mode"] = "same"
        return orjson.dumps(payload)

    def body_file(self, work: Path) -> Path:
        path = work / "bodies" / f"{self.name}.{self.fmt}"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(self.body())
            tmp.replace(path)
        return path


def _smooth(size: str, rows: int, length: int, model: str = "smoother") -> list[Workload]:
    return [Workload(f"smooth_{size}_{fmt}", "smooth", model, rows, length, fmt) for fmt in ("json", "npy")]


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in [
        *_smooth("small", 1, 256),
        *_smooth("medium", 8, 4096),
        *_smooth("large", 8, 125_000),
        Workload("smooth_long_npy", "smooth", "smoother_long", 8, 1_000_000, "npy"),
        Workload("classify_1_json", "classify", "classifier", 1, N_FEATURES, "json"),
        Workload("classify_64_json", "classify", "classifier", 64, N_FEATURES, "json"),
    ]
}
