"""--engine torchscript: model.ts is served only as the trusted reference with the proven tensors.

Each hostile model.ts below sits beside the honest model.onnx, with the manifest's checksums
recomputed, so only the TorchScript proof can catch it; `monoserve verify --engine torchscript`
and prove_version must refuse it and name what differs.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from export.artifacts import ClassifierScores
from models.smoother import FullCorrelation
from service.repository.prover import prove_version
from service_fixtures import copy_version, fresh_repo, onnx_initializers, reseal


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    return fresh_repo(tmp_path_factory.mktemp("ts"), models=("smoother", "classifier"))


def _save(module: nn.Module, path) -> None:
    torch.jit.save(torch.jit.script(module.eval()), str(path))


def _tampered(repo, name: str, number: int, module: nn.Module):
    version = copy_version(repo, name, 1, number)
    _save(module, version / "model.ts")
    reseal(version, refresh_probe=False)
    return version


def _kernel(repo) -> torch.Tensor:
    return torch.from_numpy(onnx_initializers(repo / "smoother" / "1")["kernel"].reshape(-1).copy())


class NegatedCorrelation(FullCorrelation):
    """The same tensors and signature as the honest wrapper, but the output negated."""

    def forward(self, signal: torch.Tensor) -> torch.Tensor:
        batch, channels, length = signal.shape
        pad = self.kernel.shape[-1] - 1
        flat = torch.nn.functional.pad(signal.reshape(batch * channels, 1, length), (pad, pad), mode="replicate")
        return -torch.nn.functional.conv1d(flat, self.kernel).reshape(batch, channels, length + pad)


def refused(version, engine="torchscript"):
    report, proven = prove_version(version, engine=engine)
    assert not report.ok and proven is None, report.render()
    return report


def test_honest_torchscript_passes_and_serves_the_proven_kernel(repo):
    report, proven = prove_version(repo / "smoother" / "1", engine="torchscript")
    assert report.ok, report.render()
    assert proven.engine.format == "torchscript"
    x = np.random.default_rng(0).standard_normal((1, 1, 20)).astype(np.float32)
    kernel = onnx_initializers(repo / "smoother" / "1")["kernel"].reshape(-1)
    padded = np.pad(x[0, 0], (kernel.size - 1, kernel.size - 1), mode="edge")
    np.testing.assert_allclose(proven.engine.run(x)[0, 0], np.correlate(padded, kernel, mode="valid"), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("change, number", [(lambda k: -k, 2), (lambda k: k.flip(0), 3), (lambda k: -k.flip(0), 4)])
def test_negated_or_reversed_kernel_in_model_ts_is_refused(repo, change, number):
    version = _tampered(repo, "smoother", number, FullCorrelation(change(_kernel(repo))))
    report = refused(version)
    assert report.failed_step.step == "constraints" or "model.ts is refused" in report.reason
    assert "tensor 'kernel' differs from the proven tensor" in report.render() or "kernel" in report.reason


def test_a_different_forward_with_the_honest_tensors_is_refused(repo):
    version = _tampered(repo, "smoother", 5, NegatedCorrelation(_kernel(repo)))
    report = refused(version)
    assert "model.ts is refused" in report.reason and "forward graph" in report.reason


def test_a_rescaled_kernel_that_is_still_monotone_is_refused(repo):
    """Positive and non-decreasing still, so rules alone would pass it: but it is not the proven kernel."""
    version = _tampered(repo, "smoother", 6, FullCorrelation(_kernel(repo) * 2.0))
    report = refused(version)
    assert "model.ts is refused" in report.reason or "sums_to_one" in report.reason


def test_a_classifier_with_a_flipped_direction_sign_is_refused(repo):
    tensors = onnx_initializers(repo / "classifier" / "1")
    t = {k: torch.from_numpy(np.array(v, copy=True)) for k, v in tensors.items()}
    count = len([k for k in t if k.startswith("layers.") and k.endswith(".weight")])
    sign = t["direction_sign"].clone()
    sign[0] = -sign[0]
    module = ClassifierScores(t["feature_mean"], t["feature_scale"], sign,
                              [(t[f"layers.{i}.weight"], t[f"layers.{i}.bias"]) for i in range(count)])
    version = _tampered(repo, "classifier", 2, module)
    report = refused(version)
    assert "model.ts is refused" in report.reason and "direction_sign" in report.reason


def test_the_onnx_engine_ignores_model_ts(repo):
    """The ONNX engine proves and serves model.onnx; a hostile model.ts beside it only fails the TorchScript engine."""
    version = _tampered(repo, "smoother", 7, NegatedCorrelation(_kernel(repo)))
    report, proven = prove_version(version, engine="onnx")
    assert report.ok, report.render()


def test_verify_cli_refuses_a_negated_model_ts(repo):
    version = _tampered(repo, "smoother", 8, FullCorrelation(-_kernel(repo).flip(0)))
    result = subprocess.run([sys.executable, "-m", "monoserve.cli", "verify", str(version), "--engine", "torchscript"],
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAILED" in result.stdout and "PASSED" not in result.stdout
    assert "kernel" in result.stdout


def test_a_running_torchscript_service_refuses_the_hostile_model_ts_and_serves_the_good_version(tmp_path):
    """`monoserve serve --engine torchscript`: version 2's model.ts negates and reverses the kernel; the
    service serves version 1, and GET /models/smoother says why version 2 was refused."""
    import httpx

    from test_service_e2e import free_port, start_server, stop, wait_ready

    repo = fresh_repo(tmp_path, models=("smoother",))
    _tampered(repo, "smoother", 2, FullCorrelation(-_kernel(repo).flip(0)))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = start_server(repo, port, "--engine", "torchscript")
    try:
        wait_ready(process, base)
        answer = httpx.post(f"{base}/smooth", json={"signal": [1.0, 2.0, 3.0]}).json()
        assert answer["version"] == 1
        detail = httpx.get(f"{base}/models/smoother").json()
        assert detail["serving_version"] == 1
        refused_version = next(v for v in detail["versions"] if v["version"] == 2)
        assert refused_version["state"] == "refused" and "kernel" in refused_version["report"]["reason"]
    finally:
        stop(process)
