"""MLA prefill for Hopper (sm_90) in Gluon, warp-specialised (FlashAttention-3's structure).

``mla_prefill_hopper`` runs its two warpgroups in lockstep (one instruction stream, a barrier
per tile before the copy engine may refill a slot), so one warpgroup's softmax cannot run under
the other's MMAs. Here one program holds 128 query rows as two independent compute warpgroups
of 64 rows each, plus a copy warp (``gl.warp_specialize``):

- the copy warp loads q once and streams K and V tiles through two TMA rings (a slot per stage,
  an mbarrier "full" per slot, and an "empty" one both warpgroups arrive on when done with it);
- each compute warpgroup runs the intra-warpgroup pipeline of ``mla_prefill_hopper`` on its own
  rows (scores of tile ``j`` and ``p @ v`` of tile ``j - 1`` in flight while it waits, softmax
  of tile ``j`` under the ``p @ v``), and the warp schedulers interleave the two warpgroups: one's
  softmax runs while the other's MMAs hold the tensor cores. (FlashAttention-3 also makes the
  warpgroups take turns to issue MMAs, "ping-pong"; measured here with mbarrier turns it gave
  nothing over free issue: docs/kernels/NOTES.md, prefill.)

Both warpgroups walk the same tiles (those of the block's last row: every ring slot waits for
both to hand it back); the first warpgroup's extra diagonal tile is fully masked for its rows.
Keys past a sequence are masked out of the scores; the rows a V tile holds past the sequence are
the next sequence's keys or the copy engine's zero fill (``cu_seqlens_k`` covers the packed
tensor).

Scope: the calls ``mla_prefill_hopper`` takes, for configs of 128 rows and 8 warps (the two
compute warpgroups; the copy warp is extra). Layouts and semantics as ``mla_prefill``.
"""

from __future__ import annotations

from typing import Any

import torch
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia import hopper
from triton.experimental.gluon.language.nvidia.hopper import fence_async_shared, mbarrier

from .configs import PrefillConfig
from .mla_prefill_hopper import (
    _allocate_tiles,
    _block,
    _issue_k,
    _issue_q,
    _issue_v,
    _key_range,
    _scores,
    _softmax,
    _store_rows,
    prefill_launch_args,
)
from .prefill_args import PrefillArgs

ROWS_PER_WARPGROUP = 64


