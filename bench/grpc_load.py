#!/usr/bin/env python3
"""A small gRPC load generator (the gRPC counterpart of wrk): one prebuilt ModelInferRequest sent by
N concurrent in-flight calls over one grpc.aio channel for a fixed duration. Run in its own process,
pinned to the client CPU by the caller (bench/grpc_side.py runs it under `taskset -c 1`).

    python bench/grpc_load.py --target 127.0.0.1:8001 --body-file req.bin --concurrency 64 --duration 5

Prints two lines on stdout: `MEASURING` when the warm-up is over and timing starts (the caller reads
the server's CPU time then), and one JSON line with the result when timing ends:
{"requests", "errors", "elapsed_s", "req_per_s", "p50_ms", "p99_ms"} (latencies of OK calls only;
errors by gRPC status code name).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import time
from pathlib import Path

CHANNEL_OPTIONS = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
RESULT_KEYS = ("requests", "errors", "elapsed_s", "req_per_s", "p50_ms", "p99_ms")
MEASURING = "MEASURING"


def percentile(sorted_values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by the nearest-rank method; NaN for no values."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile q must be within 0..100, got {q}")
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def summarize(latencies_ms: list[float], errors: dict[str, int], elapsed_s: float) -> dict:
    """The result line: OK requests per second over the timed window and their p50/p99 latency."""
    if elapsed_s <= 0:
        raise ValueError(f"elapsed_s must be positive, got {elapsed_s}")
    values = sorted(latencies_ms)
    return {"requests": len(values), "errors": dict(errors), "elapsed_s": elapsed_s,
            "req_per_s": len(values) / elapsed_s, "p50_ms": percentile(values, 50), "p99_ms": percentile(values, 99)}


def parse_result(stdout: str) -> dict:
    """The result from the generator's stdout (its last non-empty line); ValueError naming what is missing."""
    lines = [line for line in stdout.splitlines() if line.strip()]
    if not lines:
        raise ValueError("load generator printed nothing")
    try:
        result = json.loads(lines[-1])
    except json.JSONDecodeError as exc:
        raise ValueError(f"load generator's last line is not JSON: {lines[-1][:200]!r}") from exc
    missing = [key for key in RESULT_KEYS if key not in result]
    if missing:
        raise ValueError(f"load generator's result lacks {', '.join(missing)}")
    return result


async def drive(target: str, body: bytes, concurrency: int, duration: float, warmup: float) -> dict:
    import grpc
    from grpc_bench import METHOD  # bench/grpc_bench.py's (this script's folder is on sys.path)

    async with grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) as channel:
        infer = channel.unary_unary(METHOD)  # bytes in, bytes out: no (de)serialization in the loop
        latencies: list[float] = []
        errors: dict[str, int] = {}

        async def worker(until: float, record: bool) -> None:
            while time.perf_counter() < until:
                start = time.perf_counter()
                try:
                    await infer(body, timeout=120)
                except grpc.aio.AioRpcError as exc:
                    if record:
                        errors[exc.code().name] = errors.get(exc.code().name, 0) + 1
                    continue
                if record:
                    latencies.append((time.perf_counter() - start) * 1e3)

        await infer(body, timeout=120)  # connected, and the server answers
        until = time.perf_counter() + warmup
        await asyncio.gather(*(worker(until, False) for _ in range(concurrency)))
        print(MEASURING, flush=True)
        start = time.perf_counter()
        await asyncio.gather(*(worker(start + duration, True) for _ in range(concurrency)))
        return summarize(latencies, errors, time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True, help="host:port of the OIP gRPC server")
    parser.add_argument("--body-file", type=Path, required=True, help="a serialized ModelInferRequest")
    parser.add_argument("--concurrency", type=int, default=1, help="calls in flight at once")
    parser.add_argument("--duration", type=float, default=5.0, help="timed seconds")
    parser.add_argument("--warmup", type=float, default=1.0, help="untimed seconds first")
    args = parser.parse_args(argv)
    if args.concurrency < 1 or args.duration <= 0:
        parser.error("--concurrency must be >= 1 and --duration > 0")
    result = asyncio.run(drive(args.target, args.body_file.read_bytes(), args.concurrency, args.duration, args.warmup))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
