"""The server a typical user writes: FastAPI + pydantic list fields + the eager torch model.

This is the benchmark's lower reference point, written the way tutorials show it: pydantic request
models with `list[list[float]]` fields, the eager torch model (loaded from the same checkpoints the
monoserve repository was exported from) called in a plain `def` endpoint, and a dict of lists
returned through FastAPI's default JSON response. Do not optimize it.

    NAIVE_CHECKPOINTS=bench/work/checkpoints uvicorn naive_server:app --app-dir bench --port 8001
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from fastapi import FastAPI
from pydantic import BaseModel

from models.checkpoint import load_checkpoint

CHECKPOINTS = Path(os.environ.get("NAIVE_CHECKPOINTS", Path(__file__).parent / "work" / "checkpoints"))

smoothers = {name: load_checkpoint(CHECKPOINTS / f"{name}.pt")[0] for name in ("smoother", "smoother_long")}
classifier, _ = load_checkpoint(CHECKPOINTS / "classifier.pt")

app = FastAPI(title="naive smoother/classifier server")


class SmoothRequest(BaseModel):
    signal: list[list[float]]
    mode: str = "same"
    model: str = "smoother"


class ClassifyRequest(BaseModel):
    instances: list[list[float]]


@app.get("/readyz")
def readyz():
    return {"ready": True}


@app.post("/smooth")
def smooth(request: SmoothRequest):
    x = torch.tensor(request.signal)
    with torch.no_grad():
        y = smoothers[request.model](x, mode=request.mode)
    return {"model": request.model, "mode": request.mode, "smoothed": y.tolist()}


@app.post("/classify")
def classify(request: ClassifyRequest):
    x = torch.tensor(request.instances)
    with torch.no_grad():
        scores = torch.sigmoid(classifier(x))
    return {"scores": scores.tolist()}
