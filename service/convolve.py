"""The smoother's full correlation, computed directly or by FFT overlap-add (numpy/scipy, no torch).

The contract (models.modes): pad each signal by replicating its first and last sample K-1 times,
then take the valid correlation with the K-tap kernel, so a signal of L samples gives L + K - 1.
Every edge mode is a slice of that (models.modes.mode_slice).

Two ways compute the same numbers:

- ``direct``: the exported ONNX graph run by ONNX Runtime (when a session is given), or a numpy
  shift-and-add loop. Cost grows like N * L * K.
- ``fft``: overlap-add FFT convolution (scipy.signal.oaconvolve) of the edge-padded signal with the
  reversed kernel. Cost grows like N * L * log(K) and is nearly flat in K.

`choose_method(K, L)` picks the faster one from a rule fitted to measurements on this machine
(bench/convolve_crossover.py writes bench/results/convolve_crossover.{json,md}; the constants
below come from that table). Both methods agree within float32 rounding (see tests/test_convolve.py).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

Method = Literal["auto", "direct", "fft"]
METHODS: tuple[str, ...] = ("auto", "direct", "fft")

# Crossover rule, fitted to bench/results/convolve_crossover.md (ORT direct vs scipy oaconvolve,
# 8 signals, one CPU thread). Direct costs ~K multiply-adds per output sample, overlap-add ~log(K):
# from about 200 taps FFT won at every length measured (even 256 samples); between about 50 and
# 200 taps it won once K * L passed about 400k (K=63 from L ~ 16k, K=127 from L ~ 4k); below
# about 50 taps direct won everywhere.
FFT_ALWAYS_KERNEL = 192
FFT_MIN_KERNEL = 48
FFT_MIN_WORK = 400_000  # kernel_size * length


def choose_method(kernel_size: int, length: int) -> Literal["direct", "fft"]:
    """The faster method for a K-tap kernel over signals of `length` samples (measured rule)."""
    if kernel_size >= FFT_ALWAYS_KERNEL:
        return "fft"
    if kernel_size >= FFT_MIN_KERNEL and kernel_size * length >= FFT_MIN_WORK:
        return "fft"
    return "direct"


def edge_pad(signals: np.ndarray, pad: int) -> np.ndarray:
    """[N, L] -> [N, L + 2 * pad], replicating the first and last sample (float32, C order)."""
    n, length = signals.shape
    out = np.empty((n, length + 2 * pad), dtype=np.float32)
    out[:, pad : pad + length] = signals
    if pad:
        out[:, :pad] = signals[:, :1]
        out[:, pad + length :] = signals[:, -1:]
    return out


def full_correlation_numpy(signals: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Direct method without ONNX Runtime: one multiply-add pass over the padded signal per tap."""
    kernel_size = kernel.shape[0]
    padded = edge_pad(signals, kernel_size - 1)
    out_length = signals.shape[1] + kernel_size - 1
    out = np.zeros((signals.shape[0], out_length), dtype=np.float32)
    scratch = np.empty_like(out)
    for tap in range(kernel_size):
        np.multiply(padded[:, tap : tap + out_length], kernel[tap], out=scratch)
        out += scratch
    return out


def full_correlation_onnx(signals: np.ndarray, session: Any) -> np.ndarray:
    """Direct method: the exported graph (input [B, C, L] -> full [B, C, L + K - 1]) with B = N, C = 1."""
    inputs = session.get_inputs()
    (full,) = session.run(None, {inputs[0].name: signals[:, None, :]})
    return full.reshape(signals.shape[0], -1)


def full_correlation_fft(signals: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """FFT method: overlap-add convolution of the edge-padded signal with the reversed kernel."""
    from scipy.signal import oaconvolve  # imported on first use: scipy.signal costs ~0.2 s

    kernel_size = kernel.shape[0]
    padded = edge_pad(signals, kernel_size - 1)
    # valid length = (L + 2(K-1)) - K + 1 = L + K - 1; correlation = convolution with kernel[::-1]
    reversed_kernel = np.ascontiguousarray(kernel[::-1], dtype=np.float32)[None, :]
    out = oaconvolve(padded, reversed_kernel, mode="valid", axes=-1)
    return out.astype(np.float32, copy=False)


def full_correlation(
    signals: np.ndarray,
    kernel: np.ndarray,
    *,
    session: Any | None = None,
    method: Method = "auto",
) -> np.ndarray:
    """Full correlation of each row of `signals` [N, L] with `kernel` [K] -> [N, L + K - 1] float32.

    `session`: an ONNX Runtime session of the exported smoother with this same kernel; when given,
    the direct method runs it, otherwise numpy. `method`: "auto" (measured rule), "direct", "fft".
    """
    if method not in METHODS:
        raise ValueError(f"unknown convolution method {method!r}; expected one of {', '.join(METHODS)}")
    if signals.ndim != 2:
        raise ValueError(f"signals must have shape [N, L], got {signals.shape}")
    kernel = np.asarray(kernel, dtype=np.float32).reshape(-1)
    if kernel.size == 0:
        raise ValueError("kernel must have at least one tap")
    if signals.shape[1] == 0:
        raise ValueError("signals must have at least one sample (L >= 1)")
    signals = np.ascontiguousarray(signals, dtype=np.float32)
    if method == "auto":
        method = choose_method(kernel.size, signals.shape[1])
    if method == "fft":
        return full_correlation_fft(signals, kernel)
    if session is not None:
        return full_correlation_onnx(signals, session)
    return full_correlation_numpy(signals, kernel)
