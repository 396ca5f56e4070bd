"""What issue 27 made one: the export's tail (finalize_staged) and the bearer-token parser. Each has
one place in the code, and both of its users go through it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import SecretStr

from service.base.errors import UnauthorizedError
from service.pipeline.control import bearer_token, check_control_access
from service.pipeline.endpoint import check_authorization
from service.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("call", "expected"), [
    (r"publish\.publish\(", ["finalize.py"]),
    (r"\bsign_version\(", ["cli.py", "finalize.py"]),  # cli.py: `monoserve sign`, a version published before
    (r"\bprove_version\(", ["finalize.py"]),
    (r"card\.render_card\(", ["finalize.py"]),
])
def test_every_export_path_ends_in_the_one_finalize_step(call, expected):
    """Publishing, signing, proving and the card of an export happen in export/finalize.py only: the
    checkpoint path (export.core) and the user-model paths (export.byom) both call finalize_staged."""
    callers = sorted(path.name for path in (ROOT / "export").glob("*.py") if re.search(call, path.read_text()))
    assert callers == expected
    for path in ("core.py", "byom.py"):
        assert "finalize_staged(" in (ROOT / "export" / path).read_text()


@pytest.mark.parametrize("header", ["Bearer s3cret", "bearer s3cret", "BEARER   s3cret  "])
def test_one_bearer_parser_reads_the_api_and_the_admin_token_alike(header):
    assert bearer_token(header, "missing") == b"s3cret"
    check_authorization(Settings(api_token=SecretStr("s3cret")), header)  # no exception: accepted
    check_control_access(Settings(admin_token=SecretStr("s3cret")), header, None)


@pytest.mark.parametrize("header", [None, "", "Basic s3cret", "Bearer", "Bearer    ", "Token s3cret"])
def test_a_missing_token_is_a_401_for_both(header):
    with pytest.raises(UnauthorizedError) as api:
        check_authorization(Settings(api_token=SecretStr("s3cret")), header)
    with pytest.raises(UnauthorizedError) as control:
        check_control_access(Settings(admin_token=SecretStr("s3cret")), header, None)
    assert "missing API token" in api.value.message and "needs 'Authorization: Bearer" in control.value.message
    assert api.value.headers == control.value.headers == {"WWW-Authenticate": "Bearer"}
