"""The TorchScript engine on CUDA serves what the CPU serves: /smooth, /classify and OIP infer.

Marked `cuda`: skipped without a CUDA device (torch.cuda.is_available() False); run on a GPU
machine by scripts/gpu-check. (The ONNX Runtime CUDA path is tests/test_service.py's.)"""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings
from service_fixtures import CLASSIFIER_FEATURES, fresh_repo


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


@pytest.mark.cuda
@pytest.mark.skipif(not cuda_available(), reason="no CUDA device for torch")
def test_torchscript_on_cuda_answers_as_the_cpu(tmp_path):
    repo = fresh_repo(tmp_path, models=("smoother", "classifier"))
    common = dict(repo=repo, engine="torchscript", default_classifier="classifier", cpu_threads=2)
    signal = np.random.default_rng(0).standard_normal((2, 3, 4096)).astype(np.float32)
    rows = np.random.default_rng(1).standard_normal((256, len(CLASSIFIER_FEATURES))).astype(np.float32)
    answers = {}
    for device in ("cpu", "cuda"):
        with TestClient(create_app(Settings(device=device, **common))) as client:
            assert client.get("/models").json()["device"] == device
            smooth = client.post("/smooth", json={"signal": signal.tolist(), "mode": "causal"})
            classify = client.post("/classify", json={"instances": rows.tolist()})
            oip = client.post("/v2/models/smoother/infer", json={"inputs": [
                {"name": "signal", "shape": list(signal.shape), "datatype": "FP32", "data": signal.ravel().tolist()}],
                "parameters": {"mode": "causal"}})
            assert smooth.status_code == classify.status_code == oip.status_code == 200, (smooth.text, classify.text, oip.text)
            answers[device] = (np.asarray(smooth.json()["smoothed"]), np.asarray(classify.json()["scores"]),
                               np.asarray(oip.json()["outputs"][0]["data"]).reshape(signal.shape))
    for cpu, cuda in zip(answers["cpu"], answers["cuda"]):
        np.testing.assert_allclose(cuda, cpu, rtol=1e-4, atol=1e-5)
