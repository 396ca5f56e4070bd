"""The benchmark's peer pieces that run without installing a peer: the shared OIP bodies, reading
OIP answers, what every peer computes (bench/peers/onnx_models.py), the side-by-side tables, and a
peer whose install fails being reported with its error.
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import orjson
import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import run as bench_run  # noqa: E402
from peers import setup as peer_setup  # noqa: E402
from workloads import OIP_WORKLOADS, WORKLOADS  # noqa: E402

from service.protocols import oip  # noqa: E402


@pytest.mark.parametrize("workload", OIP_WORKLOADS, ids=lambda w: w.name)
def test_oip_bodies_carry_the_workload_s_tensor_and_the_service_reads_them(workload, tmp_path: Path) -> None:
    body = workload.body_file(tmp_path).read_bytes()
    expected = workload.array()
    length = workload.extra_headers.get("Inference-Header-Content-Length")
    if workload.fmt == "oipbin":
        assert workload.content_type == "application/octet-stream" and length is not None
        header = json.loads(body[:int(length)])
        assert header["outputs"] == [{"name": workload.output_name, "parameters": {"binary_data": True}}]
        assert np.array_equal(np.frombuffer(body[int(length):], dtype="<f4").reshape(expected.shape), expected)
    else:
        assert length is None and workload.content_type == "application/json"
        tensor = json.loads(body)["inputs"][0]
        np.testing.assert_array_equal(np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"]), expected)
    request = oip.decode_infer(body, length)  # the service's own decoder
    assert [t.name for t in request.inputs] == [workload.input_name]
    np.testing.assert_array_equal(request.inputs[0].array, expected)
    assert workload.url_path == f"/v2/models/{workload.model}/infer"


@pytest.mark.parametrize("binary", [False, True])
def test_oip_answers_are_read_back(binary: bool) -> None:
    workload = WORKLOADS["smooth_medium_oipbin" if binary else "smooth_medium_oip"]
    smoothed = workload.array() * 0.5
    request = oip.OipRequest(None, [], {}, [oip.RequestedOutput("smoothed", binary)])
    encoded = oip.encode_infer("smoother", 1, request, {"smoothed": smoothed}, {"mode": "same"})
    got = bench_run.decode_answer(workload, {"Content-Type": encoded.media_type, **(encoded.headers or {})}, encoded.body)
    np.testing.assert_array_equal(got.reshape(smoothed.shape).astype(np.float32), smoothed)  # JSON: float32 text


@pytest.mark.slow
def test_peer_models_compute_the_reference(tmp_path: Path) -> None:
    """What every peer runs (ONNX Runtime on the exported graphs + the `same` slice) is the reference."""
    pytest.importorskip("torch")
    import prepare
    from peers.onnx_models import Models

    prepare.build_checkpoints(tmp_path)
    onnx = {name: prepare.onnx_model_path(tmp_path, name) for name in ("smoother", "classifier")}
    models = Models(str(onnx["smoother"]), str(onnx["classifier"]))
    for name in ("smooth_small_json", "smooth_medium_oip", "classify_64_oip", "classify_1_json"):
        workload = WORKLOADS[name]
        data = workload.array()
        got = models.smooth(data) if workload.kind == "smooth" else models.classify(data)
        np.testing.assert_array_equal(got, bench_run.reference_output(tmp_path, workload).reshape(got.shape))


def run(server: str, workload: str, concurrency: int, req_per_s: float, p99: float = 10.0) -> dict:
    return {"server": server, "workload": workload, "concurrency": concurrency, "req_per_s": req_per_s,
            "p50_ms": p99 / 2, "p99_ms": p99, "server_cpu_percent": 90.0}


def test_side_by_side_and_the_service_against_each_peer() -> None:
    result = {"servers": [
        {"name": "monoserve", "runs": [run("monoserve", "classify_1_oip", 64, 3000), run("monoserve", "smooth_large_oip", 1, 9)]},
        {"name": "mlserver", "runs": [run("mlserver", "classify_1_oip", 64, 1000, 50)]},
        {"name": "kserve", "runs": [run("kserve", "classify_1_oip", 64, 1500), run("kserve", "smooth_large_oip", 1, 12)]},
    ]}
    table = bench_run.side_by_side(result)
    assert table[0] == "| workload | conc | monoserve | mlserver | kserve |"
    row = next(line for line in table if line.startswith("| smooth_large_oip | 1 |"))
    assert row.split("|")[4].strip() == ""  # mlserver did not run it: an empty cell, not a zero
    versus = {(r["peer"], r["workload"]): r for r in bench_run.peer_comparison(result)}
    assert versus[("mlserver", "classify_1_oip")]["ratio"] == pytest.approx(3.0)
    assert versus[("kserve", "smooth_large_oip")]["ratio"] == pytest.approx(9 / 12)
    assert len(versus) == 3


@pytest.mark.slow
def test_a_peer_that_cannot_be_installed_is_reported_with_its_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(peer_setup.REQUIREMENTS, "nopeer", [str(tmp_path / "missing-0.0-py3-none-any.whl")])
    assert peer_setup.ensure_peer(tmp_path, "nopeer", timeout=120) is None
    error = peer_setup.install_error(tmp_path, "nopeer")
    assert error is not None and "missing-0.0-py3-none-any.whl" in error
    assert not (peer_setup.venv_dir(tmp_path, "nopeer") / peer_setup.MARKER).exists()
    plan = bench_run.make_plan(quick=True)
    specs, unavailable = bench_run.peer_specs(plan, tmp_path, {}, ["nopeer"])
    assert specs == [] and "missing-0.0-py3-none-any.whl" in unavailable["nopeer"]


def test_every_peer_has_an_install_recipe_a_readiness_path_and_a_launcher() -> None:
    """BentoML and Ray Serve (issue 30) are peers like the others: installed into their own venv, each
    with its server script, readiness path and JSON workloads (neither has OIP routes)."""
    from peers import specs

    assert set(specs.PEERS) == set(peer_setup.REQUIREMENTS)
    assert {"bentoml", "rayserve"} <= set(specs.PEERS)
    assert any(r.startswith("bentoml>=1.4") for r in peer_setup.REQUIREMENTS["bentoml"])
    assert any(r.startswith("ray[serve]>=2.60") for r in peer_setup.REQUIREMENTS["rayserve"])
    for name in specs.PEERS:
        assert specs.READY_PATH[name].startswith("/") and specs.NOTES[name]
    plan = bench_run.make_plan(quick=True)
    for name in ("bentoml", "rayserve", "litserve"):
        chosen = specs.peer_workloads(name, bench_run.oip_levels(plan), bench_run.native_levels(plan))
        assert chosen and all(WORKLOADS[w].fmt == "json" for w in chosen)
    assert all(WORKLOADS[w].oip for w in specs.peer_workloads("kserve", bench_run.oip_levels(plan), {}))
    assert (BENCH / "peers" / "bentoml_server.py").exists() and (BENCH / "peers" / "rayserve_server.py").exists()


def result_with_grpc() -> dict:
    return {
        "servers": [
            {"name": "monoserve", "runs": [run("monoserve", "classify_1_json", 64, 3000), run("monoserve", "classify_1_oip", 64, 2600)]},
            {"name": "bentoml", "runs": [run("bentoml", "classify_1_json", 64, 1000)]},
            {"name": "rayserve", "runs": [run("rayserve", "classify_1_json", 64, 500)]},
            {"name": "kserve", "runs": [run("kserve", "classify_1_oip", 64, 2800)]},
            {"name": "ceiling", "runs": [run("ceiling", "classify_1_json", 64, 9999)]},  # not a peer
        ],
        "grpc": {"rows": [{"server": "monoserve", "workload": "classify_1_oipbin", "concurrency": 64, "req_per_s": 4000},
                          {"server": "kserve", "workload": "classify_1_oipbin", "concurrency": 64, "req_per_s": 3000},
                          {"server": "mlserver", "workload": "classify_1_oipbin", "concurrency": 64, "req_per_s": 3500}]},
    }


def test_the_best_peer_per_cell_counts_http_and_grpc_and_only_peers() -> None:
    import tables

    versus = tables.against_best_peer(tables.cells_of(result_with_grpc()))
    assert versus[("http", "classify_1_json", 64)]["best_peer"] == "bentoml"  # the ceiling app is no peer
    assert versus[("http", "classify_1_json", 64)]["ratio"] == pytest.approx(3.0)
    assert versus[("http", "classify_1_oip", 64)]["ratio"] == pytest.approx(2600 / 2800)
    assert versus[("grpc", "classify_1_oipbin", 64)]["best_peer"] == "mlserver"
    assert versus[("grpc", "classify_1_oipbin", 64)]["ratio"] == pytest.approx(4000 / 3500)


def test_over_runs_gives_the_spread_of_the_ratio_and_the_runs_ahead() -> None:
    import copy

    import tables

    first, second = result_with_grpc(), copy.deepcopy(result_with_grpc())
    second["servers"][0]["runs"][0]["req_per_s"] = 800.0  # behind BentoML's 1000 in the second run
    rows = {(r["transport"], r["workload"], r["concurrency"]): r for r in tables.over_runs([first, second])}
    row = rows[("http", "classify_1_json", 64)]
    assert sorted(row["ratios"]) == pytest.approx([0.8, 3.0]) and row["ahead_in"] == 1 and row["runs"] == 2
    assert row["median_req_per_s"]["monoserve"] == pytest.approx(1900.0)
    text = tables.markdown([first, second])
    line = next(line for line in text.splitlines() if line.startswith("| http | classify_1_json | 64 |"))
    assert "0.80 / 1.90 / 3.00" in line and line.endswith("| 1/2 |")
    assert "Ray Serve" in text and "PyTriton (Triton, Python backend)" not in text.split("\n")[2]  # columns: peers that ran


def test_the_targets_include_oip_rest_and_grpc_against_kserve() -> None:
    result = result_with_grpc()
    result["inprocess"] = {"results": {"smooth_large_npy": {"samples_per_s": 1.0}, "smooth_long_npy": {}}}
    result["servers"][0]["cold_start_s"] = [1.0]
    result["grpc"]["rows"].append({"server": "monoserve", "workload": "classify_1_oipbin", "concurrency": 1, "req_per_s": 900})
    result["grpc"]["rows"].append({"server": "kserve", "workload": "classify_1_oipbin", "concurrency": 1, "req_per_s": 1000})
    targets = bench_run.summarize(result)
    assert targets["classify_1_oip_c64_vs_ceiling"]["value"] == pytest.approx(2600 / 9999)
    grpc = targets["grpc_classify_1_vs_kserve"]
    assert grpc["c64"] == pytest.approx(4000 / 3000) and grpc["c1"] == pytest.approx(0.9) and grpc["value"] == pytest.approx(0.9)


def test_the_floor_reads_the_service_s_stage_histogram_and_splits_a_request() -> None:
    """bench/floor.py: the stage times from the service's own /metrics text, per request between two
    scrapes, and one cell's shares of its CPU time (compute, codec, the rest) against in-process ORT."""
    import floor

    from service.base.metrics import Metrics

    metrics = Metrics()
    before = floor.stage_totals(metrics.render().decode())
    assert before == {stage: (0.0, 0.0) for stage in floor.STAGES}
    for _ in range(4):  # two routes: the totals add up over routes
        metrics.observe_stage("/classify", "decode", 0.001)
        metrics.observe_stage("/classify", "inference", 0.002)
        metrics.observe_stage("/v2/models/{name}/infer", "encode", 0.0005)
    after = floor.stage_totals(metrics.render().decode())
    per_request = floor.stage_ms_per_request(before, after)
    assert per_request == pytest.approx({"decode": 1.0, "inference": 2.0, "encode": 0.5})
    cell = {"workload": "smooth_large_npy", "concurrency": 1, "requests": 1000, "duration_s": 2.0, "req_per_s": 200.0,
            "server_cpu_percent": 150.0, "stage_ms_per_request": per_request}  # 5 ms a request, 3 ms of CPU
    row = floor.split(cell, compute_ms=1.0)
    assert row["request_ms"] == pytest.approx(5.0) and row["cpu_ms_per_request"] == pytest.approx(3.0)
    assert row["compute_share"] == pytest.approx(0.4) and row["codec_share"] == pytest.approx(0.3)
    assert row["http_and_rest_share"] == pytest.approx(0.3) and row["ratio_to_inprocess"] == pytest.approx(0.2)
    overlapping = floor.split({**cell, "concurrency": 16}, compute_ms=1.0)  # stages of concurrent requests overlap
    assert overlapping["http_and_rest_share"] is None and "(overlaps)" in floor.markdown([overlapping])[-1]
    assert floor.split({**cell, "stage_ms_per_request": {}}, 1.0) is None  # not the service: no row
    inprocess = {"results": {"smooth_medium_npy": {"ort": {"median_ms": 0.7}}}}
    assert floor.inprocess_ms(inprocess, "smooth_medium_json", "smooth_medium") == pytest.approx(0.7)  # same tensor
    assert floor.inprocess_ms(inprocess, "classify_1_json", "classify_1") is None
