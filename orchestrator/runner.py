"""The job runner: the loop behind ``mlafleet serve`` (and ``mlafleet demo``).

It only talks to the database and to Ray. Each ``step``:

1. syncs the actor pool with the cluster (new nodes get actors; tasks of dead nodes are retried
   elsewhere, up to ``settings.max_task_attempts``) and records the devices;
2. expands newly queued jobs into tasks, stops cancelled jobs, and marks tasks of
   architectures no node has as ``waiting`` (saying so);
3. hands queued tasks to idle actors, passing each task's stored trials so a resumed or
   retried task never redoes a finished trial;
4. waits (``ray.wait``, completion order) for results and stores every trial as it arrives,
   refreshing the recommendation it touches; validate tasks withdraw failing configs;
5. closes jobs whose tasks are all done.

The API never talks to the runner: it writes rows (a queued job, a cancel request) and the
runner polls for them. A restarted runner resumes unfinished jobs from the database.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from mlafleet.worker.actor import TaskRequest
from mlafleet.worker.schemas import TrialStatus

from .config import Settings
from .db import repo
from .db import repo_lifecycle as life
from .db.models import Job, Task
from .db.store import Store
from .dispatch import DoneEvent, Event, Fleet, LostEvent, Slot, TrialEvent
from .errors import MlafleetError
from .jobspec import JobSpec
from .schemas import JobStatus, TaskStatus

log = logging.getLogger(__name__)


@dataclass
class Runner:
    """Runs fleet jobs from ``store`` on the Ray cluster this process is connected to."""

    store: Store
    settings: Settings
    fleet: Fleet = field(default_factory=Fleet)
    sync_every_s: float = 2.0
    _last_sync: float = 0.0
    _validate_results: dict[int, list[str]] = field(default_factory=dict)
    _recovered: bool = False
    _unstored: list[Event] = field(default_factory=list)

    def recover(self) -> int:
        """Requeue tasks a previous runner left running (once per runner); returns how many."""
        if self._recovered:
            return 0
        self._recovered = True
        with self.store.session() as s:
            n = life.recover_interrupted(s)
        if n:
            log.warning("resuming %d task(s) interrupted by a runner restart", n)
        return n

    def run(self, stop: threading.Event) -> None:
        """Step until ``stop`` is set; errors of one step are logged and retried."""
        self.recover()
        while not stop.is_set():
            try:
                self.step()
            except MlafleetError as exc:
                log.error("runner step failed (will retry): %s", exc)
                stop.wait(self.settings.job_poll_s)
            except Exception:  # the service loop must outlive any one bad step
                log.exception("runner step crashed (will retry)")
                stop.wait(self.settings.job_poll_s)
        self.fleet.shutdown()

    def step(self, *, wait_s: float | None = None) -> None:
        """One round: sync, plan, dispatch, collect, close."""
        now = time.monotonic()
        if now - self._last_sync >= self.sync_every_s or not self.fleet.slots:
            self._last_sync = now
            self._sync()
        self._plan()
        self._dispatch()
        self._collect(self.settings.job_poll_s if wait_s is None else wait_s)
        with self.store.session() as s:
            for job_id in life.finalize_jobs(s):
                log.info("job %d finished", job_id)

    def _sync(self) -> None:
        self._unstored.extend(self.fleet.sync())  # lost-task events: kept until committed
        with self.store.session() as s:
            for fp, node_id in self.fleet.fingerprints():
                repo.upsert_device(s, fingerprint=fp, ray_node_id=node_id)

    def _plan(self) -> None:
        archs = self.fleet.archs()
        with self.store.session() as s:
            for job in life.active_jobs(s):
                if job.status == JobStatus.CANCELLING:
                    for task_id in list(self.fleet.running()):
                        if self._job_of(s, task_id) == job.id and self.fleet.kill_task(task_id):
                            life.finish_task(
                                s, task_id=task_id, status=TaskStatus.CANCELLED, message="cancelled"
                            )
                    life.cancel_open_tasks(s, job_id=job.id)
                elif not job.has_tasks:
                    if job.spec.kind == "tune":
                        life.expand_tune_job(s, job_id=job.id, spec=job.spec, archs=sorted(archs))
                    else:
                        life.expand_validate_job(
                            s,
                            job_id=job.id,
                            spec=job.spec,
                            nodes_by_arch=self.fleet.nodes_by_arch(),
                        )
            life.set_waiting(s, available=archs)

    @staticmethod
    def _job_of(session: Session, task_id: int) -> int | None:
        task = session.get(Task, task_id)
        return None if task is None else int(task.job_id)

    def _dispatch(self) -> None:
        slots = self.fleet.ready_slots()
        if not slots:
            return
        with self.store.session() as s:
            taken: set[int] = set()
            for slot in slots:
                work = next(
                    (
                        w
                        for w in life.claimable(s, arch=slot.arch, limit=len(slots) + len(taken))
                        if w.id not in taken and w.node_host in (None, slot.node_id)
                    ),
                    None,
                )
                if work is None:
                    continue
                taken.add(work.id)
                spec = self._spec(s, work.job_id)
                request = TaskRequest(
                    task_id=work.id,
                    kind="validate" if work.config is not None else "tune",
                    kernel=work.kernel,
                    problem=work.problem,
                    strategy=spec.strategy,
                    budget_trials=spec.budget.trials,
                    budget_minutes=spec.budget.minutes,
                    validate=spec.validate_,
                    config=work.config,
                    known=repo.known_trials(s, task_id=work.id),
                    seed=work.id,
                )
                where = slot.fingerprint.host if slot.fingerprint else slot.node_id
                life.start_task(s, task_id=work.id, where=f"{slot.arch} on {where}")
                self.fleet.start(slot, request)

    @staticmethod
    def _spec(session: Session, job_id: int) -> JobSpec:
        job = session.get(Job, job_id)
        assert job is not None
        return life.spec_from_json_dict(job.spec)

    def _collect(self, wait_s: float) -> None:
        """Store the events Ray delivered. Events taken from Ray stay in ``_unstored`` until the
        transaction holding them commits, so a database outage delays results, never drops them
        (the writes are idempotent: replaying an event after a failed commit is safe)."""
        self._unstored.extend(self.fleet.poll(0.0 if self._unstored else wait_s))
        if not self._unstored:
            return
        with self.store.session() as s:
            for event in self._unstored:
                if isinstance(event, TrialEvent):
                    self._store_trial(s, event)
                elif isinstance(event, DoneEvent):
                    self._done(s, event.task_id, event.slot)
                elif isinstance(event, LostEvent):
                    self._retry(s, event)
        self._unstored.clear()

    def _store_trial(self, s: Session, event: TrialEvent) -> None:
        task = s.get(Task, event.task_id)
        if task is None:
            return
        node_id = event.slot.node_id
        trial_id = repo.record_trial(
            s, trial=event.trial, task_id=task.id, job_id=task.job_id, ray_node_id=node_id
        )
        if trial_id is not None and event.trial.status == TrialStatus.OK:
            repo.refresh_for_trial(s, trial_id=trial_id)
        if task.config is not None:
            self._check_validation(s, task, event)

    def _check_validation(self, s: Session, task: Task, event: TrialEvent) -> None:
        trial, problems = event.trial, []
        if trial.status != TrialStatus.OK:
            problems.append(f"{trial.status.value}: {trial.error[:300]}")
        elif trial.validation is not None and not trial.validation.passed:
            v = trial.validation
            problems.append(
                f"wrong answer: max abs err {v.max_abs_err:.3g} (atol {v.atol:g}) {v.message}"
            )
        recorded = task.recorded_median_us
        spec = self._spec(s, task.job_id)
        median = trial.median_us
        if not problems and recorded and median and median > recorded * (1 + spec.drift_tolerance):
            problems.append(
                f"timing drift: {median:.1f} us vs {recorded:.1f} us recorded "
                f"(+{(median / recorded - 1) * 100:.0f}%, "
                f"allowed {spec.drift_tolerance * 100:.0f}%)"
            )
        task_id: int = task.id
        if not problems:
            return
        where = f"{trial.device.host} ({trial.device.name}, {trial.device.arch})"
        reason = f"failed validation on {where}: " + "; ".join(problems)
        reasons = self._validate_results.setdefault(task_id, [])
        if reason not in reasons:  # an event replayed after a failed commit
            reasons.append(reason)
        rec_id = task.recommendation_id
        if rec_id is not None:
            repo.withdraw_recommendation(s, recommendation_id=rec_id, reason=reason)

    def _done(self, s: Session, task_id: int, slot: Slot) -> None:
        del slot
        failures = self._validate_results.pop(task_id, [])
        message = failures[0] if failures else ""
        life.finish_task(s, task_id=task_id, status=TaskStatus.SUCCEEDED, message=message)

    def _retry(self, s: Session, event: LostEvent) -> None:
        status = life.retry_task(
            s,
            task_id=event.task_id,
            reason=event.reason,
            max_attempts=self.settings.max_task_attempts,
        )
        log.warning("task %d lost (%s): %s", event.task_id, event.reason, status.value)

    def run_until(self, job_ids: list[int], *, timeout_s: float) -> None:
        """Step until the given jobs are finished (``demo`` and tests).

        Raises:
            TimeoutError: they did not finish within ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        self.recover()
        while True:
            self.step(wait_s=0.5)
            with self.store.session() as s:
                jobs = [repo.get_job_or_raise(s, job_id=j) for j in job_ids]
            if all(j.status.terminal for j in jobs):
                return
            if time.monotonic() > deadline:
                states = ", ".join(f"job {j.id}: {j.status.value} ({j.message})" for j in jobs)
                raise TimeoutError(f"jobs not finished after {timeout_s:.0f} s: {states}")
