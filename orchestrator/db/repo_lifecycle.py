"""Job and task lifecycle: the runner's writes (expand, claim, finish, retry, cancel, resume).

Every function runs inside the caller's transaction; the runner opens one short transaction
per step, so a crash at any point leaves the database consistent and resumable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from mlafleet.kernels.bundle import bucket_of

from ..jobspec import JobSpec, spec_from_json
from ..schemas import JobStatus, TaskStatus
from .models import Architecture, Job, Recommendation, Task, Trial
from .types import utcnow

_OPEN = (TaskStatus.QUEUED, TaskStatus.WAITING)


@dataclass(frozen=True)
class ActiveJob:
    """A job the runner must act on."""

    id: int
    status: JobStatus
    spec: JobSpec
    has_tasks: bool


@dataclass(frozen=True)
class TaskWork:
    """Everything an actor needs to run one task."""

    id: int
    job_id: int
    arch: str
    kernel: str
    problem: dict[str, Any]
    config: dict[str, Any] | None
    node_host: str | None
    recommendation_id: int | None
    recorded_median_us: float | None
    attempts: int


def recover_interrupted(session: Session) -> int:
    """Requeue tasks left ``running`` by a runner that died; returns how many.

    The interrupted attempt is not counted against the task's retry cap.
    """
    tasks = session.scalars(select(Task).where(Task.status == TaskStatus.RUNNING)).all()
    for task in tasks:
        task.status = TaskStatus.QUEUED
        task.attempts = max(0, task.attempts - 1)
        task.message = "requeued after a runner restart; finished trials are kept"
    return len(tasks)


def active_jobs(session: Session) -> list[ActiveJob]:
    """Jobs queued, running or cancelling, oldest first."""
    jobs = session.scalars(
        select(Job)
        .where(Job.status.in_([JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.CANCELLING]))
        .order_by(Job.id)
    ).all()
    with_tasks = set(
        session.scalars(
            select(Task.job_id).where(Task.job_id.in_([j.id for j in jobs])).distinct()
        ).all()
    )
    return [
        ActiveJob(
            id=j.id, status=j.status, spec=spec_from_json_dict(j.spec), has_tasks=j.id in with_tasks
        )
        for j in jobs
    ]


def spec_from_json_dict(data: dict[str, Any]) -> JobSpec:
    """A stored spec back as a ``JobSpec`` (it was validated on submission)."""
    import json

    return spec_from_json(json.dumps(data))


def expand_tune_job(session: Session, *, job_id: int, spec: JobSpec, archs: list[str]) -> int:
    """Create the tasks of a tune job (target arch x workload) and start it; returns the count.

    Args:
        archs: the architectures the fleet has now (``all`` expands to these).
    """
    targets = spec.target_archs(archs)
    problems = spec.problems()
    for arch in targets:
        for idx, problem in enumerate(problems):
            session.add(
                _task(job_id, arch, idx, spec.kernel, problem.as_dict(), bucket_of(problem).key())
            )
    _start(session, job_id, targets, problems_n=len(problems))
    return len(targets) * len(problems)


def expand_validate_job(
    session: Session,
    *,
    job_id: int,
    spec: JobSpec,
    nodes_by_arch: dict[str, list[str]],
) -> int:
    """Create the tasks of a validate job: every config to check x every node of its arch.

    The configs are the active recommendations of the job's kernel (limited to the grid's
    buckets when the spec has workloads), or the entries of the spec's bundle.
    """
    targets = spec.target_archs(list(nodes_by_arch))
    wanted = {bucket_of(p).key() for p in spec.problems()} if spec.workloads else None
    count = 0
    for arch in targets:
        checks = _validate_checks(session, spec=spec, arch=arch, wanted=wanted)
        hosts: list[str | None] = [*nodes_by_arch.get(arch, [])] or [None]
        idx = 0
        for host in hosts:
            for problem, config, rec_id, median in checks:
                task = _task(
                    job_id, arch, idx, spec.kernel, problem, _bucket_key(spec.kernel, problem)
                )
                task.config, task.node_host = config, host
                task.recommendation_id, task.recorded_median_us = rec_id, median
                session.add(task)
                idx += 1
        count += idx
    _start(session, job_id, targets, problems_n=count)
    return count


def _bucket_key(kernel: str, problem: dict[str, Any]) -> str:
    from mlafleet.kernels.registry import get_kernel

    return str(bucket_of(get_kernel(kernel).problem_from_dict(problem)).key())


def _validate_checks(
    session: Session, *, spec: JobSpec, arch: str, wanted: set[str] | None
) -> list[tuple[dict[str, Any], dict[str, Any], int | None, float | None]]:
    if spec.bundle is not None:
        out: list[tuple[dict[str, Any], dict[str, Any], int | None, float | None]] = []
        for entry in spec.bundle.entries:
            if entry.arch != arch:
                continue
            b = entry.bucket
            if spec.kernel == "mla_decode":
                problem: dict[str, Any] = {
                    "batch": b.batch,
                    "s_q": b.s_q,
                    "h_q": b.heads,
                    "seqlen": b.seqlen,
                    "page_size": b.page_size or 64,
                    "dtype": b.dtype,
                }
            else:
                problem = {
                    "batch": b.batch,
                    "seqlen_q": b.seqlen,
                    "seqlen_k": b.seqlen,
                    "h": b.heads,
                    "dtype": b.dtype,
                }
            out.append((problem, entry.config, None, entry.median_us))
        return out
    rows = session.execute(
        select(Recommendation, Trial.problem)
        .join(Architecture, Architecture.id == Recommendation.arch_id)
        .join(Trial, Trial.id == Recommendation.trial_id)
        .where(
            Recommendation.kernel == spec.kernel,
            Architecture.name == arch,
            Recommendation.withdrawn.is_(False),
        )
        .order_by(Recommendation.id)
    ).all()
    return [
        (problem, rec.config, rec.id, rec.median_us)
        for rec, problem in rows
        if wanted is None or rec.bucket_key in wanted
    ]


def _task(job_id: int, arch: str, idx: int, kernel: str, problem: dict[str, Any], key: str) -> Task:
    return Task(
        job_id=job_id,
        arch=arch,
        idx=idx,
        kernel=kernel,
        problem=problem,
        bucket_key=key,
        status=TaskStatus.QUEUED,
        attempts=0,
        message="",
    )


def _start(session: Session, job_id: int, targets: list[str], *, problems_n: int) -> None:
    job = session.get(Job, job_id)
    assert job is not None
    job.status, job.started_at = JobStatus.RUNNING, utcnow()
    if not targets:
        job.message = "waiting: the fleet has no node yet; start one with `mlafleet worker`"
    elif problems_n == 0:
        job.message = "nothing to do: no configs to check on the target architectures"
    else:
        job.message = f"running on {', '.join(targets)}"
    session.flush()


def set_waiting(session: Session, *, available: set[str]) -> None:
    """Tasks of archs no node has wait (saying so); tasks of archs now present are queued."""
    open_tasks = session.scalars(
        select(Task).join(Job).where(Task.status.in_(_OPEN), Job.status == JobStatus.RUNNING)
    ).all()
    for task in open_tasks:
        if task.arch in available and task.status == TaskStatus.WAITING:
            task.status, task.message = TaskStatus.QUEUED, ""
        elif task.arch not in available and task.status == TaskStatus.QUEUED:
            task.status = TaskStatus.WAITING
            task.message = (
                f"waiting: no node with architecture {task.arch} is in the fleet; "
                f"join one with `mlafleet worker --ray-address ADDR`"
            )


def claimable(session: Session, *, arch: str, limit: int) -> list[TaskWork]:
    """Queued tasks of ``arch`` of running jobs, oldest job first."""
    tasks = session.scalars(
        select(Task)
        .join(Job)
        .where(Task.arch == arch, Task.status == TaskStatus.QUEUED, Job.status == JobStatus.RUNNING)
        .order_by(Task.job_id, Task.idx)
        .limit(limit)
    ).all()
    return [_work(t) for t in tasks]


def _work(t: Task) -> TaskWork:
    return TaskWork(
        id=t.id,
        job_id=t.job_id,
        arch=t.arch,
        kernel=t.kernel,
        problem=t.problem,
        config=t.config,
        node_host=t.node_host,
        recommendation_id=t.recommendation_id,
        recorded_median_us=t.recorded_median_us,
        attempts=t.attempts,
    )


def start_task(session: Session, *, task_id: int, where: str) -> None:
    """Mark a task running on ``where`` (actor / node), counting the attempt."""
    task = session.get(Task, task_id)
    assert task is not None
    task.status, task.attempts = TaskStatus.RUNNING, task.attempts + 1
    task.message = f"running on {where} (attempt {task.attempts})"
    task.started_at = task.started_at or utcnow()


def finish_task(session: Session, *, task_id: int, status: TaskStatus, message: str = "") -> None:
    """Record a task's end (succeeded, failed or cancelled)."""
    task = session.get(Task, task_id)
    assert task is not None
    task.status, task.message, task.finished_at = status, message, utcnow()


