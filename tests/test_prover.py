"""Loading = proving: every step on good versions, each kind of tampering refused with its reason,
and `monoserve verify` (exit 0 / 1 with the report / 2 on usage errors)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from service.repository.prover import STEPS, prove_version
from service_fixtures import (
    copy_version,
    edit_initializer,
    edit_onnx,
    fresh_repo,
    insert_scaling_node,
    onnx_name,
    reseal,
)


@pytest.fixture
def repo(tmp_path):
    return fresh_repo(tmp_path)


def steps(report) -> dict[str, str]:
    return {s.step: s.status for s in report.steps}


@pytest.mark.parametrize("name", ["smoother", "classifier", "multilabel"])
def test_good_versions_pass_every_step(repo, name):
    report, proven = prove_version(repo / name / "1")
    assert report.ok, report.render()
    assert steps(report) == {step: "ok" for step in STEPS}
    assert proven is not None and proven.engine.ready
    checks = report.steps[STEPS.index("constraints")].details["checks"]
    assert checks and all(c["ok"] and c["format"] == "onnx" for c in checks)
    # The warm-up fits a cost model that decides whether a request may run on the event loop.
    assert proven.predicted_seconds(10**7) > proven.predicted_seconds(1) > 0


def test_torchscript_engine_checks_the_torchscript_tensors_too(repo):
    report, proven = prove_version(repo / "classifier" / "1", engine="torchscript")
    assert report.ok, report.render()
    formats = {c["format"] for c in report.steps[STEPS.index("constraints")].details["checks"]}
    assert formats == {"onnx", "torchscript"}
    assert proven.engine.format == "torchscript"


def test_weight_edited_negative_is_refused_at_constraints(repo):
    bad = copy_version(repo, "classifier", 1, 2)
    weight = onnx_name(bad, "layers.1.weight")
    edit_initializer(bad, weight, lambda w: np.where(np.arange(w.size).reshape(w.shape) == 3, -0.25, w))
    reseal(bad)
    report, proven = prove_version(bad)
    assert proven is None and steps(report)["constraints"] == "failed"
    assert steps(report)["certificate"] == "skipped"
    assert f"model.onnx:{weight}[0, 3]" in report.reason and "nonnegative" in report.reason
    assert "-0.25" in report.reason


def test_kernel_edited_non_monotone_is_refused_at_constraints(repo):
    bad = copy_version(repo, "smoother", 1, 2)
    edit_initializer(bad, onnx_name(bad, "kernel"), lambda k: k[..., [0, 1, 2, 3, 4, 5, 6, 8, 7]])  # swap the last two taps
    reseal(bad)
    report, _ = prove_version(bad)
    assert steps(report)["constraints"] == "failed"
    assert "monotone_nondecreasing" in report.reason and "kernel[0, 0, 8]" in report.reason


def test_changed_byte_is_refused_at_checksums_naming_the_file(repo):
    bad = copy_version(repo, "smoother", 1, 2)
    data = bytearray((bad / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (bad / "model.onnx").write_bytes(bytes(data))
    report, _ = prove_version(bad)
    assert steps(report)["checksums"] == "failed" and "model.onnx: sha256" in report.reason
    assert all(s.status == "skipped" for s in report.steps[STEPS.index("constraints"):])


def test_truncated_file_is_refused(repo):
    bad = copy_version(repo, "classifier", 1, 2)
    onnx_path = bad / "model.onnx"
    onnx_path.write_bytes(onnx_path.read_bytes()[:200])
    report, _ = prove_version(bad)
    assert steps(report)["checksums"] == "failed" and "model.onnx: size 200 bytes" in report.reason
    reseal(bad, refresh_probe=False)  # even with matching checksums, a truncated graph cannot load
    report, _ = prove_version(bad)
    assert steps(report)["graph"] == "failed" and "not a readable ONNX model" in report.reason


def test_added_node_with_negative_weight_is_refused_by_the_certificate(repo):
    bad = copy_version(repo, "classifier", 1, 2)
    insert_scaling_node(bad, "features", np.array([-1.0, 1.0, 1.0, 1.0]), node_name="sneaky_flip")
    reseal(bad)  # checksums and probe now agree with the tampered graph: only the certificate can tell
    report, _ = prove_version(bad)
    assert steps(report)["constraints"] == "ok"
    certificate = report.steps[STEPS.index("certificate")]
    assert certificate.status == "failed"
    assert certificate.details["node"].startswith("sneaky_flip")
    assert "'clicks'" in certificate.message and "sneaky_flip" in certificate.message


def test_rewiring_the_graph_to_an_unchecked_weight_is_refused(repo):
    from onnx import numpy_helper

    bad = copy_version(repo, "smoother", 1, 2)
    kernel_name = onnx_name(bad, "kernel")

    def rewire(model) -> None:
        kernel = next(i for i in model.graph.initializer if i.name == kernel_name)
        shadow = numpy_helper.to_array(kernel).copy()
        shadow[..., 0] = -0.5
        model.graph.initializer.append(numpy_helper.from_array(shadow, "shadow_kernel"))
        for node in model.graph.node:
            node.input[:] = ["shadow_kernel" if n == kernel_name else n for n in node.input]

    edit_onnx(bad, rewire)
    reseal(bad)
    report, _ = prove_version(bad)
    # The policy checks the kernel the Conv actually consumes, whatever the manifest names.
    assert steps(report)["constraints"] == "failed" and "model.onnx:shadow_kernel[0, 0, 0]: positive violated" in report.reason


def test_manifest_problems(repo):
    bad = copy_version(repo, "smoother", 1, 2)
    manifest = json.loads((bad / "manifest.json").read_text())
    manifest["version"] = 7
    (bad / "manifest.json").write_text(json.dumps(manifest))
    report, _ = prove_version(bad)
    assert steps(report)["manifest"] == "failed" and "manifest version 7 does not match directory '2'" in report.reason
    (bad / "manifest.json").write_text("{not json")
    report, _ = prove_version(bad)
    assert "not a valid manifest" in report.reason
    (bad / "manifest.json").unlink()
    report, _ = prove_version(bad)
    assert "manifest.json not found" in report.reason


def test_probe_mismatch_is_refused(repo):
    bad = copy_version(repo, "classifier", 1, 2)
    manifest = json.loads((bad / "manifest.json").read_text())
    manifest["probe"]["expected"][-1][0] += 0.01
    (bad / "manifest.json").write_text(json.dumps(manifest))
    report, _ = prove_version(bad)
    last = len(manifest["probe"]["expected"]) - 1
    assert steps(report)["probe"] == "failed" and f"at index [{last}, 0]" in report.reason


def test_wrong_kernel_size_in_manifest_is_caught_by_warmup(repo):
    bad = copy_version(repo, "smoother", 1, 2)
    manifest = json.loads((bad / "manifest.json").read_text())
    manifest["smoother"]["kernel_size"] = 7
    (bad / "manifest.json").write_text(json.dumps(manifest))
    report, _ = prove_version(bad)
    assert steps(report)["constraints"] == "failed" and "expected [1, 1, 7] (kernel_size in the manifest)" in report.reason


def run_verify(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "monoserve.cli", "verify", *args],
                          capture_output=True, text=True, timeout=120)


def test_verify_cli_exit_codes_and_reports(repo):
    good = repo / "smoother" / "1"
    result = run_verify(str(good))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PASSED" in result.stdout and "certificate" in result.stdout

    bad = copy_version(repo, "smoother", 1, 2)
    data = bytearray((bad / "model.onnx").read_bytes())
    data[100] = (data[100] + 1) % 256
    (bad / "model.onnx").write_bytes(bytes(data))
    result = run_verify(str(bad))
    assert result.returncode == 1
    assert "FAILED at checksums" in result.stdout and "model.onnx" in result.stdout

    result = run_verify(str(bad), "--json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["ok"] is False and report["steps"][1]["status"] == "failed"

    result = run_verify(str(repo / "smoother" / "99"))
    assert result.returncode == 2 and "is not a directory" in result.stderr
    result = run_verify(str(good), "--engine", "tensorflow")
    assert result.returncode == 2


def test_verify_cli_cuda_without_cuda_is_a_usage_error(repo):
    from service.compute.engines import onnx_cuda_available

    if onnx_cuda_available():
        pytest.skip("this machine has CUDA")
    result = run_verify(str(repo / "smoother" / "1"), "--device", "cuda")
    assert result.returncode == 2 and "CUDAExecutionProvider" in result.stderr
