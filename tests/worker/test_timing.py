"""Timing: input copies against L2, the interpreter's wall clock, CUDA-graph timing (GPU)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from mlafleet.worker.timing import (
    TimingOptions,
    copies_needed,
    inputs_bytes,
    measure,
    warm_clocks,
)


def test_copies_cover_several_l2_sizes_within_caps() -> None:
    opts = TimingOptions(l2_flush_factor=3.0, max_copies=64, max_inputs_bytes=1 << 30)
    l2 = 60 << 20
    assert copies_needed(300 << 20, l2_bytes=l2, options=opts) == 2  # one big copy + 1
    assert copies_needed(30 << 20, l2_bytes=l2, options=opts) == 7  # 180 MB / 30 MB + 1
    assert copies_needed(1 << 10, l2_bytes=l2, options=opts) == 64  # capped by max_copies
    assert copies_needed(512 << 20, l2_bytes=4 << 30, options=opts) == 2  # capped by memory
    assert copies_needed(2 << 30, l2_bytes=l2, options=opts) == 1  # never fewer than one
    assert copies_needed(1 << 20, l2_bytes=0, options=opts) == 1  # the interpreter: no L2


def test_inputs_bytes_counts_tensors_only() -> None:
    inputs = {"q": torch.zeros(4, 8, dtype=torch.float16), "scale": 0.5, "t": torch.zeros(3)}
    assert inputs_bytes(inputs) == 4 * 8 * 2 + 3 * 4


def test_interpreter_timing_is_labelled_wall_clock() -> None:
    calls: list[int] = []

    def run(inputs: dict[str, Any]) -> None:
        calls.append(inputs["seed"])

    stats = measure(
        run,
        lambda seed: {"seed": seed},
        device_index=0,
        l2_bytes=0,
        on_gpu=False,
        options=TimingOptions(interpreter_calls=3),
        seed=7,
    )
    assert stats.method == "wall_clock"
    assert len(stats.samples_us) == 3
    assert calls == [7, 7, 7]
    assert not stats.noisy
    assert stats.device_before is None


@pytest.mark.gpu
def test_cuda_graph_timing_repeats_within_three_percent() -> None:
    def make(seed: int) -> dict[str, Any]:
        gen = torch.Generator(device="cuda").manual_seed(seed)
        return {"x": torch.randn(64 << 20, device="cuda", generator=gen)}

    def run(inputs: dict[str, Any]) -> torch.Tensor:
        return inputs["x"].sum()

    l2 = torch.cuda.get_device_properties(0).L2_cache_size
    first = measure(run, make, device_index=0, l2_bytes=l2, on_gpu=True)
    second = measure(run, make, device_index=0, l2_bytes=l2, on_gpu=True)
    assert first.method == "cuda_graph"
    assert len(first.samples_us) >= 20
    assert abs(second.median_us / first.median_us - 1.0) < 0.03


def test_clock_warm_up_spins_for_the_time_asked() -> None:
    spun: list[int] = []
    assert warm_clocks(20.0, spin=spun.append) == 39_600_000  # 20 ms at 1.98 GHz
    assert spun == [39_600_000]
    assert warm_clocks(0.0, spin=spun.append) == 0  # nothing asked: no launch
    assert spun == [39_600_000]


def test_clock_warm_up_refuses_a_negative_duration() -> None:
    with pytest.raises(ValueError, match="min_ms: expected a duration >= 0 ms, got -1"):
        warm_clocks(-1)


@pytest.mark.gpu
def test_clock_warm_up_runs_on_the_gpu() -> None:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    assert warm_clocks(5.0) > 0
    end.record()
    end.synchronize()
    assert start.elapsed_time(end) >= 5.0 * 0.9  # (ms; at least the cycles at the top clock)
