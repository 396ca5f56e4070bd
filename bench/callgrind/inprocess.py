"""Instructions per request of an ASGI app in-process, for callgrind (bench/callgrind/count_inprocess.sh).

    python bench/callgrind/inprocess.py APP WORKLOAD N FIFO

APP: raw, fastapi, hot, hot_batching (bench/asgi_cost.py's apps). After 200 requests of warm-up it
prints WARM and blocks reading FIFO (the shell turns callgrind's instrumentation on, then writes to
it); it sends N requests, 64 at a time, prints DONE and blocks on FIFO again (instrumentation off).
Only the N requests are counted: deterministic, whatever else runs on the machine.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(BENCH))
os.environ.setdefault("MONOSERVE_LOG_LEVEL", "WARNING")

import asgi_cost  # noqa: E402
from workloads import WORKLOADS  # noqa: E402


async def drive(app, workload, body: bytes, n: int, fifo: str) -> None:
    async with asgi_cost.Lifespan(app):
        for _ in range(200):
            assert await asgi_cost.one_request(app, workload, body) == 200
        print("WARM", flush=True)
        with open(fifo) as handshake:
            handshake.read()
        sent = 0
        while sent < n:
            batch = min(64, n - sent)
            statuses = await asyncio.gather(*(asgi_cost.one_request(app, workload, body) for _ in range(batch)))
            assert all(status == 200 for status in statuses), statuses
            sent += batch
        print("DONE", flush=True)
        with open(fifo) as handshake:
            handshake.read()


def main() -> None:
    app_name, workload, n, fifo = sys.argv[1], WORKLOADS[sys.argv[2]], int(sys.argv[3]), sys.argv[4]
    work = BENCH / "work"
    body = workload.body_file(work).read_bytes()
    repo = work / "repo"
    app = {"raw": lambda: asgi_cost.raw_constant_app, "fastapi": lambda: __import__("ceiling_server").app,
           "hot": lambda: asgi_cost.monoserve_app(repo, hot_path=True, batching=False),
           "hot_batching": lambda: asgi_cost.monoserve_app(repo, hot_path=True, batching=True)}[app_name]()
    asyncio.run(drive(app, workload, body, n, fifo))


if __name__ == "__main__":
    main()
