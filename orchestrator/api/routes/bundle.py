"""``GET /v1/bundle``: a config bundle (``MLAFLEET_CONFIGS`` file) of the recommendations,
and ``GET /v1/recommendations``: the same recommendations with their provenance."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request

from mlafleet.kernels.bundle import ConfigBundle
from mlafleet.orchestrator.bundle_export import export_bundle
from mlafleet.orchestrator.db import repo

from ..deps import SessionDep
from ..schemas import RecommendationPublic

router = APIRouter(prefix="/v1", tags=["configs"])

KernelName = Literal["mla_decode", "mla_prefill"]
Arch = Annotated[
    str | None, Query(pattern=r"^[A-Za-z0-9_.\-]{1,64}$", description="only this architecture")
]


@router.get(
    "/bundle",
    response_model=ConfigBundle,
    summary="A config bundle for run-time lookup (what `mlafleet pull` writes)",
)
def get_bundle(
    request: Request,
    session: SessionDep,
    arch: Arch = None,
    kernel: Annotated[KernelName | None, Query(description="only this kernel")] = None,
) -> ConfigBundle:
    """The active (not withdrawn) recommendations as a bundle, optionally of one architecture
    and/or kernel. Save it and point ``MLAFLEET_CONFIGS`` at it; ``mla_decode(config=None)``
    then uses it."""
    return export_bundle(session=session, source=str(request.url), arch=arch, kernel=kernel)


@router.get(
    "/recommendations",
    response_model=list[RecommendationPublic],
    summary="Recommendations of a kernel with provenance (trial, job, noise, withdrawals)",
)
def list_recommendations(
    session: SessionDep,
    kernel: Annotated[KernelName, Query(description="the kernel")],
    arch: Arch = None,
    include_withdrawn: Annotated[
        bool, Query(description="also those withdrawn by validation (with the reason)")
    ] = False,
) -> list[RecommendationPublic]:
    """Every recommendation of ``kernel`` (per arch x workload bucket x software)."""
    return repo.get_recommendations(
        session, kernel=kernel, arch=arch, include_withdrawn=include_withdrawn
    )


__all__ = ["router"]
