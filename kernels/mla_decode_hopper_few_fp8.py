"""MLA decode for Hopper (sm_90) in Gluon: few heads per KV head over an fp8 (e4m3) cache.

The few-heads kernel (``mla_decode_hopper_few``) turns both products around so that 64 KV
tokens fill a wgmma's 64 rows (``s^T = k @ q^T``, ``o^T += v^T @ p^T``). wgmma takes fp8 only
when both operands are fp8 and K-major, and ``v^T`` is not, so an fp8 tile must be upcast to
fp16 in shared memory first; done in line by that kernel's one warpgroup, the upcast made fp8
no faster than a 16-bit cache though it reads half the bytes. Here it has its own warpgroup
(``gl.warp_specialize``):

- the *converter* (worker, 4 warps) keeps a ``STAGES``-deep TMA ring of fp8 tiles (36 KB each)
  in flight: a landed tile goes to registers at once and its slot is refilled before any wait
  on the consumer. It then writes the tile to the fp16 working tile by column block (the
  rope, the latent left half, the right half), each once the consumer is done with that block
  of the previous tile (``free``), and arrives on the block's ``ready`` barrier. The upcast is
  the native ``cvt`` (exact; a tail tile's rows past the sequence's end are zeroed).
- the *consumer* (default partition, 4 warps) copies q once (fp16), then per tile runs the
  scores block by block as they become ready, the online softmax (along the tokens, per head;
  the row sums are kept per token and summed once at the end) and ``o^T`` in two 256-row
  halves, releasing the rope after the scores and each latent half after its ``o^T`` half.

So the converter refills a latent half of tile ``j + 1`` while the consumer still computes on
the other half of tile ``j``. Shared memory: q 18 KB, the working tile 72 KB, p^T 2 KB and the
fp8 ring (2 x 36 KB, 168 KB in all; 3 stages: 205 KB). H200, 16 heads: as fast as the 16-bit
cache on the few-heads kernel, 1.4-1.5x the Triton fp8 path (docs/kernels/NOTES.md, variant
21); what bounds it is the consumer's chain per tile (68 wgmma of 64 x 16, two cross-warp
reductions), not the bytes.

The *paired* kernel (config ``num_stages`` 1, the default; variant 35) splits that chain over
two consumers (4 warps each, 12 warps in all with the converter): each takes one latent half
of every tile (the first also the rope), computes its part of ``s^T``, hands it to the other
through shared memory (fp32, double-buffered by tile parity) and adds the other's; both run
the same softmax and each its own ``o^T`` half. The converter upcasts into two working tiles
in turn, so it writes tile ``j + 1`` while both consumers compute on tile ``j``; the fp8 ring
then has room for one tile (218 KB in all). H200: 76.6 / 76.8 / 40.1 us on the three 16-head
rows against 79.6 / 79.9 / 42.1 (s8-5; two consumers on one working tile were slower: 85 us).
It also takes its splits from a decode plan's work list (``decode_plan``; ``PLAN``), as the
16-bit few-heads kernel does.

Scope (``few_fp8_eligible``): sm_90, one KV head, 512 + 64 dims, ``h_q`` a multiple of 16 and
below 64, pages of whole 64-token tiles, contiguous q, an fp8 cache with its scale, config
``16 x 64, 8 warps`` with 1 stage (the paired kernel, the default) or 2 or 3 (the
single-consumer kernel's fp8 ring).
"""

from __future__ import annotations

from typing import Any

import torch
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia import hopper
from triton.experimental.gluon.language.nvidia.hopper import fence_async_shared, mbarrier

from .configs import DecodeConfig
from .decode_checks import DecodeArgs
from .gluon_launch import SplitOutputs, launch_decode_kernel, sm90_mla_call
from .mla_decode_hopper import _copy_q_rows, _copy_tile_at, _issue_tile, _split_range
from .mla_decode_hopper_few import _program_split
from .pdl import gdc_enter, gdc_wait

ROWS = 16
BLOCK_N = 64
PART_WARPS = 4
"""Warps of each partition. The config's ``num_warps`` (8) is consumer + converter; the paired
kernel (``num_stages`` 1) runs a second consumer on top, 12 warps in all (a config's warp
count is a power of two, so the knob names the kernel, not its 12)."""
KNOBS = (ROWS, BLOCK_N, 2 * PART_WARPS)
"""block_size_q, block_size_k, num_warps of this kernel's configs; num_stages is the ring."""
STAGE_CHOICES = (1, 2, 3)
"""The config's ``num_stages``: 1 runs the paired kernel (two computing warpgroups, a one-tile
fp8 ring: the default), 2 and 3 the single-consumer kernel with a ring of that many tiles."""
CONVERTER_REGS = 128  # a whole fp8 tile (72 registers a thread) and its addresses, no spills

