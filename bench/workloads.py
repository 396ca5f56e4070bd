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
    fmt: str  # "json" | "npy" (the service's own routes) | "oip" | "oipbin" (OIP v2 JSON / binary tensor extension)

    @property
    def oip(self) -> bool:
        return self.fmt in ("oip", "oipbin")

    @property
    def route(self) -> str:
        return f"/v2/models/{self.model}/infer" if self.oip else f"/{self.kind}"

    @property
    def input_name(self) -> str:
        """The OIP input tensor: the graph's input name."""
        return "signal" if self.kind == "smooth" else "features"

    @property
    def output_name(self) -> str:
        return "smoothed" if self.kind == "smooth" else "scores"

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
        return {"npy": "application/x-npy", "oipbin": "application/octet-stream"}.get(self.fmt, "application/json")

    @property
    def accept(self) -> str:
        return "application/x-npy" if self.fmt == "npy" else "application/json"

    @property
    def url_path(self) -> str:
        return self.route + (self.query if self.fmt == "npy" else "")

    def oip_header(self) -> bytes:
        """The JSON part of an OIP request: data inline (flat, row-major, as tritonclient sends it),
        or declared as binary data that follows, with the output asked for as binary too."""
        import orjson

        data = self.array()
        tensor: dict = {"name": self.input_name, "shape": list(data.shape), "datatype": "FP32"}
        payload: dict = {"inputs": [tensor]}
        if self.fmt == "oipbin":
            tensor["parameters"] = {"binary_data_size": data.nbytes}
            payload["outputs"] = [{"name": self.output_name, "parameters": {"binary_data": True}}]
        else:
            tensor["data"] = data.reshape(-1).tolist()
        return orjson.dumps(payload)

    @property
    def extra_headers(self) -> dict[str, str]:
        """Headers beyond Content-Type and Accept (the binary extension's header length)."""
        if self.fmt != "oipbin":
            return {}
        return {"Inference-Header-Content-Length": str(len(self.oip_header()))}

    def array(self) -> np.ndarray:
        """The request's data, deterministic: random walks for signals, spam7-like rows for features."""
        rng = np.random.default_rng(zlib.crc32(f"{self.kind}:{self.rows}x{self.length}".encode()))
        if self.kind == "smooth":
            steps = rng.standard_normal((self.rows, self.length)).astype(np.float32)
            return (np.cumsum(steps, axis=-1, dtype=np.float32) + 100.0).astype(np.float32)
        return np.abs(rng.standard_normal((self.rows, self.length))).astype(np.float32) * 2.0

    def body(self) -> bytes:
        data = self.array()
        if self.fmt == "oip":
            return self.oip_header()
        if self.fmt == "oipbin":
            return self.oip_header() + data.astype("<f4").tobytes()
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


OIP_FORMATS = ("oip", "oipbin")
# The workloads every OIP server runs (the service, MLServer, KServe, PyTriton: Triton's Python backend): the same tensors.
OIP_WORKLOADS = [
    *(Workload(f"classify_{rows}_{fmt}", "classify", "classifier", rows, N_FEATURES, fmt)
      for rows in (1, 64) for fmt in OIP_FORMATS),
    *(Workload(f"smooth_{size}_{fmt}", "smooth", "smoother", 8, length, fmt)
      for size, length in (("medium", 4096), ("large", 125_000)) for fmt in OIP_FORMATS),
]


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in [
        *_smooth("small", 1, 256),
        *_smooth("medium", 8, 4096),
        *_smooth("large", 8, 125_000),
        Workload("smooth_long_npy", "smooth", "smoother_long", 8, 1_000_000, "npy"),
        Workload("classify_1_json", "classify", "classifier", 1, N_FEATURES, "json"),
        Workload("classify_64_json", "classify", "classifier", 64, N_FEATURES, "json"),
        *OIP_WORKLOADS,
    ]
}
