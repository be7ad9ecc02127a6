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

MAX_SUMMARY_CONFIGS = 5000
"""Largest ``limit`` of ``GET /v1/results/summary`` (configs per answer)."""

BUCKET_KEY_PATTERN = (
    r"^b[0-9]{1,9}-n[0-9]{1,9}-h[0-9]{1,6}-s[0-9]{1,6}-[A-Za-z0-9_]{1,16}-p[0-9]{1,6}$"
)
"""A bucket key as ``WorkloadBucket.key()`` writes it, e.g. ``b64-n4096-h16-s1-bf16-p64``."""


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


class ConfigSummary(BaseModel):
    """One config of one workload bucket on one architecture, aggregated over its trials."""

    arch: str
    gpu_name: str = Field(description="one GPU the config was measured on (the first by name)")
    config: dict[str, Any]
    config_hash: str = Field(description="identity of the config (filter ``/v1/results`` by it)")
    trials: int = Field(description="trials of this config (every status)")
    ok: int = Field(description="trials that ran and were timed")
    best_us: float | None = Field(default=None, description="lowest median_us of the ok trials")
    median_us: float | None = Field(
        default=None, description="median of the ok trials' median_us (None when none ran)"
    )
    best_trial_id: int | None = Field(
        default=None, description="the fastest ok trial (its samples: ``/v1/results/{id}``)"
    )
    example_trial_id: int = Field(description="the first trial of this config")
    status_counts: dict[str, int] = Field(description="trials per status (ok, wrong_answer, ...)")
    errors: dict[str, str] = Field(
        default_factory=dict, description="one example error message per failure kind"
    )


class ResultsSummary(BaseModel):
    """``GET /v1/results/summary``: one row per config, fastest first."""

    kernel: str
    arch: str | None = None
    bucket: str | None = None
    trials: int = Field(description="trials matched by the filters")
    configs: int = Field(description="distinct (arch, config) rows matched")
    limit: int = Field(description="the most rows returned")
    truncated: bool = Field(description="true when ``configs`` > ``limit``: rows were left out")
    items: list[ConfigSummary]


class BucketSummary(BaseModel):
    """``GET /v1/buckets``: one workload bucket tuned for a kernel on an architecture."""

    kernel: str
    arch: str
    bucket: str = Field(description="the bucket key, e.g. b64-n4096-h16-s1-bf16-p64")
    workload: WorkloadBucket | None = Field(
        default=None, description="the bucket's fields (None if the key cannot be read)"
    )
    trials: int
    ok: int = Field(description="trials that ran and were timed")
    failed: int = Field(description="trials that did not run or failed validation")
    configs: int = Field(description="distinct configs tried")
    best_us: float | None = Field(default=None, description="lowest median_us of an ok trial")
    recommended: bool = Field(description="an active (not withdrawn) recommendation exists")


__all__ = [
    "BUCKET_KEY_PATTERN",
    "MAX_PAGE_SIZE",
    "MAX_SUMMARY_CONFIGS",
    "ArchProgress",
    "ArchSummary",
    "BucketSummary",
    "BundleEntry",
    "ConfigBundle",
    "ConfigLookup",
    "ConfigSummary",
    "ErrorBody",
    "Health",
    "JobPublic",
    "JobStatus",
    "Page",
    "RecommendationPublic",
    "ResultsSummary",
    "TaskPublic",
    "TaskStatus",
    "TrialPublic",
    "TunedKernel",
]
