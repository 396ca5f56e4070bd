"""One adapter per model kind, export side: everything export does differently for a kind.

Each adapter knows its model class, the rules its folded tensors obey, the wrapper every format is
written from (and how to rebuild that wrapper from the tensors alone: the service's TorchScript
proof scripts it as its trusted reference), the probe, the manifest section, the parity cases and
expected outputs, and the card plot. Adding a kind means adding one class here, one in
service/compute/kinds.py and one entry in models/checkpoint.py's MODEL_KINDS.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from contract.manifest import KINDS, ClassifierInfo, ConstraintEntry, FeatureSpec, Manifest, Probe, SmootherInfo
from contract.modes import EDGE_MODES, mode_slice
from export.artifacts import GraphSignature, classifier_scores
from export import mlprep
from export.errors import ArtifactError
from export.parity import ParityCase, classifier_cases, smoother_cases
from models.classifier import MonotoneClassifier
from models.smoother import MonotoneSmoother
from torchref.modules import ClassifierScores, FullCorrelation


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

    @abstractmethod
    def prepare_user_model(self, source: Any, spec: Any, atol: float, rtol: float, seed: int) -> Any:
        """A user's own model (export.byom.UserSource) and its declaration (contract.spec) -> the
        published graph and every manifest fact (export.byom.Prepared), found by the export itself;
        export.byom.ModelRefusedError naming the tensor when the model breaks its declaration."""


class SmootherExport(ExportKind):
    kind = "smoother"
    model_class = MonotoneSmoother
    card_caption = "learned kernel"

    def constraint_specs(self, model: nn.Module) -> list[dict]:
        return MonotoneSmoother.constraint_specs(self.check(model).config.normalize)

    def build_wrapper(self, folded: nn.Module) -> tuple[nn.Module, GraphSignature]:
        self.check(folded)
        return self.wrapper_for_kernel(folded.kernel.detach().float())

    def wrapper_for_kernel(self, kernel: torch.Tensor) -> tuple[nn.Module, GraphSignature]:
        """The service's smoother artifact for one kernel: the full correlation, edge-padded, [B*C, 1, L] layout."""
        kernel_size = int(kernel.numel())
        wrapper = FullCorrelation(kernel.detach().float().reshape(-1)).eval()
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
        return FullCorrelation.from_manifest(manifest, tensors)

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


    def prepare_user_model(self, source: Any, spec: Any, atol: float, rtol: float, seed: int) -> Any:
        import tempfile
        from pathlib import Path

        import onnx

        from contract.checks import check_all
        from export import artifacts
        from export.errors import ModelRefusedError
        from export.prepared import Prepared, tensor_specs
        from export.fir import NotAFilterError, artifact_output, find_kernel

        try:
            found = find_kernel(source.run, spec.mode, atol, rtol, seed, spec.padding)
        except NotAFilterError as exc:
            raise ModelRefusedError([f"not one shared FIR kernel: {exc}"], source.label) from exc
        kernel = found.kernel
        params = source.parameter_names()
        who = f"the kernel {source.label} applies" + (f" (computed from its parameter(s) {params})" if params else "")
        specs = MonotoneSmoother.constraint_specs(spec.normalized)
        violations = check_all((rule, kernel) for rule in specs)
        if violations:
            problems = [f"{who}: {v}" for v in violations]
            if kernel.size > 1 and np.all(np.diff(kernel) <= 0) and kernel[0] > kernel[-1]:
                problems[0] += (" -- the kernel is reversed: F.conv1d correlates, so its last tap weighs the newest "
                                "sample and must be the largest (flip it, or build it with cumsum from the oldest tap)")
            raise ModelRefusedError(problems, source.label)
        wrapper, signature = self.wrapper_for_kernel(torch.from_numpy(kernel.copy()))
        with tempfile.TemporaryDirectory(prefix="monoserve-byom-") as tmp:
            path = Path(tmp) / "model.onnx"
            model = artifacts.write_onnx(wrapper, signature, path, None, check=False)  # byom checks the final graph
            if spec.padding != "replicate":
                model = _set_pad_mode(model, spec.padding)
                onnx.save(model, str(path))
            loaded = artifacts.load_artifact("onnx", path, signature, model)
        location = artifacts.locate_tensor("kernel", kernel, loaded.tensors)
        if location is None:
            raise ArtifactError("the kernel is not a constant of the written smoother graph")
        # the published graph against the user's module, in the declared mode, on random multi-channel input
        rng = np.random.default_rng(seed + 1)
        worst = 0.0
        for shape in ((2, found.channels_probed, kernel.size + 31), (1, found.channels_probed, 300)):
            x = (rng.standard_normal(shape) * 2.0).astype(np.float32)
            expected = source.run(x).astype(np.float64)
            got = loaded.run(x)[..., mode_slice(spec.mode, shape[-1], kernel.size)].astype(np.float64)
            if got.shape != expected.shape or not np.allclose(got, expected, atol=atol, rtol=rtol):
                raise ModelRefusedError([f"the written graph disagrees with the module on input {list(shape)} "
                                         f"(shape {list(got.shape)} vs {list(expected.shape)})"], source.label)
            worst = max(worst, float(np.max(np.abs(got - expected))),
                        float(np.max(np.abs(artifact_output(x, kernel, spec.mode, spec.padding) - expected))))
        inputs, outputs = tensor_specs(signature.input_name, signature.input_shape, signature.output_name, signature.output_shape)
        constraints = [ConstraintEntry(tensor="kernel", rule=rule["rule"], tolerance=float(rule.get("tolerance", 0.0)),
                                       axis=int(rule.get("axis", -1)), locations={"onnx": location}) for rule in specs]
        return Prepared(
            onnx_model=model, inputs=inputs, outputs=outputs, constraints=constraints,
            probe=self.probe(None, wrapper, atol, rtol) if spec.padding == "replicate" else _padded_probe(kernel, spec.padding, atol, rtol),
            parity={"max_abs_error": {"onnx": worst}, "atol": atol, "rtol": rtol, "comparisons": found.comparisons,
                    "reference": f"{source.label} ({spec.mode})"},
            info={"smoother": SmootherInfo(kernel_size=int(kernel.size), param="declared", normalized=spec.normalized,
                                           edge_modes=list(EDGE_MODES), default_mode=spec.mode, padding=spec.padding)},
            found=[f"kernel: {kernel.size} taps by impulse response (sum {float(kernel.sum()):.6g}), one kernel shared by "
                   f"{'every channel' if found.channels_probed > 1 else 'its single channel'}; linear, shift-invariant",
                   f"alignment: {spec.mode!r}, padding {spec.padding!r}; module vs published smoother max |error| "
                   f"{found.max_abs_error:.3g}",
                   f"constrained tensor: model.onnx:{location} (the Conv weight)"],
            draw_card=lambda figure: self.draw_card(figure, {"kernel": kernel}))


