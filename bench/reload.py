"""Reload time and requests failed during reloads, measured on a real `monoserve serve` process.

    .venv/bin/python bench/reload.py [--rounds 5] [--clients 4] [--poll-interval 1.0] [--out bench/results/reload.json]

A smoother is exported once (the real export); each round publishes a new version the way export
does (prepared in a hidden directory inside the model's directory, then renamed into place) while
`--clients` threads send /smooth requests back to back over keep-alive connections. Three phases,
each on a fresh server:
- poll:     versions picked up by the poller (MONOSERVE_POLL_INTERVAL_S=--poll-interval);
            time from the rename to the first answer from the new version;
- load:     polling off, POST /v2/repository/models/smoother/load right after the rename; the
            load call's duration and the time to the first answer from the new version;
- tampered: a version with a negated kernel (checksums and probe recomputed) published and loaded;
            it must be refused while the old version keeps answering.
Every request's outcome is recorded: "failed" is any answer other than 200, or a transport error.
Results: JSON at --out and a markdown table on stdout (docs/service.md, "Model lifecycle").
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests"))  # the fixtures' real export and tamper helpers
sys.path.insert(0, str(REPO_ROOT / "bench"))

import httpx  # noqa: E402
from run import free_port, wait_ready  # noqa: E402

log = logging.getLogger("bench.reload")
SIGNAL = [float(i % 7) for i in range(256)]


ADMIN_TOKEN = "bench-admin"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


class Server:
    def __init__(self, repo: Path, poll_interval_s: float):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "MONOSERVE_POLL_INTERVAL_S": str(poll_interval_s), "MONOSERVE_LOG_LEVEL": "WARNING",
               "MONOSERVE_ADMIN_TOKEN": ADMIN_TOKEN}  # the control API is closed without it
        self.process = subprocess.Popen(
            [sys.executable, "-m", "monoserve.cli", "serve", "--repo", str(repo), "--port", str(self.port),
             "--grpc-port", "0"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def __enter__(self) -> "Server":
        wait_ready(self.process, f"{self.base}/readyz")
        return self

    def __exit__(self, *exc) -> None:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()


class Clients:
    """`n` threads sending /smooth back to back; every outcome is (end time, latency, status, version)."""

    def __init__(self, base: str, n: int):
        self.base = base
        self.outcomes: list[tuple[float, float, int | str, int | None]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(n)]

    def _run(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set():
                start = time.monotonic()
                try:
                    response = client.post(f"{self.base}/smooth", json={"signal": SIGNAL})
                    status: int | str = response.status_code
                    version = response.json()["version"] if status == 200 else None
                except httpx.HTTPError as exc:
                    status, version = type(exc).__name__, None
                end = time.monotonic()
                with self._lock:
                    self.outcomes.append((end, end - start, status, version))

    def __enter__(self) -> "Clients":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def first_answer_from(self, version: int, after: float, timeout: float = 120) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                found = next((o[0] for o in self.outcomes if o[0] >= after and o[3] == version), None)
            if found is not None:
                return found
            time.sleep(0.005)
        raise RuntimeError(f"version {version} never answered")

    def summary(self, windows: list[tuple[float, float]] = ()) -> dict:
        """Counts, and latencies of the requests that overlapped a reload window (publish to first
        answer from the new version) against the others, the first second of warm-up left out."""
        failed = [o for o in self.outcomes if o[2] != 200]
        start = min((o[0] - o[1] for o in self.outcomes), default=0.0) + 1.0

        def overlaps(o) -> bool:
            return any(o[0] - o[1] < w_end and o[0] > w_start for w_start, w_end in windows)

        inside = [o[1] for o in self.outcomes if o[0] - o[1] >= start and overlaps(o)]
        outside = [o[1] for o in self.outcomes if o[0] - o[1] >= start and not overlaps(o)]
        return {"requests": len(self.outcomes), "failed": len(failed), "failures": sorted({str(o[2]) for o in failed}),
                "latency_ms_during_reloads": _percentiles(inside), "latency_ms_otherwise": _percentiles(outside)}


def _percentiles(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    ordered = sorted(values)
    pick = lambda q: round(1e3 * ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)  # noqa: E731
    return {"n": len(ordered), "p50": pick(0.5), "p99": pick(0.99), "max": round(1e3 * ordered[-1], 2)}


def publish(repo: Path, source: int, target: int, tamper: bool = False) -> float:
    """Publish version `target` as a copy of `source` by rename (as export does); the rename's time."""
    from service_fixtures import edit_initializer, onnx_name, reseal
    from test_reload import publish_copy

    def prepare(staged: Path) -> None:
        if tamper:
            edit_initializer(staged, onnx_name(staged, "kernel"), lambda k: -k)
            reseal(staged)
        os.sync()
        prepared.append(time.monotonic())

    prepared: list[float] = []
    publish_copy(repo, "smoother", source, target, prepare)
    return prepared[0]  # the rename follows at once


