#!/usr/bin/env python3
"""OIP gRPC side by side (issue 20): the service, MLServer, KServe and PyTriton (Triton
Inference Server with the model in its Python backend) on the same tensors,
sent as ModelInfer with raw_input_contents by bench/grpc_load.py (N calls in flight, a fixed duration).

    .venv/bin/python bench/grpc_side.py [--servers monoserve,mlserver,kserve,pytriton] [--workloads ...] [--duration 4]

As bench/run.py does for HTTP: the servers started together, each pinned to CPU 0 (taskset), and
interleaved within each cell (the others in the idle scheduling class while one is timed:
run.focus_cpu), the load generator in its own process on CPU 1, loopback only; every answer checked
against in-process ONNX Runtime before a
workload is timed; the server's CPU time read from /proc over the timed window. Concurrency 1 and 64
(8 x 125,000 smooth: 1). Writes bench/results/grpc_side.json and prints a Markdown table
(docs/performance.md). `make bench-grpc` runs it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import grpc
import numpy as np
from tritonclient.grpc import service_pb2

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

from grpc_bench import METHOD, raw_infer_request  # noqa: E402
from grpc_load import CHANNEL_OPTIONS, MEASURING, parse_result  # noqa: E402
from peers import specs as peer_specs_module  # noqa: E402
from peers.setup import ensure_peer  # noqa: E402
from prepare import DEFAULT_WORK, prepare  # noqa: E402
from run import (SERVER_CPUS, WRK_CPUS, ProcessRegistry, cpu_seconds, focus_cpu, free_port, install_stop_on_signals,  # noqa: E402
                 log_tail, monoserve_argv, process_tree, reference_output, wait_idle, wait_ready)
from workloads import WORKLOADS, Workload  # noqa: E402

log = logging.getLogger("bench.grpc_side")
RESULTS = BENCH_DIR / "results" / "grpc_side.json"
GRPC_WORKLOADS = ("classify_1_oipbin", "classify_64_oipbin", "smooth_medium_oipbin", "smooth_large_oipbin")
GRPC_SERVERS = ("monoserve", "mlserver", "kserve", "pytriton")
HEAVY = "smooth_large_oipbin"  # seconds per request on a peer: one call in flight


def decode_response(raw: bytes, output_name: str) -> np.ndarray:
    """The named FP32 output of a serialized ModelInferResponse (raw_output_contents or typed contents)."""
    response = service_pb2.ModelInferResponse.FromString(raw)
    for index, output in enumerate(response.outputs):
        if output.name != output_name:
            continue
        if response.raw_output_contents:
            array = np.frombuffer(response.raw_output_contents[index], dtype="<f4")
        else:
            array = np.asarray(output.contents.fp32_contents, dtype=np.float32)
        return array.reshape(list(output.shape))
    raise ValueError(f"no output {output_name!r} in the response (outputs: {[o.name for o in response.outputs]})")


def check_grpc_answer(target: str, workload: Workload, body: bytes, expected: np.ndarray, timeout: float = 60.0) -> dict:
    """One call (retried while the gRPC server is still coming up), its answer compared with the reference."""
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(target, options=CHANNEL_OPTIONS) as channel:
        infer = channel.unary_unary(METHOD)
        while True:
            try:
                raw = infer(body, timeout=120)
                break
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                    return {"ok": False, "error": f"{exc.code().name}: {exc.details()}"}
                time.sleep(0.5)
    got = decode_response(raw, workload.output_name).reshape(expected.shape)
    diff = float(np.abs(got - expected).max())
    scale = max(1.0, float(np.abs(expected).max()))
    return {"ok": diff <= 1e-4 * scale, "max_abs_diff": diff}


def server_argv(name: str, repo: Path, work: Path, port: int, grpc_port: int) -> tuple[list[str], dict, str]:
    """argv, env and readiness path of one server, its gRPC port on 127.0.0.1."""
    if name == "monoserve":
        argv = [a.replace("{port}", str(port)) for a in monoserve_argv(repo)]
        argv[argv.index("--grpc-port") + 1] = str(grpc_port)  # bench/run.py starts it without gRPC
        return argv, {"MONOSERVE_LOG_LEVEL": "WARNING"}, "/readyz"
    python = ensure_peer(work, name)
    if python is None:
        raise RuntimeError(f"peer {name} is not installed")
    argv = [a.replace("{port}", str(port)) for a in peer_specs_module.peer_argv(python, name)] + [str(grpc_port)]
    return argv, {}, peer_specs_module.READY_PATH[name]


def run_load(target: str, body_file: Path, concurrency: int, duration: float, server_pid: int) -> dict:
    """One timed run of bench/grpc_load.py on the client CPU; the server's CPU % over its timed window."""
    argv = ["taskset", "-c", WRK_CPUS, sys.executable, str(BENCH_DIR / "grpc_load.py"), "--target", target,
            "--body-file", str(body_file), "--concurrency", str(concurrency), "--duration", str(duration)]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = process.stdout.readline()
    if first.strip() != MEASURING:
        process.kill()
        raise RuntimeError(f"load generator failed before timing: {first!r} {process.stderr.read()[-500:]}")
    cpu0, t0 = cpu_seconds(process_tree(server_pid)), time.monotonic()
    line = process.stdout.readline()
    cpu1, t1 = cpu_seconds(process_tree(server_pid)), time.monotonic()
    rest, stderr = process.communicate(timeout=60)
    if process.returncode != 0:
        raise RuntimeError(f"load generator exited {process.returncode}: {stderr[-500:]}")
    return {**parse_result(line + rest), "server_cpu_percent": 100 * (cpu1 - cpu0) / (t1 - t0)}