@gluon.jit
def _copy_warp(q1_desc, q2_desc, k1_desc, k2_desc, v_desc, q1_s, q2_s, k1_s, k2_s, v_s, q_bar,
               k_full, k_empty, v_full, v_empty, cu_seqlens_q_ptr, cu_seqlens_k_ptr, stride_q_h,
               stride_k_h, stride_v_h, GROUP, HAS_D2: gl.constexpr,
               CAUSAL: gl.constexpr):  # fmt: skip
    """Producer: q once, then K and V tiles into their rings as slots come free."""
    BM: gl.constexpr = q1_s.shape[0]
    BN: gl.constexpr = k1_s.shape[1]
    STAGES: gl.constexpr = k1_s.shape[0]
    pid_h = gl.program_id(1)
    q_start, seqlen_q, k_start, seqlen_k, start_m = _block(cu_seqlens_q_ptr, cu_seqlens_k_ptr, BM)
    if start_m >= 0:
        _, end = _key_range(start_m, BM, seqlen_k, seqlen_k - seqlen_q, BN, CAUSAL)
        num_tiles = gl.cdiv(end, BN)
        q_col = pid_h * stride_q_h
        k_col = (pid_h // GROUP) * stride_k_h
        v_col = (pid_h // GROUP) * stride_v_h
        _issue_q(q1_desc, q2_desc, q1_s, q2_s, q_bar, q_start + start_m, q_col, HAS_D2)
        for j in range(num_tiles):
            slot = j % STAGES
            phase = (j // STAGES - 1) & 1  # of the slot's previous tile's "empty" arrivals
            mbarrier.wait(k_empty.index(slot), phase, pred=j >= STAGES)
            _issue_k(k1_desc, k2_desc, k1_s, k2_s, k_full, k_start + j * BN, k_col, slot, True,
                     HAS_D2)  # fmt: skip
            mbarrier.wait(v_empty.index(slot), phase, pred=j >= STAGES)
            _issue_v(v_desc, v_s, v_full, k_start + j * BN, v_col, slot, True)


@gluon.jit
def _tile_step(q1, q2, k1_s, k2_s, v_s, k_full, k_empty, v_full, v_empty, acc, p_op, m_i, l_i, j,
               offs_m, full_end, seqlen_k, diag_offset, qk_scale_log2, s_layout: gl.constexpr,
               HAS_D2: gl.constexpr, CAUSAL: gl.constexpr, FIRST: gl.constexpr):  # fmt: skip
    """Tile ``j``: scores and (unless ``FIRST``) tile ``j - 1``'s ``p @ v`` issued, softmax
    under the ``p @ v``, slots handed back; returns ``(acc, p_op, m_i, l_i)``."""
    STAGES: gl.constexpr = k1_s.shape[0]
    BN: gl.constexpr = k1_s.shape[1]
    slot = j % STAGES
    mbarrier.wait(k_full.index(slot), (j // STAGES) & 1)
    s = _scores(q1, q2, k1_s.index(slot), k2_s.index(slot), s_layout, HAS_D2)
    if not FIRST:
        prev = (j - 1) % STAGES
        mbarrier.wait(v_full.index(prev), ((j - 1) // STAGES) & 1)
        acc = hopper.warpgroup_mma(p_op, v_s.index(prev), acc, is_async=True)
    s = hopper.warpgroup_mma_wait(num_outstanding=0 if FIRST else 1, deps=[s])
    mbarrier.arrive(k_empty.index(slot))
    p, m_i, l_i, alpha = _softmax(s, m_i, l_i, j * BN, offs_m, full_end, seqlen_k, diag_offset,
                                  qk_scale_log2, CAUSAL)  # fmt: skip
    if not FIRST:
        acc, p_op = hopper.warpgroup_mma_wait(num_outstanding=0, deps=[acc, p_op])
        mbarrier.arrive(v_empty.index((j - 1) % STAGES))
    acc = acc * gl.convert_layout(alpha, gl.SliceLayout(1, acc.type.layout))[:, None]
    p_op = gl.convert_layout(p.to(p_op.dtype), p_op.type.layout)
    return acc, p_op, m_i, l_i


@gluon.jit
def _compute_warpgroup(q1_s, q2_s, k1_s, k2_s, v_s, q_bar, k_full, k_empty, v_full, v_empty,
                       o_ptr, lse_ptr, cu_seqlens_q_ptr, cu_seqlens_k_ptr, qk_scale_log2,
                       stride_o_m, stride_o_h, stride_lse_h, W: gl.constexpr,
                       HAS_D2: gl.constexpr, CAUSAL: gl.constexpr):  # fmt: skip
    """Warpgroup ``W``: rows ``64 W .. 64 W + 63`` of the block, every tile of the block."""
    BM: gl.constexpr = q1_s.shape[0]
    R: gl.constexpr = BM // 2
    BN: gl.constexpr = k1_s.shape[1]
    D_V: gl.constexpr = v_s.shape[2]
    STAGES: gl.constexpr = k1_s.shape[0]
    dtype: gl.constexpr = q1_s.dtype
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(
        version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, BN, 16]
    )
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(
        version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, D_V, 16]
    )
    p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)

    pid_h = gl.program_id(1)
    q_start, seqlen_q, _, seqlen_k, start_m = _block(cu_seqlens_q_ptr, cu_seqlens_k_ptr, BM)
    if start_m >= 0:
        diag_offset = seqlen_k - seqlen_q
        _, end = _key_range(start_m, BM, seqlen_k, diag_offset, BN, CAUSAL)
        num_tiles = gl.cdiv(end, BN)  # the block's tiles (its last row's)
        row0 = start_m + W * R
        full_end, _ = _key_range(row0, R, seqlen_k, diag_offset, BN, CAUSAL)
        q1 = q1_s.slice(W * R, R, dim=0)
        q2 = q2_s.slice(W * R, R, dim=0)

        offs_m = row0 + gl.arange(0, R, layout=gl.SliceLayout(1, s_layout))
        m_i = gl.full([R], float("-inf"), gl.float32, layout=gl.SliceLayout(1, s_layout))
        l_i = gl.zeros([R], gl.float32, layout=gl.SliceLayout(1, s_layout))
        acc = gl.zeros([R, D_V], gl.float32, layout=o_layout)
        p_op = gl.zeros([R, BN], dtype, layout=p_layout)
        mbarrier.wait(q_bar, 0)
        if num_tiles > 0:  # tile 0: no p @ v to overlap yet
            acc, p_op, m_i, l_i = _tile_step(
                q1, q2, k1_s, k2_s, v_s, k_full, k_empty, v_full, v_empty, acc, p_op, m_i, l_i,
                0, offs_m, full_end, seqlen_k, diag_offset, qk_scale_log2, s_layout, HAS_D2,
                CAUSAL, True)  # fmt: skip
        for j in range(1, num_tiles):
            acc, p_op, m_i, l_i = _tile_step(
                q1, q2, k1_s, k2_s, v_s, k_full, k_empty, v_full, v_empty, acc, p_op, m_i, l_i,
                j, offs_m, full_end, seqlen_k, diag_offset, qk_scale_log2, s_layout, HAS_D2,
                CAUSAL, False)  # fmt: skip
        if num_tiles > 0:
            last = num_tiles - 1
            mbarrier.wait(v_full.index(last % STAGES), (last // STAGES) & 1)
            acc = hopper.warpgroup_mma(p_op, v_s.index(last % STAGES), acc)
        _store_rows(acc, m_i, l_i, o_ptr, lse_ptr, q_start, row0, seqlen_q, pid_h, stride_o_m,
                    stride_o_h, stride_lse_h)  # fmt: skip


@gluon.jit
def _mla_prefill_ws_kernel(
    q1_desc, q2_desc, k1_desc, k2_desc, v_desc, o_ptr, lse_ptr, cu_seqlens_q_ptr,
    cu_seqlens_k_ptr, qk_scale_log2, stride_q_h, stride_k_h, stride_v_h, stride_o_m, stride_o_h,
    stride_lse_h, GROUP, HAS_D2: gl.constexpr, CAUSAL: gl.constexpr, STAGES: gl.constexpr,
):  # fmt: skip
    q1_s, q2_s, k1_s, k2_s, v_s = _allocate_tiles(q1_desc, q2_desc, k1_desc, k2_desc, v_desc,
                                                  STAGES)  # fmt: skip
    q_bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    k_full = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    k_empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    v_full = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    v_empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    mbarrier.init(q_bar, count=1)
    for i in gl.static_range(STAGES):
        mbarrier.init(k_full.index(i), count=1)
        mbarrier.init(v_full.index(i), count=1)
        mbarrier.init(k_empty.index(i), count=2)  # one arrive per compute warpgroup
        mbarrier.init(v_empty.index(i), count=2)
    fence_async_shared()

    # the two compute warpgroups run the same function; W (0, 1) is a constexpr of each
    gl.warp_specialize(
        [
            (_compute_warpgroup, (
                q1_s, q2_s, k1_s, k2_s, v_s, q_bar, k_full, k_empty, v_full, v_empty, o_ptr,
                lse_ptr, cu_seqlens_q_ptr, cu_seqlens_k_ptr, qk_scale_log2, stride_o_m,
                stride_o_h, stride_lse_h, 0, HAS_D2, CAUSAL)),
            (_compute_warpgroup, (
                q1_s, q2_s, k1_s, k2_s, v_s, q_bar, k_full, k_empty, v_full, v_empty, o_ptr,
                lse_ptr, cu_seqlens_q_ptr, cu_seqlens_k_ptr, qk_scale_log2, stride_o_m,
                stride_o_h, stride_lse_h, 1, HAS_D2, CAUSAL)),
            (_copy_warp, (
                q1_desc, q2_desc, k1_desc, k2_desc, v_desc, q1_s, q2_s, k1_s, k2_s, v_s, q_bar,
                k_full, k_empty, v_full, v_empty, cu_seqlens_q_ptr, cu_seqlens_k_ptr, stride_q_h,
                stride_k_h, stride_v_h, GROUP, HAS_D2, CAUSAL)),
        ],
        [4, 1],
        [240, 24],
    )  # fmt: skip


def ws_prefill_config(cfg: PrefillConfig) -> bool:
    """The config asks for this kernel's shape: 128 rows over 8 compute warps."""
    return cfg.block_size_q == 2 * ROWS_PER_WARPGROUP and cfg.num_warps == 8


def launch_ws_prefill(
    args: PrefillArgs, cfg: PrefillConfig, out: torch.Tensor, lse: torch.Tensor
) -> Any:
    """Launch into ``out`` [total_q, H, D_V] and ``lse`` [H, total_q] (allocated by the caller)."""
    grid, leading, has_d2 = prefill_launch_args(args, cfg, out, lse)
    return _mla_prefill_ws_kernel[grid](
        *leading, HAS_D2=has_d2, CAUSAL=args.causal, STAGES=cfg.num_stages, num_warps=4
    )


__all__ = ["launch_ws_prefill", "ws_prefill_config"]
