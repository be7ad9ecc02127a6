"""tune(): winner and default, budgets, resume from the cache or from the caller's trials."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from worker_factories import INTERPRETER_ONLY

from mlafleet.worker.results_cache import ResultsCache
from mlafleet.worker.schemas import TrialStatus
from mlafleet.worker.sweep import Sweeper, SweepOptions
from mlafleet.worker.tune import tune


@pytest.fixture
def measured(monkeypatch: pytest.MonkeyPatch) -> list[list[int]]:
    """Records the block_size_k of every config the Sweeper is asked to measure."""
    calls: list[list[int]] = []
    original = Sweeper.run

    def spy(self: Sweeper, configs: Any, **kwargs: Any) -> Any:
        calls.append([c.block_size_k for c in configs])
        return original(self, configs, **kwargs)

    monkeypatch.setattr(Sweeper, "run", spy)
    return calls


@INTERPRETER_ONLY
def test_tune_then_resume_measures_nothing_twice(
    planted: Any, fast_options: SweepOptions, tmp_path: Path, measured: list[list[int]]
) -> None:
    path = tmp_path / "trials.jsonl"
    first = tune("planted", planted.PROBLEM, options=fast_options, cache=ResultsCache(path))
    assert measured == [[16, 32, 48]]  # the default with the first batch, measured once
    assert [t.status for t in first.trials] == [TrialStatus.OK] * 3
    assert first.default is not None
    assert first.default.config["block_size_k"] == 16
    assert first.default.is_default
    assert first.best is not None
    assert first.best.config["block_size_k"] in (16, 32)  # not "slow"
    assert first.speedup_vs_default is not None
    assert first.speedup_vs_default >= 1.0
    assert first.compile_wall_s == 0.0
    assert first.timing_wall_s > 0.0
    assert first.wall_s >= first.timing_wall_s
    assert len(path.read_text().splitlines()) == 3

    measured.clear()
    again = tune("planted", planted.PROBLEM, options=fast_options, cache=ResultsCache(path))
    assert measured == []
    assert again.trials == first.trials
    assert len(path.read_text().splitlines()) == 3

    from_caller = tune(
        "planted", planted.PROBLEM, options=fast_options, known=first.trials, strategy="random"
    )
    assert measured == []
    assert {t.config["block_size_k"] for t in from_caller.trials} == {16, 32, 48}


def test_budget_caps_new_measurements(
    planted: Any, fast_options: SweepOptions, measured: list[list[int]]
) -> None:
    result = tune("planted", planted.PROBLEM, options=fast_options, budget_trials=1)
    assert measured == [[16], [32]]  # ok16 (the default) is reused, not re-measured
    assert [t.config["block_size_k"] for t in result.trials] == [16, 32]


def test_bad_arguments_say_what_is_expected(planted: Any) -> None:
    with pytest.raises(ValueError, match="strategy: expected one of"):
        tune("planted", planted.PROBLEM, strategy="grid")
    with pytest.raises(ValueError, match="budget_trials: expected a positive number"):
        tune("planted", planted.PROBLEM, budget_trials=0)
    with pytest.raises(ValueError, match="unknown kernel 'nope'"):
        tune("nope", planted.PROBLEM)
    with pytest.raises(ValueError, match="problem for planted"):
        tune("planted", {"batch": 1, "heads": 3})
    with pytest.raises(ValueError, match="expected a DecodeProblem"):
        tune("planted", 42)