def to_markdown(rows: list[dict], servers: list[str], unavailable: dict[str, str]) -> str:
    lines = ["| workload | calls in flight | " + " | ".join(servers) + " |", "|---|---:|" + "---:|" * len(servers)]
    keys = sorted({(r["workload"], r["concurrency"]) for r in rows}, key=lambda k: (GRPC_WORKLOADS.index(k[0]), k[1]))
    for workload, concurrency in keys:
        cells = []
        for server in servers:
            found = [r for r in rows if (r["server"], r["workload"], r["concurrency"]) == (server, workload, concurrency)]
            if not found:
                cells.append("-")
                continue
            r = found[0]
            errors = sum(r["errors"].values())
            cells.append(f"{r['req_per_s']:.0f} ({r['p50_ms']:.2f}/{r['p99_ms']:.2f}, {r['server_cpu_percent']:.0f}%)"
                         + (f" {errors} err" if errors else ""))
        lines.append(f"| {workload.removesuffix('_oipbin')} | {concurrency} | " + " | ".join(cells) + " |")
    for name, error in unavailable.items():
        lines.append(f"\n- {name}: not run: {error}")
    return "\n".join(lines)


def measure_grpc(work: Path, prepared: dict, registry: ProcessRegistry, servers: list[str], workload_names: list[str],
                 duration: float) -> dict:
    """Every server started with its OIP gRPC port (all at once, idle but the one being timed), every
    answer checked, then each workload timed at 1 and 64 calls in flight (the heavy one at 1) with
    the servers interleaved within each cell, as bench/run.py does for HTTP: every server of a cell
    is timed within seconds of the others, under the same background load. {"rows", "checks",
    "unavailable"}. bench/run.py calls this in the same run as its HTTP cells; `make bench-grpc`
    runs it alone."""
    logs, bodies = work / "logs", work / "bodies"
    bodies.mkdir(parents=True, exist_ok=True)
    workloads = [WORKLOADS[name] for name in workload_names]
    references, body_files = {}, {}
    for workload in workloads:
        references[workload.name] = reference_output(work, workload)
        body_files[workload.name] = bodies / f"{workload.name}.grpc"
        body_files[workload.name].write_bytes(raw_infer_request(workload.model, workload.input_name, workload.array()))
    rows, checks, unavailable = [], {}, {}
    running: dict[str, tuple[subprocess.Popen, str]] = {}
    try:
        for name in servers:
            port, grpc_port = free_port(), free_port()
            try:
                argv, env, ready = server_argv(name, prepared["repo"], work, port, grpc_port)
                if name != "monoserve":
                    env = {**peer_specs_module.peer_env(prepared["onnx"]), **env}
                process = registry.start(argv, SERVER_CPUS, env, logs / f"{name}-grpc.log")
                wait_ready(process, f"http://127.0.0.1:{port}{ready}")
            except RuntimeError as exc:
                unavailable[name] = f"{exc}; log: {log_tail(logs / f'{name}-grpc.log')}"
                log.error("[%s] could not start: %s", name, unavailable[name])
                continue
            running[name] = (process, f"127.0.0.1:{grpc_port}")
        checked: dict[str, list[str]] = {workload.name: [] for workload in workloads}
        for name, (process, target) in running.items():
            for workload in workloads:
                body = body_files[workload.name].read_bytes()
                try:
                    check = check_grpc_answer(target, workload, body, references[workload.name])
                except Exception as exc:  # an answer we cannot read: reported, not timed
                    check = {"ok": False, "error": f"{type(exc).__name__}: {str(exc)[:300]}"}
                checks[f"{name}/{workload.name}"] = check
                if check["ok"]:
                    checked[workload.name].append(name)
                else:
                    log.error("[%s] %s: bad gRPC answer, not timed: %s", name, workload.name, check)
        for workload in workloads:
            for concurrency in ((1,) if workload.name == HEAVY else (1, 64)):
                for name in checked[workload.name]:
                    process, target = running[name]
                    focus_cpu([other for other, _ in running.values()], process)
                    wait_idle(process.pid)
                    try:
                        result = run_load(target, body_files[workload.name], concurrency, duration, process.pid)
                    except (RuntimeError, ValueError, subprocess.TimeoutExpired) as exc:
                        log.error("[%s] %s c=%d: %s", name, workload.name, concurrency, exc)
                        checks[f"{name}/{workload.name}/c{concurrency}"] = {"ok": False, "error": str(exc)[:500]}
                        continue
                    rows.append({"server": name, "workload": workload.name, "concurrency": concurrency, **result})
                    log.info("[%s] gRPC %-20s c=%-3d %8.1f req/s p50 %7.2f ms p99 %7.2f ms err %s cpu %3.0f%%", name,
                             workload.name, concurrency, result["req_per_s"], result["p50_ms"], result["p99_ms"],
                             result["errors"], result["server_cpu_percent"])
    finally:
        for process, _ in running.values():
            registry.stop(process)
    return {"rows": rows, "checks": checks, "unavailable": unavailable}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK)
    parser.add_argument("--servers", default=",".join(GRPC_SERVERS))
    parser.add_argument("--workloads", default=",".join(GRPC_WORKLOADS))
    parser.add_argument("--duration", type=float, default=4.0, help="timed seconds per cell")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    registry = ProcessRegistry()
    install_stop_on_signals(registry)
    prepared = prepare(args.work)
    servers = args.servers.split(",")
    try:
        measured = measure_grpc(args.work, prepared, registry, servers, args.workloads.split(","), args.duration)
    finally:
        registry.stop_all()
    table = to_markdown(measured["rows"], servers, measured["unavailable"])
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "machine": f"{platform.node()}: {os.cpu_count()} CPUs, shared with other work", "shared_machine": True,
        "pinning": {"server_cpus": SERVER_CPUS, "client_cpus": WRK_CPUS}, "duration_s": args.duration,
        **measured}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
