"""Inputs and answers for the batch tests: files written with pyarrow, and the online endpoints'
answers for the same rows from the service's in-process app (real ONNX Runtime sessions)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings
from service_fixtures import CLASSIFIER_FEATURES, MULTILABEL_FEATURES

NPY = {"content-type": "application/x-npy", "accept": "application/x-npy"}


def service_client(repo: Path) -> TestClient:
    # one ONNX Runtime thread, as the batch tests' jobs: the same engine, so answers are bit-equal
    return TestClient(create_app(Settings(repo=repo, device="cpu", cpu_threads=1, default_classifier="classifier",
                                          poll_interval_s=0)))


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array))
    return buffer.getvalue()


def classify(client: TestClient, model: str, rows: np.ndarray) -> tuple[np.ndarray, list[list[str]]]:
    """/classify's scores (.npy: exact float32) and decisions (JSON) for `rows`."""
    response = client.post(f"/classify?model={model}", content=npy(rows.astype(np.float32)), headers=NPY)
    assert response.status_code == 200, response.text
    scores = np.load(io.BytesIO(response.content))
    body = client.post("/classify", json={"model": model, "instances": rows.astype(np.float32).tolist()}).json()
    return scores, body["decisions"]


def smooth(client: TestClient, signal: np.ndarray, mode: str | None = None) -> np.ndarray:
    query = "model=smoother" + (f"&mode={mode}" if mode else "")
    response = client.post(f"/smooth?{query}", content=npy(signal.astype(np.float32)), headers=NPY)
    assert response.status_code == 200, response.text
    return np.load(io.BytesIO(response.content))


def feature_table(rows: int, seed: int, features: list[str] = CLASSIFIER_FEATURES) -> pa.Table:
    rng = np.random.default_rng(seed)
    columns = {name: rng.normal(size=rows) * 2 for name in features}
    columns["uid"] = np.arange(rows) + seed * 100_000
    columns["note"] = [f"row-{i}" for i in range(rows)]
    return pa.table(columns)


def write_rows(folder: Path, files: int = 2, rows: int = 90, features: list[str] = CLASSIFIER_FEATURES) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(files):
        pq.write_table(feature_table(rows, index + 1, features), folder / f"part-{index}.parquet")
    return folder


def signal_table(lengths: list[int], seed: int = 3) -> pa.Table:
    rng = np.random.default_rng(seed)
    signals = [np.cumsum(rng.normal(size=n)).astype(np.float32) for n in lengths]
    return pa.table({"sid": np.arange(len(lengths)), "signal": pa.array(signals, type=pa.list_(pa.float32()))})


def long_table(series: int, length: int, seed: int = 4) -> pa.Table:
    """`series` ids x `length` samples, rows shuffled (the engines must sort by time)."""
    rng = np.random.default_rng(seed)
    ids = np.repeat([f"s{i}" for i in range(series)], length)
    times = np.tile(np.arange(length) * 10, series)
    values = np.cumsum(rng.normal(size=series * length))
    order = rng.permutation(series * length)
    return pa.table({"sensor": ids[order], "ts": times[order], "reading": values[order],
                     "site": np.array(["a", "b"])[np.arange(series * length) % 2][order]})


def expected_long(client: TestClient, table: pa.Table, mode: str | None = None) -> dict[tuple[str, int], np.float32]:
    """/smooth's answer for each (id, time): each series sorted by time, smoothed as one 1-D signal."""
    frame = table.to_pandas().sort_values(["sensor", "ts"], kind="stable")
    answers: dict[tuple[str, int], np.float32] = {}
    kernel = 9
    for sensor, group in frame.groupby("sensor"):
        out = smooth(client, group["reading"].to_numpy(np.float32), mode)
        times = group["ts"].to_numpy()
        if mode == "valid":
            times = times[kernel - 1:]
        for t, value in zip(times, out):
            answers[(sensor, int(t))] = value
    return answers


__all__ = ["MULTILABEL_FEATURES"]
