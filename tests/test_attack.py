"""`monoserve attack`: the increase-only evasion attack on published ONNX artifacts, and what it
needs from training and export (tanh / log1p / calibrated models export and verify; scope none)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from export.core import export_checkpoint
from models.attack import evade, parse_budgets, run_attack
from monoserve.cli import main

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
FEATURES = ["a", "b", "c"]


def write_data(path: Path, n_rows: int = 900, seed: int = 0) -> Path:
    """Spam-like data where b *lowers* the odds: an unconstrained model learns a negative effect
    that an attacker can exploit by raising b; a monotone model cannot use it."""
    rng = np.random.default_rng(seed)
    x = rng.exponential(size=(n_rows, 3)) * [2.0, 1.0, 3.0]
    logit = 1.2 * x[:, 0] - 2.0 * x[:, 1] + 0.3 * x[:, 2] - 0.5
    y = (rng.random(n_rows) < 1 / (1 + np.exp(-logit))).astype(int)
    lines = ["a,b,c,y"] + [f"{r[0]:.5f},{r[1]:.5f},{r[2]:.5f},{label}" for r, label in zip(x, y)]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """Three versions trained on the same data: scope all (tanh, log1p, calibrated), final, none."""
    root = tmp_path_factory.mktemp("attack")
    data = write_data(root / "data.csv")
    repo = root / "repo"
    versions = {}
    for scope in ("all", "final", "none"):
        ckpt = root / f"{scope}.ckpt"
        assert main(["--log-level", "WARNING", "train", "classifier", "--data", str(data), "--label", "y",
                     "--scope", scope, "--activation", "tanh", "--transform", "log1p", "--calibrate",
                     "--hidden", "16,16", "--epochs", "60", "--out", str(ckpt)]) == 0
        # the unconstrained baseline is exported only when asked for (contract.policy)
        result = export_checkpoint(ckpt, repo, name=scope, formats="onnx", allow_unconstrained=(scope == "none"))
        versions[scope] = result.version_dir
    return data, versions


def test_monotone_model_is_never_evaded_while_unconstrained_ones_are(published):
    data, versions = published
    reports = {scope: run_attack(path, data, "y", budgets=[0.5, 2.0, 5.0], pairs=2000) for scope, path in versions.items()}
    for report in reports.values():
        assert report["budgets"] == [0.5, 2.0, 5.0] and report["n_attacked"] > 20
        assert report["rows"].startswith("held-out")  # the model's own held-out split
    assert reports["all"]["evasion_rate"] == [0.0, 0.0, 0.0]
    assert reports["all"]["monotonicity_check"]["violations"] == 0
    assert reports["none"]["evasion_rate"][-1] > 0.1, reports["none"]
    assert reports["none"]["monotonicity_check"]["violations"] > 0
    # more budget never evades fewer rows (the search space only grows)
    for report in reports.values():
        assert report["evasion_rate"] == sorted(report["evasion_rate"])


def test_attack_finds_the_exact_evasion_on_a_known_function():
    """score = sigmoid(x0 - 2 x1): from (3, 0), raising x1 by 1.5 brings the logit to 0."""
    def score(x):
        return 1 / (1 + np.exp(-(x[:, :1] - 2 * x[:, 1:2])))

    x = np.array([[3.0, 0.0], [3.0, 0.0]])
    _, low = evade(score, x, x + np.array([[0.0, 1.6], [0.0, 1.4]]), threshold=0.5)
    assert low[0] < 0.5 <= low[1]  # budget 1.6 evades, 1.4 cannot


def test_tanh_log1p_calibrated_model_exports_verifies_and_has_the_provable_graph(published):
    _, versions = published
    version_dir = versions["all"]
    graph = onnx.load(str(version_dir / "model.onnx")).graph
    ops = [node.op_type for node in graph.node]
    assert "Tanh" in ops and "Log" in ops and "Relu" in ops
    # log1p is Relu -> Add -> Log, so the certificate can prove the Log's input is >= 1
    producers = {out: node for node in graph.node for out in node.output}
    log = next(node for node in graph.node if node.op_type == "Log")
    add = producers[log.input[0]]
    assert add.op_type == "Add" and any(producers.get(i) is not None and producers[i].op_type == "Relu" for i in add.input)
    manifest = json.loads((version_dir / "manifest.json").read_text())
    rules = {(c["tensor"], c["rule"]) for c in manifest["constraints"]}
    assert ("calibration_scale", "positive") in rules
    info = manifest["classifier"]
    assert (info["activation"], info["transform"], info["calibrated"]) == ("tanh", "log1p", True)
    assert "activation tanh, log1p features, calibrated" in (version_dir / "card.md").read_text()
    assert manifest["training_metrics"]["heldout"]["roc_auc"] > 0.65  # b, which lowers the odds, is unusable here
    assert "threshold" in manifest["training_metrics"] and manifest["classifier"]["threshold"] != 0.5
    result = subprocess.run([sys.executable, "-m", "monoserve.cli", "verify", str(version_dir)], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "certificate" in result.stdout and "PASSED" in result.stdout


def test_scope_none_checkpoint_exports_with_no_weight_rules(published):
    _, versions = published
    manifest = json.loads((versions["none"] / "manifest.json").read_text())
    assert manifest["classifier"]["scope"] == "none" and manifest["classifier"]["monotone_features"] == []
    assert {c["rule"] for c in manifest["constraints"]} <= {"positive"}  # feature_scale, calibration_scale


def test_attack_cli_writes_json_and_the_card_table_without_touching_manifest_files(published, tmp_path):
    data, versions = published
    version_dir = versions["final"]
    before = {path: path.read_bytes() for path in sorted(version_dir.rglob("*")) if path.is_file()}
    attack_dir = version_dir.with_name(version_dir.name + ".attack")
    report = tmp_path / "attack.json"
    result = subprocess.run(
        [sys.executable, "-m", "monoserve.cli", "attack", str(version_dir), "--data", str(data), "--label", "y",
         "--budgets", "1,5", "--pairs", "500", "--report", str(report)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    data_json = json.loads(report.read_text())
    assert data_json["budgets"] == [1.0, 5.0] and len(data_json["evasion_rate"]) == 2
    assert json.loads((attack_dir / "attack.json").read_text())["evasion_rate"] == data_json["evasion_rate"]
    card = (attack_dir / "card.md").read_text()
    assert card.count("## Evasion attack (increase-only)") == 1 and "| 5 |" in card
    # a second run replaces the section instead of appending another one
    again = subprocess.run(
        [sys.executable, "-m", "monoserve.cli", "attack", str(version_dir), "--data", str(data), "--label", "y",
         "--budgets", "2", "--pairs", "100"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    card = (attack_dir / "card.md").read_text()
    assert card.count("## Evasion attack (increase-only)") == 1 and "| 2 |" in card and "| 5 |" not in card
    assert "## Files" in card  # the sections export wrote are kept
    # the published version is immutable: the same files, byte for byte, none added
    assert {path: path.read_bytes() for path in sorted(version_dir.rglob("*")) if path.is_file()} == before
    verify = subprocess.run([sys.executable, "-m", "monoserve.cli", "verify", str(version_dir)], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert verify.returncode == 0, verify.stdout  # checksums still hold


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--budgets", "1,x"], "--budgets"),
        (["--budgets", "-1"], "positive"),
        (["--label", "nope"], "unknown label column 'nope'"),
    ],
)
def test_attack_bad_input_exits_2(published, args, fragment):
    data, versions = published
    argv = ["attack", str(versions["all"]), "--data", str(data), "--label", "y", "--no-card", *args]
    result = subprocess.run([sys.executable, "-m", "monoserve.cli", *argv], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 2 and fragment in result.stderr, result.stderr


def test_attack_refuses_a_smoother_version(tmp_path):
    version = tmp_path / "smoother" / "1"
    version.mkdir(parents=True)
    (version / "manifest.json").write_text(json.dumps({"kind": "smoother"}))
    result = subprocess.run([sys.executable, "-m", "monoserve.cli", "attack", str(version), "--data", "x.csv",
                             "--label", "y"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "needs a classifier" in result.stderr


def test_parse_budgets():
    assert parse_budgets("0.5, 1,2,5") == [0.5, 1.0, 2.0, 5.0]


def test_card_has_the_training_curve_and_the_report_metrics(published):
    import struct

    _, versions = published
    version_dir = versions["all"]
    png = (version_dir / "training.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", png[16:24]) == (600, 320)
    card = (version_dir / "card.md").read_text()
    assert "![training curve](training.png)" in card
    manifest = json.loads((version_dir / "manifest.json").read_text())
    auc = manifest["training_metrics"]["heldout"]["roc_auc"]
    assert f"| heldout.roc_auc | {auc:.6g} |" in card and "| heldout.ece |" in card and "| threshold |" in card


def test_tanh_log1p_calibrated_version_serves_from_a_real_server(published, tmp_path):
    """The version, alone in a repository, behind `monoserve serve`: proved, then /classify answers
    the artifact's probabilities with the threshold chosen at training."""
    import shutil
    import socket
    import time

    import httpx
    import onnxruntime as ort

    _, versions = published
    repo = tmp_path / "repo"
    shutil.copytree(versions["all"], repo / "all" / "1")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "monoserve.cli", "serve", "--repo", str(repo), "--host",
                                "127.0.0.1", "--port", str(port), "--grpc-port", "0"], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, process.stdout.read()
            try:
                if httpx.get(f"{base}/readyz", timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not become ready"
            time.sleep(0.2)
        rows = [[0.5, 0.1, 2.0], [3.0, 0.0, 0.0]]
        body = httpx.post(f"{base}/classify", json={"model": "all", "instances": rows}, timeout=10).json()
        session = ort.InferenceSession(str(versions["all"] / "model.onnx"), providers=["CPUExecutionProvider"])
        expected = session.run(None, {session.get_inputs()[0].name: np.array(rows, dtype=np.float32)})[0]
        np.testing.assert_allclose(np.array(body["scores"]).reshape(expected.shape), expected, rtol=1e-6)
        manifest = json.loads((versions["all"] / "manifest.json").read_text())
        assert body["threshold"] == pytest.approx(manifest["classifier"]["threshold"])
        report = httpx.get(f"{base}/models/all", timeout=10).json()
        assert report["state"] == "serving"
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_tanh_log1p_calibrated_torchscript_passes_the_torchscript_proof(published, tmp_path):
    """Export proves the staged version with each engine it wrote; the TorchScript proof rebuilds
    the wrapper from the ONNX tensors and the manifest's activation/transform/calibration."""
    _, versions = published
    checkpoint = versions["all"].parents[2] / "all.ckpt"  # the fixture's checkpoint
    version_dir = export_checkpoint(checkpoint, tmp_path / "repo", name="all", formats="onnx,torchscript").version_dir
    result = subprocess.run([sys.executable, "-m", "monoserve.cli", "verify", str(version_dir), "--engine", "torchscript"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "PASSED" in result.stdout, result.stdout + result.stderr
