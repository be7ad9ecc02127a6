"""The Ray side of the runner: a pool of device actors, one per device of every node, placed by
the nodes' ``arch:<name>`` resources, and their streaming results taken in completion order.

Modelled on Ray's ActorPool: every slot runs at most one task, so the number of tasks in flight
is bounded by the fleet's devices (and ``max_in_flight``). ``poll`` waits on all running
streams with one ``ray.wait`` and fetches every ready trial with one ``ray.get``; nothing ever
blocks on one stream while another has results.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayError, RayTaskError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from mlafleet.worker.actor import (
    ARCH_RESOURCE_PREFIX,
    TEST_ALIAS_RESOURCE,
    DeviceActor,
    TaskRequest,
)
from mlafleet.worker.schemas import DeviceFingerprint, TrialResult

log = logging.getLogger(__name__)
INTERPRETER_ARCH = "cpu-interpreter"


@dataclass
class Slot:
    """One device actor and the task it runs."""

    key: str
    node_id: str
    arch: str
    actor: Any
    fingerprint_ref: Any
    fingerprint: DeviceFingerprint | None = None
    task_id: int | None = None
    stream: Any = None
    broken: str = ""


@dataclass(frozen=True)
class TrialEvent:
    """A trial streamed back from a running task."""

    task_id: int
    trial: TrialResult
    slot: Slot


@dataclass(frozen=True)
class DoneEvent:
    """A task's stream ended normally."""

    task_id: int
    slot: Slot


@dataclass(frozen=True)
class LostEvent:
    """A task's actor or node died, or the worker raised: the task must be retried."""

    task_id: int
    reason: str


Event = TrialEvent | DoneEvent | LostEvent


