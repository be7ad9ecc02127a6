"""Public read models of the orchestrator: what the repo functions return and the API serves.

Never ORM rows: every repo function returns one of these (frozen pydantic models), so the API,
CLI and dashboard depend on this module only, not on the database layout.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from mlafleet.kernels.bundle import Software, WorkloadBucket
from mlafleet.worker.schemas import TimingStats, TrialStatus, ValidationResult

T = TypeVar("T")


class JobStatus(enum.StrEnum):
    """Lifecycle of a job: queued -> running -> succeeded | failed; cancelling -> cancelled."""

    QUEUED = "queued"
    RUNNING = "running"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"
    SUCCEEDED = "succeeded"
    FAILED = "failed"

    @property
    def terminal(self) -> bool:
        return self in (JobStatus.CANCELLED, JobStatus.SUCCEEDED, JobStatus.FAILED)


class TaskStatus(enum.StrEnum):
    """Lifecycle of a task (one architecture x one workload, or one node x one config).

    ``waiting``: queued, but no node of the task's architecture is in the fleet (its message
    says so); it runs as soon as one joins.
    """

    QUEUED = "queued"
    WAITING = "waiting"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELLED)


class _Public(BaseModel):
    model_config = ConfigDict(frozen=True)


class Page(_Public, Generic[T]):
    """One page of a longer list."""

    items: list[T]
    total: int = Field(description="items matching the filters, over all pages")
    offset: int
    limit: int


class ArchProgress(_Public):
    """Progress of one job on one architecture."""

    arch: str
    tasks_total: int
    queued: int = 0
    waiting: int = 0
    running: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    trials: int = Field(default=0, description="trials recorded so far")
    message: str = Field(default="", description="why tasks wait, e.g. no node of this arch")

    @property
    def done(self) -> int:
        return self.succeeded + self.failed + self.cancelled


class JobPublic(_Public):
    """A fleet job with its progress per architecture."""

    id: int
    name: str
    kind: str = Field(description="tune or validate")
    kernel: str
    status: JobStatus
    message: str = ""
    spec: dict[str, Any] = Field(description="the job spec as submitted (JSON form)")
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    tasks_total: int = 0
    tasks_done: int = 0
    trials: int = 0
    progress: list[ArchProgress] = Field(default_factory=list)


class TaskPublic(_Public):
    """One unit of work: a workload on an architecture (tune), or a config on a node (validate)."""

    id: int
    job_id: int
    arch: str
    index: int = Field(description="position of the workload in the job's grid")
    kernel: str
    problem: dict[str, Any]
    bucket: WorkloadBucket
    config: dict[str, Any] | None = Field(default=None, description="validate: config checked")
    node: str | None = Field(default=None, description="validate: the node it must run on")
    status: TaskStatus
    attempts: int
    message: str = ""
    trials: int = 0
    best_median_us: float | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


class TrialPublic(_Public):
    """One measured (or failed) config: a raw result."""

    id: int
    job_id: int | None
    task_id: int | None
    kernel: str
    arch: str
    gpu_name: str
    host: str
    device_key: str
    software: Software
    bucket: WorkloadBucket
    problem: dict[str, Any]
    config: dict[str, Any]
    status: TrialStatus
    error: str = ""
    median_us: float | None = None
    timing: TimingStats | None = None
    validation: ValidationResult | None = None
    compile_s: float | None = None
    is_default: bool = False
    started_at: datetime
    finished_at: datetime


class TunedKernel(_Public):
    """What has been tuned for one kernel on one architecture."""

    kernel: str
    buckets: int = Field(description="workload buckets with an active recommendation")
    withdrawn: int = Field(default=0, description="recommendations withdrawn by validation")
    trials: int = 0
    last_tuned_at: datetime | None = None


class ArchSummary(_Public):
    """One architecture of the fleet: its nodes, GPUs, software and what has been tuned."""

    arch: str
    vendor: str
    nodes: list[str] = Field(description="hosts with a device of this architecture")
    gpus: int = Field(description="devices of this architecture")
    gpu_names: list[str]
    software: list[Software]
    alive_nodes: int = Field(default=0, description="nodes seen by the runner recently")
    last_seen: datetime | None = None
    tuned: list[TunedKernel] = Field(default_factory=list)


class RecommendationPublic(_Public):
    """The fastest validated config for a kernel x arch x workload bucket x software env."""

    id: int
    kernel: str
    arch: str
    gpu_name: str
    software: Software
    bucket: WorkloadBucket
    config: dict[str, Any]
    median_us: float
    default_median_us: float | None = None
    speedup_vs_default: float | None = None
    noise: float | None = Field(default=None, description="timing spread (p80-p20)/median")
    validated: bool
    withdrawn: bool = False
    withdrawn_reason: str = ""
    trial_id: int
    job_id: int | None = None
    measured_at: datetime
    updated_at: datetime


__all__ = [
    "ArchProgress",
    "ArchSummary",
    "JobPublic",
    "JobStatus",
    "Page",
    "RecommendationPublic",
    "TaskPublic",
    "TaskStatus",
    "TrialPublic",
    "TunedKernel",
]