def _set_pad_mode(model: Any, padding: str) -> Any:
    """The written smoother graph (FullCorrelation: one Pad, mode edge) made to pad as declared."""
    import onnx

    from contract.padding import ONNX_PAD_MODES

    pads = [node for node in model.graph.node if node.op_type == "Pad"]
    if len(pads) != 1:
        raise ArtifactError(f"the written smoother graph has {len(pads)} Pad nodes, expected 1")
    del pads[0].attribute[:]
    pads[0].attribute.append(onnx.helper.make_attribute("mode", ONNX_PAD_MODES[padding]))
    if any(o.domain in ("", "ai.onnx") and o.version < 19 for o in model.opset_import) and padding == "circular":
        raise ArtifactError("circular padding (ONNX Pad mode wrap) needs opset 19 or newer")
    return model


def _padded_probe(kernel: np.ndarray, padding: str, atol: float, rtol: float) -> Probe:
    """The probe of a smoother that pads as declared: long enough for reflect (K samples and more)."""
    from export.fir import full_correlation

    rng = np.random.default_rng(1234)
    length = max(8, kernel.size + 3)
    probe_input = np.stack([np.linspace(0.0, 1.0, length), rng.standard_normal(length)])[None].astype(np.float32)
    expected = full_correlation(probe_input, kernel, padding)
    return Probe(input=probe_input.tolist(), expected=expected.tolist(), atol=atol, rtol=rtol)