def retry_task(session: Session, *, task_id: int, reason: str, max_attempts: int) -> TaskStatus:
    """Requeue a task whose worker or node died, or fail it after ``max_attempts``."""
    task = session.get(Task, task_id)
    assert task is not None
    if task.attempts >= max_attempts:
        task.status, task.finished_at = TaskStatus.FAILED, utcnow()
        task.message = f"failed after {task.attempts} attempts: {reason}"
    else:
        task.status = TaskStatus.QUEUED
        task.message = f"attempt {task.attempts} lost ({reason}); retrying on another worker"
    return task.status


def cancel_open_tasks(session: Session, *, job_id: int) -> None:
    """Mark a cancelling job's not-yet-running tasks cancelled."""
    session.execute(
        update(Task)
        .where(Task.job_id == job_id, Task.status.in_(_OPEN))
        .values(status=TaskStatus.CANCELLED, message="cancelled by user", finished_at=utcnow())
    )


def finalize_jobs(session: Session) -> list[int]:
    """Close jobs whose tasks are all finished; returns their ids."""
    done = []
    jobs = session.scalars(
        select(Job).where(Job.status.in_([JobStatus.RUNNING, JobStatus.CANCELLING]))
    ).all()
    for job in jobs:
        counts = dict(
            session.execute(
                select(Task.status, func.count()).where(Task.job_id == job.id).group_by(Task.status)
            ).all()
        )
        total = sum(counts.values())
        open_n = sum(counts.get(s, 0) for s in (*_OPEN, TaskStatus.RUNNING))
        if job.status == JobStatus.CANCELLING:
            if counts.get(TaskStatus.RUNNING, 0):
                continue
            cancel_open_tasks(session, job_id=job.id)
            job.status, job.message = JobStatus.CANCELLED, "cancelled by user"
        elif open_n or (total == 0 and not job.message.startswith("nothing")):
            continue
        else:
            failed = counts.get(TaskStatus.FAILED, 0)
            if total and failed == total:
                job.status, job.message = JobStatus.FAILED, f"all {total} tasks failed"
            else:
                job.status = JobStatus.SUCCEEDED
                job.message = f"{total - failed} of {total} tasks succeeded" + (
                    f"; {failed} failed (see the tasks' messages)" if failed else ""
                )
        job.finished_at = utcnow()
        done.append(job.id)
    return done
