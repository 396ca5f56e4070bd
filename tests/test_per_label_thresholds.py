"""Issue 21: a multi-label classifier gets one decision threshold per label, chosen on the validation
split by the same criterion; it reaches the manifest (strictly validated), /classify's decisions,
the .npy headers, OIP, GET /models, the card and the client. End to end on a synthetic two-label
set with very different prevalences: train -> export -> a real server on ONNX Runtime."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from contract.manifest import Manifest
from models.checkpoint import save_checkpoint
from models.classifier import ClassifierConfig, MonotoneClassifier
from models.data import split_indices
from models.metrics import choose_threshold, confusion
from models.train_classifier import ClassifierTrainOptions, predict_logits, train_classifier
from monoserve import client as mc
from service.repository.prover import prove_version
from test_service_e2e import running_server

torch.set_num_threads(1)

FEATURES = ["a", "b", "c"]
LABELS = ["common", "rare"]


def two_label_set(rows: int = 3000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three increasing features; 'common' is positive in about half the rows, 'rare' in about 8%."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 3))
    common = rng.random(rows) < 1 / (1 + np.exp(-(1.5 * x[:, 0] + x[:, 1])))
    rare = rng.random(rows) < 1 / (1 + np.exp(-(2.0 * x[:, 2] + 0.5 * x[:, 1] - 3.5)))
    return x.astype(np.float32), np.stack([common, rare], axis=1).astype(np.float32)


def f1(labels: np.ndarray, probabilities: np.ndarray, threshold: float) -> float:
    c = confusion(labels, probabilities, threshold)
    return 2 * c["tp"] / max(2 * c["tp"] + c["fp"] + c["fn"], 1)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    x, y = two_label_set()
    torch.manual_seed(0)
    model = MonotoneClassifier(ClassifierConfig(feature_names=FEATURES, labels=LABELS, hidden=[8], activation="tanh"))
    options = ClassifierTrainOptions(epochs=40, seed=0, threshold_criterion="f1")
    result = train_classifier(model, x, y, options)
    workdir = tmp_path_factory.mktemp("per-label")
    checkpoint = save_checkpoint(workdir / "two.ckpt", model, metrics=result.metrics)
    from export.core import export_checkpoint

    version_dir = export_checkpoint(checkpoint, workdir / "repo", name="two", formats=("onnx",)).version_dir
    return {"x": x, "y": y, "model": model, "result": result, "options": options, "repo": workdir / "repo",
            "version_dir": version_dir, "workdir": workdir}


@pytest.fixture(scope="module")
def server(trained):
    with running_server(trained["repo"]) as running:
        yield running.base
    assert running.process.returncode == 0, running.output


def test_prevalences_differ():
    _, y = two_label_set()
    common, rare = y.mean(axis=0)
    assert 0.4 < common < 0.6 and 0.03 < rare < 0.15


def test_each_label_gets_the_criterions_threshold_on_its_own_validation_rows(trained):
    model, x, y = trained["model"], trained["x"], trained["y"]
    split = split_indices(x.shape[0], trained["options"].val_fraction, trained["options"].test_fraction, 0)
    probabilities = torch.sigmoid(predict_logits(model, x[split["val"]])).double().numpy()
    val_y = y[split["val"]]
    expected = [choose_threshold(val_y[:, i], probabilities[:, i], "f1") for i in range(2)]
    assert model.config.thresholds == expected
    pooled = choose_threshold(val_y.ravel(), probabilities.ravel(), "f1")
    assert model.config.threshold == pooled
    assert abs(expected[0] - expected[1]) > 0.05  # the prevalences differ: so do the thresholds
    for i in range(2):  # per label, its own threshold is at least as good on validation as the pooled one
        assert f1(val_y[:, i], probabilities[:, i], expected[i]) >= f1(val_y[:, i], probabilities[:, i], pooled)
    metrics = trained["result"].metrics
    assert metrics["threshold"] is None and metrics["threshold_pooled"] == pooled
    assert metrics["thresholds"] == dict(zip(LABELS, expected))
    for i, label in enumerate(LABELS):  # the held-out confusion per label is counted at the label's threshold
        per_label = metrics["heldout"]["per_label"][label]
        test_p = torch.sigmoid(predict_logits(model, x[split["test"]])).double().numpy()[:, i]
        assert per_label["threshold"] == expected[i]
        assert per_label["confusion"] == confusion(y[split["test"], i], test_p, expected[i])


def test_single_label_models_keep_one_threshold():
    x, y = two_label_set(1200, seed=1)
    torch.manual_seed(0)
    model = MonotoneClassifier(ClassifierConfig(feature_names=FEATURES, labels=["common"], hidden=[4]))
    result = train_classifier(model, x, y[:, :1], ClassifierTrainOptions(epochs=5, seed=0, threshold_criterion="f1"))
    assert model.config.thresholds is None and 0 < result.metrics["threshold"] < 1
    assert result.metrics["thresholds"] == {"common": result.metrics["threshold"]}


def test_the_manifest_and_card_carry_the_thresholds(trained):
    manifest = Manifest.read(trained["version_dir"])
    assert manifest.classifier.thresholds == trained["model"].config.thresholds
    assert manifest.classifier.label_thresholds == trained["model"].config.thresholds
    card = (trained["version_dir"] / "card.md").read_text()
    assert "thresholds per label: " + ", ".join(f"{n} {t:g}" for n, t in zip(LABELS, manifest.classifier.thresholds)) in card


def expected_decisions(scores: np.ndarray, thresholds: list[float]) -> list[list[str]]:
    return [[label for label, score, t in zip(LABELS, row, thresholds) if score >= t] for row in scores]


def test_classify_oip_models_and_the_client_apply_each_labels_threshold(trained, server):
    thresholds = trained["model"].config.thresholds
    pooled = trained["model"].config.threshold
    x = trained["x"][:400]
    body = httpx.post(f"{server}/classify", json={"instances": x.tolist(), "model": "two"}, timeout=60).json()
    scores = np.asarray(body["scores"], dtype=np.float32)
    assert scores.shape == (400, 2) and body["labels"] == LABELS
    assert body["threshold"] == thresholds
    assert body["decisions"] == expected_decisions(scores, thresholds)
    # the per-label thresholds decide differently from any one threshold on these rows
    assert body["decisions"] != expected_decisions(scores, [pooled, pooled])

    # OIP: same scores, the thresholds and decisions in the response's parameters
    oip = httpx.post(f"{server}/v2/models/two/infer", timeout=60, json={
        "inputs": [{"name": "features", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}]}).json()
    assert oip["parameters"]["threshold"] == thresholds
    assert oip["parameters"]["decisions"] == body["decisions"]
    np.testing.assert_array_equal(np.asarray(oip["outputs"][0]["data"], dtype=np.float32).reshape(400, 2), scores)

    listing = httpx.get(f"{server}/models", timeout=60).json()
    entry = next(m for m in listing["models"] if m["name"] == "two")
    assert entry["thresholds"] == dict(zip(LABELS, thresholds)) and entry["labels"] == LABELS
    detail = httpx.get(f"{server}/models/two", timeout=60).json()
    assert detail["versions"][0]["classifier"]["thresholds"] == thresholds

    with mc.Client(server) as c:
        for as_json in (True, False):  # JSON answer, and .npy with the thresholds in a header
            result = c.classify(x, model="two", json=as_json)
            assert isinstance(result.threshold, np.ndarray) and result.threshold.tolist() == thresholds
            assert result.thresholds == dict(zip(LABELS, thresholds))
            decided = result.scores >= result.threshold  # broadcasts one threshold per label
            assert [[LABELS[j] for j in np.flatnonzero(row)] for row in decided] == body["decisions"]


def rewrite_manifest(source: Path, target: Path, edit) -> Path:
    shutil.copytree(source, target)
    data = json.loads((source / "manifest.json").read_text())
    data["version"] = int(target.name)
    edit(data["classifier"])
    (target / "manifest.json").write_text(json.dumps(data))
    return target


@pytest.mark.parametrize("case, edit, message", [
    ("one too few", lambda c: c.update(thresholds=c["thresholds"][:1]), "thresholds has 1 value(s) for 2 label(s)"),
    ("one too many", lambda c: c.update(thresholds=c["thresholds"] + [0.5]), "thresholds has 3 value(s)"),
    ("NaN", lambda c: c.update(thresholds=[math.nan, 0.5]), "finite number"),
    ("infinity", lambda c: c.update(thresholds=[0.5, math.inf]), "finite number"),
    ("above 1", lambda c: c.update(thresholds=[0.5, 1.5]), "less than or equal to 1"),
    ("below 0", lambda c: c.update(thresholds=[-0.1, 0.5]), "greater than or equal to 0"),
    ("a string", lambda c: c.update(thresholds=["0.5", 0.5]), "valid number"),
    ("a boolean", lambda c: c.update(thresholds=[True, 0.5]), "valid number"),
    ("null inside", lambda c: c.update(thresholds=[None, 0.5]), "valid number"),
    ("not a list", lambda c: c.update(thresholds=0.5), "valid array"),
    ("the single one NaN", lambda c: c.update(threshold=math.nan), "finite number"),
    ("the single one above 1", lambda c: c.update(threshold=2.0), "less than or equal to 1"),
])
def test_a_hostile_publishers_thresholds_are_refused(trained, tmp_path, case, edit, message):
    version_dir = rewrite_manifest(trained["version_dir"], tmp_path / "two" / "7", edit)
    report, served = prove_version(version_dir)
    assert served is None and not report.ok
    assert report.failed_step.step == "manifest" and message in report.reason and "threshold" in report.reason


def test_an_old_single_threshold_manifest_stays_valid(trained, tmp_path):
    version_dir = rewrite_manifest(trained["version_dir"], tmp_path / "two" / "8", lambda c: c.pop("thresholds"))
    report, served = prove_version(version_dir)
    assert report.ok, report.reason
    info = served.manifest.classifier
    assert not info.per_label and info.label_thresholds == [info.threshold] * 2


def test_the_cli_reports_each_labels_threshold(tmp_path):
    import subprocess
    import sys

    x, y = two_label_set(1500, seed=2)
    data = tmp_path / "two.csv"
    data.write_text("a,b,c,common,rare\n" + "".join(
        ",".join(f"{v:.5f}" for v in row) + f",{int(labels[0])},{int(labels[1])}\n" for row, labels in zip(x, y)))
    report = tmp_path / "r.json"
    result = subprocess.run(
        [sys.executable, "-m", "monoserve.cli", "--log-level", "WARNING", "train", "classifier", "--data", str(data),
         "--label", "common", "rare", "--hidden", "8", "--epochs", "15", "--out", str(tmp_path / "c.ckpt"),
         "--report", str(report)], cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    body = json.loads(report.read_text())
    assert body["threshold"] is None and set(body["thresholds"]) == set(LABELS)
    assert "thresholds per label (f1; pooled would be" in result.stdout
    for label in LABELS:
        assert body["heldout"]["per_label"][label]["threshold"] == body["thresholds"][label]
        line = next(line for line in result.stdout.splitlines() if line.strip().startswith(f"{label}: accuracy"))
        assert f"threshold {body['thresholds'][label]:.4f}: TP" in line


def test_fixed_thresholds_one_per_label_or_one_for_all(tmp_path):
    import subprocess
    import sys

    x, y = two_label_set(600, seed=3)
    data = tmp_path / "two.csv"
    data.write_text("a,b,c,common,rare\n" + "".join(
        ",".join(f"{v:.5f}" for v in row) + f",{int(labels[0])},{int(labels[1])}\n" for row, labels in zip(x, y)))

    def train(*thresholds: str) -> tuple[subprocess.CompletedProcess, Path]:
        out = tmp_path / f"c{len(thresholds)}.ckpt"
        result = subprocess.run(
            [sys.executable, "-m", "monoserve.cli", "--log-level", "WARNING", "train", "classifier", "--data",
             str(data), "--label", "common", "rare", "--hidden", "4", "--epochs", "3", "--threshold", *thresholds,
             "--out", str(out)], cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=300)
        return result, out

    from models.checkpoint import load_checkpoint

    result, out = train("0.3", "0.8")
    assert result.returncode == 0, result.stderr
    config = load_checkpoint(out)[0].config
    assert config.thresholds == [0.3, 0.8] and config.label_thresholds == [0.3, 0.8]
    result, out = train("0.4")
    assert result.returncode == 0, result.stderr
    config = load_checkpoint(out)[0].config
    assert config.thresholds is None and config.label_thresholds == [0.4, 0.4]
    result, out = train("0.3", "0.8", "0.5")
    assert result.returncode == 2 and "one per label (2: common, rare), got 3" in result.stderr and not out.exists()
    result, out = train("0.3", "1.5")
    assert result.returncode == 2 and "--threshold must be in (0, 1), got 1.5" in result.stderr


def test_what_answers_carry_one_number_unless_labels_have_their_own():
    from contract.manifest import ClassifierInfo, FeatureSpec

    def info(labels, **thresholds):
        return ClassifierInfo(features=[FeatureSpec(name="a")], labels=labels, scope="all", method="reparam",
                              **thresholds)

    assert info(["x"]).decision_threshold == 0.5
    assert info(["x"], threshold=0.2, thresholds=[0.3]).decision_threshold == 0.3  # a single label's own: a number
    assert info(["x", "y"], threshold=0.2).decision_threshold == 0.2  # an old multi-label manifest
    per_label = info(["x", "y"], threshold=0.2, thresholds=[0.3, 0.9])
    assert per_label.per_label and per_label.decision_threshold == [0.3, 0.9]
