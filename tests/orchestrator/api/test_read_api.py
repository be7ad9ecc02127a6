"""Read routes over real HTTP: configs lookup, bundle, recommendations, results, archs, health,
metrics, and the error form of unknown routes and methods."""

from __future__ import annotations

import time

import httpx
import pytest
from api_support import DECODE_PROBLEM, SOFTWARE, TUNED, fingerprint, seed_trials, trial_result

from mlafleet.kernels.bundle import ConfigBundle
from mlafleet.kernels.configs import DecodeProblem, DeviceLimits
from mlafleet.kernels.decode_tuning import default_decode_config

LOOKUP = {"arch": "sm_90", "batch": 64, "seqlen": 4096, "heads": 16, "dtype": "bf16"}


def test_config_exact_bucket_with_provenance(seeded: str, client: httpx.Client) -> None:
    r = client.get("/v1/configs/mla_decode", params={**LOOKUP, "batch": 40, "seqlen": 3000})
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["level"] == "exact"
    assert got["config"] == TUNED
    assert got["bucket"] == {
        "batch": 64,
        "seqlen": 4096,
        "heads": 16,
        "s_q": 1,
        "dtype": "bf16",
        "page_size": 64,
    }
    assert got["median_us"] == 10.0
    assert got["default_median_us"] == 20.0
    assert got["speedup_vs_default"] == 2.0
    assert got["validated"] is True
    assert got["source_arch"] == "sm_90"
    assert got["software"]["triton"] == SOFTWARE.triton
    assert got["recommendation"]["gpu_name"] == "NVIDIA H200"
    assert got["recommendation"]["trial_id"] >= 1
    problem = DecodeProblem(batch=40, s_q=1, h_q=16, seqlen=3000, page_size=64, dtype="bf16")
    assert (
        got["default_config"]
        == default_decode_config(problem, DeviceLimits(arch="sm_90")).as_dict()
    )


def test_config_fallback_levels(seeded: str, client: httpx.Client) -> None:
    def level(**kw: object) -> str:
        r = client.get("/v1/configs/mla_decode", params={**LOOKUP, **kw})
        assert r.status_code == 200, r.text
        return str(r.json()["level"])

    assert level(batch=128) == "nearest_bucket"
    assert level(heads=128) == "arch_winner"
    assert level(arch="sm_90a") == "related_arch"
    assert level(triton="3.7.0") == "exact_other_software"
    assert level(triton=SOFTWARE.triton, driver=SOFTWARE.driver) == "exact"
    default = client.get("/v1/configs/mla_decode", params={**LOOKUP, "arch": "sm_80"}).json()
    assert default["level"] == "default"
    assert default["config"] == default["default_config"]
    assert default["recommendation"] is None


@pytest.mark.parametrize(
    ("params", "problem"),
    [
        ({"batch": 0}, "query.batch: Input should be greater than or equal to 1 (got '0')"),
        (
            {"page_size": 3},
            "query.page_size: expected a power of two from 1 to 256, e.g. 4 (got 3)",
        ),
        (
            {"arch": "sm_90'; DROP TABLE jobs;--"},
            "query.arch: String should match pattern '^[A-Za-z0-9_.\\-]{1,64}$' "
            '(got "sm_90\'; DROP TABLE jobs;--")',
        ),
        (
            {"dtype": "int8"},
            "query.dtype: Input should be 'fp16', 'bf16', 'fp32', 'fp8_e4m3' or "
            "'fp8_e4m3_qkv' (got 'int8')",
        ),
    ],
)
def test_config_bad_query_is_422(
    client: httpx.Client, params: dict[str, object], problem: str
) -> None:
    r = client.get("/v1/configs/mla_decode", params={**LOOKUP, **params})
    assert r.status_code == 422
    assert r.json() == {"detail": f"invalid request: {problem}", "problems": [problem]}


