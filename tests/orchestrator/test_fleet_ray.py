"""A real Ray cluster of several nodes (ray.cluster_utils) running real jobs end to end.

Nodes: the head advertises the CPU interpreter (``arch:cpu-interpreter``); a second node runs
in the explicit test mode of ``mlafleet worker --test-arch-alias cpu-interpreter-b`` (the CPU
interpreter reported as another architecture), so one CPU-only machine has two
"architectures". One cluster is shared by the tests of this module; each test has its own
database.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import ray
from orch_factories import tiny_spec
from ray.cluster_utils import Cluster

from mlafleet.orchestrator.config import Settings
from mlafleet.orchestrator.db import repo
from mlafleet.orchestrator.db.models import Recommendation, Trial
from mlafleet.orchestrator.db.store import Store
from mlafleet.orchestrator.dispatch import Fleet, node_resources
from mlafleet.orchestrator.jobspec import parse_job_spec
from mlafleet.orchestrator.runner import Runner
from mlafleet.orchestrator.schemas import JobStatus, TaskStatus
from mlafleet.worker.device import cpu_fingerprint

# Generous limits: a loaded 2-core machine needs minutes for what takes seconds when idle.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]
LIMIT_S = 600

A, B, C = "cpu-interpreter", "cpu-interpreter-b", "cpu-interpreter-c"


def _alias_resources(arch: str) -> dict[str, float]:
    resources, gpus = node_resources([cpu_fingerprint()], test_arch_alias=arch)
    assert gpus == 0
    return resources


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    # a loaded machine starts raylets slowly; Ray's default wait is too short for it
    os.environ.setdefault("RAY_raylet_start_wait_time_s", "180")
    os.environ.setdefault("RAY_agent_register_timeout_ms", "180000")
    head, _ = node_resources([cpu_fingerprint()])
    assert head == {f"arch:{A}": 1}
    c = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "resources": head, "include_dashboard": False},
    )
    c.add_node(num_cpus=1, resources=_alias_resources(B))
    ray.init(address=c.address, log_to_driver=False)
    yield c
    ray.shutdown()
    c.shutdown()


@pytest.fixture(scope="module")
def fleet(cluster: Cluster) -> Iterator[Fleet]:
    """One actor pool shared by the tests (actors start once); the restart test makes its own."""
    shared = Fleet()
    yield shared
    shared.shutdown()


def _runner(store: Store, fleet: Fleet | None = None) -> Runner:
    settings = Settings(db_url=store.url, max_task_attempts=3, job_poll_s=0.5)
    return Runner(store=store, settings=settings, fleet=fleet or Fleet(), sync_every_s=1.0)


def _submit(store: Store, **spec: Any) -> int:
    with store.session() as s:
        return repo.create_job(s, spec=parse_job_spec(tiny_spec(**spec), max_workloads=10)).id


def _run(runner: Runner, job_id: int) -> None:
    """Run a job to its end; on failure, stop the pool's tasks so the next test starts clean."""
    try:
        runner.run_until([job_id], timeout_s=LIMIT_S)
    finally:
        if runner.fleet.running():
            runner.fleet.shutdown()


