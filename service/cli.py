"""`monoserve serve` and `monoserve verify`. Only stdlib at import time: the heavy modules
(uvicorn, onnxruntime, and torch for the TorchScript engine alone) are imported by the handlers."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path

log = logging.getLogger(__name__)

ENGINES = ("onnx", "torchscript")
DEVICES = ("auto", "cpu", "cuda")
# glibc malloc: keep large request buffers off mmap and do not trim the heap after each request.
# Measured in this project: uvicorn with bodies >= 128 KB is 2-5x faster and stable with these.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "67108864", "MALLOC_TRIM_THRESHOLD_": "268435456"}
BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def register(subparsers: argparse._SubParsersAction) -> None:
    serve = subparsers.add_parser(
        "serve", help="serve a model repository over HTTP (POST /smooth, /classify)",
        description="Prove every version of every model in the repository, then serve the newest valid ones. "
                    "Each flag overrides its MONOSERVE_* variable; other settings come from MONOSERVE_* environment "
                    "variables (docs/service.md).")
    serve.add_argument("--repo", type=Path, default=None, help="model repository (default: MONOSERVE_REPO or ./model_repository)")
    serve.add_argument("--host", default=None, help="address to bind (default: MONOSERVE_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="port (default: MONOSERVE_PORT or 8000)")
    serve.add_argument("--grpc-port", type=int, default=None,
                       help="Open Inference Protocol gRPC port, 0 for none (default: MONOSERVE_GRPC_PORT or 8001)")
    serve.add_argument("--device", choices=DEVICES, default=None, help="auto (CUDA when present), cpu or cuda (default: auto)")
    serve.add_argument("--engine", choices=ENGINES, default=None, help="onnx (ONNX Runtime, default) or torchscript")
    serve.add_argument("--workers", type=int, default=None, help="uvicorn worker processes (default: 1)")
    serve.add_argument("--access-log", action="store_true", default=None, help="log every request (costs throughput)")
    serve.set_defaults(func=serve_command)

    verify = subparsers.add_parser(
        "verify", help="run the service's load-time proof on one model version, offline",
        description="Checksums, constraint checks on the tensors inside the artifact, the monotonicity certificate "
                    "computed from the ONNX graph, the manifest's probe and a warm-up run. Exit 0 when every step "
                    "passes, 1 with the report when one fails, 2 on usage errors.")
    verify.add_argument("version_dir", type=Path, metavar="DIR/NAME/VERSION", help="a model version directory")
    verify.add_argument("--engine", choices=ENGINES, default="onnx", help="engine whose artifact is checked and run (default: onnx)")
    verify.add_argument("--device", choices=DEVICES, default="cpu", help="device for the probe and warm-up (default: cpu)")
    verify.add_argument("--json", action="store_true", help="print the report as JSON")
    verify.add_argument("--trusted-key", action="append", type=Path, default=None, metavar="PEM",
                        help="check VERSION/model.sig against this public key or certificate (repeatable; "
                             "default: MONOSERVE_TRUSTED_KEYS); a changed, added or removed file, the card "
                             "included, fails the signature step")
    verify.set_defaults(func=verify_command)


def _usage_error(message: str) -> int:
    print(f"monoserve: error: {message}", file=sys.stderr)
    return 2


def flag_overrides(args: argparse.Namespace) -> dict[str, object]:
    """The settings given as command-line flags (they win over MONOSERVE_* variables)."""
    given = {"repo": args.repo, "host": args.host, "port": args.port, "device": args.device, "engine": args.engine,
             "workers": args.workers, "access_log": getattr(args, "access_log", None),
             "grpc_port": getattr(args, "grpc_port", None)}
    return {name: value for name, value in given.items() if value is not None}


def server_environment(base: Mapping[str, str], overrides: Mapping[str, object], threads_per_worker: int,
                       log_level: str | None = None) -> dict[str, str]:
    """The serving process's environment, built explicitly from `base` (never written back to it):
    the flags as MONOSERVE_* variables (worker processes read the same settings), the log level
    unless MONOSERVE_LOG_LEVEL is set, numpy's BLAS threads on the same budget as ONNX Runtime
    (threads per worker x workers <= usable CPUs), and the malloc thresholds. Explicit variables
    in `base` win over the last two."""
    env = dict(base)
    for name, value in overrides.items():
        env[f"MONOSERVE_{name.upper()}"] = str(value).lower() if isinstance(value, bool) else str(value)
    if log_level:
        env.setdefault("MONOSERVE_LOG_LEVEL", log_level)
    for variable in BLAS_THREAD_VARIABLES:
        env.setdefault(variable, str(threads_per_worker))
    for variable, value in MALLOC_ENV.items():
        env.setdefault(variable, value)
    return env


def launch(argv: list[str], env: dict[str, str]) -> int:
    """Replace this process with the server (same pid: signals and supervisors reach it directly)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(argv[0], argv, env)
    return 0  # pragma: no cover - execve does not return


