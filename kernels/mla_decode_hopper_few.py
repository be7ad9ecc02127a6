"""MLA decode for Hopper (sm_90) in Gluon, for few heads per KV head (16 rows a program).

Few heads (DeepSeek at tensor-parallel 8: 16 heads) make decode memory-bound: the kernel must
stream the latent cache at close to the HBM rate. A wgmma needs 64 rows, so this kernel turns
both products around and lets the KV tokens fill the 64 rows:

- scores, transposed: ``s^T [64 tokens, 16 heads] = k [64, 576] @ q^T [576, 16]`` (A = the KV
  tile in shared memory, B = q in shared memory);
- output, transposed: ``o^T [512, 16] += v^T [512, 64 tokens] @ p^T [64, 16]`` (A = the same KV
  tile read transposed, B = ``p^T`` through shared memory).

The online softmax runs along the tokens (axis 0) for each head. KV tiles stream through a
``STAGES``-deep TMA ring (``num_stages`` of the config); one warpgroup (4 warps) computes. fp8
caches are upcast exactly to fp16 in shared memory (``mla_decode_hopper._upcast_rows``), and the
fp8 slot goes straight back to the copy engine (in line, so no faster than a 16-bit cache: fp8
caches default to ``mla_decode_hopper_few_fp8``, which overlaps the upcast).

Scope (``few_heads_eligible``): sm_90, one KV head, 512 + 64 dims, ``h_q`` a multiple of 16 and
below 64, pages of whole 64-token tiles, contiguous q, config ``16 x 64, 4 warps`` with 2 stages
(2 or 3 for an fp8 cache, whose tiles are half the size).
"""

from __future__ import annotations

from typing import Any

import torch
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia import hopper
from triton.experimental.gluon.language.nvidia.hopper import fence_async_shared, mbarrier, tma

from .configs import DecodeConfig
from .decode_checks import DecodeArgs
from .gluon_launch import SplitOutputs, launch_decode_kernel, sm90_mla_call
from .mla_decode_hopper import (
    _copy_q_rows,
    _issue_tile,
    _split_range,
    _upcast_rows,
    _zero_tail_rows,
)
from .pdl import gdc_enter

ROWS = 16
BLOCK_N = 64
NUM_WARPS = 4
WORK_RECORD = 8
"""int32 fields of a decode plan's work item (``decode_plan``): sequence (-1: none), first
token, end token, split slot, the sequence's length, three unused (32 bytes, one aligned
line)."""
_RECORD = gl.constexpr(WORK_RECORD)


@gluon.jit
def _program_split(work_ptr, seqlens_ptr, s0, S_Q, NUM_SPLITS, BN: gl.constexpr,
                   CAUSAL: gl.constexpr, PLAN: gl.constexpr):  # fmt: skip
    """This program's split: ``(sequence, slot, start token, end token, tiles, valid)``.

    Without ``PLAN`` the grid is (row blocks, splits, batch) and the split is one of
    ``NUM_SPLITS`` equal ones; with it the grid is (row blocks, programs, 1) and program j's
    split is work item j of a decode plan (one load of 32 bytes: sequence (-1: none, then
    ``valid`` is False), tokens [start, end), slot, length).
    """
    if PLAN:
        item = work_ptr + gl.program_id(1) * _RECORD
        pid_b = gl.load(item)
        start_n = gl.load(item + 1)
        end_n = gl.load(item + 2)
        pid_split = gl.load(item + 3)
        if CAUSAL:
            end_n = gl.minimum(end_n, gl.load(item + 4) - S_Q + s0 + 1)
        valid = pid_b >= 0
        pid_b = gl.maximum(pid_b, 0)
        num_tiles = gl.maximum(gl.cdiv(end_n - start_n, BN), 0)
    else:
        pid_split = gl.program_id(1)
        pid_b = gl.program_id(2)
        valid = True
        start_n, end_n, num_tiles = _split_range(seqlens_ptr, pid_b, pid_split, s0, S_Q,
                                                 NUM_SPLITS, BN, CAUSAL)  # fmt: skip
    return pid_b, pid_split, start_n, end_n, num_tiles, valid


