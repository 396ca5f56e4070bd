"""PyTriton: NVIDIA Triton Inference Server with the model in its Python backend (not Triton's own ONNX
Runtime backend), serving the benchmark's ONNX models over OIP v2 REST and gRPC: the ONNX Runtime
call runs in a Python function bound with PyTriton, as its docs show. Batching off (the
requests carry their whole tensors), log verbosity 0, 127.0.0.1.

    PEER_SMOOTHER=... PEER_CLASSIFIER=... python pytriton_server.py HTTP_PORT GRPC_PORT
"""

from __future__ import annotations

import socket
import sys

import numpy as np
from onnx_models import Models
from pytriton.model_config import ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> None:
    models = Models()

    def smooth(requests):
        return [{"smoothed": models.smooth(request["signal"])} for request in requests]

    def classify(requests):
        return [{"scores": models.classify(request["features"])} for request in requests]

    config = TritonConfig(http_address="127.0.0.1", http_port=int(sys.argv[1]), grpc_address="127.0.0.1",
                          grpc_port=int(sys.argv[2]), metrics_port=free_port(), log_verbose=0)
    with Triton(config=config) as triton:
        triton.bind(model_name="smoother", infer_func=smooth,
                    inputs=[Tensor(name="signal", dtype=np.float32, shape=(-1, -1))],
                    outputs=[Tensor(name="smoothed", dtype=np.float32, shape=(-1, -1))],
                    config=ModelConfig(batching=False))
        triton.bind(model_name="classifier", infer_func=classify,
                    inputs=[Tensor(name="features", dtype=np.float32, shape=(-1, -1))],
                    outputs=[Tensor(name="scores", dtype=np.float32, shape=(-1, -1))],
                    config=ModelConfig(batching=False))
        triton.serve()


if __name__ == "__main__":
    main()