@dataclass
class Fleet:
    """Device actors of every alive node, kept in step with the Ray cluster by ``sync``."""

    max_in_flight: int = 64
    slots: dict[str, Slot] = field(default_factory=dict)
    _stream_slot: dict[Any, Slot] = field(default_factory=dict)

    def sync(self) -> list[LostEvent]:
        """Create actors for new devices, drop those of dead nodes; returns their lost tasks."""
        lost: list[LostEvent] = []
        alive: set[str] = set()
        for node in ray.nodes():  # type: ignore[no-untyped-call]
            if not node.get("Alive"):
                continue
            node_id = node["NodeID"]
            alive.add(node_id)
            resources = node.get("Resources", {})
            test_alias = resources.get(TEST_ALIAS_RESOURCE, 0) > 0
            for name, amount in resources.items():
                if not name.startswith(ARCH_RESOURCE_PREFIX):
                    continue
                arch = name[len(ARCH_RESOURCE_PREFIX) :]
                for i in range(int(amount)):
                    key = f"{node_id}/{arch}/{i}"
                    if key not in self.slots:
                        self.slots[key] = self._spawn(key, node_id, arch, test_alias)
        for slot in list(self.slots.values()):
            if slot.node_id not in alive:
                if slot.task_id is not None:
                    lost.append(LostEvent(slot.task_id, f"node {slot.node_id[:12]} left the fleet"))
                self._drop(slot)
        self._resolve_fingerprints()
        return lost

    def _spawn(self, key: str, node_id: str, arch: str, test_alias: bool) -> Slot:
        gpu = arch != INTERPRETER_ARCH and not test_alias
        actor = DeviceActor.options(
            num_cpus=0 if gpu else 1,
            num_gpus=1 if gpu else 0,
            resources={f"{ARCH_RESOURCE_PREFIX}{arch}": 1},
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node_id, soft=False),
            name=None,
        ).remote(arch=arch, index=0, test_alias=test_alias)
        log.info("starting a device actor for %s on node %s", arch, node_id[:12])
        return Slot(key, node_id, arch, actor, actor.fingerprint.remote())

    def _resolve_fingerprints(self) -> None:
        pending = {s.fingerprint_ref: s for s in self.slots.values() if s.fingerprint is None}
        pending.pop(None, None)
        if not pending:
            return
        ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=0)
        if not ready:
            return
        for ref in ready:
            slot = pending[ref]
            try:
                slot.fingerprint = ray.get(ref)
            except RayError as exc:
                slot.broken = _reason(exc)
                log.error("device actor for %s failed to start: %s", slot.arch, slot.broken)
                self._drop(slot)

    def _drop(self, slot: Slot) -> None:
        if slot.stream is not None:
            self._stream_slot.pop(slot.stream, None)
        self.slots.pop(slot.key, None)
        with contextlib.suppress(RayError, ValueError):  # already dead
            ray.kill(slot.actor, no_restart=True)

    def ready_slots(self) -> list[Slot]:
        """Idle actors whose device is known, while in-flight tasks are below the bound."""
        room = self.max_in_flight - len(self._stream_slot)
        idle = [s for s in self.slots.values() if s.fingerprint is not None and s.task_id is None]
        return sorted(idle, key=lambda s: s.key)[: max(room, 0)]

    def archs(self) -> set[str]:
        """Architectures with at least one live (or starting) actor."""
        return {s.arch for s in self.slots.values()}

    def nodes_by_arch(self) -> dict[str, list[str]]:
        """Node ids per architecture."""
        out: dict[str, set[str]] = {}
        for slot in self.slots.values():
            out.setdefault(slot.arch, set()).add(slot.node_id)
        return {arch: sorted(nodes) for arch, nodes in out.items()}

    def fingerprints(self) -> list[tuple[DeviceFingerprint, str]]:
        """(fingerprint, node id) of every started actor."""
        return [(s.fingerprint, s.node_id) for s in self.slots.values() if s.fingerprint]

    def start(self, slot: Slot, request: TaskRequest) -> None:
        """Run ``request`` on ``slot``'s actor as a streaming generator."""
        slot.task_id = request.task_id
        slot.stream = slot.actor.run.options(num_returns="streaming").remote(request)
        self._stream_slot[slot.stream] = slot

    def running(self) -> dict[int, Slot]:
        """Task id -> slot of every task in flight."""
        return {s.task_id: s for s in self._stream_slot.values() if s.task_id is not None}

    def kill_task(self, task_id: int) -> bool:
        """Stop a running task by killing its actor (a new one replaces it at the next sync)."""
        for slot in list(self._stream_slot.values()):
            if slot.task_id == task_id:
                self._drop(slot)
                return True
        return False

    def poll(self, timeout_s: float) -> list[Event]:
        """Everything ready within ``timeout_s``: trials, ended tasks, lost tasks."""
        streams: list[Any] = list(self._stream_slot)
        if not streams:
            return []
        ready, _ = ray.wait(streams, num_returns=1, timeout=timeout_s)
        if not ready:
            return []
        all_ready: list[Any] = ray.wait(streams, num_returns=len(streams), timeout=0)[0]
        events: list[Event] = []
        refs: list[tuple[Any, Slot]] = []
        for stream in all_ready:
            slot = self._stream_slot[stream]
            try:
                refs.append((next(stream), slot))
            except StopIteration:
                events.append(self._finish(slot))
        if refs:
            events.extend(self._fetch(refs))
        return events

    def _fetch(self, refs: list[tuple[Any, Slot]]) -> list[Event]:
        try:
            values = ray.get([ref for ref, _ in refs], timeout=60)
        except (RayError, GetTimeoutError):
            values = None  # one failed: fetch one by one to tell which (all are ready)
        events: list[Event] = []
        for i, (ref, slot) in enumerate(refs):
            task_id = slot.task_id
            assert task_id is not None
            try:
                value = values[i] if values is not None else ray.get(ref, timeout=60)
            except (RayError, GetTimeoutError) as exc:
                events.append(self._lose(slot, _reason(exc)))
                continue
            events.append(TrialEvent(task_id, value, slot))
        return events

    def _finish(self, slot: Slot) -> DoneEvent:
        task_id = slot.task_id
        assert task_id is not None
        self._stream_slot.pop(slot.stream, None)
        slot.task_id, slot.stream = None, None
        return DoneEvent(task_id, slot)

    def _lose(self, slot: Slot, reason: str) -> LostEvent:
        task_id = slot.task_id
        assert task_id is not None
        self._drop(slot)
        return LostEvent(task_id, reason)

    def shutdown(self) -> None:
        """Kill every actor."""
        for slot in list(self.slots.values()):
            self._drop(slot)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, RayActorError):
        return "the worker actor died (process killed, node lost or out of memory)"
    if isinstance(exc, RayTaskError):
        cause = exc.cause if exc.cause is not None else exc
        text = str(cause).strip().splitlines()
        return f"the worker raised {type(cause).__name__}: {text[-1] if text else ''}"
    if isinstance(exc, GetTimeoutError):
        return "timed out fetching a result from the worker"
    return f"{type(exc).__name__}: {exc}"


