"""The container helpers that run outside a container build: the requirement lists the Dockerfile
and the wheelhouse are made from, the image's healthcheck, and the compose file's sizing.

The image itself is built and run by scripts/container-check (make container-check)."""

from __future__ import annotations

import http.server
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts" / "container"


def requirements(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPTS / "requirements.py"), "--pyproject", str(ROOT / "pyproject.toml"), *args],
        capture_output=True, text=True, check=False,
    )


def names(lines: str) -> list[str]:
    return [re.match(r"[A-Za-z0-9._-]+", line).group(0).lower() for line in lines.splitlines()]


def test_serve_requirements_hold_onnxruntime_and_no_torch() -> None:
    result = requirements("serve")
    assert result.returncode == 0, result.stderr
    serve = names(result.stdout)
    assert {"numpy", "pydantic", "fastapi", "uvicorn", "onnxruntime"} <= set(serve)
    assert "torch" not in serve and "onnxscript" not in serve
    assert len(serve) == len(set(serve)), f"duplicates in {serve}"


def test_train_requirements_pin_torch_once_and_include_serve() -> None:
    result = requirements("train,serve")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    torch_lines = [line for line in lines if names(line) == ["torch"]]
    assert len(torch_lines) == 1 and "==" in torch_lines[0], torch_lines
    assert set(names(requirements("serve").stdout)) <= set(names(result.stdout))


def test_self_referencing_extra_is_expanded() -> None:
    dev = requirements("dev")
    assert dev.returncode == 0, dev.stderr
    assert "monoserve" not in names(dev.stdout)
    assert {"torch", "fastapi", "pytest"} <= set(names(dev.stdout))


def test_exclude_drops_a_distribution() -> None:
    result = requirements("--exclude", "onnxruntime", "serve")
    assert result.returncode == 0, result.stderr
    assert "onnxruntime" not in names(result.stdout)
    assert "onnx" in names(result.stdout)


def test_unknown_extra_is_refused_naming_the_known_ones() -> None:
    result = requirements("serve,gpu")
    assert result.returncode != 0
    assert "unknown extra 'gpu'" in result.stderr and "serve" in result.stderr


class _Readyz(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        code = self.status if self.path == "/readyz" else 404
        self.send_response(code)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def readyz_server() -> Iterator[tuple[http.server.HTTPServer, type[_Readyz]]]:
    handler = type("Handler", (_Readyz,), {})
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, handler
    server.shutdown()
    server.server_close()


def healthcheck(host: str, port: int) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MONOSERVE_HOST": host, "MONOSERVE_PORT": str(port)}
    return subprocess.run([sys.executable, str(SCRIPTS / "healthcheck.py")], env=env,
                          capture_output=True, text=True, timeout=30, check=False)


def test_healthcheck_passes_on_ready_over_loopback_when_bound_to_all(readyz_server) -> None:
    server, _ = readyz_server
    result = healthcheck("0.0.0.0", server.server_address[1])
    assert result.returncode == 0, result.stdout
    assert f"http://127.0.0.1:{server.server_address[1]}/readyz" in result.stdout


def test_healthcheck_fails_when_not_ready(readyz_server) -> None:
    server, handler = readyz_server
    handler.status = 503
    result = healthcheck("127.0.0.1", server.server_address[1])
    assert result.returncode == 1
    assert "503" in result.stdout


def test_healthcheck_fails_when_nothing_listens() -> None:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Readyz)
    port = server.server_address[1]
    server.server_close()  # a port that was free a moment ago, now with nothing behind it
    assert healthcheck("127.0.0.1", port).returncode == 1


def test_compose_api_threads_match_its_cpu_limit_and_healthcheck_matches_the_image() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    api = compose["services"]["api"]
    assert int(api["environment"]["MONOSERVE_CPU_THREADS"]) == int(float(api["cpus"]))
    dockerfile = (ROOT / "Dockerfile").read_text()
    script = api["healthcheck"]["test"][-1]
    assert f"COPY scripts/container/healthcheck.py {script}" in dockerfile
    assert api["volumes"][0].endswith(":/srv/model_repository:ro")
    assert "MONOSERVE_REPO=/srv/model_repository" in dockerfile
