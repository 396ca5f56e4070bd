"""The peer servers as bench/run.py ServerSpecs: which workloads each runs, how it starts, where it is ready."""

from __future__ import annotations

import os
from pathlib import Path

HERE = Path(__file__).resolve().parent

# Each peer's readiness path and the workloads it runs: the OIP servers the shared OIP workloads
# (JSON and the binary tensor extension), LitServe, BentoML and Ray Serve their own JSON routes (the service's JSON bodies).
READY_PATH = {"mlserver": "/v2/health/ready", "kserve": "/v2/health/ready", "pytriton": "/v2/models/classifier/ready",
              "litserve": "/health", "bentoml": "/readyz", "rayserve": "/health"}
OIP_PEERS = ("mlserver", "kserve", "pytriton")
PEERS = ("mlserver", "litserve", "kserve", "pytriton", "bentoml", "rayserve")
NOTES = {
    "mlserver": "custom MLModel runtime (NumpyCodec), parallel_workers 0, debug off",
    "litserve": "LitAPI per route, 1 worker on the CPU, 1 API server, log level error",
    "kserve": "kserve.Model (InferRequest/InferResponse), 1 worker, access log off",
    "pytriton": "PyTriton (Triton Inference Server with the model in its Python backend), log verbosity 0",
    "bentoml": "@bentoml.service, 1 worker, numpy arguments from JSON, access log off (`bentoml serve`)",
    "rayserve": "1 replica (FastAPI ingress) on a local Ray instance with 1 CPU, access log off, dashboard off",
}
SINGLE_THREAD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def peer_workloads(name: str, oip_workloads: dict[str, list[int]], json_workloads: dict[str, list[int]]) -> dict[str, list[int]]:
    return dict(oip_workloads) if name in OIP_PEERS else dict(json_workloads)


def peer_argv(python: Path, name: str) -> list[str]:
    return [str(python), str(HERE / "launch.py"), name, "{port}"]


def peer_env(onnx: dict[str, Path]) -> dict[str, str]:
    return {"PEER_SMOOTHER": str(onnx["smoother"]), "PEER_CLASSIFIER": str(onnx["classifier"]),
            "PYTHONPATH": str(HERE), "PYTHONUNBUFFERED": "1", **SINGLE_THREAD_ENV,
            # the bench's own virtual environment must not leak into the peer's
            "VIRTUAL_ENV": "", "PATH": os.environ.get("PATH", "")}
