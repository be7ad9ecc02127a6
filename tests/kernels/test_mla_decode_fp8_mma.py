"""fp8 q (``q_scale``) over an fp8 cache: the argument checks, the 16-bit fallback (``fp8_q``),
the fp8 tensor-core kernel (``mla_decode_hopper_fp8_mma``, 16-48 heads) and the fp8 seesaw
(``mla_decode_hopper_seesaw_fp8``, 64+ heads; with a 16-bit q too, split in two fp8 terms).

CPU (interpreter): the checks, the problem's ``q_dtype``, the dequantisation pass, and an fp8
q run on the kernels that compute in 16 bits (q dequantised first) against the fp32 reference
(the kernel's sm_90 compile report, fp8 wgmma and no spills, is checked in
``test_mla_decode_hopper.py``). GPU (sm_90): the kernel itself, into poisoned outputs, over
every ring depth, splits, tails, empty and one-token sequences, causal s_q 2, pages of 64-256
tokens and a decode plan.
"""

from __future__ import annotations

import importlib
from dataclasses import replace
from typing import Any

import pytest
import torch

from mlafleet.kernels import mla_decode
from mlafleet.kernels.configs import DecodeConfig, DecodeProblem
from mlafleet.kernels.decode_inputs import make_decode_inputs, run_decode_ref, with_fp8_q
from mlafleet.kernels.flash_mla_compat import flash_mla_with_kvcache
from mlafleet.kernels.fp8_q import dequantise_q

Kit = Any  # conftest's DecodeKit (the kit fixture)

FP8 = torch.float8_e4m3fn
FP8_MMA_REL_L2 = 3e-2  # q and p in e4m3 (p's 3-bit mantissa: ~1.3e-2 on random inputs)


def _fp8_inputs(problem: DecodeProblem, device: Any, seed: int) -> dict[str, Any]:
    """Inputs of ``problem`` (an fp8 cache) with an fp8 q too."""
    return make_decode_inputs(replace(problem, q_dtype="fp8_e4m3"), device=device, seed=seed)


def test_fp8_q_is_quantised_with_one_scale(seed: int, kit: Kit):
    problem = kit.small_problem(dtype="bf16", kv_dtype="fp8_e4m3")
    plain = make_decode_inputs(problem, device="cpu", seed=seed)
    inputs = with_fp8_q(plain)
    assert inputs["q"].dtype == FP8
    assert inputs["q_scale"].shape == (1,)
    back = inputs["q"].float() * inputs["q_scale"]
    assert float(inputs["q"].float().abs().max()) == 448.0  # amax maps to e4m3's largest
    # e4m3: 3 mantissa bits (relative error <= 2^-4); subnormals below 2^-6 step by 2^-9
    step = float(inputs["q_scale"]) * 2**-9
    torch.testing.assert_close(back, plain["q"].float(), atol=step, rtol=2**-4)


def test_problem_with_fp8_q_draws_the_inputs_with_fp8_q_makes(seed: int, kit: Kit):
    problem = kit.small_problem(dtype="bf16", kv_dtype="fp8_e4m3")
    assert problem.workload_dtype == "fp8_e4m3"
    fp8_q = replace(problem, q_dtype="fp8_e4m3")
    assert fp8_q.workload_dtype == "fp8_e4m3_qkv"
    assert DecodeProblem.dtypes_of("fp8_e4m3_qkv") == {
        "dtype": "bf16", "kv_dtype": "fp8_e4m3", "q_dtype": "fp8_e4m3"
    }  # fmt: skip
    made = make_decode_inputs(fp8_q, device="cpu", seed=seed)
    expected = with_fp8_q(make_decode_inputs(problem, device="cpu", seed=seed))
    assert made["q"].dtype == FP8
    assert torch.equal(made["q"].view(torch.uint8), expected["q"].view(torch.uint8))
    assert torch.equal(made["q_scale"], expected["q_scale"])


