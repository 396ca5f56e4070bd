"""The benchmark harness itself: bodies, wrk + Lua reporting, process handling, the naive server.

No timing assertions: these check that the harness measures the right thing and cleans up.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import run as bench_run  # noqa: E402
from workloads import WORKLOADS  # noqa: E402


def test_json_and_npy_bodies_carry_the_same_data(tmp_path: Path) -> None:
    for family in ("smooth_small", "smooth_medium"):
        json_body = json.loads(WORKLOADS[f"{family}_json"].body_file(tmp_path).read_bytes())
        npy = np.load(io.BytesIO(WORKLOADS[f"{family}_npy"].body_file(tmp_path).read_bytes()))
        assert npy.dtype == np.float32
        assert json_body["model"] == "smoother" and json_body["mode"] == "same"
        # JSON carries each float32 value exactly (as the float64 it widens to)
        np.testing.assert_array_equal(np.asarray(json_body["signal"], dtype=np.float32), npy)
    classify = json.loads(WORKLOADS["classify_64_json"].body_file(tmp_path).read_bytes())
    assert np.asarray(classify["instances"]).shape == (64, 6)


def test_workload_sizes_are_the_issue_s() -> None:
    shapes = {name: (w.rows, w.length) for name, w in WORKLOADS.items()}
    assert shapes["smooth_small_json"] == (1, 256)
    assert shapes["smooth_medium_npy"] == (8, 4096)
    assert shapes["smooth_large_npy"] == (8, 125_000)
    assert shapes["smooth_long_npy"] == (8, 1_000_000)
    assert WORKLOADS["smooth_long_npy"].model == "smoother_long"
    assert WORKLOADS["classify_1_json"].samples == 1 and WORKLOADS["classify_64_json"].samples == 64
    assert WORKLOADS["smooth_large_npy"].url_path == "/smooth?model=smoother&mode=same"


def test_process_registry_stops_the_whole_process_group(tmp_path: Path) -> None:
    registry = bench_run.ProcessRegistry()
    # a parent that forks a child, like uvicorn --workers
    process = registry.start(
        ["bash", "-c", "sleep 300 & sleep 300; wait"], cpus="0", env={}, log_path=tmp_path / "log.txt"
    )
    deadline = time.monotonic() + 10
    while len(bench_run.process_tree(process.pid)) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)  # taskset execs bash, which starts two sleeps: 3 processes
    tree = bench_run.process_tree(process.pid)
    assert len(tree) >= 3, tree
    assert bench_run.rss_bytes(tree) > 0
    registry.stop_all()
    assert process.poll() is not None
    time.sleep(0.2)
    for pid in tree:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split(")")[1][:3]
    assert registry.processes == []


def test_cpu_seconds_reads_this_process_s_cpu_time() -> None:
    before = bench_run.cpu_seconds([os.getpid()])
    end = time.process_time() + 0.3
    while time.process_time() < end:
        pass
    assert bench_run.cpu_seconds([os.getpid()]) - before >= 0.2


def synthetic_result() -> dict:
    def run(server: str, workload: str, concurrency: int, req_per_s: float, samples: int, cpu: float = 50.0) -> dict:
        return {
            "server": server, "workload": workload, "concurrency": concurrency, "req_per_s": req_per_s,
            "samples_per_s": req_per_s * samples, "p99_ms": 12.0, "server_cpu_percent": cpu,
        }  # fmt: skip

    large = 1_000_000
    return {
        "servers": [
            {"name": "monoserve", "cold_start_s": [1.5, 1.2], "runs": [
                run("monoserve", "smooth_large_npy", 1, 30.0, large),
                run("monoserve", "smooth_large_npy", 16, 40.0, large),
                run("monoserve", "smooth_large_json", 16, 2.0, large),
                run("monoserve", "classify_1_json", 64, 3000.0, 1),
                run("monoserve", "classify_1_json", 16, 3500.0, 1),
            ]},
            {"name": "naive", "cold_start_s": [5.0], "runs": [
                run("naive", "smooth_large_json", 1, 0.1, large),
                run("naive", "classify_1_json", 64, 500.0, 1),
            ]},
            {"name": "ceiling", "cold_start_s": [1.0], "runs": [run("ceiling", "classify_1_json", 64, 2500.0, 1, cpu=100.0)]},
        ],
        "inprocess": {"results": {
            "smooth_large_npy": {"samples_per_s": 50e6},
            "smooth_long_npy": {"fft_vs_oaconvolve": 1.1, "service_method_max_rel_diff_vs_ort": 1e-7},
        }},
    }  # fmt: skip


def test_summary_compares_the_best_run_of_each_server() -> None:
    targets = bench_run.summarize(synthetic_result())
    assert targets["smooth_large_npy_vs_inprocess"]["value"] == pytest.approx(40e6 / 50e6)
    assert targets["smooth_large_npy_vs_naive"]["value"] == pytest.approx(400)
    assert targets["smooth_large_json_vs_naive"]["value"] == pytest.approx(20)
    # the classify target is at 64 connections, not the better 16-connection run
    assert targets["classify_1_c64_vs_ceiling"]["value"] == pytest.approx(3000 / 2500)
    # per CPU-second received: monoserve got half a CPU, the ceiling all of it
    assert targets["classify_1_c64_vs_ceiling"]["per_cpu_s"] == pytest.approx((3000 / 0.5) / (2500 / 1.0))
    assert targets["classify_1_c64_vs_naive"]["value"] == pytest.approx(6)
    assert targets["cold_start_s"]["value"] == 1.2


def test_adjacent_references_give_the_ratio_against_the_faster_of_before_and_after() -> None:
    """Issue 30, round three: the service's large .npy and OIP cells are bracketed by their reference
    (in-process ONNX Runtime, the constant app) measured right before and right after them."""
    result = synthetic_result()
    result["servers"][0]["runs"] += [
        {"server": "monoserve", "workload": "classify_1_oip", "concurrency": 64, "req_per_s": 4000.0,
         "samples_per_s": 4000.0, "p99_ms": 10.0, "server_cpu_percent": 90.0}]
    plain = bench_run.summarize(result)
    # without adjacent references: the run-end in-process reference, the constant app's own cell
    assert plain["smooth_large_npy_vs_inprocess"]["value"] == pytest.approx(40e6 / 50e6)
    assert plain["classify_1_oip_c64_vs_ceiling"]["value"] == pytest.approx(4000 / 2500)
    result["adjacent"] = {
        "smooth_large_npy@1": {"reference": ["inprocess", "smooth_large_npy", 0], "before": 20e6, "after": 25e6},
        "smooth_large_npy@16": {"reference": ["inprocess", "smooth_large_npy", 0], "before": 80e6, "after": 60e6},
        "classify_1_oip@64": {"reference": ["ceiling", "classify_1_json", 64], "before": 3200.0, "after": None},
    }
    targets = bench_run.summarize(result)
    large = targets["smooth_large_npy_vs_inprocess"]
    # per cell against its faster reference (30/25 and 40/80), the best cell kept; the old ratio beside it
    assert large["value"] == pytest.approx(30e6 / 25e6) and large["vs_run_ends"] == pytest.approx(40e6 / 50e6)
    oip = targets["classify_1_oip_c64_vs_ceiling"]
    assert oip["value"] == pytest.approx(4000 / 3200) and oip["vs_classify_cell"] == pytest.approx(4000 / 2500)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (bench/run.py installs it)")
def test_wrk_lua_script_reports_requests_and_status_errors(tmp_path: Path) -> None:
    """A real uvicorn process (the ceiling server) driven by wrk with the POST Lua script."""
    registry = bench_run.ProcessRegistry()
    port = bench_run.free_port()
    argv = [a.replace("{port}", str(port)) for a in bench_run.uvicorn_argv("ceiling_server:app", "--no-access-log")]
    process = registry.start(argv, cpus="0", env={}, log_path=tmp_path / "ceiling.log")
    try:
        bench_run.wait_ready(process, f"http://127.0.0.1:{port}/readyz", timeout=60)
        workload = WORKLOADS["classify_1_json"]
        body = workload.body_file(tmp_path)
        ok = bench_run.run_wrk(f"http://127.0.0.1:{port}/classify", workload, body, 4, 1, 5, "1")
        assert ok["requests"] > 0
        assert ok["errors"]["status"] == 0 and ok["latency_us"]["p99"] >= ok["latency_us"]["p50"] > 0
        # a route that answers 404 (GET-only path) shows up as status errors, not as successes
        missing = bench_run.run_wrk(f"http://127.0.0.1:{port}/readyz", workload, body, 2, 1, 5, "1")
        assert missing["requests"] > 0 and missing["errors"]["status"] == missing["requests"]
    finally:
        registry.stop_all()
    assert process.poll() is not None


@pytest.mark.slow
def test_naive_server_answers_like_the_exported_graph(tmp_path: Path, monkeypatch) -> None:
    """The naive reference computes the same model as the ONNX graph monoserve serves."""
    pytest.importorskip("torch")
    from fastapi.testclient import TestClient

    import prepare

    checkpoints = prepare.build_checkpoints(tmp_path)
    monkeypatch.setenv("NAIVE_CHECKPOINTS", str(tmp_path / "checkpoints"))
    sys.modules.pop("naive_server", None)
    import naive_server

    client = TestClient(naive_server.app)
    for name in ("smooth_small_json", "classify_64_json"):
        workload = WORKLOADS[name]
        response = client.post(workload.route, content=workload.body_file(tmp_path).read_bytes(),
                               headers={"Content-Type": "application/json"})  # fmt: skip
        assert response.status_code == 200, response.text
        key = "smoothed" if workload.kind == "smooth" else "scores"
        got = np.asarray(response.json()[key])
        expected = bench_run.reference_output(tmp_path, workload)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)
    assert set(checkpoints) == {"smoother", "smoother_long", "classifier"}


def test_ctrl_c_stops_started_servers(tmp_path: Path) -> None:
    """The handler main() installs: SIGINT stops what the registry holds, then exits 128 + 2."""
    registry = bench_run.ProcessRegistry()
    process = registry.start(["sleep", "300"], cpus="0", env={}, log_path=tmp_path / "log.txt")
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        bench_run.install_stop_on_signals(registry)
        with pytest.raises(SystemExit) as exit_info:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)  # the handler runs before this ends
        assert exit_info.value.code == 128 + signal.SIGINT
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        registry.stop_all()
    assert process.poll() is not None


@pytest.mark.skipif(os.geteuid() != 0, reason="leaving SCHED_IDLE needs CAP_SYS_NICE (the bench warns and goes on without)")
def test_focus_cpu_puts_every_other_server_in_the_idle_class_and_the_timed_one_back():
    """bench/run.py's focus_cpu: the timed server's threads (and its children's) in SCHED_OTHER,
    every other server's in SCHED_IDLE; timing the next server swaps them."""
    import subprocess

    code = "import subprocess, sys, threading, time; threading.Thread(target=time.sleep, args=(60,), daemon=True).start(); " \
           "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)"
    servers = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(2)]
    try:
        deadline = time.monotonic() + 10
        while any(len(bench_run.process_tree(s.pid)) < 2 for s in servers) and time.monotonic() < deadline:
            time.sleep(0.05)

        def policies(server) -> set[int]:
            return {os.sched_getscheduler(int(tid)) for pid in bench_run.process_tree(server.pid)
                    for tid in os.listdir(f"/proc/{pid}/task")}

        for timed, other in ((servers[0], servers[1]), (servers[1], servers[0])):
            bench_run.focus_cpu(servers, timed)
            assert len(bench_run.process_tree(other.pid)) == 2  # the child is in the tree
            assert policies(timed) == {os.SCHED_OTHER}
            assert policies(other) == {os.SCHED_IDLE}
    finally:
        for server in servers:
            for pid in bench_run.process_tree(server.pid):
                os.kill(pid, signal.SIGKILL)
            server.wait()
