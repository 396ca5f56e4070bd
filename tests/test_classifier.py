"""MonotoneClassifier: constraints during and after training, the monotonicity property, spam7 quality."""

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from contract.checks import check_all
from models.classifier import METHODS, ClassifierConfig, MonotoneClassifier
from models.constraints import NONNEG_KINDS, folded_state_dict
from models.data import binary_labels, read_table
from models.metrics import average_ranks, roc_auc
from models.train_classifier import (
    ClassifierTrainOptions,
    evaluate,
    fit,
    positive_weights,
    split_indices,
    train_classifier,
)

torch.set_num_threads(1)  # tiny models: extra threads only add contention on a shared machine

DATA = Path(__file__).resolve().parents[1] / "data"
FEATURES = ["a", "b", "c", "d"]
DIRECTIONS = ["increasing", "decreasing", "free", "increasing"]
LABELS = ["x", "y", "z"]


def synthetic(n_rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Features on different scales; three labels that rise with a, d and fall with b."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_rows, 4)) * [1.0, 2.0, 0.5, 10.0] + [0.0, 5.0, 0.0, 100.0]
    z = (x - [0.0, 5.0, 0.0, 100.0]) / [1.0, 2.0, 0.5, 10.0]
    logits = np.stack([z[:, 0] - z[:, 1], z[:, 3] + np.sin(3 * z[:, 2]), z[:, 0] + z[:, 3] - 1.0], axis=1)
    y = (rng.random((n_rows, 3)) < 1.0 / (1.0 + np.exp(-2.0 * logits))).astype(np.float32)
    return x.astype(np.float32), y


def constrained_tensors(model: MonotoneClassifier) -> list[tuple[dict, np.ndarray]]:
    folded = folded_state_dict(model)
    return [(spec, folded[spec["tensor"]].double().numpy()) for spec in model.constraint_specs()]


def make_adversarial(model: MonotoneClassifier) -> None:
    """Start from negative weights: raw values for reparam, the weights themselves for project."""
    torch.manual_seed(1)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("weight") or name.endswith("weight.original"):
                parameter.copy_(-(0.5 + torch.rand_like(parameter)))


METHOD_CASES = [("reparam", kind) for kind in NONNEG_KINDS] + [("project", "softplus")]


@pytest.mark.parametrize("scope", ["all", "final"])
@pytest.mark.parametrize(("method", "nonneg"), METHOD_CASES)
def test_constraints_hold_after_every_step_from_negative_initial_weights(scope, method, nonneg):
    torch.manual_seed(0)
    config = ClassifierConfig(
        feature_names=FEATURES, labels=LABELS, hidden=[8, 8], scope=scope, method=method, nonneg=nonneg,
        directions=DIRECTIONS if scope == "all" else None,
    )
    model = MonotoneClassifier(config)
    make_adversarial(model)
    if method == "project":
        assert check_all(constrained_tensors(model)), "the adversarial start must break the rule before projection"
    x, y = synthetic(300, seed=0)
    steps: list[int] = []

    def check_after_step(stepped: MonotoneClassifier) -> None:
        violations = check_all(constrained_tensors(stepped))
        assert violations == [], f"step {len(steps)}: {violations[:3]}"
        steps.append(1)

    options = ClassifierTrainOptions(epochs=4, batch_size=64, lr=0.05, patience=10, progress=False)
    result = train_classifier(model, x, y, options, after_step=check_after_step)
    assert len(steps) == result.metrics["epochs_run"] * 3  # 180 training rows / 64 = 3 batches per epoch
    assert check_all(constrained_tensors(model)) == []
    # scope 'final' leaves the hidden layers free: the adversarial negatives are still there
    hidden = folded_state_dict(model)["layers.1.weight"]
    assert bool((hidden < 0).any()) == (scope == "final")


def random_model(seed: int, method: str, scope: str = "all") -> MonotoneClassifier:
    """Every parameter drawn at random with either sign (raw values for reparam), then made feasible
    the method's own way; random standardization so it is not the identity. float64, eval mode."""
    torch.manual_seed(seed)
    config = ClassifierConfig(
        feature_names=FEATURES, labels=LABELS, hidden=[8, 6], scope=scope, method=method,
        directions=DIRECTIONS if scope == "all" else None,
    )
    model = MonotoneClassifier(config)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(2.0 * torch.randn_like(parameter))
        model.feature_mean.copy_(3.0 * torch.randn(4))
        model.feature_scale.copy_(0.1 + 5.0 * torch.rand(4))
    model.project_()
    return model.double().eval()


def scores_before_after(model: MonotoneClassifier, x: np.ndarray, feature: int, delta: float) -> tuple[np.ndarray, ...]:
    moved = x.copy()
    moved[feature] += delta
    with torch.no_grad():
        logits = model(torch.from_numpy(np.stack([x, moved])))
    return logits.numpy(), torch.sigmoid(logits).numpy()


MONOTONE_FEATURES = [i for i, d in enumerate(DIRECTIONS) if d != "free"]
SLACK = 1e-9  # float64 rounding only


@settings(max_examples=150, deadline=None)
@given(
    seed=st.integers(0, 2**20),
    method=st.sampled_from(METHODS),
    x=arrays(np.float64, (4,), elements=st.floats(-1e3, 1e3)),
    feature=st.sampled_from(MONOTONE_FEATURES),
    step=st.floats(0.0, 1e3),
)
def test_scope_all_scores_never_drop_when_a_feature_moves_its_way(seed, method, x, feature, step):
    """Raising an increasing feature, or lowering a decreasing one, never lowers any of the scores."""
    model = random_model(seed, method)
    delta = step if DIRECTIONS[feature] == "increasing" else -step
    logits, scores = scores_before_after(model, x, feature, delta)
    tolerance = SLACK * (1.0 + np.abs(logits[0]))
    assert (logits[1] >= logits[0] - tolerance).all(), (logits, DIRECTIONS[feature], delta)
    assert (scores[1] >= scores[0] - SLACK).all()


def test_the_property_check_catches_a_non_monotone_model():
    """Negative control: with scope 'final' the hidden layers are free, and the same check finds drops."""
    rng = np.random.default_rng(0)
    found = 0
    for seed in range(5):
        model = random_model(seed, "reparam", scope="final")
        for _ in range(40):
            x = rng.uniform(-10, 10, size=4)
            logits, _ = scores_before_after(model, x, int(rng.integers(4)), float(rng.uniform(0, 10)))
            found += int((logits[1] < logits[0] - SLACK * (1.0 + np.abs(logits[0]))).any())
    assert found > 0


def test_standardization_is_part_of_the_model():
    model = MonotoneClassifier(ClassifierConfig(feature_names=["p", "q"], labels=["y"]))
    features = torch.tensor([[1.0, 5.0], [3.0, 5.0], [5.0, 5.0]])
    model.fit_standardization(features)
    torch.testing.assert_close(model.feature_mean, torch.tensor([3.0, 5.0]))
    assert model.feature_scale.tolist() == pytest.approx([np.std([1.0, 3.0, 5.0]), 1.0])  # constant column: 1
    state = model.state_dict()
    assert "feature_mean" in state and "feature_scale" in state and "direction_sign" in state


def test_positive_weights_are_negatives_over_positives_per_label():
    labels = np.array([[1, 0], [0, 0], [0, 1], [1, 0]], dtype=np.float32)
    assert positive_weights(labels, "auto").tolist() == [1.0, 3.0]
    assert positive_weights(labels, "none") is None


def test_split_is_a_seeded_partition():
    first = split_indices(100, 0.15, 0.25, seed=3)
    assert sorted(np.concatenate(list(first.values())).tolist()) == list(range(100))
    assert (first["test"].size, first["val"].size, first["train"].size) == (25, 15, 60)
    again = split_indices(100, 0.15, 0.25, seed=3)
    assert all(np.array_equal(first[k], again[k]) for k in first)
    assert not np.array_equal(first["test"], split_indices(100, 0.15, 0.25, seed=4)["test"])


def test_early_stopping_keeps_the_best_validation_state():
    torch.manual_seed(0)
    x, y = synthetic(400, seed=1)
    model = MonotoneClassifier(ClassifierConfig(feature_names=FEATURES, labels=LABELS, hidden=[16], directions=DIRECTIONS))
    model.fit_standardization(torch.from_numpy(x[:300]))
    options = ClassifierTrainOptions(epochs=60, lr=0.05, batch_size=32, patience=5, progress=False)
    history, best_epoch, pos_weight = fit(model, (x[:300], y[:300]), (x[300:], y[300:]), options)
    val_losses = [entry["val_loss"] for entry in history]
    assert best_epoch == int(np.argmin(val_losses))
    assert evaluate(model, x[300:], y[300:], pos_weight)["loss"] == pytest.approx(min(val_losses), rel=1e-6)
    assert len(history) <= best_epoch + 1 + options.patience


def brute_force_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    positives, negatives = scores[labels == 1], scores[labels == 0]
    wins = (positives[:, None] > negatives[None, :]).sum() + 0.5 * (positives[:, None] == negatives[None, :]).sum()
    return float(wins) / (positives.size * negatives.size)


def test_roc_auc_by_ranks_matches_pair_counting_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(20):
        labels = rng.integers(0, 2, size=60)
        scores = rng.integers(0, 8, size=60).astype(float)  # many ties
        assert roc_auc(labels, scores) == pytest.approx(brute_force_auc(labels, scores))
    assert average_ranks(np.array([3.0, 1.0, 3.0, 2.0])).tolist() == [3.5, 1.0, 3.5, 2.0]
    assert roc_auc(np.array([1, 1, 0, 0]), np.array([0.9, 0.8, 0.3, 0.1])) == 1.0
    assert np.isnan(roc_auc(np.ones(4), np.arange(4.0)))


def test_multilabel_outputs_are_independent_heads():
    model = random_model(0, "reparam")
    with torch.no_grad():
        logits = model(torch.zeros(5, 4, dtype=torch.float64))
    assert logits.shape == (5, 3)
    assert len({tuple(col) for col in logits.T.numpy().round(9)}) == 3


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_spam7_scope_all_reaches_auc_088_with_a_negative_final_bias(method):
    table = read_table(DATA / "spam7.csv")
    features = [c for c in table.columns if c != "spam"]
    x = table.matrix(features).astype(np.float32)
    y = binary_labels(table, ["spam"])
    torch.manual_seed(0)
    model = MonotoneClassifier(ClassifierConfig(feature_names=features, labels=["spam"], scope="all", method=method))
    result = train_classifier(model, x, y, ClassifierTrainOptions(seed=0, progress=False))
    assert result.split["n_test"] == 1150  # 25% held out, never seen by training or early stopping
    assert result.metrics["heldout_roc_auc"] >= 0.88, result.metrics
    assert model.layers[-1].bias.item() < 0.0
    assert check_all(constrained_tensors(model)) == []
    # the AUC in the report is the AUC of the model's own held-out scores
    split = split_indices(x.shape[0], 0.15, 0.25, seed=0)
    with torch.no_grad():
        scores = torch.sigmoid(model(torch.from_numpy(x[split["test"]]))).numpy()[:, 0]
    assert result.metrics["heldout_roc_auc"] == pytest.approx(brute_force_auc(y[split["test"], 0], scores), abs=1e-9)
