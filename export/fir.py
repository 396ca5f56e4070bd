"""Find the one shared FIR kernel of a user's smoother by probing it, and check that it is one.

The user's module (or an ONNX file) is a black box [B, C, L] -> [B, C, L'] here: a callable on
float32 numpy arrays. Its kernel is read from impulse responses; then the module must behave as
the service's smoother artifact for that kernel in the declared edge mode (contract.modes: the
full correlation of the edge-replicated signal, sliced). Each property is checked on its own so
a refusal says why (channels mixed, different kernels per channel, nonlinear, time-varying, a
bias, another alignment or edge padding), and finally the module and the artifact are compared
on random multi-channel inputs within the parity tolerance. numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from contract.modes import mode_slice
from contract.padding import PADDINGS, pad

Runner = Callable[[np.ndarray], np.ndarray]

PROBE_LENGTH = 256  # long enough for kernels up to ~120 taps; doubled while the response touches an edge
MAX_PROBE_LENGTH = 8192


class NotAFilterError(ValueError):
    """The module is not one shared FIR kernel applied to every channel in the declared mode."""


class ProbeRefused(Exception):
    """Running the module was refused before it ran (its memory unbounded, say): not a question of
    whether it is a filter, so it ends the probing as it is."""


@dataclass
class FoundKernel:
    kernel: np.ndarray  # [K] float32, taps in correlation order (the last tap weighs the newest sample)
    channels_probed: int  # 3, or 1 for a module that only accepts one channel
    max_abs_error: float  # module vs artifact on the random inputs
    comparisons: int


def full_correlation(x: np.ndarray, kernel: np.ndarray, padding: str = "replicate") -> np.ndarray:
    """The artifact's output: x [B, C, L] padded by K - 1 on both sides as `padding` says
    (contract.padding), correlated: [B, C, L + K - 1]."""
    k = kernel.size
    batch, channels, length = x.shape
    padded = pad(x.reshape(batch * channels, length), k - 1, k - 1, padding).astype(np.float64)
    windows = np.lib.stride_tricks.sliding_window_view(padded.reshape(batch, channels, -1), k, axis=-1)
    return windows @ kernel.astype(np.float64)


def artifact_output(x: np.ndarray, kernel: np.ndarray, mode: str, padding: str = "replicate") -> np.ndarray:
    return full_correlation(x, kernel, padding)[..., mode_slice(mode, x.shape[-1], kernel.size)]


def _padding_that_fits(run_outputs: list[tuple[np.ndarray, np.ndarray]], kernel: np.ndarray, mode: str,
                       atol: float, rtol: float) -> str | None:
    """The padding (contract.padding) under which the artifact gives every (input, module output) pair."""
    for padding in PADDINGS:
        if all(np.allclose(artifact_output(x, kernel, mode, padding), got, atol=atol, rtol=rtol) for x, got in run_outputs):
            return padding
    return None


def _call(run: Runner, x: np.ndarray, what: str) -> np.ndarray:
    try:
        out = np.asarray(run(np.ascontiguousarray(x, dtype=np.float32)), dtype=np.float64)
    except ProbeRefused:
        raise
    except Exception as exc:
        raise NotAFilterError(f"the module fails on {what} of shape {list(x.shape)}: {type(exc).__name__}: {exc}") from exc
    if out.ndim != 3 or out.shape[:2] != x.shape[:2]:
        raise NotAFilterError(f"the module maps {what} of shape {list(x.shape)} to {list(out.shape)}: "
                              "a smoother maps [batch, channels, length] to [batch, channels, length']")
    if not np.all(np.isfinite(out)):
        raise NotAFilterError(f"the module gives non-finite outputs on {what} of shape {list(x.shape)}")
    return out


def _channels(run: Runner) -> int:
    """3 when the module accepts several channels, 1 when it only works with one (C = 1 modules)."""
    try:
        _call(run, np.zeros((1, 3, 16)), "a 3-channel signal")
        return 3
    except NotAFilterError:
        _call(run, np.zeros((1, 1, 16)), "a 1-channel signal")
        return 1


def find_kernel(run: Runner, mode: str, atol: float, rtol: float, seed: int = 0, padding: str = "replicate") -> FoundKernel:
    """The kernel of `run` in `mode` with the declared edge `padding`, or NotAFilterError saying why it
    is not one shared FIR kernel (or pads its edges another way, naming the padding it uses)."""
    channels = _channels(run)
    length = PROBE_LENGTH
    while True:
        position = length // 2
        impulse = np.zeros((1, channels, length))
        impulse[:, :, position] = 1.0
        zero = _call(run, np.zeros_like(impulse), "a zero signal")
        if np.max(np.abs(zero)) > atol:
            raise NotAFilterError(f"the module's output for a zero signal is not zero (max {np.max(np.abs(zero)):.3g}): "
                                  "a smoother is linear, with no bias")
        response = _call(run, impulse, "an impulse")
        support = np.flatnonzero(np.any(np.abs(response[0]) > 0, axis=0))
        if support.size == 0:
            raise NotAFilterError("the module's impulse response is zero: no kernel is applied to the signal")
        if (support[0] > 0 and support[-1] < response.shape[-1] - 1) or length >= MAX_PROBE_LENGTH:
            break
        length *= 2
    start, stop = int(support[0]), int(support[-1]) + 1
    # per-channel impulses: every channel's response must be the same kernel, on that channel only
    for c in range(channels):
        single = np.zeros((1, channels, length))
        single[0, c, position] = 1.0
        out = _call(run, single, "a one-channel impulse")
        others = [o for o in range(channels) if o != c and np.max(np.abs(out[0, o])) > atol]
        if others:
            raise NotAFilterError(f"an impulse in channel {c} changes channel(s) {others}: the module mixes channels "
                                  "(a smoother applies one kernel to each channel separately, groups=C)")
        if not np.allclose(out[0, c], response[0, 0], atol=atol, rtol=rtol):
            raise NotAFilterError(f"channel {c}'s impulse response differs from channel 0's: the module applies "
                                  "different kernels to different channels (a smoother shares one kernel)")
    kernel = response[0, 0, start:stop][::-1].astype(np.float32)
    k = kernel.size
    # shift invariance: an impulse 5 samples later answers 5 samples later
    later = np.zeros((1, channels, length))
    later[:, :, position + 5] = 1.0
    shifted = _call(run, later, "a shifted impulse")
    if not np.allclose(shifted[..., start + 5:stop + 5], response[..., start:stop], atol=atol, rtol=rtol):
        raise NotAFilterError("the module's response to an impulse depends on where the impulse is: it is time-varying, "
                              "not one FIR kernel")
    # linearity: f(a x + b y) = a f(x) + b f(y)
    rng = np.random.default_rng(seed)
    x, y = rng.standard_normal((2, 2, channels, 64 + 2 * k))
    combined = _call(run, 2.0 * x - 0.5 * y, "a random signal")
    separate = 2.0 * _call(run, x, "a random signal") - 0.5 * _call(run, y, "a random signal")
    if not np.allclose(combined, separate, atol=10 * atol, rtol=10 * rtol):
        raise NotAFilterError("the module is not linear (f(2x - y/2) != 2 f(x) - f(y)/2 on random signals): "
                              "a smoother is one FIR kernel")
    # alignment: where the response starts tells the mode's offset (contract.modes.mode_slice)
    offset = mode_slice(mode, length, k).start
    expected_start = position - offset
    if start != expected_start:
        raise NotAFilterError(
            f"the module's output is shifted by {start - expected_start:+d} sample(s) against the declared mode "
            f"{mode!r} for a {k}-tap kernel (docs/export.md: valid = no padding, same = output[t] from "
            "x[t - (K - 1 - K // 2)] .. x[t + K // 2], causal = output[t] from x[t - K + 1] .. x[t]); declare the mode "
            "the module computes")
    # finally: module vs artifact on random multi-channel inputs, edges included
    worst, comparisons = 0.0, 0
    cases = []
    for batch, length_case in ((1, k + 9), (2, 3 * k + 17), (3, 200)):
        signal = (rng.standard_normal((batch, channels, length_case)) * 3.0 + 1.0).astype(np.float32)
        cases.append((signal, _call(run, signal, "a random signal")))
    for signal, got in cases:
        want = artifact_output(signal, kernel, mode, padding)
        if got.shape != want.shape:
            raise NotAFilterError(f"on a signal of shape {list(signal.shape)} the module gives {list(got.shape)}, "
                                  f"a {k}-tap {mode!r} smoother {list(want.shape)}")
        error = np.abs(got - want)
        bad = error > atol + rtol * np.abs(want)
        if np.any(bad):
            columns = np.flatnonzero(np.any(bad, axis=(0, 1)))
            edge = k
            if columns.min() >= edge and columns.max() < got.shape[-1] - edge or mode == "valid":
                why = "in the interior too"
            else:
                fits = _padding_that_fits(cases, kernel, mode, atol, rtol) if got.shape == want.shape else None
                if fits is not None:
                    why = (f"only near the edges: the module pads with {fits!r} padding, the declaration says "
                           f"padding = {padding!r}; declare padding = {fits!r} to serve it as trained")
                else:
                    why = (f"only near the edges: the declared padding {padding!r} is not how the module pads, "
                           f"and neither is any of {', '.join(PADDINGS)}")
            raise NotAFilterError(f"the module and the published {k}-tap smoother disagree (max |error| {error.max():.3g} "
                                  f"> atol {atol:g} + rtol {rtol:g}) at {columns.size} output position(s), {why}")
        worst = max(worst, float(error.max()))
        comparisons += int(got.size)
    return FoundKernel(kernel=kernel, channels_probed=channels, max_abs_error=worst, comparisons=comparisons)
