"""`monoserve serve` and `monoserve verify`. Only stdlib at import time: the heavy modules
(uvicorn, onnxruntime, and torch for the TorchScript engine alone) are imported by the handlers."""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import logging
import os
import sys
from pathlib import Path

log = logging.getLogger(__name__)

ENGINES = ("onnx", "torchscript")
DEVICES = ("auto", "cpu", "cuda")
# glibc malloc: keep large request buffers off mmap and do not trim the heap after each request.
# Measured in this project: uvicorn with bodies >= 128 KB is 2-5x faster and stable with these.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "67108864", "MALLOC_TRIM_THRESHOLD_": "268435456"}
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameter numbers (malloc.h)


def register(subparsers: argparse._SubParsersAction) -> None:
    serve = subparsers.add_parser(
        "serve", help="serve a model repository over HTTP (POST /smooth, /classify)",
        description="Prove every version of every model in the repository, then serve the newest valid ones. "
                    "Other settings come from MONOSERVE_* environment variables (docs/service.md).")
    serve.add_argument("--repo", type=Path, default=None, help="model repository (default: MONOSERVE_REPO or ./model_repository)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    serve.add_argument("--device", choices=DEVICES, default=None, help="auto (CUDA when present), cpu or cuda (default: auto)")
    serve.add_argument("--engine", choices=ENGINES, default=None, help="onnx (ONNX Runtime, default) or torchscript")
    serve.add_argument("--workers", type=int, default=None, help="uvicorn worker processes (default: 1)")
    serve.add_argument("--access-log", action="store_true", help="log every request (costs throughput)")
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
    verify.set_defaults(func=verify_command)


def _usage_error(message: str) -> int:
    print(f"monoserve: error: {message}", file=sys.stderr)
    return 2


def apply_malloc_tuning() -> None:
    """Set the malloc thresholds for this process (mallopt) and its worker processes (environment)."""
    for key, value in MALLOC_ENV.items():
        os.environ.setdefault(key, value)
    path = ctypes.util.find_library("c")
    if not path or not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(path)
        libc.mallopt(_M_MMAP_THRESHOLD, int(os.environ["MALLOC_MMAP_THRESHOLD_"]))
        libc.mallopt(_M_TRIM_THRESHOLD, int(os.environ["MALLOC_TRIM_THRESHOLD_"]))
    except (OSError, AttributeError, ValueError) as exc:  # not glibc: nothing to tune
        log.debug("mallopt not applied: %s", exc)


def serve_command(args: argparse.Namespace) -> int:
    overrides = {"MONOSERVE_REPO": args.repo, "MONOSERVE_DEVICE": args.device, "MONOSERVE_ENGINE": args.engine,
                 "MONOSERVE_WORKERS": args.workers}
    if getattr(args, "log_level", None):  # `monoserve --log-level X serve`; an explicit MONOSERVE_LOG_LEVEL wins
        os.environ.setdefault("MONOSERVE_LOG_LEVEL", args.log_level)
    if args.workers is not None and args.workers < 1:
        return _usage_error(f"--workers must be >= 1, got {args.workers}")
    if not 0 < args.port < 65536:
        return _usage_error(f"--port must be in 1..65535, got {args.port}")
    for key, value in overrides.items():
        if value is not None:
            os.environ[key] = str(value)  # worker processes read the same settings from the environment

    from pydantic import ValidationError

    from service.settings import Settings, get_settings

    get_settings.cache_clear()
    try:
        settings: Settings = get_settings()
    except ValidationError as exc:
        return _usage_error(f"invalid MONOSERVE_* setting: {exc}")
    if not settings.repo.is_dir():
        return _usage_error(f"model repository {str(settings.repo)!r} does not exist (run `make models`, or pass --repo)")
    # numpy's BLAS (the smoother's direct method) follows the same budget as ONNX Runtime: threads per
    # worker x workers never exceeds the CPUs this process may use. Set before numpy is imported here
    # and inherited by worker processes; an explicit setting wins.
    for variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(variable, str(settings.threads_per_worker))

    from service.engines import DeviceUnavailableError, resolve_device

    try:
        device = resolve_device(settings.engine, settings.device)
    except DeviceUnavailableError as exc:
        return _usage_error(str(exc))
    apply_malloc_tuning()

    import uvicorn

    log.info("serving %s on http://%s:%d (engine %s, device %s, %d worker(s), %d CPU thread(s))",
             settings.repo, args.host, args.port, settings.engine, device, settings.workers, settings.cpu_threads)
    uvicorn.run("service.app:create_app", factory=True, host=args.host, port=args.port, workers=settings.workers,
                log_level=settings.log_level.lower(), access_log=args.access_log, proxy_headers=False,
                server_header=False, date_header=False)
    return 0


def verify_command(args: argparse.Namespace) -> int:
    version_dir: Path = args.version_dir
    if not version_dir.is_dir():
        return _usage_error(f"{str(version_dir)!r} is not a directory (expected DIR/NAME/VERSION)")

    from service.engines import DeviceUnavailableError, resolve_device
    from service.prover import prove_version
    from service.settings import Settings, available_cpus

    try:
        device = resolve_device(args.engine, args.device)
    except DeviceUnavailableError as exc:
        return _usage_error(str(exc))
    from pydantic import ValidationError

    try:
        policy = Settings().policy  # the same MONOSERVE_ALLOW_* policy the service applies
    except ValidationError as exc:
        return _usage_error(f"invalid MONOSERVE_* setting: {exc}")
    report, _ = prove_version(version_dir, engine=args.engine, device=device, threads=available_cpus(), policy=policy)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, default=str))
    else:
        print(report.render())
    return 0 if report.ok else 1
