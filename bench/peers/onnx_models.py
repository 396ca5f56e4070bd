"""What every peer server runs: the benchmark's exported ONNX files in ONNX Runtime, one intra-op
thread, sequential execution, plus the `same` edge slice /smooth answers (contract/modes.py:
full[K // 2 : K // 2 + L]). numpy and onnxruntime only: this module is imported in each peer's
own virtual environment, where monoserve is not installed.

Environment: PEER_SMOOTHER and PEER_CLASSIFIER, the paths of the two model.onnx files.
"""

from __future__ import annotations

import os

import numpy as np
import onnxruntime as ort


def session(path: str) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


class Models:
    def __init__(self, smoother: str | None = None, classifier: str | None = None):
        self.smoother = session(smoother or os.environ["PEER_SMOOTHER"])
        self.classifier = session(classifier or os.environ["PEER_CLASSIFIER"])
        self.smoother_input = self.smoother.get_inputs()[0].name
        self.classifier_input = self.classifier.get_inputs()[0].name

    def smooth(self, signal: np.ndarray) -> np.ndarray:
        """[L], [C, L] or [B, C, L] float32 -> the `same` smoothing, in the same nesting."""
        signal = np.asarray(signal, dtype=np.float32)
        batched = signal.reshape((1,) * (3 - signal.ndim) + signal.shape)
        full = self.smoother.run(None, {self.smoother_input: batched})[0]
        length = signal.shape[-1]
        start = (full.shape[-1] - length + 1) // 2  # K // 2, with K = full - L + 1
        return full[..., start:start + length].reshape(signal.shape)

    def classify(self, features: np.ndarray) -> np.ndarray:
        """[N, F] -> scores [N, 1]."""
        return self.classifier.run(None, {self.classifier_input: np.asarray(features, dtype=np.float32)})[0]
