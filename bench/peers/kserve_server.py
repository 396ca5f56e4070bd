"""KServe's ModelServer serving the benchmark's ONNX models over OIP v2 REST, as KServe's docs show a
custom model: a kserve.Model whose predict takes an InferRequest and returns an InferResponse.
One worker, 127.0.0.1 (uvicorn under ModelServer), access log off.

    PEER_SMOOTHER=... PEER_CLASSIFIER=... python kserve_server.py PORT GRPC_PORT [grpc]

Its gRPC server (OIP ModelInfer) runs only with the third argument `grpc` (bench/grpc_side.py).
"""

from __future__ import annotations

import logging
import sys
import uuid

import kserve
from kserve import InferOutput, InferRequest, InferResponse
from onnx_models import Models


class OnnxModel(kserve.Model):
    def __init__(self, name: str, models: Models, output: str, run):
        super().__init__(name)
        self.models, self.output, self.run = models, output, run
        self.ready = True

    def predict(self, payload: InferRequest, headers=None) -> InferResponse:
        array = payload.inputs[0].as_numpy()
        result = self.run(array)
        output = InferOutput(name=self.output, shape=list(result.shape), datatype="FP32")
        asked = payload.request_outputs or []  # binary output when the request asks for it
        binary = any((item.parameters or {}).get("binary_data") for item in asked)
        output.set_data_from_numpy(result, binary_data=bool(binary))
        return InferResponse(model_name=self.name, infer_outputs=[output], response_id=payload.id or str(uuid.uuid4()))


if __name__ == "__main__":
    models = Models()
    server = kserve.ModelServer(http_port=int(sys.argv[1]), grpc_port=int(sys.argv[2]), workers=1,
                                enable_grpc=sys.argv[3:4] == ["grpc"], enable_docs_url=False, enable_latency_logging=False)
    for name in ("uvicorn.access", "uvicorn.error", "kserve", "kserve.trace"):  # logs off (configured by ModelServer)
        logging.getLogger(name).setLevel(logging.WARNING)
    server.start([OnnxModel("smoother", models, "smoothed", models.smooth),
                  OnnxModel("classifier", models, "scores", models.classify)])
