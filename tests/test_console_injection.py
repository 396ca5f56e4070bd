"""GET /ui against a hostile publisher's names: a model whose feature names, labels and refusal
reason are HTML (`<script>`, an `<img onerror>`, a closing quote) renders them as text, never as
markup (service.edge.ui escapes everything a publisher wrote), and the page carries no script."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient

from contract.manifest import Manifest
from service.app import create_app
from service.settings import Settings
from service_fixtures import copy_version, fresh_repo

SCRIPT = "<script>alert(1)</script>"
IMAGE = '"><img src=x onerror=alert(2)>'


def hostile_names(version_dir) -> None:
    """The classifier's feature names and its label rewritten as HTML (the manifest is not a checked
    file: its names are whatever the publisher wrote), with ranges so its curves are drawn."""
    data = json.loads((version_dir / "manifest.json").read_text())
    features = data["classifier"]["features"]
    renamed = {features[0]["name"]: SCRIPT, features[1]["name"]: IMAGE, data["classifier"]["labels"][0]: f"<b>{SCRIPT}</b>"}

    def rename(value):  # every mention of a name (features, labels, monotone_features...)
        if isinstance(value, dict):
            return {renamed.get(k, k): rename(v) for k, v in value.items()}
        if isinstance(value, list):
            return [rename(v) for v in value]
        return renamed.get(value, value) if isinstance(value, str) else value

    data = rename(data)
    data["feature_ranges"] = {f["name"]: {"low": -1.0, "high": 1.0} for f in data["classifier"]["features"]}
    (version_dir / "manifest.json").write_text(json.dumps(data))
    Manifest.read(version_dir)


def test_the_console_escapes_every_name_a_publisher_wrote(tmp_path):
    repo = fresh_repo(tmp_path, ("classifier",))
    hostile_names(repo / "classifier" / "1")
    refused = copy_version(repo, "classifier", 1, 2)
    (refused / "model.onnx").write_bytes(b"<script>alert(3)</script>")  # refused: its reason quotes no markup
    settings = Settings(repo=repo, device="cpu", poll_interval_s=0, cpu_threads=1, api_token="s3cret")
    with TestClient(create_app(settings)) as client:
        assert client.get("/ui").status_code == 401
        response = client.get("/ui", headers={"Authorization": "Bearer s3cret"})
    assert response.status_code == 200, response.text
    page = response.text
    assert 'data-figure="curve"' in page  # the hostile names were drawn, not skipped
    assert "<script" not in page.lower() and "<img" not in page.lower() and "<b>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "onerror=alert(2)" in page and '&quot;&gt;&lt;img' in page  # as text, the quote escaped too
