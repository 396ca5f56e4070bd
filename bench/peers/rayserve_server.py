"""Ray Serve (2.60) serving the benchmark's ONNX models on its own JSON routes, written as its docs show
an HTTP deployment: one deployment with a FastAPI ingress, started with serve.run on a local Ray
instance. POST /smooth {"signal": [[...]], ...} -> {"smoothed": [[...]]}, POST /classify
{"instances": [[...]]} -> {"scores": [[...]]} (the same bodies as monoserve's), GET /health once
the deployment answers. One replica on one CPU (Ray's proxy, controller and replica processes all
pinned with the launcher), access log off, dashboard off, 127.0.0.1.

    PEER_SMOOTHER=... PEER_CLASSIFIER=... python rayserve_server.py PORT

Ray Serve has no OIP route (its gRPC proxy serves the user's own protos): JSON only.
"""

# no `from __future__ import annotations`: FastAPI must see Request itself (the class is pickled to the replica)
import logging
import signal
import sys

import numpy as np
import ray
from fastapi import FastAPI, Request
from ray import serve
from ray.serve.config import HTTPOptions

app = FastAPI()


@serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 1},
                  logging_config={"enable_access_log": False, "log_level": "WARNING"})
@serve.ingress(app)
class Peer:
    def __init__(self) -> None:
        from onnx_models import Models  # on the replica (the launcher's PYTHONPATH is carried to it)

        self.models = Models()

    @app.get("/health")
    def health(self) -> dict:
        return {"ok": True}

    @app.post("/smooth")
    async def smooth(self, request: Request) -> dict:
        payload = await request.json()
        return {"smoothed": self.models.smooth(np.asarray(payload["signal"], dtype=np.float32)).tolist()}

    @app.post("/classify")
    async def classify(self, request: Request) -> dict:
        payload = await request.json()
        return {"scores": self.models.classify(np.asarray(payload["instances"], dtype=np.float32)).tolist()}


def main() -> None:
    port = int(sys.argv[1])
    # a Ray instance of its own (never one another process on this machine started), one CPU
    ray.init(address="local", num_cpus=1, include_dashboard=False, logging_level=logging.WARNING,
             log_to_driver=False)  # its workers inherit this process's environment (PYTHONPATH: bench/peers)
    serve.start(http_options=HTTPOptions(host="127.0.0.1", port=port), logging_config={"log_level": "WARNING"})
    serve.run(Peer.bind(), name="peer", route_prefix="/")
    # Ray's runtime leaves SIGTERM to nobody in this process: wait for it explicitly
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    ray.shutdown()  # stops the GCS and raylet this process started; the actors end with the raylet


if __name__ == "__main__":
    main()
