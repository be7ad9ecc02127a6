"""The repo on both backends (a fresh SQLite file and a fresh PostgreSQL database per test)."""

from __future__ import annotations

import math
import threading

import pytest
from orch_factories import cfg, make_fingerprint, make_trial, tiny_spec

from mlafleet.kernels.bundle import WorkloadBucket
from mlafleet.orchestrator.db import repo
from mlafleet.orchestrator.db import repo_lifecycle as life
from mlafleet.orchestrator.db.models import Trial
from mlafleet.orchestrator.db.store import Store
from mlafleet.orchestrator.errors import JobStateError, NotFoundError
from mlafleet.orchestrator.jobspec import parse_job_spec
from mlafleet.orchestrator.schemas import JobStatus, TaskStatus
from mlafleet.worker.schemas import TrialStatus


def _job_with_task(store: Store, arch: str = "sm_90") -> tuple[int, int]:
    spec = parse_job_spec(tiny_spec(archs=[arch]), max_workloads=10)
    with store.session() as s:
        job = repo.create_job(s, spec=spec)
        life.expand_tune_job(s, job_id=job.id, spec=spec, archs=[arch])
        task = repo.list_tasks(s, job_id=job.id).items[0]
    return job.id, task.id


def test_job_lifecycle_and_progress(store: Store) -> None:
    spec = parse_job_spec(
        tiny_spec(archs=["sm_90", "gfx942"], workloads={"batch": [1, 2], "seqlen": 16, "heads": 2}),
        max_workloads=10,
    )
    with store.session() as s:
        job = repo.create_job(s, spec=spec)
        assert job.status == JobStatus.QUEUED
        assert job.progress == []
        assert life.expand_tune_job(s, job_id=job.id, spec=spec, archs=["sm_90"]) == 4
        life.set_waiting(s, available={"sm_90"})
    with store.session() as s:
        got = repo.get_job_or_raise(s, job_id=job.id)
        assert got.status == JobStatus.RUNNING
        assert got.tasks_total == 4
        assert got.tasks_done == 0
        by_arch = {p.arch: p for p in got.progress}
        assert by_arch["sm_90"].queued == 2
        assert by_arch["gfx942"].waiting == 2
        assert "no node with architecture gfx942" in by_arch["gfx942"].message
        tasks = repo.list_tasks(s, job_id=job.id, arch="sm_90")
        assert [t.index for t in tasks.items] == [0, 1]
        assert tasks.total == 2
        # axes left out of the grid take the DeepSeek defaults: bf16, pages of 64
        assert tasks.items[0].bucket == WorkloadBucket(
            batch=1, seqlen=16, heads=2, dtype="bf16", page_size=64
        )
    with store.session() as s:
        page = repo.list_jobs(s, status=JobStatus.RUNNING, limit=1)
        assert page.total == 1
        assert page.items[0].id == job.id
        assert repo.list_jobs(s, status=JobStatus.QUEUED).total == 0
        cancelled = repo.cancel_job(s, job_id=job.id)
        assert cancelled.status == JobStatus.CANCELLING
        assert life.finalize_jobs(s) == [job.id]
    with store.session() as s:
        done = repo.get_job_or_raise(s, job_id=job.id)
        assert done.status == JobStatus.CANCELLED
        assert done.tasks_done == 4
        assert {p.cancelled for p in done.progress} == {2}
        with pytest.raises(JobStateError, match=f"job {job.id} already cancelled"):
            repo.cancel_job(s, job_id=job.id)


def test_missing_ids_and_bad_paging(store: Store) -> None:
    with store.session() as s:
        assert repo.get_job(s, job_id=999) is None
        with pytest.raises(NotFoundError, match="job 999 not found"):
            repo.get_job_or_raise(s, job_id=999)
        with pytest.raises(NotFoundError, match="job 999 not found"):
            repo.cancel_job(s, job_id=999)
        with pytest.raises(ValueError, match=r"limit: expected 1\.\.1000, got 0"):
            repo.list_jobs(s, limit=0)
        with pytest.raises(ValueError, match="offset: expected >= 0, got -1"):
            repo.list_results(s, offset=-1)


def test_queued_job_cancels_at_once(store: Store) -> None:
    with store.session() as s:
        job = repo.create_job(s, spec=parse_job_spec(tiny_spec(), max_workloads=10))
        assert repo.cancel_job(s, job_id=job.id).status == JobStatus.CANCELLED


