"""MLA decode for Hopper (sm_90) in Gluon: the QK^T work split across the two warpgroups.

Why a second kernel: in the Triton kernel (``mla_decode.py``), Triton lays out every dot whose
result feeds another dot (the scores feed ``p @ v``) with all warps along the rows. A 64-row block
with 8 warps then *replicates* the 64 x 64 score tile in both warpgroups: each computes the whole
``q @ k^T`` (576-deep, 53 % of the FLOPs) as two 32-wide wgmma chains that each re-read q from
shared memory (SASS: 72 ``HGMMA.64x32x16`` per tile instead of 36). Gluon states the layouts
explicitly, so here the score tile is split along the tokens (warpgroup w computes columns
``32 w .. 32 w + 31``), the row max and sum are reduced across the two warpgroups, and ``p`` goes
through shared memory to the ``p @ v`` wgmma, where warpgroup w computes output columns
``256 w .. 256 w + 255``. This is FlashMLA's division of the work (without its warp-specialised
overlap of softmax and MMA).

Scope (``hopper_decode_eligible``): sm_90, fp16/bf16 q and KV, one KV head, ``head_dim_v`` 512 +
rope 64, ``h_q`` a multiple of 64, pages holding whole 64-token tiles, contiguous q, config
``64 x 64, 8 warps, 2 stages``. Everything else runs the Triton kernel.

Per program (64 query rows = 64 heads of one query token, one KV split): q (64 x 576) is copied
to shared memory once by TMA; KV tiles (64 tokens x 576, 72 KB) go through a two-slot TMA ring
with an mbarrier per slot; per tile: ``s = q @ k^T`` (wgmma, async, then wait), masked only on the
sequence's last tile (whose slots past the end are zeroed in shared memory first: the cache may
hold NaN there), online softmax in base 2, ``p`` (64 x 64) stored to shared memory, ``o = o * alpha
+ p @ v`` (wgmma), then the freed slot is refilled with tile ``j + 2``. Shared memory: q 72 KB +
two KV slots 144 KB + p 8 KB = 224 KB of the 227 KB a block may use.

Layouts as in ``mla_decode.py``: q [B, S, H, 576]; kv_cache [pages, P, 1, 576]; out [B, S, H, 512]
(or fp32 split partials [B, S, H, splits, 512] + lse [B, S, H, splits]); lse natural log.
"""

from __future__ import annotations

from typing import Any

from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia import hopper
from triton.experimental.gluon.language.nvidia.hopper import fence_async_shared, mbarrier, tma

from .configs import DecodeConfig
from .decode_checks import DecodeArgs
from .gluon_launch import SplitOutputs, launch_decode_kernel, sm90_mla_call
from .pdl import gdc_enter

BLOCK_Q = 64
BLOCK_N = 64
NUM_WARPS = 8
DEFER_PV = True
"""Let tile j's ``p @ v`` run behind tile j + 1's scores (refilling the slot later)."""


