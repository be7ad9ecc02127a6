"""Trials and recommendations: recording results, reading them back, bundles."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mlafleet.kernels.bundle import BundleEntry, Software, WorkloadBucket, bucket_of
from mlafleet.kernels.registry import get_kernel
from mlafleet.worker.schemas import DeviceFingerprint, TrialResult, TrialStatus

from ..schemas import Page, RecommendationPublic, TrialPublic
from . import queries
from .models import Architecture, Device, Recommendation, SoftwareEnv, Trial
from .repo_fleet import upsert_device
from .repo_jobs import _check_page
from .types import stable_hash
from .upsert import insert_for


def config_hash(config: dict[str, Any]) -> str:
    """Identity of a config inside a task (canonical JSON hash)."""
    return stable_hash(config)


def record_trial(
    session: Session,
    *,
    trial: TrialResult,
    task_id: int | None = None,
    job_id: int | None = None,
    ray_node_id: str | None = None,
) -> int | None:
    """Store one trial; idempotent per (task, software env, config).

    Args:
        session: the caller's transaction.
        trial: the worker's result.
        task_id: the task it belongs to (None for ``mlafleet tune`` runs).
        job_id: its job.
        ray_node_id: the Ray node it ran on (kept on the node row).

    Returns:
        The new trial's id, or None when the task already has this config under this env
        (a retried or resumed task): nothing was written.
    """
    device_id = upsert_device(session, fingerprint=trial.device, ray_node_id=ray_node_id)
    device = session.get(Device, device_id)
    assert device is not None
    problem = get_kernel(trial.kernel).problem_from_dict(trial.problem)
    median = trial.timing.median_us if trial.timing and trial.status == TrialStatus.OK else None
    values = {
        "task_id": task_id,
        "job_id": job_id,
        "device_id": device_id,
        "env_id": device.env_id,
        "arch_id": device.arch_id,
        "kernel": trial.kernel,
        "problem": trial.problem,
        "bucket_key": bucket_of(problem).key(),
        "config": trial.config,
        "config_hash": config_hash(trial.config),
        "status": trial.status.value,
        "error": trial.error,
        "median_us": median,
        "timing": trial.timing.model_dump(mode="python") if trial.timing else None,
        "validation": trial.validation.model_dump(mode="python") if trial.validation else None,
        "validation_passed": trial.validation.passed if trial.validation else None,
        "compile_s": trial.compile_s,
        "is_default": trial.is_default,
        "started_at": trial.started_at,
        "finished_at": trial.finished_at,
    }
    stmt = (
        insert_for(session, Trial)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["task_id", "env_id", "config_hash"])
        .returning(Trial.id)
    )
    new_id = session.scalar(stmt)
    return None if new_id is None else int(new_id)


def known_trials(session: Session, *, task_id: int) -> list[TrialResult]:
    """The trials a task already has (what a resumed or retried task must not redo)."""
    rows = session.execute(
        select(Trial, Device.fingerprint)
        .join(Device, Device.id == Trial.device_id)
        .where(Trial.task_id == task_id)
        .order_by(Trial.id)
    ).all()
    return [_trial_result(t, fp) for t, fp in rows]


def _trial_result(t: Trial, fingerprint: dict[str, Any]) -> TrialResult:
    return TrialResult(
        kernel=t.kernel,
        problem=t.problem,
        config=t.config,
        status=t.status,
        error=t.error,
        timing=t.timing,
        validation=t.validation,
        compile_s=t.compile_s,
        device=DeviceFingerprint.model_validate(fingerprint),
        is_default=t.is_default,
        started_at=t.started_at,
        finished_at=t.finished_at,
    )


def list_results(
    session: Session,
    *,
    job_id: int | None = None,
    task_id: int | None = None,
    kernel: str | None = None,
    arch: str | None = None,
    status: TrialStatus | None = None,
    bucket: str | None = None,
    config_hash: str | None = None,
    include_samples: bool = True,
    offset: int = 0,
    limit: int = 100,
) -> Page[TrialPublic]:
    """Raw trial results, oldest first, filtered (see ``queries.list_trials``).

    Raises:
        ValueError: bad paging.
    """
    _check_page(offset, limit)
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


def _software(env: SoftwareEnv) -> Software:
    return Software(
        driver=env.driver, cuda=env.cuda, rocm=env.rocm, torch=env.torch, triton=env.triton
    )


def get_recommendations(
    session: Session,
    *,
    kernel: str,
    arch: str | None = None,
    bucket: WorkloadBucket | None = None,
    include_withdrawn: bool = False,
) -> list[RecommendationPublic]:
    """Recommended configs of ``kernel``, optionally for one arch and/or one exact bucket.

    Raises:
        ValueError: unknown kernel (the message lists the known ones).
    """
    get_kernel(kernel)
    cond: list[Any] = [Recommendation.kernel == kernel]
    if arch is not None:
        cond.append(Architecture.name == arch)
    if bucket is not None:
        cond.append(Recommendation.bucket_key == bucket.key())
    if not include_withdrawn:
        cond.append(Recommendation.withdrawn.is_(False))
    rows = session.execute(
        select(Recommendation, Architecture.name, SoftwareEnv)
        .join(Architecture, Architecture.id == Recommendation.arch_id)
        .join(SoftwareEnv, SoftwareEnv.id == Recommendation.env_id)
        .where(*cond)
        .order_by(Architecture.name, Recommendation.bucket_key, Recommendation.id)
    ).all()
    return [recommendation_public(r, name, env) for r, name, env in rows]


def recommendation_public(r: Recommendation, arch: str, env: SoftwareEnv) -> RecommendationPublic:
    """A recommendation row as its public model."""
    return RecommendationPublic(
        id=r.id,
        kernel=r.kernel,
        arch=arch,
        gpu_name=r.gpu_name,
        software=_software(env),
        bucket=WorkloadBucket.model_validate(r.bucket),
        config=r.config,
        median_us=r.median_us,
        default_median_us=r.default_median_us,
        speedup_vs_default=r.speedup_vs_default,
        noise=r.noise,
        validated=r.validated,
        withdrawn=r.withdrawn,
        withdrawn_reason=r.withdrawn_reason,
        trial_id=r.trial_id,
        job_id=r.job_id,
        measured_at=r.measured_at,
        updated_at=r.updated_at,
    )


def bundle_entries(
    session: Session, *, arch: str | None = None, kernel: str | None = None
) -> list[BundleEntry]:
    """Active (not withdrawn) recommendations as config-bundle entries.

    Raises:
        ValueError: unknown kernel.
    """
    kernels = (
        [kernel]
        if kernel is not None
        else sorted(set(session.execute(select(Recommendation.kernel).distinct()).scalars()))
    )
    out = []
    for k in kernels:
        for rec in get_recommendations(session, kernel=k, arch=arch):
            out.append(
                BundleEntry(
                    kernel=rec.kernel,
                    arch=rec.arch,
                    gpu_name=rec.gpu_name,
                    software=rec.software,
                    bucket=rec.bucket,
                    config=rec.config,
                    median_us=rec.median_us,
                    speedup_vs_default=rec.speedup_vs_default,
                    validated=rec.validated,
                    measured_at=rec.measured_at,
                )
            )
    return out
