"""The framework's own overhead: FastAPI endpoints that return a constant.

The benchmark sends these the same request bodies as the real servers; the endpoints do not read
them (/smooth receives the body before answering). Its req/s is what FastAPI + uvicorn can answer at all on this CPU, the ceiling a FastAPI
service that does real work cannot pass (unless its hot path skips FastAPI's own handling).

    uvicorn ceiling_server:app --app-dir bench --port 8002
"""

from __future__ import annotations

from fastapi import FastAPI, Request

app = FastAPI(title="constant-returning ceiling server")

CONSTANT = {"model": "classifier", "version": 1, "scores": [[0.5]], "labels": ["spam"], "threshold": 0.5}


@app.get("/readyz")
async def readyz():
    return {"ready": True}


@app.post("/classify")
async def classify():
    return CONSTANT


@app.post("/smooth")
async def smooth(request: Request):
    # The body is received (a large one takes real time to arrive), then ignored: the constant answer
    # on the same body. Not reading it made uvicorn reset the connection of a 19 MB upload.
    await request.body()
    return CONSTANT
