"""Benchmark monoserve against the naive server, the framework ceiling and peer servers (MLServer,
LitServe, KServe, PyTriton (Triton Inference Server with the model in its Python backend), BentoML,
Ray Serve: bench/peers/), with wrk over loopback, then the OIP gRPC cells (bench/grpc_side.py).

    make bench            # full run: every workload at concurrency 1, 16, 64
    make bench QUICK=1    # about 6 minutes with the peers: fewer concurrency levels, shorter runs
    .venv/bin/python bench/run.py --help

What it does, in order:
1. builds the benchmark models (bench/prepare.py) and request bodies (bench/workloads.py);
2. measures in-process compute (bench/inprocess.py: ONNX Runtime called directly, no HTTP);
3. for each server (monoserve via `monoserve serve`, the naive FastAPI + torch server, the
   constant-returning FastAPI ceiling, each peer in its own venv under bench/work/peers, installed
   when missing; a peer that cannot be installed or started is reported with its error), starts
   it as users do (a real process), pinned with taskset to SERVER_CPUS, waits until it is ready
   (/readyz, or the peer's own path), checks one answer per workload against the in-process result
   (a workload answered wrongly is reported, not timed),
   then drives each workload with wrk pinned to WRK_CPUS, each run bounded by --duration, and
   reads the server's CPU time and RSS from /proc; waits for the server to go idle between runs;
4. runs the OIP gRPC cells of the service, MLServer, KServe and PyTriton (--grpc), each server
   started again with its gRPC port, interleaved within each cell (bench/grpc_side.py's measure_grpc);
5. stops every process it started (also on Ctrl-C or failure) and writes
   bench/results/bench[_quick][_TAG].json and .md (bench/tables.py puts several runs side by side).
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import logging
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = REPO_ROOT / "bench"
sys.path.append(str(REPO_ROOT))  # after PYTHONPATH and the installed project
sys.path.insert(0, str(BENCH_DIR))

import floor  # noqa: E402
from peers import specs as peer_specs_module  # noqa: E402
from peers.setup import REQUIREMENTS as PEER_REQUIREMENTS  # noqa: E402
from peers.setup import ensure_peer, install_error  # noqa: E402
from prepare import DEFAULT_WORK, prepare  # noqa: E402
from workloads import OIP_WORKLOADS, WORKLOADS, Workload  # noqa: E402

log = logging.getLogger("bench")

VENV_BIN = Path(sys.executable).parent
SERVER_CPUS = "0"
WRK_CPUS = "1"
LUA_SCRIPT = BENCH_DIR / "wrk" / "post.lua"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


# ----------------------------------------------------------------------------------------------
# processes: start pinned, find the tree, read CPU and RSS from /proc, stop everything we started


class ProcessRegistry:
    """Every process group this run started, so that any exit path stops them all."""

    def __init__(self) -> None:
        self.processes: list[subprocess.Popen] = []

    def start(self, argv: list[str], cpus: str, env: dict[str, str], log_path: Path) -> subprocess.Popen:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        handle = log_path.open("ab")
        process = subprocess.Popen(
            ["taskset", "-c", cpus, *argv],
            stdout=handle,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
            start_new_session=True,  # its own process group: uvicorn workers are stopped with it
            cwd=REPO_ROOT,
        )
        handle.close()
        self.processes.append(process)
        return process

    def stop(self, process: subprocess.Popen, timeout: float = 15.0) -> None:
        if process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=timeout)
            except ProcessLookupError:
                pass
        if process in self.processes:
            self.processes.remove(process)

    def stop_all(self) -> None:
        for process in list(self.processes):
            try:
                self.stop(process, timeout=5.0)
            except Exception:  # keep stopping the others
                log.exception("could not stop process %d", process.pid)


def process_tree(pid: int) -> list[int]:
    """pid and all its descendants (uvicorn --workers N forks children)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    tree, stack = [], [pid]
    while stack:
        current = stack.pop()
        tree.append(current)
        stack.extend(children.get(current, []))
    return tree


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime
    return total


_focus_refused = False


def focus_cpu(processes: list[subprocess.Popen], timed: subprocess.Popen | None) -> None:
    """Every thread of every other server's process tree under SCHED_IDLE, the timed one's under
    SCHED_OTHER: the idle servers on the shared CPU run only when the timed one leaves it idle.

    All the servers of a run (the service, its variants, the peers) stay started together on
    SERVER_CPUS, and idle they are not idle to the CPU: MLServer, BentoML, PyTriton and Ray Serve's
    processes wake up every few ms, 11% of CPU 0 between them (measured with the six peers started
    and no load). Every server, peers included, is timed the same way: the only one in its CPU's
    normal scheduling class. `timed` None: every server idle (an in-process measurement runs)."""
    global _focus_refused
    for process in processes:
        policy = os.SCHED_OTHER if process is timed else os.SCHED_IDLE
        for pid in process_tree(process.pid):
            try:
                threads = [int(tid) for tid in os.listdir(f"/proc/{pid}/task")]
            except OSError:
                continue
            for tid in threads:
                try:
                    os.sched_setscheduler(tid, policy, os.sched_param(0))
                except ProcessLookupError:
                    continue
                except PermissionError:  # unprivileged: SCHED_IDLE -> SCHED_OTHER may be refused
                    if not _focus_refused:
                        log.warning("cannot set the idle servers' scheduling class (%s): cells are timed with "
                                    "every server competing for the CPU", "permission denied")
                        _focus_refused = True
                    return


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_SIZE
        except OSError:
            continue
    return total


