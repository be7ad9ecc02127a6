"""Inputs for ``mla_decode`` from a ``DecodeProblem``, and the two ways to run them.

``make_decode_inputs`` draws fresh random data and poisons everything the kernel must never
read: each sequence's pages are shuffled through the pool, every KV slot past a sequence's end
is NaN, and block-table entries past a sequence's pages point at pages full of NaN. A kernel
that reads outside a sequence therefore returns NaN instead of a plausible number.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .configs import DecodeConfig, DecodeProblem

_TORCH_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
_FP8_MAX = 448.0  # largest finite float8_e4m3fn


def make_decode_inputs(
    problem: DecodeProblem, *, device: torch.device | str, seed: int
) -> dict[str, Any]:
    """Random, poisoned inputs of ``problem`` on ``device``.

    Args:
        problem: the shape (``kv_dtype="fp8_e4m3"`` makes an fp8 cache with a scale,
            ``q_dtype="fp8_e4m3"`` an fp8 q with one too: ``with_fp8_q``).
        device: where the tensors live.
        seed: seeds a generator on ``device``; the same seed gives the same inputs there.

    Returns:
        ``mla_decode``'s arguments by name: q [B, S, H, D_QK]; kv_cache [pages, P, HK, D_QK];
        block_table [B, max_pages] int32; cache_seqlens [B] int32; head_dim_v; softmax_scale;
        causal; kv_scale (fp32 [1] tensor, or None); with an fp8 q, q is float8_e4m3fn and
        q_scale its fp32 [1] scale.

    Raises:
        ValueError: ``seqlens`` whose length is not ``batch``, or a negative length.
    """
    dev = torch.device(device)
    lengths = problem.lengths()
    if len(lengths) != problem.batch or min(lengths, default=0) < 0:
        raise ValueError(
            f"problem.seqlens: expected {problem.batch} lengths >= 0, got {list(lengths)}"
        )
    gen = torch.Generator(device=dev)
    gen.manual_seed(seed)
    dtype = _TORCH_DTYPES[problem.dtype]
    page = problem.page_size
    pages_per_seq = [math.ceil(n / page) for n in lengths]
    max_pages = max(pages_per_seq, default=0) + 1  # one spare entry per row, always unused
    poison_pages = 2
    num_pages = sum(pages_per_seq) + poison_pages
    shape = (num_pages, page, problem.h_kv, problem.d_qk)

    kv = torch.randn(shape, generator=gen, device=dev, dtype=torch.float32)
    perm = torch.randperm(num_pages, generator=gen, device=dev).to(torch.int32)
    block_table = torch.empty(problem.batch, max_pages, dtype=torch.int32, device=dev)
    poison_ids = perm[num_pages - poison_pages :]
    start = 0
    for b, (length, used) in enumerate(zip(lengths, pages_per_seq, strict=True)):
        ids = perm[start : start + used]
        start += used
        block_table[b, :used] = ids
        # Unused entries point at NaN pages: the kernel must never follow them.
        spare = max_pages - used
        block_table[b, used:] = poison_ids.repeat(math.ceil(spare / poison_pages))[:spare]
        tail = length - (used - 1) * page if used else page
        if used and tail < page:
            kv[int(ids[-1]), tail:] = float("nan")  # slots past the sequence's end
    kv[poison_ids.long()] = float("nan")

    kv_scale: torch.Tensor | None = None
    if problem.kv_dtype == "fp8_e4m3":
        kv_cache, kv_scale = _to_e4m3(kv)
    else:
        kv_cache = kv.to(dtype)
    q = torch.randn(
        (problem.batch, problem.s_q, problem.h_q, problem.d_qk), generator=gen, device=dev
    ).to(dtype)
    inputs = {
        "q": q,
        "kv_cache": kv_cache,
        "block_table": block_table,
        "cache_seqlens": torch.tensor(lengths, dtype=torch.int32, device=dev),
        "head_dim_v": problem.d_v,
        "softmax_scale": problem.d_qk**-0.5,
        "causal": problem.causal,
        "kv_scale": kv_scale,
    }
    return with_fp8_q(inputs) if problem.q_dtype == "fp8_e4m3" else inputs


def _to_e4m3(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` (any float dtype) as float8_e4m3fn under one fp32 scale ([1]: real = stored x
    scale), the largest finite magnitude mapped to e4m3's 448 (NaN stays NaN)."""
    finite = x[torch.isfinite(x)].float()
    amax = float(finite.abs().max()) if finite.numel() else 1.0
    scale = torch.tensor([max(amax, 1e-12) / _FP8_MAX], dtype=torch.float32, device=x.device)
    return (x.float() / scale).to(torch.float8_e4m3fn), scale


def with_fp8_q(inputs: dict[str, Any]) -> dict[str, Any]:
    """``inputs`` (``make_decode_inputs``) with q quantised to float8_e4m3fn under one fp32
    scale (``q_scale`` [1]: real q = stored q x q_scale), as FlashMLA's fp8 interface takes it."""
    q8, q_scale = _to_e4m3(inputs["q"])
    return {**inputs, "q": q8, "q_scale": q_scale}


def run_decode(inputs: dict[str, Any], config: DecodeConfig | None) -> tuple[torch.Tensor, ...]:
    """``mla_decode(**inputs, config=config)`` -> (out [B, S, H, D_V], lse [B, H, S])."""
    from .mla_decode import mla_decode

    return mla_decode(**inputs, config=config)


def run_decode_ref(inputs: dict[str, Any]) -> tuple[torch.Tensor, ...]:
    """The fp32 reference on the same inputs -> (out [B, S, H, D_V] in q's dtype, lse fp32)."""
    from .reference import mla_decode_ref

    return mla_decode_ref(**inputs)


__all__ = ["make_decode_inputs", "run_decode", "run_decode_ref", "with_fp8_q"]
