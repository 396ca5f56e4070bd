"""GET /ui in a real browser: a `monoserve serve` process with an API token, the page loaded by
headless Chromium (Debian's `chromium`, driven by playwright), its rendered elements checked (the
smoother's kernel path, one response curve per classifier feature and monotone where proven, the
proof status of a serving and of a refused version, the last minute's traffic), nothing fetched
but the page, and a full-page screenshot kept in the test's output directory (tmp_path, copied to
build/test-output/console.png or $MONOSERVE_TEST_OUTPUT, which outlive pytest's rotation)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from explain_fixtures import HIDDEN_DIRECTIONS, HIDDEN_FEATURES, LINEAR_FEATURES, SPAM_FEATURES, copy_repo
from service.app import create_app
from service.settings import Settings
from service_fixtures import copy_version, edit_initializer, onnx_name, reseal
from test_service_e2e import running_server

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "console-token"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def find_chromium() -> str:
    """Debian's chromium, installed with apt-get when missing (root, or sudo without a password)."""
    found = CHROMIUM if os.access(CHROMIUM, os.X_OK) else shutil.which("chromium")
    if found:
        return found
    prefix = [] if os.geteuid() == 0 else (["sudo", "-n"] if shutil.which("sudo") else None)
    if prefix is None or not shutil.which("apt-get"):
        pytest.skip("chromium is not installed and cannot be: no apt-get, or not root and no sudo")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]):
        result = subprocess.run(prefix + command, capture_output=True, text=True, timeout=900, env=env)
        if result.returncode != 0:
            pytest.skip(f"chromium is not installed and `{' '.join(command)}` failed: {result.stderr.strip()[-300:]}")
    found = CHROMIUM if os.access(CHROMIUM, os.X_OK) else shutil.which("chromium")
    if not found:
        pytest.skip("apt-get installed chromium, yet no chromium executable is found")
    return found


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    repo = copy_repo(tmp_path_factory.mktemp("console"))
    # version 2 of "hidden": its output layer negated (checksums and probe rewritten): refused at load
    refused = copy_version(repo, "hidden", 1, 2)
    edit_initializer(refused, onnx_name(refused, "layers.2.weight"), lambda w: -np.abs(w) - 0.1)
    reseal(refused)
    return repo


@pytest.fixture(scope="module")
def server(repo):
    with running_server(repo, env={"MONOSERVE_API_TOKEN": TOKEN}) as running:
        yield running.base
    assert running.process.returncode == 0, running.output


AUTH = {"Authorization": f"Bearer {TOKEN}"}


def test_the_console_follows_the_api_token(server):
    assert httpx.get(f"{server}/ui").status_code == 401
    page = httpx.get(f"{server}/ui", headers=AUTH)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "script-src" not in page.headers["content-security-policy"]  # default-src 'none': no scripts at all
    assert "default-src 'none'" in page.headers["content-security-policy"]


def test_the_console_can_be_turned_off(repo):
    with TestClient(create_app(Settings(repo=repo, device="cpu", poll_interval_s=0, cpu_threads=1, ui=False))) as client:
        assert client.get("/ui").status_code == 404
        assert client.get("/models").status_code == 200


def path_points(d: str) -> np.ndarray:
    return np.array([[float(a), float(b)] for a, b in re.findall(r"(-?[\d.]+),(-?[\d.]+)", d)])


def test_the_console_renders_in_chromium(server, tmp_path):
    from playwright.sync_api import sync_playwright

    executable = find_chromium()
    for _ in range(3):  # traffic for the last minute's table
        response = httpx.post(f"{server}/classify", headers=AUTH, json={"model": "linear", "instances": [[1, 2, 3]]})
        assert response.status_code == 200
    requested: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        try:
            context = browser.new_context(extra_http_headers=AUTH, viewport={"width": 1280, "height": 900})
            page = context.new_page()
            page.on("request", lambda request: requested.append(request.url))
            response = page.goto(f"{server}/ui", wait_until="load")
            assert response is not None and response.status == 200
            assert page.title() == "monoserve console"
            assert page.locator("section.model").count() == 4

            # the smoother's kernel: one path through its 9 taps, drawn with a size on the page
            kernel = page.locator('[data-model="smoother"] svg[data-figure="kernel"] path.kernel')
            assert kernel.count() == 1
            assert len(path_points(kernel.get_attribute("d"))) == 9
            box = kernel.bounding_box()
            assert box is not None and box["width"] > 100 and box["height"] > 20

            # one response curve per feature of each classifier's serving version, monotone where proven
            for model, features in (("classifier", SPAM_FEATURES), ("hidden", HIDDEN_FEATURES), ("linear", LINEAR_FEATURES)):
                serving = page.locator(f'[data-model="{model}"] article[data-state="serving"]')
                charts = serving.locator('svg[data-figure="curve"]')
                assert charts.count() == len(features)
                assert [charts.nth(i).get_attribute("data-feature") for i in range(len(features))] == features
                for i in range(len(features)):
                    curve = charts.nth(i).locator("path.curve")
                    points = path_points(curve.get_attribute("d"))
                    assert len(points) == 41
                    assert curve.bounding_box() is not None
                    direction = charts.nth(i).get_attribute("data-direction")
                    rises = np.diff(-points[:, 1])  # SVG y grows downward
                    if direction == "increasing":
                        assert np.all(rises >= -1e-9), (model, features[i])
                    elif direction == "decreasing":
                        assert np.all(rises <= 1e-9), (model, features[i])
            assert [page.locator('[data-model="hidden"] svg[data-figure="curve"]').nth(i).get_attribute("data-direction")
                    for i in range(4)] == HIDDEN_DIRECTIONS

            # proof status: hidden v1 serves (passed), v2 was refused at its constraints step
            hidden = page.locator('[data-model="hidden"]')
            passed = hidden.locator('article[data-version="1"] .proof-status')
            refused = hidden.locator('article[data-version="2"] .proof-status')
            assert passed.get_attribute("data-ok") == "true" and passed.inner_text() == "passed"
            assert refused.get_attribute("data-ok") == "false" and "constraints" in refused.inner_text()
            assert page.locator('[data-model="hidden"] article[data-version="2"]').get_attribute("data-state") == "refused"
            assert page.locator('[data-model="linear"] table.thresholds').inner_text().count("0.5") == 1

            # the last minute's traffic, from the service's own metrics
            traffic = page.locator("#traffic table.traffic").inner_text()
            row = next(line for line in traffic.splitlines() if line.startswith("/classify"))
            assert int(row.split("\t")[1]) >= 3, row

            screenshot = tmp_path / "console.png"
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    assert screenshot.stat().st_size > 20_000 and screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert set(requested) == {f"{server}/ui"}, requested  # nothing fetched but the page itself
    # pytest keeps only its last few tmp_path roots (shared by every run on the machine): keep a copy
    kept = Path(os.environ.get("MONOSERVE_TEST_OUTPUT", ROOT / "build" / "test-output")) / "console.png"
    kept.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(screenshot, kept)
