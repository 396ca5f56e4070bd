"""BentoML (1.4) serving the benchmark's ONNX models on its own JSON routes, written as its docs show a
service: a class under @bentoml.service whose @bentoml.api methods take the JSON body's fields as
typed arguments. POST /smooth {"signal": [[...]], ...} -> {"smoothed": [[...]]} and POST /classify
{"instances": [[...]]} -> {"scores": [[...]]}: the same bodies as monoserve's /smooth and /classify.
One worker, access log off; `bentoml serve` on 127.0.0.1 (bench/peers/launch.py starts it).

BentoML has no OIP route and its gRPC server is gone from the 1.2+ service API: JSON only.
"""

from __future__ import annotations

import bentoml
import numpy as np
from onnx_models import Models


@bentoml.service(workers=1, traffic={"timeout": 120}, logging={"access": {"enabled": False}})
class Peer:
    def __init__(self) -> None:
        self.models = Models()

    # numpy arrays as the argument type: BentoML converts the JSON list (its documented way for tensors)
    @bentoml.api(route="/smooth")
    def smooth(self, signal: np.ndarray, model: str = "smoother", mode: str = "same") -> dict:
        return {"smoothed": self.models.smooth(signal).tolist()}

    @bentoml.api(route="/classify")
    def classify(self, instances: np.ndarray, model: str = "classifier") -> dict:
        return {"scores": self.models.classify(instances).tolist()}
