"""Models for the benchmark: checkpoints (for the naive server) and a model repository (for monoserve).

Everything goes under the work directory (default bench/work/, git-ignored):

- checkpoints/smoother.pt        K=31 monotone smoother (the default kernel size)
- checkpoints/smoother_long.pt   K=255 (the long-kernel workload)
- checkpoints/classifier.pt      nonnegative MLP trained briefly on data/spam7.csv
- repo/NAME/VERSION/...          exported with export.core.export_checkpoint (ONNX only)

The naive server loads the checkpoints with models.checkpoint.load_checkpoint, monoserve serves the
repository: same shapes, same weights. Run as a script to (re)build: `python bench/prepare.py`.
"""

from __future__ import annotations

import argparse
import csv
import logging
import sys
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_WORK = REPO_ROOT / "bench" / "work"
sys.path.append(str(REPO_ROOT))  # after PYTHONPATH and the installed project
sys.path.insert(0, str(REPO_ROOT / "bench"))

log = logging.getLogger("bench.prepare")

SMOOTHERS = {"smoother": 31, "smoother_long": 255}
CLASSIFIER = "classifier"
MODEL_NAMES = (*SMOOTHERS, CLASSIFIER)
SPAM7 = REPO_ROOT / "data" / "spam7.csv"


def read_spam7() -> tuple[list[str], np.ndarray, np.ndarray]:
    with SPAM7.open(newline="") as handle:
        rows = list(csv.reader(handle))
    header, body = rows[0], np.array(rows[1:], dtype=np.float64)
    return header[:-1], body[:, :-1].astype(np.float32), body[:, -1].astype(np.float32)


def build_checkpoints(work: Path) -> dict[str, Path]:
    """Create the three checkpoints if missing (torch is imported here only)."""
    import torch

    from models.checkpoint import save_checkpoint
    from models.classifier import ClassifierConfig, MonotoneClassifier
    from models.smoother import MonotoneSmoother, SmootherConfig

    directory = work / "checkpoints"
    paths = {name: directory / f"{name}.pt" for name in MODEL_NAMES}
    torch.manual_seed(0)
    torch.set_num_threads(1)  # a tiny model: more threads only fight other processes for the 2 cores
    for name, kernel_size in SMOOTHERS.items():
        if not paths[name].exists():
            # The initial kernel is already a valid normalized increasing kernel; the benchmark measures
            # serving, so training it would change nothing that matters here.
            model = MonotoneSmoother(SmootherConfig(kernel_size=kernel_size, init_decay=8.0 / kernel_size))
            save_checkpoint(paths[name], model, metrics={}, provenance={"source": "bench/prepare.py (untrained)"})
            log.info("wrote %s", paths[name])
    if not paths[CLASSIFIER].exists():
        feature_names, features, labels = read_spam7()
        model = MonotoneClassifier(ClassifierConfig(feature_names=feature_names, labels=["spam"], hidden=[32, 32]))
        x, y = torch.from_numpy(features), torch.from_numpy(labels)[:, None]
        model.fit_standardization(x)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        loss_fn = torch.nn.BCEWithLogitsLoss()
        for _ in range(300):  # full batch, about a second: good enough to give realistic weights
            optimizer.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            accuracy = float(((model(x) > 0).float() == y).float().mean())
        save_checkpoint(
            paths[CLASSIFIER],
            model.eval(),
            metrics={"train_accuracy": accuracy, "train_loss": float(loss.detach())},
            provenance={"source": "bench/prepare.py", "data": "data/spam7.csv"},
        )
        log.info("wrote %s (train accuracy %.3f)", paths[CLASSIFIER], accuracy)
    return paths


def export_repository(work: Path, checkpoints: dict[str, Path]) -> Path | None:
    """Export each checkpoint into work/repo with export.core (None while export is not available)."""
    try:
        from export.core import export_checkpoint
    except ImportError:
        log.warning("export.core is not available yet: no model repository (monoserve cannot be benchmarked)")
        return None
    repo = work / "repo"
    for name, checkpoint in checkpoints.items():
        if (repo / name).is_dir() and any((repo / name).glob("*/manifest.json")):
            continue
        result = export_checkpoint(checkpoint, repo, name=name, formats=("onnx",))
        log.info("exported %s -> %s", name, result.version_dir)
    return repo


def newest_version_dir(repo: Path, name: str) -> Path | None:
    versions = [p for p in (repo / name).glob("*") if p.name.isdigit() and (p / "model.onnx").exists()]
    return max(versions, key=lambda p: int(p.name)) if versions else None


def onnx_model_path(work: Path, name: str) -> Path:
    """The exported model.onnx when there is one, else a graph built here from the checkpoint."""
    exported = newest_version_dir(work / "repo", name) if (work / "repo").is_dir() else None
    if exported is not None:
        return exported / "model.onnx"
    fallback = work / "onnx" / f"{name}.onnx"
    if not fallback.exists():
        build_fallback_onnx(work, name, fallback)
    return fallback


def build_fallback_onnx(work: Path, name: str, path: Path) -> None:
    import onnx
    from graphs import classifier_model, full_correlation_model

    from models.checkpoint import load_checkpoint

    model, _ = load_checkpoint(work / "checkpoints" / f"{name}.pt")
    if name in SMOOTHERS:
        graph = full_correlation_model(model.kernel.detach().numpy())
    else:
        graph = classifier_model(
            model.feature_mean.numpy(),
            model.feature_scale.numpy(),
            model.direction_sign.numpy(),
            [layer.weight.detach().numpy() for layer in model.layers],
            [layer.bias.detach().numpy() for layer in model.layers],
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(graph, path)
    log.info("built fallback ONNX graph %s (export not available)", path)


def prepare(work: Path = DEFAULT_WORK) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    checkpoints = build_checkpoints(work)
    repo = export_repository(work, checkpoints)
    return {"checkpoints": checkpoints, "repo": repo, "onnx": {n: onnx_model_path(work, n) for n in MODEL_NAMES}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    result = prepare(args.work)
    for key, value in result.items():
        print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
