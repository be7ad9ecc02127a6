"""The decode tuning space, its pruning reasons, defaults, split heuristic, inputs, limits."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import pytest
import torch

from mlafleet.kernels.bundle import bucket_of
from mlafleet.kernels.configs import CPU_INTERPRETER, DecodeConfig, DecodeProblem, DeviceLimits
from mlafleet.kernels.decode_inputs import make_decode_inputs
from mlafleet.kernels.decode_tuning import (
    auto_num_splits,
    decode_search_space,
    default_decode_config,
    programs_per_sm,
    resolve_num_splits,
    why_invalid_decode,
)
from mlafleet.kernels.device_limits import limits_for

H200 = DeviceLimits(arch="sm_90", sm_count=132, max_shared_mem_bytes=232448)
A100 = DeviceLimits(arch="sm_80", sm_count=108, max_shared_mem_bytes=166912)
MI300 = DeviceLimits(
    arch="gfx942", sm_count=304, max_shared_mem_bytes=65536, max_warps_per_block=16
)
DEEPSEEK = [
    DecodeProblem(batch=64, s_q=1, h_q=16, seqlen=4096),
    DecodeProblem(batch=128, s_q=1, h_q=128, seqlen=4096),
    DecodeProblem(batch=128, s_q=2, h_q=128, seqlen=8192, causal=True),
    DecodeProblem(batch=1, s_q=1, h_q=128, seqlen=16384),
    DecodeProblem(batch=8, s_q=1, h_q=16, seqlen=32768, kv_dtype="fp8_e4m3"),
]


@pytest.mark.parametrize("problem", DEEPSEEK, ids=lambda p: f"b{p.batch}-h{p.h_q}-s{p.s_q}")
def test_gpu_space_is_pruned_and_sized(problem: DecodeProblem):
    space = decode_search_space(problem, H200)
    assert 35 <= len(space) <= 160
    assert len(set(space)) == len(space)
    assert all(why_invalid_decode(c, problem, H200) is None for c in space)
    assert any(c.num_kv_splits != "auto" for c in space)  # split variants are tuned too


@pytest.mark.parametrize("precision", ["bf16", "fp8_e4m3", "fp8_e4m3_qkv"])
@pytest.mark.parametrize("shape", [(64, 4096), (8, 32768), (128, 1024)], ids=str)
def test_few_heads_space_tunes_the_gluon_kernels_split_counts(
    shape: tuple[int, int], precision: str
):
    # sm_90, 16 heads: the few-heads Gluon kernels' configs (16 x 64; 4 warps 2 stages for a
    # 16-bit cache, 8 warps 1-3 stages for an fp8 one, with or without an fp8 q) come with
    # explicit split counts around "auto", whatever tiles the generic rule picks
    batch, seqlen = shape
    problem = DecodeProblem(
        batch=batch, s_q=1, h_q=16, seqlen=seqlen, **DecodeProblem.dtypes_of(precision)
    )
    structural = [(4, 2)] if precision == "bf16" else [(8, 1), (8, 2), (8, 3)]
    space = decode_search_space(problem, H200)
    default = default_decode_config(problem, H200)
    assert (default.num_warps, default.num_stages) == structural[0]
    for warps, stages in structural:
        base = DecodeConfig(16, 64, warps, stages)
        auto = resolve_num_splits(base, problem, H200)
        splits = {
            c.num_kv_splits for c in space if c == replace(base, num_kv_splits=c.num_kv_splits)
        }
        assert "auto" in splits
        assert {max(1, auto // 2), auto * 2} - {auto} <= splits
        assert programs_per_sm(base, problem, H200) == 1


def test_bucket_names_the_precision():
    problem = DEEPSEEK[4]
    assert bucket_of(problem).dtype == "fp8_e4m3"
    fp8_q = bucket_of(replace(problem, q_dtype="fp8_e4m3"))
    assert fp8_q.dtype == "fp8_e4m3_qkv"
    assert fp8_q.key() == "b8-n32768-h16-s1-fp8_e4m3_qkv-p64"
    assert bucket_of(DEEPSEEK[0]).dtype == "bf16"
    # q_dtype joins a problem's stored identity only when set
    assert "q_dtype" not in problem.as_dict()
    assert DecodeProblem.from_dict(replace(problem, q_dtype="fp8_e4m3").as_dict()).q_dtype


def test_interpreter_space_is_tiny():
    problem = DecodeProblem(batch=2, s_q=1, h_q=64, seqlen=64, d_qk=96, d_v=64, dtype="fp16")
    space = decode_search_space(problem, CPU_INTERPRETER)
    assert 1 <= len(space) <= 6
    assert all(c.block_size_q <= 32 and c.num_stages == 1 for c in space)


@pytest.mark.parametrize(
    ("config", "problem", "limits", "reason"),
    [
        (DecodeConfig(24, 64, 4, 2), DEEPSEEK[1], H200, "block_size_q 24: expected a power of two"),
        (DecodeConfig(64, 8, 8, 2), DEEPSEEK[1], H200, "block_size_k 8"),
        (DecodeConfig(64, 64, 64, 2), DEEPSEEK[1], H200, "num_warps 64"),
        (DecodeConfig(64, 64, 8, 9), DEEPSEEK[1], H200, "num_stages 9"),
        (DecodeConfig(64, 64, 8, 2, 0), DEEPSEEK[1], H200, "num_kv_splits 0"),
        (DecodeConfig(64, 64, 4, 2), DEEPSEEK[0], H200, "rows would be wasted"),
        (DecodeConfig(64, 64, 4, 2), DEEPSEEK[1], H200, "registers: about"),
        (DecodeConfig(128, 32, 8, 2), DEEPSEEK[1], H200, "registers"),
        (DecodeConfig(64, 128, 8, 3), DEEPSEEK[1], H200, "shared memory: about"),
        (DecodeConfig(64, 64, 8, 2), DEEPSEEK[1], A100, "shared memory"),
        (DecodeConfig(16, 16, 32, 1), DEEPSEEK[0], MI300, "num_warps 32"),
    ],
)
def test_why_invalid_names_the_limit(
    config: DecodeConfig, problem: DecodeProblem, limits: DeviceLimits, reason: str
):
    why = why_invalid_decode(config, problem, limits)
    assert why is not None
    assert reason in why


def test_interpreter_skips_resource_rules():
    assert why_invalid_decode(DecodeConfig(64, 128, 4, 3), DEEPSEEK[1], CPU_INTERPRETER) is None


@pytest.mark.parametrize("limits", [H200, A100, MI300, CPU_INTERPRETER], ids=lambda x: x.arch)
@pytest.mark.parametrize("problem", DEEPSEEK, ids=lambda p: f"b{p.batch}-h{p.h_q}-s{p.s_q}")
def test_default_is_valid_everywhere(problem: DecodeProblem, limits: DeviceLimits):
    cfg = default_decode_config(problem, limits)
    assert why_invalid_decode(cfg, problem, limits) is None


def test_h200_defaults_follow_the_measurements():
    few_heads = default_decode_config(DEEPSEEK[0], H200)
    many_heads = default_decode_config(DEEPSEEK[1], H200)
    assert (few_heads.block_size_q, few_heads.num_warps, few_heads.block_size_k) == (16, 4, 64)
    assert (many_heads.block_size_q, many_heads.num_warps, many_heads.block_size_k) == (64, 8, 64)
    fp8 = default_decode_config(DEEPSEEK[4], H200)  # 16 heads, fp8 cache
    # the paired warp-specialised fp8 kernel's config on sm_90 (a one-tile fp8 ring) ...
    assert (fp8.block_size_q, fp8.block_size_k, fp8.num_warps, fp8.num_stages) == (16, 64, 8, 1)
    # ... and the Triton kernel's elsewhere (4 warps for 16 rows)
    fp8_a100 = default_decode_config(DEEPSEEK[4], A100)
    assert (fp8_a100.block_size_q, fp8_a100.num_warps) == (16, 4)
    # 64+ heads with a 16-bit cache: the seesaw kernel's config (1 stage); an fp8 cache: the
    # fp8 seesaw's (1 stage again), with a 16-bit q (split in two fp8 terms: 1.05-1.6x the
    # lockstep kernel, H200, sixteenth session) or an fp8 one
    assert many_heads.num_stages == 1
    many_fp8 = default_decode_config(replace(DEEPSEEK[1], kv_dtype="fp8_e4m3"), H200)
    assert (many_fp8.block_size_q, many_fp8.block_size_k, many_fp8.num_warps) == (64, 64, 8)
    assert many_fp8.num_stages == 1
    fp8_q = replace(DEEPSEEK[1], kv_dtype="fp8_e4m3", q_dtype="fp8_e4m3")
    many_fp8_q = default_decode_config(fp8_q, H200)
    assert (many_fp8_q.block_size_q, many_fp8_q.block_size_k, many_fp8_q.num_warps) == (64, 64, 8)
    assert many_fp8_q.num_stages == 1
    small_pages = default_decode_config(replace(DEEPSEEK[1], page_size=16), H200)
    assert small_pages.num_stages == 2  # the Triton kernel: its pipelined config


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"programs": 512, "max_seqlen": 4096, "block_size_k": 64, "sm_count": 132}, 1),
        ({"programs": 64, "max_seqlen": 64, "block_size_k": 64, "sm_count": 132}, 1),
        ({"programs": 0, "max_seqlen": 4096, "block_size_k": 64, "sm_count": 132}, 1),
        ({"programs": 64, "max_seqlen": 0, "block_size_k": 64, "sm_count": 132}, 1),
    ],
)
def test_auto_splits_edges(kwargs: dict[str, Any], expected: int):
    assert auto_num_splits(**kwargs) == expected


def test_auto_splits_fill_the_gpu_for_one_long_sequence():
    splits = auto_num_splits(programs=2, max_seqlen=16384, block_size_k=64, sm_count=132)
    assert 32 <= splits <= 64
    assert 2 * splits >= 64  # at least half the SMs busy


def test_auto_splits_fill_the_last_wave():
    # 8 sequences of 32K with 16 heads, one program per SM: the first count whose wave is 90 %
    # full is 15 (120 programs); 16 (128) is still one wave, and each program is shorter
    # (H200: 77.3-77.8 us against 78.7-79.7); 17 would start a second wave.
    kwargs = {"max_seqlen": 32768, "block_size_k": 64, "sm_count": 132, "programs_per_sm": 1}
    assert auto_num_splits(programs=8, **kwargs) == 16
    for programs in (3, 5, 8, 12, 20, 50):
        splits = auto_num_splits(programs=programs, **kwargs)
        waves = -(-programs * splits // 132)
        assert splits == 64 or -(-programs * (splits + 1) // 132) > waves, (programs, splits)


def test_auto_splits_count_programs_per_sm():
    # 32 sequences x 64 heads: one 64-row program each, one program per SM (220+ KB of shared
    # memory): 4 splits fill 128 of 132 SMs in one wave (measured best on the H200); with two
    # programs per SM the same count would leave half the slots empty.
    assert (
        auto_num_splits(
            programs=32, max_seqlen=8192, block_size_k=64, sm_count=132, programs_per_sm=1
        )
        == 4
    )
    assert auto_num_splits(programs=32, max_seqlen=8192, block_size_k=64, sm_count=132) == 8
    few = DEEPSEEK[0]  # 16 heads, bf16 cache
    assert few.h_q == 16
    assert few.kv_dtype is None
    assert programs_per_sm(DecodeConfig(64, 64, 8, 2), DEEPSEEK[1], H200) == 1
    # the few-heads Gluon kernel (168 KB) on sm_90; the Triton kernel (94 KB) elsewhere
    assert programs_per_sm(DecodeConfig(16, 64, 4, 2), few, H200) == 1
    assert programs_per_sm(DecodeConfig(16, 64, 4, 2), few, replace(H200, arch="sm_80")) == 2
    assert programs_per_sm(DecodeConfig(16, 32, 4, 2), few, H200) == 2
    assert programs_per_sm(DecodeConfig(16, 64, 4, 2), DEEPSEEK[4], H200) == 2  # fp8 cache
    # with an fp8 cache the warp-specialised few-heads kernels (168-219 KB) on sm_90
    assert programs_per_sm(DecodeConfig(16, 64, 8, 1), DEEPSEEK[4], H200) == 1
    assert programs_per_sm(DecodeConfig(16, 64, 8, 2), DEEPSEEK[4], H200) == 1
    assert programs_per_sm(DecodeConfig(16, 64, 8, 3), DEEPSEEK[4], H200) == 1
    assert programs_per_sm(DecodeConfig(16, 64, 8, 2), few, H200) == 2  # 16-bit: Triton


def test_seesaw_config_allows_twice_the_uniform_splits():
    # The seesaw kernel sizes splits from the batch's total work (a long sequence among short
    # ones takes more), so its "auto" grid holds twice the uniform count; not when one split
    # suffices (no balancing), nor for one sequence, nor for configs of other kernels.
    varied = DecodeProblem(batch=32, s_q=1, h_q=64, seqlen=0, seqlens=(8192,) + (1024,) * 31)
    uniform = resolve_num_splits(DecodeConfig(64, 64, 8, 2), varied, H200)
    assert uniform == 4
    assert resolve_num_splits(DecodeConfig(64, 64, 8, 1), varied, H200) == 2 * uniform
    assert resolve_num_splits(DecodeConfig(64, 64, 8, 1), DEEPSEEK[1], H200) == 1  # 256 programs
    one = DEEPSEEK[3]  # one sequence of 16K, 128 heads
    assert resolve_num_splits(DecodeConfig(64, 64, 8, 1), one, H200) == resolve_num_splits(
        DecodeConfig(64, 64, 8, 2), one, H200
    )
    fp8 = replace(varied, kv_dtype="fp8_e4m3")  # an fp8 cache: the fp8 seesaw, balanced too,
    assert resolve_num_splits(DecodeConfig(64, 64, 8, 1), fp8, H200) == 2 * uniform
    fp8_q = replace(fp8, q_dtype="fp8_e4m3")  # with a 16-bit q (split in two terms) or fp8 q
    assert resolve_num_splits(DecodeConfig(64, 64, 8, 1), fp8_q, H200) == 2 * uniform
    small_pages = replace(varied, page_size=16)  # pages of part tiles: no seesaw kernel
    assert resolve_num_splits(DecodeConfig(64, 64, 8, 1), small_pages, H200) == uniform


def test_explicit_splits_are_kept():
    cfg = DecodeConfig(64, 64, 8, 2, 7)
    assert resolve_num_splits(cfg, DEEPSEEK[1], H200) == 7


def test_limits_for_cpu_is_the_interpreter():
    assert limits_for("cpu") is CPU_INTERPRETER
    assert limits_for(torch.device("cpu")).is_interpreter


def test_limits_for_rejects_other_devices(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="device: expected a CUDA/ROCm device"):
        limits_for("meta")


def test_inputs_poison_everything_outside_the_sequences():
    problem = DecodeProblem(
        batch=3,
        s_q=1,
        h_q=4,
        seqlen=0,
        seqlens=(5, 16, 0),
        page_size=8,
        d_qk=48,
        d_v=32,
        dtype="fp16",
    )
    inputs = make_decode_inputs(problem, device="cpu", seed=11)
    cache, table = inputs["kv_cache"], inputs["block_table"]
    assert inputs["cache_seqlens"].tolist() == [5, 16, 0]
    for b, length in enumerate((5, 16, 0)):
        used = math.ceil(length / 8)
        rows = cache[table[b, :used].long()].reshape(-1, 1, 48)
        assert torch.isfinite(rows[:length]).all()
        assert torch.isnan(rows[length:]).all()  # slots past the end
        assert torch.isnan(cache[table[b, used:].long()]).all()  # unused entries: NaN pages
    live = table[0, :1].tolist() + table[1, :2].tolist()
    assert len(set(live)) == 3  # pages are distinct


def test_inputs_shuffle_pages_and_are_fresh_per_seed():
    problem = DecodeProblem(
        batch=2, s_q=1, h_q=4, seqlen=64, page_size=4, d_qk=48, d_v=32, dtype="fp16"
    )
    a = make_decode_inputs(problem, device="cpu", seed=1)
    b = make_decode_inputs(problem, device="cpu", seed=2)
    assert a["block_table"][:, :16].flatten().tolist() != list(range(32))
    assert not torch.equal(a["q"], b["q"])


def test_fp8_inputs_carry_a_scale():
    problem = DecodeProblem(
        batch=1,
        s_q=1,
        h_q=4,
        seqlen=9,
        page_size=4,
        d_qk=48,
        d_v=32,
        dtype="fp16",
        kv_dtype="fp8_e4m3",
    )
    inputs = make_decode_inputs(problem, device="cpu", seed=5)
    assert inputs["kv_cache"].dtype == torch.float8_e4m3fn
    assert inputs["kv_scale"].dtype == torch.float32
    assert inputs["kv_scale"].numel() == 1


def test_inputs_reject_wrong_seqlens():
    problem = DecodeProblem(batch=2, s_q=1, h_q=4, seqlen=9, seqlens=(3,), dtype="fp16")
    with pytest.raises(ValueError, match=r"problem\.seqlens: expected 2 lengths"):
        make_decode_inputs(problem, device="cpu", seed=0)


@pytest.mark.parametrize(
    ("config", "fits"),
    [
        # Measured on an H200 (bench/results/h200_tuning_*.json): these ran out of shared memory ...
        (DecodeConfig(16, 128, 16, 1), False),
        (DecodeConfig(32, 128, 8, 1), False),
        (DecodeConfig(32, 128, 16, 1), False),
        # ... and these ran.
        (DecodeConfig(16, 128, 4, 1), True),
        (DecodeConfig(16, 128, 8, 1), True),
    ],
)
def test_wide_kv_tiles_are_pruned_as_measured(config: DecodeConfig, fits: bool):
    problem = DecodeProblem(batch=128, s_q=1, h_q=128, seqlen=4096)
    reason = why_invalid_decode(config, problem, H200)
    if fits:
        assert reason is None or "shared memory" not in reason
    else:
        assert reason is not None
        assert "shared memory" in reason