class RssSampler(threading.Thread):
    """Samples the server tree's RSS every `interval` seconds while a run lasts."""

    def __init__(self, pid: int, interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.samples: list[tuple[float, int]] = []
        self._stop_event = threading.Event()
        self._start_time = time.monotonic()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.samples.append((time.monotonic() - self._start_time, rss_bytes(process_tree(self.pid))))
            self._stop_event.wait(self.interval)

    def stop(self) -> list[tuple[float, int]]:
        self._stop_event.set()
        self.join()
        return self.samples


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http(method: str, url: str, body: bytes | None = None, headers: dict | None = None, timeout: float = 120.0):
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


# ----------------------------------------------------------------------------------------------
# servers


@dataclass
class ServerSpec:
    name: str
    argv: list[str]  # "{port}" is replaced by the port
    workloads: dict[str, list[int]]  # workload name -> concurrency levels
    env: dict[str, str] = field(default_factory=dict)
    cpus: str = SERVER_CPUS
    wrk_cpus: str = WRK_CPUS
    note: str = ""
    ready_path: str = "/readyz"
    # large bodies timed with back-to-back requests on one connection (servers that take seconds per
    # request: wrk counts only requests that finish inside its run, and would report 0)
    sequential_heavy: bool = False


def monoserve_argv(repo: Path, workers: int = 1) -> list[str]:
    # no gRPC port: these runs measure HTTP, and a fixed 8001 could clash on a shared machine (bench/grpc.py measures gRPC)
    argv = [str(VENV_BIN / "monoserve"), "serve", "--repo", str(repo), "--host", "127.0.0.1", "--port", "{port}",
            "--grpc-port", "0"]
    return argv + (["--workers", str(workers)] if workers != 1 else [])


def uvicorn_argv(app: str, *extra: str) -> list[str]:
    return [str(VENV_BIN / "uvicorn"), app, "--app-dir", str(BENCH_DIR), "--host", "127.0.0.1", "--port", "{port}", *extra]


def wait_ready(process: subprocess.Popen, url: str, timeout: float = 120.0) -> float:
    """Seconds until GET url answers 200; raises if the process dies or time runs out."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with code {process.returncode} before {url} answered 200")
        try:
            status, _, _ = http("GET", url, timeout=2.0)
            if status == 200:
                return time.monotonic() - start
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        time.sleep(0.01)
    raise RuntimeError(f"{url} did not answer 200 within {timeout:.0f} s")


def wait_idle(pid: int, timeout: float = 120.0, window: float = 0.25) -> float:
    """Wait until the server tree uses < 10% of a CPU for two windows (it has drained queued work)."""
    start = time.monotonic()
    quiet = 0
    previous = cpu_seconds(process_tree(pid))
    while time.monotonic() - start < timeout:
        time.sleep(window)
        current = cpu_seconds(process_tree(pid))
        quiet = quiet + 1 if current - previous < 0.1 * window else 0
        previous = current
        if quiet >= 2:
            return time.monotonic() - start
    log.warning("server %d still busy after %.0f s", pid, timeout)
    return time.monotonic() - start


# ----------------------------------------------------------------------------------------------
# correctness check of one answer against the in-process ONNX Runtime result


def reference_output(work: Path, workload: Workload) -> np.ndarray:
    import onnxruntime as ort
    from inprocess import onnx_model_path

    from contract.modes import mode_slice

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(onnx_model_path(work, workload.model)), options, providers=["CPUExecutionProvider"])
    data = workload.array()
    if workload.kind == "classify":
        return sess.run(None, {sess.get_inputs()[0].name: data})[0]
    full = sess.run(None, {sess.get_inputs()[0].name: data[None]})[0][0]
    kernel_size = full.shape[-1] - workload.length + 1
    return full[:, mode_slice("same", workload.length, kernel_size)]


def decode_answer(workload: Workload, headers: dict, body: bytes) -> np.ndarray:
    lower = {k.lower(): v for k, v in headers.items()}
    content_type = lower.get("content-type", "")
    if workload.oip:  # OIP v2: the output tensor as JSON data, or binary data after the JSON header
        length = int(lower.get("inference-header-content-length", len(body)))
        output = next(o for o in json.loads(body[:length])["outputs"] if o["name"] == workload.output_name)
        if "data" in output:
            return np.asarray(output["data"], dtype=np.float64)
        return np.frombuffer(body[length:length + output["parameters"]["binary_data_size"]], dtype="<f4")
    if "npy" in content_type:
        return np.load(io.BytesIO(body), allow_pickle=False)
    payload = json.loads(body)
    key = "smoothed" if workload.kind == "smooth" else "scores"
    return np.asarray(payload[key], dtype=np.float64)


def check_answer(base_url: str, workload: Workload, body_file: Path, expected: np.ndarray | None) -> dict:
    headers = {"Content-Type": workload.content_type, "Accept": workload.accept, **workload.extra_headers}
    status, response_headers, body = http("POST", base_url + workload.url_path, body_file.read_bytes(), headers)
    result: dict[str, Any] = {"status": status}
    if status != 200:
        result["error"] = body[:300].decode(errors="replace")
        return result
    if expected is None:  # the ceiling server answers a constant
        return result
    got = decode_answer(workload, response_headers, body).reshape(expected.shape)
    diff = float(np.abs(got - expected).max())
    scale = max(1.0, float(np.abs(expected).max()))
    result.update(max_abs_diff=diff, max_rel_diff=diff / scale, matches=diff <= 1e-4 * scale)
    return result


# ----------------------------------------------------------------------------------------------
# one wrk run


def run_wrk(
    url: str, workload: Workload, body_file: Path, connections: int, duration: float, timeout: float, cpus: str
) -> dict:
    env = {
        **os.environ,
        "BENCH_BODY": str(body_file),
        "BENCH_CONTENT_TYPE": workload.content_type,
        "BENCH_ACCEPT": workload.accept,
        "BENCH_HEADER_LENGTH": workload.extra_headers.get("Inference-Header-Content-Length", ""),
    }
    argv = [
        "taskset", "-c", cpus, "wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s",
        f"--timeout={max(1, round(timeout))}s", "-s", str(LUA_SCRIPT), url,
    ]  # fmt: skip
    completed = subprocess.run(
        argv, env=env, capture_output=True, text=True, timeout=duration + timeout + 60, check=False
    )
    line = next((ln for ln in completed.stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if completed.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({completed.returncode}): {completed.stdout[-500:]} {completed.stderr[-500:]}")
    return json.loads(line[len("BENCH_JSON ") :])


@dataclass
class RunResult:
    server: str
    workload: str
    concurrency: int
    requests: int
    duration_s: float
    req_per_s: float
    samples_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    errors: int
    error_detail: dict
    server_cpu_percent: float
    rss_mb_end: float
    rss_mb_max: float
    mb_per_s_sent: float


def measure_sequential(
    spec: ServerSpec, process: subprocess.Popen, base_url: str, workload: Workload, body_file: Path, duration: float,
) -> RunResult:  # fmt: skip
    """One connection, requests back to back, timed here: for servers that take seconds per request.

    wrk only counts requests that finish inside its run, which drops up to one whole request per
    connection when each takes seconds; timing complete requests ourselves does not.
    """
    import http.client

    body = body_file.read_bytes()
    headers = {"Content-Type": workload.content_type, "Accept": workload.accept, **workload.extra_headers}
    host, port = base_url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=600)
    sampler = RssSampler(process.pid)
    cpu_before = cpu_seconds(process_tree(process.pid))
    sampler.start()
    latencies, statuses = [], []
    start = time.monotonic()
    try:
        while not latencies or time.monotonic() - start < duration:
            sent = time.monotonic()
            connection.request("POST", workload.url_path, body=body, headers=headers)
            response = connection.getresponse()
            response.read()
            latencies.append(time.monotonic() - sent)
            statuses.append(response.status)
    finally:
        connection.close()
    seconds = time.monotonic() - start
    samples = sampler.stop()
    cpu_used = cpu_seconds(process_tree(process.pid)) - cpu_before
    ok = sum(1 for status in statuses if status == 200)
    return RunResult(
        server=spec.name,
        workload=workload.name,
        concurrency=1,
        requests=len(latencies),
        duration_s=seconds,
        req_per_s=ok / seconds,
        samples_per_s=ok * workload.samples / seconds,
        p50_ms=1e3 * float(np.percentile(latencies, 50)),
        p90_ms=1e3 * float(np.percentile(latencies, 90)),
        p99_ms=1e3 * float(np.percentile(latencies, 99)),
        max_ms=1e3 * max(latencies),
        errors=len(latencies) - ok,
        error_detail={"status": len(latencies) - ok, "client": "sequential (python http.client)"},
        server_cpu_percent=100.0 * cpu_used / seconds,
        rss_mb_end=samples[-1][1] / 2**20 if samples else 0.0,
        rss_mb_max=max(s[1] for s in samples) / 2**20 if samples else 0.0,
        mb_per_s_sent=len(latencies) * len(body) / seconds / 2**20,
    )


def measure_run(
    spec: ServerSpec, process: subprocess.Popen, base_url: str, workload: Workload, body_file: Path,
    connections: int, duration: float, timeout: float,
) -> RunResult:  # fmt: skip
    pids = process_tree(process.pid)
    sampler = RssSampler(process.pid)
    cpu_before = cpu_seconds(pids)
    sampler.start()
    stats = run_wrk(base_url + workload.url_path, workload, body_file, connections, duration, timeout, spec.wrk_cpus)
    samples = sampler.stop()
    cpu_used = cpu_seconds(process_tree(process.pid)) - cpu_before
    seconds = stats["duration_us"] / 1e6
    errors = stats["errors"]
    n_errors = errors["connect"] + errors["read"] + errors["write"] + errors["status"] + errors["timeout"]
    ok_requests = max(stats["requests"] - errors["status"], 0)
    latency = stats["latency_us"]
    return RunResult(
        server=spec.name,
        workload=workload.name,
        concurrency=connections,
        requests=stats["requests"],
        duration_s=seconds,
        req_per_s=ok_requests / seconds,  # answered 200: a 503 is not throughput
        samples_per_s=ok_requests * workload.samples / seconds,
        p50_ms=latency["p50"] / 1e3,
        p90_ms=latency["p90"] / 1e3,
        p99_ms=latency["p99"] / 1e3,
        max_ms=latency["max"] / 1e3,
        errors=n_errors,
        error_detail=errors,
        server_cpu_percent=100.0 * cpu_used / seconds,
        rss_mb_end=samples[-1][1] / 2**20 if samples else 0.0,
        rss_mb_max=max(s[1] for s in samples) / 2**20 if samples else 0.0,
        mb_per_s_sent=stats["requests"] * body_file.stat().st_size / seconds / 2**20,
    )


# ----------------------------------------------------------------------------------------------
# the plan


@dataclass
class Plan:
    quick: bool
    duration: float
    heavy_duration: float  # large bodies (tens of ms to seconds per request): longer runs
    timeout: float
    memory_run_s: float  # 0: skip the 60 s RSS run
    cold_starts: int
    rounds: int  # each cell is run this many times, servers interleaved; the best round is reported


def make_plan(quick: bool) -> Plan:
    if quick:
        return Plan(quick=True, duration=2, heavy_duration=3, timeout=30, memory_run_s=0, cold_starts=1, rounds=1)
    return Plan(quick=False, duration=4, heavy_duration=8, timeout=60, memory_run_s=60, cold_starts=3, rounds=2)


def server_specs(plan: Plan, work: Path, repo: Path | None, include: set[str] | None) -> list[ServerSpec]:
    levels = [16] if plan.quick else [1, 16, 64]
    # Large bodies (4-20 MB, tens to hundreds of ms each): 64 connections would only queue 1 GB of
    # bodies in front of one CPU, and wrk undercounts runs shorter than a few queue lengths; 1 to 16
    # connections measure the server's throughput (it is busy from 2-4 connections on).
    heavy_levels = [1, 4] if plan.quick else [1, 4, 16]
    specs: list[ServerSpec] = []
    if repo is not None:
        mono = {f"{s}_{fmt}": levels for s in ("smooth_small", "smooth_medium") for fmt in ("json", "npy")}
        mono.update({f"smooth_large_{fmt}": heavy_levels for fmt in ("json", "npy")})
        mono["smooth_long_npy"] = heavy_levels
        mono["classify_1_json"] = [64] if plan.quick else [1, 16, 64]
        mono["classify_64_json"] = levels
        mono.update(oip_levels(plan))  # the shared OIP workloads (issue 20), on the service's OIP routes
        specs.append(ServerSpec("monoserve", monoserve_argv(repo), mono, note="defaults as shipped"))
        # Dynamic batching on and off (issue 6: report both, keep the better as the default).
        classify = {"classify_1_json": [64] if plan.quick else [16, 64]}
        if not plan.quick:
            classify["classify_64_json"] = [16, 64]
        for state in ("on", "off"):
            env = {"MONOSERVE_BATCHING": "true" if state == "on" else "false"}
            specs.append(ServerSpec(f"monoserve-batching-{state}", monoserve_argv(repo), dict(classify), env=env,
                                    note=f"MONOSERVE_BATCHING={env['MONOSERVE_BATCHING']}"))  # fmt: skip
        if not plan.quick:
            # What the hot path (service.edge.fastpath) buys: the same service through its FastAPI routes.
            specs.append(ServerSpec("monoserve-routes", monoserve_argv(repo), {"classify_1_json": [64]},
                                    env={"MONOSERVE_HOT_PATH": "false"}, note="MONOSERVE_HOT_PATH=false"))  # fmt: skip
            # 1 vs 2 uvicorn workers. Two workers need both CPUs, so wrk shares CPU 1 with them here;
            # compare these three with each other only.
            both = {"classify_1_json": [64], "smooth_large_npy": [4]}
            specs += [
                ServerSpec("monoserve-w1-2cpu", monoserve_argv(repo, 1), both, cpus="0,1", note="1 worker on CPUs 0-1"),
                ServerSpec("monoserve-w2-2cpu", monoserve_argv(repo, 2), both, cpus="0,1", note="2 workers on CPUs 0-1"),
                ServerSpec("ceiling-w2-2cpu", uvicorn_argv("ceiling_server:app", "--no-access-log", "--workers", "2"),
                           {"classify_1_json": [64]}, cpus="0,1", note="2 workers on CPUs 0-1"),
            ]  # fmt: skip
    naive = {
        "smooth_small_json": levels,
        "smooth_medium_json": levels,
        # One request decodes 1M floats through pydantic and encodes 1M back: seconds each. On one
        # CPU more connections only queue, so one connection measures its throughput.
        "smooth_large_json": [1],
        "classify_1_json": [64] if plan.quick else [1, 16, 64],
        "classify_64_json": levels,
    }
    specs.append(
        ServerSpec(
            "naive",
            uvicorn_argv("naive_server:app"),
            naive,
            env={"NAIVE_CHECKPOINTS": str(work / "checkpoints")},
            note="uvicorn defaults (access log on), as a user runs it",
            sequential_heavy=True,
        )
    )
    ceiling = {"classify_1_json": [64] if plan.quick else [1, 16, 64], "smooth_large_json": heavy_levels}
    if not plan.quick:
        ceiling["classify_64_json"] = levels
    specs.append(
        ServerSpec("ceiling", uvicorn_argv("ceiling_server:app", "--no-access-log"), ceiling, note="no access log")
    )
    if include:
        specs = [s for s in specs if s.name in include]
    return specs


def oip_levels(plan: Plan) -> dict[str, list[int]]:
    """The shared OIP workloads and their concurrency levels (as their /smooth, /classify counterparts)."""
    levels = [16] if plan.quick else [1, 16, 64]
    heavy_levels = [1, 4] if plan.quick else [1, 4, 16]
    chosen = {}
    for workload in OIP_WORKLOADS:
        if workload.name.startswith("smooth_large"):
            chosen[workload.name] = heavy_levels
        elif workload.name.startswith("classify_1_"):
            chosen[workload.name] = [64] if plan.quick else [16, 64]
        else:
            chosen[workload.name] = levels
    return chosen


def native_levels(plan: Plan) -> dict[str, list[int]]:
    """The service's JSON workloads a peer with its own JSON routes (LitServe) runs."""
    levels = [16] if plan.quick else [1, 16, 64]
    return {"classify_1_json": [64] if plan.quick else [16, 64], "classify_64_json": levels,
            "smooth_medium_json": levels, "smooth_large_json": [1, 4] if plan.quick else [1, 4, 16]}


def peer_specs(plan: Plan, work: Path, onnx: dict[str, Path], peers: list[str]) -> tuple[list[ServerSpec], dict[str, str]]:
    """A ServerSpec per peer whose environment is (or can now be) installed; the others with their error."""
    specs, unavailable = [], {}
    for name in peers:
        python = ensure_peer(work, name)
        if python is None:
            unavailable[name] = f"install failed: {(install_error(work, name) or '?')[-800:]}"
            continue
        workloads = peer_specs_module.peer_workloads(name, oip_levels(plan), native_levels(plan))
        for workload in workloads:  # large bodies: one connection, timed back to back (seconds per request)
            if workload.startswith(("smooth_large", "smooth_long")):
                workloads[workload] = [1]
        specs.append(ServerSpec(name, peer_specs_module.peer_argv(python, name), workloads,
                                env=peer_specs_module.peer_env(onnx), note=peer_specs_module.NOTES[name],
                                ready_path=peer_specs_module.READY_PATH[name], sequential_heavy=True))  # fmt: skip
    return specs, unavailable


@dataclass
class RunningServer:
    spec: ServerSpec
    process: subprocess.Popen
    base_url: str
    argv: list[str]
    cold_start_s: list[float]
    rss_mb_idle: float
    checks: dict = field(default_factory=dict)
    runs: list[dict] = field(default_factory=list)

    def summary(self) -> dict:
        return {
            "name": self.spec.name, "argv": self.argv, "cpus": self.spec.cpus, "wrk_cpus": self.spec.wrk_cpus,
            "env": self.spec.env, "note": self.spec.note, "cold_start_s": self.cold_start_s,
            "rss_mb_idle": self.rss_mb_idle, "checks": self.checks, "runs": self.runs,
        }  # fmt: skip


def start_server(spec: ServerSpec, plan: Plan, registry: ProcessRegistry, logs: Path) -> RunningServer:
    """Start it `plan.cold_starts` times (timing each start to /readyz 200), keep the last one up."""
    port = free_port()
    argv = [a.replace("{port}", str(port)) for a in spec.argv]
    base_url = f"http://127.0.0.1:{port}"
    cold = []
    for attempt in range(plan.cold_starts):
        process = registry.start(argv, spec.cpus, spec.env, logs / f"{spec.name}.log")
        cold.append(wait_ready(process, base_url + spec.ready_path))
        if attempt < plan.cold_starts - 1:
            registry.stop(process)
    wait_idle(process.pid)
    rss = rss_bytes(process_tree(process.pid)) / 2**20
    log.info("[%s] ready in %.2f s (pid %d, CPUs %s, RSS %.0f MB)", spec.name, min(cold), process.pid, spec.cpus, rss)
    return RunningServer(spec, process, base_url, argv, cold, rss)


def check_server(server: RunningServer, work: Path, references: dict) -> None:
    """One request per workload, its answer compared with in-process ONNX Runtime; a workload that
    is answered wrongly (or not at all) is not timed, and its check says why."""
    for name in list(server.spec.workloads):
        workload = WORKLOADS[name]
        expected = None if server.spec.name.startswith("ceiling") else references[name]
        try:
            check = check_answer(server.base_url, workload, workload.body_file(work), expected)
        except Exception as exc:  # a peer that closes the connection or answers something unreadable
            check = {"status": 0, "error": f"{type(exc).__name__}: {str(exc)[:300]}"}
        server.checks[name] = check
        if check["status"] != 200 or check.get("matches") is False:
            log.error("[%s] %s: bad answer, not timed: %s", server.spec.name, name, check)
            del server.spec.workloads[name]


def service_stages(server: RunningServer) -> dict | None:
    """The service's stage histogram totals from its /metrics (None for other servers or on failure)."""
    if not server.spec.name.startswith("monoserve"):
        return None
    try:
        status, _, body = http("GET", server.base_url + "/metrics", timeout=10.0)
    except (urllib.error.URLError, OSError):
        return None
    return floor.stage_totals(body.decode()) if status == 200 else None


def run_cell(server: RunningServer, workload: Workload, connections: int, plan: Plan, work: Path, round_: int) -> dict:
    spec, process, body_file = server.spec, server.process, workload.body_file(work)
    wait_idle(process.pid)
    stages_before = service_stages(server)
    heavy = workload.name.startswith(("smooth_large", "smooth_long"))
    if spec.sequential_heavy and heavy:
        run = measure_sequential(spec, process, server.base_url, workload, body_file, plan.heavy_duration)
    else:
        duration = plan.heavy_duration if heavy else plan.duration
        run = measure_run(spec, process, server.base_url, workload, body_file, connections, duration, plan.timeout)
    record = {**dataclasses.asdict(run), "round": round_}
    if stages_before is not None:  # the service's own stage times over the cell (bench/floor.py)
        stages_after = service_stages(server)
        if stages_after is not None:
            record["stage_ms_per_request"] = floor.stage_ms_per_request(stages_before, stages_after)
    log.info(
        "[%s] %-18s c=%-3d r%d %9.1f req/s %12.0f samples/s p50 %8.2f ms p99 %8.2f ms err %d cpu %3.0f%% rss %.0f MB",
        spec.name, workload.name, connections, round_, run.req_per_s, run.samples_per_s, run.p50_ms, run.p99_ms,
        run.errors, run.server_cpu_percent, run.rss_mb_max,
    )  # fmt: skip
    return record


INPROCESS = "inprocess"

# Ratios whose two sides are timed seconds apart (issue 30, round three): the service's cell is
# bracketed by its reference, measured right before and right after it, and the faster of the two
# is kept (the strictest). Measured minutes apart (the in-process reference at the run's start and
# end, the constant app in another cell), the host's own speed moved by up to 40% between the two
# sides, as much as the aims themselves. workload -> (reference server or INPROCESS, its workload, connections).
ADJACENT_REFERENCES: dict[str, tuple[str, str, int]] = {
    "classify_1_oip": ("ceiling", "classify_1_json", 64),  # OIP REST against the constant FastAPI app
    "smooth_large_npy": (INPROCESS, "smooth_large_npy", 0),  # large .npy against in-process ONNX Runtime
}


def measure_reference(reference: tuple[str, str, int], servers: list[RunningServer], plan: Plan,
                      work: Path) -> float | None:
    """The reference of an adjacent ratio, now: the constant app's req/s, or in-process ONNX
    Runtime's samples/s (every server idle meanwhile); None when its server is not in the run."""
    name, workload_name, connections = reference
    processes = [s.process for s in servers]
    if name == INPROCESS:
        focus_cpu(processes, None)
        measured = measure_inprocess(work, plan, f"adjacent-{workload_name}", [workload_name])
        return measured["results"][workload_name]["samples_per_s"]
    server = next((s for s in servers if s.spec.name == name), None)
    if server is None:
        return None
    focus_cpu(processes, server.process)
    return run_cell(server, WORKLOADS[workload_name], connections, plan, work, -1)["req_per_s"]


def benchmark(servers: list[RunningServer], plan: Plan, work: Path) -> dict[str, dict]:
    """Every (workload, concurrency) cell, `plan.rounds` rounds, the servers interleaved within a round.

    Interleaving puts every server under the same background load (the 2 cores are shared), and
    the best round of each cell is the least disturbed one (reported; every round's req/s is kept too).
    While one server is timed, the others run in the idle scheduling class (focus_cpu).
    Returns the adjacent references ("workload@connections" -> reference, before, after) of the
    service's cells named in ADJACENT_REFERENCES.
    """
    adjacent: dict[str, dict] = {}
    cells: list[tuple[str, int]] = []
    for server in servers:
        for name, levels in server.spec.workloads.items():
            cells += [(name, c) for c in levels if (name, c) not in cells]
    for name, connections in cells:
        workload = WORKLOADS[name]
        taking_part = [s for s in servers if connections in s.spec.workloads.get(name, [])]
        results: dict[str, list[dict]] = {s.spec.name: [] for s in taking_part}
        reference = ADJACENT_REFERENCES.get(name)
        bracketed = reference is not None and any(s.spec.name == SERVICE for s in taking_part)
        before = measure_reference(reference, servers, plan, work) if bracketed else None
        for round_ in range(plan.rounds):
            for server in taking_part:
                focus_cpu([s.process for s in servers], server.process)
                results[server.spec.name].append(run_cell(server, workload, connections, plan, work, round_))
        if bracketed:
            after = measure_reference(reference, servers, plan, work)
            adjacent[f"{name}@{connections}"] = {"reference": list(reference), "before": before, "after": after}
            log.info("[adjacent] %s c=%d: reference %s %s before %s, after %s", name, connections, reference[0],
                     reference[1], before, after)
        for server in taking_part:
            rounds = results[server.spec.name]
            best_round = max(rounds, key=lambda r: r["req_per_s"])
            server.runs.append({**best_round, "rounds": len(rounds), "req_per_s_rounds": [r["req_per_s"] for r in rounds]})
    return adjacent


def memory_run(spec: ServerSpec, plan: Plan, work: Path, registry: ProcessRegistry, logs: Path) -> dict:
    """RSS of the server under `plan.memory_run_s` of load at 64 connections (issue 6: no growth)."""
    workload = WORKLOADS["smooth_large_npy"]
    port = free_port()
    argv = [a.replace("{port}", str(port)) for a in spec.argv]
    base_url = f"http://127.0.0.1:{port}"
    process = registry.start(argv, spec.cpus, spec.env, logs / f"{spec.name}-memory.log")
    try:
        wait_ready(process, base_url + "/readyz")
        sampler = RssSampler(process.pid, interval=1.0)
        sampler.start()
        stats = run_wrk(
            base_url + workload.url_path, workload, workload.body_file(work), 64, plan.memory_run_s, plan.timeout,
            spec.wrk_cpus,
        )  # fmt: skip
        samples = sampler.stop()
    finally:
        registry.stop(process)
    warm = [rss for t, rss in samples if 5.0 <= t <= 15.0] or [samples[0][1]]
    late = [rss for t, rss in samples if t >= plan.memory_run_s - 10.0] or [samples[-1][1]]
    return {
        "server": spec.name,
        "workload": workload.name,
        "concurrency": 64,
        "seconds": plan.memory_run_s,
        "requests": stats["requests"],
        "errors": stats["errors"],
        "rss_mb_warm": max(warm) / 2**20,
        "rss_mb_late": max(late) / 2**20,
        "rss_mb_max": max(s[1] for s in samples) / 2**20,
        "samples": [(round(t, 1), round(rss / 2**20, 1)) for t, rss in samples],
    }


# ----------------------------------------------------------------------------------------------
# summary


def best(runs: list[dict], server: str, workload: str, key: str = "samples_per_s", concurrency: int | None = None):
    candidates = [
        r for r in runs if r["server"] == server and r["workload"] == workload and concurrency in (None, r["concurrency"])
    ]
    return max(candidates, key=lambda r: r[key]) if candidates else None


def summarize(result: dict) -> dict:
    runs = [run for server in result["servers"] for run in server["runs"]]
    compute = result["inprocess"]["results"]
    targets: dict[str, Any] = {}

    def ratio(a, b):
        return None if a is None or b is None or b == 0 else a / b

    def get(run, key):
        if run is None:
            return None
        if key.endswith("_per_cpu_s"):  # throughput per CPU-second the server actually got
            cpu = run.get("server_cpu_percent") or 0.0
            return None if cpu <= 0 else run[key.replace("_per_cpu_s", "_per_s")] / (cpu / 100.0)
        return run[key]

    adjacent = result.get("adjacent") or {}

    def adjacent_ratio(workload: str, key: str) -> float | None:
        """The service's cells of `workload` over their bracketing reference (the faster of before and
        after): the best cell's ratio, as the run-end ratios take the best cell."""
        found = None
        for cell, reference in adjacent.items():
            name, _, connections = cell.partition("@")
            values = [v for v in (reference.get("before"), reference.get("after")) if v]
            service_run = best(runs, SERVICE, name, key, int(connections)) if name == workload else None
            if service_run is not None and values:
                value = service_run[key] / max(values)
                found = value if found is None else max(found, value)
        return found

    naive_large = best(runs, "naive", "smooth_large_json")
    mono_npy = best(runs, "monoserve", "smooth_large_npy")
    mono_json = best(runs, "monoserve", "smooth_large_json")
    compute_large = compute["smooth_large_npy"]["samples_per_s"]
    at_run_ends = ratio(get(mono_npy, "samples_per_s"), compute_large)
    bracketed = adjacent_ratio("smooth_large_npy", "samples_per_s")
    targets["smooth_large_npy_vs_inprocess"] = {
        "value": bracketed if bracketed is not None else at_run_ends, "target": ">= 0.9",
        "vs_run_ends": at_run_ends,  # the reference measured at the run's start and end (before round three)
        "vs_inprocess_service_method": ratio(get(mono_npy, "samples_per_s"),
                                             compute["smooth_large_npy"].get("samples_per_s_service_method"))}
    targets["smooth_large_npy_vs_naive"] = {
        "value": ratio(get(mono_npy, "samples_per_s"), get(naive_large, "samples_per_s")), "target": ">= 150",
        "per_cpu_s": ratio(get(mono_npy, "samples_per_cpu_s"), get(naive_large, "samples_per_cpu_s"))}
    targets["smooth_large_json_vs_naive"] = {
        "value": ratio(get(mono_json, "samples_per_s"), get(naive_large, "samples_per_s")), "target": ">= 15",
        "per_cpu_s": ratio(get(mono_json, "samples_per_cpu_s"), get(naive_large, "samples_per_cpu_s"))}
    # "monoserve" and "monoserve-batching-on" are the same defaults in the same run: the better of the two
    # cells (one server may hit a busier moment of the shared machine; p99 at 64 connections moves 3-5x)
    same_defaults = [r for r in (best(runs, name, "classify_1_json", "req_per_s", 64)
                                 for name in ("monoserve", "monoserve-batching-on")) if r is not None]
    mono_c1 = max(same_defaults, key=lambda r: r["req_per_s"]) if same_defaults else None
    ceiling_c1 = best(runs, "ceiling", "classify_1_json", "req_per_s", 64)
    naive_c1 = best(runs, "naive", "classify_1_json", "req_per_s", 64)
    targets["classify_1_c64_vs_ceiling"] = {
        "value": ratio(get(mono_c1, "req_per_s"), get(ceiling_c1, "req_per_s")), "target": ">= 1.5",
        "per_cpu_s": ratio(get(mono_c1, "req_per_cpu_s"), get(ceiling_c1, "req_per_cpu_s")),
        "p99_ms": get(mono_c1, "p99_ms"), "ceiling_p99_ms": get(ceiling_c1, "p99_ms")}
    targets["classify_1_c64_vs_naive"] = {
        "value": ratio(get(mono_c1, "req_per_s"), get(naive_c1, "req_per_s")), "target": ">= 4",
        "per_cpu_s": ratio(get(mono_c1, "req_per_cpu_s"), get(naive_c1, "req_per_cpu_s"))}
    long = compute["smooth_long_npy"]
    targets["long_kernel_fft_vs_oaconvolve"] = {"value": long.get("fft_vs_oaconvolve"), "target": "<= 1.5",
                                                "max_rel_diff_vs_ort": long.get("service_method_max_rel_diff_vs_ort")}
    mono = next((s for s in result["servers"] if s["name"] == "monoserve"), None)
    targets["cold_start_s"] = {"value": min(mono["cold_start_s"]) if mono else None, "target": "< 2"}
    if result.get("memory"):
        memory = result["memory"]
        targets["rss_growth_mb_after_warmup"] = {
            "value": memory["rss_mb_late"] - memory["rss_mb_warm"], "rss_mb_warm": memory["rss_mb_warm"],
            "rss_mb_late": memory["rss_mb_late"], "target": "no growth"}
    # issue 20: large JSON against the constant answer on the same body, OIP JSON against /smooth JSON
    ceiling_json = best(runs, "ceiling", "smooth_large_json", "req_per_s")
    targets["smooth_large_json_vs_ceiling"] = {
        "value": ratio(get(mono_json, "req_per_s"), get(ceiling_json, "req_per_s")), "target": ">= 0.15",
        "req_per_s": get(mono_json, "req_per_s"), "ceiling_req_per_s": get(ceiling_json, "req_per_s")}
    mono_oip = best(runs, "monoserve", "smooth_large_oip")
    targets["smooth_large_oip_json_vs_smooth_json"] = {
        "value": ratio(get(mono_oip, "req_per_s"), get(mono_json, "req_per_s")), "target": ">= 0.83 (within 1.2x)",
        "per_cpu_s": ratio(get(mono_oip, "req_per_cpu_s"), get(mono_json, "req_per_cpu_s"))}
    # issue 30: OIP REST 1-sample against the same constant app (its body differs, its answer is a constant)
    mono_oip_c1 = best(runs, "monoserve", "classify_1_oip", "req_per_s", 64)
    vs_classify_cell = ratio(get(mono_oip_c1, "req_per_s"), get(ceiling_c1, "req_per_s"))
    bracketed = adjacent_ratio("classify_1_oip", "req_per_s")
    targets["classify_1_oip_c64_vs_ceiling"] = {
        "value": bracketed if bracketed is not None else vs_classify_cell, "target": ">= 1.3",
        "vs_classify_cell": vs_classify_cell,  # the constant app's own cell, earlier in the run (before round three)
        "per_cpu_s": ratio(get(mono_oip_c1, "req_per_cpu_s"), get(ceiling_c1, "req_per_cpu_s"))}
    grpc_rows = (result.get("grpc") or {}).get("rows", [])
    grpc_ratios = {}
    for concurrency in (1, 64):  # gRPC 1-sample classify against KServe, at each concurrency
        cell = {row["server"]: row["req_per_s"] for row in grpc_rows
                if row["workload"] == "classify_1_oipbin" and row["concurrency"] == concurrency}
        grpc_ratios[f"c{concurrency}"] = ratio(cell.get("monoserve"), cell.get("kserve"))
    if any(value is not None for value in grpc_ratios.values()):
        targets["grpc_classify_1_vs_kserve"] = {
            "value": min((v for v in grpc_ratios.values() if v is not None)), "target": "> 1 at every concurrency",
            **grpc_ratios}
    versus = peer_comparison(result)
    if versus:
        behind = [row for row in versus if row["ratio"] is not None and row["ratio"] < 1.0]
        targets["ahead_of_every_peer"] = {"value": float(len(versus) - len(behind)), "cells": len(versus),
                                          "target": "every shared cell"}
    return targets  # fmt: skip


SERVICE = "monoserve"


def peer_comparison(result: dict) -> list[dict]:
    """For every peer cell, the service on the same workload and concurrency: req/s and p99 side by side."""
    runs = [run for server in result["servers"] for run in server["runs"]]
    rows = []
    peer_names = set(peer_specs_module.PEERS)
    for run in runs:
        if run["server"] not in peer_names:
            continue
        mine = next((r for r in runs if r["server"] == SERVICE and r["workload"] == run["workload"]
                     and r["concurrency"] == run["concurrency"]), None)
        rows.append({"workload": run["workload"], "concurrency": run["concurrency"], "peer": run["server"],
                     "peer_req_per_s": run["req_per_s"], "peer_p99_ms": run["p99_ms"],
                     "req_per_s": mine and mine["req_per_s"], "p99_ms": mine and mine["p99_ms"],
                     "ratio": (mine["req_per_s"] / run["req_per_s"]) if mine and run["req_per_s"] > 0 else None})
    return rows


def side_by_side(result: dict) -> list[str]:
    """One row per (workload, concurrency), one column per server: req/s, p50/p99 ms, server CPU %."""
    names = [server["name"] for server in result["servers"]]
    cells: dict[tuple[str, int], dict[str, dict]] = {}
    for server in result["servers"]:
        for run in server["runs"]:
            cells.setdefault((run["workload"], run["concurrency"]), {})[server["name"]] = run
    used = [name for name in names if any(name in row for row in cells.values())]
    lines = ["| workload | conc | " + " | ".join(used) + " |", "|---|---|" + "---|" * len(used)]
    for (workload, concurrency), row in sorted(cells.items()):
        values = []
        for name in used:
            run = row.get(name)
            values.append("" if run is None else f"{fmt(run['req_per_s'])} ({fmt(run['p50_ms'], 1)}/{fmt(run['p99_ms'], 1)} ms, "
                                                 f"{run['server_cpu_percent']:.0f}%)")
        lines.append(f"| {workload} | {concurrency} | " + " | ".join(values) + " |")
    return lines


def comparisons(result: dict) -> list[dict]:
    """Variant against variant on the same cell: batching, hot path, workers."""
    runs = [run for server in result["servers"] for run in server["runs"]]
    rows = []
    cells = [
        ("dynamic batching", "classify_1_json", 64, ["monoserve-batching-on", "monoserve-batching-off"]),
        ("dynamic batching", "classify_1_json", 16, ["monoserve-batching-on", "monoserve-batching-off"]),
        ("dynamic batching", "classify_64_json", 64, ["monoserve-batching-on", "monoserve-batching-off"]),
        ("hot path", "classify_1_json", 64, ["monoserve", "monoserve-routes", "ceiling"]),
        ("workers (CPUs 0-1)", "classify_1_json", 64, ["monoserve-w1-2cpu", "monoserve-w2-2cpu", "ceiling-w2-2cpu"]),
        ("workers (CPUs 0-1)", "smooth_large_npy", 4, ["monoserve-w1-2cpu", "monoserve-w2-2cpu"]),
    ]
    for topic, workload, concurrency, servers in cells:
        for server in servers:
            run = best(runs, server, workload, "req_per_s", concurrency)
            if run is not None:
                rows.append({"topic": topic, "workload": workload, "concurrency": concurrency, "server": server,
                             "req_per_s": run["req_per_s"], "samples_per_s": run["samples_per_s"],
                             "p50_ms": run["p50_ms"], "p99_ms": run["p99_ms"], "errors": run["errors"],
                             "server_cpu_percent": run["server_cpu_percent"]})  # fmt: skip
    return rows


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if abs(value) >= 1e6:
            return f"{value / 1e6:.{digits}f} M"
        if abs(value) >= 1e4:
            return f"{value / 1e3:.{digits}f} k"
        return f"{value:.{digits}f}" if abs(value) >= 1 or value == 0 else f"{value:.3g}"
    return str(value)


def to_markdown(result: dict) -> str:
    lines = [
        f"# Benchmark results ({'quick' if result['plan']['quick'] else 'full'})",
        "",
        f"- Machine: {result['machine']}",
        f"- Pinning: server on CPU {SERVER_CPUS}, wrk on CPU {WRK_CPUS} (taskset), loopback only; "
        f"wrk -t1, each run {result['plan']['duration']} s ({result['plan']['heavy_duration']} s for large bodies), servers interleaved, best of {result['plan']['rounds']} "
        f"round(s) per cell (the 2 cores are shared with other work). The naive server's large JSON body takes seconds per "
        f"request: it is timed with back-to-back requests on one connection for at least "
        f"{result['plan']['heavy_duration']} s (wrk would drop the unfinished one). "
        "Large bodies run at 1, 4 and 16 connections (64 would only queue gigabytes of bodies).",
        f"- In-process compute: ONNX Runtime, {result['inprocess']['threads']} intra-op thread, pinned like the server; "
        f"measured at the start and at the end of the run, the faster of the {result['inprocess'].get('measurements', 1)} "
        "kept (the strictest reference).",
        "- CUDA: not measured (no GPU in this session).",
        f"- Started: {result['started']}; took {result['elapsed_s']:.0f} s.",
        "",
        "## Targets (issues 6, 20 and 30)",
        "",
        "| target | measured | goal |",
        "|---|---|---|",
    ]
    for name, item in result["targets"].items():
        extra = ", ".join(f"{k} {fmt(v, 2)}" for k, v in item.items() if k not in ("value", "target"))
        lines.append(f"| {name} | {fmt(item['value'], 2)}{' (' + extra + ')' if extra else ''} | {item['target']} |")
    lines += [
        "", "## In-process compute (no HTTP)", "",
        "ORT: the exported graph in ONNX Runtime (the issue's reference). Service method: what /smooth runs for",
        "this shape by the measured rule (service/compute/convolve.py), timed in-process the same way.", "",
        "| workload | ORT median ms | ORT samples/s | service method | its median ms | its samples/s | notes |",
        "|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for name, item in result["inprocess"]["results"].items():
        notes = ""
        if "scipy_oaconvolve" in item:
            notes = f"scipy oaconvolve {item['scipy_oaconvolve']['median_ms']:.1f} ms (ratio {item['fft_vs_oaconvolve']:.2f})"
        if "service_method_max_rel_diff_vs_ort" in item:
            notes += f"; max diff vs ORT {item['service_method_max_rel_diff_vs_ort']:.1e} of the signal's scale"
        own = item.get("service_compute")
        lines.append(
            f"| {name} | {item['ort']['median_ms']:.3f} | {fmt(item['samples_per_s'])} | {item.get('service_method', '-')} | "
            f"{'-' if own is None else format(own['median_ms'], '.3f')} | {fmt(item.get('samples_per_s_service_method'))} | "
            f"{notes.lstrip('; ')} |"
        )
    lines += [
        "",
        "## HTTP runs",
        "",
        "`req/s`: requests answered 200 per second (errors counted apart). `server CPU %`: the CPU time the",
        "server got during the run (100 = one whole CPU); `req/CPU-s`: req/s",
        "divided by it, the throughput per CPU-second actually received (robust to other tenants' load).",
        "",
        "| server | workload | conc | req/s | samples/s | p50 ms | p99 ms | errors | server CPU % | req/CPU-s | RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for server in result["servers"]:
        for r in server["runs"]:
            per_cpu = r["req_per_s"] / (r["server_cpu_percent"] / 100) if r["server_cpu_percent"] > 0 else None
            lines.append(
                f"| {r['server']} | {r['workload']} | {r['concurrency']} | {fmt(r['req_per_s'])} | {fmt(r['samples_per_s'])} | "
                f"{fmt(r['p50_ms'], 2)} | {fmt(r['p99_ms'], 2)} | {r['errors']} | {r['server_cpu_percent']:.0f} | "
                f"{fmt(per_cpu)} | {r['rss_mb_max']:.0f} |"
            )
    floor_rows = floor.floor_rows(result)
    if floor_rows:
        lines += ["", "## Where a request's time goes in the service (bench/floor.py)", "",
                  "Per request: the server's CPU ms, and the service's own stage times (wall; with dynamic batching",
                  "`inference` includes the queue wait); shares of the CPU ms; in-process ORT ms / CPU ms per request.", ""]
        lines += floor.markdown(floor_rows)
    lines += ["", "## Side by side (req/s, (p50/p99 ms, server CPU %))", "",
              "Each cell: requests answered 200 per second, its p50 and p99 latency, and the CPU the server got.", ""]
    lines += side_by_side(result)
    versus = peer_comparison(result)
    if versus:
        lines += ["", "## The service against each peer (same workload, same concurrency, same run)", "",
                  "| workload | conc | peer | peer req/s | peer p99 ms | monoserve req/s | monoserve p99 ms | ratio |",
                  "|---|---|---|---|---|---|---|---|"]
        for row in versus:
            lines.append(f"| {row['workload']} | {row['concurrency']} | {row['peer']} | {fmt(row['peer_req_per_s'])} | "
                         f"{fmt(row['peer_p99_ms'], 1)} | {fmt(row['req_per_s'])} | {fmt(row['p99_ms'], 1)} | "
                         f"{fmt(row['ratio'], 2)} |")
    if result.get("grpc"):
        from grpc_side import to_markdown as grpc_markdown

        lines += ["", "## OIP gRPC (ModelInfer, raw tensors; bench/grpc_load.py pinned like wrk)", "",
                  "Each cell: calls answered OK per second (p50/p99 ms, server CPU %).", "",
                  grpc_markdown(result["grpc"]["rows"], result["grpc"]["servers"], result["grpc"]["unavailable"])]
    if result.get("unavailable"):
        lines += ["", "## Peers that could not run here", ""]
        for name, error in result["unavailable"].items():
            lines.append(f"- **{name}**: `{error}`")
    if result.get("comparisons"):
        lines += ["", "## Variants (same cell, same run)", "",
                  "| topic | workload | conc | server | req/s | samples/s | p50 ms | p99 ms | errors | server CPU % |",
                  "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for c in result["comparisons"]:
            lines.append(
                f"| {c['topic']} | {c['workload']} | {c['concurrency']} | {c['server']} | {fmt(c['req_per_s'])} | "
                f"{fmt(c['samples_per_s'])} | {fmt(c['p50_ms'], 2)} | {fmt(c['p99_ms'], 2)} | {c['errors']} | "
                f"{c['server_cpu_percent']:.0f} |"
            )
    lines += ["", "## Servers", ""]
    for server in result["servers"]:
        bad = {k: v for k, v in server["checks"].items() if v["status"] != 200 or v.get("matches") is False}
        lines.append(
            f"- **{server['name']}** (CPUs {server['cpus']}): `{' '.join(server['argv'])}` {server['note']}; "
            f"env {server['env'] or '{}'}; cold start to /readyz "
            f"{', '.join(f'{s:.2f}' for s in server['cold_start_s'])} s; idle RSS {server['rss_mb_idle']:.0f} MB; "
            + (
                "answers a constant (not checked)"
                if server["name"].startswith("ceiling")
                else f"answers checked against in-process ORT: {'all match' if not bad else bad}"
            )
        )
    if result.get("memory"):
        m = result["memory"]
        lines += [
            "",
            f"## Memory under load ({m['server']}, {m['workload']}, 64 connections, {m['seconds']} s)",
            "",
            f"RSS after warm-up (5-15 s) {m['rss_mb_warm']:.0f} MB, last 10 s {m['rss_mb_late']:.0f} MB, "
            f"max {m['rss_mb_max']:.0f} MB; {m['requests']} requests, errors {m['errors']}.",
        ]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------


def measure_inprocess(work: Path, plan: Plan, when: str, workloads: list[str] | None = None) -> dict:
    """bench/inprocess.py in its own process, pinned like the servers (every workload, or `workloads`)."""
    out = work / f"inprocess-{when}.json"
    subprocess.run(
        ["taskset", "-c", SERVER_CPUS, sys.executable, str(BENCH_DIR / "inprocess.py"), "--work", str(work),
         "--threads", "1", "--out", str(out), *(["--quick"] if plan.quick else []),
         *(["--workloads", ",".join(workloads)] if workloads else [])],
        check=True,
    )  # fmt: skip
    return json.loads(out.read_text())


def fastest_inprocess(runs: list[dict]) -> dict:
    """Per workload, the in-process measurement with the higher ORT samples/s (the one least disturbed
    by other work on the shared cores: the strictest reference for the HTTP ratios)."""
    best_of = {}
    for name in runs[0]["results"]:
        candidates = [run["results"][name] for run in runs]
        best_of[name] = max(candidates, key=lambda item: item["samples_per_s"])
        best_of[name]["samples_per_s_all_measurements"] = [item["samples_per_s"] for item in candidates]
    return {"threads": runs[0]["threads"], "measurements": len(runs), "results": best_of}


def log_tail(path: Path, lines: int = 6) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])[-1500:]
    except OSError:
        return "(no log)"


def install_stop_on_signals(registry: ProcessRegistry) -> None:
    """Ctrl-C / SIGTERM: stop every server and wrk this run started, then exit 128 + signal."""

    def on_signal(signum, _frame):
        registry.stop_all()
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the short variant (about 6 minutes with the peers)")
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK, help="models, bodies and logs (default bench/work)")
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results")
    parser.add_argument("--servers", help="comma-separated subset of the servers (monoserve,naive,ceiling,...)")
    parser.add_argument("--workloads", help="comma-separated subset of the workloads (e.g. classify_1_json)")
    parser.add_argument("--peers", default=",".join(PEER_REQUIREMENTS),
                        help="comma-separated peer servers (installed into bench/work/peers/ when missing), or 'none'")
    parser.add_argument("--grpc", default="monoserve,mlserver,kserve,pytriton",
                        help="servers whose OIP gRPC cells run after the HTTP ones (bench/grpc_side.py), or 'none'")
    parser.add_argument("--tag", default="", help="suffix of the result files (bench_quick_TAG.json): keep each run")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if shutil.which("wrk") is None:
        log.info("wrk is missing: installing it from Debian's packages")
        subprocess.run(["apt-get", "install", "-y", "wrk"], check=True, capture_output=True)
    if len(os.sched_getaffinity(0)) < 2:
        log.warning("fewer than 2 CPUs available: server and wrk will share a CPU")

    registry = ProcessRegistry()
    install_stop_on_signals(registry)
    started = time.time()
    plan = make_plan(args.quick)
    log.info("pinning: server on CPU %s, wrk on CPU %s (taskset); loopback only", SERVER_CPUS, WRK_CPUS)
    try:
        prepared = prepare(args.work)
        logs = args.work / "logs"
        inprocess_runs = [measure_inprocess(args.work, plan, "start")]
        log.info("in-process compute measured")
        references = {name: reference_output(args.work, w) for name, w in WORKLOADS.items()}
        include = set(args.servers.split(",")) if args.servers else None
        specs = server_specs(plan, args.work, prepared["repo"], include)
        peers = [] if args.peers == "none" else [p for p in args.peers.split(",") if include is None or p in include]
        extra, unavailable = peer_specs(plan, args.work, prepared["onnx"], peers)
        specs += extra
        if args.workloads:
            chosen = set(args.workloads.split(","))
            for spec in specs:
                spec.workloads = {k: v for k, v in spec.workloads.items() if k in chosen}
            specs = [spec for spec in specs if spec.workloads]
        running = []
        for spec in specs:
            try:
                running.append(start_server(spec, plan, registry, logs))
            except RuntimeError as exc:  # a peer that cannot start here: reported with its error, the run goes on
                if spec.name not in peers:
                    raise
                unavailable[spec.name] = f"{exc}; log: {log_tail(logs / f'{spec.name}.log')}"
                log.error("[%s] could not start: %s", spec.name, unavailable[spec.name])
        for server in running:
            check_server(server, args.work, references)
        adjacent = benchmark(running, plan, args.work)
        for server in running:
            registry.stop(server.process)
        servers = [server.summary() for server in running]
        grpc_cells = None
        grpc_servers = [] if args.grpc == "none" else [
            name for name in args.grpc.split(",")
            if (name == "monoserve" or name in peers) and (include is None or name in include)]
        if grpc_servers:  # the gRPC cells, same run: each server again with its gRPC port, interleaved per cell
            from grpc_side import GRPC_WORKLOADS, measure_grpc

            chosen_grpc = [w for w in GRPC_WORKLOADS if not args.workloads or w in args.workloads.split(",")]
            grpc_cells = measure_grpc(args.work, prepared, registry, grpc_servers, chosen_grpc,
                                      max(plan.duration, 4.0))  # gRPC cells: 4 s (2 s spread the gRPC ratios too much)
            grpc_cells["servers"] = grpc_servers
        inprocess_runs.append(measure_inprocess(args.work, plan, "end"))
        inprocess = fastest_inprocess(inprocess_runs)
        memory = None
        mono = next((s for s in specs if s.name == "monoserve"), None)
        if plan.memory_run_s and mono is not None:
            memory = memory_run(mono, plan, args.work, registry, logs)
    finally:
        registry.stop_all()
    result = {
        "machine": f"{platform.node()}: {platform.machine()}, {os.cpu_count()} CPUs, "
        f"{platform.python_version()}, {platform.platform()}",
        "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)),
        "elapsed_s": time.time() - started,
        "plan": dataclasses.asdict(plan),
        "pinning": {"server_cpus": SERVER_CPUS, "wrk_cpus": WRK_CPUS},
        "inprocess": inprocess,
        "servers": servers,
        "unavailable": unavailable,
        "memory": memory,
        "grpc": grpc_cells,
        "adjacent": adjacent,
    }
    result["targets"] = summarize(result)
    result["comparisons"] = comparisons(result)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = ("bench_quick" if plan.quick else "bench") + (f"_{args.tag}" if args.tag else "")
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=2, default=str))
    markdown = to_markdown(result)
    (args.out / f"{stem}.md").write_text(markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
