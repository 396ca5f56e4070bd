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
