"""The Gluon sm_90 prefill kernels (``mla_prefill_hopper``, ``_ws``): compiled for Hopper on the
CPU, run on the GPU against the fp32 reference.

CPU: every config the launcher sends them is compiled for sm_90 by Triton's own ptxas
(``sm90_compile_report.py --prefill``, in a child process without ``TRITON_INTERPRET``) and the
report checked: no spills, fits one block, each score k-step one wgmma over the whole key tile.
GPU (``-m gpu``): NaN-padded input views, NaN-poisoned outputs, lengths that hit every branch
(empty sequences, tails, bottom-right causal, rows that see no key, GQA, a power-of-two d_qk).
"""

from __future__ import annotations

import dataclasses
import importlib
import secrets
from collections.abc import Callable
from typing import Any

import pytest
import torch

from mlafleet.kernels import mla_prefill_hopper
from mlafleet.kernels.configs import PrefillConfig, PrefillProblem
from mlafleet.kernels.device_limits import interpreting
from mlafleet.kernels.mla_prefill_hopper_ws import ws_prefill_config
from mlafleet.kernels.prefill_args import check_prefill_args
from mlafleet.kernels.prefill_inputs import make_prefill_inputs, run_prefill_ref

prefill_mod = importlib.import_module("mlafleet.kernels.mla_prefill")
SM90_SHARED_BYTES = 232448
CONFIGS = {
    "128x128x8x2": PrefillConfig(block_size_q=128, block_size_k=128, num_warps=8, num_stages=2),
    "128x64x8x3": PrefillConfig(block_size_q=128, block_size_k=64, num_warps=8, num_stages=3),
    "64x64x4x2": PrefillConfig(block_size_q=64, block_size_k=64, num_warps=4, num_stages=2),
}


