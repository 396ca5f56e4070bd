"""Exactly N `ModelInfer` calls of one prebuilt message, C in flight, over one grpc.aio channel, each
required to succeed: a live gRPC server's instructions per call are its count over N
(bench/callgrind/count_grpc.sh). Retries UNAVAILABLE for up to `--wait` seconds before the first
call (a server whose gRPC port opens after its HTTP readiness).

    python bench/callgrind/grpc_client.py TARGET BODY_FILE N C [--wait SECONDS]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

METHOD = "/inference.GRPCInferenceService/ModelInfer"


async def drive(target: str, body: bytes, count: int, concurrency: int, wait_s: float) -> None:
    import grpc

    async with grpc.aio.insecure_channel(target) as channel:
        infer = channel.unary_unary(METHOD)  # bytes in, bytes out: the client parses nothing
        deadline = time.monotonic() + wait_s
        while True:  # the first call, once the port answers (not counted: the caller warms up first)
            try:
                await infer(body, timeout=60)
                break
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)
        left = count - 1

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                await infer(body, timeout=60)

        await asyncio.gather(*(worker() for _ in range(concurrency)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", help="host:port of the gRPC server")
    parser.add_argument("body_file", type=Path, help="a serialized ModelInferRequest")
    parser.add_argument("count", type=int, help="calls in all (the first included)")
    parser.add_argument("concurrency", type=int, help="calls in flight at once")
    parser.add_argument("--wait", type=float, default=0.0, help="seconds to retry UNAVAILABLE before the first call")
    args = parser.parse_args()
    if args.count < 1 or args.concurrency < 1:
        parser.error("count and concurrency must be >= 1")
    asyncio.run(drive(args.target, args.body_file.read_bytes(), args.count, args.concurrency, args.wait))


if __name__ == "__main__":
    main()
