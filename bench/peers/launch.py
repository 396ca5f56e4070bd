"""Start one peer server (run with that peer's own python, bench/work/peers/NAME/bin/python):

    python bench/peers/launch.py mlserver|litserve|kserve|pytriton|bentoml|rayserve PORT [GRPC_PORT]

GRPC_PORT (MLServer, PyTriton, KServe): the OIP gRPC port, on 127.0.0.1 (default: a free port nobody is told of).

Every peer: 127.0.0.1, one worker, logs at error level, ONNX Runtime on one intra-op thread
(onnx_models.py). MLServer gets a settings directory written here (its server and two models).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def mlserver(port: int, grpc_port: int) -> None:
    directory = Path(tempfile.mkdtemp(prefix="mlserver-bench-"))
    settings = {"debug": False, "host": "127.0.0.1", "http_port": port, "grpc_port": grpc_port,
                "metrics_port": free_port(), "parallel_workers": 0}
    (directory / "settings.json").write_text(json.dumps(settings))
    for name, runtime in (("smoother", "SmootherRuntime"), ("classifier", "ClassifierRuntime")):
        (directory / name).mkdir()
        (directory / name / "model-settings.json").write_text(json.dumps(
            {"name": name, "implementation": f"mlserver_runtime.{runtime}", "parallel_workers": 0}))
    binary = str(Path(sys.executable).parent / "mlserver")
    os.execv(binary, [binary, "start", str(directory)])


def bentoml(port: int) -> None:
    """`bentoml serve` as its docs run a service: the module's service class, from bench/peers."""
    binary = str(Path(sys.executable).parent / "bentoml")
    os.execv(binary, [binary, "serve", "bentoml_server:Peer", "--working-dir", str(HERE), "--host", "127.0.0.1",
                      "--port", str(port)])


def main() -> None:
    name, port = sys.argv[1], int(sys.argv[2])
    grpc_asked = len(sys.argv) > 3  # KServe starts its gRPC server only when asked (HTTP runs go without)
    grpc_port = int(sys.argv[3]) if grpc_asked else free_port()
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))
    sys.path.insert(0, str(HERE))
    if name == "mlserver":
        mlserver(port, grpc_port)
    if name == "bentoml":
        bentoml(port)
    script = {"litserve": "litserve_server.py", "kserve": "kserve_server.py", "pytriton": "pytriton_server.py",
              "rayserve": "rayserve_server.py"}[name]
    os.execv(sys.executable, [sys.executable, str(HERE / script), str(port), str(grpc_port), *(["grpc"] if grpc_asked else [])])


if __name__ == "__main__":
    main()