@gluon.jit
def _mla_decode_few_heads_kernel(
    q_ptr,
    q_lat_desc,
    q_pe_desc,
    kv_lat_desc,
    kv_pe_desc,
    block_table_ptr,
    seqlens_ptr,
    o_ptr,
    lse_ptr,
    kv_scale_ptr,
    qk_scale_log2,
    stride_bt_b,
    stride_o_b,
    stride_o_s,
    stride_o_h,
    stride_o_split,
    stride_lse_b,
    stride_lse_s,
    stride_lse_h,
    stride_lse_split,
    S_Q,
    H,
    NUM_SPLITS,
    work_ptr,  # PLAN: [programs, 8] int32 work items (``decode_plan``)
    PAGE_SIZE: gl.constexpr,
    CAUSAL: gl.constexpr,
    KV_FP8: gl.constexpr,
    STAGES: gl.constexpr,
    PLAN: gl.constexpr,
):
    # the next kernel may be scheduled at once, even this launch's combine: its blocks fit
    # beside this kernel's (165-170 registers x 128 threads, 168 KB) on every SM, where the
    # 64-head kernels' fill the SMs (gdc_enter). H200, with PDL against without: 8 x 16 x 32K
    # (16 splits) 75.9-76.5 against 77.3-78.0 us (docs/kernels/NOTES.md, variant 37)
    gdc_enter(1)
    dtype: gl.constexpr = gl.float16 if KV_FP8 else q_lat_desc.dtype
    kv_dtype: gl.constexpr = kv_lat_desc.dtype
    BQ: gl.constexpr = q_lat_desc.block_type.shape[0]
    DV: gl.constexpr = q_lat_desc.block_type.shape[1]
    DPE: gl.constexpr = q_pe_desc.block_type.shape[1]
    BN: gl.constexpr = kv_lat_desc.block_type.shape[0]
    # s^T [BN, BQ] and o^T [DV, BQ]: one warpgroup, 64-row wgmma tiles along the first dim
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(
        version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, BQ, 16]
    )
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(
        version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, BQ, 16]
    )
    tile_layout: gl.constexpr = gl.BlockedLayout([1, 8], [2, 16], [4, 1], [1, 0])
    pt_layout: gl.constexpr = gl.NVMMASharedLayout.get_default_for([BN, BQ], dtype)

    pid_q = gl.program_id(0)
    row0 = pid_q * BQ  # rows are (token s, head h), H % BQ == 0: one token per block
    s0 = row0 // H
    h0 = row0 % H
    pid_b, pid_split, start_n, end_n, num_tiles, valid = _program_split(
        work_ptr, seqlens_ptr, s0, S_Q, NUM_SPLITS, BN, CAUSAL, PLAN
    )
    has_work = num_tiles > 0  # (an empty split: no q, no output, only its lse)

    q_lat = gl.allocate_shared_memory(
        dtype, [BQ, DV], gl.NVMMASharedLayout.get_default_for([BQ, DV], dtype)
    )
    q_pe = gl.allocate_shared_memory(
        dtype, [BQ, DPE], gl.NVMMASharedLayout.get_default_for([BQ, DPE], dtype)
    )
    kv_lat = gl.allocate_shared_memory(kv_dtype, [STAGES, BN, DV], kv_lat_desc.layout)
    kv_pe = gl.allocate_shared_memory(kv_dtype, [STAGES, BN, DPE], kv_pe_desc.layout)
    if KV_FP8:
        work_lat = gl.allocate_shared_memory(
            dtype, [BN, DV], gl.NVMMASharedLayout.get_default_for([BN, DV], dtype)
        )
        work_pe = gl.allocate_shared_memory(
            dtype, [BN, DPE], gl.NVMMASharedLayout.get_default_for([BN, DPE], dtype)
        )
    pt_smem = gl.allocate_shared_memory(dtype, [BN, BQ], pt_layout)
    q_bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    kv_bar = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    mbarrier.init(q_bar, count=1)
    for i in gl.static_range(STAGES):
        mbarrier.init(kv_bar.index(i), count=1)
    fence_async_shared()

    q_row = (pid_b * S_Q + s0) * H + h0
    if KV_FP8:
        _copy_q_rows(q_ptr, q_row, q_lat, 0, tile_layout)
        _copy_q_rows(q_ptr, q_row, q_pe, DV, tile_layout)
        fence_async_shared()
        gl.thread_barrier()
    else:
        mbarrier.expect(q_bar, q_lat_desc.block_type.nbytes + q_pe_desc.block_type.nbytes,
                        pred=has_work)  # fmt: skip
        tma.async_copy_global_to_shared(q_lat_desc, [q_row, 0], q_bar, q_lat, pred=has_work)
        tma.async_copy_global_to_shared(q_pe_desc, [q_row, DV], q_bar, q_pe, pred=has_work)

    bt_row = block_table_ptr + pid_b * stride_bt_b
    for first in gl.static_range(STAGES):
        _issue_tile(kv_lat_desc, kv_pe_desc, kv_lat, kv_pe, kv_bar, bt_row, start_n, first,
                    first, first < num_tiles, PAGE_SIZE)  # fmt: skip

    if KV_FP8:
        kv_scale = gl.load(kv_scale_ptr)
        qk_scale_log2 = qk_scale_log2 * kv_scale
    head_layout: gl.constexpr = gl.SliceLayout(0, s_layout)
    m_i = gl.full([BQ], float("-inf"), gl.float32, layout=head_layout)
    l_i = gl.zeros([BQ], gl.float32, layout=head_layout)
    acc = gl.zeros([DV, BQ], gl.float32, layout=o_layout)
    offs_tok = gl.arange(0, BN, layout=gl.SliceLayout(1, s_layout))
    if not KV_FP8:
        mbarrier.wait(q_bar, 0, pred=has_work)

    for j in range(num_tiles):
        slot = j % STAGES
        tile_n = start_n + j * BN
        mbarrier.wait(kv_bar.index(slot), (j // STAGES) & 1)
        is_tail = tile_n + BN > end_n
        if KV_FP8:
            _upcast_rows(kv_lat.index(slot), work_lat, end_n - tile_n, tile_layout)
            _upcast_rows(kv_pe.index(slot), work_pe, end_n - tile_n, tile_layout)
            fence_async_shared()
            gl.thread_barrier()
            _issue_tile(kv_lat_desc, kv_pe_desc, kv_lat, kv_pe, kv_bar, bt_row, start_n,
                        j + STAGES, slot, j + STAGES < num_tiles, PAGE_SIZE)  # fmt: skip
            k_lat = work_lat
            k_pe = work_pe
        else:
            k_lat = kv_lat.index(slot)
            k_pe = kv_pe.index(slot)
            if is_tail:
                _zero_tail_rows(k_lat, end_n - tile_n, tile_layout)
                _zero_tail_rows(k_pe, end_n - tile_n, tile_layout)
                fence_async_shared()
                gl.thread_barrier()
        st = gl.zeros([BN, BQ], gl.float32, layout=s_layout)
        st = hopper.warpgroup_mma(k_lat, q_lat.permute((1, 0)), st, is_async=True)
        st = hopper.warpgroup_mma(k_pe, q_pe.permute((1, 0)), st, is_async=True)
        st = hopper.warpgroup_mma_wait(num_outstanding=0, deps=[st])
        st = st * qk_scale_log2
        if is_tail:
            st = gl.where((tile_n + offs_tok < end_n)[:, None], st, float("-inf"))
        m_new = gl.maximum(m_i, gl.max(st, axis=0))
        alpha = gl.exp2(m_i - m_new)
        pt = gl.exp2(st - m_new[None, :])
        l_i = l_i * alpha + gl.sum(pt, axis=0)
        m_i = m_new
        pt_smem.store(pt.to(dtype))
        fence_async_shared()
        gl.thread_barrier()
        acc = acc * gl.convert_layout(alpha, gl.SliceLayout(0, o_layout))[None, :]
        acc = hopper.warpgroup_mma(k_lat.permute((1, 0)), pt_smem, acc, is_async=True)
        acc = hopper.warpgroup_mma_wait(num_outstanding=0, deps=[acc])
        gl.thread_barrier()  # every warp is done with this slot and with p^T
        if not KV_FP8:
            _issue_tile(kv_lat_desc, kv_pe_desc, kv_lat, kv_pe, kv_bar, bt_row, start_n,
                        j + STAGES, slot, j + STAGES < num_tiles, PAGE_SIZE)  # fmt: skip

    mbarrier.invalidate(q_bar)
    for i in gl.static_range(STAGES):
        mbarrier.invalidate(kv_bar.index(i))

    empty = l_i == 0.0
    l_safe = gl.where(empty, 1.0, l_i)
    lse = gl.where(empty, float("-inf"), (m_i + gl.log2(l_safe)) * 0.6931471805599453)
    inv_l = 1.0 / l_safe
    if KV_FP8:
        inv_l = inv_l * kv_scale
    acc = acc * gl.convert_layout(inv_l, gl.SliceLayout(0, o_layout))[None, :]

    offs_d = gl.arange(0, DV, layout=gl.SliceLayout(1, o_layout))
    offs_h = gl.arange(0, BQ, layout=gl.SliceLayout(0, o_layout))
    o_base = o_ptr + pid_b * stride_o_b + s0 * stride_o_s + pid_split * stride_o_split
    o_ptrs = o_base + (h0 + offs_h)[None, :] * stride_o_h + offs_d[:, None]
    if has_work | (NUM_SPLITS == 1):  # an empty split's lse (-inf) keeps the combine off it
        gl.store(o_ptrs, acc.to(o_ptr.dtype.element_ty))
    lse_base = lse_ptr + pid_b * stride_lse_b + s0 * stride_lse_s + pid_split * stride_lse_split
    offs_l = gl.arange(0, BQ, layout=head_layout)
    if valid:  # (a planned program without a work item writes nothing)
        gl.store(lse_base + (h0 + offs_l) * stride_lse_h, lse)


def few_heads_eligible(args: DecodeArgs, cfg: DecodeConfig) -> bool:
    """True when this call can run the few-heads Gluon sm_90 kernel (see the module docstring)."""
    fp8 = args.kv_scale is not None
    return (
        (cfg.block_size_q, cfg.block_size_k, cfg.num_warps) == (ROWS, BLOCK_N, NUM_WARPS)
        and cfg.num_stages in ((2, 3) if fp8 else (2,))
        and args.q.shape[2] < 64
        and sm90_mla_call(args, ROWS)
    )


def launch_few_heads_decode(
    args: DecodeArgs,
    cfg: DecodeConfig,
    num_splits: int,
    out: SplitOutputs,
    work: torch.Tensor | None = None,
) -> Any:
    """Launch the few-heads Gluon kernel into ``out``: ``num_splits`` equal splits a
    sequence, or with ``work`` ([programs, 8] int32, ``decode_plan``) one program a work item,
    ``num_splits`` slots a sequence."""
    plan = work is not None
    return launch_decode_kernel(
        _mla_decode_few_heads_kernel, args, num_splits, out, rows=ROWS, block_n=BLOCK_N,
        num_warps=NUM_WARPS, extra=(work if plan else args.cache_seqlens,),
        programs=work.shape[0] if plan else None,
        KV_FP8=args.kv_scale is not None, STAGES=cfg.num_stages, PLAN=plan,
    )  # fmt: skip


__all__ = ["few_heads_eligible", "launch_few_heads_decode"]
