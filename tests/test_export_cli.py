"""`python -m export` / `monoserve export` as a user runs them: real subprocesses, exit codes, messages."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from contract.manifest import Manifest
from models.checkpoint import save_checkpoint
from models.classifier import ClassifierConfig, MonotoneClassifier
from models.smoother import MonotoneSmoother, SmootherConfig

ROOT = Path(__file__).resolve().parents[1]


def run_export(*args: str | Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "export", *map(str, args)],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout,
    )


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli-ckpt")
    torch.manual_seed(0)
    smoother = save_checkpoint(root / "smoother.pt", MonotoneSmoother(SmootherConfig(kernel_size=5)), {"mse": 0.5})
    classifier = MonotoneClassifier(ClassifierConfig(feature_names=["a", "b"], hidden=[3], method="project"))
    with torch.no_grad():
        classifier.layers[0].weight[1, 0] = -0.75  # what an unprojected optimizer step leaves behind
        classifier.layers[1].weight[:] = -0.5  # 3 more: all of them are listed
    bad_classifier = save_checkpoint(root / "negative.pt", classifier)
    not_a_checkpoint = root / "notes.txt"
    not_a_checkpoint.write_text("these are not the weights you are looking for\n")
    unknown_kind = root / "unknown_kind.pt"
    torch.save({"format": 1, "kind": "transformer", "config": {}, "state_dict": {}}, unknown_kind)
    future_format = root / "future.pt"
    payload = torch.load(smoother, weights_only=True)
    payload["format"] = 99
    torch.save(payload, future_format)
    return {
        "smoother": smoother,
        "negative": bad_classifier,
        "text": not_a_checkpoint,
        "unknown_kind": unknown_kind,
        "future": future_format,
    }


@pytest.mark.parametrize(
    "case, extra, message",
    [
        ("missing", [], "checkpoint not found"),
        ("text", [], "not a readable torch checkpoint"),
        ("unknown_kind", [], "unknown model kind 'transformer'"),
        ("future", [], "unsupported checkpoint format 99"),
        ("smoother", ["--formats", "onnx,tflite"], "unknown format(s) 'tflite'"),
        ("smoother", ["--formats", "torchscript,pt2"], "lack onnx: the service proves every version from model.onnx"),
        ("smoother", ["--name", "../up"], "invalid model name"),
        ("smoother", ["--atol", "-1"], "invalid atol"),
    ],
)
def test_bad_input_exits_2_with_a_clear_message(case, extra, message, ckpts, tmp_path):
    checkpoint = ckpts.get(case, tmp_path / "does-not-exist.pt")
    result = run_export(checkpoint, "--repo", tmp_path / "repo", *extra)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert not (tmp_path / "repo").exists()


def test_unwritable_repository_exits_2(ckpts, tmp_path):
    blocker = tmp_path / "repo-is-a-file"
    blocker.write_text("")
    result = run_export(ckpts["smoother"], "--repo", blocker)
    assert result.returncode == 2
    assert f"{blocker} is not usable" in result.stderr and "not a directory" in result.stderr


def test_constraint_violation_exits_1_naming_tensor_and_index(ckpts, tmp_path):
    result = run_export(ckpts["negative"], "--repo", tmp_path / "repo")
    assert result.returncode == 1
    assert "4 constraint violation(s)" in result.stderr
    assert "layers.0.weight[1, 0]: nonnegative violated" in result.stderr and "-0.75" in result.stderr
    for column in range(3):
        assert f"layers.1.weight[0, {column}]: nonnegative violated" in result.stderr
    assert not (tmp_path / "repo").exists()


def test_concurrent_exports_get_distinct_versions_and_print_a_report(ckpts, tmp_path):
    """Two real processes race for the next version (ONNX and TorchScript: the race is the same for every format,
    and the service's proof, which export runs before publishing, needs model.onnx)."""
    repo = tmp_path / "repo"
    command = [sys.executable, "-m", "export", str(ckpts["smoother"]), "--repo", str(repo), "--formats", "onnx,torchscript"]
    processes = [subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(2)]
    outputs = [process.communicate(timeout=300) for process in processes]
    assert [process.returncode for process in processes] == [0, 0], [err for _, err in outputs]
    printed = sorted(out.splitlines()[0] for out, _ in outputs)
    assert printed == [str(repo / "smoother" / "1"), str(repo / "smoother" / "2")]
    assert sorted(os.listdir(repo / "smoother")) == ["1", "2"]  # no staging directory left behind
    for version in (1, 2):
        assert Manifest.read(repo / "smoother" / str(version)).version == version
    report = outputs[0][0]
    for expected in ("model.ts", "kernel positive", "parity vs eager torch", "torchscript  max abs error"):
        assert expected in report


def test_sigterm_during_export_leaves_the_repository_as_it_was(ckpts, tmp_path):
    """SIGTERM a real export CLI while it is writing: nothing remains.

    The child runs the real CLI with its ONNX writer wrapped to wait after writing `model.onnx`, so
    the signal always lands mid-export (on a loaded machine an unstalled export can finish first).
    """
    repo = tmp_path / "repo"
    marker = tmp_path / "onnx-written"
    child = (
        "import sys, time, pathlib\n"
        "import export.artifacts as artifacts\n"
        "from export.__main__ import main\n"
        "real_write = artifacts.write_onnx\n"
        "def stalled_write(*args, **kwargs):\n"
        "    result = real_write(*args, **kwargs)\n"
        f"    pathlib.Path({str(marker)!r}).touch()\n"
        "    time.sleep(120)\n"
        "    return result\n"
        "artifacts.write_onnx = stalled_write\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    command = [sys.executable, "-c", child, str(ckpts["smoother"]), "--repo", str(repo), "--formats", "onnx,torchscript"]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not marker.exists():
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the export never wrote model.onnx"
            time.sleep(0.05)
        assert list(repo.glob("smoother/.tmp-*/model.onnx")), "model.onnx should be in the staging directory"
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert not repo.exists()  # staging, NAME and REPO directories were all created by this export


def test_cli_modules_import_no_torch():
    code = "import sys, export.cli, export.errors, export.publish, contract.manifest; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_monoserve_export_subcommand_is_registered(ckpts, tmp_path):
    from export.cli import run_export as handler
    from monoserve.cli import build_parser

    args = build_parser().parse_args(["export", str(ckpts["smoother"]), "--repo", str(tmp_path), "--formats", "pt2,onnx"])
    assert args.func is handler and args.formats == ("pt2", "onnx") and args.checkpoint == ckpts["smoother"]
