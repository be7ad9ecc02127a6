"""Search strategies: order, uniqueness, and the model-based one on a synthetic cost."""

from __future__ import annotations

import math
import random

import pytest
from worker_factories import make_trial

from mlafleet.kernels.configs import DecodeConfig, DecodeProblem, DeviceLimits
from mlafleet.kernels.decode_tuning import decode_search_space
from mlafleet.worker.schemas import TrialStatus
from mlafleet.worker.search import STRATEGIES, make_strategy, objective_of

SPACE = [
    DecodeConfig(block_size_q=q, block_size_k=k, num_warps=w, num_stages=s, num_kv_splits="auto")
    for q in (16, 32, 64)
    for k in (16, 32, 64)
    for w in (4, 8)
    for s in (1, 2)
]


def _drain(strategy, batch: int) -> list[DecodeConfig]:  # type: ignore[no-untyped-def]
    seen: list[DecodeConfig] = []
    while proposals := strategy.propose(batch):
        for cfg in proposals:
            strategy.tell(cfg, make_trial(median_us=10.0))
        seen += proposals
    return seen


def test_exhaustive_visits_the_space_in_order() -> None:
    assert _drain(make_strategy("exhaustive", SPACE), batch=5) == SPACE


def test_random_is_a_seeded_permutation() -> None:
    first = _drain(make_strategy("random", SPACE, seed=3), batch=7)
    assert sorted(map(repr, first)) == sorted(map(repr, SPACE))
    assert first != SPACE
    assert first == _drain(make_strategy("random", SPACE, seed=3), batch=1)


def test_unknown_strategy_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"expected one of \['exhaustive', 'random', 'tpe'\]"):
        make_strategy("grid", SPACE)
    assert STRATEGIES == ("exhaustive", "random", "tpe")


def test_objective_is_log_time_of_ok_trials_only() -> None:
    assert objective_of(make_trial(median_us=math.e)) == pytest.approx(1.0)
    assert objective_of(make_trial(status=TrialStatus.WRONG_ANSWER)) is None


def test_tpe_proposes_each_space_config_at_most_once_until_exhausted() -> None:
    tpe = make_strategy("tpe", SPACE, seed=0)
    seen = _drain(tpe, batch=3)
    assert len(seen) == len(SPACE)
    assert set(seen) == set(SPACE)


def test_tpe_finds_a_near_best_config_in_a_quarter_of_the_space() -> None:
    problem = DecodeProblem(batch=128, s_q=1, h_q=128, seqlen=4096)
    space = decode_search_space(problem, DeviceLimits(arch="sm_90", sm_count=132))
    rng = random.Random(1)
    noise = {c: rng.uniform(0.95, 1.05) for c in space}

    def cost(c: DecodeConfig) -> float:  # a smooth bowl with noise, best near (64, 32, 8, 2)
        splits = c.num_kv_splits if c.num_kv_splits != "auto" else 4
        return noise[c] * (
            100
            + 30 * abs(math.log2(c.block_size_q) - 6)
            + 20 * abs(math.log2(c.block_size_k) - 5)
            + 2.5 * abs(c.num_warps - 8)
            + 5 * abs(c.num_stages - 2)
            + 10 * abs(math.log2(splits) - 2)
        )

    budget = len(space) // 4
    tpe = make_strategy("tpe", space, seed=0, budget=budget)
    measured: list[DecodeConfig] = []
    while len(measured) < budget and (batch := tpe.propose(min(4, budget - len(measured)))):
        for cfg in batch:
            assert cfg in space
            assert cfg not in measured
            tpe.tell(cfg, make_trial(median_us=cost(cfg)))
            measured.append(cfg)
    assert len(measured) == budget
    assert min(map(cost, measured)) <= 1.03 * min(map(cost, space))
