"""Timing helpers shared by the benchmarks.

``time_rotated_us``: one CUDA graph holding one call per input set, over enough input sets
that the L2 (60 MB on an H200) never holds the next call's data; the graph is replayed
``replays`` times per timing, and the median of ``repeats`` timings is reported per call.
This is how ANCHORS.md timed FlashMLA and the Triton peer, so the numbers compare. Right
before the timings one GPU thread spins for ``warmup_ms`` (``worker.timing.warm_clocks``): an
idle GPU runs its first milliseconds at a lower clock, which moved the fp8 16-head rows' median
of 5 by up to 9 %; the spin raises the clock without spending the power budget (heavy load is
capped after ~25 ms on the H200: docs/PERFORMANCE.md, "Fourteenth session").
"""

from __future__ import annotations

import contextlib
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from telemetry import ClockSampler

from mlafleet.worker.timing import warm_clocks

ROTATION_BYTES = 512 * 1024 * 1024  # about 512 MB of inputs per graph, as ANCHORS.md
MAX_COPIES = 64


@dataclass(frozen=True)
class Timing:
    """Per-call timings of one benchmark (microseconds)."""

    median_us: float
    min_us: float
    max_us: float
    samples_us: tuple[float, ...]
    copies: int
    clock: dict[str, Any] | None = None
    """The SM clock during the timings (``telemetry.summarize_clock``), when sampled."""

    def spread(self) -> float:
        """(max - min) / median of the repeats."""
        return (self.max_us - self.min_us) / self.median_us if self.median_us else 0.0


def copies_for(bytes_per_call: int, *, rotation_bytes: int = ROTATION_BYTES) -> int:
    """Input sets needed so one graph touches about ``rotation_bytes`` (at least 2)."""
    return max(2, min(MAX_COPIES, math.ceil(rotation_bytes / max(1, bytes_per_call))))


def time_rotated_us(
    calls: Sequence[Callable[[], Any]],
    *,
    replays: int = 20,
    repeats: int = 5,
    warmup: int = 2,
    warmup_ms: float = 20.0,
    load_ms: float = 0.0,
    clock: ClockSampler | None = None,
) -> Timing:
    """Median per-call time of ``calls`` (one per input set), captured in one CUDA graph.

    Args:
        calls: zero-argument callables, each launching the kernel on its own inputs.
        replays: graph replays per timing.
        repeats: timings; the median is reported.
        warmup: eager runs of every call before capture (compilation, allocator warm-up).
        warmup_ms: one GPU thread's busy wait right before the timings (the clock ramp).
        load_ms: replay the graph this long first, untimed: the sustained regime, with the
            GPU's power management engaged (0: the burst regime ANCHORS.md timed in).
        clock: sampled while the timings run (not during the warm-up or load): their SM
            clock, power and clock-event reasons go into ``Timing.clock``.

    Raises:
        RuntimeError: no CUDA device.
    """
    if not torch.cuda.is_available():
        raise RuntimeError("time_rotated_us needs a CUDA GPU")
    for _ in range(warmup):
        for call in calls:
            call()
    torch.cuda.synchronize()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for call in calls:  # warm-up on the capture stream too
            call()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for call in calls:
            call()
    graph.replay()
    torch.cuda.synchronize()
    if load_ms > 0:
        _replay_for(graph, load_ms)
    else:
        warm_clocks(warmup_ms)
    samples: list[float] = []
    with clock if clock is not None else contextlib.nullcontext():
        for _ in range(repeats):
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(replays):
                graph.replay()
            end.record()
            end.synchronize()
            samples.append(start.elapsed_time(end) * 1000.0 / (replays * len(calls)))
    del graph
    return Timing(
        median_us=statistics.median(samples),
        min_us=min(samples),
        max_us=max(samples),
        samples_us=tuple(samples),
        copies=len(calls),
        clock=clock.summary() if clock is not None else None,
    )


def _replay_for(graph: torch.cuda.CUDAGraph, ms: float) -> None:
    """Replay ``graph`` back to back, untimed, for at least ``ms`` of wall time."""
    deadline = time.monotonic() + ms / 1000.0
    while time.monotonic() < deadline:
        for _ in range(4):  # (a few replays between host checks)
            graph.replay()
        torch.cuda.synchronize()


def rel_l2(out: torch.Tensor, ref: torch.Tensor) -> float:
    """||out - ref|| / ||ref|| in fp64 over the finite reference entries; inf if out has NaN."""
    out64, ref64 = out.double(), ref.double()
    finite = torch.isfinite(ref64)
    if not torch.isfinite(out64[finite]).all():
        return math.inf
    num = torch.linalg.vector_norm((out64 - ref64)[finite])
    den = torch.linalg.vector_norm(ref64[finite])
    return float(num / den) if float(den) else float(num)


def gpu_info() -> dict[str, Any]:
    """Name, capability, SM count, torch/triton/CUDA versions of the current GPU."""
    import triton

    props = torch.cuda.get_device_properties(0)
    return {
        "gpu": props.name,
        "capability": ".".join(map(str, torch.cuda.get_device_capability(0))),
        "sm_count": props.multi_processor_count,
        "torch": torch.__version__,
        "triton": triton.__version__,
        "cuda": torch.version.cuda,
    }