def test_config_missing_params_and_unknown_kernel(client: httpx.Client) -> None:
    r = client.get("/v1/configs/mla_decode", params={"arch": "sm_90"})
    assert r.status_code == 422
    assert r.json()["problems"] == [
        "query.batch: Field required",
        "query.seqlen: Field required",
        "query.heads: Field required",
    ]
    assert r.json()["detail"] == "invalid request: 3 problems; first: query.batch: Field required"
    r = client.get("/v1/configs/mla_foo", params=LOOKUP)
    assert r.status_code == 422
    assert r.json()["problems"] == [
        "path.kernel: Input should be 'mla_decode' or 'mla_prefill' (got 'mla_foo')"
    ]


def test_prefill_lookup_refuses_decode_axes(client: httpx.Client) -> None:
    r = client.get("/v1/configs/mla_prefill", params={**LOOKUP, "s_q": 2})
    assert r.status_code == 422
    assert r.json()["problems"] == ["query.s_q: mla_prefill has no s_q axis; omit it (got 2)"]


@pytest.mark.parametrize(
    ("dtype", "fields"),
    [
        ("fp8_e4m3", {"kv_dtype": "fp8_e4m3"}),
        ("fp8_e4m3_qkv", {"kv_dtype": "fp8_e4m3", "q_dtype": "fp8_e4m3"}),
    ],
)
def test_fp8_lookups_have_their_own_bucket_and_default(
    seeded: str, client: httpx.Client, dtype: str, fields: dict[str, str]
) -> None:
    # the seeded results are bf16: an fp8 lookup must not take their config as exact
    r = client.get("/v1/configs/mla_decode", params={**LOOKUP, "dtype": dtype})
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["bucket"]["dtype"] == dtype
    assert got["level"] != "exact"
    problem = DecodeProblem(batch=64, s_q=1, h_q=16, seqlen=4096, dtype="bf16", **fields)
    expected = default_decode_config(problem, DeviceLimits(arch="sm_90")).as_dict()
    assert got["default_config"] == expected
    assert (expected["num_warps"], expected["num_stages"]) == (8, 1)  # the fp8 kernels' config


def test_prefill_lookup_refuses_fp8(client: httpx.Client) -> None:
    r = client.get("/v1/configs/mla_prefill", params={**LOOKUP, "dtype": "fp8_e4m3_qkv"})
    assert r.status_code == 422
    assert r.json()["problems"] == [
        "query.dtype: mla_prefill has no fp8 (fp8_e4m3_qkv); use fp16, bf16 or fp32"
    ]


def test_bundle_and_recommendations(seeded: str, client: httpx.Client) -> None:
    r = client.get("/v1/bundle", params={"arch": "sm_90"})
    assert r.status_code == 200
    bundle = ConfigBundle.model_validate(r.json())
    assert len(bundle.entries) == 1
    entry = bundle.entries[0]
    assert (entry.kernel, entry.arch, entry.config) == ("mla_decode", "sm_90", TUNED)
    assert entry.validated
    assert entry.speedup_vs_default == 2.0
    assert bundle.source.endswith("/v1/bundle?arch=sm_90")
    assert client.get("/v1/bundle", params={"arch": "gfx942"}).json()["entries"] == []
    assert client.get("/v1/bundle", params={"kernel": "mla_prefill"}).json()["entries"] == []
    recs = client.get("/v1/recommendations", params={"kernel": "mla_decode"}).json()
    assert [(x["arch"], x["config"], x["withdrawn"]) for x in recs] == [("sm_90", TUNED, False)]


def test_results_paged_and_filtered(seeded: str, client: httpx.Client) -> None:
    page = client.get("/v1/results", params={"limit": 1}).json()
    assert page["total"] == 2
    assert len(page["items"]) == 1
    assert page["items"][0]["problem"] == DECODE_PROBLEM
    second = client.get("/v1/results", params={"limit": 1, "offset": 1}).json()
    assert second["items"][0]["id"] != page["items"][0]["id"]
    assert client.get("/v1/results", params={"arch": "sm_80"}).json()["total"] == 0
    assert client.get("/v1/results", params={"status": "wrong_answer"}).json()["total"] == 0
    r = client.get("/v1/results", params={"limit": 100000})
    assert r.status_code == 422
    assert r.json()["problems"] == [
        "query.limit: Input should be less than or equal to 500 (got '100000')"
    ]


