#!/usr/bin/env python3
"""The gRPC framework's own cost: a ModelInfer server that answers a constant, timed with the same
load generator as the real servers (bench/grpc_load.py), so a server's calls/s can be read against
what grpcio itself allows (docs/performance.md, issue 30 round two).

    .venv/bin/python bench/grpc_floor.py [--modes aio,aio-uvloop,aio-throughput,sync,sync-hop] [--duration 4]

Modes: grpc.aio on asyncio's loop, on uvloop, on uvloop with grpc.optimization_target=throughput;
grpcio's synchronous server with 4 threads; the same with each call hopping to an asyncio loop in
another thread and back (what a synchronous server would cost the service's asyncio pipeline).
Each server is pinned to CPU 0 and the load generator to CPU 1, like bench/run.py; 1 and 64 calls
in flight.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import threading
import time
from concurrent import futures
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
ANSWER = b"\x0a\x0aclassifier"  # any bytes: the client does not parse the answer
SERVICE = "inference.GRPCInferenceService"
MODES = ("aio", "aio-uvloop", "aio-throughput", "sync", "sync-hop")


def serve(mode: str, port: int) -> None:
    import grpc

    address = f"127.0.0.1:{port}"
    if mode.startswith("sync"):
        handler = lambda request, context: ANSWER  # noqa: E731
        if mode == "sync-hop":
            import uvloop

            loop = uvloop.new_event_loop()
            threading.Thread(target=loop.run_forever, daemon=True).start()

            async def answer(request: bytes) -> bytes:
                await asyncio.sleep(0)
                return ANSWER

            handler = lambda request, context: asyncio.run_coroutine_threadsafe(answer(request), loop).result()  # noqa: E731
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            SERVICE, {"ModelInfer": grpc.unary_unary_rpc_method_handler(handler)}),))
        server.add_insecure_port(address)
        server.start()
        server.wait_for_termination()
        return

    async def infer(request: bytes, context) -> bytes:
        return ANSWER

    async def main() -> None:
        options = [("grpc.optimization_target", "throughput")] if mode == "aio-throughput" else []
        server = grpc.aio.server(options=options)
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            SERVICE, {"ModelInfer": grpc.unary_unary_rpc_method_handler(infer)}),))
        server.add_insecure_port(address)
        await server.start()
        await server.wait_for_termination()

    if mode == "aio":
        asyncio.run(main())
    else:
        import uvloop

        uvloop.run(main())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--serve", help=argparse.SUPPRESS)  # internal: MODE:PORT, run one server
    args = parser.parse_args(argv)
    if args.serve:
        mode, port = args.serve.split(":")
        serve(mode, int(port))
        return 0
    sys.path.insert(0, str(BENCH_DIR))
    from grpc_bench import raw_infer_request
    from run import SERVER_CPUS, WRK_CPUS, free_port

    import numpy as np

    body = BENCH_DIR / "work" / "grpc_floor_body.bin"
    body.parent.mkdir(parents=True, exist_ok=True)
    body.write_bytes(raw_infer_request("classifier", "features", np.zeros((1, 6), np.float32)))
    results = {}
    for mode in args.modes.split(","):
        if mode not in MODES:
            parser.error(f"unknown mode {mode!r}; expected some of {', '.join(MODES)}")
        port = free_port()
        server = subprocess.Popen(["taskset", "-c", SERVER_CPUS, sys.executable, __file__, "--serve", f"{mode}:{port}"])
        try:
            time.sleep(2.0)
            for concurrency in (1, 64):
                out = subprocess.run(["taskset", "-c", WRK_CPUS, sys.executable, str(BENCH_DIR / "grpc_load.py"),
                                      "--target", f"127.0.0.1:{port}", "--body-file", str(body), "--concurrency",
                                      str(concurrency), "--duration", str(args.duration)],
                                     capture_output=True, text=True, check=True).stdout
                result = json.loads(out.strip().splitlines()[-1])
                results[f"{mode} c={concurrency}"] = result["req_per_s"]
                print(f"{mode:15s} c={concurrency:<3d} {result['req_per_s']:8.0f} calls/s", flush=True)
        finally:
            server.kill()
            server.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
