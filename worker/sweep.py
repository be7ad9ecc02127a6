"""Running a batch of candidate configs: prune, compile in parallel, then validate and time.

``Sweeper`` owns the child processes of one device for the length of a sweep: a compile pool
(GPU only: on the interpreter there is nothing to compile, so ``compile_s`` is 0) and one
long-lived timing process. Every candidate ends as a ``TrialResult``: never a silent skip.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from mlafleet.kernels.registry import KernelSpec

from .device import limits_of
from .isolation import ChildPool
from .protocol import ChildReply, ChildRequest
from .schemas import DeviceFingerprint, TrialResult, TrialStatus
from .timing import TimingOptions

logger = logging.getLogger(__name__)

OnTrial = Callable[[TrialResult], None]


@dataclass(frozen=True)
class SweepOptions:
    """Isolation and measurement settings of a sweep.

    Attributes:
        compile_workers: compile processes (default: CPU cores - 1, at least 1).
        compile_timeout_s: per config, until its first call returns (compilation).
        run_timeout_s: per config, for its first launch to finish, and for validation plus
            timing in the timing process.
        start_timeout_s: for a child process to start.
        validate: compare every candidate with the reference before timing it.
        timing: measurement effort.
        seed: base seed of validation inputs.
        validation_seeds: 0: every config is validated on inputs of its own new seed; N > 0:
            configs cycle through N seeds, whose inputs and reference outputs the timing
            process keeps (much faster on big shapes, where the fp32 reference is slow).
    """

    compile_workers: int | None = None
    compile_timeout_s: float = 300.0
    run_timeout_s: float = 120.0
    start_timeout_s: float = 120.0
    validate: bool = True
    timing: TimingOptions = field(default_factory=TimingOptions)
    seed: int = 0
    validation_seeds: int = 0


def default_compile_workers() -> int:
    """CPU cores minus one for the parent and the timing process, at least 1."""
    return max(1, (os.cpu_count() or 2) - 1)


class Sweeper:
    """Runs candidate configs of one kernel and problem on one device.

    Args:
        spec: the kernel.
        problem: its problem dataclass.
        device: the device fingerprint (``arch == "cpu-interpreter"`` runs on the CPU).
        options: isolation and measurement settings.
    """

    def __init__(
        self,
        spec: KernelSpec,
        problem: Any,
        device: DeviceFingerprint,
        options: SweepOptions | None = None,
    ) -> None:
        self.spec = spec
        self.problem = problem
        self.device = device
        self.options = options or SweepOptions()
        self.on_gpu = device.vendor != "cpu"
        self.limits = limits_of(device)
        self._timer: ChildPool | None = None
        self._compiler: ChildPool | None = None
        self.compile_wall_s = 0.0
        self.timing_wall_s = 0.0
        self._counter = 0

    def __enter__(self) -> Sweeper:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop every child process."""
        for pool in (self._compiler, self._timer):
            if pool is not None:
                pool.close()
        self._compiler = self._timer = None

    @property
    def replaced_children(self) -> int:
        return sum(p.replaced for p in (self._compiler, self._timer) if p is not None)

    def _timer_pool(self) -> ChildPool:
        if self._timer is None:
            self._timer = ChildPool(
                size=1,
                device_index=self.device.index,
                on_gpu=self.on_gpu,
                start_timeout_s=self.options.start_timeout_s,
            )
        if not self._timer.children:
            self._timer.start()
        return self._timer

    def _compile_pool(self) -> ChildPool:
        workers = self.options.compile_workers or default_compile_workers()
        if self._compiler is None:
            self._compiler = ChildPool(
                size=workers,
                device_index=self.device.index,
                on_gpu=self.on_gpu,
                start_timeout_s=self.options.start_timeout_s,
            )
            self._compiler.begin()
            if self._timer is None:  # the timing process starts while the pool compiles
                self._timer = ChildPool(
                    size=1,
                    device_index=self.device.index,
                    on_gpu=self.on_gpu,
                    start_timeout_s=self.options.start_timeout_s,
                )
                self._timer.begin()
            self._compiler.start()
        return self._compiler

    def _trial(
        self, config: Any, *, status: TrialStatus, started: datetime, is_default: bool, **kw: Any
    ) -> TrialResult:
        return TrialResult(
            kernel=self.spec.name,
            problem=self.problem.as_dict(),
            config=config.as_dict(),
            status=status,
            device=self.device,
            is_default=is_default,
            started_at=started,
            finished_at=datetime.now(UTC),
            **kw,
        )

    def _request(self, op: str, config: Any) -> ChildRequest:
        self._counter += 1
        return ChildRequest(
            op=op,  # type: ignore[arg-type]
            spec=self.spec,
            problem=self.problem.as_dict(),
            config=config.as_dict(),
            seed=self._seed(),
            validate_output=self.options.validate,
            measure=True,
            timing=asdict(self.options.timing),
            l2_bytes=self.device.l2_bytes,
        )

    def _seed(self) -> int:
        n = self.options.validation_seeds
        slot = self._counter % n if n > 0 else self._counter
        return self.options.seed * 1_000_003 + 7919 * slot

    def run(
        self,
        configs: Sequence[Any],
        *,
        default_config: Any | None = None,
        on_trial: OnTrial | None = None,
    ) -> list[TrialResult]:
        """Prune, compile (GPU), validate and time ``configs``; one result per config, in order.

        Args:
            configs: config dataclasses of ``spec``.
            default_config: the kernel's default; the trial of an equal config is marked
                ``is_default``.
            on_trial: called with each result as soon as it is known.
        """
        started = datetime.now(UTC)
        results: list[TrialResult | None] = [None] * len(configs)

        def finish(i: int, trial: TrialResult) -> None:
            results[i] = trial
            if on_trial is not None:
                on_trial(trial)

        why_invalid = self.spec.fn("why_invalid")
        runnable: list[int] = []
        for i, config in enumerate(configs):
            reason = why_invalid(config, self.problem, self.limits)
            if reason:
                finish(
                    i,
                    self._trial(
                        config,
                        status=TrialStatus.INVALID_CONFIG,
                        error=str(reason),
                        started=started,
                        is_default=config == default_config,
                    ),
                )
            else:
                runnable.append(i)

        compile_s: dict[int, float] = {}
        if self.on_gpu and runnable:
            runnable = self._compile_all(configs, runnable, compile_s, default_config, finish)
        else:
            compile_s = dict.fromkeys(runnable, 0.0)

        if runnable:
            timer = self._timer_pool()
            t0 = time.monotonic()
            for i in runnable:
                trial_start = datetime.now(UTC)
                (reply,) = timer.run(
                    [self._request("trial", configs[i])],
                    first_timeout_s=self.options.run_timeout_s,
                    then_timeout_s=self.options.run_timeout_s,
                    first_phase="run",
                )
                finish(
                    i,
                    self._from_reply(
                        configs[i], reply, compile_s.get(i), trial_start, default_config
                    ),
                )
            self.timing_wall_s += time.monotonic() - t0
        return [r for r in results if r is not None]

    def _compile_all(
        self,
        configs: Sequence[Any],
        runnable: list[int],
        compile_s: dict[int, float],
        default_config: Any | None,
        finish: Callable[[int, TrialResult], None],
    ) -> list[int]:
        """Compile ``runnable`` configs in parallel; the ones that compiled are returned."""
        pool = self._compile_pool()
        t0 = time.monotonic()
        start = datetime.now(UTC)
        replies = pool.run(
            [self._request("compile", configs[i]) for i in runnable],
            first_timeout_s=self.options.compile_timeout_s,
            then_timeout_s=self.options.run_timeout_s,
            first_phase="compile",
        )
        self.compile_wall_s += time.monotonic() - t0
        compiled = []
        for i, reply in zip(runnable, replies, strict=True):
            if reply.status == TrialStatus.OK:
                compile_s[i] = reply.compile_s or 0.0
                compiled.append(i)
            else:
                finish(
                    i, self._from_reply(configs[i], reply, reply.compile_s, start, default_config)
                )
        return compiled

    def _from_reply(
        self,
        config: Any,
        reply: ChildReply,
        compile_s: float | None,
        started: datetime,
        default_config: Any | None,
    ) -> TrialResult:
        status = reply.status or TrialStatus.RUNTIME_ERROR
        return self._trial(
            config,
            status=status,
            error=reply.error,
            timing=reply.timing,
            validation=reply.validation,
            compile_s=compile_s if compile_s is not None else reply.compile_s,
            started=started,
            is_default=config == default_config,
        )
