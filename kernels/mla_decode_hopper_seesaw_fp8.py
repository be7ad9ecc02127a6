"""MLA decode for Hopper (sm_90) in Gluon: the seesaw over an fp8 cache (fp8 or 16-bit q).

The 16-bit seesaw kernel (``mla_decode_hopper_seesaw``: FlashMLA's schedule, two warpgroups
on alternate 64-token tiles, each the owner of one output half) has no shared memory left for
an fp8 cache's upcast copy, so 64+ heads over an fp8 cache ran the lockstep kernel at half the
16-bit seesaw's speed. With q in fp8 too (FlashMLA's fp8 interface: ``q_scale``), the scores
need no upcast: ``s = q @ k^T`` runs as an fp8 wgmma (m64n64k32) straight from the TMA slot,
both operands K-major as stored. Only ``p @ v`` needs 16 bits (fp8 wgmma takes no MN-major
``v``): each warpgroup converts its own half of a tile's latent part (64 x 256, exact: every
e4m3 value is an fp16 one) into an fp16 buffer right before its ``p @ v`` on it, and ``p``
stays fp16. The slot's half is free once converted, so each warpgroup refills it then, a
matrix product earlier than the 16-bit kernel can.

Per pair of tiles ``(a, b)`` (the 16-bit kernel's schedule, ``v`` read from the fp16 buffers):
warpgroup 0 converts ``v_a[L]`` (its buffer), refills tile ``a + 2``'s left half, ``o_L = o_L
* scale0 + p_a @ v_a[L]``, then ``v_b[L]`` into the same buffer once that product is done,
refills tile ``b + 2``'s left half, ``o_L += p_b @ v_b[L]`` under the next scores' left
columns. Warpgroup 1 (two buffers) converts ``v_a[R]`` at the top of the pair, while
warpgroup 0 runs tile a's softmax, and refills tile ``a + 2``'s right half as soon as that
softmax is published (warpgroup 0's scores on tile a are then done); after its own softmax
it converts ``v_b[R]``, refills tile ``b + 2``'s right half, and issues ``p_b @ v_b[R]`` and
``(p_a scale1) @ v_a[R]``. Tail rows (a split's partial last tile) are zeroed in the
conversion, where the 16-bit kernel zeroes them in the slot.

Shared memory: q 36 KB, two fp8 slots of 36 KB, the fp16 buffers 3 x 32 KB, ``p_a`` and
``p_b`` 8 KB each, row vectors: 222 KB of 227.

A 16-bit q (``SPLIT_Q``): the prologue splits it into two fp8 terms, ``q = (hi + lo) / sigma``
with a power of two ``sigma`` a row that puts the row's largest ``|q|`` in (224, 448], ``hi =
e4m3(q sigma)``, ``lo = e4m3(q sigma - hi)``: exact for a bf16 q down to 2^-10 of the row's
largest value (the residual of an 8-bit mantissa after e4m3's 4 bits has at most 4), so the
scores are two fp8 MMAs (the 16-bit kernel's tensor time) and only their fp8 accumulation
rounds (about one more bf16 rounding of q: H200, sixteenth session). q is copied in 16 bits
into the fp16 v buffers (its rope part into ``p_b``'s), both warpgroups exchange their row
maxima, write the terms and meet again before the first scores. ``lo`` takes 36 KB, so
warpgroup 1 has one fp16 buffer: it runs ``(p_a scale1) @ v_a[R]`` before converting
``v_b[R]`` (measured free: the cost against the fp8-q kernel is the second score MMA, ~13 %,
and the prologue, 4-25 %). 226 KB.

H200 (docs/kernels/NOTES.md, variants 53-60): 262.8 / 1066.7 / 1015.2 / 26.7 / 61.4 us on
128 x 128 x 4K / 16K / 128 x 2 x 8K causal / 1 x 16K / 32 x 64 heads of 1K..8K: 1.3-2.1x the
lockstep kernel these calls ran before, 0.98-1.06x the 16-bit seesaw in the same run.
With a bf16 q (s16-6): 311.4 / 1253.7 / 1230.5 / 33.1 / 90.2 us, 1.62 / 1.52 / 1.55 / 1.05 /
1.45x the lockstep kernel (its 16-bit upcast) those calls ran before.

Precision: q is the caller's fp8 (or a 16-bit q's two exact terms); the scores accumulate in
fp32 at the fp8 tensor core's precision (as FlashMLA's); ``p`` and ``v`` in fp16, accumulated
in fp32.

Scope (``fp8_seesaw_eligible``): the 16-bit seesaw's shapes (sm_90, 512 + 64 dims, one KV
head, 64+ heads, pages of whole 64-token tiles) and config (``64 x 64, 8 warps, 1 stage``)
with an fp8 cache and its scale, and an fp8 q with its scale or a bf16 / fp16 one.
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
from .gluon_launch import FP8, SplitOutputs, launch_decode_kernel
from .mla_decode_hopper import sm90_many_heads_call
from .mla_decode_hopper_seesaw import (
    BLOCK_N,
    BLOCK_Q,
    BN,
    BQ,
    DH,
    HALF,
    KNOBS,
    O_LAYOUT,
    P0_ARRIVE,
    P0_SYNC,
    P1_ARRIVE,
    P1_SYNC,
    P_OP_LAYOUT,
    ROW_O,
    SCALE0_SYNC,
    SCALE1_SYNC,
    _finish_wg0,
    _issue_left,
    _issue_right,
    _load_q,
    _lone_tile_a,
    _masked,
    _named,
    _named_barrier,
    _opaque,
    _program,
    _scores_left,
    _scores_right,
    _seesaw_buffers,
    _softmax_a,
    _softmax_b,
    _store_half,
    seesaw_split_args,
)
from .pdl import gdc_enter, gdc_wait

# the score tile [64, 64] of an fp8 wgmma (k 32) and its register A operand (q's rope part in
# fp8); the output half, p and their layouts are the 16-bit kernel's (fp16 here); the
# conversion's layout for a 64 x 64 block of the slot (16 fp8 a thread and row: 16-byte loads)
S_LAYOUT = gl.constexpr(
    gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, BLOCK_N, 32])
)
Q_OP_LAYOUT = gl.constexpr(gl.DotOperandLayout(operand_index=0, parent=S_LAYOUT, k_width=4))
CVT_LAYOUT = gl.constexpr(gl.BlockedLayout([1, 16], [8, 4], [4, 1], [1, 0]))
ROW_S = gl.constexpr(gl.SliceLayout(1, S_LAYOUT))
F16_SHARED = gl.constexpr(gl.NVMMASharedLayout(swizzle_byte_width=128, element_bitwidth=16))
VEC_SHARED = gl.constexpr(gl.SwizzledSharedLayout(1, 1, 1, [0]))
# a split q's prologue: a 16-bit [64, 64] block, 8 values a thread and row (16-byte loads)
Q16_LAYOUT = gl.constexpr(gl.BlockedLayout([1, 8], [4, 8], [4, 1], [1, 0]))
QSPLIT_SYNC = _named("sync", 13)  # both: the row maxima of q, then its two fp8 terms, written
E4M3_MAX = gl.constexpr(448.0)  # the largest finite e4m3 value


@gluon.jit
def _row_amax(src, layout: gl.constexpr):
    """The largest ``|x|`` of each row of ``src`` (a 16-bit [64, C] buffer): fp32 [64]."""
    rows: gl.constexpr = src.shape[0]
    amax = gl.zeros([rows], gl.float32, layout=gl.SliceLayout(1, layout))
    for c in gl.static_range(src.shape[1] // 64):
        x = src.slice(c * 64, 64, dim=1).load(layout).to(gl.float32)
        amax = gl.maximum(amax, gl.max(gl.abs(x), axis=1))
    return amax


@gluon.jit
def _row_scale(amax_s, layout: gl.constexpr):
    """Each row's power of two ``sigma`` that puts its largest ``|q|`` in (224, 448] (rows of
    zeros get a large one: their terms are zeros), from the two warpgroups' row maxima in
    ``amax_s`` (fp32 [2 x 64])."""
    BQ: gl.constexpr = amax_s.shape[0] // 2
    amax = gl.maximum(amax_s.slice(0, BQ).load(layout), amax_s.slice(BQ, BQ).load(layout))
    return gl.exp2(gl.floor(gl.log2(E4M3_MAX / gl.maximum(amax, 1e-30))))


@gluon.jit
def _split_q_part(src, hi, lo, sigma):
    """``hi + lo`` = ``src x sigma`` to 2^-8 of each value: ``hi = e4m3(x sigma)``, ``lo =
    e4m3(x sigma - hi)`` (the difference is exact in fp32; both rounded to nearest); ``src``
    a 16-bit [64, C] buffer, ``hi`` and ``lo`` fp8 ones of its shape, ``sigma`` fp32 [64]."""
    for c in gl.static_range(src.shape[1] // 64):
        x = src.slice(c * 64, 64, dim=1).load(Q16_LAYOUT).to(gl.float32) * sigma[:, None]
        x_hi = x.to(gl.float8e4nv)
        hi.slice(c * 64, 64, dim=1).store(x_hi)
        lo.slice(c * 64, 64, dim=1).store((x - x_hi.to(gl.float32)).to(gl.float8e4nv))


@gluon.jit
def _split_q(stage, hi, lo, amax_s, W: gl.constexpr):
    """A 16-bit q's two fp8 terms, for warpgroup ``W``'s columns (0: the left latent half; 1:
    the right half and the rope part; ``stage``, ``hi`` and ``lo``: tuples of those buffers).
    Both warpgroups publish their row maxima, take each row's ``sigma`` (``_row_scale``) and
    write ``hi`` and ``lo`` (``_split_q_part``) before either goes on. Returns ``1 / sigma``
    in the scores' row layout: the scores of ``hi + lo`` times it are ``q @ k^T``."""
    amax = _row_amax(stage[0], Q16_LAYOUT)
    for k in gl.static_range(1, len(stage)):
        amax = gl.maximum(amax, _row_amax(stage[k], Q16_LAYOUT))
    BQ: gl.constexpr = amax.shape[0]
    amax_s.slice(W * BQ, BQ).store(amax)
    _named_barrier(QSPLIT_SYNC)
    sigma = _row_scale(amax_s, gl.SliceLayout(1, Q16_LAYOUT))
    inv_sigma = 1.0 / _row_scale(amax_s, ROW_S)
    for k in gl.static_range(len(stage)):
        _split_q_part(stage[k], hi[k], lo[k], sigma)
    fence_async_shared()
    _named_barrier(QSPLIT_SYNC)
    return inv_sigma


