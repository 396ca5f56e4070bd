"""The framework's own overhead: FastAPI endpoints that return a constant.

The benchmark sends these the same request bodies as the real servers; the endpoints do not read
them. Its req/s is what FastAPI + uvicorn can answer at all on this CPU, the ceiling a FastAPI
service that does real work cannot pass (unless its hot path skips FastAPI's own handling).

    uvicorn ceiling_server:app --app-dir bench --port 8002
"""

from __future__ import annotations

from fastapi import FastAPI

app = FastAPI(title="constant-returning ceiling server")

CONSTANT = {"model": "classifier", "version": 1, "scores": [[0.5]], "labels": ["spam"], "threshold": 0.5}


@app.get("/readyz")
async def readyz():
    return {"ready": True}


@app.post("/classify")
async def classify():
    return CONSTANT


@app.post("/smooth")
async def smooth():
    return CONSTANT
