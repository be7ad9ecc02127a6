"""MLA decode for Hopper (sm_90) in Gluon: fp8 q over an fp8 cache on fp8 tensor cores.

The other fp8 kernels (``mla_decode_hopper_few_fp8``) keep q in 16 bits and upcast every
cache tile to fp16 in shared memory, because wgmma takes fp8 only with both operands fp8 and
K-major, and ``v^T`` is not K-major. That upcast (a 72 KB fp16 working tile written per tile)
and the fp16 wgmma cost as much as the bytes fp8 saves. Here the caller has quantised q to fp8
(``q_scale``, FlashMLA's fp8 interface), so both products run as fp8 wgmma (m64n16k32):

- scores, transposed: ``s^T [64 tokens, 16 heads] = k [64, 576] @ q^T`` straight from the TMA
  ring slot (k is K-major as stored; q in shared memory, K-major as stored);
- output, transposed: ``o^T [512, 16] += v^T [512, 64] @ p^T [64, 16]``, where ``v^T`` is the
  tile's latent part transposed into its own fp8 buffer (``vt``, tokens contiguous: K-major)
  and ``p^T`` is ``p x 256`` in fp8 (values in [0, 256]: e4m3 keeps 3 mantissa bits down to
  2^-6 x 256; the factor is divided out with the row sums).

Partitions (``gl.warp_specialize``):

- the *producer* (worker, 4 warps) keeps a ``STAGES``-deep TMA ring of fp8 tiles (36 KB each)
  in flight and transposes each landed tile's latent part into ``vt[j % 2]``: the tile as
  32-bit words, sixteen 16-byte loads a thread, 4 x 4 byte blocks transposed by ``prmt``
  (inline PTX, 8 per 16 bytes), sixteen 16-byte stores. ``vt`` holds the features in a
  permuted row order (``_transpose_words``) that keeps both the loads and the stores free of
  bank conflicts; the output is put back in feature order at the end. The rows of a tail tile
  past the sequence's end are zeroed (the cache may hold NaN there). It refills tile ``j``'s
  slot once the tile's scores are done (``k_free``), loading the page index before its waits.
- the *consumer* (default partition, 4 warps) runs the scores, the online softmax (base 2,
  per head along the tokens, row sums kept per token) and ``o^T``, and writes the output
  through a free ``vt`` buffer (coalesced stores in feature order).

H200, 16 heads (docs/kernels/NOTES.md, variant 38): 46.8-50.7 / 46.8-50.7 / 26.1-26.2 us on
the three 16-head anchor rows over six runs on three machines, 1.51-1.63x the bf16 kernel
(76.3-76.8 / 76.5-76.8 / 40.7-40.9) and 1.49-1.60x the fp8 kernel with a 16-bit q.

Precision: q and p are rounded to e4m3; the fp8 wgmma accumulates into fp32 at the tensor
core's reduced fp8-path precision, without periodic promotion (as FlashMLA). Against the fp32
reference over the dequantised inputs the relative L2 error is 0.6-1.8e-2 on random inputs
(bf16 paths: ~2e-3): p's 3-bit mantissa.

Scope (``fp8_mma_eligible``): sm_90, q float8_e4m3fn with ``q_scale``, an fp8 cache with its
scale, one KV head, 512 + 64 dims, ``h_q`` a multiple of 16 and below 64, pages of whole
64-token tiles, contiguous q; config ``16 x 64, 8 warps`` (the fp8-cache configs), whose
``num_stages`` picks the ring depth (``RING_DEPTHS``).
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
from .mla_decode_hopper import _copy_tile_at
from .mla_decode_hopper_few import _program_split
from .mla_decode_hopper_few_fp8 import _block_rows, _start_ring
from .pdl import gdc_enter

ROWS = 16
BLOCK_N = 64
PART_WARPS = 4
KNOBS = (ROWS, BLOCK_N, 2 * PART_WARPS)
"""block_size_q, block_size_k, num_warps of this kernel's configs (the fp8-cache family's)."""
RING_DEPTHS = {1: 3, 2: 2, 3: 4}
"""The config's ``num_stages`` -> the TMA ring's depth. 1 (the fp8-cache default config): 3.
H200, 64 x 16 heads x 4K: 47.1 us with 3 or 2 tiles, 48.7 with 4; two computing warpgroups
on alternate tiles (a 12-warp variant) took 52.3."""
P_SCALE = 256.0  # p in [0, 1] is stored as p x 256 in e4m3 (max 448)

PART_WARPS_C = gl.constexpr(PART_WARPS)
P_SCALE_C = gl.constexpr(P_SCALE)
PRODUCER_REGS_C = gl.constexpr(216)  # a tile in registers twice (64 + 64 words): no spills

# The producer's view of a latent tile as 32-bit words [64 tokens, 128 words of 4 features]:
# 16 tokens x 4 words (16 bytes of a row) a thread; lanes 0-7 on eight 16-byte columns of a
# row (no bank conflict), then 4 token groups; warps along the features.
WORDS_LAYOUT = gl.constexpr(
    gl.DistributedLinearLayout(
        [[0, 1], [0, 2], [1, 0], [2, 0], [4, 0], [8, 0]],
        [[0, 4], [0, 8], [0, 16], [16, 0], [32, 0]],
        [[0, 32], [0, 64]],
        [],
        [64, 128],
    )
)
# a ring slot's and a v^T buffer's NVMMA layouts (128- and 64-byte swizzles) over 32-bit words
WORDS_SHARED = gl.constexpr(gl.NVMMASharedLayout(swizzle_byte_width=128, element_bitwidth=32))
VT_WORDS_SHARED = gl.constexpr(gl.NVMMASharedLayout(swizzle_byte_width=64, element_bitwidth=32))
# s^T [64 tokens, 16 heads] and o^T [512, 16]: one warpgroup, 64-row fp8 wgmma tiles
S_LAYOUT = gl.constexpr(
    gl.NVMMADistributedLayout(
        version=[3, 0], warps_per_cta=[PART_WARPS, 1], instr_shape=[16, ROWS, 32]
    )
)
HEAD_LAYOUT = gl.constexpr(gl.SliceLayout(0, S_LAYOUT))
# the 4 warps' maxima [4, 16 heads] as loaded from ``red``: every thread holds the 4 values of
# each of its heads, the heads distributed as in S_LAYOUT's columns (so the max over the warps
# lands in HEAD_LAYOUT without data movement)
RED_LAYOUT = gl.constexpr(
    gl.DistributedLinearLayout(
        [[0, 1], [0, 8], [1, 0], [2, 0]],
        [[0, 2], [0, 4], [0, 0], [0, 0], [0, 0]],
        [[0, 0], [0, 0]],
        [],
        [PART_WARPS, ROWS],
    )
)
STAGE_SHARED = gl.constexpr(gl.SwizzledSharedLayout(1, 1, 1, order=[1, 0]))
# the output in feature order [32 feature groups g, 16 features f, 16 heads]: a warp writes
# 128 consecutive features (8 groups x 16) of one head
OUT_LAYOUT = gl.constexpr(gl.BlockedLayout([1, 4, 1], [8, 4, 1], [1, 1, PART_WARPS], [1, 0, 2]))


@gluon.jit
def _transpose_words(raw):
    """``raw`` (int32 [64 tokens, 128 words], a word = 4 features of a token) -> v^T as words
    (int32 [512, 16], a word = 4 tokens of a feature; row 32 f + g holds feature 16 g + f, so
    that a 16-byte store puts lanes 0-7 on consecutive rows: no bank conflict). Each 4 x 4 byte
    block is transposed by 8 ``prmt`` in registers; the reshapes only relabel registers."""
    quads = raw.reshape([16, 4, 128]).permute((0, 2, 1))  # [token quad, word, token in quad]
    pair_lo, pair_hi = gl.split(quads.reshape([16, 128, 2, 2]).permute((0, 1, 3, 2)))
    a0, a1 = gl.split(pair_lo)
    a2, a3 = gl.split(pair_hi)
    b0, b1, b2, b3 = gl.inline_asm_elementwise(
        """
        {
        .reg .b32 x0, x1, y0, y1;
        prmt.b32 x0, $4, $5, 0x5140;
        prmt.b32 x1, $4, $5, 0x7362;
        prmt.b32 y0, $6, $7, 0x5140;
        prmt.b32 y1, $6, $7, 0x7362;
        prmt.b32 $0, x0, y0, 0x5410;
        prmt.b32 $1, x0, y0, 0x7632;
        prmt.b32 $2, x1, y1, 0x5410;
        prmt.b32 $3, x1, y1, 0x7632;
        }
        """,
        "=r,=r,=r,=r,r,r,r,r",
        [a0, a1, a2, a3],
        dtype=(gl.int32, gl.int32, gl.int32, gl.int32),
        is_pure=True,
        pack=1,
    )
    # b_j: feature 4 w + j of the quad's 4 tokens -> [quad, 512 features] -> [512, quad]
    feats = gl.join(gl.join(b0, b1), gl.join(b2, b3)).permute((0, 1, 3, 2))
    flipped = feats.reshape([16, 512]).permute((1, 0))
    return flipped.reshape([32, 16, 16]).permute((1, 0, 2)).reshape([512, 16])


@gluon.jit
def _producer(kv_lat_desc, kv_pe_desc, kv_lat, kv_pe, vt, kv_bar, k_free, v_ready, v_free,
              block_table_ptr, seqlens_ptr, stride_bt_b, S_Q, H, NUM_SPLITS, work_ptr,
              PAGE_SIZE: gl.constexpr, CAUSAL: gl.constexpr, PLAN: gl.constexpr):  # fmt: skip
    """Worker: the TMA ring and the transposed latent part of every tile (``vt[j % 2]``)."""
    STAGES: gl.constexpr = kv_lat.shape[0]
    BN: gl.constexpr = kv_lat.shape[1]
    bt_row, start_n, end_n, num_tiles = _start_ring(
        kv_lat_desc, kv_pe_desc, kv_lat, kv_pe, kv_bar, block_table_ptr, seqlens_ptr,
        stride_bt_b, S_Q, H, NUM_SPLITS, work_ptr, PAGE_SIZE, CAUSAL, PLAN,
    )  # fmt: skip
    rows = gl.arange(0, BN, layout=gl.SliceLayout(1, WORDS_LAYOUT))
    for j in range(num_tiles):
        slot = j % STAGES
        buf = j % 2
        refill = j + STAGES < num_tiles
        next_n = start_n + (j + STAGES) * BN
        page = gl.load(bt_row + next_n // PAGE_SIZE, mask=refill, other=0)  # before the waits
        mbarrier.wait(kv_bar.index(slot), (j // STAGES) & 1)
        words = kv_lat.index(slot)._reinterpret(gl.int32, [BN, 128], WORDS_SHARED)
        raw = words.load(WORDS_LAYOUT)
        valid = end_n - (start_n + j * BN)
        if valid < BN:  # a tail tile: rows past the end as 0 (p is 0 there, but 0 x NaN is not)
            raw = gl.where((rows < valid)[:, None], raw, gl.zeros_like(raw))
        flipped = _transpose_words(raw)
        if j >= 2:
            mbarrier.wait(v_free.index(buf), (j // 2 - 1) & 1)
        vt.index(buf)._reinterpret(gl.int32, [512, BN // 4], VT_WORDS_SHARED).store(flipped)
        fence_async_shared()
        gl.thread_barrier()
        mbarrier.arrive(v_ready.index(buf))
        if refill:  # refill the slot once this tile's scores are done
            mbarrier.wait(k_free.index(slot), (j // STAGES) & 1)
            _copy_tile_at(kv_lat_desc, kv_pe_desc, kv_lat, kv_pe, kv_bar, page, next_n, slot,
                          True, PAGE_SIZE)  # fmt: skip


@gluon.jit
def _store_out(acc, l_i, m_i, out_scale, stage, o_ptr, lse_ptr, stride_o_b, stride_o_s,
               stride_o_h, stride_o_split, stride_lse_b, stride_lse_s, stride_lse_h,
               stride_lse_split, pid_b, pid_split, s0, h0, store_o, store_lse):  # fmt: skip
    """Split ``pid_split``'s output of (``pid_b``, ``s0``, heads ``h0 ..``) from ``acc`` (o^T
    [512, 16] fp32 with its rows in v^T's order, times ``out_scale / l``) where ``store_o``, its
    lse (-inf for an empty split) where ``store_lse``. The rows go back to feature order
    through ``stage`` (a free v^T buffer, 32 KB), so the stores are whole 64-byte runs."""
    DV: gl.constexpr = acc.shape[0]
    BQ: gl.constexpr = acc.shape[1]
    empty = l_i == 0.0
    l_safe = gl.where(empty, 1.0, l_i)
    if store_o:
        rows = stage._reinterpret(gl.float32, [DV, BQ], STAGE_SHARED)
        rows.store(acc * (out_scale / l_safe)[None, :])
        gl.thread_barrier()
        # row 32 f + g holds feature 16 g + f: read [g, f, head]
        feats = rows.reshape([16, 32, BQ]).permute((1, 0, 2)).load(OUT_LAYOUT)
        g = gl.arange(0, 32, layout=gl.SliceLayout(1, gl.SliceLayout(2, OUT_LAYOUT)))
        f = gl.arange(0, 16, layout=gl.SliceLayout(0, gl.SliceLayout(2, OUT_LAYOUT)))
        h = gl.arange(0, BQ, layout=gl.SliceLayout(0, gl.SliceLayout(1, OUT_LAYOUT)))
        o_base = o_ptr + pid_b * stride_o_b + s0 * stride_o_s + pid_split * stride_o_split
        feature = (g * 16)[:, None, None] + f[None, :, None]
        o_ptrs = o_base + (h0 + h)[None, None, :] * stride_o_h + feature
        gl.store(o_ptrs, feats.to(o_ptr.dtype.element_ty))
    offs_h = gl.arange(0, BQ, layout=HEAD_LAYOUT)
    lse = gl.where(empty, float("-inf"), (m_i + gl.log2(l_safe)) * 0.6931471805599453)
    lse_base = lse_ptr + pid_b * stride_lse_b + s0 * stride_lse_s + pid_split * stride_lse_split
    if store_lse:
        gl.store(lse_base + (h0 + offs_h) * stride_lse_h, lse)


@gluon.jit
def _consumer(q_lat, q_pe, q_bar, kv_lat, kv_pe, vt, p_smem, red, kv_bar, k_free, v_ready,
              v_free, seqlens_ptr, o_ptr, lse_ptr, kv_scale_ptr, q_scale_ptr, qk_scale_log2,
              stride_o_b, stride_o_s, stride_o_h, stride_o_split, stride_lse_b, stride_lse_s,
              stride_lse_h, stride_lse_split, S_Q, H, NUM_SPLITS, work_ptr, CAUSAL: gl.constexpr,
              PLAN: gl.constexpr):  # fmt: skip
    """Default partition: per tile the scores (from the ring slot), the online softmax (the
    tile's max across the 4 warps through ``red``) and o^T (from ``vt``); then the output and
    lse. (It runs after the kernel's ``gdc_enter``: no
    wait of its own.)"""
    STAGES: gl.constexpr = kv_lat.shape[0]
    BN: gl.constexpr = kv_lat.shape[1]
    BQ: gl.constexpr = q_lat.shape[0]
    DV: gl.constexpr = q_lat.shape[1]
    s0, h0 = _block_rows(H)
    pid_b, pid_split, start_n, end_n, num_tiles, valid = _program_split(
        work_ptr, seqlens_ptr, s0, S_Q, NUM_SPLITS, BN, CAUSAL, PLAN
    )
    kv_scale = gl.load(kv_scale_ptr)
    scale_log2 = qk_scale_log2 * kv_scale * gl.load(q_scale_ptr)
    m_i = gl.full([BQ], float("-inf"), gl.float32, layout=HEAD_LAYOUT)
    l_acc = gl.zeros([BN, BQ], gl.float32, layout=S_LAYOUT)
    acc = gl.zeros([DV, BQ], gl.float32, layout=S_LAYOUT)  # o^T, rows in v^T's order
    offs_tok = gl.arange(0, BN, layout=gl.SliceLayout(1, S_LAYOUT))
    mbarrier.wait(q_bar, 0)
    for j in range(num_tiles):
        slot = j % STAGES
        tile_n = start_n + j * BN
        mbarrier.wait(kv_bar.index(slot), (j // STAGES) & 1)
        st = gl.zeros([BN, BQ], gl.float32, layout=S_LAYOUT)
        st = hopper.warpgroup_mma(kv_lat.index(slot), q_lat.permute((1, 0)), st, is_async=True)
        st = hopper.warpgroup_mma(kv_pe.index(slot), q_pe.permute((1, 0)), st, is_async=True)
        st = hopper.warpgroup_mma_wait(num_outstanding=0, deps=[st])
        gl.thread_barrier()  # every warp's score MMAs are done with the slot
        mbarrier.arrive(k_free.index(slot))
        st = st * scale_log2
        if tile_n + BN > end_n:
            st = gl.where((tile_n + offs_tok < end_n)[:, None], st, float("-inf"))
        # the max over the tile's tokens: each warp's over its 16, then the 4 warps' through
        # ``red`` with one barrier (Triton's cross-warp reduction takes two)
        red.store(gl.max(st.reshape([PART_WARPS_C, BN // PART_WARPS_C, BQ]), axis=1))
        gl.thread_barrier()
        tile_max = gl.convert_layout(gl.max(red.load(RED_LAYOUT), axis=0), HEAD_LAYOUT)
        m_new = gl.maximum(m_i, tile_max)
        alpha = gl.exp2(m_i - m_new)
        pt = gl.exp2(st - m_new[None, :])
        l_acc = l_acc * alpha[None, :] + pt
        m_i = m_new
        p_smem.store((pt * P_SCALE_C).to(p_smem.dtype).permute((1, 0)))
        fence_async_shared()
        gl.thread_barrier()  # p^T written by every warp
        acc = acc * alpha[None, :]
        buf = j % 2
        mbarrier.wait(v_ready.index(buf), (j // 2) & 1)
        acc = hopper.warpgroup_mma(vt.index(buf), p_smem.permute((1, 0)), acc, is_async=True)
        acc = hopper.warpgroup_mma_wait(num_outstanding=0, deps=[acc])
        gl.thread_barrier()  # every warp is done with v^T and p^T
        mbarrier.arrive(v_free.index(buf))

    # (an empty split writes only its lse; a planned program without a work item nothing.
    # vt[0] is free: the producer has written its last tile, and its o^T is done)
    _store_out(acc, gl.sum(l_acc, axis=0), m_i, kv_scale / P_SCALE_C, vt.index(0), o_ptr,
               lse_ptr, stride_o_b, stride_o_s, stride_o_h, stride_o_split, stride_lse_b,
               stride_lse_s, stride_lse_h, stride_lse_split, pid_b, pid_split, s0, h0,
               (num_tiles > 0) | (NUM_SPLITS == 1), valid)  # fmt: skip


@gluon.jit  # (q_ptr: the leading arguments are every decode kernel's; q comes by TMA here)
def _mla_decode_fp8_mma_kernel(
    q_ptr, q_lat_desc, q_pe_desc, kv_lat_desc, kv_pe_desc, block_table_ptr, seqlens_ptr, o_ptr,  # noqa: ARG001
    lse_ptr, kv_scale_ptr, qk_scale_log2, stride_bt_b, stride_o_b, stride_o_s, stride_o_h,
    stride_o_split, stride_lse_b, stride_lse_s, stride_lse_h, stride_lse_split, S_Q, H,
    NUM_SPLITS, work_ptr, q_scale_ptr, PAGE_SIZE: gl.constexpr, CAUSAL: gl.constexpr,
    STAGES: gl.constexpr, PLAN: gl.constexpr,
):  # fmt: skip
    gdc_enter(NUM_SPLITS)
    fp8: gl.constexpr = kv_lat_desc.dtype
    BQ: gl.constexpr = q_lat_desc.block_type.shape[0]
    DV: gl.constexpr = q_lat_desc.block_type.shape[1]
    DPE: gl.constexpr = q_pe_desc.block_type.shape[1]
    BN: gl.constexpr = kv_lat_desc.block_type.shape[0]
    # q 9 KB, the ring STAGES x 36 KB, v^T 2 x 32 KB, p^T 1 KB, the warp maxima 256 B (3
    # stages: 183 KB)
    q_lat = gl.allocate_shared_memory(fp8, [BQ, DV], q_lat_desc.layout)
    q_pe = gl.allocate_shared_memory(fp8, [BQ, DPE], q_pe_desc.layout)
    kv_lat = gl.allocate_shared_memory(fp8, [STAGES, BN, DV], kv_lat_desc.layout)
    kv_pe = gl.allocate_shared_memory(fp8, [STAGES, BN, DPE], kv_pe_desc.layout)
    vt = gl.allocate_shared_memory(
        fp8, [2, DV, BN], gl.NVMMASharedLayout.get_default_for([DV, BN], fp8)
    )
    p_smem = gl.allocate_shared_memory(
        fp8, [BQ, BN], gl.NVMMASharedLayout.get_default_for([BQ, BN], fp8)
    )
    red = gl.allocate_shared_memory(gl.float32, [PART_WARPS_C, BQ], STAGE_SHARED)
    q_bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    kv_bar = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    k_free = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    v_ready = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    v_free = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    mbarrier.init(q_bar, count=1)
    for i in gl.static_range(STAGES):
        mbarrier.init(kv_bar.index(i), count=1)
        mbarrier.init(k_free.index(i), count=1)
    for i in gl.static_range(2):
        mbarrier.init(v_ready.index(i), count=1)
        mbarrier.init(v_free.index(i), count=1)
    fence_async_shared()

    s0, h0 = _block_rows(H)
    pid_b, _split, _start, _end, _tiles, _valid = _program_split(
        work_ptr, seqlens_ptr, s0, S_Q, NUM_SPLITS, BN, CAUSAL, PLAN
    )
    q_row = (pid_b * S_Q + s0) * H + h0
    mbarrier.expect(q_bar, q_lat_desc.block_type.nbytes + q_pe_desc.block_type.nbytes)
    tma.async_copy_global_to_shared(q_lat_desc, [q_row, 0], q_bar, q_lat)
    tma.async_copy_global_to_shared(q_pe_desc, [q_row, DV], q_bar, q_pe)

    gl.warp_specialize(
        [
            (_consumer, (
                q_lat, q_pe, q_bar, kv_lat, kv_pe, vt, p_smem, red, kv_bar, k_free, v_ready,
                v_free, seqlens_ptr, o_ptr, lse_ptr, kv_scale_ptr, q_scale_ptr, qk_scale_log2,
                stride_o_b, stride_o_s, stride_o_h, stride_o_split, stride_lse_b, stride_lse_s,
                stride_lse_h, stride_lse_split, S_Q, H, NUM_SPLITS, work_ptr, CAUSAL, PLAN)),
            (_producer, (
                kv_lat_desc, kv_pe_desc, kv_lat, kv_pe, vt, kv_bar, k_free, v_ready, v_free,
                block_table_ptr, seqlens_ptr, stride_bt_b, S_Q, H, NUM_SPLITS, work_ptr,
                PAGE_SIZE, CAUSAL, PLAN)),
        ],
        [PART_WARPS_C],
        [PRODUCER_REGS_C],
    )  # fmt: skip


def fp8_mma_eligible(args: DecodeArgs, cfg: DecodeConfig) -> bool:
    """True when this call runs this kernel (see the module docstring for the scope)."""
    return (
        args.q_scale is not None
        and (cfg.block_size_q, cfg.block_size_k, cfg.num_warps) == KNOBS
        and cfg.num_stages in RING_DEPTHS
        and args.q.shape[2] < 64
        and sm90_mla_call(args, ROWS)
    )


def launch_fp8_mma_decode(
    args: DecodeArgs,
    cfg: DecodeConfig,
    num_splits: int,
    out: SplitOutputs,
    work: torch.Tensor | None = None,
) -> Any:
    """Launch this kernel into ``out``: ``num_splits`` equal splits a sequence, or with
    ``work`` ([programs, 8] int32, ``decode_plan``) one program a work item, ``num_splits``
    slots a sequence."""
    if args.q_scale is None:
        raise ValueError("q_scale: this kernel takes an fp8 q with its scale, got None")
    plan = work is not None
    return launch_decode_kernel(
        _mla_decode_fp8_mma_kernel, args, num_splits, out, rows=ROWS, block_n=BLOCK_N,
        num_warps=PART_WARPS, extra=(work if plan else args.cache_seqlens, args.q_scale),
        programs=work.shape[0] if plan else None, STAGES=RING_DEPTHS[cfg.num_stages],
        PLAN=plan,
    )  # fmt: skip


__all__ = ["KNOBS", "RING_DEPTHS", "fp8_mma_eligible", "launch_fp8_mma_decode"]