@pytest.mark.parametrize(
    "fields", [{"kv_dtype": None}, {"dtype": "fp16"}, {"kv_dtype": "bf16"}], ids=str
)
def test_problem_with_fp8_q_needs_an_fp8_cache_and_bf16_out(fields: dict[str, Any], kit: Kit):
    values = {"dtype": "bf16", "kv_dtype": "fp8_e4m3", "q_dtype": "fp8_e4m3", **fields}
    with pytest.raises(ValueError, match="an fp8 q needs kv_dtype 'fp8_e4m3' and dtype 'bf16'"):
        kit.small_problem(**values)
    with pytest.raises(ValueError, match="dtype: expected one of"):
        DecodeProblem.dtypes_of("fp8")


def test_dequantise_q_rounds_once_to_bf16(seed: int, kit: Kit):
    # one Triton pass: stored x scale in fp32, one rounding to bf16 to nearest even, as
    # PyTorch's cast does; any strides
    problem = kit.small_problem(dtype="bf16", kv_dtype="fp8_e4m3", batch=3, s_q=2)
    inputs = _fp8_inputs(problem, kit.device(), seed)
    q8, q_scale = inputs["q"].transpose(1, 2), inputs["q_scale"]
    if q8.is_cuda:  # e4m3's NaN codes stay NaN (the interpreter reads them as +-480)
        q8.view(torch.uint8)[0, 0, 0, :2] = torch.tensor([0x7F, 0xFF])
    got = dequantise_q(q8, q_scale)
    assert got.dtype == torch.bfloat16
    assert got.is_contiguous()
    expected = (q8.float() * q_scale.reshape(())).to(torch.bfloat16)
    assert int(got.isnan().sum()) == (2 if q8.is_cuda else 0)
    torch.testing.assert_close(got, expected, atol=0, rtol=0, equal_nan=True)
    assert dequantise_q(q8[:0], q_scale).shape == (0, *q8.shape[1:])


def test_fp8_q_on_the_16_bit_kernels_matches_reference(seed: int, kit: Kit):
    # off sm_90 (here: the interpreter) q is dequantised to bf16 and the 16-bit kernels run;
    # the output is bf16, as FlashMLA's fp8 interface gives
    problem = kit.small_problem(dtype="bf16", kv_dtype="fp8_e4m3", seqlens=(40, 17, 0))
    inputs = _fp8_inputs(problem, kit.device(), seed)
    out, lse = mla_decode(**inputs, out=kit.poisoned_out(inputs))
    assert out.dtype == torch.bfloat16
    kit.assert_matches_reference({**inputs, "q": inputs["q"].to(torch.bfloat16)}, (out, lse))
    ref_out, ref_lse = run_decode_ref(inputs)  # the reference dequantises q itself
    assert ref_out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref_out.float(), atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(lse, ref_lse, atol=1e-3, rtol=1e-3)


def test_flash_mla_compat_takes_fp8_q_with_descale_q(seed: int, kit: Kit):
    problem = kit.small_problem(dtype="bf16", kv_dtype="fp8_e4m3")
    inputs = _fp8_inputs(problem, kit.device(), seed)
    out, lse = flash_mla_with_kvcache(
        inputs["q"], inputs["kv_cache"], inputs["block_table"], inputs["cache_seqlens"],
        inputs["head_dim_v"], None, None, softmax_scale=inputs["softmax_scale"],
        descale_q=inputs["q_scale"], descale_k=inputs["kv_scale"],
    )  # fmt: skip
    ref_out, ref_lse = run_decode_ref(inputs)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref_out.float(), atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(lse, ref_lse, atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        ({"q_scale": None}, ValueError, "q_scale: expected an fp32 scalar tensor for a float8"),
        ({"q_scale": torch.ones(2)}, ValueError, "q_scale: expected one element"),
        ({"q_scale": torch.ones(1, dtype=torch.float16)}, TypeError, "q_scale"),
        ({"q_scale": 0.5}, TypeError, "q_scale"),
        ({"plain_q": True}, ValueError, "q_scale: only meaningful with a float8_e4m3fn q"),
        ({"bf16_cache": True}, TypeError, "an fp8 q needs a float8_e4m3fn cache"),
        ({"out_dtype": torch.float16}, TypeError, "out"),
    ],
)
def test_fp8_q_argument_errors(
    change: dict[str, Any], error: type, message: str, seed: int, kit: Kit
):
    problem = kit.small_problem(dtype="bf16", kv_dtype="fp8_e4m3")
    inputs = _fp8_inputs(problem, kit.device(), seed)
    if change.pop("plain_q", False):
        inputs["q"] = inputs["q"].to(torch.bfloat16)
    if change.pop("bf16_cache", False):
        inputs["kv_cache"] = inputs["kv_cache"].to(torch.bfloat16)
        inputs["kv_scale"] = None
    out_dtype = change.pop("out_dtype", None)
    if out_dtype is not None:
        inputs["out"] = kit.poisoned_out(inputs).to(out_dtype)
    device = inputs["q"].device  # the table's tensors are made on the CPU: moved to q's device
    inputs.update({k: v.to(device) if torch.is_tensor(v) else v for k, v in change.items()})
    with pytest.raises(error, match=message):
        mla_decode(**inputs)


