"""Per-frame server cost of a WebSocket stream, measured in process (no network, no client).

    .venv/bin/python bench/stream_frame_cost.py [--frames 4000] [--rounds 5] [--profile]

The real `service.stream_ws.StreamSession` (the code a served `/smooth/stream` runs) is driven
through an in-memory ASGI channel: 64 sessions on the K=31 benchmark smoother (bench/prepare.py),
`causal`, each sent binary 8 x 256 frames round-robin, as bench/stream.py's 64 streams send them.
What it reports is the server's CPU per frame (process CPU time / frames), split into its parts
measured alone (the push, the .npy decode and encode, the rest: the session's own per-frame work).
The machine is shared: rounds alternate and the minimum and median are reported; `--profile` prints
cProfile's top functions instead.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "bench"))

STREAMS = 64
CHANNELS, SAMPLES = 8, 256


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def build_service(repo: Path):
    from service.base.metrics import Metrics
    from service.repository.registry import ModelRegistry
    from service.pipeline.service import Service
    from service.settings import Settings

    import anyio

    settings = Settings(repo=repo, cpu_threads=1, stream_max_open=1024, stream_idle_timeout_s=120)
    service = Service(settings=settings, metrics=Metrics())
    registry = ModelRegistry(repo, threads=1)
    registry.load()
    service.registry = registry
    service.limiter = anyio.CapacityLimiter(1)
    return service


async def drive(service, frames: int) -> float:
    """CPU seconds per frame for `frames` frames over STREAMS sessions (the sessions' opening excluded)."""
    from service.protocols.stream_ws import serve_stream

    frame = npy(np.random.default_rng(0).standard_normal((CHANNELS, SAMPLES)).astype(np.float32))
    inboxes = [asyncio.Queue() for _ in range(STREAMS)]
    outboxes = [asyncio.Queue() for _ in range(STREAMS)]
    scope = {"type": "websocket", "path": "/smooth/stream", "headers": [],
             "query_string": b"model=smoother&mode=causal"}
    tasks = []
    for inbox, outbox in zip(inboxes, outboxes):
        await inbox.put({"type": "websocket.connect"})
        tasks.append(asyncio.create_task(serve_stream(service, scope, inbox.get, outbox.put)))
    for outbox in outboxes:
        accepted = await outbox.get()
        assert accepted["type"] == "websocket.accept", accepted
    message = {"type": "websocket.receive", "bytes": frame}

    async def rounds(count: int) -> None:
        for _ in range(count):
            for inbox in inboxes:
                inbox.put_nowait(message)
            for outbox in outboxes:
                answer = await outbox.get()
                assert "bytes" in answer, answer

    await rounds(4)  # warm: the first frames copy the tails
    started = time.process_time()
    await rounds(max(1, frames // STREAMS))
    spent = time.process_time() - started
    for inbox in inboxes:
        inbox.put_nowait({"type": "websocket.disconnect"})
    await asyncio.gather(*tasks)
    return spent / (max(1, frames // STREAMS) * STREAMS)


def parts(service, repeats: int = 2000) -> dict[str, float]:
    """The per-frame parts alone, in us: push (convolution), .npy decode, .npy encode."""
    from service.base import codec
    from service.pipeline.streaming import open_stream

    stream = open_stream(service.registry, "smoother", None, "causal")
    chunk = np.random.default_rng(0).standard_normal((CHANNELS, SAMPLES)).astype(np.float32)
    body = npy(chunk)
    stream.push(chunk)
    out: dict[str, float] = {}
    for name, call in (("push", lambda: stream.push(chunk)), ("decode", lambda: codec.decode_npy(body, "signal")),
                       ("encode", lambda: codec.encode_npy(chunk)), ("check", lambda: stream.check_chunk(chunk))):
        started = time.process_time()
        for _ in range(repeats):
            call()
        out[name] = (time.process_time() - started) / repeats * 1e6
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=6400)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    from prepare import prepare

    repo = prepare()["repo"]
    service = build_service(Path(repo))
    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        asyncio.run(drive(service, args.frames))
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
        return 0
    per_frame, per_part = [], []
    for _ in range(args.rounds):  # alternate: the session, then its parts alone
        per_frame.append(asyncio.run(drive(service, args.frames)) * 1e6)
        per_part.append(parts(service))
    print(f"server CPU per frame (64 sessions, binary {CHANNELS} x {SAMPLES}, K=31 causal): "
          f"min {min(per_frame):.0f} us, median {statistics.median(per_frame):.0f} us, rounds {[round(v) for v in per_frame]}")
    for name in per_part[0]:
        values = [p[name] for p in per_part]
        print(f"  {name:7} min {min(values):6.1f} us  median {statistics.median(values):6.1f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
