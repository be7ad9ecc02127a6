"""The API on the real PostgreSQL server (a fresh database per test, dropped afterwards)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from api_support import (
    DECODE_PROBLEM,
    DEFAULT,
    TOKEN,
    TUNED,
    LiveServer,
    fingerprint,
    seed_trials,
    trial_result,
)

from mlafleet.orchestrator.db.session import upgrade as upgrade_db

SPEC = {
    "name": "pg-job",
    "kernel": "mla_decode",
    "workloads": {"batch": [1, 2], "seqlen": [64], "heads": [16]},
}


@pytest.mark.postgres
def test_api_on_postgres(pg_url: str, make_server: Callable[..., LiveServer]) -> None:
    upgrade_db(pg_url)
    device = fingerprint()
    seed_trials(
        pg_url,
        [
            trial_result(
                problem=DECODE_PROBLEM,
                config=DEFAULT,
                median_us=20.0,
                device=device,
                is_default=True,
            ),
            trial_result(problem=DECODE_PROBLEM, config=TUNED, median_us=10.0, device=device),
        ],
    )
    live = make_server(pg_url, api_token=TOKEN)
    with live.client(token=TOKEN) as c:
        assert c.get("/healthz").json()["database"] == "ok"
        created = c.post("/v1/jobs", json=SPEC)
        assert created.status_code == 201, created.text
        job_id = created.json()["id"]
        assert c.get(f"/v1/jobs/{job_id}").json()["name"] == "pg-job"
        # the largest id the API accepts fits PostgreSQL's 32-bit INTEGER: 404, not a 5xx
        r = c.get("/v1/jobs/2147483647")
        assert r.status_code == 404
        assert r.json()["detail"] == "job 2147483647 not found; list jobs with `mlafleet jobs`"
        assert c.get("/v1/jobs/2147483648").status_code == 422
        # PostgreSQL refuses NUL in text: the API refuses it first, with a reason
        nul = c.post("/v1/jobs", json={**SPEC, "name": "a\x00b"})
        assert nul.status_code == 422
        lookup = c.get(
            "/v1/configs/mla_decode",
            params={"arch": "sm_90", "batch": 64, "seqlen": 4096, "heads": 16},
        ).json()
        assert (lookup["level"], lookup["config"]) == ("exact", TUNED)
        bundle = c.get("/v1/bundle").json()
        assert [e["config"] for e in bundle["entries"]] == [TUNED]
        assert c.get("/v1/results").json()["total"] == 2
        assert [a["arch"] for a in c.get("/v1/archs").json()] == ["sm_90"]
        assert c.delete(f"/v1/jobs/{job_id}").json()["status"] == "cancelled"
