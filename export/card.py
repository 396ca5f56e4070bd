"""The model card: card.md (what the model is, its constraints, metrics, parity) and card.png.

Plots use matplotlib's object API with the Agg canvas (no pyplot, no global backend, no display).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np

from contract.manifest import Manifest

CARD_MD = "card.md"
CARD_PNG = "card.png"
CARD_CURVE_PNG = "training.png"  # the checkpoint's training curve(s), when it kept any


def write_card_plot(path: Path, draw: Callable[[Any], None]) -> None:
    """Save the plot `draw` makes on a fresh Figure (the kind's adapter: export.kinds.ExportKind.draw_card)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 3.2), dpi=100)
    FigureCanvasAgg(figure)
    draw(figure)
    figure.tight_layout()
    figure.savefig(path, format="png")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return lines


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return str(value)


def training_curves(history: dict | None) -> dict[str, np.ndarray]:
    """The training curves a checkpoint kept (loss per step, or train/val loss per epoch), non-empty only."""
    return {k: np.asarray(v, dtype=np.float64) for k, v in (history or {}).items() if isinstance(v, list) and v}


def write_curve_plot(path: Path, curves: dict[str, np.ndarray]) -> None:
    """The training curve(s) as their own image (training.png), beside the kind's card plot."""

    def draw(figure: Any) -> None:
        axes = figure.add_subplot(1, 1, 1)
        for name, values in curves.items():
            axes.plot(np.arange(1, values.size + 1), values, label=name, linewidth=1.2)
        axes.set_xlabel("step" if "loss" in curves else "epoch")
        axes.set_ylabel("loss")
        axes.set_title("training curve")
        if len(curves) > 1:
            axes.legend(fontsize=8)

    write_card_plot(path, draw)


def _flatten(metrics: dict, prefix: str = "") -> list[tuple[str, object]]:
    """Nested training metrics (heldout.roc_auc, heldout.baselines.ar, ...) as dotted rows."""
    rows: list[tuple[str, object]] = []
    for key, value in sorted(metrics.items()):
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            rows += _flatten(value, name + ".")
        else:
            rows.append((name, value))
    return rows


def render_card(manifest: Manifest, plot_caption: str = "card plot", curve: bool = False) -> str:
    m = manifest
    lines = [f"# {m.name} version {m.version} ({m.kind})", ""]
    lines += [
        f"- created: {m.created.isoformat()}",
        f"- source checkpoint: `{m.source_checkpoint_name}` (sha256 `{m.source_checkpoint_sha256}`)",
        f"- monoserve {m.monoserve_version}, ONNX opset {m.opset if m.opset is not None else 'n/a'}",
        "",
        "## Model",
        "",
    ]
    io_rows = [[spec.name, "input", spec.dtype, str(spec.shape)] for spec in m.inputs]
    io_rows += [[spec.name, "output", spec.dtype, str(spec.shape)] for spec in m.outputs]
    if m.smoother is not None:
        s = m.smoother
        lines += [
            f"A monotone smoother: a {s.kernel_size}-tap kernel ({s.param}), positive and non-decreasing"
            + (", summing to 1" if s.normalized else "")
            + f". The graphs output the full correlation; edge modes {', '.join(s.edge_modes)} are slices of it"
            f" (default {s.default_mode}).",
            "",
        ]
    if m.classifier is not None:
        c = m.classifier
        lines += [
            f"A nonnegative classifier ({c.method}, scope {c.scope}, activation {c.activation}"
            + (", log1p features" if c.transform == "log1p" else "")
            + (", calibrated" if c.calibrated else "")
            + f") giving probabilities for labels {', '.join(c.labels)}"
            + (f" (threshold {c.decision_threshold:g})." if not c.per_label else
               " (thresholds per label: " + ", ".join(f"{n} {t:g}" for n, t in zip(c.labels, c.label_thresholds)) + ")."),
            "",
        ]
        lines += _table(["feature", "direction"], [[f.name, f.direction] for f in c.features])
        lines += ["", f"Certified monotone features: {', '.join(c.monotone_features) or 'none (scope final)'}", ""]
    if m.feature_ranges:
        lines += ["Feature ranges (what POST /explain searches and bounds over):", ""]
        lines += _table(["feature", "low", "high"], [[name, f"{r.low:.6g}", f"{r.high:.6g}"] for name, r in m.feature_ranges.items()])
        lines += [""]
    lines += _table(["tensor", "role", "dtype", "shape"], io_rows) + [""]
    lines += ["## Constraints (checked on the folded tensors before export)", ""]
    lines += _table(
        ["tensor", "rule", "tolerance", "columns", "inside the artifacts"],
        [
            [c.tensor, c.rule, f"{c.tolerance:g}", _fmt(c.columns) if c.columns is not None else "all",
             ", ".join(f"{fmt}: `{name}`" for fmt, name in c.locations.items())]
            for c in m.constraints
        ],
    )
    lines += ["", "## Training metrics", ""]
    if m.training_metrics:
        lines += _table(["metric", "value"], [[k, _fmt(v)] for k, v in _flatten(m.training_metrics)])
    else:
        lines += ["(the checkpoint recorded none)"]
    parity = m.parity
    lines += ["", "## Parity with eager torch", ""]
    if parity.get("max_abs_error"):
        lines += [f"{parity.get('comparisons', 0)} comparisons, tolerance atol={parity.get('atol')}, rtol={parity.get('rtol')}.", ""]
        lines += _table(["format", "max abs error"], [[f, _fmt(e)] for f, e in parity["max_abs_error"].items()])
    lines += ["", "## Files", ""]
    lines += _table(["file", "format", "bytes", "sha256"], [[f.path, f.format, str(f.size), f"`{f.sha256}`"] for f in m.files])
    if m.provenance:
        lines += ["", "## Provenance", "", "```json", json.dumps(m.provenance, indent=2, sort_keys=True, default=str), "```"]
    lines += ["", f"![{plot_caption}]({CARD_PNG})", ""]
    if curve:
        lines += [f"![training curve]({CARD_CURVE_PNG})", ""]
    return "\n".join(lines)
