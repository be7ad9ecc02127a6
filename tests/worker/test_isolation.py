"""Planted candidates that hang, kill their process, are wrong or cannot compile: each is
recorded with its kind while the sweep completes."""

from __future__ import annotations

from typing import Any

from worker_factories import INTERPRETER_ONLY

from mlafleet.kernels.registry import get_kernel
from mlafleet.worker.device import cpu_fingerprint
from mlafleet.worker.isolation import ChildPool
from mlafleet.worker.protocol import ChildRequest
from mlafleet.worker.schemas import TrialStatus
from mlafleet.worker.sweep import Sweeper, SweepOptions
from mlafleet.worker.tune import tune

EXPECTED = {
    "ok16": TrialStatus.OK,
    "compile_error": TrialStatus.COMPILE_ERROR,
    "wrong": TrialStatus.WRONG_ANSWER,
    "hang": TrialStatus.RUN_TIMEOUT,
    "exit": TrialStatus.RUNTIME_ERROR,
    "sigkill": TrialStatus.RUNTIME_ERROR,
    "raise": TrialStatus.RUNTIME_ERROR,
    "ok32": TrialStatus.OK,
}


@INTERPRETER_ONLY
def test_every_planted_failure_is_recorded_and_the_sweep_completes(
    planted: Any, fast_options: SweepOptions
) -> None:
    seen: list[str] = []
    result = tune(
        "planted",
        planted.FAILING_PROBLEM,
        options=fast_options,
        on_trial=lambda t: seen.append(t.status.value),
    )
    by_k = {t.config["block_size_k"]: t for t in result.trials}
    assert len(result.trials) == len(EXPECTED)
    assert len(seen) == len(EXPECTED)
    for name, status in EXPECTED.items():
        trial = by_k[planted.BEHAVIOURS[name]]
        assert trial.status == status, (name, trial.error)
    assert "power of 2" in by_k[24].error
    assert "outside atol" in by_k[64].error
    assert by_k[64].validation is not None
    assert not by_k[64].validation.passed
    assert "still running after" in by_k[128].error
    assert "exit code 7" in by_k[256].error
    assert "SIGKILL" in by_k[512].error
    assert "planted runtime failure" in by_k[1024].error
    for name in ("ok16", "ok32"):
        ok = by_k[planted.BEHAVIOURS[name]]
        assert ok.timing is not None
        assert ok.timing.method == "wall_clock"
        assert ok.validation is not None
        assert ok.validation.passed
        assert ok.compile_s == 0.0  # nothing to compile on the interpreter
    assert result.best is not None
    assert result.best.config["block_size_k"] in (16, 32)
    assert result.default is not None
    assert result.default.is_default


def test_invalid_config_is_pruned_before_running(planted: Any, fast_options: SweepOptions) -> None:
    spec = get_kernel("planted")
    with Sweeper(spec, planted.PROBLEM, cpu_fingerprint(), fast_options) as sweeper:
        (trial,) = sweeper.run([planted.config("invalid")])
        assert sweeper._timer is None  # no child process was needed
    assert trial.status == TrialStatus.INVALID_CONFIG
    assert trial.error == "block_size_k 8 is under 16"


@INTERPRETER_ONLY
def test_compile_pool_classifies_hangs_and_deaths_by_phase(planted: Any) -> None:
    spec = get_kernel("planted")

    def req(name: str) -> ChildRequest:
        return ChildRequest(
            op="compile",
            spec=spec,
            problem=planted.PROBLEM.as_dict(),
            config=planted.config(name).as_dict(),
            seed=1,
        )

    names = ["ok16", "hang", "exit", "compile_error", "ok32"]
    with ChildPool(size=2, device_index=0, on_gpu=False) as pool:
        replies = pool.run(
            [req(n) for n in names],
            first_timeout_s=10.0,
            then_timeout_s=10.0,
            first_phase="compile",
        )
        assert pool.replaced == 2
        assert all(child.alive() for child in pool.children)
    statuses = [r.status for r in replies]
    assert statuses == [
        TrialStatus.OK,
        TrialStatus.COMPILE_TIMEOUT,
        TrialStatus.COMPILE_ERROR,
        TrialStatus.COMPILE_ERROR,
        TrialStatus.OK,
    ]
    assert "died while compiling" in replies[2].error
    assert replies[0].compile_s is not None
    assert replies[0].compile_s > 0