def _step_until(runner: Runner, done: Callable[[], bool], *, timeout_s: float = LIMIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    runner.recover()
    while not done():
        assert time.monotonic() < deadline, "condition not reached in time"
        runner.step(wait_s=0.25)


def _trials(store: Store, job_id: int) -> list[tuple[int, int, str]]:
    with store.session() as s:
        rows = s.query(Trial.id, Trial.task_id, Trial.config_hash).filter(Trial.job_id == job_id)
        return [(int(a), int(b), str(c)) for a, b, c in rows.all()]


def test_job_runs_on_every_arch_and_waits_for_a_missing_one(
    cluster: Cluster, fleet: Fleet, sqlite_url: str
) -> None:
    store = Store.open(sqlite_url, auto_upgrade=True)
    runner = _runner(store, fleet)
    job_id = _submit(store, archs=[A, B, C])

    def a_and_b_done() -> bool:
        with store.session() as s:
            job = repo.get_job_or_raise(s, job_id=job_id)
        return {p.arch: p.succeeded for p in job.progress} == {A: 1, B: 1, C: 0}

    _step_until(runner, a_and_b_done)
    with store.session() as s:
        job = repo.get_job_or_raise(s, job_id=job_id)
        waiting = {p.arch: p for p in job.progress}[C]
    assert job.status == JobStatus.RUNNING
    assert waiting.waiting == 1
    assert waiting.message.startswith(f"waiting: no node with architecture {C} is in the fleet")

    node_c = cluster.add_node(num_cpus=1, resources=_alias_resources(C))  # joins mid-job
    try:
        _run(runner, job_id)
    finally:
        cluster.remove_node(node_c)
    with store.session() as s:
        job = repo.get_job_or_raise(s, job_id=job_id)
        results = repo.list_results(s, job_id=job_id)
        recs = repo.get_recommendations(s, kernel="mla_decode")
        archs = {a.arch: a for a in repo.list_archs(s)}
    assert job.status == JobStatus.SUCCEEDED, job.message
    assert [(p.arch, p.succeeded, p.trials > 0) for p in job.progress] == [
        (A, 1, True),
        (B, 1, True),
        (C, 1, True),
    ]
    assert {t.arch for t in results.items} == {A, B, C}
    assert all(
        t.status.value == "ok" and t.validation and t.validation.passed for t in results.items
    )
    assert {t.gpu_name for t in results.items if t.arch == B} == {
        f"cpu-interpreter [test alias {B}]"
    }
    assert sorted(r.arch for r in recs) == [A, B, C]
    assert all(r.validated and r.median_us > 0 for r in recs)
    assert set(archs) >= {A, B, C}
    assert archs[B].gpu_names == [f"cpu-interpreter [test alias {B}]"]

    # A validate job re-checks the recommendations on every node of the fleet (A and B now).
    # B's was recorded 1000x faster than this node measures: timing drift withdraws it.
    with store.session() as s:
        rec_b = next(r for r in recs if r.arch == B)
        s.get(Recommendation, rec_b.id).median_us = rec_b.median_us / 1000
        check = parse_job_spec(
            # interpreter wall-clock timings are noisy: allow 50x drift; B's is 1000x off
            {
                "kind": "validate",
                "name": "recheck",
                "kernel": "mla_decode",
                "archs": "all",
                "drift_tolerance": 50,
            },
            max_workloads=10,
        )
        check_id = repo.create_job(s, spec=check).id
    _runner(store, fleet).run_until([check_id], timeout_s=LIMIT_S)
    with store.session() as s:
        check_job = repo.get_job_or_raise(s, job_id=check_id)
        after = {
            r.arch: r
            for r in repo.get_recommendations(s, kernel="mla_decode", include_withdrawn=True)
        }
    assert check_job.status == JobStatus.SUCCEEDED, check_job.message
    assert sorted(p.arch for p in check_job.progress) == [A, B]
    assert not after[A].withdrawn
    assert not after[C].withdrawn
    assert after[B].withdrawn
    assert after[B].withdrawn_reason.startswith("failed validation on ")
    assert "timing drift" in after[B].withdrawn_reason
    store.close()


@pytest.mark.postgres
def test_killed_actor_loses_no_trial_and_duplicates_none(fleet: Fleet, pg_url: str) -> None:
    """On the real PostgreSQL: the actor dies right after its first stored trial.

    The kill must land while the actor still has trials to run: once it has produced all of
    them, the runner still receives them and the task ends in one attempt. With 64-token
    sequences (a fraction of a second a trial on the CPU interpreter) that happened once on a
    loaded CI machine; 4096-token sequences take ~1.5 s a trial: seconds of margin.
    """
    store = Store.open(pg_url, auto_upgrade=True)
    runner = _runner(store, fleet)
    job_id = _submit(
        store,
        archs=[A],
        budget={"trials": 4},
        workloads={
            "batch": 1,
            "seqlen": 4096,
            "heads": 2,
            "dtype": "fp16",
            "page_size": 16,
            "d_qk": 96,
            "d_v": 64,
        },
    )
    killed: list[int] = []
    store_trial = runner._store_trial

    def store_then_kill(s: Any, event: Any) -> None:
        store_trial(s, event)
        if not killed:  # kill the actor right after its first trial was stored
            killed.append(event.task_id)
            ray.kill(event.slot.actor, no_restart=True)

    runner._store_trial = store_then_kill  # type: ignore[method-assign]
    _step_until(runner, lambda: bool(killed))
    before = _trials(store, job_id)
    _run(runner, job_id)
    after = _trials(store, job_id)
    with store.session() as s:
        job = repo.get_job_or_raise(s, job_id=job_id)
        task = repo.list_tasks(s, job_id=job_id).items[0]
    assert job.status == JobStatus.SUCCEEDED, job.message
    assert task.attempts == 2, task.message  # the lost attempt, then the retry
    assert set(before) <= set(after)  # nothing stored before the kill was lost
    hashes = [h for _, _, h in after]
    assert len(hashes) == len(set(hashes))  # and nothing was measured twice
    assert len(after) > len(before)
    store.close()


def test_restarted_runner_resumes_without_redoing_trials(fleet: Fleet, sqlite_url: str) -> None:
    fleet.shutdown()  # free the devices: this test's two runners have their own actors
    store = Store.open(sqlite_url, auto_upgrade=True)
    first = _runner(store)
    job_id = _submit(
        store,
        archs=[B],
        budget={"trials": 4},
        workloads={
            "batch": 1,
            "seqlen": 64,
            "heads": 2,
            "dtype": "fp16",
            "page_size": 16,
            "d_qk": 96,
            "d_v": 64,
        },
    )
    _step_until(first, lambda: len(_trials(store, job_id)) >= 1)
    first.fleet.shutdown()  # the runner dies: its actors die with it, the task stays "running"
    del first
    before = _trials(store, job_id)
    with store.session() as s:
        assert repo.list_tasks(s, job_id=job_id).items[0].status == TaskStatus.RUNNING

    second = _runner(store)
    try:
        second.run_until([job_id], timeout_s=LIMIT_S)
    finally:
        second.fleet.shutdown()
    after = _trials(store, job_id)
    with store.session() as s:
        job = repo.get_job_or_raise(s, job_id=job_id)
        task = repo.list_tasks(s, job_id=job_id).items[0]
    assert job.status == JobStatus.SUCCEEDED, job.message
    assert task.attempts == 1  # the interrupted attempt is not counted against the cap
    assert set(before) <= set(after)
    hashes = [h for _, _, h in after]
    assert len(hashes) == len(set(hashes))
    store.close()


def test_cancel_stops_a_running_job(fleet: Fleet, sqlite_url: str) -> None:
    store = Store.open(sqlite_url, auto_upgrade=True)
    runner = _runner(store, fleet)
    job_id = _submit(
        store,
        archs=[A],
        budget={"trials": 4},
        workloads={
            "batch": 1,
            "seqlen": [32, 64],
            "heads": 2,
            "dtype": "fp16",
            "page_size": 16,
            "d_qk": 96,
            "d_v": 64,
        },
    )

    def running() -> bool:
        with store.session() as s:
            return any(p.running for p in repo.get_job_or_raise(s, job_id=job_id).progress)

    _step_until(runner, running)
    with store.session() as s:
        assert repo.cancel_job(s, job_id=job_id).status == JobStatus.CANCELLING
    _run(runner, job_id)
    with store.session() as s:
        job = repo.get_job_or_raise(s, job_id=job_id)
    assert job.status == JobStatus.CANCELLED
    assert job.progress[0].cancelled == 2
    assert job.tasks_done == 2
    store.close()
