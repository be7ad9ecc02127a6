"""Host side shared by the Gluon sm_90 decode kernels: which calls they take, their arguments.

All three kernels (``mla_decode_hopper``, ``_ws``, ``_few``) read q and the cache through TMA
descriptors over 2-D views ([tokens x heads, 576] and [pages x page size, 576]) and take the
same leading arguments; only their row blocks, KV tiles and constexprs differ.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from triton.experimental.gluon import language as gl

from .decode_checks import DecodeArgs
from .device_limits import interpreting
from .pdl import pdl_launch_options

D_V = 512
D_PE = 64
PAGE_MULTIPLE = 64  # pages must hold whole 64-token tiles (split boundaries are 64-aligned)
FP8 = getattr(torch, "float8_e4m3fn", None)
GL_DTYPES = {torch.bfloat16: gl.bfloat16, torch.float16: gl.float16, FP8: gl.float8e4nv}
LOG2E = 1.4426950408889634


def sm90_mla_call(args: DecodeArgs, rows: int) -> bool:
    """The call suits a Gluon kernel of ``rows``-row blocks: sm_90, DeepSeek's 512 + 64 dims,
    one KV head, heads a multiple of ``rows``, pages of whole 64-token tiles laid out back to
    back, contiguous q, a 16-bit or (with its scale) fp8 cache, 16-byte aligned tensors."""
    if interpreting() or not args.q.is_cuda or torch.version.hip is not None:
        return False
    if torch.cuda.get_device_capability(args.q.device) != (9, 0):
        return False
    q, kv = args.q, args.kv_cache
    h_q, d_qk = q.shape[2], q.shape[3]
    return (
        (kv.dtype == q.dtype or (kv.dtype == FP8 and args.kv_scale is not None))
        and args.h_kv == 1
        and args.head_dim_v == D_V
        and d_qk == D_V + D_PE
        and h_q % rows == 0
        and kv.shape[1] % PAGE_MULTIPLE == 0
        and q.is_contiguous()
        and kv.stride(0) == kv.shape[1] * kv.stride(1)
        and kv.stride(1) == d_qk
        and q.data_ptr() % 16 == 0
        and kv.data_ptr() % 16 == 0
    )


@dataclass(frozen=True)
class SplitOutputs:
    """Where a decode launch writes: the final output and lse (one split), or the per-split
    partials the combine kernel merges, with the strides the kernels index them by.

    ``o``: [batch, s_q, h_q, 512] (out dtype) or [batch, s_q, h_q, splits, 512] fp32;
    ``lse``: [batch, h_q, s_q] or [batch, s_q, h_q, splits] fp32; ``o_strides``: (batch, token,
    head, split) and ``lse_strides``: (batch, token, head, split), in elements (split 0 when
    there is one).
    """

    o: torch.Tensor
    lse: torch.Tensor
    o_strides: tuple[int, ...]
    lse_strides: tuple[int, ...]


def launch_args(
    args: DecodeArgs,
    num_splits: int,
    out: SplitOutputs,
    *,
    rows: int,
    block_n: int,
    lat_cols: int = D_V,
    programs: int | None = None,
) -> tuple[tuple[int, int, int], list[Any]]:
    """The grid and the leading positional arguments every Gluon decode kernel takes.

    Grid: (row blocks, ``num_splits``, batch), or (row blocks, ``programs``, 1) for a launch
    whose programs take their splits from a work list.

    Arguments: q as [tokens x heads, 576]; TMA descriptors for q's latent and rope parts
    ([rows, lat_cols], [rows, 64]) and the cache's ([block_n, lat_cols], [block_n, 64]; a
    kernel copying the latent part in column blocks passes ``lat_cols`` < 512); block table,
    lengths, output and lse buffers, the fp8 scale (a placeholder without one), the softmax
    scale in base 2, the strides, s_q, h_q and the split count.
    """
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

    q, kv = args.q, args.kv_cache
    batch, s_q, h_q, d_qk = q.shape
    q2d = q.view(batch * s_q * h_q, d_qk)
    kv2d = kv.view(kv.shape[0] * kv.shape[1], d_qk)

    def desc(t: torch.Tensor, block_rows: int, cols: int) -> Any:
        layout = gl.NVMMASharedLayout.get_default_for([block_rows, cols], GL_DTYPES[t.dtype])
        return TensorDescriptor(t, list(t.shape), list(t.stride()), [block_rows, cols], layout)

    row_blocks = s_q * h_q // rows
    grid = (row_blocks, num_splits, batch) if programs is None else (row_blocks, programs, 1)
    return grid, [
        q2d,
        desc(q2d, rows, lat_cols),
        desc(q2d, rows, D_PE),
        desc(kv2d, block_n, lat_cols),
        desc(kv2d, block_n, D_PE),
        args.block_table,
        args.cache_seqlens,
        out.o,
        out.lse,
        args.kv_scale if args.kv_scale is not None else out.lse,  # unused without fp8
        args.softmax_scale * LOG2E,
        args.block_table.stride(0),
        *out.o_strides,
        *out.lse_strides,
        s_q,
        h_q,
        num_splits,
    ]


def launch_decode_kernel(
    kernel: Any,
    args: DecodeArgs,
    num_splits: int,
    out: SplitOutputs,
    *,
    rows: int,
    block_n: int,
    num_warps: int,
    lat_cols: int = D_V,
    extra: tuple[Any, ...] = (),
    programs: int | None = None,
    **constexprs: Any,
) -> Any:
    """Launch the Gluon decode ``kernel``: the shared leading arguments (``launch_args``), then
    ``extra`` positional ones, the page size, the causal flag (s_q > 1 only) and the kernel's
    own ``constexprs``; with programmatic dependent launch (``pdl``: every Gluon decode kernel
    starts with ``gdc_enter``); returns the compiled kernel."""
    grid, leading = launch_args(
        args, num_splits, out, rows=rows, block_n=block_n, lat_cols=lat_cols, programs=programs
    )
    return kernel[grid](
        *leading,
        *extra,
        PAGE_SIZE=args.kv_cache.shape[1],
        CAUSAL=args.causal and args.q.shape[1] > 1,
        num_warps=num_warps,
        **pdl_launch_options(args.q.device),
        **constexprs,
    )


__all__ = [
    "D_PE",
    "D_V",
    "FP8",
    "GL_DTYPES",
    "SplitOutputs",
    "launch_args",
    "launch_decode_kernel",
    "sm90_mla_call",
]
