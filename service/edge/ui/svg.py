"""Inline SVG charts for the console: a few paths and lines, every label escaped."""

from __future__ import annotations

from html import escape
from typing import Sequence

import numpy as np

WIDTH, HEIGHT = 320, 180
MARGIN = (34, 10, 26, 44)  # top, right, bottom, left


def _scale(values: np.ndarray, low: float, high: float, start: float, end: float) -> np.ndarray:
    span = high - low
    if span <= 0:
        return np.full(values.shape, (start + end) / 2.0)
    return start + (values - low) / span * (end - start)


def _number(value: float) -> str:
    return f"{value:.3g}"


def chart(xs: np.ndarray, ys: np.ndarray, *, title: str, css_class: str, x_label: str, y_range: tuple[float, float] | None = None,
          markers: bool = False, hline: float | None = None, hline_label: str = "", attributes: dict[str, str] | None = None,
          width: int = WIDTH, height: int = HEIGHT) -> str:
    """One series as an SVG path (class `css_class`), with axes, end ticks and an optional horizontal line."""
    xs, ys = np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)
    top, right, bottom, left = MARGIN
    x0, x1, y0, y1 = left, width - right, height - bottom, top
    ylow, yhigh = y_range if y_range is not None else (float(ys.min()), float(ys.max()))
    if yhigh <= ylow:
        ylow, yhigh = ylow - 0.5, yhigh + 0.5
    px = _scale(xs, float(xs.min()), float(xs.max()), x0, x1)
    py = _scale(ys, ylow, yhigh, y0, y1)
    path = "M" + " L".join(f"{x:.2f},{y:.2f}" for x, y in zip(px, py))
    extra = "".join(f' {escape(k)}="{escape(v)}"' for k, v in (attributes or {}).items())
    parts = [f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" '
             f'height="{height}" role="img" aria-label="{escape(title)}"{extra}>',
             f'<text class="title" x="{left}" y="14">{escape(title)}</text>',
             f'<line class="axis" x1="{x0}" y1="{y0}" x2="{x1}" y2="{y0}"/>',
             f'<line class="axis" x1="{x0}" y1="{y0}" x2="{x0}" y2="{y1}"/>',
             f'<text class="tick" x="{x0}" y="{y0 + 14}">{_number(float(xs.min()))}</text>',
             f'<text class="tick end" x="{x1}" y="{y0 + 14}">{_number(float(xs.max()))}</text>',
             f'<text class="tick mid" x="{(x0 + x1) / 2:.1f}" y="{y0 + 22}">{escape(x_label)}</text>',
             f'<text class="tick end" x="{x0 - 4}" y="{y0}">{_number(ylow)}</text>',
             f'<text class="tick end" x="{x0 - 4}" y="{y1 + 8}">{_number(yhigh)}</text>']
    if hline is not None and ylow <= hline <= yhigh:
        hy = float(_scale(np.array([hline]), ylow, yhigh, y0, y1)[0])
        parts.append(f'<line class="threshold" x1="{x0}" y1="{hy:.2f}" x2="{x1}" y2="{hy:.2f}"/>'
                     f'<text class="tick end" x="{x1}" y="{hy - 3:.2f}">{escape(hline_label)}</text>')
    parts.append(f'<path class="{escape(css_class)}" d="{path}"/>')
    if markers:
        parts += [f'<circle class="tap" cx="{x:.2f}" cy="{y:.2f}" r="2.5"/>' for x, y in zip(px, py)]
    parts.append("</svg>")
    return "".join(parts)


def legend(items: Sequence[tuple[str, str]]) -> str:
    return "".join(f'<span class="legend {escape(cls)}">{escape(text)}</span>' for cls, text in items)
