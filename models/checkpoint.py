"""Checkpoints: state_dict + config + metrics + provenance, rebuilt from the config (torch only)."""

from __future__ import annotations

import dataclasses
import io
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from contract.manifest import KINDS
from models.classifier import ClassifierConfig, MonotoneClassifier
from models.smoother import MonotoneSmoother, SmootherConfig

# 2: the softmax smoother's raw parameter is log(alpha), uncapped (format 1 stored
# -log(1/alpha - 1/42), alpha softly capped below 42; read_checkpoint converts it).
CHECKPOINT_FORMAT = 2
READABLE_FORMATS = (1, 2)
_FORMAT1_ALPHA_CAP = 42.0


class CheckpointError(ValueError):
    """A file that is not a monoserve checkpoint we can read (missing, corrupt, unknown kind/format)."""


@dataclasses.dataclass(frozen=True)
class ModelKind:
    """The training side of one model kind: its module class and its config class."""

    kind: str
    model_class: type[nn.Module]
    config_class: type

    def build(self, config: dict[str, Any]) -> nn.Module:
        return self.model_class(self.config_class(**config))


MODEL_KINDS: dict[str, ModelKind] = {
    entry.kind: entry
    for entry in (ModelKind("smoother", MonotoneSmoother, SmootherConfig),
                  ModelKind("classifier", MonotoneClassifier, ClassifierConfig))
}
# regressors are imported ONNX graphs (monoserve import), not trained here
assert set(MODEL_KINDS) <= set(KINDS), "every trained kind is a manifest kind"


def model_kind(model: nn.Module) -> str:
    kind = next((entry.kind for entry in MODEL_KINDS.values() if isinstance(model, entry.model_class)), None)
    if kind is None:
        raise TypeError(f"not a monoserve model: {type(model).__name__}")
    return kind


def build_model(kind: str, config: dict[str, Any]) -> nn.Module:
    """Rebuild an untrained model of `kind` from its config dict."""
    if kind not in MODEL_KINDS:
        raise CheckpointError(f"unknown model kind {kind!r}; expected one of {', '.join(KINDS)}")
    return MODEL_KINDS[kind].build(config)


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    metrics: dict[str, Any] | None = None,
    provenance: dict[str, Any] | None = None,
    history: dict[str, list] | None = None,
) -> Path:
    """Write atomically (temp file + rename): an interrupted save leaves no half-written checkpoint.

    Reproducible: the same payload gives the same bytes. torch.save names the zip's inner folder
    after the file it writes (here a random temporary name), so it writes into memory instead,
    where the folder is always `archive`; the zip records no timestamps.
    `history` is the training curve (e.g. {"loss": [...]}), drawn in the model card.
    """
    path = Path(path)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "kind": model_kind(model),
        "config": dataclasses.asdict(model.config),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "metrics": metrics or {},
        "provenance": provenance or {},
        "history": history or {},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        with open(tmp, "wb") as handle:
            handle.write(buffer.getbuffer())
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load and validate the payload (weights_only=True: no pickled code runs)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types (even a bare KeyError) for a non-checkpoint file
        raise CheckpointError(
            f"{path} is not a readable torch checkpoint (torch.load failed: {type(exc).__name__}: {exc})"
        ) from exc
    if not isinstance(payload, dict) or "format" not in payload or "kind" not in payload:
        raise CheckpointError(f"{path} is not a monoserve checkpoint (no 'format'/'kind' entries)")
    if payload["format"] not in READABLE_FORMATS:
        raise CheckpointError(
            f"{path}: unsupported checkpoint format {payload['format']!r}; this monoserve reads formats "
            f"{', '.join(map(str, READABLE_FORMATS))}"
        )
    if payload["kind"] not in KINDS:
        raise CheckpointError(f"{path}: unknown model kind {payload['kind']!r}; expected one of {', '.join(KINDS)}")
    for key in ("config", "state_dict"):
        if not isinstance(payload.get(key), dict):
            raise CheckpointError(f"{path}: checkpoint has no {key!r} dict")
    if payload["format"] == 1:
        _upgrade_format1(payload)
    return payload


def _upgrade_format1(payload: dict[str, Any]) -> None:
    """A format-1 softmax smoother stored raw = -log(1/alpha - 1/42); format 2 stores log(alpha)."""
    key = "parametrizations.kernel.original"
    raw = payload["state_dict"].get(key)
    if payload["kind"] == "smoother" and payload["config"].get("param") == "softmax" and isinstance(raw, torch.Tensor):
        alpha = 1.0 / (torch.exp(-raw.double()) + 1.0 / _FORMAT1_ALPHA_CAP)
        payload["state_dict"][key] = torch.log(alpha).to(raw.dtype)
    payload["format"] = CHECKPOINT_FORMAT


def load_checkpoint(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model from its config and load its weights; returns (model in eval mode, payload)."""
    payload = read_checkpoint(path)
    try:
        model = build_model(payload["kind"], payload["config"])
        model.load_state_dict(payload["state_dict"])
    except (TypeError, AssertionError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: cannot rebuild the {payload['kind']} from its config: {exc}") from exc
    return model.eval(), payload
