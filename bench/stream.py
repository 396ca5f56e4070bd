"""Streaming smoothing benchmark: WebSocket /smooth/stream frames/s and per-frame latency, and
streamed samples/s against one-shot /smooth on the same data.

    .venv/bin/python bench/stream.py              # about 2 minutes
    .venv/bin/python bench/stream.py --duration 2 --quick

What it does: builds the benchmark repository (bench/prepare.py: the K=31 smoother), starts
`monoserve serve` (one worker, one inference thread) pinned with taskset to SERVER_CPUS, and from
this process, pinned to the other CPU, drives N concurrent WebSocket streams (the `websockets`
asyncio client), each sending an 8-channel frame and waiting for its answer before the next
(one frame in flight per stream). Per run: frames/s (wall clock), the server's CPU seconds from
/proc (so frames per server CPU-second: what one core sustains, whatever the load generator costs),
and p50/p99 of the per-frame round trip seen by the client. Then one-shot POST /smooth (.npy) of
the same 8 x L signal, samples/s against the streamed samples/s. Writes bench/results/stream.json
and stream.md. On a shared machine numbers move: the report says what ran beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "bench"))
RESULTS = REPO_ROOT / "bench" / "results"

from run import cpu_seconds, free_port, wait_ready  # noqa: E402 - the harness's own helpers
SERVER_CPUS = "0"
CLIENT_CPUS = {1}
CHANNELS = 8


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def start_server(repo: Path, port: int) -> subprocess.Popen:
    env = {**os.environ, "MONOSERVE_CPU_THREADS": "1", "MONOSERVE_STREAM_MAX_OPEN": "1024",
           "MONOSERVE_STREAM_IDLE_TIMEOUT_S": "120", "MONOSERVE_LOG_LEVEL": "WARNING", "MONOSERVE_POLL_INTERVAL_S": "0"}
    command = ["taskset", "-c", SERVER_CPUS, sys.executable, "-m", "monoserve.cli", "serve", "--repo", str(repo),
               "--host", "127.0.0.1", "--port", str(port), "--grpc-port", "0"]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def serving_pid(process: subprocess.Popen) -> int:
    return process.pid  # `monoserve serve` execs the server (one worker: it serves itself)


async def run_streams(url: str, streams: int, samples: int, binary: bool, duration: float) -> dict:
    from websockets.asyncio.client import connect

    rng = np.random.default_rng(0)
    frame_array = rng.standard_normal((CHANNELS, samples)).astype(np.float32)
    frame = npy(frame_array) if binary else json.dumps({"signal": frame_array.tolist()})
    latencies: list[float] = []
    count = 0
    stop_at = 0.0

    async def one(ws) -> None:
        nonlocal count
        while time.perf_counter() < stop_at:
            sent = time.perf_counter()
            await ws.send(frame)
            await ws.recv()
            latencies.append(time.perf_counter() - sent)
            count += 1

    connections = [await connect(url, max_size=None, compression=None) for _ in range(streams)]
    try:
        warm_until = time.perf_counter() + 0.5  # warm-up: the first frames (and the tail copies) are not counted
        stop_at = warm_until
        await asyncio.gather(*(one(ws) for ws in connections))
        latencies.clear()
        count = 0
        started = time.perf_counter()
        stop_at = started + duration
        await asyncio.gather(*(one(ws) for ws in connections))
        elapsed = time.perf_counter() - started
    finally:
        for ws in connections:
            await ws.close()
    lat = np.asarray(latencies) * 1e3
    return {"frames": count, "seconds": elapsed, "frames_per_s": count / elapsed,
            "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99)),
            "samples_per_s": count * samples / elapsed}


def one_shot(base: str, length: int, repeats: int) -> dict:
    import httpx

    signal_array = np.random.default_rng(1).standard_normal((CHANNELS, length)).astype(np.float32)
    body = npy(signal_array)
    headers = {"content-type": "application/x-npy", "accept": "application/x-npy"}
    with httpx.Client(timeout=120) as client:
        client.post(f"{base}/smooth?model=smoother&mode=causal", content=body, headers=headers).raise_for_status()
        started = time.perf_counter()
        for _ in range(repeats):
            client.post(f"{base}/smooth?model=smoother&mode=causal", content=body, headers=headers).raise_for_status()
        elapsed = time.perf_counter() - started
    return {"length": length, "requests": repeats, "seconds": elapsed, "samples_per_s": repeats * length / elapsed}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per run (after a 0.5 s warm-up)")
    parser.add_argument("--quick", action="store_true", help="8 x 256 only")
    parser.add_argument("--output", default=str(RESULTS / "stream"))
    args = parser.parse_args()
    from prepare import prepare

    repo = prepare()["repo"]
    if repo is None:
        raise SystemExit("no benchmark repository (export unavailable)")
    try:
        os.sched_setaffinity(0, CLIENT_CPUS)
    except OSError:
        pass
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = start_server(repo, port)
    runs = []
    try:
        wait_ready(process, f"{base}/readyz")
        pid = serving_pid(process)
        sizes = [256] if args.quick else [64, 256, 1024]
        for binary in (True, False):
            for samples in sizes:
                for streams in (1, 64):
                    url = f"ws://127.0.0.1:{port}/smooth/stream?model=smoother&mode=causal"
                    before = cpu_seconds([pid])
                    result = asyncio.run(run_streams(url, streams, samples, binary, args.duration))
                    server_cpu = cpu_seconds([pid]) - before
                    result.update(format="npy" if binary else "json", channels=CHANNELS, samples=samples,
                                  streams=streams, server_cpu_s=server_cpu,
                                  frames_per_server_cpu_s=result["frames"] / server_cpu if server_cpu else None)
                    runs.append(result)
                    print(f"{result['format']:4} {CHANNELS}x{samples:<5} streams={streams:<3} "
                          f"{result['frames_per_s']:8.0f} frames/s  p50 {result['p50_ms']:6.2f} ms  "
                          f"p99 {result['p99_ms']:6.2f} ms  server CPU {server_cpu / (result['seconds'] + 0.5):4.0%}  "
                          f"{result['frames_per_server_cpu_s'] or 0:8.0f} frames per server CPU-s", flush=True)
        whole = one_shot(base, 1024 * 256, 20)
        print(f"one-shot /smooth .npy {CHANNELS}x{whole['length']}: {whole['samples_per_s']:.3g} samples/s per channel")
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
    load = os.getloadavg()
    report = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "loadavg_after": load,
                          "note": "2 CPUs shared with other agents' builds and tests while this ran"},
              "server_cpus": SERVER_CPUS, "client_cpus": sorted(CLIENT_CPUS), "kernel_size": 31, "mode": "causal",
              "runs": runs, "one_shot": whole}
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.with_suffix(".json").write_text(json.dumps(report, indent=2))
    lines = ["| format | frame | streams | frames/s | p50 ms | p99 ms | frames per server CPU-s | samples/s (per channel) |",
             "|---|---|---|---|---|---|---|---|"]
    for run in runs:
        lines.append(f"| {run['format']} | {CHANNELS} x {run['samples']} | {run['streams']} | {run['frames_per_s']:.0f} | "
                     f"{run['p50_ms']:.2f} | {run['p99_ms']:.2f} | {run['frames_per_server_cpu_s'] or 0:.0f} | "
                     f"{run['samples_per_s']:.3g} |")
    lines.append(f"\nOne-shot POST /smooth (.npy, {CHANNELS} x {whole['length']}, one connection): "
                 f"{whole['samples_per_s']:.3g} samples/s per channel. Load average after the run: "
                 f"{load[0]:.1f} (2 CPUs shared with other agents).")
    output.with_suffix(".md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