# ---- GPU (sm_90): the fp8 tensor-core kernel --------------------------------------------------


def _assert_close_fp8(
    inputs: dict[str, Any],
    got: tuple[torch.Tensor, torch.Tensor],
    seed: int,
    bound: float = FP8_MMA_REL_L2,
):
    """``got`` within ``bound`` (relative L2) of the reference over the dequantised inputs,
    no NaN, lse close."""
    out, lse = got
    ref_out, ref_lse = run_decode_ref(inputs)
    assert not torch.isnan(out).any(), f"NaN in out (unwritten or read poison), seed {seed}"
    err = float((out.float() - ref_out.float()).norm() / ref_out.float().norm().clamp_min(1e-30))
    assert err <= bound, f"relative L2 {err:.3g} > {bound}, seed {seed}"
    torch.testing.assert_close(lse, ref_lse, atol=2e-2, rtol=2e-3, msg=lambda m: f"lse: {m}")


@pytest.mark.gpu
@pytest.mark.parametrize(
    ("h_q", "stages", "splits", "s_q", "page_size"),
    [
        (16, 1, 1, 1, 64),  # num_stages 1 (the default): a 2-tile ring
        (16, 1, 4, 1, 128),
        (48, 1, 64, 2, 256),  # empty splits, causal
        (16, 2, 1, 1, 64),  # 2: 4 tiles
        (32, 2, 3, 1, 64),
        (16, 2, 4, 2, 64),
        (48, 2, 64, 1, 256),
        (32, 1, 2, 2, 64),
    ],
)
def test_fp8_mma_kernel_on_gpu(
    h_q: int, stages: int, splits: int, s_q: int, page_size: int, seed: int, kit: Kit
):
    if torch.cuda.get_device_capability() != (9, 0):
        pytest.skip("the fp8 tensor-core kernel is for sm_90")
    module = importlib.import_module("mlafleet.kernels.mla_decode")
    problem = DecodeProblem(
        batch=5, s_q=s_q, h_q=h_q, seqlen=0, seqlens=(1000, 63, 129, 0, 1),
        page_size=page_size, dtype="bf16", kv_dtype="fp8_e4m3", causal=s_q > 1,
    )  # fmt: skip
    inputs = _fp8_inputs(problem, "cuda", seed)
    config = DecodeConfig(16, 64, 8, stages, splits)
    got = mla_decode(**inputs, config=config, out=kit.poisoned_out(inputs))
    assert module.LAST_COMPILED["decode_kernel"] == "fp8_mma"
    _assert_close_fp8(inputs, got, seed)


@pytest.mark.gpu
def test_fp8_q_with_a_ring_depth_the_kernel_lacks_runs_dequantised_on_gpu(seed: int, kit: Kit):
    # num_stages 3 names no ring depth of the fp8 tensor-core kernel (its rings are even): the
    # call dequantises q and runs the fp8-cache kernel instead, still correct
    if torch.cuda.get_device_capability() != (9, 0):
        pytest.skip("the fp8 tensor-core kernel is for sm_90")
    module = importlib.import_module("mlafleet.kernels.mla_decode")
    problem = DecodeProblem(
        batch=3, s_q=1, h_q=16, seqlen=0, seqlens=(700, 1, 64), page_size=64, dtype="bf16",
        kv_dtype="fp8_e4m3",
    )  # fmt: skip
    inputs = _fp8_inputs(problem, "cuda", seed)
    got = mla_decode(**inputs, config=DecodeConfig(16, 64, 8, 3, 2), out=kit.poisoned_out(inputs))
    assert module.LAST_COMPILED["decode_kernel"] != "fp8_mma"
    _assert_close_fp8(inputs, got, seed)


