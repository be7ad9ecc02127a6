"""``GET /v1/archs``: the architectures of the fleet and what has been tuned for each."""

from __future__ import annotations

from fastapi import APIRouter

from mlafleet.orchestrator.db import repo

from ..deps import SessionDep
from ..schemas import ArchSummary

router = APIRouter(prefix="/v1", tags=["fleet"])


@router.get(
    "/archs",
    response_model=list[ArchSummary],
    summary="Architectures in the fleet, their nodes and software, and what is tuned",
)
def list_archs(session: SessionDep) -> list[ArchSummary]:
    """Every architecture a device of the fleet has reported, with its nodes, GPUs, software
    versions and, per kernel, how many workload buckets have a recommendation."""
    return repo.list_archs(session)


__all__ = ["router"]