class ClassifierExport(ExportKind):
    kind = "classifier"
    model_class = MonotoneClassifier
    card_caption = "weight distribution per layer"

    def constraint_specs(self, model: nn.Module) -> list[dict]:
        return self.check(model).constraint_specs()

    def build_wrapper(self, folded: nn.Module) -> tuple[nn.Module, GraphSignature]:
        config = self.check(folded).config
        wrapper = classifier_scores(folded).eval()
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
        return ClassifierScores.from_manifest(manifest, tensors)

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


    def prepare_user_model(self, source: Any, spec: Any, atol: float, rtol: float, seed: int) -> Any:
        from contract.certificate.uses import output_layer
        from contract.graph import GraphRefused, IoSpec, check_graph
        from export.errors import ModelRefusedError
        from export.prepared import Prepared, tensor_specs
        from export.probe import ProbeSession
        from export.graphprep import INPUT_NAME, OUTPUT_NAME, GraphShapeError, prepare_classifier_graph

        n_features, n_labels = len(spec.features), len(spec.labels)
        graph = source.classifier_graph(n_features)
        converter = mlprep.is_ml_graph(graph)
        try:
            if converter:  # a converter's (label, probabilities) outputs: serve the declared labels' probabilities
                mlprep.score_output(graph)  # ZipMap refused before anything runs it
                columns = source.run(np.zeros((2, n_features), dtype=np.float32)).reshape(2, -1).shape[1]
                graph = mlprep.adapt(graph, n_labels, columns)
            prepared = prepare_classifier_graph(graph, n_features, n_labels, spec.output)
        except mlprep.ConverterGraphError as exc:
            raise ModelRefusedError([str(exc)], source.label) from exc
        except GraphShapeError as exc:
            raise ModelRefusedError([str(exc)], source.label) from exc
        model = prepared.model
        try:
            info = check_graph(model, [IoSpec(INPUT_NAME, "float32", ["batch", n_features])],
                               [IoSpec(OUTPUT_NAME, "float32", ["batch", n_labels])], scope=spec.scope)
        except GraphRefused as exc:
            raise ModelRefusedError([f"the proof cannot model its graph: {p}" for p in exc.problems], source.label) from exc
        low, high = info.range_of(OUTPUT_NAME)
        if spec.output == "probabilities" and not (low >= -1e-5 and high <= 1.0 + 1e-5):
            raise ModelRefusedError([f"the declaration says output = \"probabilities\", but the graph's output may leave "
                                     f"[0, 1] (bounds [{low:.3g}, {high:.3g}]): if forward returns logits, declare "
                                     "output = \"logits\" (a Sigmoid is then added)"], source.label)
        try:
            layer = output_layer(info, OUTPUT_NAME)
        except ValueError as exc:
            from export.lipschitz import NotProvenError, lipschitz_proof

            try:
                lipschitz = lipschitz_proof(info, spec, INPUT_NAME, OUTPUT_NAME, exc)
            except NotProvenError as refused:
                raise ModelRefusedError(refused.problems, source.label) from refused
            constraints, proof, found_proof, draw = [], "lipschitz", lipschitz.found, lipschitz.draw_card
        else:
            constraints, found_proof, draw = self._clamped_output_layer(source, model, info, layer)
            proof = "signs"
        session = ProbeSession(model, source.label, INPUT_NAME)  # no external data, memory bounded per shape

        def published(x: np.ndarray) -> np.ndarray:
            return session.run_all(x, [OUTPUT_NAME])[0]

        def eager(x: np.ndarray) -> np.ndarray:
            out = np.asarray(source.run(x), dtype=np.float64)
            if converter:
                out = mlprep.select_columns(out, n_labels)
            return 1.0 / (1.0 + np.exp(-out)) if spec.output == "logits" else out

        rng = np.random.default_rng(seed)
        worst, comparisons = 0.0, 0
        for rows in (1, 7, 64):
            x = (rng.standard_normal((rows, n_features)) * 2.0).astype(np.float32)
            want, got = eager(x), published(x).astype(np.float64)
            if want.shape != got.shape:
                raise ModelRefusedError([f"on {rows} row(s) the model gives shape {list(want.shape)}, the graph "
                                         f"{list(got.shape)}; declared [N, {n_labels}]"], source.label)
            error = np.abs(got - want)
            if not np.all(error <= atol + rtol * np.abs(want)):
                raise ModelRefusedError([f"the published graph disagrees with the model by {error.max():.3g} on {rows} "
                                         f"random row(s) (atol {atol:g}, rtol {rtol:g})"], source.label)
            worst, comparisons = max(worst, float(error.max())), comparisons + int(error.size)
        probe_input = (rng.standard_normal((4, n_features)) * 2.0).astype(np.float32)
        directions = spec.directions()
        inputs, outputs = tensor_specs(INPUT_NAME, ["batch", n_features], OUTPUT_NAME, ["batch", n_labels])
        return Prepared(
            onnx_model=model, inputs=inputs, outputs=outputs, constraints=constraints,
            probe=Probe(input=probe_input.tolist(), expected=eager(probe_input).tolist(), atol=atol, rtol=rtol),
            parity={"max_abs_error": {"onnx": worst}, "atol": atol, "rtol": rtol, "comparisons": comparisons,
                    "reference": source.label},
            info={"classifier": ClassifierInfo(
                features=[FeatureSpec(name=n, direction=d) for n, d in zip(spec.features, directions)],
                labels=list(spec.labels), threshold=spec.threshold, scope=spec.scope, method="declared",
                monotone_features=[n for n, d in zip(spec.features, directions) if d != "free"] if spec.scope == "all" else [],
                activation="graph", proof=proof)},
            found=[f"input {prepared.original_input!r} -> 'features' [batch, {n_features}], output "
                   f"{prepared.original_output!r} -> 'scores' [batch, {n_labels}]"
                   + (" (a Sigmoid added: the declaration says logits)" if spec.output == "logits" else ""),
                   found_proof,
                   f"parity: {comparisons} comparisons, max |error| {worst:.3g}"],
            draw_card=draw)

    @staticmethod
    def _clamped_output_layer(source: Any, model: Any, info: Any, layer: Any) -> tuple[list, str, Any]:
        """The output layer's weight, traced to the user's tensor and checked nonnegative:
        (the manifest's constraints, what was found, the card plot); ModelRefusedError otherwise."""
        from contract.checks import check_rule
        from export.errors import ModelRefusedError
        from export.graphprep import weight_source

        stored = weight_source(model, info.constants, layer.input_name)
        location = stored if stored in info.constants else layer.input_name
        params = source.parameter_names()
        if stored in params:
            yours = f" (your parameter {stored!r})"
        elif params:  # a weight computed in forward, constant-folded by the exporter under its own name
            yours = f" (computed in forward from your parameters, not one of them: {params[:8]})"
        else:
            yours = ""
        violations = check_rule("nonnegative", f"model.onnx:{stored}", layer.values)
        if violations and stored in info.constants:  # name the entries as the user's tensor stores them ([out, in])
            violations = check_rule("nonnegative", f"model.onnx:{stored}", info.constants[stored]) or violations
        if violations:
            raise ModelRefusedError(
                [f"the output layer's weight {stored!r}{yours} at node {layer.node} must be nonnegative "
                 f"({len(violations)} negative entr{'y' if len(violations) == 1 else 'ies'}; clamp it after each "
                 "optimizer step, layer.weight.clamp_(min=0), or parametrize it with torch.nn.utils.parametrize)"]
                + [str(v) for v in violations], source.label)
        return ([ConstraintEntry(tensor=stored, rule="nonnegative", locations={"onnx": location})],
                f"output layer: node {layer.node}, weight model.onnx:{stored}{yours}, nonnegative",
                lambda figure: _draw_output_layer(figure, stored, np.asarray(layer.values)))


