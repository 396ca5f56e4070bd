"""Stream fairness benchmark: other clients' one-shot /smooth latency while one WebSocket stream
floods the worker with tiny frames, against the same requests on an idle worker (issue 24).

    .venv/bin/python bench/stream_fairness.py                    # about 1 minute
    .venv/bin/python bench/stream_fairness.py --pythonpath /path/to/other/checkout   # the same on other code

What it does: builds the benchmark repository (bench/prepare.py), starts `monoserve serve` (one
worker, one inference thread) pinned with taskset to CPU 0; from CPU 1, a client sends REQUESTS
sequential POST /smooth (JSON, 1 x 1 x 256) and records each round trip: first on the idle
worker, then while a second process (the flooder, also on CPU 1) keeps one WebSocket stream busy
with tiny JSON frames ({"signal": [[x]]}, causal mode) written as fast as the socket takes them, a
reader task draining the answers. The report gives p50/p99/max of /smooth both ways and the frames
the flood had answered. Writes bench/results/stream_fairness.json and .md.

On the 2-core shared machine the numbers move with what runs beside it (the report records the
load average): compare the two phases of one run, not runs of different days.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "bench"))
RESULTS = REPO_ROOT / "bench" / "results"

from run import free_port, wait_ready  # noqa: E402 - the harness's own helpers

SERVER_CPUS = "0"
CLIENT_CPUS = "1"
WINDOW = 2000  # frames the flooder may have sent and not yet read back


def start_server(repo: Path, port: int, pythonpath: str | None) -> subprocess.Popen:
    env = {**os.environ, "MONOSERVE_CPU_THREADS": "1", "MONOSERVE_STREAM_IDLE_TIMEOUT_S": "120",
           "MONOSERVE_LOG_LEVEL": "WARNING", "MONOSERVE_POLL_INTERVAL_S": "0"}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    command = ["taskset", "-c", SERVER_CPUS, sys.executable, "-m", "monoserve.cli", "serve", "--repo", str(repo),
               "--host", "127.0.0.1", "--port", str(port), "--grpc-port", "0", "--workers", "1"]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            cwd=pythonpath or None)


async def flood(url: str, seconds: float) -> None:
    """One WebSocket stream: tiny frames as fast as the socket takes them, answers drained."""
    import websockets

    async with websockets.connect(url, max_queue=None, open_timeout=30) as ws:
        sent = received = 0
        window = asyncio.Semaphore(WINDOW)
        stop = time.monotonic() + seconds

        async def reader() -> None:
            nonlocal received
            async for _ in ws:
                received += 1
                window.release()

        reading = asyncio.create_task(reader())
        started = last_report = time.monotonic()
        while time.monotonic() < stop:
            await window.acquire()
            await ws.send('{"signal": [[%d.0]]}' % (sent % 7))
            sent += 1
            if time.monotonic() - last_report > 1.0:  # progress, for the report (the flooder is terminated)
                last_report = time.monotonic()
                print(json.dumps({"seconds": round(last_report - started, 1), "sent": sent, "answered": received,
                                  "answered_per_s": round(received / (last_report - started))}), flush=True)
        await ws.send('{"end": true}')
        try:
            await asyncio.wait_for(reading, 30)
        except (asyncio.TimeoutError, Exception):  # noqa: BLE001 - the server closes after the end frame
            pass
        print(json.dumps({"sent": sent, "answered": received}), flush=True)


def measure(base: str, requests: int) -> list[float]:
    import httpx

    body = {"model": "smoother", "signal": [[list(np.linspace(0, 1, 256).round(4))]]}
    times = []
    with httpx.Client(timeout=60) as client:
        for _ in range(20):  # warm the connection and the model
            client.post(f"{base}/smooth", json=body)
        for _ in range(requests):
            start = time.perf_counter()
            answer = client.post(f"{base}/smooth", json=body)
            times.append(time.perf_counter() - start)
            if answer.status_code != 200:
                raise RuntimeError(f"/smooth answered {answer.status_code}: {answer.text[:200]}")
    return times


def summary(times: list[float]) -> dict:
    ms = np.asarray(times) * 1e3
    return {"requests": len(times), "p50_ms": round(float(np.percentile(ms, 50)), 3),
            "p99_ms": round(float(np.percentile(ms, 99)), 3), "max_ms": round(float(ms.max()), 3)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--pythonpath", default=None, help="run the server from this checkout (to compare code)")
    parser.add_argument("--flood", default=None, help=argparse.SUPPRESS)  # the flooder process: its URL
    parser.add_argument("--seconds", type=float, default=60.0, help=argparse.SUPPRESS)
    parser.add_argument("--label", default="this checkout")
    args = parser.parse_args()
    if args.flood:
        asyncio.run(flood(args.flood, args.seconds))
        return 0
    os.sched_setaffinity(0, {int(CLIENT_CPUS)})
    from prepare import prepare

    repo = prepare()["repo"]
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = start_server(repo, port, args.pythonpath)
    try:
        wait_ready(server, f"{base}/readyz")
        idle = summary(measure(base, args.requests))
        flooder = subprocess.Popen(["taskset", "-c", CLIENT_CPUS, sys.executable, __file__, "--flood",
                                    f"ws://127.0.0.1:{port}/smooth/stream?model=smoother&mode=causal", "--seconds", "600"],
                                   stdout=subprocess.PIPE, text=True)
        time.sleep(2.0)  # the flood is under way
        flooded = summary(measure(base, args.requests))
        flooder.terminate()
        out, _ = flooder.communicate(timeout=60)
    finally:
        server.terminate()
        server.wait(timeout=30)
    progress = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    report = {"label": args.label, "idle": idle, "flooded": flooded, "flood": progress[-1] if progress else None,
              "ratio_p99": round(flooded["p99_ms"] / idle["p99_ms"], 2),
              "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "loadavg": os.getloadavg()}}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "stream_fairness.json").write_text(json.dumps(report, indent=2))
    lines = [f"# /smooth latency beside a flooding WebSocket stream ({args.label})", "",
             "| phase | requests | p50 ms | p99 ms | max ms |", "| --- | --- | --- | --- | --- |"]
    for phase in ("idle", "flooded"):
        row = report[phase]
        lines.append(f"| {phase} | {row['requests']} | {row['p50_ms']} | {row['p99_ms']} | {row['max_ms']} |")
    lines += ["", f"p99 flooded / idle: {report['ratio_p99']}; the flood: {report['flood']}; load average "
              f"{tuple(round(x, 1) for x in report['machine']['loadavg'])}"]
    (RESULTS / "stream_fairness.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
