#!/usr/bin/env python3
"""gRPC beside REST on the same tensors: what each protocol costs per request, one client.

    .venv/bin/python bench/grpc_bench.py                     # starts `monoserve serve` on bench/work/repo
    .venv/bin/python bench/grpc_bench.py --url http://127.0.0.1:8000 --grpc 127.0.0.1:8001   # a running server

Cases, the same float32 tensors every way (bodies built once, before timing, so only the transport
and the server differ): 1-row and 64-row classify, 8 x 125,000 smooth, each as
- gRPC ModelInfer with raw_input_contents (a prebuilt message over a grpcio channel),
- the same through tritonclient.grpc (its encoding and decoding included, as its users see it),
- OIP REST with binary tensors (httpx, prebuilt body),
- /classify or /smooth with .npy in and out (httpx, prebuilt body).
One client, sequential requests (latency, not throughput), the cases of a workload taking turns;
median and p90 in ms. Writes
bench/results/grpc.json and prints a Markdown table (docs/performance.md).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import grpc
import httpx
import numpy as np
import orjson
import tritonclient.grpc as triton
from tritonclient.grpc import service_pb2

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
RESULTS = ROOT / "bench" / "results" / "grpc.json"
METHOD = "/inference.GRPCInferenceService/ModelInfer"


ROUNDS = 10  # the cases of a workload take turns, a tenth of their requests at a time: a machine shared
# with other work slows them alike instead of whichever case ran while it was busy


def measure(sends: dict[str, Callable[[], object]], requests: int) -> dict[str, dict]:
    times: dict[str, list[float]] = {key: [] for key in sends}
    for send in sends.values():  # warm-up
        for _ in range(3):
            send()
    per_round = max(1, requests // ROUNDS)
    for _ in range(ROUNDS):
        for key, send in sends.items():
            for _ in range(per_round):
                start = time.perf_counter()
                send()
                times[key].append((time.perf_counter() - start) * 1e3)
    summary = {}
    for key, values in times.items():
        values.sort()
        summary[key] = {"median_ms": statistics.median(values), "p90_ms": values[int(0.9 * (len(values) - 1))],
                        "requests": len(values)}
    return summary


def raw_infer_request(model: str, name: str, array: np.ndarray) -> bytes:
    """A serialized ModelInferRequest carrying `array` (float32) as raw_input_contents."""
    message = service_pb2.ModelInferRequest(model_name=model, raw_input_contents=[array.astype("<f4").tobytes()])
    message.inputs.add(name=name, datatype="FP32", shape=list(array.shape))
    return message.SerializeToString()


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def cases(http: httpx.Client, channel: grpc.Channel, tc: triton.InferenceServerClient, smoother: str,
          classifier: str, features: int) -> dict[str, tuple[str, Callable[[], object]]]:
    infer = channel.unary_unary(METHOD)  # bytes in, bytes out: the prebuilt message

    def check(response: httpx.Response) -> httpx.Response:
        return response.raise_for_status()

    found: dict[str, tuple[str, Callable[[], object]]] = {}
    rng = np.random.default_rng(0)
    tensors = {"classify 1 row": (classifier, "features", rng.standard_normal((1, features)).astype(np.float32)),
               "classify 64 rows": (classifier, "features", rng.standard_normal((64, features)).astype(np.float32)),
               "smooth 8 x 125,000": (smoother, "signal", rng.standard_normal((8, 125_000)).astype(np.float32))}
    for workload, (model, name, array) in tensors.items():
        body = raw_infer_request(model, name, array)
        tensor = triton.InferInput(name, list(array.shape), "FP32")
        tensor.set_data_from_numpy(array)
        head = orjson.dumps({"inputs": [{"name": name, "shape": list(array.shape), "datatype": "FP32",
                                         "parameters": {"binary_data_size": array.nbytes}}],
                             "parameters": {"binary_data_output": True}})
        oip_body = head + array.tobytes()
        route = "/classify" if name == "features" else "/smooth"
        npy_body = npy(array)
        found[f"{workload} | gRPC raw (grpcio)"] = (workload, lambda body=body: infer(body, timeout=60))
        found[f"{workload} | gRPC (tritonclient.grpc)"] = (
            workload, lambda model=model, tensor=tensor: tc.infer(model, [tensor]).as_numpy(tensor.name()))
        found[f"{workload} | OIP REST binary"] = (workload, lambda model=model, oip_body=oip_body, head=head: check(
            http.post(f"/v2/models/{model}/infer", content=oip_body,
                      headers={"Inference-Header-Content-Length": str(len(head))})))
        found[f"{workload} | {route} .npy"] = (workload, lambda route=route, model=model, npy_body=npy_body: check(
            http.post(f"{route}?model={model}", content=npy_body,
                      headers={"content-type": "application/x-npy", "accept": "application/x-npy"})))
    return found


def start_server(repo: Path) -> tuple[subprocess.Popen, str, str]:
    from run import free_port, wait_ready  # bench/run.py's

    port, grpc_port = free_port(), free_port()
    argv = [sys.executable, "-m", "monoserve.cli", "serve", "--repo", str(repo), "--port", str(port),
            "--grpc-port", str(grpc_port)]
    env = {**os.environ, "MONOSERVE_LOG_LEVEL": "WARNING"}
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    wait_ready(process, f"{url}/readyz")
    return process, url, f"127.0.0.1:{grpc_port}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running server's HTTP base URL (default: start one)")
    parser.add_argument("--grpc", help="its gRPC host:port (with --url)")
    parser.add_argument("--repo", type=Path, default=ROOT / "bench" / "work" / "repo",
                        help="repository for the server started here (bench/prepare.py makes it)")
    parser.add_argument("--requests", type=int, default=400, help="per small case (smooth cases: a tenth)")
    parser.add_argument("--smoother", default="smoother")
    parser.add_argument("--classifier", default="classifier")
    args = parser.parse_args()
    process = None
    if args.url is None:
        process, args.url, args.grpc = start_server(args.repo)
    try:
        http = httpx.Client(base_url=args.url, timeout=120)
        features = http.get(f"/v2/models/{args.classifier}").raise_for_status().json()["inputs"][0]["shape"][1]
        options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
        with grpc.insecure_channel(args.grpc, options=options) as channel, \
                triton.InferenceServerClient(args.grpc) as tc:
            rows = []
            print(f"| workload | protocol | median ms | p90 ms |  (sequential requests after warm-ups; {platform.node()})")
            print("|---|---|---:|---:|")
            by_workload: dict[str, dict[str, Callable[[], object]]] = {}
            for key, (workload, send) in cases(http, channel, tc, args.smoother, args.classifier, features).items():
                by_workload.setdefault(workload, {})[key.split(" | ", 1)[1]] = send
            for workload, sends in by_workload.items():
                requests = args.requests if "smooth" not in workload else max(ROUNDS, args.requests // 10)
                for protocol, result in measure(sends, requests).items():
                    rows.append({"workload": workload, "protocol": protocol, **result})
                    print(f"| {workload} | {protocol} | {result['median_ms']:.2f} | {result['p90_ms']:.2f} |", flush=True)
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=30)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"cpus": os.cpu_count(), "shared_machine": True, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
