"""docs/manifest.schema.json is manifest.json's JSON Schema generated from contract.manifest.Manifest, and current."""

from __future__ import annotations

import json
from pathlib import Path

from contract.manifest import SCHEMA_DOC, json_schema

ROOT = Path(__file__).resolve().parents[1]


def test_published_schema_is_current():
    published = (ROOT / SCHEMA_DOC).read_text(encoding="utf-8")
    assert published == json_schema(), f"regenerate it: python -m contract.manifest > {SCHEMA_DOC}"


def test_published_schema_validates_a_real_manifest():
    import jsonschema

    from service_fixtures import reference_repo

    schema = json.loads((ROOT / SCHEMA_DOC).read_text(encoding="utf-8"))

    for path in sorted(reference_repo().glob("*/*/manifest.json")):
        jsonschema.validate(json.loads(path.read_text(encoding="utf-8")), schema)
    bad = json.loads(next(reference_repo().glob("*/*/manifest.json")).read_text(encoding="utf-8"))
    bad["unexpected"] = 1
    try:
        jsonschema.validate(bad, schema)
    except jsonschema.ValidationError as exc:
        assert "unexpected" in str(exc)
    else:
        raise AssertionError("an unknown top-level key must break the schema (extra='forbid')")
