"""MLServer custom runtimes for the benchmark's ONNX models (OIP v2 REST and gRPC), written the
way MLServer's docs show a custom runtime: decode the input with NumpyCodec, run, encode the output.

The harness writes a settings directory (bench/peers/run_peer.py) and runs `mlserver start DIR`.
"""

from __future__ import annotations

from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse
from onnx_models import Models


class _Runtime(MLModel):
    output_name = ""

    async def load(self) -> bool:
        self.models = Models()
        return True

    def run(self, array):
        raise NotImplementedError

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        array = NumpyCodec.decode_input(payload.inputs[0])
        result = self.run(array)
        return InferenceResponse(model_name=self.name, model_version=self.version,
                                 outputs=[NumpyCodec.encode_output(self.output_name, result)])


class SmootherRuntime(_Runtime):
    output_name = "smoothed"

    def run(self, array):
        return self.models.smooth(array)


class ClassifierRuntime(_Runtime):
    output_name = "scores"

    def run(self, array):
        return self.models.classify(array)