@pytest.fixture(scope="module")
def report(sm90_compile_report: Callable[..., list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return sm90_compile_report("--prefill")


def test_prefill_configs_compile_without_spills(report: list[dict[str, Any]]) -> None:
    assert {row["config"] for row in report} >= {"128x128x8x2", "128x64x8x3", "64x128x4x2"}
    # 128 rows over 8 warps: the warp-specialised kernel; 64 rows over 4: the lockstep one
    assert {row["kernel"] for row in report} == {"prefill", "prefill_ws"}
    for row in report:
        assert row["registers"] <= 255, row
        assert row["stack_bytes"] == 0, row
        assert row["shared_bytes"] <= SM90_SHARED_BYTES, row


def test_prefill_scores_take_one_wgmma_per_k_step(report: list[dict[str, Any]]) -> None:
    for row in report:
        bn = int(row["config"].split("x")[1])
        # d_qk 192 = 12 k-steps of 64 x BN (prologue tile + loop); p @ v: BN / 16 k-steps of
        # 64 x 128 (loop + last tile): nothing replicated across the warpgroups
        assert row["wgmma"].get(f"64x{bn}x16", 0) >= 24, row
        assert row["wgmma"].get("64x128x16", 0) >= 2 * bn // 16, row


@pytest.mark.skipif(
    not interpreting(), reason="the launcher off a GPU: CPU inputs need TRITON_INTERPRET=1"
)
def test_launcher_names_why_the_gluon_kernel_cannot_run() -> None:
    """Off sm_90 (here: the CPU) the launcher keeps the Triton kernel, or says why if forced."""
    inputs = make_prefill_inputs(
        PrefillProblem(batch=1, seqlen_q=8, seqlen_k=8, h=2, d_qk=48, d_v=32, dtype="fp16"),
        device="cpu",
        seed=1,
    )
    args = check_prefill_args(
        inputs["q"], inputs["k"], inputs["v"], inputs["cu_seqlens_q"], inputs["cu_seqlens_k"],
        inputs["max_seqlen_q"], inputs["max_seqlen_k"], causal=True, softmax_scale=None,
    )  # fmt: skip
    cfg = CONFIGS["64x64x4x2"]
    assert mla_prefill_hopper.why_not_hopper(args, cfg) == "not an NVIDIA GPU"
    with pytest.raises(ValueError, match="use_gluon: no sm_90 Gluon prefill kernel takes"):
        prefill_mod._launch(args, cfg, use_gluon=True)


def _sm90() -> bool:
    return torch.cuda.is_available() and torch.cuda.get_device_capability() == (9, 0)


GPU_CASES: dict[str, tuple[PrefillProblem, dict[str, Any]]] = {
    "deepseek_causal_varlen": (
        PrefillProblem(batch=4, seqlen_q=300, seqlen_k=300, h=8, dtype="bf16"),
        {"lengths": [(300, 300), (0, 0), (129, 129), (1, 1)]},
    ),
    "deepseek_bottom_right": (
        PrefillProblem(batch=3, seqlen_q=200, seqlen_k=500, h=8, dtype="bf16"),
        {"lengths": [(200, 500), (77, 333), (64, 64)]},
    ),
    "more_queries_than_keys": (
        PrefillProblem(batch=2, seqlen_q=260, seqlen_k=100, h=4, dtype="fp16"),
        {"lengths": [(260, 100), (50, 0)]},
    ),
    "noncausal_gqa": (
        PrefillProblem(batch=3, seqlen_q=250, seqlen_k=390, h=8, h_k=2, dtype="bf16", causal=False),
        {"varlen": True},
    ),
    "pow2_qk_128_64": (
        PrefillProblem(batch=2, seqlen_q=190, seqlen_k=190, h=4, d_qk=128, d_v=64, dtype="fp16"),
        {"varlen": True},
    ),
}


@pytest.mark.gpu
@pytest.mark.parametrize("config", sorted(CONFIGS))
@pytest.mark.parametrize("case", sorted(GPU_CASES))
def test_gluon_prefill_matches_reference(case: str, config: str,
                                         monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    if not _sm90():
        pytest.skip("the Gluon prefill kernel runs on sm_90")

    def poisoned(shape: tuple[int, ...], *, dtype: torch.dtype, device: Any) -> torch.Tensor:
        return torch.full(shape, float("nan"), dtype=dtype, device=device)

    monkeypatch.setattr(prefill_mod, "_empty", poisoned)
    problem, input_kw = GPU_CASES[case]
    seed = secrets.randbits(31)
    inputs = make_prefill_inputs(problem, device="cuda", seed=seed, **input_kw)
    args = check_prefill_args(
        inputs["q"], inputs["k"], inputs["v"], inputs["cu_seqlens_q"], inputs["cu_seqlens_k"],
        inputs["max_seqlen_q"], inputs["max_seqlen_k"], causal=inputs["causal"],
        softmax_scale=inputs["softmax_scale"],
    )  # fmt: skip
    out, lse, _ = prefill_mod._launch(args, CONFIGS[config], use_gluon=True)
    # 128 rows over 8 warps: the warp-specialised kernel (two warpgroups and a copy warp)
    expected = "gluon_ws" if ws_prefill_config(CONFIGS[config]) else "gluon"
    assert prefill_mod.LAST_COMPILED["prefill_kernel"] == expected
    ref_out, ref_lse = run_prefill_ref(inputs)
    msg = f"{case} {config} seed {seed}"
    assert not torch.isnan(out).any(), f"{msg}: NaN in out (unwritten or poisoned read)"
    rel_l2 = float((out.float() - ref_out.float()).norm() / ref_out.float().norm().clamp_min(1e-6))
    assert rel_l2 < 1e-2, f"{msg}: relative L2 error {rel_l2:.2e}"
    torch.testing.assert_close(out.float(), ref_out.float(), atol=2e-2, rtol=2e-2,
                               msg=lambda m: f"{msg}: {m}")  # fmt: skip
    torch.testing.assert_close(lse, ref_lse, atol=1e-3, rtol=1e-3, msg=lambda m: f"{msg}: {m}")


def _shape_device() -> str:
    """Where the shape-rule tests build their inputs: the CPU under the interpreter, else the
    GPU (the rules do not depend on the device; the argument checks refuse CPU tensors then)."""
    return "cpu" if interpreting() else "cuda"


def _args_for(problem: PrefillProblem, **input_kw: Any) -> Any:
    inputs = make_prefill_inputs(problem, device=_shape_device(), seed=3, **input_kw)
    return check_prefill_args(
        inputs["q"], inputs["k"], inputs["v"], inputs["cu_seqlens_q"], inputs["cu_seqlens_k"],
        inputs["max_seqlen_q"], inputs["max_seqlen_k"], causal=True, softmax_scale=None,
    )  # fmt: skip


DEEPSEEK = PrefillProblem(batch=2, seqlen_q=40, seqlen_k=40, h=4, dtype="bf16")


def test_gluon_kernels_take_deepseek_dims_contiguous_or_padded_views() -> None:
    """The shape rules (device aside): NaN-padded views (head stride 200) and contiguous."""
    padded = _args_for(DEEPSEEK)
    assert padded.q.stride(1) == 200
    contiguous = dataclasses.replace(
        padded, q=padded.q.contiguous(), k=padded.k.contiguous(), v=padded.v.contiguous()
    )
    for args in (padded, contiguous):
        for cfg in CONFIGS.values():
            assert mla_prefill_hopper.why_not_shape(args, cfg) is None, cfg


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"d_qk": 112}, "head dims 112/128"),  # 64 + 48: the second part would be padded
        ({"d_v": 96}, "head dims 192/96"),
        ({"seqlen_k": 0}, "no keys at all"),
    ],
)
def test_gluon_kernels_refuse_shapes_they_do_not_cover(change: dict[str, int], reason: str) -> None:
    args = _args_for(dataclasses.replace(DEEPSEEK, **change))
    why = mla_prefill_hopper.why_not_shape(args, CONFIGS["64x64x4x2"])
    assert why is not None
    assert why.startswith(reason), why


def test_gluon_kernels_refuse_unaligned_strides_and_foreign_configs() -> None:
    args = _args_for(DEEPSEEK)
    # heads 392 bytes apart
    odd = torch.zeros(80, 4, 196, dtype=torch.bfloat16, device=args.q.device)[:, :, :192]
    why = mla_prefill_hopper.why_not_shape(dataclasses.replace(args, q=odd), CONFIGS["64x64x4x2"])
    assert why is not None
    assert why.startswith("q: strides"), why
    for knobs, reason in (
        ((128, 64, 4, 2), "config: block_size_q must be 64 with 4 warps or 128 with 8"),
        ((64, 64, 4, 1), "config: needs 2+ stages"),
        ((128, 128, 8, 3), "config: 294968 bytes"),  # q 48 KB + three 80 KB stages > 227 KB
    ):
        why = mla_prefill_hopper.why_not_shape(args, PrefillConfig(*knobs))
        assert why is not None
        assert why.startswith(reason), (knobs, why)
