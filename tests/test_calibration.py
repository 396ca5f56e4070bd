"""Classifier metrics, calibration that keeps monotonicity, threshold criteria, and the train report."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from models.classifier import ACTIVATIONS, ClassifierConfig, MonotoneClassifier
from models.metrics import (
    average_precision,
    brier_score,
    choose_threshold,
    confusion,
    expected_calibration_error,
    parse_threshold_criterion,
    roc_auc,
)
from models.train_classifier import ClassifierTrainOptions, fit_calibration, predict_logits, train_classifier

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
SPAM = ROOT / "data" / "spam7.csv"


def brute_average_precision(labels, scores):
    """Precision at each positive's rank (ties: all tied rows count as predicted together), averaged."""
    labels = np.asarray(labels).astype(bool)
    total = 0.0
    for s in scores[labels]:
        predicted = scores >= s
        total += (labels & predicted).sum() / predicted.sum()
    return total / labels.sum()


def test_average_precision_matches_its_definition_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(20):
        labels = rng.random(60) < 0.4
        scores = np.round(rng.random(60), 1)  # many ties
        assert average_precision(labels, scores) == pytest.approx(brute_average_precision(labels, scores), abs=1e-12)


def test_brier_ece_and_confusion_on_known_values():
    labels = np.array([1, 0, 1, 0])
    probabilities = np.array([0.9, 0.2, 0.6, 0.7])
    assert brier_score(labels, probabilities) == pytest.approx((0.01 + 0.04 + 0.16 + 0.49) / 4)
    assert confusion(labels, probabilities, 0.65) == {"tp": 1, "fp": 1, "tn": 1, "fn": 1}
    # bins: 0.2 -> bin 2 (gap 0.2), 0.6 -> bin 6 (gap 0.4), 0.7 -> bin 7 (gap 0.7), 0.9 -> bin 9 (gap 0.1)
    assert expected_calibration_error(labels, probabilities) == pytest.approx((0.2 + 0.4 + 0.7 + 0.1) / 4)


def test_ece_is_small_for_calibrated_probabilities_and_large_for_shifted_ones():
    rng = np.random.default_rng(1)
    p = rng.random(200_000)
    y = rng.random(p.size) < p
    assert expected_calibration_error(y, p) < 0.01
    assert expected_calibration_error(y, np.clip(p + 0.15, 0, 1)) > 0.1


def brute_threshold(labels, probabilities, criterion):
    best_t, best_value = None, -np.inf
    for t in np.unique(probabilities):
        c = confusion(labels, probabilities, t)
        if criterion == "f1":
            value = 2 * c["tp"] / (2 * c["tp"] + c["fp"] + c["fn"])
        else:
            value = c["tp"] / (c["tp"] + c["fn"]) - c["fp"] / (c["fp"] + c["tn"])
        if value > best_value + 1e-12:
            best_t, best_value = t, value
    return best_t


@pytest.mark.parametrize("criterion", ["f1", "youden"])
def test_threshold_criteria_pick_the_best_threshold(criterion):
    rng = np.random.default_rng(2)
    labels = rng.random(300) < 0.4
    probabilities = np.clip(0.35 * labels + 0.65 * rng.random(300), 0.01, 0.99)
    chosen = choose_threshold(labels, probabilities, criterion)
    expected = brute_threshold(labels, probabilities, criterion)
    assert chosen == pytest.approx(expected)


def test_fpr_criterion_keeps_the_false_positive_rate_under_its_target():
    rng = np.random.default_rng(3)
    labels = rng.random(2000) < 0.5
    probabilities = np.clip(0.3 * labels + 0.7 * rng.random(2000), 0.001, 0.999)
    for target in (0.01, 0.05, 0.2):
        threshold = choose_threshold(labels, probabilities, f"fpr:{target}")
        c = confusion(labels, probabilities, threshold)
        assert c["fp"] / (c["fp"] + c["tn"]) <= target
        # and it is the lowest such threshold: one candidate lower breaks the target
        lower = probabilities[probabilities < threshold]
        if lower.size:
            c = confusion(labels, probabilities, lower.max())
            assert c["fp"] / (c["fp"] + c["tn"]) > target


@pytest.mark.parametrize("text", ["f2", "fpr:", "fpr:2", "fpr:x", "fpr:0"])
def test_bad_threshold_criteria_are_named(text):
    with pytest.raises(ValueError, match=text.split(":")[0]):
        parse_threshold_criterion(text)


