"""``/v1/jobs`` over real HTTP: submit (JSON and YAML), list, get, tasks, cancel; auth."""

from __future__ import annotations

import httpx
import pytest
import yaml
from api_support import TOKEN, LiveServer

SPEC = {
    "kind": "tune",
    "name": "decode-smoke",
    "kernel": "mla_decode",
    "workloads": {"batch": [1, 4], "seqlen": [128], "heads": [16], "dtype": ["fp16"]},
    "archs": ["cpu-interpreter"],
    "strategy": "exhaustive",
    "budget": {"trials": 4},
}


def test_submit_json_then_get_list_cancel(authed: httpx.Client, client: httpx.Client) -> None:
    r = authed.post("/v1/jobs", json=SPEC)
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["name"] == "decode-smoke"
    assert job["status"] == "queued"
    assert job["spec"]["workloads"]["batch"] == [1, 4]
    job_id = job["id"]

    got = client.get(f"/v1/jobs/{job_id}")
    assert got.status_code == 200
    assert got.json()["id"] == job_id

    page = client.get("/v1/jobs", params={"status": "queued", "limit": 10}).json()
    assert page["total"] == 1
    assert [j["id"] for j in page["items"]] == [job_id]
    assert client.get("/v1/jobs", params={"status": "running"}).json()["items"] == []

    tasks = client.get(f"/v1/jobs/{job_id}/tasks")
    assert tasks.status_code == 200
    assert tasks.json()["items"] == []  # the runner has not expanded it

    cancelled = authed.delete(f"/v1/jobs/{job_id}")
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    again = authed.delete(f"/v1/jobs/{job_id}")
    assert again.status_code == 409
    assert again.json()["detail"] == f"job {job_id} already cancelled; there is nothing to cancel"


def test_submit_yaml(authed: httpx.Client) -> None:
    r = authed.post(
        "/v1/jobs",
        content=yaml.safe_dump(SPEC).encode(),
        headers={"Content-Type": "application/yaml"},
    )
    assert r.status_code == 201, r.text
    assert r.json()["kernel"] == "mla_decode"


def test_invalid_spec_lists_every_problem(authed: httpx.Client) -> None:
    bad = {
        "kind": "tune",
        "name": "",
        "kernel": "mla_foo",
        "workloads": {"batch": [0], "seqlen": [128], "heads": [16], "page_size": [3]},
        "colour": "red",
    }
    r = authed.post("/v1/jobs", json=bad)
    assert r.status_code == 422
    body = r.json()
    problems = body["problems"]
    assert "colour: unknown field" in problems[0]
    joined = "\n".join(problems)
    for field in ("name", "kernel", "workloads.batch.0", "workloads.page_size"):
        assert f"\n{field}:" in "\n" + joined, (field, problems)
    assert body["detail"].startswith(f"invalid job spec ({len(problems)} problems): ")


def test_grid_of_a_million_workloads_is_refused(authed: httpx.Client) -> None:
    spec = dict(SPEC)
    spec["workloads"] = {
        "batch": list(range(1, 101)),
        "seqlen": list(range(1, 101)),
        "heads": list(range(1, 101)),
    }
    r = authed.post("/v1/jobs", json=spec)
    assert r.status_code == 422
    assert r.json()["problems"] == [
        "workloads: the grid has 1000000 workloads, more than the limit of 4096 "
        "(MLAFLEET_MAX_WORKLOADS_PER_JOB); split the job or shrink the grid"
    ]


def test_unknown_job_is_404_with_hint(client: httpx.Client, authed: httpx.Client) -> None:
    for r in (client.get("/v1/jobs/999"), authed.delete("/v1/jobs/999")):
        assert r.status_code == 404
        assert r.json() == {
            "detail": "job 999 not found; list jobs with `mlafleet jobs`",
            "problems": [],
        }


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("/v1/jobs/0", "path.job_id: Input should be greater than or equal to 1 (got '0')"),
        (
            "/v1/jobs/abc",
            "path.job_id: Input should be a valid integer, unable to parse string "
            "as an integer (got 'abc')",
        ),
        (
            "/v1/jobs?limit=501",
            "query.limit: Input should be less than or equal to 500 (got '501')",
        ),
        (
            "/v1/jobs?status=done",
            "query.status: Input should be 'queued', 'running', "
            "'cancelling', 'cancelled', 'succeeded' or 'failed' (got 'done')",
        ),
    ],
)
def test_bad_parameters_are_422_with_exact_detail(
    client: httpx.Client, path: str, problem: str
) -> None:
    r = client.get(path)
    assert r.status_code == 422
    assert r.json() == {"detail": f"invalid request: {problem}", "problems": [problem]}


def test_changes_need_the_token(client: httpx.Client, server: LiveServer) -> None:
    r = client.post("/v1/jobs", json=SPEC)
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    assert r.json()["detail"].startswith(
        "this request changes data and needs the header 'Authorization: Bearer <token>'"
    )
    with server.client(token="wrong") as wrong:
        r = wrong.post("/v1/jobs", json=SPEC)
        assert r.status_code == 401
        assert r.json()["detail"] == (
            "bearer token not accepted; use the MLAFLEET_API_TOKEN the server was started with"
        )
        assert wrong.delete("/v1/jobs/1").status_code == 401
    # an invalid body without a token is still a 401: auth is checked first
    assert (
        client.post(
            "/v1/jobs", content=b"{", headers={"Content-Type": "application/json"}
        ).status_code
        == 401
    )
    # reads are open
    assert client.get("/v1/jobs").status_code == 200
    with server.client(token=TOKEN) as ok:
        assert ok.post("/v1/jobs", json=SPEC).status_code == 201


def test_without_a_configured_token_changes_are_open(db_url: str, make_server) -> None:  # type: ignore[no-untyped-def]
    live = make_server(db_url)
    with live.client() as c:
        assert c.post("/v1/jobs", json=SPEC).status_code == 201
