"""Jobs and tasks, read side and the API's writes (create, cancel).

The API only writes rows (a queued job, a cancel request); the runner (``orchestrator.runner``)
polls for them and does the work.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mlafleet.kernels.bundle import bucket_of
from mlafleet.kernels.registry import get_kernel

from ..errors import JobStateError, NotFoundError
from ..jobspec import JobSpec
from ..schemas import ArchProgress, JobPublic, JobStatus, Page, TaskPublic, TaskStatus
from .models import Job, Task, Trial
from .types import utcnow

MAX_PAGE = 1000


def _check_page(offset: int, limit: int) -> None:
    if offset < 0:
        raise ValueError(f"offset: expected >= 0, got {offset}")
    if not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"limit: expected 1..{MAX_PAGE}, got {limit}")


def create_job(session: Session, *, spec: JobSpec) -> JobPublic:
    """Queue a job; the runner expands it into tasks when it picks it up.

    Args:
        session: an open session (the caller's transaction).
        spec: a validated spec (``jobspec.parse_job_spec``).

    Returns:
        The new job, status ``queued``.
    """
    job = Job(
        name=spec.name,
        kind=spec.kind,
        kernel=spec.kernel,
        status=JobStatus.QUEUED,
        message="queued: waiting for the job runner (`mlafleet serve`) to pick it up",
        spec=spec.to_json_dict(),
        created_at=utcnow(),
    )
    session.add(job)
    session.flush()
    return _jobs_public(session, [job])[0]


def get_job(session: Session, *, job_id: int) -> JobPublic | None:
    """The job with its progress per architecture, or None."""
    job = session.get(Job, job_id)
    return None if job is None else _jobs_public(session, [job])[0]


def get_job_or_raise(session: Session, *, job_id: int) -> JobPublic:
    """The job with its progress per architecture.

    Raises:
        NotFoundError: no job ``job_id``.
    """
    job = get_job(session, job_id=job_id)
    if job is None:
        raise NotFoundError(f"job {job_id} not found; list jobs with `mlafleet jobs`")
    return job


def list_jobs(
    session: Session, *, status: JobStatus | None = None, offset: int = 0, limit: int = 50
) -> Page[JobPublic]:
    """Jobs, newest first, optionally of one status.

    Raises:
        ValueError: offset < 0 or limit outside 1..1000.
    """
    _check_page(offset, limit)
    query = select(Job)
    count = select(func.count()).select_from(Job)
    if status is not None:
        query = query.where(Job.status == status)
        count = count.where(Job.status == status)
    jobs = session.execute(query.order_by(Job.id.desc()).offset(offset).limit(limit)).scalars()
    items = _jobs_public(session, list(jobs))
    return Page[JobPublic](
        items=items, total=session.scalar(count) or 0, offset=offset, limit=limit
    )


def cancel_job(session: Session, *, job_id: int) -> JobPublic:
    """Ask the runner to cancel a job (it kills the job's running tasks and marks the rest).

    A job the runner has not started is cancelled at once.

    Raises:
        NotFoundError: no job ``job_id``.
        JobStateError: the job already finished (succeeded, failed or cancelled).
    """
    job = session.get(Job, job_id, with_for_update=True)
    if job is None:
        raise NotFoundError(f"job {job_id} not found; list jobs with `mlafleet jobs`")
    if job.status.terminal:
        raise JobStateError(f"job {job_id} already {job.status.value}; there is nothing to cancel")
    now = utcnow()
    has_tasks = session.scalar(select(func.count()).where(Task.job_id == job_id)) or 0
    if job.status == JobStatus.QUEUED and not has_tasks:
        job.status, job.finished_at, job.message = JobStatus.CANCELLED, now, "cancelled by user"
    else:
        job.status, job.message = JobStatus.CANCELLING, "cancel requested; stopping its tasks"
    session.flush()
    return _jobs_public(session, [job])[0]


def list_tasks(
    session: Session,
    *,
    job_id: int,
    arch: str | None = None,
    status: TaskStatus | None = None,
    offset: int = 0,
    limit: int = 100,
) -> Page[TaskPublic]:
    """Tasks of a job in grid order.

    Raises:
        NotFoundError: no job ``job_id``.
        ValueError: bad paging.
    """
    _check_page(offset, limit)
    if session.get(Job, job_id) is None:
        raise NotFoundError(f"job {job_id} not found; list jobs with `mlafleet jobs`")
    cond: list[Any] = [Task.job_id == job_id]
    if arch is not None:
        cond.append(Task.arch == arch)
    if status is not None:
        cond.append(Task.status == status)
    total = session.scalar(select(func.count()).select_from(Task).where(*cond)) or 0
    tasks = list(
        session.execute(
            select(Task).where(*cond).order_by(Task.arch, Task.idx).offset(offset).limit(limit)
        ).scalars()
    )
    stats = _task_trial_stats(session, [t.id for t in tasks])
    items = [task_public(t, *stats.get(t.id, (0, None))) for t in tasks]
    return Page[TaskPublic](items=items, total=total, offset=offset, limit=limit)


def task_public(task: Task, trials: int = 0, best_us: float | None = None) -> TaskPublic:
    """A task row as its public model."""
    problem = get_kernel(task.kernel).problem_from_dict(task.problem)
    return TaskPublic(
        id=task.id,
        job_id=task.job_id,
        arch=task.arch,
        index=task.idx,
        kernel=task.kernel,
        problem=task.problem,
        bucket=bucket_of(problem),
        config=task.config,
        node=task.node_host,
        status=task.status,
        attempts=task.attempts,
        message=task.message,
        trials=trials,
        best_median_us=best_us,
        started_at=task.started_at,
        finished_at=task.finished_at,
    )


def _task_trial_stats(session: Session, task_ids: list[int]) -> dict[int, tuple[int, float | None]]:
    if not task_ids:
        return {}
    rows = session.execute(
        select(Trial.task_id, func.count(), func.min(Trial.median_us))
        .where(Trial.task_id.in_(task_ids))
        .group_by(Trial.task_id)
    ).all()
    return {int(tid): (int(n), best) for tid, n, best in rows if tid is not None}


def _jobs_public(session: Session, jobs: list[Job]) -> list[JobPublic]:
    ids = [j.id for j in jobs]
    counts: dict[int, dict[str, dict[str, int]]] = defaultdict(lambda: defaultdict(dict))
    messages: dict[tuple[int, str], str] = {}
    trials: dict[tuple[int, str], int] = {}
    if ids:
        for job_id, arch, status, n in session.execute(
            select(Task.job_id, Task.arch, Task.status, func.count())
            .where(Task.job_id.in_(ids))
            .group_by(Task.job_id, Task.arch, Task.status)
        ).all():
            counts[job_id][arch][TaskStatus(status).value] = int(n)
        for job_id, arch, message in session.execute(
            select(Task.job_id, Task.arch, func.max(Task.message))
            .where(Task.job_id.in_(ids), Task.status == TaskStatus.WAITING)
            .group_by(Task.job_id, Task.arch)
        ).all():
            messages[(job_id, arch)] = message or ""
        for job_id, arch, n in session.execute(
            select(Task.job_id, Task.arch, func.count(Trial.id))
            .join(Trial, Trial.task_id == Task.id)
            .where(Task.job_id.in_(ids))
            .group_by(Task.job_id, Task.arch)
        ).all():
            trials[(job_id, arch)] = int(n)
    out = []
    for job in jobs:
        progress = [
            ArchProgress(
                arch=arch,
                tasks_total=sum(by_status.values()),
                trials=trials.get((job.id, arch), 0),
                message=messages.get((job.id, arch), ""),
                **by_status,
            )
            for arch, by_status in sorted(counts[job.id].items())
        ]
        out.append(
            JobPublic(
                id=job.id,
                name=job.name,
                kind=job.kind,
                kernel=job.kernel,
                status=job.status,
                message=job.message,
                spec=job.spec,
                created_at=job.created_at,
                started_at=job.started_at,
                finished_at=job.finished_at,
                tasks_total=sum(p.tasks_total for p in progress),
                tasks_done=sum(p.done for p in progress),
                trials=sum(p.trials for p in progress),
                progress=progress,
            )
        )
    return out
