"""Where a server's time goes on one workload: py-spy samples the server's process tree while wrk
drives it, and the samples are summed by where they were spent (the innermost frame of ours or of
a library, grouped by package).

    .venv/bin/python bench/peers/profile.py SERVER WORKLOAD [--connections 16] [--seconds 8] [--py-spy PATH]

SERVER: monoserve or a peer (mlserver, litserve, kserve, pytriton). py-spy is not a dependency of
anything: pass its path (e.g. a throwaway venv with `pip install py-spy`). Writes the raw samples
and a summary (json) under bench/work/profiles/.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import subprocess
import sys
import threading
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(BENCH))

import run as bench_run  # noqa: E402
from peers import specs as peer_specs  # noqa: E402
from peers.setup import ensure_peer  # noqa: E402
from prepare import DEFAULT_WORK, prepare  # noqa: E402
from workloads import WORKLOADS  # noqa: E402

# package of a frame's file -> a readable bucket; first match wins
BUCKETS = [
    ("onnxruntime", "ONNX Runtime"), ("numpy", "numpy"), ("orjson", "JSON (orjson)"), ("simdjson", "JSON (simdjson)"),
    ("json/", "JSON (stdlib json)"), ("pydantic", "pydantic"), ("fastapi", "FastAPI"), ("starlette", "Starlette"),
    ("uvicorn", "uvicorn"), ("httptools", "uvicorn"), ("h11", "uvicorn"), ("asyncio", "asyncio"),
    ("anyio", "anyio (threads)"), ("litserve", "LitServe"), ("mlserver", "MLServer"), ("kserve", "KServe"),
    ("pytriton", "PyTriton"), ("tritonclient", "PyTriton"), ("zmq", "ZeroMQ"), ("multiprocessing", "multiprocessing"),
    ("prometheus", "metrics"), ("service/", "monoserve"), ("peers/", "peer model code"), ("threading", "threads"),
]


def bucket(frame: str) -> str:
    for key, name in BUCKETS:
        if key in frame:
            return name
    return "other (interpreter, C, idle)"


def summarize(raw: str) -> dict:
    """Collapsed stacks ('a;b;c N') -> shares of samples by the innermost frame's bucket and top leaf frames."""
    by_bucket: collections.Counter = collections.Counter()
    by_leaf: collections.Counter = collections.Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = [f for f in stack.split(";") if f]
        n = int(count)
        total += n
        leaf = frames[-1] if frames else "?"
        known = next((f for f in reversed(frames) if bucket(f) != "other (interpreter, C, idle)"), leaf)
        by_bucket[bucket(known)] += n
        by_leaf[re.sub(r"\s+", " ", leaf)[:160]] += n
    share = lambda c: {k: round(v / total, 3) for k, v in c.most_common(12)} if total else {}  # noqa: E731
    return {"samples": total, "by_package": share(by_bucket), "top_frames": share(by_leaf)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("server")
    parser.add_argument("workload", choices=sorted(WORKLOADS))
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--py-spy", default="py-spy")
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK)
    args = parser.parse_args(argv)
    prepared = prepare(args.work)
    if args.server == "monoserve":
        spec = bench_run.ServerSpec("monoserve", bench_run.monoserve_argv(prepared["repo"]), {})
    else:
        python = ensure_peer(args.work, args.server)
        if python is None:
            raise SystemExit(f"{args.server} is not installed")
        spec = bench_run.ServerSpec(args.server, peer_specs.peer_argv(python, args.server), {},
                                    env=peer_specs.peer_env(prepared["onnx"]), ready_path=peer_specs.READY_PATH[args.server])
    workload = WORKLOADS[args.workload]
    registry = bench_run.ProcessRegistry()
    out = args.work / "profiles"
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"{args.server}-{args.workload}-c{args.connections}"
    port = bench_run.free_port()
    argv_ = [a.replace("{port}", str(port)) for a in spec.argv]
    try:
        process = registry.start(argv_, bench_run.SERVER_CPUS, spec.env, out / f"{args.server}.log")
        base = f"http://127.0.0.1:{port}"
        bench_run.wait_ready(process, base + spec.ready_path)
        bench_run.check_answer(base, workload, workload.body_file(args.work), None)
        spy = subprocess.Popen([args.py_spy, "record", "--format", "raw", "--subprocesses", "--nonblocking", "--rate", "200",
                                "--duration", str(int(args.seconds)), "--pid", str(process.pid), "--output", f"{stem}.txt"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        stats: dict = {}
        load = threading.Thread(target=lambda: stats.update(bench_run.run_wrk(
            base + workload.url_path, workload, workload.body_file(args.work), args.connections, args.seconds, 30,
            bench_run.WRK_CPUS)))
        load.start()
        load.join()
        spy.wait(timeout=120)
    finally:
        registry.stop_all()
    summary = {"server": args.server, "workload": args.workload, "connections": args.connections,
               "requests": stats.get("requests"), **summarize(Path(f"{stem}.txt").read_text())}
    Path(f"{stem}.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