@pytest.mark.gpu
def test_fp8_mma_kernel_full_size_and_with_a_plan_on_gpu(seed: int, kit: Kit):
    # DeepSeek's decode at tensor-parallel 8 (16 heads), uneven lengths; one plan for two layers
    if torch.cuda.get_device_capability() != (9, 0):
        pytest.skip("the fp8 tensor-core kernel is for sm_90")
    from mlafleet.kernels.decode_plan import plan_decode

    module = importlib.import_module("mlafleet.kernels.mla_decode")
    lengths = (64 * 300 + 5, *(100,) * 20, 4096, 0)
    problem = DecodeProblem(
        batch=len(lengths), s_q=1, h_q=16, seqlen=0, seqlens=lengths, page_size=64,
        dtype="bf16", kv_dtype="fp8_e4m3",
    )  # fmt: skip
    plan = plan_decode(**_fp8_inputs(problem, "cuda", seed))
    assert plan.work is not None
    for layer in range(2):
        inputs = _fp8_inputs(problem, "cuda", seed + 1 + layer)
        got = mla_decode(**inputs, plan=plan, out=kit.poisoned_out(inputs))
        assert module.LAST_COMPILED["decode_kernel"] == "fp8_mma"
        _assert_close_fp8(inputs, got, seed + 1 + layer)


# ---- GPU (sm_90): the fp8 seesaw kernel (64+ heads), fp8 q or a 16-bit q split in two terms -

FP8_SEESAW_REL_L2 = 5e-3
"""q is fp8 in the reference too (dequantised); what is left: the fp8 tensor core's score
accumulation and p in fp16 (3.6e-4 to 5.4e-4 measured on the H200, fifteenth session)."""
SPLIT_Q_REL_L2 = 5e-3
"""The 16-bit q itself is exact in its two fp8 terms (a bf16 value's residual after rounding to
e4m3 has at most 4 significant bits); what is left is the fp8 tensor core's score
accumulation, about one more bf16 rounding of q (H200, sixteenth session: 4e-4 to 2e-3
relative L2 against the reference's exact q)."""


def _seesaw_inputs(problem: DecodeProblem, q: str, seed: int) -> tuple[dict[str, Any], float]:
    """CUDA inputs of ``problem`` (an fp8 cache) with q in ``q`` (``fp8``: with its scale;
    ``bf16`` / ``fp16``: the kernel splits it) and the relative L2 bound that q allows."""
    if q == "fp8":
        return _fp8_inputs(problem, "cuda", seed), FP8_SEESAW_REL_L2
    return make_decode_inputs(replace(problem, dtype=q), device="cuda", seed=seed), SPLIT_Q_REL_L2


@pytest.mark.gpu
@pytest.mark.parametrize(
    ("h_q", "splits", "s_q", "page_size", "q"),
    [
        (64, 1, 1, 64, "fp8"),
        (128, 4, 1, 128, "fp8"),
        (128, 64, 2, 256, "fp8"),  # empty splits, causal
        (64, 3, 1, 64, "fp8"),
        (256, 2, 2, 64, "fp8"),
        (64, 1, 1, 64, "bf16"),
        (128, 4, 1, 128, "bf16"),
        (128, 64, 2, 256, "bf16"),
        (64, 3, 1, 64, "fp16"),
        (256, 2, 2, 64, "fp16"),
    ],
)
def test_fp8_seesaw_kernel_on_gpu(
    h_q: int, splits: int, s_q: int, page_size: int, q: str, seed: int, kit: Kit
):
    if torch.cuda.get_device_capability() != (9, 0):
        pytest.skip("the fp8 seesaw kernel is for sm_90")
    module = importlib.import_module("mlafleet.kernels.mla_decode")
    problem = DecodeProblem(
        batch=5, s_q=s_q, h_q=h_q, seqlen=0, seqlens=(1000, 63, 129, 0, 1),
        page_size=page_size, dtype="bf16", kv_dtype="fp8_e4m3", causal=s_q > 1,
    )  # fmt: skip
    inputs, bound = _seesaw_inputs(problem, q, seed)
    config = DecodeConfig(64, 64, 8, 1, splits)
    got = mla_decode(**inputs, config=config, out=kit.poisoned_out(inputs))
    assert module.LAST_COMPILED["decode_kernel"] == "many_heads_fp8_seesaw"
    _assert_close_fp8(inputs, got, seed, bound)