ROWS_C = gl.constexpr(ROWS)
PART_WARPS_C = gl.constexpr(PART_WARPS)
CONVERTER_REGS_C = gl.constexpr(CONVERTER_REGS)
PAIR_REGS_C = gl.constexpr(168)  # a consumer of the pair: 12 warps share the register file
PAIR_CONVERTER_REGS_C = gl.constexpr(152)  # its converter: 2 x 168 + 152 a thread fit 64K
HALF_C = gl.constexpr(256)  # latent columns of a working-tile half (and of an o^T half)
PE = gl.constexpr(2)  # the rope block's index among the working tile's column blocks (0, 1: halves)
# the converter's fp8 tiles: 16 bytes a thread along a row, a 128-byte swizzle row per 8 threads
TILE_LAYOUT = gl.constexpr(gl.BlockedLayout([1, 16], [4, 8], [PART_WARPS, 1], [1, 0]))
PE_LAYOUT = gl.constexpr(gl.BlockedLayout([1, 16], [8, 4], [PART_WARPS, 1], [1, 0]))  # 64 B rows
Q_LAYOUT = gl.constexpr(gl.BlockedLayout([1, 8], [2, 16], [PART_WARPS, 1], [1, 0]))
# s^T [64 tokens, 16 heads] and o^T halves [256, 16]: one warpgroup, 64-row wgmma tiles
S_LAYOUT = gl.constexpr(
    gl.NVMMADistributedLayout(
        version=[3, 0], warps_per_cta=[PART_WARPS, 1], instr_shape=[16, ROWS, 16]
    )
)
HEAD_LAYOUT = gl.constexpr(gl.SliceLayout(0, S_LAYOUT))  # a per-head vector (max, sums, lse)


@gluon.jit
def _store_upcast(raw, dst, valid_rows, layout: gl.constexpr):
    """``raw`` (fp8 [64, cols] in registers) to fp16 in ``dst``; rows >= ``valid_rows`` as 0.

    The native conversion (``cvt.rn.f16x2.e4m3x2``: one instruction per two values, exact) keeps
    NaN codes as NaN, so a tail tile's rows past the sequence's end are zeroed: their p is 0, but
    0 * NaN is not.
    """
    wide = raw.to(gl.float16)
    if valid_rows < raw.shape[0]:
        rows = gl.arange(0, raw.shape[0], layout=gl.SliceLayout(1, layout))
        wide = gl.where((rows < valid_rows)[:, None], wide, gl.zeros_like(wide))
    dst.store(wide)


@gluon.jit
def _block_rows(H):
    """(s0, h0): the query token and first head of this program's 16-row block."""
    row0 = gl.program_id(0) * ROWS_C  # rows are (token s, head h), H % ROWS == 0
    return row0 // H, row0 % H


@gluon.jit
def _await_free(free, j):
    """Wait until the consumer is done with tile ``j - 1``'s block (``free``)."""
    if j > 0:
        mbarrier.wait(free, (j - 1) & 1)


@gluon.jit
def _announce(ready):
    """The partition's block writes are complete and visible to wgmma: arrive on ``ready``."""
    fence_async_shared()
    gl.thread_barrier()
    mbarrier.arrive(ready)