def ensure_ray(address: str | None, *, num_cpus: int | None = None) -> dict[str, Any]:
    """Connect to the Ray cluster at ``address``, or start a local one advertising this
    machine's devices as ``arch:`` resources; returns the cluster's resources.

    Raises:
        ConnectionError: no Ray cluster at ``address`` (the message says how to start one).
    """
    if ray.is_initialized():
        return dict(ray.cluster_resources())  # type: ignore[no-untyped-call]
    if address:
        try:
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise ConnectionError(
                f"cannot join the Ray cluster at {address}: {exc}; start one with `ray start "
                "--head` or leave --ray-address unset to start a local one"
            ) from None
        return dict(ray.cluster_resources())  # type: ignore[no-untyped-call]
    from mlafleet.worker.device import local_devices

    resources, num_gpus = node_resources(local_devices())
    # Ray's default wait for its own processes is too short on a loaded small machine.
    os.environ.setdefault("RAY_raylet_start_wait_time_s", "180")
    os.environ.setdefault("RAY_agent_register_timeout_ms", "180000")
    try:
        ray.init(
            address="local",  # a new cluster, never one found in /tmp/ray or RAY_ADDRESS
            num_cpus=num_cpus,
            num_gpus=num_gpus,
            resources=resources,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.WARNING,
        )
    except Exception as exc:  # Ray raises a bare Exception when its processes do not start
        raise ConnectionError(
            f"could not start a local Ray cluster: {exc}; retry when the machine is less "
            "busy, or start one with `ray start --head` and pass --ray-address"
        ) from None
    return dict(ray.cluster_resources())  # type: ignore[no-untyped-call]


def node_resources(
    devices: list[DeviceFingerprint], *, test_arch_alias: str | None = None
) -> tuple[dict[str, float], int]:
    """Custom resources a node advertises for its devices, and its GPU count.

    ``{"arch:sm_90": 8}`` for eight H200s; ``{"arch:cpu-interpreter": 1}`` without a GPU;
    with ``test_arch_alias`` (CPU interpreter only) ``{"arch:<alias>": 1,
    "mlafleet_test_arch_alias": 1}``.

    Raises:
        ValueError: a test alias on a machine with GPUs.
    """
    counts: dict[str, float] = {}
    gpus = sum(1 for d in devices if d.arch != INTERPRETER_ARCH)
    for dev in devices:
        counts[f"{ARCH_RESOURCE_PREFIX}{dev.arch}"] = (
            counts.get(f"{ARCH_RESOURCE_PREFIX}{dev.arch}", 0) + 1
        )
    if test_arch_alias is not None:
        if gpus:
            raise ValueError("--test-arch-alias is a test mode for machines without a GPU")
        counts = {f"{ARCH_RESOURCE_PREFIX}{test_arch_alias}": 1, TEST_ALIAS_RESOURCE: 1}
    return counts, gpus
