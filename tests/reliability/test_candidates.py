"""Candidates that hang, crash their process or return NaN (and, on a GPU, make an illegal
memory access): each is isolated in the worker's child processes, recorded in the database with
its kind, and the sweep goes on to the good config after them.

GPU part (an H200 or any CUDA GPU)::

    python -m pytest tests/reliability/test_candidates.py -m gpu -q
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import reliability_planted as planted
import sqlalchemy as sa

from mlafleet.kernels.registry import register_kernel, unregister_kernel
from mlafleet.orchestrator.db import repo
from mlafleet.orchestrator.db.store import Store
from mlafleet.worker.schemas import TrialResult, TrialStatus
from mlafleet.worker.sweep import SweepOptions
from mlafleet.worker.timing import TimingOptions
from mlafleet.worker.tune import tune

pytestmark = pytest.mark.timeout(600)


@pytest.fixture
def planted_kernel() -> Iterator[None]:
    register_kernel(planted.SPEC, replace=True)
    yield
    unregister_kernel(planted.SPEC.name)


def _options() -> SweepOptions:
    return SweepOptions(
        compile_workers=1,
        compile_timeout_s=60.0,
        run_timeout_s=10.0,
        start_timeout_s=300.0,
        timing=TimingOptions(interpreter_calls=2),
    )


def _sweep_into_db(url: str, problem: Any) -> tuple[list[TrialResult], Any, float]:
    """Tune the planted kernel exhaustively and store every trial; (trials seen, result, s)."""
    seen: list[TrialResult] = []
    began = time.monotonic()
    result = tune("rel_planted", problem, strategy="exhaustive", options=_options(),
                  on_trial=seen.append)  # fmt: skip
    wall_s = time.monotonic() - began
    store = Store.open(url, auto_upgrade=True)
    try:
        with store.session() as s:
            for trial in seen:
                repo.record_trial(s, trial=trial)
    finally:
        store.close()
    return seen, result, wall_s


def _stored(url: str) -> dict[int, tuple[str, str, float | None]]:
    """block_size_k -> (status, error, median_us), read back with SQL."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT config, status, error, median_us FROM trials WHERE kernel = :k"),
                {"k": "rel_planted"},
            ).all()
    finally:
        engine.dispose()
    out = {}
    for config, status, error, median in rows:
        cfg = config if isinstance(config, dict) else json.loads(config)
        assert cfg["block_size_k"] not in out, f"config stored twice: {cfg}"
        out[cfg["block_size_k"]] = (str(status), str(error), median)
    return out


def test_hang_crash_and_nan_are_isolated_recorded_and_the_sweep_goes_on(
    planted_kernel: None, sqlite_url: str, figures: Callable[..., None]
) -> None:
    seen, result, wall_s = _sweep_into_db(sqlite_url, planted.CPU_PROBLEM)
    stored = _stored(sqlite_url)
    k = planted.BEHAVIOURS
    assert sorted(stored) == sorted(k[n] for n in planted.CPU_SPACE)
    assert len(seen) == len(planted.CPU_SPACE)

    status, error, median = stored[k["nan"]]
    assert status == TrialStatus.WRONG_ANSWER
    assert "NaN/inf value(s) where the reference is finite" in error
    assert median is None

    status, error, median = stored[k["hang"]]
    assert status == TrialStatus.RUN_TIMEOUT
    assert "still running after" in error
    assert "killed the worker process" in error
    assert median is None

    status, error, median = stored[k["crash"]]
    assert status == TrialStatus.RUNTIME_ERROR
    assert "died while running this config (killed by SIGSEGV); replaced it" in error
    assert median is None

    for name in ("ok", "ok_last"):  # before and after every failure
        status, error, median = stored[k[name]]
        assert (status, error) == (TrialStatus.OK, ""), name
        assert median is not None
        assert median > 0
    assert result.best is not None
    assert result.best.config["block_size_k"] in (k["ok"], k["ok_last"])
    figures(scenario="planted candidates (CPU)", candidates=len(seen),
            recorded={n: stored[k[n]][0] for n in planted.CPU_SPACE},
            sweep_wall_s=round(wall_s, 1))  # fmt: skip


def test_the_illegal_access_candidate_is_refused_on_the_interpreter(planted_kernel: None) -> None:
    """On the CPU the GPU-only candidate never runs: it is pruned with a reason."""
    from mlafleet.kernels.registry import get_kernel
    from mlafleet.worker.device import cpu_fingerprint
    from mlafleet.worker.sweep import Sweeper

    with Sweeper(get_kernel("rel_planted"), planted.GPU_PROBLEM, cpu_fingerprint(),
                 _options()) as sweeper:  # fmt: skip
        (trial,) = sweeper.run([planted.config("illegal")])
    assert trial.status == TrialStatus.INVALID_CONFIG
    assert trial.error == "the illegal-access candidate needs a GPU"


@pytest.mark.gpu
def test_illegal_memory_access_is_isolated_on_the_gpu(
    planted_kernel: None, sqlite_url: str, figures: Callable[..., None]
) -> None:
    _, result, wall_s = _sweep_into_db(sqlite_url, planted.GPU_PROBLEM)
    stored = _stored(sqlite_url)
    k = planted.BEHAVIOURS
    status, error, _ = stored[k["illegal"]]
    assert status in (TrialStatus.RUNTIME_ERROR, TrialStatus.COMPILE_ERROR), error
    assert "illegal" in error.lower() or "died while" in error, error
    status, error, _ = stored[k["nan"]]
    assert status == TrialStatus.WRONG_ANSWER, error
    for name in ("ok", "ok_last"):  # the config after the poisoned context still runs
        status, error, median = stored[k[name]]
        assert (status, error) == (TrialStatus.OK, ""), (name, error)
        assert median is not None
        assert median > 0
    assert result.best is not None
    figures(scenario="illegal memory access (GPU)", recorded={n: stored[k[n]][0]
            for n in planted.GPU_SPACE}, error=stored[k["illegal"]][1][:300],
            sweep_wall_s=round(wall_s, 1))  # fmt: skip


@pytest.mark.slow
def test_a_resumed_task_keeps_its_trial_budget(planted_kernel: None) -> None:
    """A task with a budget of 3 trials, interrupted after its default and one trial, then
    resumed with those two as ``known``: the task ends with 3 + 1 (default) trials in all."""
    budget = 3
    first = tune("rel_planted", planted.CLEAN_PROBLEM, strategy="random", budget_trials=budget,
                 seed=5, options=_options())  # fmt: skip
    assert len(first.trials) == budget + 1  # the default, then the budget
    interrupted = [first.default, *(t for t in first.trials if not t.is_default)][:2]
    resumed = tune("rel_planted", planted.CLEAN_PROBLEM, strategy="random", budget_trials=budget,
                   seed=5, options=_options(), known=interrupted)  # fmt: skip
    configs = {json.dumps(t.config, sort_keys=True) for t in [*interrupted, *resumed.trials]}
    assert len(configs) == budget + 1, sorted(configs)
