"""An fp8 q turned into bf16 for the decode kernels that compute in 16 bits: one Triton pass.

FlashMLA's fp8 interface hands ``mla_decode`` a float8_e4m3fn q with an fp32 scale
(``q_scale``). Only ``mla_decode_hopper_fp8_mma`` (sm_90, 16-48 heads) computes on it directly;
every other kernel reads a bf16 q, made here: each value times the scale in fp32, rounded once
to bf16, to nearest even, which is bitwise what ``(q.float() * q_scale).bfloat16()`` gives.
The rounding is done on the fp32 bits (Triton's CPU interpreter would round toward zero in a
plain cast), so the interpreter gives the GPU's result, except that it reads e4m3's NaN codes
as +-480 where the GPU keeps them NaN. One kernel reads 1 byte and writes 2 per
value, where those three PyTorch ops move 11 bytes per value through fp32 temporaries. The
scale is read on the device: no host sync, so the pass can be captured in a CUDA graph.
"""

from __future__ import annotations

from dataclasses import replace

import torch
import triton
import triton.language as tl

from .decode_checks import DecodeArgs

BLOCK = 4096
"""Values per program (4 warps: 32 a thread)."""


@triton.jit
def _dequantise_kernel(q_ptr, scale_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    scale = tl.load(scale_ptr)
    value = tl.load(q_ptr + offs, mask=mask, other=0.0).to(tl.float32) * scale
    bits = value.to(tl.uint32, bitcast=True)
    # to nearest, ties to even (inf stays inf); a NaN keeps its quiet bit, so it stays NaN
    bits = tl.where(value == value, bits + 0x7FFF + ((bits >> 16) & 1), bits | 0x400000)
    tl.store(out_ptr + offs, (bits >> 16).to(tl.uint16).to(tl.bfloat16, bitcast=True), mask=mask)


def dequantise_q(q: torch.Tensor, q_scale: torch.Tensor) -> torch.Tensor:
    """``q x q_scale`` in bf16.

    Args:
        q: [B, S, H, D_QK] float8_e4m3fn (any strides: a non-contiguous q is copied first).
        q_scale: fp32 tensor of one element: real q = stored q x q_scale.

    Returns:
        [B, S, H, D_QK] bf16, contiguous.
    """
    src = q.contiguous()
    out = torch.empty(src.shape, dtype=torch.bfloat16, device=src.device)
    n = src.numel()
    if n:
        scale = q_scale.reshape(1).to(torch.float32)
        _dequantise_kernel[(triton.cdiv(n, BLOCK),)](src, scale, out, n, BLOCK=BLOCK, num_warps=4)
    return out


def dequantised_q(args: DecodeArgs) -> DecodeArgs:
    """``args`` with an fp8 q turned into bf16 (``dequantise_q``) and no ``q_scale``; other
    ``args`` unchanged."""
    if args.q_scale is None:
        return args
    return replace(args, q=dequantise_q(args.q, args.q_scale), q_scale=None)


__all__ = ["dequantise_q", "dequantised_q"]
