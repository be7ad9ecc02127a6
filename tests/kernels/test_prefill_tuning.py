"""``prefill_tuning``: head-dim rule, pruning with reasons, search spaces, defaults."""

from __future__ import annotations

import dataclasses

import pytest

from mlafleet.kernels.configs import CPU_INTERPRETER, DeviceLimits, PrefillConfig, PrefillProblem
from mlafleet.kernels.prefill_tuning import (
    default_prefill_config,
    estimate_registers_per_thread,
    estimate_shared_mem_bytes,
    head_dims,
    prefill_search_space,
    why_invalid_prefill,
    why_unsupported_dims,
)

H200 = DeviceLimits(arch="sm_90", sm_count=132, max_shared_mem_bytes=232448)
SMALL_SMEM = DeviceLimits(arch="sm_75", sm_count=40, max_shared_mem_bytes=64 * 1024)
DEEPSEEK = PrefillProblem(batch=1, seqlen_q=4096, seqlen_k=4096, h=128)


@pytest.mark.parametrize(
    ("d_qk", "d_v", "expected"),
    [
        (192, 128, (128, 64, 128)),  # DeepSeek: two dots, no padding
        (64, 64, (64, 0, 64)),  # a power of two: one dot
        (80, 48, (64, 16, 64)),  # remainder 16; d_v padded to 64
        (112, 32, (64, 64, 32)),  # remainder 48 padded to 64
        (320, 256, (256, 64, 256)),  # the largest accepted pair
    ],
)
def test_head_dims_split(d_qk: int, d_v: int, expected: tuple[int, int, int]) -> None:
    assert head_dims(d_qk, d_v) == expected


@pytest.mark.parametrize(
    ("d_qk", "d_v", "text"),
    [
        (200, 128, "d_qk: expected a multiple of 16 from 16 to 320"),
        (8, 8, "d_qk: expected a multiple of 16"),
        (336, 128, "got 336"),
        (192, 40, "d_v: expected a multiple of 16 from 16 to 256, got 40"),
        (192, 512, "d_v: expected a multiple of 16 from 16 to 256, got 512"),
    ],
)
def test_unsupported_dims_are_named(d_qk: int, d_v: int, text: str) -> None:
    why = why_unsupported_dims(d_qk, d_v)
    assert why is not None
    assert text in why
    with pytest.raises(ValueError, match=text.split(":")[0]):
        head_dims(d_qk, d_v)


def test_shared_memory_estimate_matches_the_compiled_kernel() -> None:
    # Triton reported 172032 bytes for the pointer-load kernel at this config on the H200
    # (bench/results/h200_prefill.json, config 128x64x8x3p).
    config = PrefillConfig(block_size_q=128, block_size_k=64, num_warps=8, num_stages=3)
    assert estimate_shared_mem_bytes(config, 192, 128) == 172032


def test_register_estimate_grows_with_tiles_and_shrinks_with_warps() -> None:
    base = PrefillConfig(block_size_q=128, block_size_k=64, num_warps=8, num_stages=3)
    assert estimate_registers_per_thread(base, 128) <= 255
    wider = dataclasses.replace(base, block_size_k=128)
    fewer = dataclasses.replace(base, num_warps=4)
    assert estimate_registers_per_thread(wider, 128) > estimate_registers_per_thread(base, 128)
    assert estimate_registers_per_thread(fewer, 128) > estimate_registers_per_thread(base, 128)


@pytest.mark.parametrize(
    ("config", "text"),
    [
        (PrefillConfig(128, 128, 8, 3), "shared memory: needs ~"),
        (PrefillConfig(256, 128, 8, 1), "registers: needs ~"),
        (PrefillConfig(96, 64, 8, 2), "block_size_q: expected a power of two from 16 to 256"),
        (PrefillConfig(128, 512, 8, 2), "block_size_k: expected a power of two from 16 to 256"),
        (PrefillConfig(128, 64, 64, 2), "num_warps: expected a power of two <= 32, got 64"),
        (PrefillConfig(128, 64, 6, 2), "num_warps: expected a power of two"),
        (PrefillConfig(128, 64, 8, 7), "num_stages: expected 1 to 6, got 7"),
        (PrefillConfig(128, 64, 8, 2.0), "num_stages: expected an int, got 2.0"),  # type: ignore[arg-type]
    ],
)
def test_why_invalid_names_the_knob_and_the_limit(config: PrefillConfig, text: str) -> None:
    why = why_invalid_prefill(config, DEEPSEEK, H200)
    assert why is not None
    assert text in why


def test_why_invalid_checks_the_problem_too() -> None:
    config = PrefillConfig(128, 64, 8, 3)
    assert why_invalid_prefill(config, DEEPSEEK, H200) is None
    bad_heads = dataclasses.replace(DEEPSEEK, h_k=3)
    assert "h_k: expected a divisor of h=128, got 3" in str(
        why_invalid_prefill(config, bad_heads, H200)
    )
    bad_dims = dataclasses.replace(DEEPSEEK, d_qk=200)
    assert "d_qk" in str(why_invalid_prefill(config, bad_dims, H200))


def test_gpu_search_space_is_pruned_and_holds_the_default() -> None:
    space = prefill_search_space(DEEPSEEK, H200)
    assert space
    assert all(why_invalid_prefill(c, DEEPSEEK, H200) is None for c in space)
    assert default_prefill_config(DEEPSEEK, H200) in space
    full = 3 * 3 * 2 * 4  # block_size_q x block_size_k x warps x stages
    assert len(space) < full
    assert PrefillConfig(128, 128, 8, 3) not in space  # ~295 KB of shared memory
    assert {c.block_size_q for c in space} >= {64, 128}
    small = prefill_search_space(DEEPSEEK, SMALL_SMEM)
    assert small
    assert len(small) < len(space)
    assert all(estimate_shared_mem_bytes(c, 192, 128) <= 64 * 1024 for c in small)


def test_interpreter_search_space_is_tiny_and_valid() -> None:
    problem = PrefillProblem(batch=1, seqlen_q=40, seqlen_k=40, h=2, d_qk=48, d_v=32)
    space = prefill_search_space(problem, CPU_INTERPRETER)
    assert 1 <= len(space) <= 4
    assert all(c.block_size_q <= 32 and c.num_stages == 1 for c in space)


def test_defaults_per_architecture() -> None:
    # sm_90: measured best on the H200 (docs/PERFORMANCE.md, "## Prefill")
    assert default_prefill_config(DEEPSEEK, H200) == PrefillConfig(128, 128, 8, 2)
    tiny = PrefillProblem(batch=1, seqlen_q=40, seqlen_k=40, h=2, d_qk=48, d_v=32)
    assert default_prefill_config(tiny, CPU_INTERPRETER) == PrefillConfig(16, 16, 4, 1)
    fallback = default_prefill_config(DEEPSEEK, SMALL_SMEM)
    assert why_invalid_prefill(fallback, DEEPSEEK, SMALL_SMEM) is None


def test_default_refuses_unsupported_dims_and_impossible_devices() -> None:
    with pytest.raises(ValueError, match="d_v: expected a multiple of 16"):
        default_prefill_config(dataclasses.replace(DEEPSEEK, d_v=100), H200)
    no_smem = DeviceLimits(arch="sm_75", max_shared_mem_bytes=8 * 1024)
    with pytest.raises(ValueError, match="no config fits sm_75"):
        default_prefill_config(DEEPSEEK, no_smem)
