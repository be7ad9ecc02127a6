"""Search strategies over a pruned tuning space.

A strategy proposes configs in batches and is told each one's result:

- ``exhaustive``: every config of the space, in the space's order;
- ``random``: the space in a seeded random order (stop it with a budget);
- ``tpe``: Optuna's Tree-structured Parzen Estimator over the knob grid (one categorical per
  knob, the values the space uses). A suggestion outside the pruned space is snapped to the
  nearest config inside it (fewest differing knobs); a suggestion already measured is answered
  from the known result and asked again, so no config is measured twice.

Budgets (trials, minutes) are applied by the caller (``tune``) between batches.
"""

from __future__ import annotations

import dataclasses
import math
import random
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from .schemas import TrialResult, TrialStatus

STRATEGIES: tuple[str, ...] = ("exhaustive", "random", "tpe")


class Strategy(ABC):
    """Proposes configs of ``space``; learns from results."""

    name: str = ""

    def __init__(self, space: Sequence[Any]) -> None:
        self.space = list(space)

    @abstractmethod
    def propose(self, n: int) -> list[Any]:
        """Up to ``n`` configs not proposed before; an empty list when the space is done."""

    def tell(self, config: Any, trial: TrialResult) -> None:
        """The result of a proposed config (model-based strategies learn from it)."""
        del config, trial


class Exhaustive(Strategy):
    name = "exhaustive"

    def __init__(self, space: Sequence[Any]) -> None:
        super().__init__(space)
        self._next = 0

    def propose(self, n: int) -> list[Any]:
        batch = self.space[self._next : self._next + max(0, n)]
        self._next += len(batch)
        return batch


class RandomSearch(Exhaustive):
    name = "random"

    def __init__(self, space: Sequence[Any], *, seed: int = 0) -> None:
        shuffled = list(space)
        random.Random(seed).shuffle(shuffled)
        super().__init__(shuffled)


def objective_of(trial: TrialResult) -> float | None:
    """log(median µs) of an ok, timed trial; None for anything else (a failed trial)."""
    if trial.status != TrialStatus.OK or trial.timing is None or trial.timing.median_us <= 0:
        return None
    return math.log(trial.timing.median_us)


class TPESearch(Strategy):
    """Optuna TPE over the knobs of the space's configs.

    Args:
        space: the pruned candidates (config dataclasses of one type).
        seed: sampler seed.
        n_startup_trials: random trials before the model is used.
        max_attempts: suggestions tried per proposal before a random unmeasured config is taken.
        budget: the trials the caller will ask for, if known: the last third of them refine
            around the best config so far (its unmeasured nearest neighbours in the knob grid)
            instead of asking the model.
    """

    name = "tpe"

    def __init__(
        self,
        space: Sequence[Any],
        *,
        seed: int = 0,
        n_startup_trials: int = 5,
        max_attempts: int = 20,
        budget: int | None = None,
    ) -> None:
        import optuna

        super().__init__(space)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self._optuna = optuna
        self._rng = random.Random(seed)
        self._knobs = [f.name for f in dataclasses.fields(self.space[0])] if self.space else []
        self._choices = {
            k: sorted({getattr(c, k) for c in self.space}, key=lambda v: (isinstance(v, str), v))
            for k in self._knobs
        }
        sampler = optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=n_startup_trials, constant_liar=True, multivariate=True
        )
        self.study = optuna.create_study(direction="minimize", sampler=sampler)
        self._members = set(self.space)
        self._values: dict[Any, float | None] = {}
        self._pending: dict[Any, list[Any]] = {}
        self.max_attempts = max_attempts
        self._proposed = 0
        self._refine_from = budget - max(2, budget // 3) if budget else None

    def _distance(self, a: Any, b: Any) -> tuple[int, float]:
        differing = 0
        steps = 0.0
        for k in self._knobs:
            va, vb = getattr(a, k), getattr(b, k)
            if va != vb:
                differing += 1
                choices = self._choices[k]
                steps += abs(choices.index(va) - choices.index(vb))
        return differing, steps

    def _snap(self, config: Any) -> Any:
        if config in self._members:
            return config
        fresh = [c for c in self.space if c not in self._values and c not in self._pending]
        pool = fresh or self.space
        return min(pool, key=lambda c: self._distance(config, c))

    def _finish(self, trial: Any, value: float | None) -> None:
        if value is None:
            self.study.tell(trial, state=self._optuna.trial.TrialState.FAIL)
        else:
            self.study.tell(trial, value)

    def propose(self, n: int) -> list[Any]:
        batch: list[Any] = []
        for _ in range(max(0, n)):
            unmeasured = [c for c in self.space if c not in self._values and c not in self._pending]
            if not unmeasured:
                break
            chosen = self._refine()
            for _attempt in range(0 if chosen is not None else self.max_attempts):
                trial = self.study.ask()
                params = {k: trial.suggest_categorical(k, self._choices[k]) for k in self._knobs}
                config = self._snap(type(self.space[0])(**params))
                if config in self._values:
                    self._finish(trial, self._values[config])
                    continue
                if config in self._pending:
                    self._pending[config].append(trial)
                    continue
                self._pending[config] = [trial]
                chosen = config
                break
            if chosen is None:
                chosen = self._rng.choice(unmeasured)
                self._pending[chosen] = []
            self._proposed += 1
            batch.append(chosen)
        return batch

    def _refine(self) -> Any | None:
        """In the refinement phase: the nearest unmeasured neighbour of the best so far."""
        if self._refine_from is None or self._proposed < self._refine_from:
            return None
        timed = {c: v for c, v in self._values.items() if v is not None}
        if not timed:
            return None
        best = min(timed, key=lambda c: timed[c])
        fresh = [c for c in self.space if c not in self._values and c not in self._pending]
        if not fresh:
            return None
        chosen = min(fresh, key=lambda c: self._distance(best, c))
        self._pending[chosen] = []
        return chosen

    def tell(self, config: Any, trial: TrialResult) -> None:
        value = objective_of(trial)
        self._values[config] = value
        for pending in self._pending.pop(config, []):
            self._finish(pending, value)


def make_strategy(
    name: str, space: Sequence[Any], *, seed: int = 0, budget: int | None = None
) -> Strategy:
    """The strategy called ``name`` over ``space``.

    Raises:
        ValueError: an unknown strategy name (the message lists the known ones).
    """
    if name == "exhaustive":
        return Exhaustive(space)
    if name == "random":
        return RandomSearch(space, seed=seed)
    if name == "tpe":
        return TPESearch(
            space, seed=seed, n_startup_trials=max(3, min(8, len(space) // 12)), budget=budget
        )
    raise ValueError(f"strategy: expected one of {list(STRATEGIES)}, got {name!r}")