@gluon.jit
def _zero_tail_rows(buf, valid_rows, layout: gl.constexpr):
    """Zero the rows of a KV tile in shared memory at or past ``valid_rows`` (a tail tile).

    In 64-column slices (one 128-byte swizzle row of a 16-bit tile): a whole 64 x 512 tile in
    registers at once would raise the kernel's register peak (and spill) for a rare path.
    """
    COLS: gl.constexpr = buf.shape[1]
    STEP: gl.constexpr = 64 if COLS > 64 else COLS
    rows = gl.arange(0, buf.shape[0], layout=gl.SliceLayout(1, layout))
    for c in gl.static_range(COLS // STEP):
        part = buf.slice(c * STEP, STEP, dim=1)
        tile = part.load(layout)
        part.store(gl.where((rows < valid_rows)[:, None], tile, gl.zeros_like(tile)))


@gluon.jit
def _upcast_rows(src, dst, valid_rows, layout: gl.constexpr):
    """Copy an fp8 KV tile to ``dst`` (fp16, exact), zeroing rows >= ``valid_rows``.

    The native conversion (``cvt.rn.f16x2.e4m3x2``, SASS ``F2FP.F16.E4M3.UNPACK_B``: one
    instruction per two values; every e4m3 value is an fp16 one). It replaced a bit-level
    upcast (four integer instructions per two values: 128 x 128 x 4K 562.5 -> 501.8 us on the
    H200, NOTES.md variant 21); e4m3 goes to bf16 only through fp16 and a slow second
    conversion, so the dots run in fp16. Works in [rows, 128]-column slices (one 128-byte
    swizzle atom of fp8) to bound registers.
    """
    COLS: gl.constexpr = src.shape[1]
    STEP: gl.constexpr = 128 if COLS > 128 else COLS
    for c in gl.static_range(COLS // STEP):
        wide = src.slice(c * STEP, STEP, dim=1).load(layout).to(gl.float16)
        rows = gl.arange(0, wide.shape[0], layout=gl.SliceLayout(1, layout))
        wide = gl.where((rows < valid_rows)[:, None], wide, gl.zeros_like(wide))
        dst.slice(c * STEP, STEP, dim=1).store(wide)


@gluon.jit
def _copy_q_rows(q_ptr, q_row, dst, COL0: gl.constexpr, layout: gl.constexpr):
    """Rows ``q_row ..`` of q ([rows, D_QK] contiguous), columns ``COL0 ..``, into ``dst``."""
    ROWS: gl.constexpr = dst.shape[0]
    COLS: gl.constexpr = dst.shape[1]
    STEP: gl.constexpr = 128 if COLS > 128 else COLS
    D_QK: gl.constexpr = 576
    rows = gl.arange(0, ROWS, layout=gl.SliceLayout(1, layout))
    cols = gl.arange(0, STEP, layout=gl.SliceLayout(0, layout))
    base = q_ptr + (q_row + rows).to(gl.int64)[:, None] * D_QK + COL0
    for c in gl.static_range(COLS // STEP):
        tile = gl.load(base + (c * STEP + cols)[None, :])
        dst.slice(c * STEP, STEP, dim=1).store(tile.to(dst.dtype))


@gluon.jit
def _split_range(seqlens_ptr, pid_b, pid_split, s0, S_Q, NUM_SPLITS, BN: gl.constexpr,
                 CAUSAL: gl.constexpr):  # fmt: skip
    """Tokens [start_n, end_n) of this program's KV split and its count of BN-token tiles.

    Splits hold whole 64-token groups (so a split never cuts a page-aligned 64-token tile);
    with ``CAUSAL`` every row of the block is query token ``s0``, which sees positions below
    ``seqlen - S_Q + s0 + 1``.
    """
    seqlen = gl.load(seqlens_ptr + pid_b)
    split_len = gl.cdiv(gl.cdiv(seqlen, NUM_SPLITS), 64) * 64
    return _range_of_split(seqlen, split_len, pid_split, s0, S_Q, BN, CAUSAL)


@gluon.jit
def _range_of_split(seqlen, split_len, pid_split, s0, S_Q, BN: gl.constexpr,
                    CAUSAL: gl.constexpr):  # fmt: skip
    """Split ``pid_split`` of a sequence of ``seqlen`` tokens cut into ``split_len``-token
    splits (a multiple of 64): ``(start_n, end_n, num_tiles)`` as ``_split_range``."""
    start_n = pid_split * split_len
    end_n = gl.minimum(start_n + split_len, seqlen)
    if CAUSAL:
        end_n = gl.minimum(end_n, seqlen - S_Q + s0 + 1)
    num_tiles = gl.maximum(gl.cdiv(end_n - start_n, BN), 0)
    return start_n, end_n, num_tiles


@gluon.jit
def _issue_tile(
    kv_lat_desc, kv_pe_desc, kv_lat, kv_pe, kv_bar, bt_row, start_n, tile, slot, issue,
    PAGE_SIZE: gl.constexpr,
):  # fmt: skip
    """Start the TMA copies of KV tile ``tile`` of the split into ring slot ``slot`` (if issue)."""
    tile_n = start_n + tile * kv_lat_desc.block_type.shape[0]
    page = gl.load(bt_row + tile_n // PAGE_SIZE, mask=issue, other=0)
    _copy_tile_at(kv_lat_desc, kv_pe_desc, kv_lat, kv_pe, kv_bar, page, tile_n, slot, issue,
                  PAGE_SIZE)  # fmt: skip


@gluon.jit
def _copy_tile_at(
    kv_lat_desc, kv_pe_desc, kv_lat, kv_pe, kv_bar, page, tile_n, slot, issue,
    PAGE_SIZE: gl.constexpr,
):  # fmt: skip
    """Start the TMA copies of the KV tile at token ``tile_n``, whose block-table entry is
    ``page`` (loaded by the caller), into ring slot ``slot`` (if issue)."""
    DV: gl.constexpr = kv_lat_desc.block_type.shape[1]
    kv_bytes: gl.constexpr = kv_lat_desc.block_type.nbytes + kv_pe_desc.block_type.nbytes
    kv_row = page * PAGE_SIZE + tile_n % PAGE_SIZE
    bar = kv_bar.index(slot)
    mbarrier.expect(bar, kv_bytes, pred=issue)
    tma.async_copy_global_to_shared(kv_lat_desc, [kv_row, 0], bar, kv_lat.index(slot), pred=issue)
    tma.async_copy_global_to_shared(kv_pe_desc, [kv_row, DV], bar, kv_pe.index(slot), pred=issue)


@gluon.jit
def _mla_decode_hopper_kernel(
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
    PAGE_SIZE: gl.constexpr,
    CAUSAL: gl.constexpr,
    DEFER_PV: gl.constexpr,
    KV_FP8: gl.constexpr,
):
    gdc_enter(NUM_SPLITS)
    # the dots' dtype: q's; with an fp8 cache fp16 (the exact fp8 upcast is to fp16)
    dtype: gl.constexpr = gl.float16 if KV_FP8 else q_lat_desc.dtype
    kv_dtype: gl.constexpr = kv_lat_desc.dtype
    BQ: gl.constexpr = q_lat_desc.block_type.shape[0]
    DV: gl.constexpr = q_lat_desc.block_type.shape[1]
    DPE: gl.constexpr = q_pe_desc.block_type.shape[1]
    BN: gl.constexpr = kv_lat_desc.block_type.shape[0]
    # scores [BQ, BN]: warps 4 (rows) x 2 (tokens), each warpgroup a 64 x BN/2 wgmma
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(
        version=[3, 0], warps_per_cta=[4, 2], instr_shape=[16, BN // 2, 16]
    )
    # output [BQ, DV]: each warpgroup a 64 x DV/2 wgmma
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(
        version=[3, 0], warps_per_cta=[4, 2], instr_shape=[16, DV // 2, 16]
    )
    tile_layout: gl.constexpr = gl.BlockedLayout([1, 8], [4, 8], [8, 1], [1, 0])
    # fp8 upcast: 8 values a thread, 16 lanes along a 128-column row: each group of 8 lanes
    # reads (8 B each) and writes (16 B each) one whole 128-byte swizzle row: no bank conflicts
    cvt_layout: gl.constexpr = gl.BlockedLayout([1, 8], [2, 16], [8, 1], [1, 0])
    p_smem_layout: gl.constexpr = gl.NVMMASharedLayout.get_default_for([BQ, BN], dtype)

    pid_q = gl.program_id(0)
    pid_split = gl.program_id(1)
    pid_b = gl.program_id(2)
    row0 = pid_q * BQ  # first row of the block; rows are (token s, head h), H % BQ == 0
    s0 = row0 // H
    h0 = row0 % H

    start_n, end_n, num_tiles = _split_range(seqlens_ptr, pid_b, pid_split, s0, S_Q, NUM_SPLITS,
                                             BN, CAUSAL)  # fmt: skip

    q_lat = gl.allocate_shared_memory(
        dtype, [BQ, DV], gl.NVMMASharedLayout.get_default_for([BQ, DV], dtype)
    )
    q_pe = gl.allocate_shared_memory(
        dtype, [BQ, DPE], gl.NVMMASharedLayout.get_default_for([BQ, DPE], dtype)
    )
    kv_lat = gl.allocate_shared_memory(kv_dtype, [2, BN, DV], kv_lat_desc.layout)
    kv_pe = gl.allocate_shared_memory(kv_dtype, [2, BN, DPE], kv_pe_desc.layout)
    if KV_FP8:
        # the dots read a q-dtype copy of the current tile (fp8 -> bf16/fp16 is exact)
        work_lat = gl.allocate_shared_memory(
            dtype, [BN, DV], gl.NVMMASharedLayout.get_default_for([BN, DV], dtype)
        )
        work_pe = gl.allocate_shared_memory(
            dtype, [BN, DPE], gl.NVMMASharedLayout.get_default_for([BN, DPE], dtype)
        )
    p_smem = gl.allocate_shared_memory(dtype, [BQ, BN], p_smem_layout)
    q_bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    kv_bar = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    mbarrier.init(q_bar, count=1)
    mbarrier.init(kv_bar.index(0), count=1)
    mbarrier.init(kv_bar.index(1), count=1)
    fence_async_shared()

    q_row = (pid_b * S_Q + s0) * H + h0
    if KV_FP8:
        # q -> fp16 once, through registers (fp16 keeps 3 more mantissa bits than bf16)
        _copy_q_rows(q_ptr, q_row, q_lat, 0, cvt_layout)
        _copy_q_rows(q_ptr, q_row, q_pe, DV, cvt_layout)
        fence_async_shared()
        gl.thread_barrier()
    else:
        mbarrier.expect(q_bar, q_lat_desc.block_type.nbytes + q_pe_desc.block_type.nbytes)
        tma.async_copy_global_to_shared(q_lat_desc, [q_row, 0], q_bar, q_lat)
        tma.async_copy_global_to_shared(q_pe_desc, [q_row, DV], q_bar, q_pe)

    bt_row = block_table_ptr + pid_b * stride_bt_b
    for first in gl.static_range(2):
        _issue_tile(kv_lat_desc, kv_pe_desc, kv_lat, kv_pe, kv_bar, bt_row, start_n, first,
                    first, first < num_tiles, PAGE_SIZE)  # fmt: skip

    if KV_FP8:
        kv_scale = gl.load(kv_scale_ptr)  # keys/values are stored / scale
        qk_scale_log2 = qk_scale_log2 * kv_scale
    row_layout: gl.constexpr = gl.SliceLayout(1, s_layout)
    m_i = gl.full([BQ], float("-inf"), gl.float32, layout=row_layout)
    l_i = gl.zeros([BQ], gl.float32, layout=row_layout)
    acc = gl.zeros([BQ, DV], gl.float32, layout=o_layout)
    if DEFER_PV:
        acc = hopper.warpgroup_mma_init(acc)  # loop-carried as an in-flight accumulator
    offs_n = gl.arange(0, BN, layout=gl.SliceLayout(0, s_layout))
    if not KV_FP8:
        mbarrier.wait(q_bar, 0)

    for j in range(num_tiles):
        slot = j % 2
        tile_n = start_n + j * BN
        mbarrier.wait(kv_bar.index(slot), (j // 2) & 1)
        is_tail = tile_n + BN > end_n
        if KV_FP8:
            # upcast the tile into the working copy (zeroing slots past the split's end), then
            # hand the fp8 slot straight back to the copy engine for tile j + 2
            _upcast_rows(kv_lat.index(slot), work_lat, end_n - tile_n, cvt_layout)
            _upcast_rows(kv_pe.index(slot), work_pe, end_n - tile_n, cvt_layout)
            fence_async_shared()
            gl.thread_barrier()
            _issue_tile(kv_lat_desc, kv_pe_desc, kv_lat, kv_pe, kv_bar, bt_row, start_n,
                        j + 2, slot, j + 2 < num_tiles, PAGE_SIZE)  # fmt: skip
            k_lat = work_lat
            k_pe = work_pe
        else:
            k_lat = kv_lat.index(slot)
            k_pe = kv_pe.index(slot)
            if is_tail:
                # slots past the split's end hold other tokens or garbage (NaN): p is 0 there,
                # but 0 * NaN is NaN in p @ v, so zero those rows first
                _zero_tail_rows(k_lat, end_n - tile_n, tile_layout)
                _zero_tail_rows(k_pe, end_n - tile_n, tile_layout)
                fence_async_shared()
                gl.thread_barrier()
        s = gl.zeros([BQ, BN], gl.float32, layout=s_layout)
        s = hopper.warpgroup_mma(q_lat, k_lat.permute((1, 0)), s, is_async=True)
        s = hopper.warpgroup_mma(q_pe, k_pe.permute((1, 0)), s, is_async=True)
        if DEFER_PV:
            # the previous tile's p @ v ran behind this tile's scores: wait for both, then
            # refill the previous tile's slot with tile j + 1
            s, acc = hopper.warpgroup_mma_wait(num_outstanding=0, deps=[s, acc])
            gl.thread_barrier()
            _issue_tile(kv_lat_desc, kv_pe_desc, kv_lat, kv_pe, kv_bar, bt_row, start_n,
                        j + 1, (j + 1) % 2, (j + 1 < num_tiles) & (j > 0), PAGE_SIZE)  # fmt: skip
        else:
            s = hopper.warpgroup_mma_wait(num_outstanding=0, deps=[s])
        s = s * qk_scale_log2
        if is_tail:
            s = gl.where((tile_n + offs_n < end_n)[None, :], s, float("-inf"))
        m_new = gl.maximum(m_i, gl.max(s, axis=1))  # the tile holds >= 1 valid token: finite
        alpha = gl.exp2(m_i - m_new)
        p = gl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + gl.sum(p, axis=1)
        m_i = m_new
        p_smem.store(p.to(dtype))
        fence_async_shared()
        gl.thread_barrier()  # both warpgroups' halves of p are in shared memory
        acc = acc * gl.convert_layout(alpha, gl.SliceLayout(1, o_layout))[:, None]
        acc = hopper.warpgroup_mma(p_smem, k_lat, acc, is_async=True)
        if not DEFER_PV:
            acc = hopper.warpgroup_mma_wait(num_outstanding=0, deps=[acc])
            gl.thread_barrier()  # both warpgroups are done with this tile and with p
            if not KV_FP8:  # (fp8: the slot went back right after the upcast)
                _issue_tile(kv_lat_desc, kv_pe_desc, kv_lat, kv_pe, kv_bar, bt_row, start_n,
                            j + 2, slot, j + 2 < num_tiles, PAGE_SIZE)  # fmt: skip
    if DEFER_PV:
        acc = hopper.warpgroup_mma_wait(num_outstanding=0, deps=[acc])

    mbarrier.invalidate(q_bar)
    mbarrier.invalidate(kv_bar.index(0))
    mbarrier.invalidate(kv_bar.index(1))

    empty = l_i == 0.0
    l_safe = gl.where(empty, 1.0, l_i)
    lse = gl.where(empty, float("-inf"), (m_i + gl.log2(l_safe)) * 0.6931471805599453)
    inv_l = 1.0 / l_safe
    if KV_FP8:
        inv_l = inv_l * kv_scale
    out_scale = gl.convert_layout(inv_l, gl.SliceLayout(1, o_layout))
    acc = acc * out_scale[:, None]

    offs_r = gl.arange(0, BQ, layout=gl.SliceLayout(1, o_layout))
    offs_d = gl.arange(0, DV, layout=gl.SliceLayout(0, o_layout))
    o_base = o_ptr + pid_b * stride_o_b + s0 * stride_o_s + pid_split * stride_o_split
    o_ptrs = o_base + (h0 + offs_r)[:, None] * stride_o_h + offs_d[None, :]
    gl.store(o_ptrs, acc.to(o_ptr.dtype.element_ty))
    offs_l = gl.arange(0, BQ, layout=row_layout)
    lse_base = lse_ptr + pid_b * stride_lse_b + s0 * stride_lse_s + pid_split * stride_lse_split
    gl.store(lse_base + (h0 + offs_l) * stride_lse_h, lse)


def sm90_many_heads_call(args: DecodeArgs) -> bool:
    """The call's shape suits the sm_90 Gluon kernels for 64+ heads (whatever the config)."""
    return sm90_mla_call(args, BLOCK_Q)


def hopper_decode_eligible(args: DecodeArgs, cfg: DecodeConfig) -> bool:
    """True when this call runs this (lockstep) kernel: its config and a suitable shape."""
    knobs = (cfg.block_size_q, cfg.block_size_k, cfg.num_warps, cfg.num_stages)
    return knobs == (BLOCK_Q, BLOCK_N, NUM_WARPS, 2) and sm90_many_heads_call(args)


def launch_hopper_decode(
    args: DecodeArgs,
    num_splits: int,
    out: SplitOutputs,
) -> Any:
    """Launch the Gluon kernel into ``out`` (final output or split partials)."""
    fp8 = args.kv_scale is not None
    return launch_decode_kernel(
        _mla_decode_hopper_kernel, args, num_splits, out, rows=BLOCK_Q, block_n=BLOCK_N,
        num_warps=NUM_WARPS,
        DEFER_PV=DEFER_PV and not fp8,  # fp8: the working copy is rewritten every tile
        KV_FP8=fp8,
    )  # fmt: skip


__all__ = ["hopper_decode_eligible", "launch_hopper_decode", "sm90_many_heads_call"]