def proof_seconds(base: str, version: int) -> float | None:
    detail = httpx.get(f"{base}/models/smoother").json()
    item = next((v for v in detail["versions"] if v["version"] == version), None)
    return None if item is None else sum(step["seconds"] for step in item["report"]["steps"])


def phase_poll(repo: Path, rounds: int, clients: int, interval: float) -> dict:
    served, proofs, windows = [], [], []
    with Server(repo, interval) as server, Clients(server.base, clients) as load:
        time.sleep(1.0)
        version = max(int(p.name) for p in (repo / "smoother").iterdir() if p.name.isdigit())
        for _ in range(rounds):
            published = publish(repo, version, version + 1)
            version += 1
            first = load.first_answer_from(version, published)
            served.append(first - published)
            windows.append((published, first))
            proofs.append(proof_seconds(server.base, version))
            time.sleep(0.5)
        time.sleep(0.5)
    return {"poll_interval_s": interval, "publish_to_served_s": [round(s, 3) for s in served],
            "publish_to_served_s_median": round(statistics.median(served), 3),
            "proof_s": [round(p, 3) for p in proofs if p is not None], **load.summary(windows)}


def phase_load(repo: Path, rounds: int, clients: int) -> dict:
    calls, served, windows = [], [], []
    with Server(repo, 0) as server, Clients(server.base, clients) as load:
        time.sleep(1.0)
        version = max(int(p.name) for p in (repo / "smoother").iterdir() if p.name.isdigit())
        for _ in range(rounds):
            published = publish(repo, version, version + 1)
            version += 1
            start = time.monotonic()
            response = httpx.post(f"{server.base}/v2/repository/models/smoother/load", timeout=120,
                                  headers=ADMIN)
            calls.append(time.monotonic() - start)
            if response.status_code != 200:
                raise RuntimeError(f"load failed: {response.text}")
            first = load.first_answer_from(version, published)
            served.append(first - published)
            windows.append((published, first))
            time.sleep(0.5)
        time.sleep(0.5)
    return {"load_call_s": [round(c, 3) for c in calls], "load_call_s_median": round(statistics.median(calls), 3),
            "publish_to_served_s_median": round(statistics.median(served), 3), **load.summary(windows)}


def phase_tampered(repo: Path, clients: int) -> dict:
    with Server(repo, 0) as server, Clients(server.base, clients) as load:
        time.sleep(1.0)
        version = max(int(p.name) for p in (repo / "smoother").iterdir() if p.name.isdigit())
        publish(repo, version, version + 1, tamper=True)
        response = httpx.post(f"{server.base}/v2/repository/models/smoother/load", timeout=120,
                                  headers=ADMIN)
        time.sleep(1.0)
        refused = response.status_code == 400 and "refused" in response.json()["error"]
        versions = {o[3] for o in load.outcomes}
    return {"refused": refused, "reason": response.json().get("error"), "versions_answered": sorted(v for v in versions if v),
            **load.summary()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--poll-interval", type=float, default=1.0)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results" / "reload.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise

    from service_fixtures import build_smoother

    with tempfile.TemporaryDirectory(prefix="monoserve-reload-") as tmp:
        repo = Path(tmp) / "repo"
        build_smoother(repo, Path(tmp))  # version 1, by the real export
        results = {
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                        "load_average_at_start": [round(x, 2) for x in os.getloadavg()]},
            "clients": args.clients, "rounds": args.rounds,
            "poll": phase_poll(repo, args.rounds, args.clients, args.poll_interval),
            "load": phase_load(repo, args.rounds, args.clients),
            "tampered": phase_tampered(repo, args.clients),
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    poll, load, tampered = results["poll"], results["load"], results["tampered"]
    print(f"| phase | reloads | requests | failed | publish -> served (median) | other |\n|---|---|---|---|---|---|\n"
          f"| poll every {poll['poll_interval_s']:g} s | {args.rounds} | {poll['requests']} | {poll['failed']} | "
          f"{poll['publish_to_served_s_median']} s | proof {statistics.median(poll['proof_s']):.3f} s (median) |\n"
          f"| POST .../load | {args.rounds} | {load['requests']} | {load['failed']} | "
          f"{load['publish_to_served_s_median']} s | load call {load['load_call_s_median']} s (median) |\n"
          f"| tampered + load | 1 | {tampered['requests']} | {tampered['failed']} | refused: {tampered['refused']} | "
          f"answered by {tampered['versions_answered']} |")
    for phase in ("poll", "load"):
        print(f"{phase}: latency during reloads {results[phase]['latency_ms_during_reloads']}, "
              f"otherwise {results[phase]['latency_ms_otherwise']} (ms)")
    failed = poll["failed"] + load["failed"] + tampered["failed"]
    return 0 if failed == 0 and tampered["refused"] else 1


if __name__ == "__main__":
    sys.exit(main())
