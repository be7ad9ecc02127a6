"""MLA decode for Hopper (sm_90) in Gluon: FlashMLA's seesaw over pairs of 64-token tiles.

Two warpgroups (``gl.warp_specialize``: the default partition is warpgroup 0, one worker is
warpgroup 1), no copy warp: each warpgroup issues the TMA copies of the shared-memory columns it
is the last to read, as soon as it is done with them.

- KV tiles are 64 tokens; tile ``t`` lives in slot ``t % 2`` and is *owned* by warpgroup
  ``t % 2``, which computes its whole score tile ``s_t = q @ k_t^T`` (64 x 64 x 576: wgmma
  ``n64``, so the score MMA is not shared-memory bound as 32-token tiles are) and its softmax.
- Each slot is three column blocks with their own "ready" barrier: the left latent half (columns
  0-255), the right half (256-511) and the rope (512-575, copied with the right half). Output
  columns 0-255 belong to warpgroup 0 and 256-511 to warpgroup 1, so the left half of every
  tile is last read by warpgroup 0's ``p @ v`` and the right half (with the rope) by warpgroup
  1's: each refills its halves of a slot as soon as its own MMAs on them are done, a whole
  phase before the other half comes free (the column-block release that two whole-tile slots
  lack: docs/kernels/NOTES.md, variant 17).
- Per pair of tiles ``(a, b) = (2i, 2i + 1)`` (FlashMLA's schedule; ``m``: running row max):
  warpgroup 0: softmax of ``s_a`` against ``m`` from the previous pair -> ``m_a``, ``p_a``,
  ``scale0``; publish ``m_a``, ``scale0``; ``o_L = o_L * scale0 + p_a @ v_a[L]`` (p in
  registers); wait for warpgroup 1's ``scale1``; refill tile ``a + 2``'s left half; publish
  ``p_a * scale1``; once warpgroup 1 has issued both its products, ``o_L = o_L * scale1 + p_b
  @ v_b[L]``; issue ``s_{a+2}``'s left columns, refill tile ``b + 2``'s left half, issue the
  rest of ``s_{a+2}``.
  Warpgroup 1: wait for ``m_a``; softmax of ``s_b`` -> ``m_b``, ``scale1 = exp2(m_a - m_b)``,
  ``p_b``; publish them; ``o_R = o_R * scale0 * scale1 + p_b @ v_b[R] + (p_a scale1) @
  v_a[R]``, then tell warpgroup 0 (its products queue behind these, so ``v_a[R]``, whose slot
  tile ``a + 2``'s right half waits for, is read first: FlashMLA's order, variant 76); refill
  both right halves; ``s_{b+2}`` (right columns first: they came back first).
  So one warpgroup's softmax runs under the other's MMAs.
- Each warpgroup keeps the row sum of its own tiles' ``p`` (relative to the latest max); the
  two are added at the end through shared memory.
- Lazy rescaling (``LAZY_RESCALE``, FlashAttention 4's trick): a row's max moves only when a
  tile passes it by more than ``2^LAZY_TAU``, and a warpgroup rescales its output only in
  pairs where some row's max moved (one cross-warp minimum a warpgroup a pair; warpgroup 1
  publishes its verdict with ``scale1``, so warpgroup 0 also skips ``p_a * scale1``). Off for
  split KV, whose short items it made slower.

Shared memory: q 72 KB (its rope part is read into registers once and the buffer then holds
warpgroup 1's ``p_b``), two slots of 72 KB, ``p_a`` 8 KB, row vectors: 225 KB of 227.

Work items: a row block's (sequence, KV split) pairs. With several splits and sequences the
splits are sized from the whole batch's work, so long sequences get more splits than short
ones (``_per_split``; empty splits write only their lse), and every item has its program (one
wave). Otherwise, with more items than a row block's programs fit the GPU at once (128 x 128
heads: 128 items, 66 programs a row block), the grid is persistent (``PERSISTENT``): each
program takes every ``WAVE``-th item, and its current item's last pair already brings in the
next item's q (latent halves once both warpgroups' last scores are done; the rope part, on its
own barrier, once ``p_b`` has left its buffer) and first two tiles, and runs that item's first
scores, so the next item starts with its pipeline full (``_pick``: where a tile of the
program's stream lives). Slot phases and q's parity run on across items.

Scope (``seesaw_decode_eligible``): the shapes of ``mla_decode_hopper`` (sm_90, 512 + 64 dims,
one KV head, 64+ heads per KV head, pages of whole 64-token tiles) with a 16-bit cache.
"""

from __future__ import annotations

from typing import Any

from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia import hopper
from triton.experimental.gluon.language.nvidia.hopper import fence_async_shared, mbarrier, tma

from .configs import DecodeConfig
from .decode_checks import DecodeArgs
from .device_limits import limits_for
from .gluon_launch import SplitOutputs, launch_decode_kernel
from .mla_decode_hopper import (
    _range_of_split,
    _split_range,
    _zero_tail_rows,
    sm90_many_heads_call,
)
from .pdl import gdc_enter, gdc_wait

BLOCK_Q = 64
BLOCK_N = 64
HALF = 256  # latent columns a warpgroup's output (and a column block of a slot) spans
BALANCE_SPLITS = True
"""Size the KV splits from the whole batch's work (``_per_split``)."""
LAZY_RESCALE = True
"""Lazy rescaling (``LAZY_TAU``) where the KV is not split (each item a whole sequence): each
warpgroup skips its output's rescale (128 multiplies a thread, three a pair between them, on
the way to the next MMA) in the pairs where no row of the block moved its max. Measured on
the H200 (NOTES.md, variants 78-80): 2-3.5 % off the 128-head rows; split items, a few pairs
long, keep the exact rescale (lazy, 1 % slower on balanced splits, 0.6 % on 64 splits)."""
KNOBS = (BLOCK_Q, BLOCK_N, 8, 1)
"""The config that runs this kernel: ``64 x 64, 8 warps``; "1 stage": each warpgroup owns one
slot (the other holds the other warpgroup's tile)."""


@gluon.jit
def _opaque(x):
    """``x`` (an int32 scalar), computed anew where it is used: a slot index the compiler cannot
    see as loop-invariant, so it does not hoist the score wgmma's 72 shared-memory descriptors
    (64-bit each) out of the loop into registers that then spill."""
    return gl.inline_asm_elementwise("mov.b32 $0, $1;", "=r,r", [x], dtype=gl.int32,
                                     is_pure=False, pack=1)  # fmt: skip


# Named hardware barriers between the two warpgroups (ids past the 0-2 the compiler uses for
# its own thread barriers): the producer's 128 threads `bar.arrive` (each thread's shared-memory
# writes before it are then visible to the threads waiting there), the consumer's 128 `bar.sync`
# until all 256 have arrived. The schedule keeps each producer at most one hand-off ahead.


def _named(op: str, bar_id: int) -> gl.constexpr:
    return gl.constexpr(f"bar.{op} {bar_id}, 256; mov.b32 $0, $1;")


SCALE0_ARRIVE, SCALE0_SYNC = _named("arrive", 8), _named("sync", 8)  # wg 0 -> 1: m_a, scale0
SCALE1_ARRIVE, SCALE1_SYNC = _named("arrive", 9), _named("sync", 9)  # wg 1 -> 0: m_b, scale1
P0_ARRIVE, P0_SYNC = _named("arrive", 10), _named("sync", 10)  # wg 0 -> 1: p_a * scale1
P1_ARRIVE, P1_SYNC = _named("arrive", 11), _named("sync", 11)  # wg 1 -> 0: p_b (+ o_R issued)
SUMS_SYNC = _named("sync", 12)  # both: the row sums at the end


