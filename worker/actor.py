"""The worker's Ray face: one actor per device (GPU, or the CPU interpreter), the package's only
``import ray``.

``DeviceActor`` methods are one to three lines delegating to plain functions below (which run
without Ray and are unit-tested as such). ``run`` is a Ray streaming generator: it yields
every ``TrialResult`` the moment the worker finishes it, so the orchestrator stores trials as
they arrive and an actor killed mid-task loses no finished trial.

Test mode (explicit, for CPU-only machines): a node started with ``mlafleet worker
--test-arch-alias NAME`` advertises ``arch:NAME`` while running the CPU interpreter; its actors
report ``NAME`` as their architecture (and ``[test alias NAME]`` in the device name), so a
test cluster can have two "architectures" without two kinds of hardware.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any, Literal

import ray
from pydantic import BaseModel, ConfigDict, Field

from .schemas import DeviceFingerprint, TrialResult

INTERPRETER_ARCH = "cpu-interpreter"
ARCH_RESOURCE_PREFIX = "arch:"
TEST_ALIAS_RESOURCE = "mlafleet_test_arch_alias"


class TaskRequest(BaseModel):
    """One task sent to a device actor (the Ray message; pydantic at the boundary).

    ``kind == "tune"``: search configs of ``problem``; ``known`` are trials already stored for
    this task (a resumed or retried task), which the search does not redo.
    ``kind == "validate"``: check ``config`` on this device (correctness and timing).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    task_id: int
    kind: Literal["tune", "validate"] = "tune"
    kernel: str
    problem: dict[str, Any]
    strategy: str = "exhaustive"
    budget_trials: int | None = None
    budget_minutes: float | None = None
    validate_: bool = Field(default=True, alias="validate")
    config: dict[str, Any] | None = None
    known: list[TrialResult] = Field(default_factory=list)
    seed: int = 0


def actor_devices(
    *, index: int, arch: str, test_alias: bool
) -> tuple[DeviceFingerprint, DeviceFingerprint]:
    """The device an actor measures with, and the fingerprint it reports.

    Args:
        index: local device index (Ray remaps CUDA_VISIBLE_DEVICES, so usually 0).
        arch: the architecture the actor was placed for (its ``arch:`` resource).
        test_alias: the node runs in the explicit test mode that reports ``arch`` for the
            CPU interpreter.

    Raises:
        ValueError: the device's architecture is not ``arch`` (outside the test mode), or the
            test mode was asked for on a real GPU.
    """
    from .device import local_devices

    devices = local_devices()
    real = devices[min(index, len(devices) - 1)]
    if real.arch == arch:
        return real, real
    if not test_alias:
        raise ValueError(
            f"this node advertises arch:{arch} but its device {index} is {real.name} "
            f"({real.arch}); restart the node with `mlafleet worker` (it advertises the right "
            "architecture)"
        )
    if real.arch != INTERPRETER_ARCH:
        raise ValueError(
            f"--test-arch-alias is a test mode of the CPU interpreter; this device is {real.arch}"
        )
    reported = real.model_copy(
        update={
            "arch": arch,
            "name": f"{real.name} [test alias {arch}]",
            "uuid": f"test-alias-{arch}-{index}",
        }
    )
    return real, reported


def stream(run: Callable[[Callable[[TrialResult], None]], object]) -> Iterator[TrialResult]:
    """Run ``run(on_trial)`` in a thread and yield each trial as soon as it is reported.

    Raises:
        Exception: whatever ``run`` raised, after the trials it reported were yielded.
    """
    items: queue.Queue[tuple[str, Any]] = queue.Queue()

    def target() -> None:
        try:
            run(lambda trial: items.put(("trial", trial)))
        except BaseException as exc:  # re-raised in the consumer's thread
            items.put(("error", exc))
        else:
            items.put(("done", None))

    threading.Thread(target=target, name="mlafleet-task", daemon=True).start()
    while True:
        kind, value = items.get()
        if kind == "trial":
            yield value
        elif kind == "error":
            raise value
        else:
            return


def _tune(request: TaskRequest, device: DeviceFingerprint, on_trial: Any) -> object:
    from mlafleet.kernels.registry import get_kernel

    from .sweep import SweepOptions
    from .tune import tune

    spec = get_kernel(request.kernel)
    return tune(
        request.kernel,
        spec.problem_from_dict(request.problem),
        device=device,
        strategy=request.strategy,
        budget_trials=request.budget_trials,
        budget_minutes=request.budget_minutes,
        seed=request.seed,
        options=SweepOptions(validate=request.validate_, seed=request.seed),
        known=[t.model_copy(update={"device": device}) for t in request.known],
        on_trial=on_trial,
    )


def _validate(request: TaskRequest, device: DeviceFingerprint, on_trial: Any) -> object:
    from mlafleet.kernels.registry import get_kernel

    from .sweep import Sweeper, SweepOptions

    spec = get_kernel(request.kernel)
    assert request.config is not None, "a validate task carries its config"
    config = spec.config_from_dict(request.config)
    problem = spec.problem_from_dict(request.problem)
    options = SweepOptions(validate=True, seed=request.seed)
    with Sweeper(spec, problem, device, options) as sweeper:
        return sweeper.run([config], on_trial=on_trial)


def run_task(
    request: TaskRequest, *, real: DeviceFingerprint, reported: DeviceFingerprint
) -> Iterator[TrialResult]:
    """Run one task on ``real``; yield its trials labelled with ``reported``."""
    run = _tune if request.kind == "tune" else _validate
    for trial in stream(lambda on_trial: run(request, real, on_trial)):
        yield trial if real is reported else trial.model_copy(update={"device": reported})


@ray.remote(max_restarts=0, max_task_retries=0)
class DeviceActor:
    """One device of a node. Create with ``resources={"arch:<arch>": 1}`` (and ``num_gpus=1``
    on GPU nodes); the orchestrator's dispatcher places one per device."""

    def __init__(self, *, arch: str, index: int = 0, test_alias: bool = False) -> None:
        self.real, self.reported = actor_devices(index=index, arch=arch, test_alias=test_alias)

    def fingerprint(self) -> DeviceFingerprint:
        return self.reported

    def node_id(self) -> str:
        return str(ray.get_runtime_context().get_node_id())

    def run(self, request: TaskRequest) -> Iterator[TrialResult]:
        yield from run_task(request, real=self.real, reported=self.reported)


__all__ = [
    "ARCH_RESOURCE_PREFIX",
    "TEST_ALIAS_RESOURCE",
    "DeviceActor",
    "TaskRequest",
    "actor_devices",
    "run_task",
    "stream",
]