def test_record_trial_is_idempotent_and_keeps_nan(store: Store) -> None:
    job_id, task_id = _job_with_task(store)
    nan_trial = make_trial(
        config=cfg(16), status=TrialStatus.WRONG_ANSWER, passed=False, max_abs_err=math.nan
    )
    with store.session() as s:
        first = repo.record_trial(
            s, trial=make_trial(config=cfg(32)), task_id=task_id, job_id=job_id
        )
        again = repo.record_trial(
            s, trial=make_trial(config=cfg(32)), task_id=task_id, job_id=job_id
        )
        bad = repo.record_trial(s, trial=nan_trial, task_id=task_id, job_id=job_id)
    assert first is not None
    assert bad is not None
    assert again is None
    other_env = make_trial(config=cfg(32), device=make_fingerprint(triton="3.7.0"))
    with store.session() as s:
        # the same config under another Triton is another fact
        assert repo.record_trial(s, trial=other_env, task_id=task_id, job_id=job_id) is not None
    with store.session() as s:
        results = repo.list_results(s, job_id=job_id)
        assert results.total == 3
        wrong = repo.list_results(s, job_id=job_id, status=TrialStatus.WRONG_ANSWER).items
        assert len(wrong) == 1
        assert wrong[0].validation is not None
        assert math.isnan(wrong[0].validation.max_abs_err)
        assert wrong[0].median_us is None  # only ok trials have a median column value
        assert len(repo.known_trials(s, task_id=task_id)) == 3
        assert repo.list_results(s, arch="sm_90", kernel="mla_decode").total == 3
        assert repo.list_results(s, arch="sm_80").total == 0


def test_recommendation_is_the_fastest_validated_config(store: Store) -> None:
    job_id, task_id = _job_with_task(store)
    trials = [
        make_trial(config=cfg(16), median_us=200.0, is_default=True),
        make_trial(config=cfg(32), median_us=120.0),
        make_trial(config=cfg(64), median_us=80.0, status=TrialStatus.WRONG_ANSWER, passed=False),
        make_trial(config=cfg(32, warps=8), median_us=100.0),
    ]
    with store.session() as s:
        for t in trials:
            trial_id = repo.record_trial(s, trial=t, task_id=task_id, job_id=job_id)
            assert trial_id is not None
            if t.status == TrialStatus.OK:
                repo.refresh_for_trial(s, trial_id=trial_id)
    with store.session() as s:
        recs = repo.get_recommendations(s, kernel="mla_decode", arch="sm_90")
        assert len(recs) == 1
        rec = recs[0]
        assert rec.config == cfg(32, warps=8)
        assert rec.median_us == 100.0
        assert rec.default_median_us == 200.0
        assert rec.speedup_vs_default == pytest.approx(2.0)
        assert rec.noise == pytest.approx(0.02)
        assert rec.validated
        assert rec.job_id == job_id
        entries = repo.bundle_entries(s, arch="sm_90")
        assert [e.config for e in entries] == [cfg(32, warps=8)]
        assert entries[0].gpu_name == "NVIDIA H200"
        assert entries[0].software.triton == "3.6.0"
        withdrawn = repo.withdraw_recommendation(
            s, recommendation_id=rec.id, reason="wrong answer on node-b"
        )
        assert withdrawn.withdrawn
        assert withdrawn.withdrawn_reason == "wrong answer on node-b"
    with store.session() as s:
        assert repo.get_recommendations(s, kernel="mla_decode") == []
        assert repo.bundle_entries(s) == []
        kept = repo.get_recommendations(s, kernel="mla_decode", include_withdrawn=True)
        assert [r.withdrawn_reason for r in kept] == ["wrong answer on node-b"]
        archs = repo.list_archs(s)
        assert [a.arch for a in archs] == ["sm_90"]
        assert archs[0].nodes == ["node-a"]
        assert archs[0].gpus == 1
        assert archs[0].gpu_names == ["NVIDIA H200"]
        assert archs[0].tuned[0].withdrawn == 1
        assert archs[0].tuned[0].trials == 4
        with pytest.raises(ValueError, match="unknown kernel 'mla_encode'"):
            repo.get_recommendations(s, kernel="mla_encode")