@gluon.jit
def _take_tile(kv_lat_desc, kv_pe_desc, kv_lat, kv_pe, kv_bar, bt_row, start_n, j, num_tiles,
               PAGE_SIZE: gl.constexpr):  # fmt: skip
    """Wait for tile ``j`` in its ring slot, take it into registers (rope [64, 64], latent in
    four [64, 128] column blocks) and refill the slot with tile ``j + STAGES`` at once."""
    STAGES: gl.constexpr = kv_lat.shape[0]
    BN: gl.constexpr = kv_lat.shape[1]
    slot = j % STAGES
    refill = j + STAGES < num_tiles
    next_n = start_n + (j + STAGES) * BN
    page = gl.load(bt_row + next_n // PAGE_SIZE, mask=refill, other=0)  # before the wait
    mbarrier.wait(kv_bar.index(slot), (j // STAGES) & 1)
    fp8_lat = kv_lat.index(slot)
    raw_pe = kv_pe.index(slot).load(PE_LAYOUT)
    raw_0 = fp8_lat.slice(0, 128, dim=1).load(TILE_LAYOUT)
    raw_1 = fp8_lat.slice(128, 128, dim=1).load(TILE_LAYOUT)
    raw_2 = fp8_lat.slice(256, 128, dim=1).load(TILE_LAYOUT)
    raw_3 = fp8_lat.slice(384, 128, dim=1).load(TILE_LAYOUT)
    fence_async_shared()
    gl.thread_barrier()  # every thread holds its bytes: the slot may take the next tile
    _copy_tile_at(kv_lat_desc, kv_pe_desc, kv_lat, kv_pe, kv_bar, page, next_n, slot, refill,
                  PAGE_SIZE)  # fmt: skip
    return raw_pe, raw_0, raw_1, raw_2, raw_3


@gluon.jit
def _softmax_start(kv_scale_ptr, qk_scale_log2, BQ: gl.constexpr, BN: gl.constexpr):
    """``(kv_scale, the scores' base-2 scale with it, running max [BQ], per-token sums [BN,
    BQ])``: keys and values are stored divided by the fp8 scale."""
    kv_scale = gl.load(kv_scale_ptr)
    m_i = gl.full([BQ], float("-inf"), gl.float32, layout=HEAD_LAYOUT)
    l_acc = gl.zeros([BN, BQ], gl.float32, layout=S_LAYOUT)
    return kv_scale, qk_scale_log2 * kv_scale, m_i, l_acc


@gluon.jit
def _softmax_step(st, m_i, l_acc, tile_n, end_n, qk_scale_log2):
    """One tile's online softmax along the tokens: ``st`` (s^T [64, 16] fp32, unscaled) ->
    ``(p^T, alpha, m, l_acc)``; rows past ``end_n`` get p 0; the row sums stay per token
    (``l_acc``, summed once at the end: no cross-warp reduction a tile)."""
    BN: gl.constexpr = st.shape[0]
    st = st * qk_scale_log2
    if tile_n + BN > end_n:
        offs_tok = gl.arange(0, BN, layout=gl.SliceLayout(1, S_LAYOUT))
        st = gl.where((tile_n + offs_tok < end_n)[:, None], st, float("-inf"))
    m_new = gl.maximum(m_i, gl.max(st, axis=0))
    alpha = gl.exp2(m_i - m_new)
    pt = gl.exp2(st - m_new[None, :])
    return pt, alpha, m_new, l_acc * alpha[None, :] + pt


@gluon.jit
def _store_half(acc, COL0: gl.constexpr, m_i, l_acc, kv_scale, o_ptr, lse_ptr, stride_o_b,
                stride_o_s, stride_o_h, stride_o_split, stride_lse_b, stride_lse_s, stride_lse_h,
                stride_lse_split, pid_b, pid_split, s0, h0, store_o, store_lse,
                WITH_LSE: gl.constexpr):  # fmt: skip
    """Columns ``COL0 ..`` of split ``pid_split``'s output of (``pid_b``, ``s0``, heads ``h0
    ..``) from ``acc`` (o^T [256, 16] fp32) where ``store_o``, and, ``WITH_LSE``, its lse (-inf
    for an empty split) where ``store_lse``."""
    BQ: gl.constexpr = acc.shape[1]
    l_i = gl.sum(l_acc, axis=0)
    empty = l_i == 0.0
    l_safe = gl.where(empty, 1.0, l_i)
    offs_d = gl.arange(0, HALF_C, layout=gl.SliceLayout(1, S_LAYOUT))
    offs_h = gl.arange(0, BQ, layout=HEAD_LAYOUT)
    o_base = o_ptr + pid_b * stride_o_b + s0 * stride_o_s + pid_split * stride_o_split + COL0
    o_ptrs = o_base + (h0 + offs_h)[None, :] * stride_o_h + offs_d[:, None]
    if store_o:
        gl.store(o_ptrs, (acc * (kv_scale / l_safe)[None, :]).to(o_ptr.dtype.element_ty))
    if WITH_LSE:
        lse = gl.where(empty, float("-inf"), (m_i + gl.log2(l_safe)) * 0.6931471805599453)
        lse_base = lse_ptr + pid_b * stride_lse_b + s0 * stride_lse_s + pid_split * stride_lse_split
        if store_lse:
            gl.store(lse_base + (h0 + offs_h) * stride_lse_h, lse)


@gluon.jit
def _start_ring(kv_lat_desc, kv_pe_desc, kv_lat, kv_pe, kv_bar, block_table_ptr, seqlens_ptr,
                stride_bt_b, S_Q, H, NUM_SPLITS, work_ptr, PAGE_SIZE: gl.constexpr,
                CAUSAL: gl.constexpr, PLAN: gl.constexpr):  # fmt: skip
    """The start of a worker partition that keeps a program's TMA ring (``kv_lat`` [STAGES,
    64, 512]): wait for the previous kernel (PDL), find the program's split and issue its
    first ``STAGES`` tiles. Returns ``(block-table row, start token, end token, tiles)``."""
    gdc_wait()  # (a partition: before its first global access)
    STAGES: gl.constexpr = kv_lat.shape[0]
    BN: gl.constexpr = kv_lat.shape[1]
    s0, _h0 = _block_rows(H)
    pid_b, _split, start_n, end_n, num_tiles, _valid = _program_split(
        work_ptr, seqlens_ptr, s0, S_Q, NUM_SPLITS, BN, CAUSAL, PLAN
    )
    bt_row = block_table_ptr + pid_b * stride_bt_b
    for first in gl.static_range(STAGES):
        _issue_tile(kv_lat_desc, kv_pe_desc, kv_lat, kv_pe, kv_bar, bt_row, start_n, first,
                    first, first < num_tiles, PAGE_SIZE)  # fmt: skip
    return bt_row, start_n, end_n, num_tiles


@gluon.jit
def _converter(kv_lat_desc, kv_pe_desc, kv_lat, kv_pe, work_lat, work_pe, kv_bar, ready, free,
               block_table_ptr, seqlens_ptr, stride_bt_b, S_Q, H, NUM_SPLITS, work_ptr,
               PAGE_SIZE: gl.constexpr, CAUSAL: gl.constexpr, PLAN: gl.constexpr,
               PAIRED: gl.constexpr):  # fmt: skip
    """Worker: keep the fp8 TMA ring full (a landed tile goes to registers and its slot is
    refilled at once) and upcast each tile into a working tile by column block, each block once
    its consumer is done with it.

    One consumer (``work_lat`` [64, 512]): the rope, the latent left half, the right half, each
    with its own ``ready`` / ``free`` pair. ``PAIRED`` (``work_lat`` [2, 64, 512]: tile ``j``
    into working tile ``j % 2``): the rope and the left half for consumer 0, then the right
    half for consumer 1 (``ready`` / ``free`` index ``2 * (j % 2) + consumer``).
    """
    BN: gl.constexpr = kv_lat.shape[1]
    bt_row, start_n, end_n, num_tiles = _start_ring(
        kv_lat_desc, kv_pe_desc, kv_lat, kv_pe, kv_bar, block_table_ptr, seqlens_ptr,
        stride_bt_b, S_Q, H, NUM_SPLITS, work_ptr, PAGE_SIZE, CAUSAL, PLAN,
    )  # fmt: skip
    for j in range(num_tiles):
        raw_pe, raw_0, raw_1, raw_2, raw_3 = _take_tile(
            kv_lat_desc, kv_pe_desc, kv_lat, kv_pe, kv_bar, bt_row, start_n, j, num_tiles,
            PAGE_SIZE,
        )  # fmt: skip
        valid = end_n - (start_n + j * BN)
        if PAIRED:
            buf = j % 2
            lat = work_lat.index(buf)
            if j >= 2:
                mbarrier.wait(free.index(2 * buf), (j // 2 - 1) & 1)
            _store_upcast(raw_pe, work_pe.index(buf), valid, PE_LAYOUT)
            _store_upcast(raw_0, lat.slice(0, 128, dim=1), valid, TILE_LAYOUT)
            _store_upcast(raw_1, lat.slice(128, 128, dim=1), valid, TILE_LAYOUT)
            _announce(ready.index(2 * buf))
            if j >= 2:
                mbarrier.wait(free.index(2 * buf + 1), (j // 2 - 1) & 1)
            _store_upcast(raw_2, lat.slice(256, 128, dim=1), valid, TILE_LAYOUT)
            _store_upcast(raw_3, lat.slice(384, 128, dim=1), valid, TILE_LAYOUT)
            _announce(ready.index(2 * buf + 1))
        else:
            _await_free(free.index(PE), j)
            _store_upcast(raw_pe, work_pe, valid, PE_LAYOUT)
            _announce(ready.index(PE))
            _await_free(free.index(0), j)
            _store_upcast(raw_0, work_lat.slice(0, 128, dim=1), valid, TILE_LAYOUT)
            _store_upcast(raw_1, work_lat.slice(128, 128, dim=1), valid, TILE_LAYOUT)
            _announce(ready.index(0))
            _await_free(free.index(1), j)
            _store_upcast(raw_2, work_lat.slice(256, 128, dim=1), valid, TILE_LAYOUT)
            _store_upcast(raw_3, work_lat.slice(384, 128, dim=1), valid, TILE_LAYOUT)
            _announce(ready.index(1))


@gluon.jit
def _consumer(q_ptr, q_lat, q_pe, work_lat, work_pe, pt_smem, ready, free, seqlens_ptr, o_ptr,
              lse_ptr, kv_scale_ptr, qk_scale_log2, stride_o_b, stride_o_s, stride_o_h,
              stride_o_split, stride_lse_b, stride_lse_s, stride_lse_h, stride_lse_split, S_Q, H,
              NUM_SPLITS, CAUSAL: gl.constexpr):  # fmt: skip
    """Default partition: q, then per tile s^T, the softmax and o^T (two 256-row halves, each
    releasing its latent half of the working tile when done); the output and lse. (It runs
    after the kernel's ``gdc_enter``: no wait of its own.)"""
    BQ: gl.constexpr = q_lat.shape[0]
    DV: gl.constexpr = q_lat.shape[1]
    BN: gl.constexpr = work_lat.shape[0]
    dtype: gl.constexpr = q_lat.dtype
    s0, h0 = _block_rows(H)
    pid_b = gl.program_id(2)
    pid_split = gl.program_id(1)
    start_n, end_n, num_tiles = _split_range(seqlens_ptr, pid_b, pid_split, s0, S_Q, NUM_SPLITS,
                                             BN, CAUSAL)  # fmt: skip

    q_row = (pid_b * S_Q + s0) * H + h0
    _copy_q_rows(q_ptr, q_row, q_lat, 0, Q_LAYOUT)
    _copy_q_rows(q_ptr, q_row, q_pe, DV, Q_LAYOUT)
    fence_async_shared()
    gl.thread_barrier()

    kv_scale, qk_scale_log2, m_i, l_acc = _softmax_start(kv_scale_ptr, qk_scale_log2, BQ, BN)
    acc_l = gl.zeros([HALF_C, BQ], gl.float32, layout=S_LAYOUT)  # o^T rows 0-255
    acc_r = gl.zeros([HALF_C, BQ], gl.float32, layout=S_LAYOUT)  # o^T rows 256-511
    lat_l = work_lat.slice(0, HALF_C, dim=1)
    lat_r = work_lat.slice(HALF_C, HALF_C, dim=1)
    for j in range(num_tiles):
        tile_n = start_n + j * BN
        phase = j & 1
        st = gl.zeros([BN, BQ], gl.float32, layout=S_LAYOUT)
        mbarrier.wait(ready.index(0), phase)
        st = hopper.warpgroup_mma(lat_l, q_lat.slice(0, HALF_C, dim=1).permute((1, 0)), st,
                                  is_async=True)  # fmt: skip
        mbarrier.wait(ready.index(1), phase)
        st = hopper.warpgroup_mma(lat_r, q_lat.slice(HALF_C, HALF_C, dim=1).permute((1, 0)),
                                  st, is_async=True)  # fmt: skip
        mbarrier.wait(ready.index(PE), phase)
        st = hopper.warpgroup_mma(work_pe, q_pe.permute((1, 0)), st, is_async=True)
        st = hopper.warpgroup_mma_wait(num_outstanding=0, deps=[st])
        pt, alpha, m_i, l_acc = _softmax_step(st, m_i, l_acc, tile_n, end_n, qk_scale_log2)
        pt_smem.store(pt.to(dtype))
        fence_async_shared()
        gl.thread_barrier()  # p^T written; every warp's score MMAs (the rope's reads) are done
        mbarrier.arrive(free.index(PE))
        acc_l = acc_l * alpha[None, :]
        acc_r = acc_r * alpha[None, :]
        acc_l = hopper.warpgroup_mma(lat_l.permute((1, 0)), pt_smem, acc_l, is_async=True)
        acc_r = hopper.warpgroup_mma(lat_r.permute((1, 0)), pt_smem, acc_r, is_async=True)
        acc_l = hopper.warpgroup_mma_wait(num_outstanding=1, deps=[acc_l])
        gl.thread_barrier()  # every warp is done with the left half
        mbarrier.arrive(free.index(0))
        acc_r = hopper.warpgroup_mma_wait(num_outstanding=0, deps=[acc_r])
        gl.thread_barrier()  # ... with the right half and with p^T
        mbarrier.arrive(free.index(1))

    _store_half(acc_l, 0, m_i, l_acc, kv_scale, o_ptr, lse_ptr, stride_o_b, stride_o_s,
                stride_o_h, stride_o_split, stride_lse_b, stride_lse_s, stride_lse_h,
                stride_lse_split, pid_b, pid_split, s0, h0, True, True, True)  # fmt: skip
    _store_half(acc_r, HALF_C, m_i, l_acc, kv_scale, o_ptr, lse_ptr, stride_o_b, stride_o_s,
                stride_o_h, stride_o_split, stride_lse_b, stride_lse_s, stride_lse_h,
                stride_lse_split, pid_b, pid_split, s0, h0, True, True, False)  # fmt: skip


@gluon.jit
def _pair_consumer(q_ptr, q_lat, q_pe, work_lat, work_pe, pt_smem, ready, free, x_smem, x_bar,
                   seqlens_ptr, o_ptr, lse_ptr, kv_scale_ptr, qk_scale_log2, stride_o_b,
                   stride_o_s, stride_o_h, stride_o_split, stride_lse_b, stride_lse_s,
                   stride_lse_h, stride_lse_split, S_Q, H, NUM_SPLITS, work_ptr,
                   CAUSAL: gl.constexpr, PLAN: gl.constexpr, ROLE: gl.constexpr):  # fmt: skip
    """One of two consumers that share each tile by latent half (``ROLE`` 0: the left half and
    the rope, the lse; 1: the right half): each computes its part of s^T, hands it to the other
    through shared memory (``x_smem`` [2 tiles, 2 roles, 64, 16] fp32, ``x_bar`` per tile
    parity and role) and adds the other's; both then run the same softmax and each its own
    o^T half, so each warpgroup issues half of a tile's wgmma. Tile ``j`` is in working tile
    ``j % 2``."""
    gdc_wait()  # (a partition: before its first global access)
    BQ: gl.constexpr = q_lat.shape[0]
    DV: gl.constexpr = q_lat.shape[1]
    BN: gl.constexpr = work_lat.shape[1]
    dtype: gl.constexpr = q_lat.dtype
    s0, h0 = _block_rows(H)
    pid_b, pid_split, start_n, end_n, num_tiles, valid = _program_split(
        work_ptr, seqlens_ptr, s0, S_Q, NUM_SPLITS, BN, CAUSAL, PLAN
    )

    q_row = (pid_b * S_Q + s0) * H + h0
    q_half = q_lat.slice(ROLE * HALF_C, HALF_C, dim=1)
    _copy_q_rows(q_ptr, q_row, q_half, ROLE * HALF_C, Q_LAYOUT)
    if ROLE == 0:
        _copy_q_rows(q_ptr, q_row, q_pe, DV, Q_LAYOUT)
    fence_async_shared()
    gl.thread_barrier()

    kv_scale, qk_scale_log2, m_i, l_acc = _softmax_start(kv_scale_ptr, qk_scale_log2, BQ, BN)
    acc = gl.zeros([HALF_C, BQ], gl.float32, layout=S_LAYOUT)  # o^T rows of this half
    for j in range(num_tiles):
        tile_n = start_n + j * BN
        buf = j % 2
        lat = work_lat.index(buf).slice(ROLE * HALF_C, HALF_C, dim=1)
        st = gl.zeros([BN, BQ], gl.float32, layout=S_LAYOUT)
        mbarrier.wait(ready.index(2 * buf + ROLE), (j // 2) & 1)
        st = hopper.warpgroup_mma(lat, q_half.permute((1, 0)), st, is_async=True)
        if ROLE == 0:
            st = hopper.warpgroup_mma(work_pe.index(buf), q_pe.permute((1, 0)), st, is_async=True)
        st = hopper.warpgroup_mma_wait(num_outstanding=0, deps=[st])
        x_smem.index(2 * buf + ROLE).store(st)
        gl.thread_barrier()  # every warp's part is written
        mbarrier.arrive(x_bar.index(2 * buf + ROLE))
        mbarrier.wait(x_bar.index(2 * buf + 1 - ROLE), (j // 2) & 1)
        st = st + x_smem.index(2 * buf + 1 - ROLE).load(S_LAYOUT)
        pt, alpha, m_i, l_acc = _softmax_step(st, m_i, l_acc, tile_n, end_n, qk_scale_log2)
        pt_smem.store(pt.to(dtype))
        fence_async_shared()
        gl.thread_barrier()  # p^T written
        acc = acc * alpha[None, :]
        acc = hopper.warpgroup_mma(lat.permute((1, 0)), pt_smem, acc, is_async=True)
        acc = hopper.warpgroup_mma_wait(num_outstanding=0, deps=[acc])
        gl.thread_barrier()  # every warp is done with this half (and the rope) and with p^T
        mbarrier.arrive(free.index(2 * buf + ROLE))

    # (an empty split writes only its lse; a planned program without a work item nothing)
    _store_half(acc, ROLE * HALF_C, m_i, l_acc, kv_scale, o_ptr, lse_ptr, stride_o_b,
                stride_o_s, stride_o_h, stride_o_split, stride_lse_b, stride_lse_s, stride_lse_h,
                stride_lse_split, pid_b, pid_split, s0, h0, (num_tiles > 0) | (NUM_SPLITS == 1),
                valid, ROLE == 0)  # fmt: skip


@gluon.jit
def _pair_body(q_ptr, q_lat, q_pe, kv_lat_desc, kv_pe_desc, block_table_ptr, seqlens_ptr,
               o_ptr, lse_ptr, kv_scale_ptr, qk_scale_log2, stride_bt_b, stride_o_b, stride_o_s,
               stride_o_h, stride_o_split, stride_lse_b, stride_lse_s, stride_lse_h,
               stride_lse_split, S_Q, H, NUM_SPLITS, work_ptr, PAGE_SIZE: gl.constexpr,
               CAUSAL: gl.constexpr, PLAN: gl.constexpr):  # fmt: skip
    """The paired kernel's other buffers (two working tiles, a one-tile fp8 ring; 218 KB with
    the kernel's q) and its three partitions."""
    dtype: gl.constexpr = q_lat.dtype
    kv_dtype: gl.constexpr = kv_lat_desc.dtype
    BQ: gl.constexpr = q_lat.shape[0]
    DV: gl.constexpr = q_lat.shape[1]
    DPE: gl.constexpr = q_pe.shape[1]
    BN: gl.constexpr = kv_lat_desc.block_type.shape[0]
    work_lat = gl.allocate_shared_memory(
        dtype, [2, BN, DV], gl.NVMMASharedLayout.get_default_for([BN, DV], dtype)
    )
    work_pe = gl.allocate_shared_memory(
        dtype, [2, BN, DPE], gl.NVMMASharedLayout.get_default_for([BN, DPE], dtype)
    )
    pt_pair = gl.allocate_shared_memory(
        dtype, [2, BN, BQ], gl.NVMMASharedLayout.get_default_for([BN, BQ], dtype)
    )
    x_smem = gl.allocate_shared_memory(
        gl.float32, [4, BN, BQ], gl.SwizzledSharedLayout(1, 1, 1, order=[1, 0])
    )
    # per working tile and role: upcast / done with; per tile parity and role: s^T part written
    ready = gl.allocate_shared_memory(gl.int64, [4, 1], mbarrier.MBarrierLayout())
    free = gl.allocate_shared_memory(gl.int64, [4, 1], mbarrier.MBarrierLayout())
    x_bar = gl.allocate_shared_memory(gl.int64, [4, 1], mbarrier.MBarrierLayout())
    kv_lat = gl.allocate_shared_memory(kv_dtype, [1, BN, DV], kv_lat_desc.layout)
    kv_pe = gl.allocate_shared_memory(kv_dtype, [1, BN, DPE], kv_pe_desc.layout)
    kv_bar = gl.allocate_shared_memory(gl.int64, [1, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(4):
        mbarrier.init(ready.index(i), count=1)
        mbarrier.init(free.index(i), count=1)
        mbarrier.init(x_bar.index(i), count=1)
    mbarrier.init(kv_bar.index(0), count=1)
    fence_async_shared()
    gl.warp_specialize(
        [
            (_pair_consumer, (
                q_ptr, q_lat, q_pe, work_lat, work_pe, pt_pair.index(0), ready, free, x_smem,
                x_bar, seqlens_ptr, o_ptr, lse_ptr, kv_scale_ptr, qk_scale_log2, stride_o_b,
                stride_o_s, stride_o_h, stride_o_split, stride_lse_b, stride_lse_s,
                stride_lse_h, stride_lse_split, S_Q, H, NUM_SPLITS, work_ptr, CAUSAL, PLAN, 0)),
            (_pair_consumer, (
                q_ptr, q_lat, q_pe, work_lat, work_pe, pt_pair.index(1), ready, free, x_smem,
                x_bar, seqlens_ptr, o_ptr, lse_ptr, kv_scale_ptr, qk_scale_log2, stride_o_b,
                stride_o_s, stride_o_h, stride_o_split, stride_lse_b, stride_lse_s,
                stride_lse_h, stride_lse_split, S_Q, H, NUM_SPLITS, work_ptr, CAUSAL, PLAN, 1)),
            (_converter, (
                kv_lat_desc, kv_pe_desc, kv_lat, kv_pe, work_lat, work_pe, kv_bar, ready, free,
                block_table_ptr, seqlens_ptr, stride_bt_b, S_Q, H, NUM_SPLITS, work_ptr,
                PAGE_SIZE, CAUSAL, PLAN, True)),
        ],
        [PART_WARPS_C, PART_WARPS_C],
        [PAIR_REGS_C, PAIR_CONVERTER_REGS_C],
    )  # fmt: skip


@gluon.jit
def _mla_decode_few_fp8_kernel(
    q_ptr, q_lat_desc, q_pe_desc, kv_lat_desc, kv_pe_desc, block_table_ptr, seqlens_ptr, o_ptr,
    lse_ptr, kv_scale_ptr, qk_scale_log2, stride_bt_b, stride_o_b, stride_o_s, stride_o_h,
    stride_o_split, stride_lse_b, stride_lse_s, stride_lse_h, stride_lse_split, S_Q, H,
    NUM_SPLITS, work_ptr, PAGE_SIZE: gl.constexpr, CAUSAL: gl.constexpr, STAGES: gl.constexpr,
    PAIR: gl.constexpr, PLAN: gl.constexpr,
):  # fmt: skip
    gdc_enter(NUM_SPLITS)
    dtype: gl.constexpr = gl.float16
    kv_dtype: gl.constexpr = kv_lat_desc.dtype
    BQ: gl.constexpr = q_lat_desc.block_type.shape[0]
    DV: gl.constexpr = q_lat_desc.block_type.shape[1]
    DPE: gl.constexpr = q_pe_desc.block_type.shape[1]
    BN: gl.constexpr = kv_lat_desc.block_type.shape[0]
    q_lat = gl.allocate_shared_memory(
        dtype, [BQ, DV], gl.NVMMASharedLayout.get_default_for([BQ, DV], dtype)
    )
    q_pe = gl.allocate_shared_memory(
        dtype, [BQ, DPE], gl.NVMMASharedLayout.get_default_for([BQ, DPE], dtype)
    )
    if PAIR:
        _pair_body(q_ptr, q_lat, q_pe, kv_lat_desc, kv_pe_desc, block_table_ptr, seqlens_ptr,
                   o_ptr, lse_ptr, kv_scale_ptr, qk_scale_log2, stride_bt_b, stride_o_b,
                   stride_o_s, stride_o_h, stride_o_split, stride_lse_b, stride_lse_s,
                   stride_lse_h, stride_lse_split, S_Q, H, NUM_SPLITS, work_ptr, PAGE_SIZE,
                   CAUSAL, PLAN)  # fmt: skip
        return
    work_lat = gl.allocate_shared_memory(
        dtype, [BN, DV], gl.NVMMASharedLayout.get_default_for([BN, DV], dtype)
    )
    work_pe = gl.allocate_shared_memory(
        dtype, [BN, DPE], gl.NVMMASharedLayout.get_default_for([BN, DPE], dtype)
    )
    pt_smem = gl.allocate_shared_memory(
        dtype, [BN, BQ], gl.NVMMASharedLayout.get_default_for([BN, BQ], dtype)
    )
    # per column block of the working tile (latent left, right, rope): upcast / done with
    ready = gl.allocate_shared_memory(gl.int64, [3, 1], mbarrier.MBarrierLayout())
    free = gl.allocate_shared_memory(gl.int64, [3, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(3):
        mbarrier.init(ready.index(i), count=1)
        mbarrier.init(free.index(i), count=1)
    fence_async_shared()

    kv_lat = gl.allocate_shared_memory(kv_dtype, [STAGES, BN, DV], kv_lat_desc.layout)
    kv_pe = gl.allocate_shared_memory(kv_dtype, [STAGES, BN, DPE], kv_pe_desc.layout)
    kv_bar = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(STAGES):
        mbarrier.init(kv_bar.index(i), count=1)
    fence_async_shared()

    gl.warp_specialize(
        [
            (_consumer, (
                q_ptr, q_lat, q_pe, work_lat, work_pe, pt_smem, ready, free, seqlens_ptr, o_ptr,
                lse_ptr, kv_scale_ptr, qk_scale_log2, stride_o_b, stride_o_s, stride_o_h,
                stride_o_split, stride_lse_b, stride_lse_s, stride_lse_h, stride_lse_split, S_Q, H,
                NUM_SPLITS, CAUSAL)),
            (_converter, (
                kv_lat_desc, kv_pe_desc, kv_lat, kv_pe, work_lat, work_pe, kv_bar, ready, free,
                block_table_ptr, seqlens_ptr, stride_bt_b, S_Q, H, NUM_SPLITS, work_ptr,
                PAGE_SIZE, CAUSAL, False, False)),
        ],
        [PART_WARPS_C],
        [CONVERTER_REGS_C],
    )  # fmt: skip


def few_fp8_eligible(args: DecodeArgs, cfg: DecodeConfig) -> bool:
    """True when this call runs this kernel (see the module docstring for the scope)."""
    return (
        (cfg.block_size_q, cfg.block_size_k, cfg.num_warps) == KNOBS
        and cfg.num_stages in STAGE_CHOICES
        and args.kv_scale is not None
        and args.q.shape[2] < 64
        and sm90_mla_call(args, ROWS)
    )


def launch_few_fp8_decode(
    args: DecodeArgs,
    cfg: DecodeConfig,
    num_splits: int,
    out: SplitOutputs,
    work: torch.Tensor | None = None,
) -> Any:
    """Launch this kernel into ``out``: ``num_splits`` equal splits a sequence, or with
    ``work`` ([programs, 8] int32, ``decode_plan``; the paired kernel only) one program a work
    item, ``num_splits`` slots a sequence."""
    plan = work is not None
    if plan and cfg.num_stages != 1:
        raise ValueError("work: only the paired kernel (num_stages 1) takes a decode plan")
    return launch_decode_kernel(
        _mla_decode_few_fp8_kernel, args, num_splits, out, rows=ROWS, block_n=BLOCK_N,
        num_warps=PART_WARPS, extra=(work if plan else args.cache_seqlens,),
        programs=work.shape[0] if plan else None, STAGES=cfg.num_stages,
        PAIR=cfg.num_stages == 1, PLAN=plan,
    )  # fmt: skip


__all__ = ["KNOBS", "few_fp8_eligible", "launch_few_fp8_decode"]
