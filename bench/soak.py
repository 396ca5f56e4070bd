"""Soak and hostile-client runs against a real `monoserve serve` with its default settings.

    make soak                              # 64 connections for 60 s of mixed requests, then the hostile set
    .venv/bin/python bench/soak.py --help  # --seconds, --connections, --skip-hostile, --skip-soak

Soak: `--connections` clients for `--seconds` send a mix of valid (small and medium /smooth in JSON
and .npy, 1-sample /classify), invalid (malformed JSON, strings in arrays, unknown query
parameters, wrong content type, out-of-range versions) and oversized (a declared body over the
limit, a .npy header of 2**64 elements) requests. It prints the counts by status (a 5xx other
than 503 is a failure), p50/p99 latency, and the server's peak RSS (VmHWM of the serving process).

Hostile (issue 10's list): 16 concurrent 120 MB .npy uploads; a 128 MiB JSON body of zeros; 22M
rows of one sample; /classify with 5.5M rows; versions beyond 64 bits in the body and the query;
a .npy header whose count wraps int64; a client dribbling its body a byte at a time (cut off by
the body timeout, 30 s by default); then a normal request's latency, and RSS after the burst.
Results: printed, and written to bench/results/soak.json.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

from prepare import DEFAULT_WORK, prepare  # noqa: E402
from run import free_port, wait_ready  # noqa: E402

log = logging.getLogger("soak")
RESULTS = BENCH_DIR / "results" / "soak.json"


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def npy_header(shape: tuple[int, ...]) -> bytes:
    """A .npy header claiming `shape`, with no payload."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": shape})
    return header.getvalue()


# -- the server ---------------------------------------------------------------------------------
def start_server(repo: Path, port: int, log_path: Path) -> subprocess.Popen:
    """`monoserve serve` with default settings (only the port, repository and default models named)."""
    env = {**os.environ, "MONOSERVE_DEFAULT_SMOOTHER": "smoother", "MONOSERVE_DEFAULT_CLASSIFIER": "classifier"}
    argv = [sys.executable, "-m", "monoserve.cli", "serve", "--repo", str(repo), "--port", str(port),
            "--grpc-port", "0"]  # HTTP is soaked; a fixed gRPC port could clash with other servers on the machine
    process = subprocess.Popen(argv, stdout=log_path.open("wb"), stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        wait_ready(process, f"http://127.0.0.1:{port}/readyz")
    except RuntimeError as exc:
        raise RuntimeError(f"{exc}: {log_path.read_text()[-2000:]}") from None
    return process


def status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


class RssSampler:
    """Peak (VmHWM, exact) and current RSS of the serving process."""

    def __init__(self, pid: int):
        self.pid = pid

    def current_mb(self) -> float:
        return status_kb(self.pid, "VmRSS") / 1024

    def peak_mb(self) -> float:
        return status_kb(self.pid, "VmHWM") / 1024


# -- soak ---------------------------------------------------------------------------------------
def soak_requests() -> list[tuple[str, str, bytes, dict[str, str]]]:
    """(label, path, body, headers): valid, invalid and oversized, sent round-robin."""
    rng = np.random.default_rng(0)
    small = rng.standard_normal(256).round(3).tolist()
    medium = rng.standard_normal((8, 4096)).astype(np.float32)
    json_h, npy_h = {"content-type": "application/json"}, {"content-type": "application/x-npy"}
    instance = [[300.0, 0.2, 0.8, 0.1, 0.0, 0.0]]
    return [
        ("valid", "/smooth", json.dumps({"signal": small}).encode(), json_h),
        ("valid", "/smooth?mode=causal", npy_bytes(medium), npy_h),
        ("valid", "/classify", json.dumps({"instances": instance}).encode(), json_h),
        ("valid", "/classify", json.dumps({"instances": instance * 16}).encode(), json_h),
        ("invalid", "/smooth", b'{"signal": [1, 2', json_h),
        ("invalid", "/smooth", b'{"signal": [1, "2", true]}', json_h),
        ("invalid", "/smooth?mod=valid", npy_bytes(medium[0]), npy_h),
        ("invalid", "/smooth", b"a,b,c", {"content-type": "text/csv"}),
        ("invalid", "/classify", b'{"instances": [[1]], "version": 99999999999999999999999}', json_h),
        ("invalid", "/smooth?version=99999999999999999999999", npy_bytes(medium[0]), npy_h),
        ("oversized", "/smooth", npy_header((2**32, 2**32)), npy_h),  # 2**64 values: wraps int64 to 0
        ("oversized", "/smooth", npy_header((8, 5_000_000)), npy_h),  # 40M values: over max_elements, no payload sent
    ]


async def soak(base: str, connections: int, seconds: float) -> dict:
    requests = soak_requests()
    statuses: Counter = Counter()
    by_kind: dict[str, Counter] = {}
    latencies: list[float] = []
    errors: Counter = Counter()
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)

    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as client:

        async def worker(index: int) -> None:
            position = index
            while time.monotonic() < deadline:
                label, path, body, headers = requests[position % len(requests)]
                position += connections
                start = time.perf_counter()
                try:
                    response = await client.post(path, content=body, headers=headers)
                except httpx.HTTPError as exc:
                    errors[type(exc).__name__] += 1
                    continue
                latencies.append(time.perf_counter() - start)
                statuses[response.status_code] += 1
                by_kind.setdefault(label, Counter())[response.status_code] += 1

        await asyncio.gather(*(worker(i) for i in range(connections)))
    values = np.array(latencies) * 1000
    return {
        "connections": connections, "seconds": seconds, "requests": int(sum(statuses.values())),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "by_kind": {k: {str(s): n for s, n in sorted(v.items())} for k, v in by_kind.items()},
        "transport_errors": dict(errors),
        "p50_ms": round(float(np.percentile(values, 50)), 2) if len(values) else None,
        "p99_ms": round(float(np.percentile(values, 99)), 2) if len(values) else None,
        "server_5xx_other_than_503": sum(v for k, v in statuses.items() if k >= 500 and k != 503),
    }


