"""``GET /v1/results``: raw trial results, filtered and paged."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query

from mlafleet.orchestrator.db import repo
from mlafleet.worker.schemas import TrialStatus

from ..deps import SessionDep
from ..schemas import MAX_PAGE_SIZE, Page, TrialPublic

router = APIRouter(prefix="/v1", tags=["results"])

_MAX_ID = 2**31 - 1  # 32-bit INTEGER ids on PostgreSQL


@router.get("/results", response_model=Page[TrialPublic], summary="Raw trial results, paged")
def list_results(
    session: SessionDep,
    job_id: Annotated[int | None, Query(ge=1, le=_MAX_ID)] = None,
    task_id: Annotated[int | None, Query(ge=1, le=_MAX_ID)] = None,
    kernel: Annotated[Literal["mla_decode", "mla_prefill"] | None, Query()] = None,
    arch: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")] = None,
    status: Annotated[TrialStatus | None, Query(description="ok, wrong_answer, ...")] = None,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 100,
) -> Page[TrialPublic]:
    """Every measured (or failed) config with its timing statistics, validation errors,
    device and software, oldest first. ``limit`` is capped at 500 per page."""
    return repo.list_results(
        session,
        job_id=job_id,
        task_id=task_id,
        kernel=kernel,
        arch=arch,
        status=status,
        offset=offset,
        limit=limit,
    )


__all__ = ["router"]
