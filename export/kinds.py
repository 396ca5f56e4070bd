"""One adapter per model kind, export side: everything export does differently for a kind.

Each adapter knows its model class, the rules its folded tensors obey, the wrapper every format is
written from (and how to rebuild that wrapper from the tensors alone: the service's TorchScript
proof scripts it as its trusted reference), the probe, the manifest section, the parity cases and
expected outputs, and the card plot. Adding a kind means adding one class here, one in
service/kinds.py and one entry in models/checkpoint.py's MODEL_KINDS.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from contract.manifest import KINDS, ClassifierInfo, FeatureSpec, Manifest, Probe, SmootherInfo
from contract.modes import EDGE_MODES, mode_slice
from export.artifacts import ClassifierScores, GraphSignature
from export.errors import ArtifactError
from export.parity import ParityCase, classifier_cases, smoother_cases
from models.classifier import MonotoneClassifier
from models.smoother import FullCorrelation, MonotoneSmoother


class ExportKind(ABC):
    kind: ClassVar[str]
    model_class: ClassVar[type[nn.Module]]
    card_caption: ClassVar[str]

    def check(self, model: nn.Module) -> Any:
        if not isinstance(model, self.model_class):
            raise ArtifactError(f"a {self.kind} export needs a {self.model_class.__name__}, got {type(model).__name__}")
        return model

    @abstractmethod
    def constraint_specs(self, model: nn.Module) -> list[dict]:
        """The rules on the folded tensors, by state_dict name (the manifest's constraints)."""

    @abstractmethod
    def build_wrapper(self, folded: nn.Module) -> tuple[nn.Module, GraphSignature]:
        """The module every format is written from, and its graph signature."""

    @abstractmethod
    def reference_module(self, manifest: Manifest, tensors: Mapping[str, np.ndarray]) -> nn.Module:
        """The wrapper rebuilt from the manifest's kind section and its state_dict tensors (the
        TorchScript proof's reference: what export would script for that model)."""

    @abstractmethod
    def probe(self, reference: nn.Module, wrapper: nn.Module, atol: float, rtol: float) -> Probe:
        """A small deterministic input and the eager output, rerun by the service at load time."""

    @abstractmethod
    def model_info(self, model: nn.Module) -> dict[str, Any]:
        """The manifest's kind section, as keyword arguments of Manifest."""

    @abstractmethod
    def parity_cases(self, folded: nn.Module, seed: int) -> list[ParityCase]: ...

    @abstractmethod
    def parity_expected(self, reference: nn.Module, x: torch.Tensor) -> dict[str, np.ndarray]:
        """Eager outputs by name, from the unfolded reference model."""

    def parity_actual(self, name: str, output: np.ndarray, inputs: np.ndarray, reference: nn.Module) -> np.ndarray:
        """The part of an artifact's output that the expected output `name` is compared with."""
        del name, inputs, reference
        return output

    @abstractmethod
    def draw_card(self, figure: Any, tensors: Mapping[str, np.ndarray]) -> None:
        """Draw the card plot (matplotlib Figure) from the folded state_dict."""


class SmootherExport(ExportKind):
    kind = "smoother"
    model_class = MonotoneSmoother
    card_caption = "learned kernel"

    def constraint_specs(self, model: nn.Module) -> list[dict]:
        return MonotoneSmoother.constraint_specs(self.check(model).config.normalize)

    def build_wrapper(self, folded: nn.Module) -> tuple[nn.Module, GraphSignature]:
        kernel_size = self.check(folded).kernel_size
        wrapper = FullCorrelation(folded.kernel.detach().float()).eval()
        full_length = f"length + {kernel_size - 1}" if kernel_size > 1 else "length"
        # Example sizes: none 0/1 (torch.export would specialize them), all distinct.
        example = torch.randn(2, 3, kernel_size + 10, generator=torch.Generator().manual_seed(0))
        return wrapper, GraphSignature(
            input_name="signal",
            output_name="full",
            input_shape=["batch", "channels", "length"],
            output_shape=["batch", "channels", full_length],
            dynamic_axes={0: "batch", 1: "channels", 2: "length"},
            example=example,
        )

    def reference_module(self, manifest: Manifest, tensors: Mapping[str, np.ndarray]) -> nn.Module:
        del manifest  # the kernel is all a smoother's wrapper holds
        kernel = np.ascontiguousarray(tensors["kernel"], dtype=np.float32).reshape(-1)
        return FullCorrelation(torch.from_numpy(kernel.copy())).eval()

    def probe(self, reference: nn.Module, wrapper: nn.Module, atol: float, rtol: float) -> Probe:
        generator = torch.Generator().manual_seed(1234)
        length = 8
        ramp = torch.linspace(0.0, 1.0, length)
        noise = torch.randn(length, generator=generator)
        probe_input = torch.stack([ramp, noise]).unsqueeze(0)  # [1, 2, 8]
        with torch.no_grad():
            expected = wrapper(probe_input)
        return Probe(input=probe_input.tolist(), expected=expected.tolist(), atol=atol, rtol=rtol)

    def model_info(self, model: nn.Module) -> dict[str, Any]:
        config = self.check(model).config
        return {"smoother": SmootherInfo(kernel_size=config.kernel_size, param=config.param,
                                         normalized=config.normalize, edge_modes=list(EDGE_MODES),
                                         default_mode=config.mode)}

    def parity_cases(self, folded: nn.Module, seed: int) -> list[ParityCase]:
        return smoother_cases(self.check(folded).kernel_size, seed)

    def parity_expected(self, reference: nn.Module, x: torch.Tensor) -> dict[str, np.ndarray]:
        """The full correlation and every edge mode, from the unfolded model's kernel."""
        kernel_size = int(reference.kernel_size)
        batch, channels, length = x.shape
        padded = F.pad(x.reshape(-1, 1, length), (kernel_size - 1, kernel_size - 1), mode="replicate")
        full = F.conv1d(padded, reference.kernel.view(1, 1, -1))
        expected = {"full": full.reshape(batch, channels, length + kernel_size - 1).numpy()}
        for mode in EDGE_MODES:
            if mode == "valid" and length < kernel_size:
                expected[mode] = np.zeros((*x.shape[:-1], 0), dtype=np.float32)  # no full window: empty
            else:
                expected[mode] = reference(x, mode).numpy()
        return expected

    def parity_actual(self, name: str, output: np.ndarray, inputs: np.ndarray, reference: nn.Module) -> np.ndarray:
        if name == "full" or output.ndim != 3:
            return output
        return output[..., mode_slice(name, inputs.shape[-1], int(reference.kernel_size))]

    def draw_card(self, figure: Any, tensors: Mapping[str, np.ndarray]) -> None:
        kernel = np.asarray(tensors["kernel"]).ravel()
        figure.set_size_inches(6, 3.2)
        axes = figure.add_subplot(1, 1, 1)
        axes.bar(np.arange(kernel.size), kernel, color="tab:blue", width=0.8)
        axes.set_xlabel("tap (the last tap weighs the newest sample)")
        axes.set_ylabel("weight")
        axes.set_title(f"learned kernel: {kernel.size} taps, sum {kernel.sum():.4g}")


class ClassifierExport(ExportKind):
    kind = "classifier"
    model_class = MonotoneClassifier
    card_caption = "weight distribution per layer"

    def constraint_specs(self, model: nn.Module) -> list[dict]:
        return self.check(model).constraint_specs()

    def build_wrapper(self, folded: nn.Module) -> tuple[nn.Module, GraphSignature]:
        config = self.check(folded).config
        wrapper = ClassifierScores.from_model(folded).eval()
        example = torch.randn(3, config.n_features, generator=torch.Generator().manual_seed(0))
        return wrapper, GraphSignature(
            input_name="features",
            output_name="scores",
            input_shape=["batch", config.n_features],
            output_shape=["batch", config.n_outputs],
            dynamic_axes={0: "batch"},
            example=example,
        )

    def reference_module(self, manifest: Manifest, tensors: Mapping[str, np.ndarray]) -> nn.Module:
        def tensor(name: str) -> torch.Tensor:
            return torch.from_numpy(np.array(tensors[name], dtype=np.float32, copy=True))

        count = len([name for name in tensors if name.startswith("layers.") and name.endswith(".weight")])
        layers = [(tensor(f"layers.{i}.weight"), tensor(f"layers.{i}.bias")) for i in range(count)]
        # activation and transform are code, not tensors: the manifest says which (ClassifierInfo)
        info = manifest.classifier
        calibration = (tensor("calibration_scale"), tensor("calibration_bias")) if info.calibrated else None
        return ClassifierScores(tensor("feature_mean"), tensor("feature_scale"), tensor("direction_sign"), layers,
                                info.activation, info.transform, calibration).eval()

    def probe(self, reference: nn.Module, wrapper: nn.Module, atol: float, rtol: float) -> Probe:
        generator = torch.Generator().manual_seed(1234)
        mean, scale = reference.feature_mean, reference.feature_scale
        probe_input = torch.stack(
            [mean, mean - scale, mean + scale, mean + 2.0 * scale * torch.randn(mean.shape, generator=generator)]
        ).float()
        with torch.no_grad():
            expected = torch.sigmoid(reference(probe_input))
        return Probe(input=probe_input.tolist(), expected=expected.tolist(), atol=atol, rtol=rtol)

    def model_info(self, model: nn.Module) -> dict[str, Any]:
        config = self.check(model).config
        directions = list(config.directions or [])
        monotone = [n for n, d in zip(config.feature_names, directions) if d != "free"] if config.scope == "all" else []
        return {"classifier": ClassifierInfo(
            features=[FeatureSpec(name=n, direction=d) for n, d in zip(config.feature_names, directions)],
            labels=list(config.labels), threshold=config.threshold,
            thresholds=None if config.thresholds is None else [float(t) for t in config.thresholds],
            scope=config.scope, method=config.method,
            monotone_features=monotone, activation=config.activation, transform=config.transform,
            calibrated=config.calibrated)}

    def parity_cases(self, folded: nn.Module, seed: int) -> list[ParityCase]:
        model = self.check(folded)
        return classifier_cases(model.feature_mean.numpy(), model.feature_scale.numpy(), seed)

    def parity_expected(self, reference: nn.Module, x: torch.Tensor) -> dict[str, np.ndarray]:
        return {"scores": torch.sigmoid(reference(x)).numpy()}

    def draw_card(self, figure: Any, tensors: Mapping[str, np.ndarray]) -> None:
        layers = sorted((name for name in tensors if name.startswith("layers.") and name.endswith(".weight")),
                        key=lambda name: int(name.split(".")[1]))
        figure.set_size_inches(3.2 * max(len(layers), 1), 3.0)
        for position, name in enumerate(layers, start=1):
            weights = np.asarray(tensors[name]).ravel()
            axes = figure.add_subplot(1, len(layers), position)
            axes.hist(weights, bins=30, color="tab:green")
            axes.axvline(0.0, color="black", linewidth=0.8)
            axes.set_title(f"{name}\nmin {weights.min():.3g}, max {weights.max():.3g}", fontsize=9)
            axes.set_xlabel("weight")
        figure.suptitle("weight distribution per layer (folded)", fontsize=10)


EXPORT_KINDS: dict[str, ExportKind] = {adapter.kind: adapter for adapter in (SmootherExport(), ClassifierExport())}
assert tuple(EXPORT_KINDS) == KINDS, "every manifest kind needs an export adapter"


def export_kind(kind: str) -> ExportKind:
    try:
        return EXPORT_KINDS[kind]
    except KeyError:
        raise ArtifactError(f"unknown model kind {kind!r}; expected one of {', '.join(EXPORT_KINDS)}") from None
