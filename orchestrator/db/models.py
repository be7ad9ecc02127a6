"""SQLAlchemy 2 typed mappings of the orchestrator database.

Identity of a result: kernel x architecture x device x software environment x workload x config.
A config measured under another Triton or driver version is another fact, so ``software_envs``
is part of every trial's and recommendation's key. Writes go through ``db/repo_*.py`` only.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from mlafleet.worker.schemas import TrialStatus

from ..schemas import JobStatus, TaskStatus
from .types import EnumText, ExactJSON, UTCDateTime, utcnow

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Architecture(Base):
    """``sm_90``, ``sm_80``, ``gfx942``, ``cpu-interpreter``, ..."""

    __tablename__ = "architectures"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    vendor: Mapped[str] = mapped_column(String(32), default="")


class SoftwareEnv(Base):
    """Driver, CUDA/ROCm, torch and Triton versions: part of every result's identity."""

    __tablename__ = "software_envs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    env_key: Mapped[str] = mapped_column(String(512), unique=True)
    driver: Mapped[str | None] = mapped_column(String(64))
    cuda: Mapped[str | None] = mapped_column(String(64))
    rocm: Mapped[str | None] = mapped_column(String(64))
    torch: Mapped[str] = mapped_column(String(64))
    triton: Mapped[str] = mapped_column(String(64))


class Node(Base):
    """A machine of the fleet (a Ray node), by host name."""

    __tablename__ = "nodes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    host: Mapped[str] = mapped_column(String(255), unique=True)
    # Not unique: a host that restarts its Ray node gets a new id; the latest is kept.
    ray_node_id: Mapped[str | None] = mapped_column(String(64))
    first_seen: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Device(Base):
    """One GPU (or the CPU interpreter) of a node, with its latest fingerprint."""

    __tablename__ = "devices"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    device_key: Mapped[str] = mapped_column(String(512), unique=True)
    node_id: Mapped[int] = mapped_column(ForeignKey("nodes.id"))
    arch_id: Mapped[int] = mapped_column(ForeignKey("architectures.id"))
    env_id: Mapped[int] = mapped_column(ForeignKey("software_envs.id"))
    name: Mapped[str] = mapped_column(String(128))
    fingerprint: Mapped[dict[str, Any]] = mapped_column(ExactJSON())
    last_seen: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Job(Base):
    """A submitted fleet job (tune or validate); ``spec`` is its JobSpec in JSON form."""

    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(16))
    kernel: Mapped[str] = mapped_column(String(32))
    status: Mapped[JobStatus] = mapped_column(EnumText(JobStatus), index=True)
    message: Mapped[str] = mapped_column(Text, default="")
    spec: Mapped[dict[str, Any]] = mapped_column(ExactJSON())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Task(Base):
    """One workload on one architecture (tune) or one config on one node (validate)."""

    __tablename__ = "tasks"
    __table_args__ = (UniqueConstraint("job_id", "arch", "idx"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    # The arch by name, not a foreign key: a job may target an arch no node has reported yet.
    arch: Mapped[str] = mapped_column(String(64))
    idx: Mapped[int] = mapped_column(Integer)
    kernel: Mapped[str] = mapped_column(String(32))
    problem: Mapped[dict[str, Any]] = mapped_column(ExactJSON())
    bucket_key: Mapped[str] = mapped_column(String(128))
    config: Mapped[dict[str, Any] | None] = mapped_column(ExactJSON())
    recorded_median_us: Mapped[float | None] = mapped_column(Float)
    node_host: Mapped[str | None] = mapped_column(String(255))
    # No FK: recommendations -> trials -> tasks would make a cycle; validate tasks only read it.
    recommendation_id: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[TaskStatus] = mapped_column(EnumText(TaskStatus), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    message: Mapped[str] = mapped_column(Text, default="")
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Trial(Base):
    """One config measured (or failed) on one device: a raw result.

    ``(task_id, env_id, config_hash)`` is unique: a retried or resumed task never records a
    config twice under the same software. Trials from ``mlafleet tune`` have no task (NULL
    task ids are distinct in SQL, so those are deduplicated by the caller, not the database).
    """

    __tablename__ = "trials"
    __table_args__ = (UniqueConstraint("task_id", "env_id", "config_hash"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    task_id: Mapped[int | None] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"))
    job_id: Mapped[int | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="CASCADE"), index=True
    )
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"))
    env_id: Mapped[int] = mapped_column(ForeignKey("software_envs.id"))
    arch_id: Mapped[int] = mapped_column(ForeignKey("architectures.id"))
    kernel: Mapped[str] = mapped_column(String(32))
    problem: Mapped[dict[str, Any]] = mapped_column(ExactJSON())
    bucket_key: Mapped[str] = mapped_column(String(128))
    config: Mapped[dict[str, Any]] = mapped_column(ExactJSON())
    config_hash: Mapped[str] = mapped_column(String(32))
    status: Mapped[TrialStatus] = mapped_column(EnumText(TrialStatus))
    error: Mapped[str] = mapped_column(Text, default="")
    # Finite when status is ok; NULL otherwise (the full stats, NaN included, are in `timing`).
    median_us: Mapped[float | None] = mapped_column(Float)
    timing: Mapped[dict[str, Any] | None] = mapped_column(ExactJSON())
    validation: Mapped[dict[str, Any] | None] = mapped_column(ExactJSON())
    validation_passed: Mapped[bool | None] = mapped_column(Boolean)
    compile_s: Mapped[float | None] = mapped_column(Float)
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime] = mapped_column(UTCDateTime())


Index("ix_trials_kernel_arch_status", Trial.kernel, Trial.arch_id, Trial.status)


class Recommendation(Base):
    """Fastest validated config per kernel x arch x workload bucket x software env."""

    __tablename__ = "recommendations"
    __table_args__ = (UniqueConstraint("kernel", "arch_id", "bucket_key", "env_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kernel: Mapped[str] = mapped_column(String(32))
    arch_id: Mapped[int] = mapped_column(ForeignKey("architectures.id"))
    bucket_key: Mapped[str] = mapped_column(String(128))
    bucket: Mapped[dict[str, Any]] = mapped_column(ExactJSON())
    env_id: Mapped[int] = mapped_column(ForeignKey("software_envs.id"))
    trial_id: Mapped[int] = mapped_column(ForeignKey("trials.id"))
    # No FK: the job may be deleted while its winner stays recommended.
    job_id: Mapped[int | None] = mapped_column(Integer)
    gpu_name: Mapped[str] = mapped_column(String(128))
    config: Mapped[dict[str, Any]] = mapped_column(ExactJSON())
    median_us: Mapped[float] = mapped_column(Float)
    default_median_us: Mapped[float | None] = mapped_column(Float)
    speedup_vs_default: Mapped[float | None] = mapped_column(Float)
    noise: Mapped[float | None] = mapped_column(Float)
    validated: Mapped[bool] = mapped_column(Boolean, default=False)
    withdrawn: Mapped[bool] = mapped_column(Boolean, default=False)
    # Added by revision 0002.
    withdrawn_reason: Mapped[str] = mapped_column(Text, default="", server_default="")
    withdrawn_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    measured_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
