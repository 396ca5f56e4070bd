"""Model repositories for the /explain and /ui tests, built by the real training and export.

- classifier/1: the default configuration of `make models` (spam7; tanh, log1p, Platt, F1
  threshold, two hidden layers of 32), trained by `monoserve train classifier` for a few epochs:
  its feature ranges come from the training split, as every trained model's do;
- hidden/1:     a classifier with hidden layers [8, 6] and directions increasing, decreasing,
  increasing, free (the service fixtures' style), fitted-looking standardization, declared ranges;
- linear/1:     no hidden layer (one affine map before the sigmoid: additive), log1p features and a
  calibration, directions increasing, decreasing, increasing;
- smoother/1:   the service fixtures' smoother (for the console's kernel).
Built once per test process (cached); copy before changing anything.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPAM = ROOT / "data" / "spam7.csv"
SPAM_FEATURES = ["crl.tot", "dollar", "bang", "money", "n000", "make"]
HIDDEN_FEATURES = ["clicks", "complaints", "visits", "region"]
HIDDEN_DIRECTIONS = ["increasing", "decreasing", "increasing", "free"]
HIDDEN_RANGES = {"clicks": [-3.0, 4.0], "complaints": [-2.0, 3.0], "visits": [0.0, 10.0], "region": [-1.0, 1.0]}
LINEAR_FEATURES = ["a", "b", "c"]
LINEAR_DIRECTIONS = ["increasing", "decreasing", "increasing"]
LINEAR_RANGES = {"a": [0.0, 10.0], "b": [0.0, 8.0], "c": [0.0, 5.0]}
TRAIN_EPOCHS = "8"


def _classifier(repo: Path, workdir: Path, name: str, features: list[str], directions: list[str], hidden: list[int],
                ranges: dict[str, list[float]], seed: int, **config) -> Path:
    import torch

    from export.core import export_checkpoint
    from models.checkpoint import save_checkpoint
    from models.classifier import ClassifierConfig, MonotoneClassifier

    torch.manual_seed(seed)
    model = MonotoneClassifier(ClassifierConfig(feature_names=features, labels=["flag"], hidden=hidden, scope="all",
                                                method="reparam", directions=directions, threshold=0.5, **config))
    with torch.no_grad():
        model.feature_mean.copy_(torch.randn(len(features)) * 0.5)
        model.feature_scale.copy_(torch.rand(len(features)) + 0.5)
        for layer in model.layers:
            layer.bias.copy_(torch.randn_like(layer.bias) * 0.1)
        if getattr(model, "calibration_scale", None) is not None:
            model.calibration_scale.fill_(1.7)
            model.calibration_bias.fill_(-0.4)
    checkpoint = save_checkpoint(workdir / f"{name}.ckpt", model, metrics={"fixture": True},
                                 provenance={"feature_ranges": ranges})
    return export_checkpoint(checkpoint, repo, name=name, formats=("onnx",)).version_dir


def train_default_classifier(repo: Path, workdir: Path) -> Path:
    """`monoserve train classifier` with `make models`' options (fewer epochs), then the real export."""
    from export.core import export_checkpoint
    from monoserve.cli import main

    checkpoint = workdir / "spam.ckpt"
    code = main(["train", "classifier", "--data", str(SPAM), "--label", "spam", "--activation", "tanh",
                 "--transform", "log1p", "--calibrate", "platt", "--threshold-criterion", "f1",
                 "--epochs", TRAIN_EPOCHS, "--out", str(checkpoint), "--no-progress"])
    assert code == 0, f"training failed with exit code {code}"
    return export_checkpoint(checkpoint, repo, name="classifier", formats=("onnx",)).version_dir


@functools.lru_cache(maxsize=None)
def explain_repo() -> Path:
    from service_fixtures import build_smoother

    root = Path(tempfile.mkdtemp(prefix="monoserve-explain-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    repo = root / "repo"
    train_default_classifier(repo, root)
    _classifier(repo, root, "hidden", HIDDEN_FEATURES, HIDDEN_DIRECTIONS, [8, 6], HIDDEN_RANGES, seed=3)
    _classifier(repo, root, "linear", LINEAR_FEATURES, LINEAR_DIRECTIONS, [], LINEAR_RANGES, seed=5,
                calibrated=True, transform="log1p")
    build_smoother(repo, root)
    return repo


def copy_repo(destination: Path) -> Path:
    repo = destination / "repo"
    shutil.copytree(explain_repo(), repo)
    return repo
