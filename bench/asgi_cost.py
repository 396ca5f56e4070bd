"""CPU cost per request of each ASGI app layer, in-process (no sockets, no HTTP parsing).

Drives an ASGI application directly with synthetic `receive`/`send` (the same messages uvicorn
sends), `--concurrency` requests at a time, and reports the process CPU time per request
(time.process_time: robust to other tenants on the shared cores, unlike wall time). Compares:

- raw ASGI returning a constant (the floor of any Python ASGI app),
- FastAPI returning a constant (bench/ceiling_server.py),
- monoserve with its hot path (service.edge.fastpath) and without it (FastAPI routes), batching on/off.

    .venv/bin/python bench/asgi_cost.py [--requests 3000] [--concurrency 64] [--workload classify_1_json]

uvicorn's own cost (sockets, HTTP parsing) is the same for every app and is not included.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(REPO_ROOT))  # after PYTHONPATH and the installed project
sys.path.insert(0, str(REPO_ROOT / "bench"))

from prepare import DEFAULT_WORK  # noqa: E402
from workloads import WORKLOADS, Workload  # noqa: E402

CONSTANT = b'{"model":"classifier","version":1,"scores":[0.5],"labels":["spam"],"threshold":0.5}'


async def raw_constant_app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": CONSTANT})


class Lifespan:
    def __init__(self, app) -> None:
        self.app = app
        self.inbox: asyncio.Queue = asyncio.Queue()
        self.outbox: asyncio.Queue = asyncio.Queue()

    async def __aenter__(self):
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
        self.task = asyncio.ensure_future(self.app(scope, self.inbox.get, self.outbox.put))
        await self.inbox.put({"type": "lifespan.startup"})
        message = await self.outbox.get()
        if message["type"] != "lifespan.startup.complete":
            raise RuntimeError(f"startup failed: {message}")
        return self

    async def __aexit__(self, *exc) -> None:
        await self.inbox.put({"type": "lifespan.shutdown"})
        await self.outbox.get()
        await self.task


@functools.cache
def _extra_headers(workload: Workload) -> tuple[tuple[bytes, bytes], ...]:
    """OIP's binary extension's header length (an oipbin body is a 400 without it); computed once
    per workload: building it means building the body's JSON part, not a cost of the server."""
    return tuple((name.lower().encode(), value.encode()) for name, value in workload.extra_headers.items())


def http_scope(workload: Workload, body: bytes) -> dict[str, Any]:
    path = workload.route
    query = workload.query[1:].encode() if workload.fmt == "npy" else b""
    headers = [
        (b"host", b"127.0.0.1"),
        (b"content-type", workload.content_type.encode()),
        (b"accept", workload.accept.encode()),
        (b"content-length", str(len(body)).encode()),
        *_extra_headers(workload),
    ]
    return {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
        "method": "POST", "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": query,
        "root_path": "", "headers": headers, "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8000),
        "state": {},
    }  # fmt: skip


async def one_request(app, workload: Workload, body: bytes) -> int:
    delivered = False
    done = asyncio.Event()
    status = 0

    async def receive():
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message):
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif not message.get("more_body", False):
            done.set()

    await app(http_scope(workload, body), receive, send)
    return status


async def measure(app, workload: Workload, body: bytes, requests: int, concurrency: int) -> dict[str, float]:
    async with Lifespan(app):
        for _ in range(50):  # warm-up
            assert await one_request(app, workload, body) == 200
        cpu, wall = time.process_time(), time.perf_counter()
        sent = 0
        while sent < requests:
            batch = min(concurrency, requests - sent)
            statuses = await asyncio.gather(*(one_request(app, workload, body) for _ in range(batch)))
            assert all(s == 200 for s in statuses), statuses
            sent += batch
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return {"cpu_us_per_request": 1e6 * cpu / requests, "wall_us_per_request": 1e6 * wall / requests}


def monoserve_app(repo: Path, **overrides: Any):
    from service.app import create_app
    from service.settings import Settings

    return create_app(Settings(repo=repo, device="cpu", cpu_threads=1, **overrides))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK)
    parser.add_argument("--workload", default="classify_1_json", choices=sorted(WORKLOADS))
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--apps", default="raw,fastapi,hot,fastapi_routes,hot_batching")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    os.environ.setdefault("MONOSERVE_LOG_LEVEL", "WARNING")
    workload = WORKLOADS[args.workload]
    body = workload.body_file(args.work).read_bytes()
    repo = args.work / "repo"
    factories = {
        "raw": lambda: raw_constant_app,
        "fastapi": lambda: __import__("ceiling_server").app,
        "hot": lambda: monoserve_app(repo, hot_path=True, batching=False),
        "fastapi_routes": lambda: monoserve_app(repo, hot_path=False, batching=False),
        "hot_batching": lambda: monoserve_app(repo, hot_path=True, batching=True),
    }
    results = {}
    for name in args.apps.split(","):
        app = factories[name]()
        results[name] = asyncio.run(measure(app, workload, body, args.requests, args.concurrency))
        print(f"{name:16s} {results[name]['cpu_us_per_request']:8.1f} us CPU/request "
              f"({results[name]['wall_us_per_request']:.1f} us wall)", flush=True)  # fmt: skip
    if args.out:
        args.out.write_text(json.dumps({"workload": args.workload, "concurrency": args.concurrency, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