# -- hostile ------------------------------------------------------------------------------------
async def dribble_body(port: int) -> dict:
    """Headers, then the body one byte per 0.5 s: how long until the server answers and cuts off."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /smooth HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n")
    await writer.drain()
    start = time.monotonic()
    answer = b""

    closed_at: list[float] = []

    async def read_all() -> bytes:
        data = b""
        while chunk := await reader.read(65536):
            data += chunk
        closed_at.append(time.monotonic())  # when the server closed the connection, not when we looked
        return data

    reading = asyncio.ensure_future(read_all())
    while not reading.done() and time.monotonic() - start < 120:
        try:
            writer.write(b"1")
            await writer.drain()
        except (ConnectionError, OSError):
            break
        await asyncio.sleep(0.5)
    try:
        answer = await asyncio.wait_for(reading, 10)
    except asyncio.TimeoutError:
        pass
    writer.close()
    cut_off = (closed_at[0] if closed_at else time.monotonic()) - start
    return {"status_line": answer.split(b"\r\n", 1)[0].decode(errors="replace"), "cut_off_after_s": round(cut_off, 2)}


async def hostile(base: str, port: int) -> dict:
    results: dict = {}
    json_h, npy_h = {"content-type": "application/json"}, {"content-type": "application/x-npy"}
    timeout = httpx.Timeout(300)
    async with httpx.AsyncClient(base_url=base, timeout=timeout, limits=httpx.Limits(max_connections=64)) as client:

        async def post(path: str, body: bytes, headers: dict) -> tuple[int, str]:
            try:
                response = await client.post(path, content=body, headers=headers)
            except httpx.HTTPError as exc:
                return -1, type(exc).__name__
            return response.status_code, response.text[:160] if response.status_code != 200 else "ok"

        dribbler = asyncio.ensure_future(dribble_body(port))
        upload = npy_bytes(np.zeros((8, 3_750_000), np.float32))  # 120 MB, a valid request
        start = time.monotonic()
        answers = await asyncio.gather(*(post("/smooth?mode=same", upload, {**npy_h, "accept": "application/x-npy"})
                                         for _ in range(16)))
        results["16 concurrent 120 MB .npy uploads"] = {
            "statuses": dict(Counter(status for status, _ in answers)), "seconds": round(time.monotonic() - start, 1),
            "sample": sorted({text for _, text in answers})[:3]}
        del upload
        cases = {
            "128 MiB JSON of zeros": ("/smooth", b'{"signal": [' + b"0," * (64 * 2**20 - 8) + b"0]}", json_h),
            "22M rows of one sample": ("/smooth", b'{"signal": [' + b"[0]," * 22_000_000 + b"[0]]}", json_h),
            "/classify with 5.5M rows": ("/classify", b'{"instances": [' + b"[0,0,0,0,0,0]," * 5_500_000 + b"[0,0,0,0,0,0]]}", json_h),
            "version beyond 64 bits (body)": ("/smooth", b'{"signal": [1, 2, 3], "version": 99999999999999999999999}', json_h),
            "version beyond 64 bits (query)": ("/smooth?version=99999999999999999999999", npy_bytes(np.ones(9, np.float32)), npy_h),
            ".npy count wrapping int64": ("/smooth", npy_header((2**32, 2**32)), npy_h),
            "strings and booleans in the array": ("/smooth", b'{"signal": [1, "2", true]}', json_h),
            "unknown query parameter on .npy": ("/smooth?mod=valid", npy_bytes(np.ones(40, np.float32)), npy_h),
            "Content-Encoding: gzip": ("/smooth", b"\x1f\x8b\x08\x00", {**json_h, "content-encoding": "gzip"}),
        }
        for name, (path, body, headers) in cases.items():
            start = time.monotonic()
            status, text = await post(path, body, headers)
            results[name] = {"status": status, "seconds": round(time.monotonic() - start, 2), "error": text}
        results["dribbling body"] = await dribbler
        start = time.monotonic()
        status, _ = await post("/classify", b'{"instances": [[300, 0.2, 0.8, 0.1, 0, 0]]}', json_h)
        results["normal request afterwards"] = {"status": status, "ms": round((time.monotonic() - start) * 1000, 1)}
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--skip-soak", action="store_true")
    parser.add_argument("--skip-hostile", action="store_true")
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request would slow the clients
    repo = args.work / "repo"
    if not (repo / "classifier").is_dir():
        log.info("building the benchmark models (bench/prepare.py)")
        repo = prepare(args.work)["repo"]
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server_log = args.work / "soak-server.log"
    process = start_server(repo, port, server_log)
    rss = RssSampler(process.pid)
    report: dict = {"settings": "defaults", "idle_rss_mb": round(rss.current_mb(), 1)}
    try:
        if not args.skip_soak:
            log.info("soak: %d connections for %.0f s", args.connections, args.seconds)
            report["soak"] = asyncio.run(soak(base, args.connections, args.seconds))
            report["soak"]["peak_rss_mb"] = round(rss.peak_mb(), 1)
            log.info("soak: %s", json.dumps(report["soak"]))
        if not args.skip_hostile:
            log.info("hostile clients")
            report["hostile"] = asyncio.run(hostile(base, port))
            report["hostile_peak_rss_mb"] = round(rss.peak_mb(), 1)
            time.sleep(5)
            report["rss_5s_after_mb"] = round(rss.current_mb(), 1)
            for name, value in report["hostile"].items():
                log.info("%-40s %s", name, json.dumps(value))
        report["peak_rss_mb"] = round(rss.peak_mb(), 1)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)
    server_output = server_log.read_text()
    report["tracebacks_in_server_log"] = server_output.count("Traceback")
    report["server_log_bytes"] = len(server_output)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    failed = (report.get("soak", {}).get("server_5xx_other_than_503", 0) or report["tracebacks_in_server_log"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
