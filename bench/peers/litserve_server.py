"""LitServe serving the benchmark's ONNX models on its own JSON routes, as its docs show:
POST /smooth {"signal": [[...]], ...} -> {"smoothed": [[...]]}, POST /classify {"instances": [[...]]}
-> {"scores": [[...]]} (the same bodies as monoserve's /smooth and /classify). One worker on the CPU,
one API server process, logs at error level, 127.0.0.1.

    PEER_SMOOTHER=... PEER_CLASSIFIER=... python litserve_server.py PORT
"""

from __future__ import annotations

import sys

import litserve as ls
import numpy as np
from onnx_models import Models


class SmoothAPI(ls.LitAPI):
    def setup(self, device):
        self.models = Models()

    def decode_request(self, request):
        return np.asarray(request["signal"], dtype=np.float32)

    def predict(self, signal):
        return self.models.smooth(signal)

    def encode_response(self, smoothed):
        return {"smoothed": smoothed.tolist()}


class ClassifyAPI(ls.LitAPI):
    def setup(self, device):
        self.models = Models()

    def decode_request(self, request):
        return np.asarray(request["instances"], dtype=np.float32)

    def predict(self, features):
        return self.models.classify(features)

    def encode_response(self, scores):
        return {"scores": scores.tolist()}


if __name__ == "__main__":
    server = ls.LitServer([SmoothAPI(api_path="/smooth"), ClassifyAPI(api_path="/classify")], accelerator="cpu",
                          workers_per_device=1, timeout=120)
    server.run(host="127.0.0.1", port=int(sys.argv[1]), num_api_servers=1, log_level="error",
               generate_client_file=False)