@gluon.jit
def _scores_l(s, q_lat, q_lo, kv_l, ready_l, slot, phase, SPLIT_Q: gl.constexpr):
    """``_scores_left``, and with a split q its second term (``q_lo``)."""
    s = _scores_left(s, q_lat, kv_l, ready_l, slot, phase)
    if SPLIT_Q:
        s = hopper.warpgroup_mma(q_lo.index(_opaque(0)), kv_l.index(slot).permute((1, 0)), s,
                                 is_async=True)  # fmt: skip
    return s


@gluon.jit
def _scores_r(s, q_lat, q_pe_op, q_lo, q_pe_lo, kv_r, kv_pe, ready_r, slot, phase,
              SPLIT_Q: gl.constexpr):  # fmt: skip
    """``_scores_right``, and with a split q its second term (``q_lo``, ``q_pe_lo``)."""
    s = _scores_right(s, q_lat, q_pe_op, kv_r, kv_pe, ready_r, slot, phase)
    if SPLIT_Q:
        s = hopper.warpgroup_mma(q_lo.index(_opaque(1)), kv_r.index(slot).permute((1, 0)), s,
                                 is_async=True)  # fmt: skip
        s = hopper.warpgroup_mma(q_pe_lo, kv_pe.index(slot).permute((1, 0)), s, is_async=True)
    return s


