"""The aggregated result routes over real HTTP: ``/v1/results/summary``, ``/v1/results/{id}``,
``/v1/buckets`` and the ``bucket`` / ``config_hash`` / ``include_samples`` filters of
``/v1/results``; plus a timed summary over 10 000 bulk-inserted trials."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from api_support import (
    DECODE_PROBLEM,
    DEFAULT,
    TUNED,
    LiveServer,
    fingerprint,
    seed_trials,
    trial_result,
)
from sqlalchemy import insert, select

from mlafleet.kernels.bundle import bucket_of
from mlafleet.kernels.configs import DecodeProblem
from mlafleet.orchestrator.db import repo
from mlafleet.orchestrator.db.models import Trial
from mlafleet.orchestrator.db.session import make_engine, make_session_factory, session_scope
from mlafleet.orchestrator.db.session import upgrade as upgrade_db
from mlafleet.worker.schemas import TrialResult, TrialStatus

BUCKET = bucket_of(DecodeProblem.from_dict(DECODE_PROBLEM)).key()
SMALL_PROBLEM = {**DECODE_PROBLEM, "batch": 1}
SMALL_BUCKET = bucket_of(DecodeProblem.from_dict(SMALL_PROBLEM)).key()
BAD = {**TUNED, "block_size_q": 128, "block_size_k": 128}
OOR = "shared memory: 300000 > 232448 bytes"


def failed(problem: dict[str, Any], config: dict[str, Any], status: TrialStatus, error: str,
           *, arch: str = "sm_90") -> TrialResult:  # fmt: skip
    base = trial_result(
        problem=problem, config=config, median_us=1.0, device=fingerprint(arch=arch)
    )
    return base.model_copy(update={"status": status, "error": error})


def ok(median_us: float, config: dict[str, Any] = TUNED, *, arch: str = "sm_90",
       problem: dict[str, Any] = DECODE_PROBLEM, **kw: Any) -> TrialResult:  # fmt: skip
    device = fingerprint(arch=arch, name="NVIDIA A100" if arch == "sm_80" else "NVIDIA H200")
    return trial_result(problem=problem, config=config, median_us=median_us, device=device, **kw)


@pytest.fixture
def mixed(db_url: str) -> str:
    """sm_90: TUNED ran 3 times (10, 12, 14 us), DEFAULT twice (20, 30), BAD never ran (2 out
    of resources, 1 compile error); a small bucket where everything failed. sm_80: TUNED once."""
    seed_trials(
        db_url,
        [
            ok(12.0),
            ok(10.0),
            ok(14.0),
            ok(20.0, DEFAULT, is_default=True),
            ok(30.0, DEFAULT, is_default=True),
            failed(DECODE_PROBLEM, BAD, TrialStatus.OUT_OF_RESOURCES, OOR),
            failed(DECODE_PROBLEM, BAD, TrialStatus.OUT_OF_RESOURCES, OOR),
            failed(DECODE_PROBLEM, BAD, TrialStatus.COMPILE_ERROR, "boom: bad layout"),
            failed(SMALL_PROBLEM, TUNED, TrialStatus.COMPILE_ERROR, "boom"),
            ok(50.0, arch="sm_80"),
        ],
    )
    return db_url


def test_summary_one_row_per_config_fastest_first(mixed: str, client: httpx.Client) -> None:
    r = client.get(
        "/v1/results/summary", params={"kernel": "mla_decode", "arch": "sm_90", "bucket": BUCKET}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["trials"], body["configs"], body["truncated"]) == (8, 3, False)
    tuned, default, bad = body["items"]
    assert tuned["config"] == TUNED
    assert (tuned["trials"], tuned["ok"], tuned["best_us"], tuned["median_us"]) == (
        3,
        3,
        10.0,
        12.0,
    )
    assert tuned["status_counts"] == {"ok": 3}
    assert tuned["errors"] == {}
    assert tuned["gpu_name"] == "NVIDIA H200"
    assert tuned["arch"] == "sm_90"
    assert default["config"] == DEFAULT
    assert (default["best_us"], default["median_us"]) == (20.0, 25.0)  # even count: mean of 2
    assert bad["config"] == BAD
    assert (bad["ok"], bad["best_us"], bad["median_us"], bad["best_trial_id"]) == (
        0,
        None,
        None,
        None,
    )
    assert bad["status_counts"] == {"compile_error": 1, "out_of_resources": 2}
    assert bad["errors"] == {"compile_error": "boom: bad layout", "out_of_resources": OOR}
    # the fastest trial's samples come from /v1/results/{id}
    one = client.get(f"/v1/results/{tuned['best_trial_id']}").json()
    assert one["median_us"] == 10.0
    assert one["config"] == TUNED
    assert len(one["timing"]["samples_us"]) == 5


def test_summary_across_archs_limit_and_empty_answers(mixed: str, client: httpx.Client) -> None:
    every = client.get("/v1/results/summary", params={"kernel": "mla_decode"}).json()
    # TUNED on sm_90 merges both buckets (3 ok + 1 compile error); sm_80 is its own row
    assert [(i["arch"], i["best_us"]) for i in every["items"]][:3] == [
        ("sm_90", 10.0), ("sm_90", 20.0), ("sm_80", 50.0),
    ]  # fmt: skip
    assert every["trials"] == 10
    assert every["configs"] == 4
    capped = client.get("/v1/results/summary", params={"kernel": "mla_decode", "limit": 1}).json()
    assert (len(capped["items"]), capped["configs"], capped["truncated"]) == (1, 4, True)
    for params in ({"arch": "sm_75"}, {"bucket": "b1-n1-h1-s1-fp16-p1"}):
        empty = client.get("/v1/results/summary", params={"kernel": "mla_decode", **params})
        assert empty.status_code == 200
        assert (empty.json()["items"], empty.json()["trials"]) == ([], 0)
    assert client.get("/v1/results/summary", params={"kernel": "mla_prefill"}).json()["items"] == []


def test_buckets_list_failed_and_recommended(mixed: str, client: httpx.Client) -> None:
    r = client.get("/v1/buckets", params={"kernel": "mla_decode"})
    assert r.status_code == 200, r.text
    rows = {(b["arch"], b["bucket"]): b for b in r.json()}
    assert set(rows) == {("sm_80", BUCKET), ("sm_90", BUCKET), ("sm_90", SMALL_BUCKET)}
    big = rows[("sm_90", BUCKET)]
    assert (big["trials"], big["ok"], big["failed"], big["configs"]) == (8, 5, 3, 3)
    assert (big["best_us"], big["recommended"]) == (10.0, True)
    assert big["workload"]["batch"] == 64
    assert big["workload"]["dtype"] == "bf16"
    small = rows[("sm_90", SMALL_BUCKET)]
    assert (small["ok"], small["failed"], small["best_us"], small["recommended"]) == (
        0, 1, None, False,
    )  # fmt: skip
    only = client.get("/v1/buckets", params={"kernel": "mla_decode", "arch": "sm_80"}).json()
    assert [b["arch"] for b in only] == ["sm_80"]
    assert client.get("/v1/buckets", params={"kernel": "mla_decode", "arch": "x"}).json() == []


def test_results_bucket_config_and_samples_filters(mixed: str, client: httpx.Client) -> None:
    def page(**params: Any) -> dict[str, Any]:
        r = client.get("/v1/results", params={"kernel": "mla_decode", **params})
        assert r.status_code == 200, r.text
        return dict(r.json())

    assert page(bucket=SMALL_BUCKET)["total"] == 1
    assert page(bucket=BUCKET, arch="sm_90")["total"] == 8
    summary = client.get("/v1/results/summary", params={"kernel": "mla_decode", "arch": "sm_90",
                                                          "bucket": BUCKET}).json()  # fmt: skip
    chash = summary["items"][1]["config_hash"]
    rows = page(bucket=BUCKET, arch="sm_90", config_hash=chash)["items"]
    assert sorted(t["median_us"] for t in rows) == [20.0, 30.0]
    assert all(t["config"] == DEFAULT for t in rows)
    lean = page(bucket=BUCKET, status="ok", include_samples="false")["items"]
    assert len(lean) == 6
    assert all(t["timing"]["samples_us"] == [] and t["timing"]["median_us"] > 0 for t in lean)
    full = page(bucket=BUCKET, status="ok")["items"]
    assert all(len(t["timing"]["samples_us"]) == 5 for t in full)


def test_bad_input_is_refused_with_problems(mixed: str, client: httpx.Client) -> None:
    missing = client.get("/v1/results/404404")
    assert missing.status_code == 404
    assert missing.json()["detail"].startswith("no trial with id 404404; list trials with GET")
    for path, params in [
        ("/v1/results/summary", {}),
        ("/v1/results/summary", {"kernel": "nope"}),
        ("/v1/results/summary", {"kernel": "mla_decode", "bucket": "64x4096"}),
        ("/v1/results/summary", {"kernel": "mla_decode", "limit": 5001}),
        ("/v1/results", {"bucket": "b1;drop"}),
        ("/v1/results", {"config_hash": "xyz"}),
        ("/v1/results", {"include_samples": "maybe"}),
        ("/v1/results/0", {}),
        ("/v1/results/2147483648", {}),
        ("/v1/buckets", {"kernel": "mla_decode", "arch": "a b"}),
        ("/v1/buckets", {}),
    ]:
        r = client.get(path, params=params)
        assert r.status_code == 422, (path, params, r.text)
        body = r.json()
        assert body["detail"], body
        assert body["problems"], body
        named = [*params, "kernel", "trial_id"]
        assert any(name in line for line in body["problems"] for name in named), body


def test_new_routes_are_documented(client: httpx.Client) -> None:
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    for path in ("/v1/results/summary", "/v1/results/{trial_id}", "/v1/buckets"):
        assert "200" in paths[path]["get"]["responses"], path
    summary = paths["/v1/results/summary"]["get"]
    limit = next(p for p in summary["parameters"] if p["name"] == "limit")
    assert limit["schema"]["maximum"] == 5000
    assert "truncated" in summary["description"]
    assert "404" in paths["/v1/results/{trial_id}"]["get"]["responses"]
    names = [p["name"] for p in paths["/v1/results"]["get"]["parameters"]]
    assert {"bucket", "config_hash", "include_samples"} <= set(names)


# ------------------------------------------------------------------------ 10 000 trials

KNOB_SPACE = [
    {"block_size_q": q, "block_size_k": k, "num_warps": w, "num_stages": s, "num_kv_splits": sp}
    for q in (16, 32, 64, 128)
    for k in (16, 32, 64, 128)
    for w in (2, 4, 8)
    for s in (1, 2, 3, 4)
    for sp in ("auto", 1, 2, 4, 8)
]  # 960 configs


def bulk_seed(db_url: str, n: int, *, arch: str = "sm_90") -> None:
    """``n`` trials of one decode bucket on ``arch``: one recorded through the repo (device,
    arch and software rows), the rest copied from it with a bulk ORM insert; every config
    measured ~n/960 times, one in five failed."""
    engine = make_engine(db_url)
    with session_scope(make_session_factory(engine)) as session:
        first = repo.record_trial(session, trial=ok(10.0, arch=arch))
        template = session.scalars(select(Trial).where(Trial.id == first)).one()
        base = {c.key: getattr(template, c.key) for c in Trial.__table__.columns if c.key != "id"}
        rows = []
        for i in range(n - 1):
            config = KNOB_SPACE[i % len(KNOB_SPACE)]
            median = 5.0 + (i % len(KNOB_SPACE)) * 0.1 + (i // len(KNOB_SPACE)) * 0.01
            bad = i % 5 == 4
            rows.append(
                {
                    **base,
                    "config": config,
                    "config_hash": repo.config_hash(config),
                    "status": TrialStatus.RUNTIME_ERROR if bad else TrialStatus.OK,
                    "error": "illegal memory access" if bad else "",
                    "median_us": None if bad else median,
                    "timing": None if bad else {**base["timing"], "median_us": median},
                }
            )
        session.execute(insert(Trial), rows)
    engine.dispose()


@pytest.mark.slow
def test_summary_of_10000_trials_is_fast(
    db_url: str, make_server: Callable[..., LiveServer], capsys: pytest.CaptureFixture[str]
) -> None:
    t0 = time.perf_counter()
    bulk_seed(db_url, 10_000)
    seed_s = time.perf_counter() - t0
    live = make_server(db_url)
    params = {"kernel": "mla_decode", "arch": "sm_90", "bucket": BUCKET}
    with live.client() as c:
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            r = c.get("/v1/results/summary", params=params)
            times.append(time.perf_counter() - t0)
            assert r.status_code == 200, r.text
        body = r.json()
        t0 = time.perf_counter()
        buckets = c.get("/v1/buckets", params={"kernel": "mla_decode"}).json()
        buckets_s = time.perf_counter() - t0
    assert body["trials"] == 10_000
    assert body["configs"] == len(KNOB_SPACE)
    assert sum(i["trials"] for i in body["items"]) == 10_000
    assert body["items"][0]["best_us"] == 5.0
    assert buckets[0]["trials"] == 10_000
    with capsys.disabled():
        print(  # noqa: T201 -- the measurement, shown with -s or on failure
            f"\n[10k trials] bulk seed {seed_s:.2f} s; summary {statistics.median(times):.3f} s "
            f"(median of 3, {len(r.content) / 1e3:.0f} kB); buckets {buckets_s:.3f} s"
        )
    assert statistics.median(times) < 5.0


@pytest.mark.postgres
def test_summary_and_buckets_on_postgres(
    pg_url: str, make_server: Callable[..., LiveServer]
) -> None:
    upgrade_db(pg_url)
    seed_trials(
        pg_url,
        [ok(12.0), ok(10.0), ok(14.0), ok(20.0, DEFAULT, is_default=True),
         failed(DECODE_PROBLEM, BAD, TrialStatus.OUT_OF_RESOURCES, OOR)],
    )  # fmt: skip
    live = make_server(pg_url)
    with live.client() as c:
        body = c.get("/v1/results/summary", params={"kernel": "mla_decode", "bucket": BUCKET})
        assert body.status_code == 200, body.text
        items = body.json()["items"]
        assert [(i["best_us"], i["median_us"]) for i in items] == [
            (10.0, 12.0), (20.0, 20.0), (None, None),
        ]  # fmt: skip
        assert items[2]["errors"] == {"out_of_resources": OOR}
        buckets = c.get("/v1/buckets", params={"kernel": "mla_decode", "arch": "sm_90"}).json()
        assert [(b["trials"], b["ok"], b["recommended"]) for b in buckets] == [(5, 4, True)]
        assert c.get(f"/v1/results/{items[0]['best_trial_id']}").json()["median_us"] == 10.0