@gluon.jit
def _named_barrier(asm: gl.constexpr):
    """Run one of the named-barrier instructions above in every thread of the warpgroup."""
    gl.inline_asm_elementwise(asm, "=r,r,~{memory}", [0], dtype=gl.int32, is_pure=False,
                              pack=1)  # fmt: skip


# the tile sizes as the partitions see them
BQ = gl.constexpr(BLOCK_Q)
BN = gl.constexpr(BLOCK_N)
DH = gl.constexpr(HALF)
DPE = gl.constexpr(64)  # rope columns

# register layouts of both warpgroups: the score tile [64, 64] and the output half [64, 256] as
# wgmma accumulators (4 warps along the rows), their A operands in registers (q's rope part, p),
# and a plain layout for zeroing tail rows
S_LAYOUT = gl.constexpr(
    gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, BLOCK_N, 16])
)
O_LAYOUT = gl.constexpr(
    gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, HALF, 16])
)
Q_OP_LAYOUT = gl.constexpr(gl.DotOperandLayout(operand_index=0, parent=S_LAYOUT, k_width=2))
P_OP_LAYOUT = gl.constexpr(gl.DotOperandLayout(operand_index=0, parent=O_LAYOUT, k_width=2))
TILE_LAYOUT = gl.constexpr(gl.BlockedLayout([1, 8], [4, 8], [4, 1], [1, 0]))
ROW_S = gl.constexpr(gl.SliceLayout(1, S_LAYOUT))  # a row vector of the scores (max, sums)
ROW_O = gl.constexpr(gl.SliceLayout(1, O_LAYOUT))  # a row vector of the output (rescales)


