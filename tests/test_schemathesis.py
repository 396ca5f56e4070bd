"""schemathesis against the service's own OpenAPI document, served by a real `monoserve serve`
process (issue 10, item 6): requests generated from every operation's schema, a bounded number per
operation; no answer may be a 5xx, and every answer must match the document (status codes,
content types, bodies)."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import checks as st_checks

from service_fixtures import fresh_repo
from test_service_e2e import running_server

MAX_EXAMPLES = 25  # per operation: bounded, so `make test` stays short


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    repo = fresh_repo(tmp_path_factory.mktemp("schemathesis"))
    with running_server(repo, env={"MONOSERVE_DEFAULT_SMOOTHER": "smoother"}) as running:
        yield running.base
    assert "Traceback" not in running.output, running.output[-3000:]  # nothing the fuzzer sent was our bug


CHECKS = [
    st_checks.not_a_server_error,
    st_checks.status_code_conformance,
    st_checks.content_type_conformance,
    st_checks.response_schema_conformance,
]


def test_every_operation_answers_within_its_schema_and_never_5xx(server):
    # The operations are walked here (schemathesis.pytest.from_fixture does not run under this pytest).
    api_schema = schemathesis.openapi.from_url(f"{server}/openapi.json")
    operations = [result.ok() for result in api_schema.get_all_operations()]
    labels = {operation.label for operation in operations}
    assert {"POST /smooth", "POST /classify"} <= labels, labels
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
                  database=None)
        def check(case) -> None:
            case.call_and_validate(checks=CHECKS, timeout=30)

        try:
            check()
        except Exception as exc:
            raise AssertionError(f"{operation.label}: {exc}") from exc
