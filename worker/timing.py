"""Timing one kernel call honestly.

On a GPU (method ``cuda_graph``): several copies of the inputs, enough that L2 never holds the
next call's data, are made up front; after a warm-up, one CUDA graph holding ``k`` calls that
rotate over the copies is captured and replayed, each replay timed with CUDA events (a sample
is replay time / ``k``: launch gaps vanish, which matters for launch-bound decode shapes).
Right before the first sample one GPU thread spins for ``warmup_ms`` (``warm_clocks``): a GPU
that was idle (inputs being made, the reference checked) runs its first milliseconds at a lower
clock (an H200 ramps from 345 MHz over ~8 ms: the first two 3.7 ms samples of an fp8 decode
row ran 7-9 % slow), and a spin raises the clock without the power that heavy warm-up work
would spend (an H200 caps sustained heavy load after ~25 ms). Samples are taken in batches
until the median is stable; a spread wider than ``max_spread`` is measured again, then flagged
``noisy``. A kernel that cannot be captured (it synchronises with the host, say) falls back to
event timing of plain launches (``cuda_event``). NVML clocks, temperature and power are read
before and after.

On the CPU interpreter (method ``wall_clock``): a few host-timed calls. Such timings say
nothing about a GPU: they exist so the whole pipeline runs without one.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import stats
from .device import device_sample
from .schemas import TimingStats

logger = logging.getLogger(__name__)

Inputs = dict[str, Any]


@dataclass(frozen=True)
class TimingOptions:
    """How hard to measure.

    Attributes:
        warmup_rotations: passes over every input copy before timing (JIT load, caches).
        warmup_ms: one GPU thread's busy wait right before the first sample (the clock ramp).
        target_sample_us: a sample (one graph replay) holds at least this much work.
        max_calls_per_sample: cap on the calls captured in one graph.
        batch_samples: samples taken between stability checks.
        min_samples: samples always taken.
        max_samples: stop here even if the median is not stable.
        max_time_s: stop sampling after this long even if not stable.
        stable_rel: the median is stable when a batch moves it by less than this fraction.
        max_spread: (p80 - p20) / median above this is re-measured once, then flagged noisy.
        l2_flush_factor: input copies hold at least this many times the L2 size.
        max_copies: cap on input copies.
        max_inputs_bytes: cap on the bytes of all input copies together.
        use_cuda_graph: try CUDA-graph timing first.
        interpreter_calls: wall-clock samples on the CPU interpreter.
    """

    warmup_rotations: int = 2
    warmup_ms: float = 20.0
    target_sample_us: float = 1000.0
    max_calls_per_sample: int = 1000
    batch_samples: int = 10
    min_samples: int = 20
    max_samples: int = 200
    max_time_s: float = 10.0
    stable_rel: float = stats.DEFAULT_STABLE_REL
    max_spread: float = stats.DEFAULT_MAX_SPREAD
    l2_flush_factor: float = 3.0
    max_copies: int = 64
    max_inputs_bytes: int = 4 << 30
    use_cuda_graph: bool = True
    interpreter_calls: int = 2


def inputs_bytes(inputs: Inputs) -> int:
    """Bytes held by the tensors among the values of ``inputs``."""
    import torch

    return sum(
        int(v.numel() * v.element_size()) for v in inputs.values() if isinstance(v, torch.Tensor)
    )


def copies_needed(one_copy_bytes: int, *, l2_bytes: int, options: TimingOptions) -> int:
    """How many input copies keep L2 from holding the next call's data.

    Returns:
        At least 1 and at most ``options.max_copies``; the copies together stay under
        ``options.max_inputs_bytes`` (but never fewer than 1).
    """
    if one_copy_bytes <= 0 or l2_bytes <= 0:
        return 1
    wanted = math.ceil(options.l2_flush_factor * l2_bytes / one_copy_bytes) + 1
    by_memory = max(1, options.max_inputs_bytes // one_copy_bytes)
    return int(max(1, min(wanted, options.max_copies, by_memory)))


def measure(
    run: Callable[[Inputs], object],
    make_inputs: Callable[[int], Inputs],
    *,
    device_index: int,
    l2_bytes: int,
    on_gpu: bool,
    options: TimingOptions | None = None,
    seed: int = 1000,
) -> TimingStats:
    """Time ``run(inputs)``: microseconds per call.

    Args:
        run: one kernel call on one input set (its result is discarded).
        make_inputs: ``seed -> inputs``; called once per input copy.
        device_index: the GPU (NVML samples), ignored on the interpreter.
        l2_bytes: L2 size of the device; decides the number of input copies.
        on_gpu: False on the CPU interpreter (wall-clock timing).
        options: measurement effort; defaults to ``TimingOptions()``.
        seed: seed of the first input copy (the others use the next seeds).

    Returns:
        The statistics with every raw sample and the method used.

    Raises:
        Whatever ``run`` raises (the caller classifies it).
    """
    opts = options or TimingOptions()
    if not on_gpu:
        return _measure_wall_clock(run, make_inputs(seed), opts)
    return _measure_gpu(
        run, make_inputs, device_index=device_index, l2_bytes=l2_bytes, opts=opts, seed=seed
    )


def _measure_wall_clock(
    run: Callable[[Inputs], object], inputs: Inputs, opts: TimingOptions
) -> TimingStats:
    samples = []
    for _ in range(max(1, opts.interpreter_calls)):
        start = time.perf_counter()
        run(inputs)
        samples.append((time.perf_counter() - start) * 1e6)
    # wall-clock on the interpreter is never noisy in any useful sense: flag nothing.
    return stats.summarize(samples, method="wall_clock", max_spread=math.inf)


def _measure_gpu(
    run: Callable[[Inputs], object],
    make_inputs: Callable[[int], Inputs],
    *,
    device_index: int,
    l2_bytes: int,
    opts: TimingOptions,
    seed: int,
) -> TimingStats:
    import torch

    first = make_inputs(seed)
    n_copies = copies_needed(inputs_bytes(first), l2_bytes=l2_bytes, options=opts)
    copies = [first] + [make_inputs(seed + i) for i in range(1, n_copies)]
    for _ in range(max(1, opts.warmup_rotations)):
        for inputs in copies:
            run(inputs)
    torch.cuda.synchronize()

    est_us = _time_plain(run, copies, calls=n_copies)
    calls = max(n_copies, math.ceil(opts.target_sample_us / max(est_us, 1e-3)))
    calls = min(max(calls, 1), max(opts.max_calls_per_sample, n_copies))
    calls = math.ceil(calls / n_copies) * n_copies

    replay: Callable[[], None] | None = None
    method = "cuda_event"
    if opts.use_cuda_graph:
        replay = _capture(run, copies, calls=calls)
        if replay is not None:
            method = "cuda_graph"

    def one_sample() -> float:
        if replay is not None:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
            start.record()
            replay()
            end.record()
            end.synchronize()
            return float(start.elapsed_time(end)) * 1000.0 / calls
        return _time_plain(run, copies, calls=calls)

    warm_clocks(opts.warmup_ms)
    before = device_sample(device_index)
    samples = _sample_until_stable(one_sample, opts)
    width = stats.spread(samples)
    if width > opts.max_spread:
        logger.info("spread %.3f over %.3f: measuring again", width, opts.max_spread)
        samples = _sample_until_stable(one_sample, opts)
    after = device_sample(device_index)
    return stats.summarize(
        samples,
        method=method,
        max_spread=opts.max_spread,
        device_before=before,
        device_after=after,
    )


def _time_plain(run: Callable[[Inputs], object], copies: list[Inputs], *, calls: int) -> float:
    """Microseconds per call of ``calls`` plain launches rotating over ``copies``."""
    import torch

    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
    start.record()
    for i in range(calls):
        run(copies[i % len(copies)])
    end.record()
    end.synchronize()
    return float(start.elapsed_time(end)) * 1000.0 / calls


def _capture(
    run: Callable[[Inputs], object], copies: list[Inputs], *, calls: int
) -> Callable[[], None] | None:
    """A replay function of one CUDA graph of ``calls`` rotating calls, or None if capture fails."""
    import torch

    graph = torch.cuda.CUDAGraph()
    try:
        stream = torch.cuda.Stream()  # type: ignore[no-untyped-call]
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            run(copies[0])  # warm-up on a side stream, as torch's graph docs ask
        torch.cuda.current_stream().wait_stream(stream)
        torch.cuda.synchronize()
        with torch.cuda.graph(graph):
            for i in range(calls):
                run(copies[i % len(copies)])
        graph.replay()
        torch.cuda.synchronize()
    except Exception as exc:  # capture is an optimisation: fall back to event timing
        logger.info("CUDA graph capture failed (%s): timing plain launches", exc)
        torch.cuda.synchronize()
        return None
    return graph.replay


SPIN_CLOCK_HZ = 1.98e9
"""Cycles a millisecond at an H200's top SM clock: ``warm_clocks`` spins at least this long
(longer while the clock is still low)."""


def _spin_on_gpu(cycles: int) -> None:
    import torch

    torch.cuda._sleep(cycles)  # one thread spinning on the cycle counter
    torch.cuda.synchronize()


def warm_clocks(min_ms: float, *, spin: Callable[[int], None] = _spin_on_gpu) -> int:
    """Keep the GPU busy with one spinning thread for at least ``min_ms`` before timing.

    An idle GPU runs its first milliseconds of work at a lower clock (an H200 from 345 MHz over
    ~8 ms); a busy wait raises it without spending the power budget that warm-up replays of the
    timed kernel would (100 ms of replays made a 128-head decode row 13 % slower on the H200,
    its power management capping heavy load after ~25 ms; docs/PERFORMANCE.md, "Fourteenth
    session").

    Returns:
        The cycles spun (0 for ``min_ms`` 0).

    Raises:
        ValueError: ``min_ms`` is negative.
    """
    if min_ms < 0:
        raise ValueError(f"min_ms: expected a duration >= 0 ms, got {min_ms}")
    cycles = int(min_ms * 1e-3 * SPIN_CLOCK_HZ)
    if cycles:
        spin(cycles)
    return cycles


def _sample_until_stable(one_sample: Callable[[], float], opts: TimingOptions) -> list[float]:
    samples: list[float] = []
    deadline = time.monotonic() + opts.max_time_s
    batch = max(1, opts.batch_samples)
    while len(samples) < opts.max_samples:
        samples.extend(one_sample() for _ in range(batch))
        if len(samples) >= opts.min_samples and stats.is_stable(
            samples, batch=batch, rel_tol=opts.stable_rel
        ):
            break
        if time.monotonic() > deadline:
            break
    return samples