def _draw_output_layer(figure: Any, name: str, weights: np.ndarray) -> None:
    """A user's classifier's card plot: its output layer's weights (the constrained tensor)."""
    values = weights.ravel()
    figure.set_size_inches(4.0, 3.0)
    axes = figure.add_subplot(1, 1, 1)
    axes.hist(values, bins=30, color="tab:green")
    axes.axvline(0.0, color="black", linewidth=0.8)
    axes.set_title(f"output layer {name}\nmin {values.min():.3g}, max {values.max():.3g}", fontsize=9)
    axes.set_xlabel("weight")


class RegressorExport(ExportKind):
    """Regressors are imported ONNX graphs (trees, linear, neural): `monoserve import` with a declaration."""

    kind = "regressor"
    model_class = nn.Module
    card_caption = "a regressor imported from ONNX"

    def _checkpoints(self) -> ArtifactError:
        return ArtifactError("regressors are imported from ONNX (monoserve import MODEL.onnx --spec SPEC.toml), "
                             "not exported from checkpoints")

    def constraint_specs(self, model: nn.Module) -> list[dict]:
        raise self._checkpoints()

    def build_wrapper(self, folded: nn.Module) -> tuple[nn.Module, GraphSignature]:
        raise self._checkpoints()

    def reference_module(self, manifest: Manifest, tensors: Mapping[str, np.ndarray]) -> nn.Module:
        raise self._checkpoints()

    def probe(self, reference: nn.Module, wrapper: nn.Module, atol: float, rtol: float) -> Probe:
        raise self._checkpoints()

    def model_info(self, model: nn.Module) -> dict[str, Any]:
        raise self._checkpoints()

    def parity_cases(self, folded: nn.Module, seed: int) -> list[ParityCase]:
        raise self._checkpoints()

    def parity_expected(self, reference: nn.Module, x: torch.Tensor) -> dict[str, np.ndarray]:
        raise self._checkpoints()

    def draw_card(self, figure: Any, tensors: Mapping[str, np.ndarray]) -> None:
        raise self._checkpoints()

    def prepare_user_model(self, source: Any, spec: Any, atol: float, rtol: float, seed: int) -> Any:
        from contract.graph import GraphRefused, IoSpec, check_graph
        from contract.manifest import RegressorInfo
        from export.errors import ModelRefusedError
        from export.prepared import Prepared, tensor_specs
        from export.graphprep import INPUT_NAME, OUTPUT_NAME, GraphShapeError, prepare_classifier_graph

        n_features = len(spec.features)
        try:
            graph = source.classifier_graph(n_features)
            prepared = prepare_classifier_graph(graph, n_features, 1, "probabilities")
        except GraphShapeError as exc:
            raise ModelRefusedError([str(exc).replace("a classifier", "a regressor")], source.label) from exc
        model = mlprep.with_default_opset(prepared.model)
        try:
            info = check_graph(model, [IoSpec(INPUT_NAME, "float32", ["batch", n_features])],
                               [IoSpec(OUTPUT_NAME, "float32", ["batch", 1])])
        except GraphRefused as exc:
            raise ModelRefusedError([f"the proof cannot model its graph: {p}" for p in exc.problems], source.label) from exc
        if spec.nonnegative:
            low, high = info.range_of(OUTPUT_NAME)
            if not low >= 0.0:
                raise ModelRefusedError([f"declared nonnegative, but the graph's output may be negative "
                                         f"(bounds [{low:.6g}, {high:.6g}])"], source.label)
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(model.SerializeToString(), sess_options=options, providers=["CPUExecutionProvider"])
        rng = np.random.default_rng(seed)
        worst, comparisons = 0.0, 0
        for rows in (1, 7, 64):
            x = (rng.standard_normal((rows, n_features)) * 2.0).astype(np.float32)
            want = np.asarray(source.run(x), dtype=np.float64).reshape(rows, -1)
            got = session.run([OUTPUT_NAME], {INPUT_NAME: x})[0].astype(np.float64)
            if want.shape != got.shape:
                raise ModelRefusedError([f"on {rows} row(s) the model gives shape {list(want.shape)}, the graph "
                                         f"{list(got.shape)}; a regressor gives [N, 1]"], source.label)
            error = np.abs(got - want)
            if not np.all(error <= atol + rtol * np.abs(want)):
                raise ModelRefusedError([f"the published graph disagrees with the model by {error.max():.3g} "
                                         f"(atol {atol:g}, rtol {rtol:g})"], source.label)
            worst, comparisons = max(worst, float(error.max())), comparisons + int(error.size)
        probe_input = (rng.standard_normal((4, n_features)) * 2.0).astype(np.float32)
        directions = spec.directions()
        inputs, outputs = tensor_specs(INPUT_NAME, ["batch", n_features], OUTPUT_NAME, ["batch", 1])
        return Prepared(
            onnx_model=model, inputs=inputs, outputs=outputs, constraints=[],
            probe=Probe(input=probe_input.tolist(), expected=session.run([OUTPUT_NAME], {INPUT_NAME: probe_input})[0].tolist(),
                        atol=atol, rtol=rtol),
            parity={"max_abs_error": {"onnx": worst}, "atol": atol, "rtol": rtol, "comparisons": comparisons,
                    "reference": source.label},
            info={"regressor": RegressorInfo(
                features=[FeatureSpec(name=n, direction=d) for n, d in zip(spec.features, directions)],
                monotone_features=[n for n, d in zip(spec.features, directions) if d != "free"],
                nonnegative=spec.nonnegative)},
            found=[f"input {prepared.original_input!r} -> 'features' [batch, {n_features}], output "
                   f"{prepared.original_output!r} -> 'scores' [batch, 1]",
                   f"parity: {comparisons} comparisons, max |error| {worst:.3g}"])


EXPORT_KINDS: dict[str, ExportKind] = {adapter.kind: adapter for adapter in (SmootherExport(), ClassifierExport(),
                                                                             RegressorExport())}
assert tuple(EXPORT_KINDS) == KINDS, "every manifest kind needs an export adapter"


def export_kind(kind: str) -> ExportKind:
    try:
        return EXPORT_KINDS[kind]
    except KeyError:
        raise ArtifactError(f"unknown model kind {kind!r}; expected one of {', '.join(EXPORT_KINDS)}") from None
