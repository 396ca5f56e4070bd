"""The gRPC side-by-side benchmark's pure parts (no server, no peer): the load generator's percentiles,
summary and result parsing, and reading an OIP ModelInferResponse the way the answer check does.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from tritonclient.grpc import service_pb2

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import grpc_load  # noqa: E402
from grpc_bench import raw_infer_request  # noqa: E402
from grpc_side import decode_response, to_markdown  # noqa: E402


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert grpc_load.percentile(values, 50) == 50.0
    assert grpc_load.percentile(values, 99) == 99.0
    assert grpc_load.percentile(values, 100) == 100.0
    assert grpc_load.percentile([3.0], 99) == 3.0
    assert grpc_load.percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0
    assert math.isnan(grpc_load.percentile([], 50))
    with pytest.raises(ValueError, match="within 0..100"):
        grpc_load.percentile(values, 101)


def test_summarize_counts_ok_calls_per_second_and_keeps_errors_apart() -> None:
    result = grpc_load.summarize([4.0, 1.0, 3.0, 2.0], {"UNAVAILABLE": 2}, elapsed_s=2.0)
    assert result["requests"] == 4
    assert result["req_per_s"] == 2.0
    assert result["p50_ms"] == 2.0 and result["p99_ms"] == 4.0
    assert result["errors"] == {"UNAVAILABLE": 2}
    with pytest.raises(ValueError, match="elapsed_s"):
        grpc_load.summarize([1.0], {}, elapsed_s=0.0)


def test_parse_result_reads_the_last_line_and_names_what_is_missing() -> None:
    line = json.dumps(grpc_load.summarize([1.0, 2.0], {}, 1.0))
    assert grpc_load.parse_result(f"{grpc_load.MEASURING}\n{line}\n")["requests"] == 2
    with pytest.raises(ValueError, match="printed nothing"):
        grpc_load.parse_result("\n")
    with pytest.raises(ValueError, match="not JSON"):
        grpc_load.parse_result("MEASURING\nTraceback ...")
    with pytest.raises(ValueError, match="p99_ms"):
        grpc_load.parse_result(json.dumps({"requests": 1, "errors": {}, "elapsed_s": 1, "req_per_s": 1, "p50_ms": 1}))


def test_the_request_carries_the_tensor_as_raw_input_contents() -> None:
    array = np.arange(12, dtype=np.float32).reshape(2, 6)
    request = service_pb2.ModelInferRequest.FromString(raw_infer_request("classifier", "features", array))
    assert request.model_name == "classifier"
    assert request.inputs[0].name == "features" and list(request.inputs[0].shape) == [2, 6]
    np.testing.assert_array_equal(np.frombuffer(request.raw_input_contents[0], dtype="<f4").reshape(2, 6), array)


def test_decode_response_reads_raw_and_typed_contents_and_names_a_missing_output() -> None:
    array = np.array([[0.25, 0.5], [0.75, 1.0]], dtype=np.float32)
    raw = service_pb2.ModelInferResponse(model_name="classifier", raw_output_contents=[array.tobytes()])
    raw.outputs.add(name="scores", datatype="FP32", shape=[2, 2])
    np.testing.assert_array_equal(decode_response(raw.SerializeToString(), "scores"), array)
    typed = service_pb2.ModelInferResponse(model_name="classifier")
    output = typed.outputs.add(name="scores", datatype="FP32", shape=[2, 2])
    output.contents.fp32_contents.extend(array.reshape(-1).tolist())
    np.testing.assert_array_equal(decode_response(typed.SerializeToString(), "scores"), array)
    with pytest.raises(ValueError, match="no output 'smoothed'"):
        decode_response(raw.SerializeToString(), "smoothed")


def test_the_table_has_a_column_per_server_and_reports_the_ones_not_run() -> None:
    row = {"server": "monoserve", "workload": "classify_1_oipbin", "concurrency": 64, "req_per_s": 1234.4,
           "p50_ms": 1.0, "p99_ms": 2.5, "server_cpu_percent": 97.0, "errors": {}}
    table = to_markdown([row], ["monoserve", "mlserver"], {"mlserver": "exit 1"})
    assert "| classify_1 | 64 | 1234 (1.00/2.50, 97%) | - |" in table
    assert "mlserver: not run: exit 1" in table