def test_concurrent_writers_never_duplicate(store: Store) -> None:
    """Four threads, each with its own sessions, record overlapping trials of one task."""
    job_id, task_id = _job_with_task(store)
    configs = [cfg(k, warps=w) for k in (16, 32, 64) for w in (4, 8)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def write(seed: int) -> None:
        try:
            barrier.wait()
            for i, config in enumerate(configs):
                dev = make_fingerprint(host=f"node-{seed}")
                trial = make_trial(config=config, median_us=100.0 + i + seed, device=dev)
                with store.session() as s:
                    new = repo.record_trial(s, trial=trial, task_id=task_id, job_id=job_id)
                    if new is not None:
                        repo.refresh_for_trial(s, trial_id=new)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with store.session() as s:
        hashes = s.query(Trial.config_hash).filter(Trial.task_id == task_id).all()
        assert len(hashes) == len(configs) == len(set(hashes))
        assert len(repo.get_recommendations(s, kernel="mla_decode")) == 1
        assert len(repo.list_archs(s)[0].nodes) == 4


def test_retry_cap_and_runner_recovery(store: Store) -> None:
    job_id, task_id = _job_with_task(store)
    with store.session() as s:
        life.start_task(s, task_id=task_id, where="sm_90 on node-a")
        assert life.retry_task(s, task_id=task_id, reason="actor died", max_attempts=2) == (
            TaskStatus.QUEUED
        )
        life.start_task(s, task_id=task_id, where="sm_90 on node-b")
        assert life.recover_interrupted(s) == 1  # a runner restart does not count an attempt
        life.start_task(s, task_id=task_id, where="sm_90 on node-b")
        assert life.retry_task(s, task_id=task_id, reason="node lost", max_attempts=2) == (
            TaskStatus.FAILED
        )
        assert life.finalize_jobs(s) == [job_id]
    with store.session() as s:
        job = repo.get_job_or_raise(s, job_id=job_id)
        assert job.status == JobStatus.FAILED
        assert job.message == "all 1 tasks failed"
        task = repo.list_tasks(s, job_id=job_id).items[0]
        assert task.attempts == 2
        assert task.message == "failed after 2 attempts: node lost"


def test_validate_job_checks_every_recommendation_on_every_node(store: Store) -> None:
    _, task_id = _job_with_task(store)
    with store.session() as s:
        trial_id = repo.record_trial(s, trial=make_trial(median_us=50.0), task_id=task_id)
        assert trial_id is not None
        rec = repo.refresh_for_trial(s, trial_id=trial_id)
        assert rec is not None
    spec = parse_job_spec(
        {"kind": "validate", "name": "v", "kernel": "mla_decode", "archs": ["sm_90", "sm_80"]},
        max_workloads=10,
    )
    with store.session() as s:
        check = repo.create_job(s, spec=spec)
        n = life.expand_validate_job(
            s, job_id=check.id, spec=spec, nodes_by_arch={"sm_90": ["node-1", "node-2"]}
        )
        assert n == 2  # one recommendation x two sm_90 nodes; sm_80 has nothing to check
        tasks = repo.list_tasks(s, job_id=check.id).items
        assert sorted(t.node for t in tasks) == ["node-1", "node-2"]
        assert all(t.config == rec.config for t in tasks)
        work = [w for w in life.claimable(s, arch="sm_90", limit=10) if w.job_id == check.id]
        assert [w.recommendation_id for w in work] == [rec.id, rec.id]
        assert {w.recorded_median_us for w in work} == {50.0}
        bundle_spec = parse_job_spec(
            {
                "kind": "validate",
                "name": "b",
                "kernel": "mla_decode",
                "bundle": {"entries": [e.model_dump(mode="json") for e in repo.bundle_entries(s)]},
            },
            max_workloads=10,
        )
        other = repo.create_job(s, spec=bundle_spec)
        assert (
            life.expand_validate_job(
                s, job_id=other.id, spec=bundle_spec, nodes_by_arch={"sm_90": ["node-1"]}
            )
            == 1
        )
        bundle_task = repo.list_tasks(s, job_id=other.id).items[0]
        assert bundle_task.bucket == rec.bucket
        assert bundle_task.config == rec.config


def test_fp8_precisions_get_their_own_tasks_recommendations_and_bundle_entries(
    store: Store,
) -> None:
    workloads = {**tiny_spec()["workloads"], "dtype": ["bf16", "fp8_e4m3", "fp8_e4m3_qkv"]}
    spec = parse_job_spec(tiny_spec(archs=["sm_90"], workloads=workloads), max_workloads=10)
    with store.session() as s:
        job = repo.create_job(s, spec=spec)
        life.expand_tune_job(s, job_id=job.id, spec=spec, archs=["sm_90"])
        tasks = repo.list_tasks(s, job_id=job.id).items
    by_dtype = {t.bucket.dtype: t for t in tasks}
    assert sorted(by_dtype) == ["bf16", "fp8_e4m3", "fp8_e4m3_qkv"]
    fp8_q = by_dtype["fp8_e4m3_qkv"]
    assert (fp8_q.problem["kv_dtype"], fp8_q.problem["q_dtype"]) == ("fp8_e4m3", "fp8_e4m3")
    assert "q_dtype" not in by_dtype["fp8_e4m3"].problem  # identity as before the field
    with store.session() as s:
        for dtype, us in (("fp8_e4m3", 90.0), ("fp8_e4m3_qkv", 60.0)):
            task = by_dtype[dtype]
            trial = make_trial(config=cfg(16, warps=8), median_us=us, problem=task.problem)
            trial_id = repo.record_trial(s, trial=trial, task_id=task.id, job_id=job.id)
            assert trial_id is not None
            repo.refresh_for_trial(s, trial_id=trial_id)
    with store.session() as s:
        entries = {e.bucket.dtype: e for e in repo.bundle_entries(s, arch="sm_90")}
    assert sorted(entries) == ["fp8_e4m3", "fp8_e4m3_qkv"]
    assert entries["fp8_e4m3_qkv"].median_us == 60.0
    assert entries["fp8_e4m3_qkv"].bucket == fp8_q.bucket
