"""Hostile input against a real server (uvicorn on 127.0.0.1): every refusal is a 4xx with a
message a person can act on (asserted), never a 5xx, and nothing is stored that should not be
(every table's rows counted before and after, with SQL).

- a missing, wrong or malformed bearer token on every operation that changes data;
- oversized, malformed and wrongly typed bodies;
- job specs with absurd grids and budgets (every problem listed at once);
- strings that look like SQL, in the body, the query and the path: stored as text, tables intact
  (SQLite and PostgreSQL);
- schemathesis over the whole OpenAPI schema, without a token (every change refused) and with
  one (no 5xx).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from reliability_support import LiveApi, row_counts, start_api, stop_api, tiny_job
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from mlafleet.orchestrator.config import Settings
from mlafleet.orchestrator.db.session import upgrade as upgrade_db

TOKEN = "reliability-token"
MISSING = (
    "this request changes data and needs the header 'Authorization: Bearer <token>' with the "
    "server's MLAFLEET_API_TOKEN"
)
WRONG = "bearer token not accepted; use the MLAFLEET_API_TOKEN the server was started with"
SQLISH = "x'; DROP TABLE jobs; --"


@pytest.fixture
def db(sqlite_url: str) -> str:
    upgrade_db(sqlite_url)
    return sqlite_url


@pytest.fixture
def api(db: str) -> Iterator[LiveApi]:
    live = start_api(Settings(db_url=db, api_token=TOKEN, max_workloads_per_job=64))
    yield live
    stop_api(live)


def _client(api: LiveApi, token: str | None = None, **headers: str) -> httpx.Client:
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.Client(base_url=api.url, headers=headers, timeout=30)


def _assert_refused(reply: httpx.Response, status: int, *texts: str) -> dict[str, Any]:
    assert reply.status_code == status, (reply.status_code, reply.text)
    body = reply.json()
    message = body["detail"] + " | " + " | ".join(body.get("problems", []))
    for text in texts:
        assert text in message, (text, message)
    return body


def test_missing_wrong_or_malformed_tokens_are_refused(api: LiveApi, db: str) -> None:
    before = row_counts(db)
    with _client(api) as anon:
        _assert_refused(anon.post("/v1/jobs", json=tiny_job()), 401, MISSING)
        _assert_refused(anon.delete("/v1/jobs/1"), 401, MISSING)
    with _client(api, "not-the-token") as wrong:
        _assert_refused(wrong.post("/v1/jobs", json=tiny_job()), 401, WRONG)
        _assert_refused(wrong.delete("/v1/jobs/1"), 401, WRONG)
    with _client(api, TOKEN[:-1]) as prefix:  # a prefix of the real token is not it
        _assert_refused(prefix.post("/v1/jobs", json=tiny_job()), 401, WRONG)
    for header in (f"Basic {TOKEN}", TOKEN, "Bearer", f"bearer  {TOKEN} extra"):
        with _client(api, Authorization=header) as odd:
            reply = odd.post("/v1/jobs", json=tiny_job())
            assert reply.status_code == 401, (header, reply.text)
            assert reply.headers["www-authenticate"] == "Bearer"
            detail = reply.json()["detail"]
            assert detail == WRONG or detail.startswith(MISSING), (header, detail)
    assert row_counts(db) == before
    with _client(api, TOKEN) as ok:  # and the right token works
        assert ok.post("/v1/jobs", json=tiny_job()).status_code == 201
    assert row_counts(db)["jobs"] == before["jobs"] + 1


def _absurd(**workloads: Any) -> dict[str, Any]:
    spec = tiny_job("absurd")
    spec["workloads"] = {**spec["workloads"], **workloads}
    return spec


@pytest.mark.parametrize(
    ("body", "texts"),
    [
        pytest.param(
            _absurd(batch=list(range(1, 101)), seqlen=list(range(1, 101)), heads=[1, 2, 4]),
            ["30000 workloads", "MLAFLEET_MAX_WORKLOADS_PER_JOB"],
            id="grid-of-30000",
        ),
        pytest.param(_absurd(batch=[10**12]), ["workloads.batch.0"], id="batch-1e12"),
        pytest.param(_absurd(seqlen=[-5]), ["workloads.seqlen.0"], id="negative-seqlen"),
        pytest.param(
            _absurd(page_size=[3]), ["expected powers of two from 1 to 256, got 3"], id="page-3"
        ),
        pytest.param(_absurd(batch=[]), ["workloads.batch"], id="empty-axis"),
        pytest.param(_absurd(dtype=["fp64"]), ["workloads.dtype.0"], id="dtype-fp64"),
        pytest.param(_absurd(s_q=[10**6]), ["workloads.s_q.0"], id="s_q-1e6"),
        pytest.param(
            {**tiny_job(), "budget": {"trials": 10**9}}, ["budget.trials"], id="budget-1e9-trials"
        ),
        pytest.param(
            {**tiny_job(), "budget": {"minutes": -1}}, ["budget.minutes"], id="negative-minutes"
        ),
        pytest.param(
            {**tiny_job(), "kernel": "mla_decode; rm -rf /"}, ["kernel"], id="kernel-shell"
        ),
        pytest.param({**tiny_job(), "name": "n" * 10_000}, ["name"], id="name-10k"),
        pytest.param({**tiny_job(), "archs": ["x" * 500]}, ["archs"], id="arch-500-chars"),
        pytest.param({**tiny_job(), "surprise": 1}, ["surprise"], id="unknown-field"),
    ],
)
def test_absurd_job_specs_are_refused(
    api: LiveApi, db: str, body: dict[str, Any], texts: list[str]
) -> None:
    before = row_counts(db)
    with _client(api, TOKEN) as c:
        _assert_refused(c.post("/v1/jobs", json=body), 422, *texts)
    assert row_counts(db) == before


def test_every_problem_of_a_spec_is_listed_at_once(api: LiveApi, db: str) -> None:
    body = _absurd(batch=[0], seqlen=[-1], page_size=[3])
    body.update(budget={"trials": 0}, strategy="psychic")
    with _client(api, TOKEN) as c:
        got = _assert_refused(c.post("/v1/jobs", json=body), 422)
    fields = " ".join(got["problems"])
    for name in (
        "workloads.batch",
        "workloads.seqlen",
        "workloads.page_size",
        "budget.trials",
        "strategy",
    ):
        assert name in fields, (name, got["problems"])
    assert row_counts(db)["jobs"] == 0


@pytest.mark.parametrize(
    ("body", "ctype", "status", "text"),
    [
        (b"{", "application/json", 422, "body: not valid JSON"),
        (b"null", "application/json", 422, "expected a mapping"),
        (b'"just a string"', "application/json", 422, "expected a mapping"),
        (b"\xff\xfe\x00", "application/json", 422, "body: not valid JSON"),
        (b"[" * 100_000, "application/json", 422, "body: not valid JSON"),
        (b"kind: [", "application/yaml", 422, "body: not valid YAML"),
        (b"!!python/object/apply:os.system ['true']", "application/yaml", 422, "not valid YAML"),
        (b"<job/>", "application/xml", 415, "is not accepted; send the job spec as"),
        (
            json.dumps({**tiny_job(), "name": "a\x00b"}).encode(),
            "application/json",
            422,
            "NUL characters",
        ),
    ],
)
def test_malformed_bodies_are_refused(
    api: LiveApi, db: str, body: bytes, ctype: str, status: int, text: str
) -> None:
    before = row_counts(db)
    with _client(api, TOKEN) as c:
        reply = c.post("/v1/jobs", content=body, headers={"Content-Type": ctype})
    _assert_refused(reply, status, text)
    assert row_counts(db) == before


def test_oversized_bodies_are_refused_before_parsing(api: LiveApi, db: str) -> None:
    before = row_counts(db)
    big = json.dumps({**tiny_job(), "name": "x" * (3 << 20)}).encode()
    with _client(api, TOKEN) as c:
        reply = c.post("/v1/jobs", content=big, headers={"Content-Type": "application/json"})
        _assert_refused(reply, 413, "over the limit of 1048576 bytes", "MLAFLEET_MAX_BODY_BYTES")

        def chunks() -> Iterator[bytes]:
            for _ in range(64):
                yield b" " * 65536  # 4 MiB without a Content-Length

        reply = c.post("/v1/jobs", content=chunks(), headers={"Content-Type": "application/json"})
        _assert_refused(reply, 413, "over the limit of 1048576 bytes")
        # an oversized request does not poison the connection or the server
        assert c.get("/healthz").status_code == 200
    assert row_counts(db) == before


def _sql_strings_round_trip(api: LiveApi, url: str) -> None:
    before = row_counts(url)
    with _client(api, TOKEN) as c:
        reply = c.post("/v1/jobs", json={**tiny_job(), "name": SQLISH})
        assert reply.status_code == 201, reply.text
        job_id = reply.json()["id"]
        assert c.get(f"/v1/jobs/{job_id}").json()["name"] == SQLISH
        for path, params in (
            ("/v1/jobs", {"status": "queued' OR '1'='1"}),
            ("/v1/results", {"arch": "sm_90'; DROP TABLE trials; --"}),
            (
                "/v1/configs/mla_decode",
                {"arch": "x' UNION SELECT * FROM jobs --", "batch": 1, "seqlen": 64, "heads": 16},
            ),
            ("/v1/bundle", {"arch": "sm_90; DELETE FROM recommendations"}),
        ):
            reply = c.get(path, params=params)
            assert 400 <= reply.status_code < 500, (path, reply.status_code, reply.text)
            assert reply.json()["detail"], reply.text
        for path in ("/v1/jobs/1;DROP TABLE jobs", "/v1/jobs/1%27%20OR%201=1"):
            _assert_refused(c.get(path), 422, "path.job_id")
            _assert_refused(c.delete(path), 422, "path.job_id")
    after = row_counts(url)
    assert set(after) == set(before)  # every table still there
    assert after == {**before, "jobs": before["jobs"] + 1}
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            names = conn.execute(sa.text("SELECT name FROM jobs")).scalars().all()
    finally:
        engine.dispose()
    assert names == [SQLISH]


def test_sql_looking_strings_are_plain_text_on_sqlite(api: LiveApi, db: str) -> None:
    _sql_strings_round_trip(api, db)


@pytest.mark.postgres
def test_sql_looking_strings_are_plain_text_on_postgres(private_pg: Any) -> None:
    upgrade_db(private_pg.url)
    live = start_api(Settings(db_url=private_pg.url, api_token=TOKEN))
    try:
        _sql_strings_round_trip(live, private_pg.url)
    finally:
        stop_api(live)


def _operations(schema: Any) -> list[Any]:
    return [r.ok() for r in schema.get_all_operations() if r.ok().path != "/metrics"]


def _fuzz(operation: Any, mode: GenerationMode, examples: int, call: Any) -> None:
    """Run ``call(case)`` on ``examples`` generated cases of ``operation`` (reproducible)."""

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: schemathesis.Case) -> None:
        call(case)

    run()


def test_schemathesis_without_a_token_changes_nothing(api: LiveApi, db: str) -> None:
    """Generated requests of every operation, no token: reads answer, every change is 401."""
    schema = schemathesis.openapi.from_url(f"{api.url}/openapi.json")
    before = row_counts(db)
    statuses: dict[str, set[int]] = {}
    for operation in _operations(schema):
        key = f"{operation.method.upper()} {operation.path}"

        def call(case: schemathesis.Case, key: str = key) -> None:
            headers = {k: v for k, v in (case.headers or {}).items() if k != "Authorization"}
            response = case.call(base_url=api.url, headers=headers, timeout=30)
            statuses.setdefault(key, set()).add(response.status_code)
            case.validate_response(response, checks=[not_a_server_error])

        _fuzz(operation, GenerationMode.POSITIVE, 5, call)
    changes = {k: v for k, v in statuses.items() if k.split()[0] in ("POST", "DELETE")}
    assert changes
    assert all(v == {401} for v in changes.values()), changes
    assert max(max(v) for v in statuses.values()) < 500, statuses
    assert row_counts(db) == before


def test_schemathesis_with_the_token_never_gets_a_5xx(api: LiveApi) -> None:
    schema = schemathesis.openapi.from_url(f"{api.url}/openapi.json")
    seen: list[int] = []

    def call(case: schemathesis.Case) -> None:
        headers = {**(case.headers or {}), "Authorization": f"Bearer {TOKEN}"}
        response = case.call(base_url=api.url, headers=headers, timeout=30)
        seen.append(response.status_code)
        case.validate_response(response, checks=[not_a_server_error], headers=headers)

    for operation in _operations(schema):
        _fuzz(operation, GenerationMode.POSITIVE, 4, call)
        with contextlib.suppress(Unsatisfiable):  # an operation without inputs has no invalid one
            _fuzz(operation, GenerationMode.NEGATIVE, 4, call)
    assert len(seen) >= 20
    assert max(seen) < 500