def synthetic(n_rows=1200, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.exponential(size=(n_rows, 3)) * [1.0, 5.0, 0.3]
    logit = 1.5 * np.log1p(x[:, 0]) + 0.5 * np.log1p(x[:, 1]) - 1.0
    y = (rng.random(n_rows) < 1 / (1 + np.exp(-logit))).astype(np.float32)[:, None]
    return x.astype(np.float32), y


@pytest.mark.parametrize("method", ["platt", "temperature"])
def test_calibration_scale_is_positive_keeps_auc_and_lowers_validation_ece(method):
    torch.manual_seed(0)
    x, y = synthetic()
    config = ClassifierConfig(feature_names=["a", "b", "c"], hidden=[8], activation="tanh", calibrated=True)
    model = MonotoneClassifier(config)
    # pos_weight 4 makes the raw probabilities far too high: calibration must pull them back
    options = ClassifierTrainOptions(epochs=40, pos_weight=4.0, seed=0, calibration=method, threshold_criterion="f1")
    result = train_classifier(model, x, y, options)
    calibration = result.metrics["calibration"]
    assert calibration["method"] == method and calibration["scale"][0] > 0
    assert calibration["val_ece_after"] < calibration["val_ece_before"]
    if method == "temperature":
        assert calibration["bias"] == [0.0]
    assert {"tensor": "calibration_scale", "rule": "positive", "tolerance": 0.0} in model.constraint_specs()
    # a positive affine map of the logit leaves the ranking (AUC) exactly as it was
    logits = predict_logits(model, x).numpy()[:, 0]
    raw = model.uncalibrated_logits(torch.from_numpy(x)).detach().numpy()[:, 0]
    assert roc_auc(y[:, 0], logits) == pytest.approx(roc_auc(y[:, 0], raw), abs=1e-9)
    # held-out probabilities are better calibrated than the uncalibrated ones
    split_test = result.split["n_test"]
    assert split_test > 0 and result.metrics["heldout"]["ece"] < 0.1


def test_refitting_calibration_starts_from_the_identity():
    torch.manual_seed(0)
    x, y = synthetic(400)
    model = MonotoneClassifier(ClassifierConfig(feature_names=["a", "b", "c"], hidden=[4], calibrated=True))
    model.fit_standardization(torch.from_numpy(x))
    first = fit_calibration(model, x, y, "platt")
    second = fit_calibration(model, x, y, "platt")
    assert first["scale"] == pytest.approx(second["scale"], rel=1e-5)
    assert first["bias"] == pytest.approx(second["bias"], abs=1e-5)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_every_allowed_activation_keeps_scores_monotone(activation):
    torch.manual_seed(0)
    config = ClassifierConfig(feature_names=["a", "b", "c"], hidden=[6, 5], activation=activation,
                              transform="log1p", calibrated=True)
    model = MonotoneClassifier(config)
    with torch.no_grad():
        model.calibration_scale.fill_(0.7)
        model.calibration_bias.fill_(-0.3)
    x = torch.randn(500, 3) * 3
    for feature in range(3):
        raised = x.clone()
        raised[:, feature] += torch.rand(500) * 4
        assert (model(raised) >= model(x) - 1e-6).all(), activation


def test_log1p_transform_is_log_of_relu_plus_one_and_fitted_before_standardization():
    model = MonotoneClassifier(ClassifierConfig(feature_names=["a"], hidden=[2], transform="log1p"))
    x = torch.tensor([[-5.0], [0.0], [np.e - 1.0]])
    model.fit_standardization(x)
    transformed = torch.tensor([0.0, 0.0, 1.0])
    assert model.feature_mean.item() == pytest.approx(transformed.mean().item())
    assert model.feature_scale.item() == pytest.approx(transformed.std(unbiased=False).item())


def test_scope_none_has_no_weight_constraints():
    model = MonotoneClassifier(ClassifierConfig(feature_names=["a", "b"], scope="none"))
    assert model.constrained_layers() == {}
    assert [spec["tensor"] for spec in model.constraint_specs()] == ["feature_scale"]
    assert not any("parametrizations" in name for name, _ in model.named_parameters())


@pytest.mark.slow
def test_spam7_default_configuration_report_matches_checkpoint_and_is_calibrated(tmp_path):
    """The default spam7 model (Makefile): tanh, log1p, Platt calibration, F1 threshold. Issue 12's
    bars: held-out AUC >= 0.91, ECE <= 0.05, and the attack evades it 0% at every budget."""
    from models.checkpoint import read_checkpoint

    out, report = tmp_path / "c.ckpt", tmp_path / "report.json"
    result = subprocess.run(
        [sys.executable, "-m", "monoserve.cli", "train", "classifier", "--data", str(SPAM), "--label", "spam",
         "--activation", "tanh", "--transform", "log1p", "--calibrate", "--threshold-criterion", "f1",
         "--out", str(out), "--report", str(report)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(report.read_text())
    heldout = data["heldout"]
    assert heldout["roc_auc"] >= 0.91 and heldout["ece"] <= 0.05, heldout
    assert set(heldout["confusion"]) == {"tp", "fp", "tn", "fn"} and sum(heldout["confusion"].values()) == 1150
    assert 0 < data["threshold"] < 1 and data["threshold_criterion"] == "f1"
    assert "PR AUC" in result.stdout and "ECE" in result.stdout and "threshold" in result.stdout
    payload = read_checkpoint(out)
    assert payload["metrics"]["heldout"]["roc_auc"] == heldout["roc_auc"]
    assert payload["config"]["threshold"] == data["threshold"]
    assert payload["config"]["activation"] == "tanh" and payload["config"]["transform"] == "log1p"
    assert len(payload["history"]["val_loss"]) == data["epochs_run"]

    # exported and attacked as served: no flagged held-out spam escapes by adding content
    from export.core import export_checkpoint
    from models.attack import run_attack

    version_dir = export_checkpoint(out, tmp_path / "repo", name="classifier", formats="onnx").version_dir
    attack = run_attack(version_dir, SPAM, "spam", budgets=[0.5, 1, 2, 5], pairs=2000)
    assert attack["n_attacked"] > 300 and attack["evasion_rate"] == [0.0, 0.0, 0.0, 0.0], attack
    assert attack["monotonicity_check"]["violations"] == 0


def test_warns_when_the_best_epoch_is_the_last_and_when_features_escape_the_guarantee():
    torch.manual_seed(0)
    x, y = synthetic(400)
    config = ClassifierConfig(feature_names=["a", "b", "c"], hidden=[4], directions=["increasing", "decreasing", "free"])
    result = train_classifier(MonotoneClassifier(config), x, y, ClassifierTrainOptions(epochs=2, lr=1e-4, seed=0))
    warnings = result.metrics["warnings"]
    assert any("last epoch (2 of 2)" in w and "--epochs" in w for w in warnings), warnings
    assert any("additive" in w and "b (decreasing)" in w and "c (free)" in w for w in warnings), warnings
    # an all-increasing model that converged has neither warning
    torch.manual_seed(0)
    plain = MonotoneClassifier(ClassifierConfig(feature_names=["a", "b", "c"], hidden=[4]))
    assert train_classifier(plain, x, y, ClassifierTrainOptions(epochs=200, patience=5, seed=0)).metrics["warnings"] == []


def test_pos_weight_accepts_a_number():
    from models.train_classifier import positive_weights

    labels = np.array([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]])
    assert positive_weights(labels, 2.5).tolist() == [2.5, 2.5]
    assert positive_weights(labels, "auto").tolist() == [2.0, 2.0]
    assert positive_weights(labels, "none") is None
    with pytest.raises(AssertionError, match="pos_weight"):
        ClassifierTrainOptions(pos_weight=-1.0)


def test_multilabel_calibration_fits_one_positive_scale_per_label():
    torch.manual_seed(0)
    rng = np.random.default_rng(5)
    x = rng.exponential(size=(900, 2)).astype(np.float32)
    y = np.stack([rng.random(900) < 1 / (1 + np.exp(-(x[:, 0] - 1))), rng.random(900) < 1 / (1 + np.exp(-(2 * x[:, 1] - 2)))],
                 axis=1).astype(np.float32)
    model = MonotoneClassifier(ClassifierConfig(feature_names=["a", "b"], labels=["p", "q"], hidden=[6],
                                                activation="tanh", calibrated=True))
    result = train_classifier(model, x, y, ClassifierTrainOptions(epochs=30, seed=0, calibration="platt",
                                                                  threshold_criterion="youden"))
    scale = result.metrics["calibration"]["scale"]
    assert len(scale) == 2 and min(scale) > 0 and scale[0] != scale[1]
    assert set(result.metrics["heldout"]["per_label"]) == {"p", "q"}
    # several labels: one threshold per label (issue 21), no single one
    assert result.metrics["threshold"] is None and result.metrics["threshold_criterion"] == "youden"
    assert set(result.metrics["thresholds"]) == {"p", "q"} and all(0 < t < 1 for t in result.metrics["thresholds"].values())
    assert model.config.thresholds == [result.metrics["thresholds"]["p"], result.metrics["thresholds"]["q"]]
