"""scripts/gpu-check on this machine: it must run without a GPU and without network access,
say plainly that there is no GPU, fall back to the CPU where it can, and write its results."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from service_fixtures import fresh_repo

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu-check"


def offline(command: list[str]) -> list[str]:
    """The command in a network namespace of its own (loopback only), where unprivileged user
    namespaces are allowed; else as is (the check then only shows it completes)."""
    unshare = shutil.which("unshare")
    if unshare and subprocess.run([unshare, "-rn", "true"], capture_output=True).returncode == 0:
        quoted = " ".join(f"'{part}'" for part in command)
        return [unshare, "-rn", "sh", "-c", f"ip link set lo up 2>/dev/null || true; exec {quoted}"]
    return command


@pytest.mark.slow
def test_gpu_check_runs_here_offline_and_degrades_to_the_cpu(tmp_path):
    from service.compute.engines import onnx_cuda_available, torch_cuda_available

    repo = fresh_repo(tmp_path, models=("smoother", "classifier"))
    out = tmp_path / "out"
    command = [sys.executable, str(SCRIPT), "--quick", "--budget", "240", "--out", str(out), "--repo", str(repo),
               "--skip", "pytest"]
    result = subprocess.run(offline(command), capture_output=True, text=True, timeout=400, cwd=ROOT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    summary = json.loads((out / "gpu-check.json").read_text())
    status = {(step["status"], step["step"]) for step in summary["steps"]}
    assert not [step for step in summary["steps"] if step["status"] == "FAIL"], output
    if not torch_cuda_available():
        assert "no GPU" in output and ("SKIP", "torch CUDA") in status
        assert "(CPU fallback: no GPU)" in output
        verify = [s for s in summary["steps"] if s["step"].startswith("verify ")]
        assert verify and all(s["status"] == "SKIP" and "exit 2 as designed" in s["message"] for s in verify)
    if not onnx_cuda_available():
        assert "has NO CUDAExecutionProvider" in output and "64 MiB carry limit" in output
    assert ("PASS", "server") in status and ("PASS", "benchmark") in status
    assert ("SKIP", "pytest") in status  # left out here: the CUDA marker tests run on the GPU machine
    bench = json.loads((out / "gpu-bench.json").read_text())
    engines = {row["engine"] for row in bench["rows"]}
    assert {"onnxruntime cpu", "torchscript cpu"} <= engines
    assert all(row["median_ms"] > 0 and row["per_second"] > 0 for row in bench["rows"])
    assert "| smooth 8 x 20,000 | onnxruntime cpu |" in (out / "gpu-bench.md").read_text()


def test_gpu_wheels_lists_what_the_service_imports():
    """Every module the check needs on the lent machine is in scripts/gpu-wheels' list."""
    wheels = (ROOT / "scripts" / "gpu-wheels").read_text().lower().replace("_", "-")
    for package in ("pydantic==", "pydantic-core==", "pydantic-settings==", "fastapi==", "starlette==", "uvicorn==",
                    "orjson==", "pysimdjson==", "swagger-ui-bundle-v2==", "python-dotenv=="):
        assert package in wheels, package
