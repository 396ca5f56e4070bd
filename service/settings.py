"""Service settings: one pydantic-settings class, environment prefix MONOSERVE_."""

from __future__ import annotations

import math
import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from contract.files import DEFAULT_MAX_FILE_BYTES

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def cgroup_cpu_quota(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> float | None:
    """CPUs granted by the cgroup quota (v2 cpu.max, or v1 cfs_quota_us/cfs_period_us); None when unlimited."""
    v2_files = []
    for line in (_read(proc_cgroup) or "").splitlines():
        hierarchy_id, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy_id == "0" and controllers == "" and path:  # the cgroup v2 entry "0::/path"
            v2_files.append(root / path.lstrip("/") / "cpu.max")
    v2_files.append(root / "cpu.max")
    for cpu_max in v2_files:
        text = _read(cpu_max)
        if text is None:
            continue
        fields = text.split()
        if not fields or fields[0] == "max":
            return None
        period = int(fields[1]) if len(fields) > 1 else 100_000
        return int(fields[0]) / period if period > 0 else None
    for directory in (root / "cpu", root / "cpu,cpuacct"):
        quota, period = _read(directory / "cpu.cfs_quota_us"), _read(directory / "cpu.cfs_period_us")
        if quota is None or period is None:
            continue
        quota_us, period_us = int(quota), int(period)
        return None if quota_us <= 0 or period_us <= 0 else quota_us / period_us
    return None


DEFAULT_MEMORY_LIMIT = 1536 * 1024 * 1024  # 1.5 GiB: the memory target outside a container


def cgroup_memory_limit(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> int | None:
    """Bytes allowed by the cgroup (v2 memory.max, or v1 memory.limit_in_bytes); None when unlimited."""
    candidates = []
    for line in (_read(proc_cgroup) or "").splitlines():
        hierarchy_id, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy_id == "0" and controllers == "" and path:
            candidates.append(root / path.lstrip("/") / "memory.max")
    candidates += [root / "memory.max", root / "memory" / "memory.limit_in_bytes"]
    for path in candidates:
        text = (_read(path) or "").strip()
        if not text:
            continue
        if text == "max":
            return None
        try:
            value = int(text)
        except ValueError:
            continue
        return value if 0 < value < 2**62 else None  # v1 reports "unlimited" as a huge number
    return None


def default_memory_limit() -> int:
    """The container's memory limit when there is one (compose's mem_limit), else 1.5 GiB."""
    return cgroup_memory_limit() or DEFAULT_MEMORY_LIMIT


def available_cpus(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> int:
    """CPUs this process may actually use: its affinity mask, capped by the cgroup quota (rounded down)."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux: no affinity mask to ask
        count = os.cpu_count() or 1
    quota = cgroup_cpu_quota(root, proc_cgroup)
    if quota is not None:
        count = min(count, max(1, math.floor(quota)))
    return max(1, count)


class Settings(BaseSettings):
    """Every knob of the service; each can be set as MONOSERVE_<NAME> in the environment."""

    model_config = SettingsConfigDict(env_prefix="MONOSERVE_", extra="ignore")

    repo: Path = Field(Path("model_repository"), description="model repository (REPO/NAME/VERSION)")
    host: str = Field("127.0.0.1", description="address to bind (`monoserve serve --host` overrides)")
    port: int = Field(8000, ge=1, le=65535, description="port (`monoserve serve --port` overrides)")
    # The Open Inference Protocol's gRPC service (service.protocols.grpc_oip) on this port of `host`, beside
    # HTTP (8001 as in Triton; 0: no gRPC server). Started by the serving process only.
    grpc_port: int = Field(8001, ge=0, le=65535, description="gRPC port (0: off; `monoserve serve --grpc-port` overrides)")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    engine: Literal["onnx", "torchscript"] = "onnx"
    cpu_threads: int = Field(default_factory=available_cpus, ge=1,
                             description="CPUs for inference in all workers together (default: affinity and cgroup quota)")
    workers: int = Field(1, ge=1, description="uvicorn worker processes sharing cpu_threads")
    max_body_bytes: int = Field(128 * 1024 * 1024, ge=1)
    max_signal_length: int = Field(10_000_000, ge=1)
    max_artifact_bytes: int = Field(DEFAULT_MAX_FILE_BYTES, ge=1,
                                    description="largest file of a model version the proof reads (checked before reading)")
    # Limits counted before any array is allocated (docs/service.md, "Limits"): values per request
    # (B x C x L for /smooth, N x F for /classify; JSON values counted on the raw bytes) and rows.
    max_elements: int = Field(2**25, ge=1)
    max_rows: int = Field(1_000_000, ge=1)
    # Memory: the process's target (default: the cgroup's limit, e.g. compose's mem_limit, else
    # 1.5 GiB) and the share of it that requests in flight may hold together (bodies + estimated
    # working arrays; default half the target, the rest is the models, the runtime and slack).
    # A request that does not fit now answers 503 + Retry-After; one that never could, 413.
    memory_limit_bytes: int = Field(default_factory=default_memory_limit, ge=1)
    inflight_budget_bytes: int | None = Field(None, ge=1)
    # Time limits (seconds): the whole body (408 after it), the request line + headers (the
    # connection is closed; service.edge.http), idle keep-alive connections, and the drain on SIGTERM.
    body_timeout_s: float = Field(30.0, gt=0)
    # After body_timeout_s, a body may go on arriving while its average rate is at least this
    # (bytes/s; 0: the whole body within body_timeout_s): 128 MiB at 1 MiB/s is held at most ~158 s.
    body_min_rate_bytes_s: float = Field(1024 * 1024, ge=0)
    header_timeout_s: float = Field(10.0, gt=0)
    keep_alive_timeout_s: int = Field(5, ge=1)
    graceful_shutdown_s: int = Field(30, ge=1)
    http: Literal["auto", "httptools", "h11"] = "auto"
    access_log: bool = False  # one line per request on service.access (id, model, version, status, duration)
    api_token: SecretStr | None = None
    # The model control API (POST /v2/repository/..., service.pipeline.control) is off unless this token is
    # set (callers send it as a Bearer token); the API token unlocks it only with
    # control_accepts_api_token; unsafe_control_loopback opens it without a token to loopback
    # callers only (a development machine; unsafe on a shared host or behind a local proxy).
    admin_token: SecretStr | None = None
    control_accepts_api_token: bool = False
    unsafe_control_loopback: bool = False
    # Signed versions (contract.signing): PEM public keys and/or a PEM certificate chain, paths
    # separated by commas. Set, every version must carry VERSION/model.sig by one of them over
    # exactly its files, checked before the proof; unset, nothing is checked ("unsigned" in /models).
    trusted_keys: str | None = None
    # Seconds between polls of the repository for new, changed and removed versions (0: never;
    # the control API still loads and unloads). service.repository.lifecycle.
    poll_interval_s: float = Field(5.0, ge=0)
    log_level: str = "INFO"
    # "json": one JSON object per line (time, level, logger, message, request_id, model, version,
    # status, duration_ms; service.base.context); "text": the classic line, with [request_id=...].
    log_format: Literal["text", "json"] = "text"
    default_smoother: str | None = None
    default_classifier: str | None = None
    default_regressor: str | None = None
    # Small requests run inline on the event loop, where a worker-thread hop costs more than their
    # work (measured: docs/service.md). Bodies above inline_max_body_bytes are decoded, inferred and
    # encoded in a worker thread; below it, inference runs inline when the model's predicted time
    # (fitted on its warm-up runs) is at most inline_max_inference_us. 0 sends everything to threads.
    inline_max_body_bytes: int = Field(64 * 1024, ge=0)
    inline_max_inference_us: float = Field(100.0, ge=0)
    # /smooth: "auto" picks per request, from kernel size and length by measurement
    # (service/compute/convolve.py), the engine (the exported graph), a blocked direct product or FFT
    # overlap-add (both with the proven kernel, on the CPU); "engine", "direct", "fft" force one.
    smooth_method: Literal["auto", "engine", "direct", "fft"] = "auto"
    # POST /smooth and /classify answered by service.edge.fastpath ahead of FastAPI's request handling
    # (same code, same answers; docs/performance.md); false serves them through the FastAPI routes.
    hot_path: bool = True
    # GET /ui, the read-only console (behind the API token when one is set); false: not routed (404)
    ui: bool = True
    # Dynamic batching of /classify (service.pipeline.batching): concurrent requests to one model version
    # share one engine call. A full queue (max_queue_size rows waiting) answers 503 + Retry-After.
    batching: bool = True
    # 16, measured (docs/performance.md): at 64 connections, batches of up to 64 gave the same
    # throughput but a 3-4x worse p99 (a request that misses a big batch waits for the next one).
    max_batch_size: int = Field(16, ge=1)
    max_queue_delay_us: int = Field(0, ge=0)
    max_queue_size: int = Field(4096, ge=1)
    # The load-time proof's policy (contract.policy.Policy): what every version must satisfy whatever
    # its manifest declares. Stricter: refuse classifiers with free (or decreasing) features; looser:
    # serve scope "none" (unconstrained) classifiers.
    allow_free_features: bool = True
    allow_decreasing_features: bool = True
    allow_unconstrained: bool = False
    # Streaming smoothing (service.pipeline.streaming; WebSocket /smooth/stream and /smooth with a carried
    # state): open WebSocket streams per worker (beyond: close 4503 with a reason), seconds a
    # stream may wait for its client (a frame to arrive, or an answer to be read) before it is
    # closed, the largest WebSocket frame (refused by the protocol before it is read: close 1009).
    stream_max_open: int = Field(256, ge=1)
    stream_idle_timeout_s: float = Field(60.0, gt=0)
    stream_max_frame_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    # The most one stream (a WebSocket connection, a gRPC ModelStreamInfer call with all its
    # sequences) may hold of the worker's in-flight budget at once: its buffers and states and the
    # chunk it is answering (service.stream_budget). Beyond it the stream's chunk answers 503 (413
    # when a chunk alone is larger than the share), and the budget stays for everyone else.
    stream_max_budget_share: float = Field(0.25, gt=0, le=1)
    # The key that signs carried stream states (HTTP). Unset: a random one per process, shared by
    # the workers of one `monoserve serve` (service.server); replicas behind one load balancer need
    # the same value. States older than stream_state_max_age_s are refused (0: never).
    stream_secret: SecretStr | None = None
    stream_state_max_age_s: float = Field(3600.0, ge=0)

    @property
    def policy(self):
        from contract.policy import Policy

        return Policy(allow_free_features=self.allow_free_features,
                      allow_decreasing_features=self.allow_decreasing_features,
                      allow_unconstrained=self.allow_unconstrained)

    @property
    def inflight_budget(self) -> int:
        """Bytes that requests in flight may hold together, in all worker processes."""
        return self.inflight_budget_bytes or self.memory_limit_bytes // 2

    @property
    def inflight_budget_per_worker(self) -> int:
        """Each worker process has its own budget (no shared memory between them): an equal share."""
        return max(1, self.inflight_budget // self.workers)

    @property
    def threads_per_worker(self) -> int:
        """ONNX Runtime intra-op threads per worker: workers x threads never exceeds cpu_threads."""
        return max(1, self.cpu_threads // self.workers)

    def default_model(self, kind: str) -> str | None:
        return {"smoother": self.default_smoother, "classifier": self.default_classifier,
                "regressor": self.default_regressor}.get(kind)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