@pytest.mark.gpu
@pytest.mark.parametrize("magnitude", [1e-3, 1e3])
def test_split_q_scales_each_row_on_gpu(magnitude: float, seed: int, kit: Kit):
    # q far below e4m3's normal range (its smallest normal is 2^-6) or far above its largest
    # (448), with the softmax scale making up for it, and one head of zeros: each row's
    # power-of-two scale keeps every digit, with none lost to subnormals or saturation
    if torch.cuda.get_device_capability() != (9, 0):
        pytest.skip("the fp8 seesaw kernel is for sm_90")
    problem = DecodeProblem(
        batch=3, s_q=1, h_q=128, seqlen=0, seqlens=(777, 64, 2000), page_size=64,
        dtype="bf16", kv_dtype="fp8_e4m3",
    )  # fmt: skip
    inputs = make_decode_inputs(problem, device="cuda", seed=seed)
    inputs["q"].mul_(magnitude)
    inputs["q"][:, :, 7] = 0
    inputs["softmax_scale"] = inputs["softmax_scale"] / magnitude
    got = mla_decode(**inputs, config=DecodeConfig(64, 64, 8, 1, 1), out=kit.poisoned_out(inputs))
    _assert_close_fp8(inputs, got, seed, SPLIT_Q_REL_L2)


@pytest.mark.gpu
@pytest.mark.parametrize("q", ["fp8", "bf16"])
def test_fp8_seesaw_kernel_is_bitwise_repeatable(q: str, seed: int, kit: Kit):
    # as the 16-bit seesaw's test (test_mla_decode.py): hand-offs read too early would show as
    # launches that differ
    if torch.cuda.get_device_capability() != (9, 0):
        pytest.skip("the fp8 seesaw kernel is for sm_90")
    problem = DecodeProblem(
        batch=64, s_q=2, h_q=128, seqlen=4000, page_size=64, dtype="bf16",
        kv_dtype="fp8_e4m3", causal=True,
    )  # fmt: skip
    inputs, _ = _seesaw_inputs(problem, q, seed)
    config = DecodeConfig(64, 64, 8, 1, num_kv_splits=1)
    differing = kit.launches_differing(inputs, config, "many_heads_fp8_seesaw")
    assert differing == 0, f"{differing} of 300 launches differ from the first"


@pytest.mark.gpu
@pytest.mark.parametrize("q", ["fp8", "bf16"])
def test_flash_mla_fp8_cache_at_128_heads_runs_the_fp8_seesaw_on_gpu(q: str, seed: int, kit: Kit):
    # FlashMLA's call over an fp8 cache (descale_k; with an fp8 q descale_q too) with
    # DeepSeek's 128 heads and its scheduler metadata, left to the default config: the fp8
    # seesaw (a bf16 q split in two fp8 terms)
    if torch.cuda.get_device_capability() != (9, 0):
        pytest.skip("the fp8 seesaw kernel is for sm_90")
    from mlafleet.kernels.flash_mla_compat import get_mla_metadata

    module = importlib.import_module("mlafleet.kernels.mla_decode")
    problem = DecodeProblem(
        batch=4, s_q=1, h_q=128, seqlen=0, seqlens=(4096, 77, 1, 2048), page_size=64,
        dtype="bf16", kv_dtype="fp8_e4m3",
    )  # fmt: skip
    inputs, bound = _seesaw_inputs(problem, q, seed)
    sched_meta, _ = get_mla_metadata()
    out, lse = flash_mla_with_kvcache(
        inputs["q"], inputs["kv_cache"], inputs["block_table"], inputs["cache_seqlens"],
        inputs["head_dim_v"], sched_meta, None, softmax_scale=inputs["softmax_scale"],
        descale_q=inputs.get("q_scale"), descale_k=inputs["kv_scale"],
    )  # fmt: skip
    assert module.LAST_COMPILED["decode_kernel"] == "many_heads_fp8_seesaw"
    _assert_close_fp8(inputs, (out, lse), seed, bound)
