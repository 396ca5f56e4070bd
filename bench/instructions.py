"""CPU instructions per request, counted by valgrind (callgrind): a measure that other tenants of a
shared machine cannot disturb, for comparing two versions of the code when wall and CPU time move
by +-15% from run to run.

Two modes:

- `app`: the ASGI app in-process (service.app, hot path, batching as configured), driven like
  bench/asgi_cost.py; the count of a long run minus a short one, divided by the extra requests
  (start-up cancels out).
- `server`: a real `monoserve serve` process under callgrind with uvicorn and its HTTP parser,
  driven over 64 keep-alive connections by a client outside valgrind; counters zeroed after a
  warm-up, dumped after N requests.

`--tree DIR` measures another checkout (e.g. `git worktree add /tmp/old <commit>`) with this
environment's packages: DIR goes first on PYTHONPATH. Needs valgrind (Debian: `apt install
valgrind`); about 2-5 minutes per measurement.

    .venv/bin/python bench/instructions.py --mode server [--tree DIR] [--work DIR] [--requests 1500]
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "bench"))

from prepare import DEFAULT_WORK  # noqa: E402
from run import free_port, wait_ready  # noqa: E402
from workloads import WORKLOADS  # noqa: E402

APP_DRIVER = """
import asyncio, os, sys
sys.path.insert(0, os.path.join(os.environ["BENCH_ROOT"], "bench"))
os.environ.setdefault("MONOSERVE_LOG_LEVEL", "WARNING")
import asgi_cost
from workloads import WORKLOADS
from pathlib import Path
workload = WORKLOADS[os.environ["BENCH_WORKLOAD"]]
work = Path(os.environ["BENCH_WORK"])
body = workload.body_file(work).read_bytes()
app = asgi_cost.monoserve_app(work / "repo", hot_path=True, batching=os.environ["BENCH_BATCHING"] == "1")
async def main():
    async with asgi_cost.Lifespan(app):
        for _ in range(int(os.environ["BENCH_ROUNDS"])):
            await asyncio.gather(*(asgi_cost.one_request(app, workload, body) for _ in range(64)))
asyncio.run(main())
"""

SERVER_START = """
import os, sys
tree = os.environ["BENCH_TREE"]
if os.path.exists(os.path.join(tree, "service", "server.py")):
    from service.server import main
    sys.exit(main())
from monoserve.cli import main  # older trees: the server ran inside `monoserve serve`
sys.argv = ["monoserve", "serve", "--repo", os.environ["MONOSERVE_REPO"], "--host", "127.0.0.1",
            "--port", os.environ["MONOSERVE_PORT"]]
sys.exit(main())
"""


def collected(stderr: str) -> int:
    for line in stderr.splitlines():
        if "Collected :" in line:
            return int(line.rsplit(":", 1)[1].replace(",", "").strip())
    raise RuntimeError(f"no callgrind total in: {stderr[-1000:]}")


def app_instructions(tree: Path, work: Path, workload: str, batching: bool, short: int, long: int) -> float:
    counts = []
    for rounds in (short, long):
        env = {**os.environ, "PYTHONPATH": str(tree), "BENCH_ROOT": str(tree), "BENCH_WORK": str(work),
               "BENCH_WORKLOAD": workload, "BENCH_BATCHING": "1" if batching else "0", "BENCH_ROUNDS": str(rounds)}
        done = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
                               "-c", APP_DRIVER], env=env, capture_output=True, text=True, check=False)
        counts.append(collected(done.stderr))
    return (counts[1] - counts[0]) / ((long - short) * 64)


async def _drive(port: int, request: bytes, total: int, connections: int) -> dict[int, int]:
    left, statuses = total, {}

    async def one_connection() -> None:
        nonlocal left
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while left > 0:
            left -= 1
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            statuses[status] = statuses.get(status, 0) + 1
            length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)
            await reader.readexactly(length)
        writer.close()

    await asyncio.gather(*(one_connection() for _ in range(connections)))
    return statuses


def server_instructions(tree: Path, work: Path, workload_name: str, requests: int) -> float:
    workload = WORKLOADS[workload_name]
    body = workload.body_file(work).read_bytes()
    request = (f"POST {workload.url_path} HTTP/1.1\r\nHost: x\r\nContent-Type: {workload.content_type}\r\n"
               f"Accept: {workload.accept}\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
    port = free_port()
    out_dir = Path(tempfile.mkdtemp(prefix="monoserve-callgrind-"))
    env = {**os.environ, "PYTHONPATH": str(tree), "BENCH_TREE": str(tree), "MONOSERVE_REPO": str(work / "repo"),
           "MONOSERVE_PORT": str(port), "MONOSERVE_HOST": "127.0.0.1", "MONOSERVE_LOG_LEVEL": "warning",
           "MONOSERVE_CPU_THREADS": "1",  # no spinning inference threads in the count
           "MONOSERVE_POLL_INTERVAL_S": "100000"}  # no repository polls in the count
    server = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out_dir}/cg.%p", sys.executable,
                               "-c", SERVER_START], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_ready(server, f"http://127.0.0.1:{port}/readyz", timeout=900)
        asyncio.run(_drive(port, request, 300, 64))  # warm-up: batchers, caches, first allocations
        subprocess.run(["callgrind_control", "-z", str(server.pid)], capture_output=True, check=True)
        statuses = asyncio.run(_drive(port, request, requests, 64))
        if statuses != {200: requests}:
            raise RuntimeError(f"not every request was answered 200: {statuses}")
        subprocess.run(["callgrind_control", "-d", str(server.pid)], capture_output=True, check=True)
        time.sleep(1)
        total = 0
        for path in glob.glob(f"{out_dir}/cg.*"):
            for line in Path(path).read_text(errors="replace").splitlines():
                if line.startswith("summary:"):
                    total = max(total, int(line.split()[1]))
        if not total:
            raise RuntimeError("callgrind wrote no dump")
        return total / requests
    finally:
        server.terminate()
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(out_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("app", "server"), default="server")
    parser.add_argument("--tree", type=Path, default=REPO_ROOT, help="the checkout to measure (default: this one)")
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK, help="bench/prepare.py's output for that tree")
    parser.add_argument("--workload", default="classify_1_json", choices=sorted(WORKLOADS))
    parser.add_argument("--requests", type=int, default=1500, help="server mode: requests counted")
    parser.add_argument("--no-batching", action="store_true", help="app mode: batching off")
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        print("bench/instructions.py needs valgrind (apt install valgrind)", file=sys.stderr)
        return 2
    tree = args.tree.resolve()
    if args.mode == "app":
        value = app_instructions(tree, args.work.resolve(), args.workload, not args.no_batching, 5, 25)
    else:
        value = server_instructions(tree, args.work.resolve(), args.workload, args.requests)
    print(f"{args.mode} {args.workload} {tree}: {value:,.0f} instructions per request")
    return 0


if __name__ == "__main__":
    sys.exit(main())
