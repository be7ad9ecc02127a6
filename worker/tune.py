"""Tune one kernel for one problem on one local device.

``tune`` measures the kernel's default config, then walks the pruned tuning space with a search
strategy inside a budget of trials and/or minutes, compiling each batch of candidates in
parallel before timing them one by one in the timing process. Configs already measured in the
same environment (the results cache, or trials handed in by the caller) are reused, not
measured again. Every candidate ends as a ``TrialResult``; the winner is the fastest correct one
whose error is within a small factor of the most accurate (``validate.winner``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from mlafleet.kernels.registry import KernelSpec, get_kernel

from .device import fingerprint, limits_of
from .results_cache import ResultsCache
from .schemas import DeviceFingerprint, TrialResult, TuneResult
from .search import STRATEGIES, Strategy, make_strategy
from .sweep import Sweeper, SweepOptions, default_compile_workers
from .validate import error_floor, winner

logger = logging.getLogger(__name__)


def problem_of(spec: KernelSpec, problem: Any) -> Any:
    """``problem`` as ``spec``'s problem dataclass (a mapping is converted).

    Raises:
        ValueError: a mapping with unknown or missing fields, or a problem of another kernel.
    """
    if isinstance(problem, Mapping):
        try:
            return spec.problem_from_dict(dict(problem))
        except TypeError as exc:
            raise ValueError(f"problem for {spec.name}: {exc}") from None
    if not isinstance(problem, spec.problem_type):
        raise ValueError(
            f"problem: expected a {spec.problem_type.__name__} for kernel {spec.name}, "
            f"got {type(problem).__name__}"
        )
    return problem


def _batch_size(strategy: Strategy, *, timed_budget: bool, workers: int, on_gpu: bool) -> int:
    if strategy.name == "tpe":
        return max(1, min(workers, 4)) if on_gpu else 1
    if not timed_budget:
        return max(1, len(strategy.space))
    return max(1, 2 * workers) if on_gpu else 1


def tune(
    kernel: str,
    problem: Any,
    *,
    device_index: int = 0,
    strategy: str = "exhaustive",
    budget_trials: int | None = None,
    budget_minutes: float | None = None,
    seed: int = 0,
    cache: ResultsCache | None = None,
    known: Iterable[TrialResult] = (),
    options: SweepOptions | None = None,
    on_trial: Callable[[TrialResult], None] | None = None,
    on_plan: Callable[[int], None] | None = None,
    device: DeviceFingerprint | None = None,
) -> TuneResult:
    """Search the configs of ``kernel`` for ``problem`` on local device ``device_index``.

    Args:
        kernel: registry name (``mla_decode``, ``mla_prefill``, or a registered extra).
        problem: the kernel's problem dataclass, or a mapping of its fields.
        device_index: local GPU (0 = the CPU interpreter when there is none).
        strategy: ``exhaustive``, ``random`` or ``tpe``.
        budget_trials: new measurements at most (the default config not counted); None: no cap.
        budget_minutes: stop proposing new batches after this long; None: no limit.
        seed: seeds the strategy and the validation inputs.
        cache: known results, also where new ones are stored; None: an in-memory store.
        known: more known trials (e.g. from the orchestrator's database).
        options: isolation and measurement settings.
        on_trial: called with every trial as it ends (reused ones included).
        on_plan: called with the number of candidates the sweep may visit (for progress bars).
        device: the fingerprint, if the caller already has it (else read from the device).

    Returns:
        Every trial, the winner, the default's trial and the wall times.

    Raises:
        ValueError: unknown kernel or strategy, a bad problem, or a negative budget.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy: expected one of {list(STRATEGIES)}, got {strategy!r}")
    for name, value in (("budget_trials", budget_trials), ("budget_minutes", budget_minutes)):
        if value is not None and value <= 0:
            raise ValueError(f"{name}: expected a positive number or None, got {value}")
    spec = get_kernel(kernel)
    prob = problem_of(spec, problem)
    dev = device or fingerprint(device_index)
    limits = limits_of(dev)
    space = list(spec.fn("search_space")(prob, limits))
    default_cfg = spec.fn("default_config")(prob, limits)
    store = cache if cache is not None else ResultsCache(None)
    for trial in known:
        store.remember(trial)
    search = make_strategy(strategy, space, seed=seed, budget=budget_trials)
    opts = options or SweepOptions(seed=seed)
    if on_plan is not None:
        on_plan(1 + min(len(space), budget_trials or len(space)))
    workers = opts.compile_workers or default_compile_workers()
    batch = _batch_size(
        search, timed_budget=budget_minutes is not None, workers=workers, on_gpu=dev.vendor != "cpu"
    )
    started = time.monotonic()
    deadline = started + budget_minutes * 60 if budget_minutes is not None else None
    trials: dict[Any, TrialResult] = {}
    measured = 0

    def report(trial: TrialResult) -> None:
        if on_trial is not None:
            on_trial(trial)

    def evaluate(sweeper: Sweeper, configs: list[Any]) -> int:
        """Results of ``configs`` (reused or measured) into ``trials``; returns how many of them
        count against ``budget_trials``: every non-default config, reused ones included, so a
        resumed task ends with the same number of trials as an uninterrupted one."""
        fresh: list[Any] = []
        counted: list[Any] = []
        for cfg in configs:
            if cfg in trials or cfg in counted:
                continue
            counted.append(cfg)
            hit = store.get(spec.name, prob.as_dict(), cfg.as_dict(), dev)
            if hit is not None:
                hit = hit.model_copy(update={"is_default": cfg == default_cfg})
                trials[cfg] = hit
                report(hit)
            else:
                fresh.append(cfg)
        if fresh:
            for cfg, trial in zip(
                fresh, sweeper.run(fresh, default_config=default_cfg, on_trial=report), strict=True
            ):
                trials[cfg] = trial
                store.add(trial)
        return sum(1 for cfg in counted if cfg != default_cfg)

    with Sweeper(spec, prob, dev, opts) as sweeper:
        pending_default = [default_cfg]  # measured with the first batch, not counted
        while True:
            stop = budget_trials is not None and measured >= budget_trials
            if deadline is not None and time.monotonic() >= deadline:
                logger.info("minutes budget spent after %d new measurements", measured)
                stop = True
            room = batch if budget_trials is None else min(batch, budget_trials - measured)
            proposals = [] if stop else search.propose(room)
            if not proposals and not pending_default:
                break
            measured += evaluate(sweeper, pending_default + proposals)
            pending_default = []
            for cfg in proposals:
                search.tell(cfg, trials[cfg])
        compile_wall_s, timing_wall_s = sweeper.compile_wall_s, sweeper.timing_wall_s
    all_trials = list(trials.values())
    return TuneResult(
        kernel=spec.name,
        problem=prob.as_dict(),
        device=dev,
        strategy=strategy,
        trials=all_trials,
        best=winner(all_trials, floor=error_floor(prob)),
        default=trials.get(default_cfg),
        wall_s=time.monotonic() - started,
        compile_wall_s=compile_wall_s,
        timing_wall_s=timing_wall_s,
    )