@gluon.jit
def _convert_half(src, dst, valid):
    """``dst`` (fp16 [64, 256]) = ``src`` (fp8 [64, 256], a slot's half) with the rows at or
    past ``valid`` zeroed (a tail tile's: the cache may hold NaN there, and ``0 * NaN`` is NaN
    in ``p @ v``). In 64-column blocks, to keep the registers it needs few."""
    if valid < src.shape[0]:
        rows = gl.arange(0, src.shape[0], layout=gl.SliceLayout(1, CVT_LAYOUT))
        keep = (rows < valid)[:, None]
        for c in gl.static_range(src.shape[1] // 64):
            block = src.slice(c * 64, 64, dim=1).load(CVT_LAYOUT).to(dst.dtype)
            dst.slice(c * 64, 64, dim=1).store(gl.where(keep, block, gl.zeros_like(block)))
    else:
        for c in gl.static_range(src.shape[1] // 64):
            block = src.slice(c * 64, 64, dim=1).load(CVT_LAYOUT).to(dst.dtype)
            dst.slice(c * 64, 64, dim=1).store(block)


@gluon.jit
def _scales(kv_scale_ptr, q_scale_ptr, qk_scale_log2, SPLIT_Q: gl.constexpr):
    """``(kv_scale, scale_log2)``: the cache's fp8 scale and the scores' factor in base 2
    (softmax scale x the cache's x q's; a split q has its scale per row, ``_split_q``)."""
    kv_scale = gl.load(kv_scale_ptr)
    if SPLIT_Q:
        return kv_scale, qk_scale_log2 * kv_scale
    return kv_scale, qk_scale_log2 * kv_scale * gl.load(q_scale_ptr)


@gluon.jit
def _wg0(q_lat, q_pe, q_lo, q_pe_lo, stage_lat, stage_pe, kv_l, kv_r, kv_pe, v_l, p0_s, p1_s,
         m_s, sc0_s, sc1_s, l_s, q_bar, ready_l, ready_r, q_half_desc, q_pe_desc, kv_half_desc,
         block_table_ptr, seqlens_ptr, o_ptr, lse_ptr, kv_scale_ptr, q_scale_ptr, qk_scale_log2,
         stride_bt_b, stride_o_b, stride_o_s, stride_o_h, stride_o_split, stride_lse_b,
         stride_lse_s, stride_lse_h, stride_lse_split, S_Q, H, NUM_SPLITS, BATCH, WAVE,
         PAGE_SIZE: gl.constexpr, CAUSAL: gl.constexpr, BALANCE: gl.constexpr,
         SPLIT_Q: gl.constexpr):  # fmt: skip
    """Warpgroup 0: even tiles' scores and softmax, output columns 0-255, left-half copies."""
    pid_b, s0, h0, start_n, end_n, num_tiles, bt_row = _program(
        seqlens_ptr, block_table_ptr, stride_bt_b, S_Q, H, NUM_SPLITS, BATCH, WAVE, CAUSAL,
        BALANCE,
    )  # fmt: skip
    kv_scale, scale_log2 = _scales(kv_scale_ptr, q_scale_ptr, qk_scale_log2, SPLIT_Q)

    # q, and the left halves of tiles 0 and 1
    _load_q(q_half_desc, q_pe_desc, stage_lat[0], stage_lat[1], stage_pe, q_bar,
            pid_b, s0, h0, S_Q, H, num_tiles > 0)  # fmt: skip
    _issue_left(kv_half_desc, kv_l, ready_l, bt_row, start_n, 0, num_tiles > 0, PAGE_SIZE)
    _issue_left(kv_half_desc, kv_l, ready_l, bt_row, start_n, 1, num_tiles > 1, PAGE_SIZE)

    acc = gl.zeros([BQ, DH], gl.float32, layout=O_LAYOUT)
    l_i = gl.zeros([BQ], gl.float32, layout=ROW_S)
    m_i = gl.full([BQ], float("-inf"), gl.float32, layout=ROW_S)
    mbarrier.wait(q_bar, 0, pred=num_tiles > 0)
    if SPLIT_Q:  # the left latent half's two terms; the rope part's stays in shared memory
        inv_sigma = gl.full([BQ], 1.0, gl.float32, layout=ROW_S)
        if num_tiles > 0:  # (an empty split of a balanced grid has no q: it ends at once)
            inv_sigma = _split_q((stage_lat[0],), (q_lat.index(0),), (q_lo.index(0),), l_s, 0)
        scale_log2 = scale_log2 * inv_sigma  # (per row: the softmax's PER_ROW)
        q_pe_op = q_pe
    else:
        q_pe_op = q_pe.load(Q_OP_LAYOUT)
    s = gl.zeros([BQ, BN], gl.float32, layout=S_LAYOUT)
    if num_tiles > 0:
        s = _scores_l(s, q_lat, q_lo, kv_l, ready_l, 0, 0, SPLIT_Q)
        s = _scores_r(s, q_lat, q_pe_op, q_lo, q_pe_lo, kv_r, kv_pe, ready_r, 0, 0, SPLIT_Q)
        s = hopper.warpgroup_mma_wait(num_outstanding=0, deps=[s])

    num_pairs = gl.cdiv(num_tiles, 2)
    for i in range(num_pairs):
        a = 2 * i
        tile_n = start_n + a * BN
        s = _masked(s, tile_n, end_n)
        p, scale0, l_i = _softmax_a(s, m_i, l_i, scale_log2, m_s, sc0_s, SPLIT_Q)
        # v_a[L] into the fp16 buffer (the last pair's products on it are done); the slot's
        # left half is then free: tile a + 2's comes in
        _convert_half(kv_l.index(0), v_l, end_n - tile_n)
        fence_async_shared()
        gl.thread_barrier()
        _issue_left(kv_half_desc, kv_l, ready_l, bt_row, start_n, a + 2, a + 2 < num_tiles,
                    PAGE_SIZE)  # fmt: skip
        acc = acc * gl.convert_layout(scale0, ROW_O)[:, None]
        p_op = gl.convert_layout(p.to(gl.float16), P_OP_LAYOUT)
        acc = hopper.warpgroup_mma(p_op, v_l, acc, is_async=True)
        # warpgroup 1's max after tile b: p_a relative to it, for warpgroup 1's o_R
        _named_barrier(SCALE1_SYNC)
        scale1 = sc1_s.load(ROW_S)
        m_i = m_s.load(ROW_S)
        p0_s.store((p * scale1[:, None]).to(gl.float16))
        fence_async_shared()
        _named_barrier(P0_ARRIVE)
        acc, p_op = hopper.warpgroup_mma_wait(num_outstanding=0, deps=[acc, p_op])
        acc = acc * gl.convert_layout(scale1, ROW_O)[:, None]
        l_i = l_i * scale1
        if a + 1 < num_tiles:
            # v_b[L] (tile b's left half landed: warpgroup 1 scored it) into the buffer
            mbarrier.wait(ready_l.index(1), i & 1)
            _convert_half(kv_l.index(1), v_l, end_n - tile_n - BN)
            fence_async_shared()
            # p_b from warpgroup 1; the barrier (all 256 threads) also orders this
            # warpgroup's buffer stores before its product, and warpgroup 1's scores on
            # tile b before the refill
            _named_barrier(P1_SYNC)
            _issue_left(kv_half_desc, kv_l, ready_l, bt_row, start_n, a + 3, a + 3 < num_tiles,
                        PAGE_SIZE)  # fmt: skip
            acc_f = hopper.warpgroup_mma(p1_s, v_l, acc, is_async=True)
            if a + 2 < num_tiles:
                # tile a + 2's scores: left columns under p_b @ v_b, then the rest
                nxt = (i + 1) & 1
                s = gl.zeros([BQ, BN], gl.float32, layout=S_LAYOUT)
                s = _scores_l(s, q_lat, q_lo, kv_l, ready_l, _opaque(0), nxt, SPLIT_Q)
                acc = hopper.warpgroup_mma_wait(num_outstanding=1, deps=[acc_f])
                s = _scores_r(s, q_lat, q_pe_op, q_lo, q_pe_lo, kv_r, kv_pe, ready_r,
                              _opaque(0), nxt, SPLIT_Q)  # fmt: skip
                s = hopper.warpgroup_mma_wait(num_outstanding=0, deps=[s])
            else:
                acc = hopper.warpgroup_mma_wait(num_outstanding=0, deps=[acc_f])

    # (one item a program: its row sums always go through the hand-off)
    _finish_wg0(acc, l_i, m_i, l_s, o_ptr, lse_ptr, pid_b, gl.program_id(1), s0, h0, stride_o_b,
                stride_o_s, stride_o_h, stride_o_split, stride_lse_b, stride_lse_s,
                stride_lse_h, stride_lse_split, (num_tiles > 0) | (NUM_SPLITS == 1), True,
                kv_scale)  # fmt: skip


@gluon.jit
def _wg1(q_lat, q_pe, q_lo, q_pe_lo, stage_lat, stage_pe, kv_l, kv_r, kv_pe, v_rb, v_ra, p0_s,
         p1_s, m_s, sc0_s, sc1_s, l_s, q_bar, ready_l, ready_r, kv_half_desc, kv_pe_desc,
         block_table_ptr, seqlens_ptr, o_ptr, kv_scale_ptr, q_scale_ptr, qk_scale_log2,
         stride_bt_b, stride_o_b, stride_o_s, stride_o_h, stride_o_split, S_Q, H, NUM_SPLITS,
         BATCH, WAVE, PAGE_SIZE: gl.constexpr, CAUSAL: gl.constexpr, BALANCE: gl.constexpr,
         SPLIT_Q: gl.constexpr):  # fmt: skip
    """Warpgroup 1: odd tiles' scores and softmax, output columns 256-511, right-half copies
    (``v_rb``, ``v_ra``: the fp16 buffers of v_b[R] and v_a[R]; one buffer with a split q)."""
    gdc_wait()  # (a partition: before its first global access)
    _pid_b, s0, h0, start_n, end_n, num_tiles, bt_row = _program(
        seqlens_ptr, block_table_ptr, stride_bt_b, S_Q, H, NUM_SPLITS, BATCH, WAVE, CAUSAL,
        BALANCE,
    )  # fmt: skip
    kv_scale, scale_log2 = _scales(kv_scale_ptr, q_scale_ptr, qk_scale_log2, SPLIT_Q)
    _issue_right(kv_half_desc, kv_pe_desc, kv_r, kv_pe, ready_r, bt_row, start_n, 0,
                 num_tiles > 0, PAGE_SIZE)  # fmt: skip
    _issue_right(kv_half_desc, kv_pe_desc, kv_r, kv_pe, ready_r, bt_row, start_n, 1,
                 num_tiles > 1, PAGE_SIZE)  # fmt: skip

    acc = gl.zeros([BQ, DH], gl.float32, layout=O_LAYOUT)
    l_i = gl.zeros([BQ], gl.float32, layout=ROW_S)
    mbarrier.wait(q_bar, 0, pred=num_tiles > 0)
    if SPLIT_Q:  # the right latent half's and the rope part's two terms
        inv_sigma = gl.full([BQ], 1.0, gl.float32, layout=ROW_S)
        if num_tiles > 0:
            inv_sigma = _split_q((stage_lat[1], stage_pe), (q_lat.index(1), q_pe),
                                 (q_lo.index(1), q_pe_lo), l_s, 1)  # fmt: skip
        scale_log2 = scale_log2 * inv_sigma
        q_pe_op = q_pe
    else:
        q_pe_op = q_pe.load(Q_OP_LAYOUT)
    s = gl.zeros([BQ, BN], gl.float32, layout=S_LAYOUT)
    if num_tiles > 1:
        s = _scores_r(s, q_lat, q_pe_op, q_lo, q_pe_lo, kv_r, kv_pe, ready_r, 1, 0, SPLIT_Q)
        s = _scores_l(s, q_lat, q_lo, kv_l, ready_l, 1, 0, SPLIT_Q)
        s = hopper.warpgroup_mma_wait(num_outstanding=0, deps=[s])

    num_pairs = gl.cdiv(num_tiles, 2)
    for i in range(num_pairs):
        b = 2 * i + 1
        tile_n = start_n + b * BN
        # v_a[R] into its buffer while warpgroup 0 runs tile a's softmax (the last pair's
        # product on it is done); once warpgroup 0's scores on tile a are done too (it has
        # published its softmax), tile a + 2's right half comes in
        mbarrier.wait(ready_r.index(0), i & 1)
        _convert_half(kv_r.index(0), v_ra, end_n - tile_n + BN)
        fence_async_shared()
        _named_barrier(SCALE0_SYNC)  # (all 256 threads: also this warpgroup's barrier)
        _issue_right(kv_half_desc, kv_pe_desc, kv_r, kv_pe, ready_r, bt_row, start_n, b + 1,
                     b + 1 < num_tiles, PAGE_SIZE)  # fmt: skip
        m_a = m_s.load(ROW_S)
        scale0 = sc0_s.load(ROW_S)
        if b < num_tiles:
            s = _masked(s, tile_n, end_n)
            p, scale1 = _softmax_b(s, m_a, scale_log2, m_s, sc1_s, SPLIT_Q)
            scale = scale0 * scale1
            l_i = l_i * scale + gl.sum(p, axis=1)
            acc = acc * gl.convert_layout(scale, ROW_O)[:, None]
            p_b = p.to(gl.float16)
            p1_s.store(p_b)
            fence_async_shared()
            _named_barrier(P1_ARRIVE)
            if SPLIT_Q:
                # one buffer: o_R += (p_a scale1) @ v_a[R] first, then v_b[R] into it
                _named_barrier(P0_SYNC)
                acc = hopper.warpgroup_mma(p0_s, v_ra, acc, is_async=True)
                acc = hopper.warpgroup_mma_wait(num_outstanding=0, deps=[acc])
            # v_b[R] into the (other) buffer; tile b + 2's right half then comes in
            _convert_half(kv_r.index(1), v_rb, end_n - tile_n)
            fence_async_shared()
            gl.thread_barrier()
            _issue_right(kv_half_desc, kv_pe_desc, kv_r, kv_pe, ready_r, bt_row, start_n,
                         b + 2, b + 2 < num_tiles, PAGE_SIZE)  # fmt: skip
            # o_R += p_b @ v_b[R] + (p_a scale1) @ v_a[R]
            p_op = gl.convert_layout(p_b, P_OP_LAYOUT)
            acc_f = hopper.warpgroup_mma(p_op, v_rb, acc, is_async=True)
            if not SPLIT_Q:
                _named_barrier(P0_SYNC)
                acc_f = hopper.warpgroup_mma(p0_s, v_ra, acc_f, is_async=True)
            acc, p_op = hopper.warpgroup_mma_wait(num_outstanding=0, deps=[acc_f, p_op])
        else:
            acc, l_i = _lone_tile_a(acc, l_i, scale0, sc1_s, p0_s, v_ra)
        if b + 2 < num_tiles:
            nxt = (i + 1) & 1
            s = gl.zeros([BQ, BN], gl.float32, layout=S_LAYOUT)
            s = _scores_r(s, q_lat, q_pe_op, q_lo, q_pe_lo, kv_r, kv_pe, ready_r, _opaque(1),
                          nxt, SPLIT_Q)  # fmt: skip
            s = _scores_l(s, q_lat, q_lo, kv_l, ready_l, _opaque(1), nxt, SPLIT_Q)
            s = hopper.warpgroup_mma_wait(num_outstanding=0, deps=[s])

    _store_half(acc, l_i, l_s, o_ptr, gl.program_id(2), gl.program_id(1), s0, h0, stride_o_b,
                stride_o_s, stride_o_h, stride_o_split, (num_tiles > 0) | (NUM_SPLITS == 1),
                True, kv_scale, 1)  # fmt: skip


@gluon.jit
def _mla_decode_seesaw_fp8_kernel(
    q_ptr,  # noqa: ARG001 (the Gluon decode kernels' shared leading arguments)
    q_half_desc, q_pe_desc, kv_half_desc, kv_pe_desc, block_table_ptr, seqlens_ptr, o_ptr,
    lse_ptr, kv_scale_ptr, qk_scale_log2, stride_bt_b, stride_o_b, stride_o_s, stride_o_h,
    stride_o_split, stride_lse_b, stride_lse_s, stride_lse_h, stride_lse_split, S_Q, H,
    NUM_SPLITS,
    BATCH, WAVE,  # balanced splits: the batch size, the programs of one split the GPU holds
    q_scale_ptr,  # q's fp8 scale (fp32 [1]; a split q: unused)
    PAGE_SIZE: gl.constexpr, CAUSAL: gl.constexpr, BALANCE: gl.constexpr,
    SPLIT_Q: gl.constexpr,  # a 16-bit q, split into two fp8 terms in the prologue
):  # fmt: skip
    gdc_enter(NUM_SPLITS)
    if SPLIT_Q:
        # q's first fp8 term in the shared q buffers (in the cache's dtype and layouts), its
        # second here; one fp16 v buffer a warpgroup, which first hold the 16-bit q's latent
        # halves as copied (p_b's buffer its rope part) until the terms are made
        q_lat, q_pe, kv_l, kv_r, kv_pe, m_s, sc0_s, sc1_s, l_s, q_bar, ready_l, ready_r = (
            _seesaw_buffers(kv_half_desc, kv_pe_desc, kv_half_desc, kv_pe_desc)
        )
        q_lo = gl.allocate_shared_memory(q_lat.dtype, q_lat.shape, q_lat.layout)
        q_pe_lo = gl.allocate_shared_memory(q_pe.dtype, q_pe.shape, q_pe.layout)
        v_l = gl.allocate_shared_memory(gl.float16, [BN, DH], F16_SHARED)
        v_rb = gl.allocate_shared_memory(gl.float16, [BN, DH], F16_SHARED)
        v_ra = v_rb
        p0_s = gl.allocate_shared_memory(gl.float16, [BQ, BN], F16_SHARED)
        p1_s = gl.allocate_shared_memory(gl.float16, [BQ, BN], F16_SHARED)
        stage_lat = (
            v_l._reinterpret(q_half_desc.dtype, [BQ, DH], q_half_desc.layout),
            v_rb._reinterpret(q_half_desc.dtype, [BQ, DH], q_half_desc.layout),
        )
        stage_pe = p1_s._reinterpret(q_pe_desc.dtype, [BQ, q_pe.shape[1]], q_pe_desc.layout)
    else:
        q_lat, q_pe, kv_l, kv_r, kv_pe, m_s, sc0_s, sc1_s, l_s, q_bar, ready_l, ready_r = (
            _seesaw_buffers(q_half_desc, q_pe_desc, kv_half_desc, kv_pe_desc)
        )
        q_lo, q_pe_lo, stage_pe = q_lat, q_pe, q_pe
        stage_lat = (q_lat.index(0), q_lat.index(1))
        # the fp16 copies of v's halves (warpgroup 0: one, warpgroup 1: two) and p_a, p_b
        v_l = gl.allocate_shared_memory(gl.float16, [BN, DH], F16_SHARED)
        v_r = gl.allocate_shared_memory(gl.float16, [2, BN, DH], F16_SHARED)
        v_rb, v_ra = v_r.index(0), v_r.index(1)
        p0_s = gl.allocate_shared_memory(gl.float16, [BQ, BN], F16_SHARED)
        p1_s = gl.allocate_shared_memory(gl.float16, [BQ, BN], F16_SHARED)

    gl.warp_specialize(
        [
            (_wg0, (
                q_lat, q_pe, q_lo, q_pe_lo, stage_lat, stage_pe, kv_l, kv_r, kv_pe, v_l, p0_s,
                p1_s, m_s, sc0_s, sc1_s, l_s, q_bar, ready_l, ready_r, q_half_desc, q_pe_desc,
                kv_half_desc, block_table_ptr, seqlens_ptr, o_ptr, lse_ptr, kv_scale_ptr,
                q_scale_ptr, qk_scale_log2, stride_bt_b, stride_o_b, stride_o_s, stride_o_h,
                stride_o_split, stride_lse_b, stride_lse_s, stride_lse_h, stride_lse_split, S_Q,
                H, NUM_SPLITS, BATCH, WAVE, PAGE_SIZE, CAUSAL, BALANCE, SPLIT_Q)),
            (_wg1, (
                q_lat, q_pe, q_lo, q_pe_lo, stage_lat, stage_pe, kv_l, kv_r, kv_pe, v_rb, v_ra,
                p0_s, p1_s, m_s, sc0_s, sc1_s, l_s, q_bar, ready_l, ready_r, kv_half_desc,
                kv_pe_desc, block_table_ptr, seqlens_ptr, o_ptr, kv_scale_ptr, q_scale_ptr,
                qk_scale_log2, stride_bt_b, stride_o_b, stride_o_s, stride_o_h, stride_o_split,
                S_Q, H, NUM_SPLITS, BATCH, WAVE, PAGE_SIZE, CAUSAL, BALANCE, SPLIT_Q)),
        ],
        [4],
        [240],
    )  # fmt: skip


def fp8_seesaw_eligible(args: DecodeArgs, cfg: DecodeConfig) -> bool:
    """True when this call runs this kernel: the seesaw config (``KNOBS``), an fp8 cache with
    its scale, an fp8 q with its scale or a 16-bit one (split in two fp8 terms), and a shape
    of the 64+-head kernels."""
    knobs = (cfg.block_size_q, cfg.block_size_k, cfg.num_warps, cfg.num_stages)
    fp8_q = args.q.dtype == FP8 and args.q_scale is not None
    return (
        knobs == KNOBS
        and args.kv_scale is not None
        and args.kv_cache.dtype == FP8
        and (fp8_q or args.q.dtype in (torch.bfloat16, torch.float16))
        and sm90_many_heads_call(args)
    )


def launch_fp8_seesaw_decode(args: DecodeArgs, num_splits: int, out: SplitOutputs) -> Any:
    """Launch the kernel into ``out`` (final output or split partials); splits as the 16-bit
    seesaw kernel's (``mla_decode_hopper_seesaw.launch_seesaw_decode``). A 16-bit q is split
    into two fp8 terms in the kernel's prologue (``SPLIT_Q``)."""
    if args.kv_scale is None:
        raise ValueError("this kernel takes an fp8 cache with its scale")
    split_q = args.q.dtype != FP8
    if not split_q and args.q_scale is None:
        raise ValueError("an fp8 q needs its scale (q_scale)")
    q_scale = args.kv_scale if split_q else args.q_scale  # (unused with a split q)
    return launch_decode_kernel(
        _mla_decode_seesaw_fp8_kernel, args, num_splits, out, rows=BLOCK_Q, block_n=BLOCK_N,
        num_warps=4, lat_cols=HALF, SPLIT_Q=split_q,
        **seesaw_split_args(args, num_splits, q_scale),
    )  # fmt: skip


__all__ = ["fp8_seesaw_eligible", "launch_fp8_seesaw_decode"]
