"""Read-side queries the HTTP API needs that the repo modules do not have.

Keyword-only functions on an open session; the job, trial, architecture and recommendation
reads are in ``repo_jobs``, ``repo_results`` and ``repo_fleet``. The aggregated reads of the
dashboard (config summaries, buckets) are in ``queries_summary``.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mlafleet.kernels.bundle import Software, WorkloadBucket, bucket_of
from mlafleet.kernels.registry import get_kernel
from mlafleet.worker.schemas import TrialStatus

from ..errors import NotFoundError
from ..schemas import Page, TrialPublic
from .models import Architecture, Device, SoftwareEnv, Trial

_BUCKET_KEY = re.compile(r"^b(\d+)-n(\d+)-h(\d+)-s(\d+)-([A-Za-z0-9_]+)-p(\d+)$")


def ping(*, session: Session) -> None:
    """Run ``SELECT 1`` (the health probe).

    Raises:
        sqlalchemy.exc.SQLAlchemyError: the database cannot be reached (``session_scope``
            turns it into ``StorageError``).
    """
    session.execute(select(1)).scalar_one()


def bucket_from_key(key: str) -> WorkloadBucket | None:
    """The bucket a ``WorkloadBucket.key()`` text names, or None when it is not one."""
    match = _BUCKET_KEY.match(key)
    if match is None:
        return None
    batch, seqlen, heads, s_q, dtype, page = match.groups()
    try:
        return WorkloadBucket(
            batch=int(batch),
            seqlen=int(seqlen),
            heads=int(heads),
            s_q=int(s_q),
            dtype=dtype,
            page_size=int(page),
        )
    except ValueError:
        return None


def _software(env: SoftwareEnv) -> Software:
    return Software(
        driver=env.driver, cuda=env.cuda, rocm=env.rocm, torch=env.torch, triton=env.triton
    )


def _trial_public(
    t: Trial, dev: Device, arch_name: str, env: SoftwareEnv, *, include_samples: bool
) -> TrialPublic:
    timing = t.timing
    if timing is not None and not include_samples:
        timing = {**timing, "samples_us": []}
    bucket = bucket_from_key(t.bucket_key)
    if bucket is None or bucket.key() != t.bucket_key:
        bucket = bucket_of(get_kernel(t.kernel).problem_from_dict(t.problem))
    return TrialPublic(
        id=t.id,
        job_id=t.job_id,
        task_id=t.task_id,
        kernel=t.kernel,
        arch=arch_name,
        gpu_name=dev.name,
        host=str(dev.fingerprint.get("host", "")),
        device_key=dev.device_key,
        software=_software(env),
        bucket=bucket,
        problem=t.problem,
        config=t.config,
        status=t.status,
        error=t.error,
        median_us=t.median_us,
        timing=timing,
        validation=t.validation,
        compile_s=t.compile_s,
        is_default=t.is_default,
        started_at=t.started_at,
        finished_at=t.finished_at,
    )


def _joined() -> Any:
    return (
        select(Trial, Device, Architecture.name, SoftwareEnv)
        .join(Device, Device.id == Trial.device_id)
        .join(Architecture, Architecture.id == Trial.arch_id)
        .join(SoftwareEnv, SoftwareEnv.id == Trial.env_id)
    )


def list_trials(
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
    """Raw trial results, oldest first, filtered (``repo.list_results`` plus the workload
    bucket key and config hash filters, and the option to leave out the raw samples).

    Args:
        session: an open session.
        job_id, task_id, kernel, arch, status: equality filters (None: any).
        bucket: a ``WorkloadBucket.key()`` (``trials.bucket_key``).
        config_hash: a config's identity (``ConfigSummary.config_hash``).
        include_samples: False empties ``timing.samples_us`` (the bulk of each trial).
        offset, limit: paging (the route bounds them).
    """
    cond: list[Any] = []
    if job_id is not None:
        cond.append(Trial.job_id == job_id)
    if task_id is not None:
        cond.append(Trial.task_id == task_id)
    if kernel is not None:
        cond.append(Trial.kernel == kernel)
    if arch is not None:
        cond.append(Architecture.name == arch)
    if status is not None:
        cond.append(Trial.status == status)
    if bucket is not None:
        cond.append(Trial.bucket_key == bucket)
    if config_hash is not None:
        cond.append(Trial.config_hash == config_hash)
    total = session.scalar(
        select(func.count())
        .select_from(Trial)
        .join(Architecture, Architecture.id == Trial.arch_id)
        .where(*cond)
    )
    rows = session.execute(
        _joined().where(*cond).order_by(Trial.id).offset(offset).limit(limit)
    ).all()
    items = [
        _trial_public(t, dev, name, env, include_samples=include_samples)
        for t, dev, name, env in rows
    ]
    return Page[TrialPublic](items=items, total=total or 0, offset=offset, limit=limit)


def get_trial(session: Session, *, trial_id: int) -> TrialPublic:
    """One trial with its raw timing samples.

    Raises:
        NotFoundError: no trial has this id.
    """
    row = session.execute(_joined().where(Trial.id == trial_id)).first()
    if row is None:
        raise NotFoundError(
            f"no trial with id {trial_id}; list trials with GET /v1/results "
            "(or GET /v1/results/summary, whose rows name their best_trial_id)"
        )
    t, dev, name, env = row
    return _trial_public(t, dev, name, env, include_samples=True)


__all__ = ["bucket_from_key", "get_trial", "list_trials", "ping"]