def serve_command(args: argparse.Namespace) -> int:
    if args.workers is not None and args.workers < 1:
        return _usage_error(f"--workers must be >= 1, got {args.workers}")
    if args.port is not None and not 0 < args.port < 65536:
        return _usage_error(f"--port must be in 1..65535, got {args.port}")
    grpc_port = getattr(args, "grpc_port", None)
    if grpc_port is not None and not 0 <= grpc_port < 65536:
        return _usage_error(f"--grpc-port must be in 0..65535 (0: no gRPC), got {grpc_port}")
    overrides = flag_overrides(args)

    from pydantic import ValidationError

    from service.settings import Settings

    try:
        settings = Settings(**overrides)  # the environment, with the flags on top (not written anywhere)
    except ValidationError as exc:
        return _usage_error(f"invalid MONOSERVE_* setting: {exc}")
    if not settings.repo.is_dir():
        return _usage_error(f"model repository {str(settings.repo)!r} does not exist (run `make models`, or pass --repo)")

    from service.compute.engines import DeviceUnavailableError, resolve_device

    try:
        device = resolve_device(settings.engine, settings.device)
    except DeviceUnavailableError as exc:
        return _usage_error(str(exc))
    env = server_environment(os.environ, overrides, settings.threads_per_worker, getattr(args, "log_level", None))
    log.info("serving %s on http://%s:%d%s (engine %s, device %s, %d worker(s), %d CPU thread(s))",
             settings.repo, settings.host, settings.port,
             f" and gRPC port {settings.grpc_port}" if settings.grpc_port else "", settings.engine, device, settings.workers, settings.cpu_threads)
    return launch([sys.executable, "-m", "service.server"], env)


def verify_command(args: argparse.Namespace) -> int:
    version_dir: Path = args.version_dir
    if not version_dir.is_dir():
        return _usage_error(f"{str(version_dir)!r} is not a directory (expected DIR/NAME/VERSION)")

    from service.compute.engines import DeviceUnavailableError, resolve_device
    from service.repository.prover import prove_version
    from service.settings import Settings, available_cpus

    try:
        device = resolve_device(args.engine, args.device)
    except DeviceUnavailableError as exc:
        return _usage_error(str(exc))
    from pydantic import ValidationError

    from contract.signing import TrustedKeys

    try:
        settings = Settings()
        policy = settings.policy  # the same MONOSERVE_ALLOW_* policy the service applies
    except ValidationError as exc:
        return _usage_error(f"invalid MONOSERVE_* setting: {exc}")
    try:
        trusted = (TrustedKeys.from_paths(args.trusted_key) if args.trusted_key
                   else TrustedKeys.from_setting(settings.trusted_keys))
    except ValueError as exc:
        return _usage_error(str(exc))
    report, _ = prove_version(version_dir, engine=args.engine, device=device, threads=available_cpus(), policy=policy,
                              trusted_keys=trusted)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, default=str))
    else:
        print(report.render())
    return 0 if report.ok else 1
