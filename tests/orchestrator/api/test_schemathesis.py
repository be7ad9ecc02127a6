"""Property-based tests of every operation of the OpenAPI schema against a real server:
generated requests, valid and invalid, never get a 5xx, and responses match the schema."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from api_support import TOKEN, LiveServer, start_server, stop_server
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
)
from sqlalchemy.orm import sessionmaker

from mlafleet.orchestrator.api.app import create_app
from mlafleet.orchestrator.config import Settings
from mlafleet.orchestrator.db.session import upgrade as upgrade_db

# the operations, read from the app's schema at collection time (no database needed for it)
_OPENAPI = create_app(Settings(db_url="sqlite://"), session_factory=sessionmaker()).openapi()
OPERATIONS = [
    (method.upper(), path)
    for path, item in _OPENAPI["paths"].items()
    for method in item
    if path not in ("/metrics",)  # text/plain, covered in test_read_api
]
# negative (invalid) requests only exist for operations that take parameters or a body
CASES = [
    (method, path, mode)
    for method, path in OPERATIONS
    for mode in GenerationMode
    if mode is GenerationMode.POSITIVE
    or _OPENAPI["paths"][path][method.lower()].get("parameters")
    or _OPENAPI["paths"][path][method.lower()].get("requestBody")
]
MAX_EXAMPLES = {GenerationMode.POSITIVE: 15, GenerationMode.NEGATIVE: 10}


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    url = f"sqlite:///{tmp_path_factory.mktemp('st') / 'mlafleet.db'}"
    upgrade_db(url)
    server = start_server(Settings(db_url=url, api_token=TOKEN))
    yield server
    stop_server(server)


@pytest.fixture(scope="module")
def api_schema(live: LiveServer) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{live.url}/openapi.json")


def test_every_operation_is_covered() -> None:
    assert ("POST", "/v1/jobs") in OPERATIONS
    assert ("GET", "/v1/configs/{kernel}") in OPERATIONS
    assert len(OPERATIONS) >= 10


@pytest.mark.parametrize(
    ("method", "path", "mode"), CASES, ids=[f"{m} {p} {g.value}" for m, p, g in CASES]
)
def test_no_server_errors(
    api_schema: schemathesis.BaseSchema,
    live: LiveServer,
    method: str,
    path: str,
    mode: GenerationMode,
) -> None:
    operation = api_schema[path][method]
    strategy = operation.as_strategy(generation_mode=mode)
    seen: list[int] = []

    @given(case=strategy)
    @settings(
        max_examples=MAX_EXAMPLES[mode],
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: schemathesis.Case) -> None:
        headers = {**(case.headers or {}), "Authorization": f"Bearer {TOKEN}"}
        response = case.call(base_url=live.url, headers=headers, timeout=30)
        seen.append(response.status_code)
        checks = [not_a_server_error]
        if mode is GenerationMode.POSITIVE:
            checks += [response_schema_conformance, content_type_conformance]
        case.validate_response(response, checks=checks, headers=headers)

    run()
    assert seen, f"no request was generated for {method} {path} ({mode.value})"
    assert max(seen) < 500
