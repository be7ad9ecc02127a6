"""Trial results: ``GET /v1/results`` (raw, paged), ``/v1/results/summary`` (one row per
config, aggregated in SQL), ``/v1/results/{id}`` (one trial) and ``/v1/buckets`` (the
workload buckets tuned per kernel and architecture)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query

from mlafleet.orchestrator.db import queries, queries_summary
from mlafleet.worker.schemas import TrialStatus

from ..deps import SessionDep
from ..schemas import (
    BUCKET_KEY_PATTERN,
    MAX_PAGE_SIZE,
    MAX_SUMMARY_CONFIGS,
    BucketSummary,
    ErrorBody,
    Page,
    ResultsSummary,
    TrialPublic,
)

router = APIRouter(prefix="/v1", tags=["results"])

_MAX_ID = 2**31 - 1  # 32-bit INTEGER ids on PostgreSQL
_ARCH = r"^[A-Za-z0-9_.\-]{1,64}$"
KernelName = Literal["mla_decode", "mla_prefill"]
_BUCKET_HELP = "a workload bucket key, e.g. b64-n4096-h16-s1-bf16-p64 (see GET /v1/buckets)"
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "no trial with this id"}
}


@router.get("/results", response_model=Page[TrialPublic], summary="Raw trial results, paged")
def list_results(
    session: SessionDep,
    job_id: Annotated[int | None, Query(ge=1, le=_MAX_ID)] = None,
    task_id: Annotated[int | None, Query(ge=1, le=_MAX_ID)] = None,
    kernel: Annotated[KernelName | None, Query()] = None,
    arch: Annotated[str | None, Query(pattern=_ARCH)] = None,
    status: Annotated[TrialStatus | None, Query(description="ok, wrong_answer, ...")] = None,
    bucket: Annotated[
        str | None, Query(pattern=BUCKET_KEY_PATTERN, description=_BUCKET_HELP)
    ] = None,
    config_hash: Annotated[
        str | None,
        Query(pattern=r"^[0-9a-f]{32}$", description="a config's id (from /v1/results/summary)"),
    ] = None,
    include_samples: Annotated[
        bool, Query(description="false leaves out timing.samples_us (much smaller answers)")
    ] = True,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 100,
) -> Page[TrialPublic]:
    """Every measured (or failed) config with its timing statistics, validation errors,
    device and software, oldest first. ``limit`` is capped at 500 per page. For one workload
    of tens of thousands of trials, ``GET /v1/results/summary`` is the fast view."""
    return queries.list_trials(
        session,
        job_id=job_id,
        task_id=task_id,
        kernel=kernel,
        arch=arch,
        status=status,
        bucket=bucket,
        config_hash=config_hash,
        include_samples=include_samples,
        offset=offset,
        limit=limit,
    )


@router.get(
    "/results/summary",
    response_model=ResultsSummary,
    summary="One row per config: best and median time, counts by status, example errors",
)
def results_summary(
    session: SessionDep,
    kernel: Annotated[KernelName, Query()],
    arch: Annotated[str | None, Query(pattern=_ARCH, description="one architecture")] = None,
    bucket: Annotated[
        str | None, Query(pattern=BUCKET_KEY_PATTERN, description=_BUCKET_HELP)
    ] = None,
    limit: Annotated[
        int,
        Query(ge=1, le=MAX_SUMMARY_CONFIGS, description="most rows (configs) returned"),
    ] = MAX_SUMMARY_CONFIGS,
) -> ResultsSummary:
    """The trials of ``kernel`` (on ``arch``, of workload ``bucket``; every one when left
    out), grouped in the database by architecture and config: per config the best and the
    median ``median_us`` of its ok trials, the fastest trial's id, the number of trials and
    of each status, and one example error per failure kind. Fastest first; configs that never
    ran last. At most ``limit`` rows (5000); ``truncated`` says when more configs matched.
    An unknown architecture or bucket gives an empty answer, not an error."""
    return queries_summary.results_summary(
        session, kernel=kernel, arch=arch, bucket=bucket, limit=limit
    )


@router.get(
    "/results/{trial_id}",
    response_model=TrialPublic,
    responses=_NOT_FOUND,
    summary="One trial, with its raw timing samples",
)
def get_result(
    session: SessionDep, trial_id: Annotated[int, Path(ge=1, le=_MAX_ID)]
) -> TrialPublic:
    """One measured (or failed) config with every timed sample (``timing.samples_us``).
    404 when no trial has this id."""
    return queries.get_trial(session, trial_id=trial_id)


@router.get(
    "/buckets",
    response_model=list[BucketSummary],
    tags=["results"],
    summary="Workload buckets tuned per kernel and architecture",
)
def list_buckets(
    session: SessionDep,
    kernel: Annotated[KernelName, Query()],
    arch: Annotated[str | None, Query(pattern=_ARCH, description="one architecture")] = None,
) -> list[BucketSummary]:
    """Every workload bucket of ``kernel`` with recorded trials, per architecture: trials,
    ok and failed counts, configs tried, the best time, and whether an active recommendation
    exists. Buckets where every config failed are listed (``ok`` 0, not recommended)."""
    return queries_summary.list_buckets(session, kernel=kernel, arch=arch)


__all__ = ["router"]