@gluon.jit
def _per_split(seqlens_ptr, BATCH, WAVE, BALANCE: gl.constexpr):
    """Tiles a balanced split takes (``BALANCE``; 0 without): every program sums the batch's
    tiles and takes ``T = total / (WAVE - BATCH)`` (at least 4), where ``WAVE`` is the programs
    of one row block that fit the GPU at once; a sequence then gets ``cdiv(tiles, T)`` splits
    (at most ``NUM_SPLITS``; its other split slots are empty). So with lengths of 1K..8K the
    long sequences get more splits than the short ones and the programs do about equal work
    (``sum over b of cdiv(tiles_b, T) <= WAVE``: one wave)."""
    per_split = 0
    if BALANCE:
        layout: gl.constexpr = gl.BlockedLayout([1], [32], [gl.num_warps()], [0])
        offs = gl.arange(0, 128, layout=layout)
        total = gl.sum(gl.zeros([128], gl.int32, layout=layout), axis=0)
        for c in range(0, BATCH, 128):
            lens = gl.load(seqlens_ptr + c + offs, mask=c + offs < BATCH, other=0)
            total += gl.sum((lens + BN - 1) // BN, axis=0)
        per_split = gl.maximum(gl.cdiv(total, gl.maximum(WAVE - BATCH, 1)), 4)
    return per_split


@gluon.jit
def _split_of(pid_b, split, per_split, seqlens_ptr, s0, S_Q, NUM_SPLITS, CAUSAL: gl.constexpr,
              BALANCE: gl.constexpr):  # fmt: skip
    """Split ``split`` of sequence ``pid_b``: ``(start_n, end_n, num_tiles)``, balanced
    (``_per_split``) or one of ``NUM_SPLITS`` equal ones (``_split_range``)."""
    if BALANCE:
        seqlen = gl.load(seqlens_ptr + pid_b)
        split_len = gl.maximum(per_split, gl.cdiv(gl.cdiv(seqlen, BN), NUM_SPLITS)) * BN
        start_n, end_n, num_tiles = _range_of_split(seqlen, split_len, split, s0, S_Q, BN,
                                                    CAUSAL)  # fmt: skip
    else:
        start_n, end_n, num_tiles = _split_range(seqlens_ptr, pid_b, split, s0, S_Q,
                                                 NUM_SPLITS, BN, CAUSAL)  # fmt: skip
    return start_n, end_n, num_tiles


@gluon.jit
def _item(item, per_split, seqlens_ptr, block_table_ptr, stride_bt_b, s0, S_Q, NUM_SPLITS,
          BATCH, CAUSAL: gl.constexpr, BALANCE: gl.constexpr):  # fmt: skip
    """Work item ``item`` of a row block: split ``item % NUM_SPLITS`` of sequence ``item //
    NUM_SPLITS``. Returns ``(pid_b, split, start_n, end_n, num_tiles, bt_row)``: the KV split
    ``[start_n, end_n)`` (``_split_of``), its count of 64-token tiles (0 past the last item)
    and its block-table row."""
    pid_b = gl.minimum(item // NUM_SPLITS, BATCH - 1)
    split = item % NUM_SPLITS
    start_n, end_n, num_tiles = _split_of(pid_b, split, per_split, seqlens_ptr, s0, S_Q,
                                          NUM_SPLITS, CAUSAL, BALANCE)  # fmt: skip
    num_tiles = gl.where(item < BATCH * NUM_SPLITS, num_tiles, 0)
    return pid_b, split, start_n, end_n, num_tiles, block_table_ptr + pid_b * stride_bt_b


@gluon.jit
def _first_item(seqlens_ptr, block_table_ptr, stride_bt_b, S_Q, H, NUM_SPLITS, BATCH, WAVE,
                CAUSAL: gl.constexpr, BALANCE: gl.constexpr):  # fmt: skip
    """A program's row block (first query token ``s0``, head ``h0``), balanced split size
    (``_per_split``), first item and that item (``_item``): ``(s0, h0, per_split, first,
    pid_b, split, start_n, end_n, num_tiles, bt_row)``. The grid is (row blocks, splits,
    sequences), one item a program, or (row blocks, programs, 1), persistent."""
    row0 = gl.program_id(0) * BQ
    s0 = row0 // H
    per_split = _per_split(seqlens_ptr, BATCH, WAVE, BALANCE)
    first = gl.program_id(2) * gl.num_programs(1) + gl.program_id(1)
    pid_b, split, start_n, end_n, num_tiles, bt_row = _item(
        first, per_split, seqlens_ptr, block_table_ptr, stride_bt_b, s0, S_Q, NUM_SPLITS, BATCH,
        CAUSAL, BALANCE,
    )  # fmt: skip
    return s0, row0 % H, per_split, first, pid_b, split, start_n, end_n, num_tiles, bt_row


@gluon.jit
def _program(seqlens_ptr, block_table_ptr, stride_bt_b, S_Q, H, NUM_SPLITS, BATCH, WAVE,
             CAUSAL: gl.constexpr, BALANCE: gl.constexpr):  # fmt: skip
    """A program of one item (the fp8 seesaw kernel's grid: row block, split, sequence): its
    batch, first query token and head, KV split ``[start_n, end_n)``, its count of 64-token
    tiles and its block-table row: ``(pid_b, s0, h0, start_n, end_n, num_tiles, bt_row)``."""
    pid_b = gl.program_id(2)
    row0 = gl.program_id(0) * BQ
    s0 = row0 // H
    per_split = _per_split(seqlens_ptr, BATCH, WAVE, BALANCE)
    start_n, end_n, num_tiles = _split_of(pid_b, gl.program_id(1), per_split, seqlens_ptr, s0,
                                          S_Q, NUM_SPLITS, CAUSAL, BALANCE)  # fmt: skip
    return pid_b, s0, row0 % H, start_n, end_n, num_tiles, block_table_ptr + pid_b * stride_bt_b


@gluon.jit
def _kv_row(bt_row, start_n, tile, pred, PAGE_SIZE: gl.constexpr, BN: gl.constexpr):
    """Row of KV tile ``tile`` of the split in the cache seen as [pages x page size, 576]."""
    tile_n = start_n + tile * BN
    page = gl.load(bt_row + tile_n // PAGE_SIZE, mask=pred, other=0)
    return page * PAGE_SIZE + tile_n % PAGE_SIZE


@gluon.jit
def _issue_left(half_desc, kv_l, ready_l, bt_row, start_n, tile, pred, PAGE_SIZE: gl.constexpr):
    """Start the copy of columns 0-255 of KV tile ``tile`` into slot ``tile % 2`` (if pred)."""
    BN: gl.constexpr = half_desc.block_type.shape[0]
    slot = tile % 2
    kv_row = _kv_row(bt_row, start_n, tile, pred, PAGE_SIZE, BN)
    bar = ready_l.index(slot)
    mbarrier.expect(bar, half_desc.block_type.nbytes, pred=pred)
    tma.async_copy_global_to_shared(half_desc, [kv_row, 0], bar, kv_l.index(slot), pred=pred)


@gluon.jit
def _issue_right(half_desc, pe_desc, kv_r, kv_pe, ready_r, bt_row, start_n, tile, pred,
                 PAGE_SIZE: gl.constexpr):  # fmt: skip
    """Start the copy of columns 256-575 of KV tile ``tile`` into slot ``tile % 2`` (if pred)."""
    BN: gl.constexpr = half_desc.block_type.shape[0]
    DH: gl.constexpr = half_desc.block_type.shape[1]
    slot = tile % 2
    kv_row = _kv_row(bt_row, start_n, tile, pred, PAGE_SIZE, BN)
    bar = ready_r.index(slot)
    mbarrier.expect(bar, half_desc.block_type.nbytes + pe_desc.block_type.nbytes, pred=pred)
    tma.async_copy_global_to_shared(half_desc, [kv_row, DH], bar, kv_r.index(slot), pred=pred)
    tma.async_copy_global_to_shared(pe_desc, [kv_row, 2 * DH], bar, kv_pe.index(slot), pred=pred)


@gluon.jit
def _zero_if_tail(kv_l, kv_r, ready_l, ready_r, slot, phase, valid, layout: gl.constexpr):
    """On the split's partial last tile (``valid`` < 64 tokens): zero its latent rows past
    ``valid`` once both halves have landed (the cache may hold NaN there, and ``0 * NaN`` is
    NaN in ``p @ v``; the rope columns only feed masked scores)."""
    if valid < kv_l.shape[1]:
        mbarrier.wait(ready_l.index(slot), phase)
        mbarrier.wait(ready_r.index(slot), phase)
        _zero_tail_rows(kv_l.index(slot), valid, layout)
        _zero_tail_rows(kv_r.index(slot), valid, layout)
        fence_async_shared()
        gl.thread_barrier()


@gluon.jit
def _scores_left(s, q_lat, kv_l, ready_l, slot, phase):
    """Issue ``s += q[:, :256] @ k[:, :256]^T`` once the left half of the slot has landed."""
    mbarrier.wait(ready_l.index(slot), phase)
    q_l = q_lat.index(_opaque(0))
    return hopper.warpgroup_mma(q_l, kv_l.index(slot).permute((1, 0)), s, is_async=True)


@gluon.jit
def _scores_right(s, q_lat, q_pe_op, kv_r, kv_pe, ready_r, slot, phase):
    """Issue ``s += q[:, 256:] @ k[:, 256:]^T`` (latent half and rope; q's rope part in
    registers) once the right half of the slot has landed."""
    mbarrier.wait(ready_r.index(slot), phase)
    q_r = q_lat.index(_opaque(1))
    s = hopper.warpgroup_mma(q_r, kv_r.index(slot).permute((1, 0)), s, is_async=True)
    return hopper.warpgroup_mma(q_pe_op, kv_pe.index(slot).permute((1, 0)), s, is_async=True)


@gluon.jit
def _masked(s, tile_n, end_n):
    """Scores with keys at or past ``end_n`` at ``-inf`` (only the last tile has any); still
    unscaled: the softmax folds the scale into its ``exp2`` (one FFMA a score)."""
    if tile_n + s.shape[1] > end_n:
        offs_n = tile_n + gl.arange(0, s.shape[1], layout=gl.SliceLayout(0, s.type.layout))
        s = gl.where((offs_n < end_n)[None, :], s, float("-inf"))
    return s


@gluon.jit
def _store_half(acc, l_own, l_s, o_ptr, pid_b, split, s0, h0, stride_o_b, stride_o_s,
                stride_o_h, stride_o_split, write, has_work, out_scale,
                W: gl.constexpr):  # fmt: skip
    """Add the other warpgroup's row sum, normalise (times ``out_scale``: an fp8 cache's
    scale) and store output columns ``256 W ..`` of split ``split`` of sequence ``pid_b`` if
    ``write`` (an empty split of a split grid skips it: the combine reads only its lse);
    returns ``(l_safe, empty)``: the total row sum (1 where no key was seen) and those rows.
    An item without tiles (``has_work`` False) has no sums to exchange: its warpgroups skip
    the hand-off, which a persistent program's next item could otherwise overwrite before the
    other warpgroup has read it."""
    BQ: gl.constexpr = acc.shape[0]
    DH: gl.constexpr = acc.shape[1]
    o_layout: gl.constexpr = acc.type.layout
    row_o: gl.constexpr = gl.SliceLayout(1, o_layout)
    l_tot = l_own
    if has_work:
        l_s.slice(W * BQ, BQ).store(l_own)
        _named_barrier(SUMS_SYNC)
        l_tot = l_own + l_s.slice((1 - W) * BQ, BQ).load(l_own.type.layout)
    empty = l_tot == 0.0
    l_safe = gl.where(empty, 1.0, l_tot)
    acc = acc * gl.convert_layout(out_scale / l_safe, row_o)[:, None]
    offs_r = gl.arange(0, BQ, layout=row_o)
    offs_d = W * DH + gl.arange(0, DH, layout=gl.SliceLayout(0, o_layout))
    o_base = o_ptr + pid_b * stride_o_b + s0 * stride_o_s + split * stride_o_split
    if write:  # a branch, not a store mask: the stores stay 8 bytes wide
        gl.store(o_base + (h0 + offs_r)[:, None] * stride_o_h + offs_d[None, :],
                 acc.to(o_ptr.dtype.element_ty))  # fmt: skip
    return l_safe, empty


@gluon.jit
def _copy_q_lat(q_half_desc, q_l, q_r, bar, q_row, pred):
    """The TMA copies of q's latent halves (rows ``q_row`` ..) into ``q_l``, ``q_r``."""
    DH: gl.constexpr = q_half_desc.block_type.shape[1]
    tma.async_copy_global_to_shared(q_half_desc, [q_row, 0], bar, q_l, pred=pred)
    tma.async_copy_global_to_shared(q_half_desc, [q_row, DH], bar, q_r, pred=pred)


@gluon.jit
def _load_q_lat(q_half_desc, q_l, q_r, q_bar, q_row, pred):
    """Start the copies of the row block's q latent halves (if ``pred``), on ``q_bar``."""
    mbarrier.expect(q_bar, 2 * q_half_desc.block_type.nbytes, pred=pred)
    _copy_q_lat(q_half_desc, q_l, q_r, q_bar, q_row, pred)


@gluon.jit
def _copy_q_pe(q_pe_desc, q_pe, bar, q_row, pred):
    """The TMA copy of q's rope part (rows ``q_row`` .., columns 512-575) into ``q_pe``."""
    tma.async_copy_global_to_shared(q_pe_desc, [q_row, 2 * DH], bar, q_pe, pred=pred)


@gluon.jit
def _load_q_pe(q_pe_desc, q_pe, qpe_bar, q_row, pred):
    """Start the copy of the row block's q rope part into ``q_pe`` (if ``pred``), on its own
    barrier: it comes in later than the latent halves, once ``p_b`` has left the buffer."""
    mbarrier.expect(qpe_bar, q_pe_desc.block_type.nbytes, pred=pred)
    _copy_q_pe(q_pe_desc, q_pe, qpe_bar, q_row, pred)


@gluon.jit
def _load_q(q_half_desc, q_pe_desc, q_l, q_r, q_pe, q_bar, pid_b, s0, h0, S_Q, H, has_work):
    """Start the copies of the row block's whole q on one barrier (the fp8 seesaw kernel's):
    its two latent halves (into ``q_l``, ``q_r``) and its rope part (an empty split of a
    balanced grid, ``has_work`` False, copies none)."""
    q_row = (pid_b * S_Q + s0) * H + h0
    mbarrier.expect(q_bar, 2 * q_half_desc.block_type.nbytes + q_pe_desc.block_type.nbytes,
                    pred=has_work)  # fmt: skip
    _copy_q_lat(q_half_desc, q_l, q_r, q_bar, q_row, has_work)
    _copy_q_pe(q_pe_desc, q_pe, q_bar, q_row, has_work)


@gluon.jit
def _exp2_scaled(s, scale_log2, m, PER_ROW: gl.constexpr):
    """``exp2(s * scale_log2 - m)`` by row (one FFMA a score): ``scale_log2`` a scalar, or a
    row vector with ``PER_ROW``."""
    if PER_ROW:
        p = gl.exp2(s * scale_log2[:, None] - m[:, None])
    else:
        p = gl.exp2(s * scale_log2 - m[:, None])
    return p


LAZY_TAU = gl.constexpr(8.0)
"""Lazy rescaling: a row's running max (base 2) moves only when a tile's scores pass it by more
than this, so ``p`` stays <= 2^8 (exact in the 16-bit types, far from their limits) and most
tiles leave every row's max, and the output, as they were."""
FLAG_LAYOUT = gl.constexpr(gl.BlockedLayout([1], [32], [4], [0]))  # one word, every thread


@gluon.jit
def _store_flag(flag_s, flag):
    """Publish a flag (a scalar, 0.0 or 1.0) in its one word of shared memory."""
    flag_s.store(gl.full([1], 0.0, gl.float32, layout=FLAG_LAYOUT) + flag)


@gluon.jit
def _load_flag(flag_s):
    """The flag ``_store_flag`` published, as a scalar bool (every thread reads the word)."""
    return gl.max(flag_s.load(FLAG_LAYOUT), axis=0) > 0.5


@gluon.jit
def _softmax_core(s, m_old, scale_log2, PER_ROW: gl.constexpr, LAZY: gl.constexpr):
    """One tile's softmax against the running max ``m_old``: ``(p, m_new, scale)``, ``scale =
    exp2(m_old - m_new)``. ``m_new`` is the larger of ``m_old`` and the tile's row maxima, or
    with ``LAZY`` ``m_old`` unless a row's tile maximum passes it by more than ``LAZY_TAU``
    (``scale`` is then exactly 1). (Base 2, the scale folded into the ``exp2``; ``PER_ROW``:
    ``scale_log2`` is a row vector, not a scalar.)"""
    row_max = gl.max(s, axis=1) * scale_log2
    if LAZY:
        m_new = gl.where(row_max > m_old + LAZY_TAU, row_max, m_old)
    else:
        m_new = gl.maximum(m_old, row_max)
    scale = gl.exp2(m_old - m_new)
    return _exp2_scaled(s, scale_log2, m_new, PER_ROW), m_new, scale


@gluon.jit
def _softmax_a(s, m_i, l_i, scale_log2, m_s, sc0_s, PER_ROW: gl.constexpr = False,
               LAZY: gl.constexpr = False):  # fmt: skip
    """Warpgroup 0's softmax of tile a (scores ``s``, unscaled, masked: ``_masked``) against
    the running max ``m_i`` of the previous pair (``_softmax_core``); publishes ``m_a`` and
    ``scale0`` to warpgroup 1. Returns ``(p, scale0, l_i)``. (The tile has >= 1 valid token:
    ``m_a`` is finite.)"""
    p, m_a, scale0 = _softmax_core(s, m_i, scale_log2, PER_ROW, LAZY)
    l_i = l_i * scale0 + gl.sum(p, axis=1)
    m_s.store(m_a)
    sc0_s.store(scale0)
    _named_barrier(SCALE0_ARRIVE)
    return p, scale0, l_i


@gluon.jit
def _softmax_b(s, m_a, scale_log2, m_s, sc1_s, PER_ROW: gl.constexpr = False):
    """Warpgroup 1's softmax of tile b (masked scores ``s``) against ``m_a``; publishes
    ``m_b`` and ``scale1`` to warpgroup 0. Returns ``(p, scale1)`` (``PER_ROW``: as
    ``_softmax_core``'s)."""
    p, m_b, scale1 = _softmax_core(s, m_a, scale_log2, PER_ROW, False)
    m_s.store(m_b)
    sc1_s.store(scale1)
    _named_barrier(SCALE1_ARRIVE)
    return p, scale1


@gluon.jit
def _softmax_b_lazy(s, m_a, scale0, scale_log2, m_s, sc1_s, flag_s):
    """``_softmax_b`` with lazy rescaling (``_softmax_core``): also publishes whether any row of
    the block moved its max in this pair (``scale0 * scale1 < 1``: a rescale is due), and
    returns it: ``(p, scale1, rescale)``, ``rescale`` a scalar bool."""
    p, m_b, scale1 = _softmax_core(s, m_a, scale_log2, False, True)
    m_s.store(m_b)
    sc1_s.store(scale1)
    rescale = gl.min(scale0 * scale1, axis=0) < 1.0
    _store_flag(flag_s, rescale.to(gl.float32))
    _named_barrier(SCALE1_ARRIVE)
    return p, scale1, rescale


@gluon.jit
def _lone_tile_a(acc, l_i, scale0, sc1_s, p0_s, v_a, flag_s=None, LAZY: gl.constexpr = False):
    """Warpgroup 1's step for a lone last tile a (no tile b: the max stays ``m_a``): publish
    ``scale1`` = 1 (and, ``LAZY``, no rescale due), rescale by ``scale0`` and add ``p_a @
    v_a`` (its right half, ``v_a``) once warpgroup 0 has published ``p_a``. Returns ``(acc,
    l_i)``."""
    BQ: gl.constexpr = acc.shape[0]
    sc1_s.store(gl.full([BQ], 1.0, gl.float32, layout=l_i.type.layout))
    if LAZY:
        _store_flag(flag_s, 0.0)
    _named_barrier(SCALE1_ARRIVE)
    l_i = l_i * scale0
    acc = acc * gl.convert_layout(scale0, gl.SliceLayout(1, acc.type.layout))[:, None]
    _named_barrier(P0_SYNC)
    acc_f = hopper.warpgroup_mma(p0_s, v_a, acc, is_async=True)
    acc = hopper.warpgroup_mma_wait(num_outstanding=0, deps=[acc_f])
    return acc, l_i


@gluon.jit
def _finish_wg0(acc, l_i, m_i, l_s, o_ptr, lse_ptr, pid_b, split, s0, h0, stride_o_b,
                stride_o_s, stride_o_h, stride_o_split, stride_lse_b, stride_lse_s,
                stride_lse_h, stride_lse_split, write, has_work, out_scale):  # fmt: skip
    """Warpgroup 0's end of an item: its output half (``_store_half``) and the row block's
    lse."""
    BQ: gl.constexpr = acc.shape[0]
    l_safe, empty = _store_half(acc, l_i, l_s, o_ptr, pid_b, split, s0, h0, stride_o_b,
                                stride_o_s, stride_o_h, stride_o_split, write, has_work,
                                out_scale, 0)  # fmt: skip
    lse = gl.where(empty, float("-inf"), (m_i + gl.log2(l_safe)) * 0.6931471805599453)
    offs_l = gl.arange(0, BQ, layout=m_i.type.layout)
    lse_base = (lse_ptr + pid_b * stride_lse_b + s0 * stride_lse_s
                + split * stride_lse_split)  # fmt: skip
    gl.store(lse_base + (h0 + offs_l) * stride_lse_h, lse)


@gluon.jit
def _item_stride(first, num_items, PERSISTENT: gl.constexpr):
    """``(step, end)`` of a program's items from ``first``: every ``step``-th one (the grid's
    programs) in a persistent grid, only ``first`` otherwise."""
    if PERSISTENT:
        step = gl.num_programs(1) * gl.num_programs(2)
        end = num_items
    else:
        step = 1
        end = first + 1
    return step, end


@gluon.jit
def _next_item(item, pid_b, split, start_n, end_n, bt_row, has_work, per_split, seqlens_ptr,
               block_table_ptr, stride_bt_b, s0, S_Q, NUM_SPLITS, BATCH, CAUSAL: gl.constexpr,
               BALANCE: gl.constexpr, PERSISTENT: gl.constexpr):  # fmt: skip
    """The program's next item (``_item``), or, without a persistent grid, none: the current
    one's values with no tiles (so no code for what crosses to a next item is kept); and
    ``go_on``: whether the next item's q and first tiles come in under the current one's last
    pair (both have tiles). Returns ``(nb, nsplit, nstart, nend, ntiles, nbt, go_on)``."""
    if PERSISTENT:
        nb, nsplit, nstart, nend, ntiles, nbt = _item(
            item, per_split, seqlens_ptr, block_table_ptr, stride_bt_b, s0, S_Q, NUM_SPLITS,
            BATCH, CAUSAL, BALANCE,
        )  # fmt: skip
    else:
        nb, nsplit, nstart, nend, ntiles, nbt = pid_b, split, start_n, end_n, 0, bt_row
    return nb, nsplit, nstart, nend, ntiles, nbt, has_work & (ntiles > 0)


@gluon.jit
def _pick(tile, num_tiles, pad, bt_row, start_n, nbt, nstart, ntiles, go_on):
    """Where tile ``tile`` of a program's tile stream is: this item's (``tile < num_tiles``)
    or, past the item's last pair (``pad``: twice its pairs), the next item's tile ``tile -
    pad`` (when ``go_on``: its first tiles come in under this item's last pair). Returns
    ``(bt_row, start_n, tile, pred)`` for ``_issue_left`` / ``_issue_right``."""
    here = tile < num_tiles
    t_next = tile - pad
    pred = here | (go_on & (t_next >= 0) & (t_next < ntiles))
    if here:
        bt, start, t = bt_row, start_n, tile
    else:
        bt, start, t = nbt, nstart, t_next
    return bt, start, t, pred


@gluon.jit
def _rope_of_next(q_pe, qpe_bar, phase):
    """Wait for the next item's q rope part and read it into registers (the score MMA's A
    operand); the buffer then holds warpgroup 1's ``p_b`` again."""
    mbarrier.wait(qpe_bar, phase)
    return q_pe.load(Q_OP_LAYOUT)


@gluon.jit
def _wg0(q_lat, q_pe, kv_l, kv_r, kv_pe, p0_s, flag_s, m_s, sc0_s, sc1_s, l_s, q_bar, qpe_bar,
         ready_l, ready_r, q_half_desc, q_pe_desc,
         kv_half_desc, block_table_ptr, seqlens_ptr, o_ptr, lse_ptr, qk_scale_log2, stride_bt_b,
         stride_o_b, stride_o_s, stride_o_h, stride_o_split, stride_lse_b, stride_lse_s,
         stride_lse_h, stride_lse_split, S_Q, H, NUM_SPLITS, BATCH, WAVE,
         PAGE_SIZE: gl.constexpr, CAUSAL: gl.constexpr, BALANCE: gl.constexpr,
         PERSISTENT: gl.constexpr, LAZY: gl.constexpr):  # fmt: skip
    """Warpgroup 0: even tiles' scores and softmax, output columns 0-255, left-half copies,
    q's copies; item after item (``_mla_decode_seesaw_kernel``)."""
    dtype: gl.constexpr = q_lat.dtype
    s0, h0, per_split, first, pid_b, split, start_n, end_n, num_tiles, bt_row = _first_item(
        seqlens_ptr, block_table_ptr, stride_bt_b, S_Q, H, NUM_SPLITS, BATCH, WAVE, CAUSAL,
        BALANCE,
    )  # fmt: skip
    base0 = num_tiles * 0  # slot 0's copies completed before this item
    q_ph = num_tiles * 0  # parity of this item's q copies
    ready = num_tiles * 0  # 1: this item's q, first tiles and first scores came in already
    q_pe_op = gl.zeros([BQ, DPE], dtype, layout=Q_OP_LAYOUT)
    s = gl.zeros([BQ, BN], gl.float32, layout=S_LAYOUT)
    step, last_item = _item_stride(first, BATCH * NUM_SPLITS, PERSISTENT)
    for item in range(first, last_item, step):
        has_work = num_tiles > 0
        if ready == 0:
            # the item's own prologue: q, the left halves of tiles 0 and 1, tile 0's scores
            q_row = (pid_b * S_Q + s0) * H + h0
            _load_q_lat(q_half_desc, q_lat.index(0), q_lat.index(1), q_bar, q_row, has_work)
            _load_q_pe(q_pe_desc, q_pe, qpe_bar, q_row, has_work)
            _issue_left(kv_half_desc, kv_l, ready_l, bt_row, start_n, 0, has_work, PAGE_SIZE)
            _issue_left(kv_half_desc, kv_l, ready_l, bt_row, start_n, 1, num_tiles > 1,
                        PAGE_SIZE)  # fmt: skip
            mbarrier.wait(q_bar, q_ph, pred=has_work)
            mbarrier.wait(qpe_bar, q_ph, pred=has_work)
            q_pe_op = q_pe.load(Q_OP_LAYOUT)  # the buffer then holds warpgroup 1's p
            s = gl.zeros([BQ, BN], gl.float32, layout=S_LAYOUT)
            if has_work:
                ph = base0 & 1
                _zero_if_tail(kv_l, kv_r, ready_l, ready_r, 0, ph, end_n - start_n, TILE_LAYOUT)
                s = _scores_left(s, q_lat, kv_l, ready_l, _opaque(0), ph)
                s = _scores_right(s, q_lat, q_pe_op, kv_r, kv_pe, ready_r, _opaque(0), ph)
                s = hopper.warpgroup_mma_wait(num_outstanding=0, deps=[s])
        nb, nsplit, nstart, nend, ntiles, nbt, go_on = _next_item(
            item + step, pid_b, split, start_n, end_n, bt_row, has_work, per_split, seqlens_ptr,
            block_table_ptr, stride_bt_b, s0, S_Q, NUM_SPLITS, BATCH, CAUSAL, BALANCE, PERSISTENT,
        )  # fmt: skip
        next_q_row = (nb * S_Q + s0) * H + h0

        acc = gl.zeros([BQ, DH], gl.float32, layout=O_LAYOUT)
        l_i = gl.zeros([BQ], gl.float32, layout=ROW_S)
        m_i = gl.full([BQ], float("-inf"), gl.float32, layout=ROW_S)
        num_pairs = gl.cdiv(num_tiles, 2)
        pad = 2 * num_pairs
        for i in range(num_pairs):
            a = 2 * i
            cross = go_on & (i == num_pairs - 1)  # the next tile a + 2 is the next item's first
            tile_n = start_n + a * BN
            s = _masked(s, tile_n, end_n)
            p, scale0, l_i = _softmax_a(s, m_i, l_i, qk_scale_log2, m_s, sc0_s, LAZY=LAZY)
            # o_L = o_L * scale0 + p_a @ v_a[L], then tile a + 2's left half may come in
            rescale0 = True
            if LAZY:  # (lazy: skipped when no row's max moved)
                rescale0 = gl.min(scale0, axis=0) < 1.0
            if rescale0:
                acc = acc * gl.convert_layout(scale0, ROW_O)[:, None]
            p_op = gl.convert_layout(p.to(dtype), P_OP_LAYOUT)
            acc = hopper.warpgroup_mma(p_op, kv_l.index(_opaque(0)), acc, is_async=True)
            acc, p_op = hopper.warpgroup_mma_wait(num_outstanding=0, deps=[acc, p_op])
            # warpgroup 1's max after tile b: p_a relative to it, for warpgroup 1's o_R
            _named_barrier(SCALE1_SYNC)
            # tile a + 2's left half comes in after that wait (FlashMLA's place: variant 76)
            gl.thread_barrier()
            bt2, st2, t2, pr2 = _pick(a + 2, num_tiles, pad, bt_row, start_n, nbt, nstart,
                                      ntiles, go_on)  # fmt: skip
            _issue_left(kv_half_desc, kv_l, ready_l, bt2, st2, t2, pr2, PAGE_SIZE)
            if cross:  # both warpgroups are done with this item's q: the next one's may come in
                _load_q_lat(q_half_desc, q_lat.index(0), q_lat.index(1), q_bar, next_q_row, True)
            scale1 = sc1_s.load(ROW_S)
            m_i = m_s.load(ROW_S)
            rescale1 = True
            if LAZY:  # warpgroup 1's word: did any row's max move in this pair
                rescale1 = _load_flag(flag_s)
            if rescale1:
                p = p * scale1[:, None]
            p0_s.store(p.to(dtype))
            fence_async_shared()
            _named_barrier(P0_ARRIVE)
            if rescale1:
                acc = acc * gl.convert_layout(scale1, ROW_O)[:, None]
            l_i = l_i * scale1
            nxt = (base0 + i + 1) & 1  # slot 0's parity for tile a + 2 (or the next item's 0)
            bt3, st3, t3, pr3 = _pick(a + 3, num_tiles, pad, bt_row, start_n, nbt, nstart,
                                      ntiles, go_on)  # fmt: skip
            valid = gl.where(cross, nend - nstart, end_n - tile_n - 2 * BN)
            if a + 1 < num_tiles:
                # o_L += p_b @ v_b[L] (p_b from warpgroup 1, in the q rope buffer)
                _named_barrier(P1_SYNC)
                acc_f = hopper.warpgroup_mma(q_pe, kv_l.index(_opaque(1)), acc, is_async=True)
                if (a + 2 < num_tiles) | cross:
                    # tile a + 2's scores: left columns under p_b @ v_b, then the rest
                    if cross:
                        mbarrier.wait(q_bar, q_ph ^ 1)
                    _zero_if_tail(kv_l, kv_r, ready_l, ready_r, 0, nxt, valid, TILE_LAYOUT)
                    s = gl.zeros([BQ, BN], gl.float32, layout=S_LAYOUT)
                    s = _scores_left(s, q_lat, kv_l, ready_l, _opaque(0), nxt)
                    acc = hopper.warpgroup_mma_wait(num_outstanding=1, deps=[acc_f])
                    gl.thread_barrier()
                    _issue_left(kv_half_desc, kv_l, ready_l, bt3, st3, t3, pr3, PAGE_SIZE)
                    if cross:  # p_b @ v_b is done: the buffer may take the next q's rope
                        _load_q_pe(q_pe_desc, q_pe, qpe_bar, next_q_row, True)
                        q_pe_op = _rope_of_next(q_pe, qpe_bar, q_ph ^ 1)
                    s = _scores_right(s, q_lat, q_pe_op, kv_r, kv_pe, ready_r, _opaque(0), nxt)
                    s = hopper.warpgroup_mma_wait(num_outstanding=0, deps=[s])
                else:
                    acc = hopper.warpgroup_mma_wait(num_outstanding=0, deps=[acc_f])
            elif cross:
                # a lone last tile a, then the next item's first tile
                _load_q_pe(q_pe_desc, q_pe, qpe_bar, next_q_row, True)
                _issue_left(kv_half_desc, kv_l, ready_l, bt3, st3, t3, pr3, PAGE_SIZE)
                mbarrier.wait(q_bar, q_ph ^ 1)
                _zero_if_tail(kv_l, kv_r, ready_l, ready_r, 0, nxt, valid, TILE_LAYOUT)
                s = gl.zeros([BQ, BN], gl.float32, layout=S_LAYOUT)
                s = _scores_left(s, q_lat, kv_l, ready_l, _opaque(0), nxt)
                q_pe_op = _rope_of_next(q_pe, qpe_bar, q_ph ^ 1)
                s = _scores_right(s, q_lat, q_pe_op, kv_r, kv_pe, ready_r, _opaque(0), nxt)
                s = hopper.warpgroup_mma_wait(num_outstanding=0, deps=[s])

        _finish_wg0(acc, l_i, m_i, l_s, o_ptr, lse_ptr, pid_b, split, s0, h0, stride_o_b,
                    stride_o_s, stride_o_h, stride_o_split, stride_lse_b, stride_lse_s,
                    stride_lse_h, stride_lse_split, has_work | (NUM_SPLITS == 1), has_work,
                    1.0)  # fmt: skip
        base0 += num_pairs
        q_ph = q_ph ^ has_work.to(gl.int32)
        ready = go_on.to(gl.int32)
        pid_b, split, start_n, end_n, num_tiles, bt_row = nb, nsplit, nstart, nend, ntiles, nbt


@gluon.jit
def _wg1(q_lat, q_pe, kv_l, kv_r, kv_pe, p0_s, flag_s, m_s, sc0_s, sc1_s, l_s, q_bar, qpe_bar,
         ready_l, ready_r, kv_half_desc, kv_pe_desc, block_table_ptr, seqlens_ptr, o_ptr,
         qk_scale_log2, stride_bt_b, stride_o_b, stride_o_s, stride_o_h, stride_o_split, S_Q,
         H, NUM_SPLITS, BATCH, WAVE, PAGE_SIZE: gl.constexpr, CAUSAL: gl.constexpr,
         BALANCE: gl.constexpr, PERSISTENT: gl.constexpr, LAZY: gl.constexpr):  # fmt: skip
    """Warpgroup 1: odd tiles' scores and softmax, output columns 256-511, right-half copies;
    item after item."""
    gdc_wait()  # (a partition: before its first global access)
    dtype: gl.constexpr = q_lat.dtype
    s0, h0, per_split, first, pid_b, split, start_n, end_n, num_tiles, bt_row = _first_item(
        seqlens_ptr, block_table_ptr, stride_bt_b, S_Q, H, NUM_SPLITS, BATCH, WAVE, CAUSAL,
        BALANCE,
    )  # fmt: skip
    base1 = num_tiles * 0  # slot 1's copies completed before this item
    q_ph = num_tiles * 0
    ready = num_tiles * 0
    q_pe_op = gl.zeros([BQ, DPE], dtype, layout=Q_OP_LAYOUT)
    s = gl.zeros([BQ, BN], gl.float32, layout=S_LAYOUT)
    step, last_item = _item_stride(first, BATCH * NUM_SPLITS, PERSISTENT)
    for item in range(first, last_item, step):
        has_work = num_tiles > 0
        if ready == 0:
            _issue_right(kv_half_desc, kv_pe_desc, kv_r, kv_pe, ready_r, bt_row, start_n, 0,
                         has_work, PAGE_SIZE)  # fmt: skip
            _issue_right(kv_half_desc, kv_pe_desc, kv_r, kv_pe, ready_r, bt_row, start_n, 1,
                         num_tiles > 1, PAGE_SIZE)  # fmt: skip
            mbarrier.wait(q_bar, q_ph, pred=has_work)
            mbarrier.wait(qpe_bar, q_ph, pred=has_work)
            q_pe_op = q_pe.load(Q_OP_LAYOUT)
            s = gl.zeros([BQ, BN], gl.float32, layout=S_LAYOUT)
            if num_tiles > 1:
                ph = base1 & 1
                _zero_if_tail(kv_l, kv_r, ready_l, ready_r, 1, ph, end_n - start_n - BN,
                              TILE_LAYOUT)  # fmt: skip
                s = _scores_right(s, q_lat, q_pe_op, kv_r, kv_pe, ready_r, _opaque(1), ph)
                s = _scores_left(s, q_lat, kv_l, ready_l, _opaque(1), ph)
                s = hopper.warpgroup_mma_wait(num_outstanding=0, deps=[s])
        nb, nsplit, nstart, nend, ntiles, nbt, go_on = _next_item(
            item + step, pid_b, split, start_n, end_n, bt_row, has_work, per_split, seqlens_ptr,
            block_table_ptr, stride_bt_b, s0, S_Q, NUM_SPLITS, BATCH, CAUSAL, BALANCE, PERSISTENT,
        )  # fmt: skip

        acc = gl.zeros([BQ, DH], gl.float32, layout=O_LAYOUT)
        l_i = gl.zeros([BQ], gl.float32, layout=ROW_S)
        num_pairs = gl.cdiv(num_tiles, 2)
        pad = 2 * num_pairs
        for i in range(num_pairs):
            b = 2 * i + 1
            cross = go_on & (i == num_pairs - 1)  # the next tile b + 2 is the next item's 1
            tile_n = start_n + b * BN
            _named_barrier(SCALE0_SYNC)
            m_a = m_s.load(ROW_S)
            scale0 = sc0_s.load(ROW_S)
            if b < num_tiles:
                s = _masked(s, tile_n, end_n)
                if LAZY:
                    p, scale1, rescale = _softmax_b_lazy(s, m_a, scale0, qk_scale_log2, m_s,
                                                         sc1_s, flag_s)  # fmt: skip
                else:
                    p, scale1 = _softmax_b(s, m_a, qk_scale_log2, m_s, sc1_s)
                    rescale = True
                scale = scale0 * scale1
                l_i = l_i * scale + gl.sum(p, axis=1)
                if rescale:
                    acc = acc * gl.convert_layout(scale, ROW_O)[:, None]
                # p_b for warpgroup 0 (in the q rope buffer: q's rope part is in registers now)
                p_b = p.to(dtype)
                q_pe.store(p_b)
                fence_async_shared()
                # o_R += p_b @ v_b[R] + (p_a scale1) @ v_a[R]
                p_op = gl.convert_layout(p_b, P_OP_LAYOUT)
                acc_f = hopper.warpgroup_mma(p_op, kv_r.index(_opaque(1)), acc, is_async=True)
                _named_barrier(P0_SYNC)
                acc_f = hopper.warpgroup_mma(p0_s, kv_r.index(_opaque(0)), acc_f, is_async=True)
                # p_b is stored and both products are issued: warpgroup 0's p_b @ v_b[L] and
                # next scores queue behind them (so v_a[R], which tile a + 2's right half
                # waits for, is read first)
                _named_barrier(P1_ARRIVE)
                p_op = hopper.warpgroup_mma_wait(num_outstanding=1, deps=[p_op])
                gl.thread_barrier()
                bt2, st2, t2, pr2 = _pick(b + 2, num_tiles, pad, bt_row, start_n, nbt, nstart,
                                          ntiles, go_on)  # fmt: skip
                _issue_right(kv_half_desc, kv_pe_desc, kv_r, kv_pe, ready_r, bt2, st2, t2, pr2,
                             PAGE_SIZE)  # fmt: skip
                acc = hopper.warpgroup_mma_wait(num_outstanding=0, deps=[acc_f])
            else:
                acc, l_i = _lone_tile_a(acc, l_i, scale0, sc1_s, p0_s, kv_r.index(_opaque(0)),
                                        flag_s, LAZY)  # fmt: skip
                # (slot 1's right half is free: the next item's tile 1 may come in)
                bt2, st2, t2, pr2 = _pick(b + 2, num_tiles, pad, bt_row, start_n, nbt, nstart,
                                          ntiles, go_on)  # fmt: skip
                _issue_right(kv_half_desc, kv_pe_desc, kv_r, kv_pe, ready_r, bt2, st2, t2, pr2,
                             PAGE_SIZE)  # fmt: skip
            gl.thread_barrier()
            bt1, st1, t1, pr1 = _pick(b + 1, num_tiles, pad, bt_row, start_n, nbt, nstart,
                                      ntiles, go_on)  # fmt: skip
            _issue_right(kv_half_desc, kv_pe_desc, kv_r, kv_pe, ready_r, bt1, st1, t1, pr1,
                         PAGE_SIZE)  # fmt: skip
            if (b + 2 < num_tiles) | (cross & (ntiles > 1)):
                # tile b + 2's scores (the next item's tile 1: with the next q)
                nxt = gl.where(cross, base1 + num_tiles // 2, base1 + i + 1) & 1
                valid = gl.where(cross, nend - nstart - BN, end_n - tile_n - 2 * BN)
                if cross:
                    mbarrier.wait(q_bar, q_ph ^ 1)
                    q_pe_op = _rope_of_next(q_pe, qpe_bar, q_ph ^ 1)
                _zero_if_tail(kv_l, kv_r, ready_l, ready_r, 1, nxt, valid, TILE_LAYOUT)
                s = gl.zeros([BQ, BN], gl.float32, layout=S_LAYOUT)
                s = _scores_right(s, q_lat, q_pe_op, kv_r, kv_pe, ready_r, _opaque(1), nxt)
                s = _scores_left(s, q_lat, kv_l, ready_l, _opaque(1), nxt)
                s = hopper.warpgroup_mma_wait(num_outstanding=0, deps=[s])

        _store_half(acc, l_i, l_s, o_ptr, pid_b, split, s0, h0, stride_o_b, stride_o_s,
                    stride_o_h, stride_o_split, has_work | (NUM_SPLITS == 1), has_work, 1.0,
                    1)  # fmt: skip
        base1 += num_tiles // 2
        q_ph = q_ph ^ has_work.to(gl.int32)
        ready = go_on.to(gl.int32)
        pid_b, split, start_n, end_n, num_tiles, bt_row = nb, nsplit, nstart, nend, ntiles, nbt


@gluon.jit
def _seesaw_buffers(q_half_desc, q_pe_desc, kv_half_desc, kv_pe_desc):
    """The shared memory both seesaw kernels have, in the cache's dtype: q (two latent halves
    and the rope part), the two slots' column blocks, the hand-off row vectors and the ready
    barriers (initialised and fenced). Returns ``(q_lat, q_pe, kv_l, kv_r, kv_pe, m_s, sc0_s,
    sc1_s, l_s, q_bar, ready_l, ready_r)``; each kernel adds its ``p`` buffers."""
    dtype: gl.constexpr = q_half_desc.dtype
    BQ: gl.constexpr = q_half_desc.block_type.shape[0]
    DH: gl.constexpr = q_half_desc.block_type.shape[1]
    DPE: gl.constexpr = q_pe_desc.block_type.shape[1]
    BN: gl.constexpr = kv_half_desc.block_type.shape[0]
    vec_layout: gl.constexpr = gl.SwizzledSharedLayout(1, 1, 1, [0])
    q_lat = gl.allocate_shared_memory(dtype, [2, BQ, DH], q_half_desc.layout)  # two halves
    q_pe = gl.allocate_shared_memory(dtype, [BQ, DPE], q_pe_desc.layout)
    kv_l = gl.allocate_shared_memory(dtype, [2, BN, DH], kv_half_desc.layout)
    kv_r = gl.allocate_shared_memory(dtype, [2, BN, DH], kv_half_desc.layout)
    kv_pe = gl.allocate_shared_memory(dtype, [2, BN, DPE], kv_pe_desc.layout)
    m_s = gl.allocate_shared_memory(gl.float32, [BQ], vec_layout)
    sc0_s = gl.allocate_shared_memory(gl.float32, [BQ], vec_layout)
    sc1_s = gl.allocate_shared_memory(gl.float32, [BQ], vec_layout)
    l_s = gl.allocate_shared_memory(gl.float32, [2 * BQ], vec_layout)
    q_bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    ready_l = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    ready_r = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    mbarrier.init(q_bar, count=1)
    for k in gl.static_range(2):
        mbarrier.init(ready_l.index(k), count=1)
        mbarrier.init(ready_r.index(k), count=1)
    fence_async_shared()
    return q_lat, q_pe, kv_l, kv_r, kv_pe, m_s, sc0_s, sc1_s, l_s, q_bar, ready_l, ready_r


@gluon.jit
def _mla_decode_seesaw_kernel(
    q_ptr,  # noqa: ARG001 (the Gluon decode kernels' shared leading arguments; 16-bit only)
    q_half_desc, q_pe_desc, kv_half_desc, kv_pe_desc, block_table_ptr, seqlens_ptr, o_ptr,
    lse_ptr,
    kv_scale_ptr,  # noqa: ARG001
    qk_scale_log2, stride_bt_b, stride_o_b, stride_o_s, stride_o_h, stride_o_split,
    stride_lse_b, stride_lse_s, stride_lse_h, stride_lse_split, S_Q, H, NUM_SPLITS,
    BATCH, WAVE,  # balanced splits: the batch size, the programs of one split the GPU holds
    PAGE_SIZE: gl.constexpr, CAUSAL: gl.constexpr, BALANCE: gl.constexpr,
    PERSISTENT: gl.constexpr, LAZY: gl.constexpr,
):  # fmt: skip
    gdc_enter(NUM_SPLITS)
    q_lat, q_pe, kv_l, kv_r, kv_pe, m_s, sc0_s, sc1_s, l_s, q_bar, ready_l, ready_r = (
        _seesaw_buffers(q_half_desc, q_pe_desc, kv_half_desc, kv_pe_desc)
    )
    # p_a (warpgroup 0 -> 1); warpgroup 1's p_b goes through q's rope buffer
    p0_s = gl.allocate_shared_memory(q_half_desc.dtype, [BQ, BN], q_pe_desc.layout)
    # lazy rescaling: warpgroup 1 -> 0, whether a row's max moved in the pair
    flag_s = gl.allocate_shared_memory(gl.float32, [1], gl.SwizzledSharedLayout(1, 1, 1, [0]))
    # q's rope part comes in on its own barrier (q_bar: the latent halves)
    qpe_bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    mbarrier.init(qpe_bar, count=1)
    fence_async_shared()

    gl.warp_specialize(
        [
            (_wg0, (
                q_lat, q_pe, kv_l, kv_r, kv_pe, p0_s, flag_s, m_s, sc0_s, sc1_s, l_s, q_bar,
                qpe_bar,
                ready_l, ready_r, q_half_desc, q_pe_desc, kv_half_desc, block_table_ptr,
                seqlens_ptr, o_ptr, lse_ptr, qk_scale_log2, stride_bt_b, stride_o_b, stride_o_s,
                stride_o_h, stride_o_split, stride_lse_b, stride_lse_s, stride_lse_h,
                stride_lse_split, S_Q, H, NUM_SPLITS, BATCH, WAVE, PAGE_SIZE, CAUSAL, BALANCE,
                PERSISTENT, LAZY)),
            (_wg1, (
                q_lat, q_pe, kv_l, kv_r, kv_pe, p0_s, flag_s, m_s, sc0_s, sc1_s, l_s, q_bar,
                qpe_bar,
                ready_l, ready_r, kv_half_desc, kv_pe_desc, block_table_ptr, seqlens_ptr, o_ptr,
                qk_scale_log2, stride_bt_b, stride_o_b, stride_o_s, stride_o_h, stride_o_split,
                S_Q, H, NUM_SPLITS, BATCH, WAVE, PAGE_SIZE, CAUSAL, BALANCE, PERSISTENT, LAZY)),
        ],
        [4],
        [240],
    )  # fmt: skip


def seesaw_decode_eligible(args: DecodeArgs, cfg: DecodeConfig) -> bool:
    """True when this call runs this kernel: its config (``KNOBS``), a 16-bit cache and a
    suitable shape."""
    knobs = (cfg.block_size_q, cfg.block_size_k, cfg.num_warps, cfg.num_stages)
    return (
        knobs == KNOBS
        and args.kv_scale is None
        and args.kv_cache.dtype == args.q.dtype
        and sm90_many_heads_call(args)
    )


def launch_seesaw_decode(
    args: DecodeArgs,
    num_splits: int,
    out: SplitOutputs,
) -> Any:
    """Launch the kernel into ``out`` (final output or split partials).

    With several splits and sequences, the splits are sized from the batch's total work
    (``_per_split``; ``num_splits`` is then the most one sequence gets) and every (sequence,
    split) item has its program. Otherwise, with more items than a row block's programs fit
    the GPU at once (``WAVE``), the grid is persistent: ``WAVE`` programs a row block, each
    taking every ``WAVE``-th item and loading the next item's q and first tiles under its
    current item's last pair.
    """
    split_args = seesaw_split_args(args, num_splits)
    programs = _persistent_programs(split_args, num_splits)
    return launch_decode_kernel(
        _mla_decode_seesaw_kernel, args, num_splits, out, rows=BLOCK_Q, block_n=BLOCK_N,
        num_warps=4, lat_cols=HALF, programs=programs, PERSISTENT=programs is not None,
        LAZY=LAZY_RESCALE and num_splits == 1, **split_args,
    )  # fmt: skip


def persistent_programs(args: DecodeArgs, num_splits: int) -> int | None:
    """The programs a row block of a persistent launch has (``WAVE``: as many as fit the GPU
    at once), or None: one program an item. Persistent when the (sequence, split) items
    outnumber them and the splits are not balanced (balanced splits fit one wave)."""
    return _persistent_programs(seesaw_split_args(args, num_splits), num_splits)


def _persistent_programs(split_args: dict[str, Any], num_splits: int) -> int | None:
    """``persistent_programs`` from the launch's ``seesaw_split_args``."""
    batch, wave = split_args["extra"][:2]
    persistent = not split_args["BALANCE"] and batch * num_splits > wave
    return wave if persistent else None


def seesaw_split_args(args: DecodeArgs, num_splits: int, *extra: Any) -> dict[str, Any]:
    """The seesaw kernels' split arguments for ``launch_decode_kernel``: ``extra`` = (the
    batch size, ``WAVE``: the programs of one split the GPU holds, then ``extra``) and
    ``BALANCE`` (splits sized from the batch's total work, ``_per_split``: with several splits
    and sequences)."""
    batch, s_q, h_q, _ = args.q.shape
    sm_count = limits_for(args.q.device).sm_count  # (the CPU compile report: the interpreter's)
    wave = max(1, sm_count // (s_q * h_q // BLOCK_Q))
    return {
        "extra": (batch, wave, *extra),
        "BALANCE": BALANCE_SPLITS and num_splits > 1 and batch > 1,
    }


__all__ = [
    "KNOBS",
    "launch_seesaw_decode",
    "persistent_programs",
    "seesaw_decode_eligible",
    "seesaw_split_args",
]
