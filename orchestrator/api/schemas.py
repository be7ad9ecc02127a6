"""Request and response models of the HTTP API (pydantic only: no FastAPI, no database).

The dashboard imports this module alone to read the API's JSON. The read models the repo
returns (jobs, tasks, trials, architectures, recommendations, pages) are defined in
``mlafleet.orchestrator.schemas`` and re-exported here; the API-only ones are below.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mlafleet.kernels.bundle import BundleEntry, ConfigBundle, Software, WorkloadBucket
from mlafleet.orchestrator.schemas import (
    ArchProgress,
    ArchSummary,
    JobPublic,
    JobStatus,
    Page,
    RecommendationPublic,
    TaskPublic,
    TaskStatus,
    TrialPublic,
    TunedKernel,
)

MAX_PAGE_SIZE = 500
"""Largest ``limit`` of a paged list (a bigger one is refused with 422)."""


class ErrorBody(BaseModel):
    """Every error response: what is wrong and what to do, plus one line per problem."""

    detail: str = Field(description="what is wrong and what to do about it")
    problems: list[str] = Field(
        default_factory=list, description="each problem of a refused request, naming the field"
    )


class Health(BaseModel):
    """``GET /healthz``: the service and its database."""

    status: Literal["ok", "degraded"]
    version: str
    database: str = Field(description="'ok', or why the database cannot be reached")


class ConfigLookup(BaseModel):
    """``GET /v1/configs/{kernel}``: the recommended config for one workload on one arch."""

    model_config = ConfigDict(frozen=True)

    kernel: str
    arch: str = Field(description="the architecture asked about")
    bucket: WorkloadBucket = Field(description="the workload bucket of the query")
    level: str = Field(
        description=(
            "fallback level used: exact, nearest_bucket, arch_winner (each possibly with "
            "_other_software), related_arch[_other_software], or default"
        )
    )
    config: dict[str, Any] = Field(description="the config to use")
    default_config: dict[str, Any] | None = Field(
        default=None, description="the kernel's built-in default for this arch and workload"
    )
    source_arch: str | None = Field(
        default=None, description="architecture the recommendation was measured on"
    )
    software: Software | None = Field(default=None, description="what it was measured with")
    median_us: float | None = None
    default_median_us: float | None = None
    speedup_vs_default: float | None = None
    noise: float | None = None
    validated: bool = False
    recommendation: RecommendationPublic | None = Field(
        default=None, description="provenance: the recommendation row (trial, job, times)"
    )


__all__ = [
    "MAX_PAGE_SIZE",
    "ArchProgress",
    "ArchSummary",
    "BundleEntry",
    "ConfigBundle",
    "ConfigLookup",
    "ErrorBody",
    "Health",
    "JobPublic",
    "JobStatus",
    "Page",
    "RecommendationPublic",
    "TaskPublic",
    "TaskStatus",
    "TrialPublic",
    "TunedKernel",
]