def test_archs(seeded: str, db_url: str, client: httpx.Client) -> None:
    seed_trials(
        db_url,
        [
            trial_result(
                problem=DECODE_PROBLEM,
                config=TUNED,
                median_us=30.0,
                device=fingerprint(arch="sm_80", name="NVIDIA A100", host="node-b"),
            )
        ],
    )
    archs = {a["arch"]: a for a in client.get("/v1/archs").json()}
    assert set(archs) == {"sm_80", "sm_90"}
    assert archs["sm_90"]["gpu_names"] == ["NVIDIA H200"]
    assert archs["sm_80"]["nodes"] == ["node-b"]


def test_health_and_metrics(client: httpx.Client) -> None:
    health = client.get("/healthz")
    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    assert health.json()["database"] == "ok"
    client.get("/v1/jobs/7")
    client.get("/nope")
    text = client.get("/metrics").text
    assert (
        'mlafleet_http_requests_total{method="GET",route="/v1/jobs/{job_id}",status="404"} 1.0'
        in text
    )
    assert 'route="<unmatched>",status="404"' in text
    assert "mlafleet_http_request_duration_seconds_bucket" in text


def test_unknown_route_and_method(client: httpx.Client) -> None:
    r = client.get("/v2/jobs")
    assert r.status_code == 404
    assert r.json() == {
        "detail": "no route GET /v2/jobs; see /docs for the API's routes",
        "problems": [],
    }
    r = client.put("/v1/jobs")
    assert r.status_code == 405
    assert r.json()["detail"] == "method PUT is not allowed on /v1/jobs; allowed: GET, POST"


def test_openapi_and_docs(client: httpx.Client) -> None:
    schema = client.get("/openapi.json").json()
    assert "JobSpec" in schema["components"]["schemas"]
    post = schema["paths"]["/v1/jobs"]["post"]
    assert set(post["requestBody"]["content"]) == {"application/json", "application/yaml"}
    assert client.get("/docs").status_code == 200


def test_config_lookup_follows_new_results(seeded: str, db_url: str, client: httpx.Client) -> None:
    first = client.get("/v1/configs/mla_decode", params=LOOKUP).json()
    assert first["config"] == TUNED
    assert client.get("/v1/configs/mla_decode", params=LOOKUP).json() == first  # cached bytes
    faster = {**TUNED, "num_stages": 1}
    seed_trials(
        db_url,
        [trial_result(problem=DECODE_PROBLEM, config=faster, median_us=5.0, device=fingerprint())],
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        got = client.get("/v1/configs/mla_decode", params=LOOKUP).json()
        if got["config"] == faster:
            break
        time.sleep(0.2)
    assert got["config"] == faster
    assert got["median_us"] == 5.0
    text = client.get("/metrics").text
    assert 'route="/v1/configs/{kernel}",status="200"' in text


def test_database_down_is_503_with_a_reason() -> None:
    from api_support import start_server, stop_server

    from mlafleet.orchestrator.config import Settings
    from mlafleet.orchestrator.db.session import make_engine, make_session_factory

    url = "postgresql+psycopg://postgres@127.0.0.1:1/nowhere"  # nothing listens on port 1
    engine = make_engine(url, connect_args={"connect_timeout": 2})
    live = start_server(Settings(db_url=url), session_factory=make_session_factory(engine))
    try:
        with live.client() as c:
            health = c.get("/healthz")
            assert health.status_code == 503
            assert health.json()["status"] == "degraded"
            assert health.json()["database"].startswith("unreachable: ")
            r = c.get("/v1/jobs")
            assert r.status_code == 503
            assert r.json()["detail"].startswith(
                "the database is unavailable or refused the operation; check that it is up"
            )
            lookup = c.get("/v1/configs/mla_decode", params=LOOKUP)
            assert lookup.status_code == 503
    finally:
        stop_server(live)
        engine.dispose()
