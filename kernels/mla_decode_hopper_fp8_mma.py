"""MLA decode for Hopper (sm_90) in Gluon: fp8 q over an fp8 cache on fp8 tensor cores.

The other fp8 kernels (``mla_decode_hopper_few_fp8``) keep q in 16 bits and upcast every
cache tile to fp16 in shared memory, because wgmma takes fp8 only with both operands fp8 and
K-major, and ``v^T`` is not K-major in the cache. Here the caller has quantised q to fp8
(``q_scale``, FlashMLA's fp8 interface), so both products run as fp8 wgmma (m64n16k32):

- scores, transposed: ``s^T [64 tokens, 16 heads] = k [64, 576] @ q^T`` straight from the TMA
  ring slot (k is K-major as stored; q in shared memory, K-major as stored);
- output, transposed: ``o^T [512, 16] += v^T [512, 64] @ p^T [64, 16]`` with ``v^T`` as the
  wgmma's *register* operand: sixteen 16-byte loads a thread from the slot, each 4 x 4 byte
  block (4 tokens x 4 features) transposed by 8 ``prmt`` (inline PTX), then a relabelling
  (``_a_words``): no transposed copy goes through shared memory. The rows of ``o^T`` and the
  tokens come in a permuted order (a thread holds 16 consecutive features of 16 tokens); ``p^T``
  is stored in the same token order (``_as_p``) and the output leaves in feature order
  (``_as_o``, 16-byte stores). ``p^T`` is ``p x 256`` in e4m3 (values in [0, 256]: e4m3 keeps 3
  mantissa bits down to 2^-6 x 256; the factor is divided out with the row sums).

Partitions (``gl.warp_specialize``):

- two *computing* warpgroups (the default partition and a 4-warp worker) on alternate tiles of
  the split, each with its own online softmax (base 2, per head along the tokens; the tile's max
  across its 4 warps through shared memory with one barrier) and its own o^T. At the end the
  worker hands (o^T, m, l) over through the slot of its last tile and the default partition
  merges the two and writes the output and lse;
- a *loader* warp per computing warpgroup, each refilling its warpgroup's slots once it is
  done with them (``k_free``), so a warpgroup running behind holds up only its own copies. The
  ring is even (``RING_DEPTHS``), so each slot serves one warpgroup (an odd ring lets a
  warpgroup wait on a slot's phase two ahead: the parity aliases).

H200 (docs/kernels/NOTES.md, variants 45-46): 45.3 / 45.5 / 24.2 us on the three 16-head
anchor rows, 1.68 / 1.69 / 1.68x the bf16 kernel (s14-11; the 46-50 us of earlier runs were
timed while the GPU's clock ramped up after an idle gap); in one A/B process 46.3-47.0 /
46.0-46.9 / 24.5-24.6 against 47.7-47.9 / 47.4 / 26.2 for the kernel it replaced (variants
38 and 43: a producer warpgroup wrote v^T into shared memory for one computing warpgroup).
A loader per warpgroup (variant 46) took 0.1-0.5 us (once 1.1) off in 11 of 12 A/B pairs
(s13-1, s13-4). What bounds it is the copy path: the same copies with no compute stream at
4.1 TB/s (37 us on 64 x 4K, ``bench/probe_tma_stream.py``); this kernel doing nothing but
wait for and free its slots takes 43-45 us (the combine kernel and each program's start and
end), and its compute adds 1-2.5.

Precision: q and p are rounded to e4m3; the fp8 wgmma accumulates into fp32 at the tensor
core's reduced fp8-path precision, without periodic promotion (as FlashMLA). Against the fp32
reference over the dequantised inputs the relative L2 error is 0.6-1.8e-2 on random inputs
(bf16 paths: ~2e-3): p's 3-bit mantissa.

Scope (``fp8_mma_eligible``): sm_90, q float8_e4m3fn with ``q_scale``, an fp8 cache with its
scale, one KV head, 512 + 64 dims, ``h_q`` a multiple of 16 and below 64, pages of whole
64-token tiles, contiguous q; config ``16 x 64, 8 warps`` (the fp8-cache configs) with
``num_stages`` 1 or 2, which picks the ring depth (``RING_DEPTHS``).
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
from .gluon_launch import D_V, SplitOutputs, launch_decode_kernel, sm90_mla_call
from .mla_decode_hopper import _copy_tile_at
from .mla_decode_hopper_few import _program_split
from .mla_decode_hopper_few_fp8 import _block_rows, _start_ring
from .pdl import gdc_enter, gdc_wait

ROWS = 16
BLOCK_N = 64
PART_WARPS = 4
KNOBS = (ROWS, BLOCK_N, 2 * PART_WARPS)
"""block_size_q, block_size_k, num_warps of this kernel's configs (the fp8-cache family's)."""
RING_DEPTHS = {1: 2, 2: 4}
"""The config's ``num_stages`` -> the TMA ring's depth (36 KB a tile; even: the two warpgroups
take alternate tiles, so each slot serves one of them)."""
P_SCALE = 256.0

PART_WARPS_C = gl.constexpr(PART_WARPS)
DV_C = gl.constexpr(D_V)
P_SCALE_C = gl.constexpr(P_SCALE)
SIDE_REGS_C = gl.constexpr(240)  # the second computing warpgroup (a worker partition)
LOADER_REGS_C = gl.constexpr(24)

# s^T [64, 16] and o^T [512, 16]: one warpgroup, 64-row fp8 wgmma tiles; v^T [512, 64] as the
# register operand (a register: 4 consecutive k of one row)
S_LAYOUT = gl.constexpr(
    gl.NVMMADistributedLayout(
        version=[3, 0], warps_per_cta=[PART_WARPS, 1], instr_shape=[16, ROWS, 32]
    )
)
HEAD_LAYOUT = gl.constexpr(gl.SliceLayout(0, S_LAYOUT))
A_LAYOUT = gl.constexpr(gl.DotOperandLayout(operand_index=0, parent=S_LAYOUT, k_width=4))
# the warps' maxima [4, 16 heads], each thread all 4 of its heads' (heads as in S_LAYOUT)
RED_LAYOUT = gl.constexpr(
    gl.DistributedLinearLayout(
        [[0, 1], [0, 8], [1, 0], [2, 0]],
        [[0, 2], [0, 4], [0, 0], [0, 0], [0, 0]],
        [[0, 0], [0, 0]],
        [],
        [PART_WARPS, ROWS],
    )
)
# the output [512 features, 16 heads] after ``_as_o``: the same elements a thread holds in
# S_LAYOUT, its 16 consecutive features first (16-byte stores)
OUT_LAYOUT = gl.constexpr(
    gl.DistributedLinearLayout(
        [[1, 0], [2, 0], [4, 0], [8, 0], [0, 1], [0, 8]],
        [[0, 2], [0, 4], [16, 0], [32, 0], [64, 0]],
        [[128, 0], [256, 0]],
        [],
        [D_V, ROWS],
    )
)
# a tile's latent part as 32-bit words [64 tokens, 128 words]: a thread holds 16 bytes (4
# words: features 128 w + 16 (lane // 4) + 0..15, one conflict-free 16-byte load a token) of
# the tokens 2 (lane % 4) + {0, 1} + 8 i: after ``_a_words``, exactly the elements A_LAYOUT
# gives the thread
XW_LAYOUT = gl.constexpr(
    gl.DistributedLinearLayout(
        [[0, 1], [0, 2], [1, 0], [8, 0], [16, 0], [32, 0]],
        [[2, 0], [4, 0], [0, 4], [0, 8], [0, 16]],
        [[0, 32], [0, 64]],
        [],
        [BLOCK_N, D_V // 4],
    )
)
WORDS_SHARED = gl.constexpr(gl.NVMMASharedLayout(swizzle_byte_width=128, element_bitwidth=32))
RED_SHARED = gl.constexpr(gl.SwizzledSharedLayout(1, 1, 1, order=[1, 0]))
VEC_SHARED = gl.constexpr(gl.SwizzledSharedLayout(1, 1, 1, order=[0]))


@gluon.jit
def _a_words(raw):
    """A tile's latent part as words ``raw`` (int32 [64 tokens, 128 words of 4 features],
    XW_LAYOUT) -> the A operand ``v^T`` (fp8 [512 rows m, 64 k]): ``a[m, k]`` is feature
    ``pi(m)`` of token ``sigma(k)``, with ``pi(m)`` = feature bits (m3, m6, m7, m8, m0, m1, m2,
    m4, m5) and ``sigma(k)`` = token bits (k0, k2, k3, k1, k4, k5), low bit first. Each 4 x 4
    byte block (the tokens t, t + 1, t + 8, t + 9: k order 0..3; a word's 4 features) is
    transposed by 8 ``prmt``; the rest only relabels registers (each already holds the 4
    consecutive k of its A element)."""
    q = raw.reshape([2, 2, 2, 2, 2, 2, 128]).permute((0, 1, 3, 4, 6, 2, 5))  # (.., t3, t0)
    lo, hi = gl.split(q)  # t0 = 0 / 1
    a0, a2 = gl.split(lo)  # t3 = 0 / 1
    a1, a3 = gl.split(hi)
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
    # b_j: feature 4 w + j of the block's 4 tokens; dims (t5, t4, t2, t1, w, j0, j1)
    feats = gl.join(gl.join(b0, b1), gl.join(b2, b3))
    bits = feats.reshape([2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2])
    words = bits.permute((9, 10, 12, 4, 5, 11, 6, 7, 8, 0, 1, 2, 3)).reshape([DV_C, 16])
    quads = gl.join(gl.join(words, words), gl.join(words, words)).reshape([DV_C, 16, 4])
    as_bytes = gl.inline_asm_elementwise(
        "mov.b32 $0, $1;", "=r,r,r,r,r", [quads], dtype=gl.float8e4nv, is_pure=True, pack=4
    )
    return as_bytes.reshape([DV_C, 64])


@gluon.jit
def _as_p(pt):
    """``pt`` [64 tokens, 16 heads] -> [64 k, 16] in ``_a_words``'s token order ``sigma``."""
    bits = pt.reshape([2, 2, 2, 2, 2, 2, pt.shape[1]])
    return bits.permute((0, 1, 3, 4, 2, 5, 6)).reshape([64, pt.shape[1]])


@gluon.jit
def _as_o(acc):
    """``o^T`` [512 rows m, 16] -> [512 features, 16] (undoes ``pi``)."""
    bits = acc.reshape([2, 2, 2, 2, 2, 2, 2, 2, 2, acc.shape[1]])
    return bits.permute((3, 4, 6, 7, 8, 0, 1, 2, 5, 9)).reshape([DV_C, acc.shape[1]])


@gluon.jit
def _merge_barrier(WAIT: gl.constexpr):
    """The hand-over from computing warpgroup 1 to 0 (named barrier 15 over their 256 threads):
    1 arrives after its stores (``bar.arrive``), 0 waits for them (``bar.sync``) before its loads.
    (A per-thread barrier, not an mbarrier one thread signals after a warpgroup barrier: the
    same ordering, but compute-sanitizer's racecheck follows only this one.)"""
    if WAIT:
        asm: gl.constexpr = "bar.sync 15, 256; mov.b32 $0, $1;"
    else:
        asm: gl.constexpr = "bar.arrive 15, 256; mov.b32 $0, $1;"
    gl.inline_asm_elementwise(asm, "=r,r,~{memory}", [0], dtype=gl.int32, is_pure=False, pack=1)


@gluon.jit
def _loader(kv_lat_desc, kv_pe_desc, kv_lat, kv_pe, kv_bar, k_free, block_table_ptr,
            seqlens_ptr, stride_bt_b, S_Q, H, NUM_SPLITS, work_ptr, PAGE_SIZE: gl.constexpr,
            CAUSAL: gl.constexpr, PLAN: gl.constexpr, SIDE: gl.constexpr):  # fmt: skip
    """Worker (1 warp), one per computing warpgroup: loader 0 issues the first ``STAGES``
    tiles; loader ``SIDE`` then puts tile ``j + STAGES`` into tile ``j``'s slot (``j = SIDE,
    SIDE + 2, ..``: its warpgroup's slots) once that warpgroup is done with it, so a warpgroup
    running behind holds up only its own copies."""
    STAGES: gl.constexpr = kv_lat.shape[0]
    BN: gl.constexpr = kv_lat.shape[1]
    if SIDE == 0:
        bt_row, start_n, _end_n, num_tiles = _start_ring(
            kv_lat_desc, kv_pe_desc, kv_lat, kv_pe, kv_bar, block_table_ptr, seqlens_ptr,
            stride_bt_b, S_Q, H, NUM_SPLITS, work_ptr, PAGE_SIZE, CAUSAL, PLAN,
        )  # fmt: skip
    else:
        gdc_wait()  # (a worker partition: before its first global access)
        s0, _h0 = _block_rows(H)
        pid_b, _split, start_n, _end_n, num_tiles, _valid = _program_split(
            work_ptr, seqlens_ptr, s0, S_Q, NUM_SPLITS, BN, CAUSAL, PLAN
        )
        bt_row = block_table_ptr + pid_b * stride_bt_b
    for j in range(SIDE, num_tiles - STAGES, 2):
        slot = j % STAGES
        next_n = start_n + (j + STAGES) * BN
        page = gl.load(bt_row + next_n // PAGE_SIZE)  # before the wait
        mbarrier.wait(k_free.index(slot), (j // STAGES) & 1)
        _copy_tile_at(kv_lat_desc, kv_pe_desc, kv_lat, kv_pe, kv_bar, page, next_n, slot, True,
                      PAGE_SIZE)  # fmt: skip


@gluon.jit
def _side(q_lat, q_pe, q_bar, kv_lat, kv_pe, p_smem, red, m_smem, l_smem, kv_bar,
          k_free, seqlens_ptr, o_ptr, lse_ptr, kv_scale_ptr, q_scale_ptr, qk_scale_log2,
          stride_o_b, stride_o_s, stride_o_h, stride_o_split, stride_lse_b, stride_lse_s,
          stride_lse_h, stride_lse_split, S_Q, H, NUM_SPLITS, work_ptr, CAUSAL: gl.constexpr,
          PLAN: gl.constexpr, SIDE: gl.constexpr):  # fmt: skip
    """A computing warpgroup: the split's tiles ``j = SIDE, SIDE + 2, ..`` (scores, softmax and
    the whole o^T [512, 16] with ``v^T`` as the register operand). Side 1 (a worker) then hands
    its (o^T, m, l) over through shared memory (the slot of its last tile); side 0 (the default
    partition, after the kernel's ``gdc_enter``) merges the two and writes the output and lse."""
    if SIDE == 1:
        gdc_wait()  # (a worker partition: before its first global access)
    STAGES: gl.constexpr = kv_lat.shape[0]
    BN: gl.constexpr = kv_lat.shape[1]
    BQ: gl.constexpr = q_lat.shape[0]
    s0, h0 = _block_rows(H)
    pid_b, pid_split, start_n, end_n, num_tiles, valid = _program_split(
        work_ptr, seqlens_ptr, s0, S_Q, NUM_SPLITS, BN, CAUSAL, PLAN
    )
    kv_scale = gl.load(kv_scale_ptr)
    scale_log2 = qk_scale_log2 * kv_scale * gl.load(q_scale_ptr)
    m_i = gl.full([BQ], float("-inf"), gl.float32, layout=HEAD_LAYOUT)
    l_acc = gl.zeros([BN, BQ], gl.float32, layout=S_LAYOUT)
    acc = gl.zeros([DV_C, BQ], gl.float32, layout=S_LAYOUT)  # o^T, rows in _a_words' order
    offs_tok = gl.arange(0, BN, layout=gl.SliceLayout(1, S_LAYOUT))
    x_tok = gl.arange(0, BN, layout=gl.SliceLayout(1, XW_LAYOUT))
    mbarrier.wait(q_bar, 0)
    for j in range(SIDE, num_tiles, 2):
        slot = j % STAGES
        tile_n = start_n + j * BN
        mbarrier.wait(kv_bar.index(slot), (j // STAGES) & 1)
        st = gl.zeros([BN, BQ], gl.float32, layout=S_LAYOUT)
        st = hopper.warpgroup_mma(kv_lat.index(slot), q_lat.permute((1, 0)), st, is_async=True)
        st = hopper.warpgroup_mma(kv_pe.index(slot), q_pe.permute((1, 0)), st, is_async=True)
        raw = kv_lat.index(slot)._reinterpret(gl.int32, [BN, DV_C // 4], WORDS_SHARED)
        raw = raw.load(XW_LAYOUT)
        if tile_n + BN > end_n:  # a tail tile: rows past the end as 0 (p is 0, 0 x NaN is not)
            raw = gl.where((tile_n + x_tok < end_n)[:, None], raw, gl.zeros_like(raw))
        a = gl.convert_layout(_a_words(raw), A_LAYOUT)
        st = hopper.warpgroup_mma_wait(num_outstanding=0, deps=[st])
        gl.thread_barrier()  # every warp's score MMAs and loads are done with the slot
        mbarrier.arrive(k_free.index(slot))
        st = st * scale_log2
        if tile_n + BN > end_n:
            st = gl.where((tile_n + offs_tok < end_n)[:, None], st, float("-inf"))
        # the tile's max over tokens: each warp's over its 16, then the 4 warps' through red
        red.store(gl.max(st.reshape([PART_WARPS_C, BN // PART_WARPS_C, BQ]), axis=1))
        gl.thread_barrier()
        tile_max = gl.convert_layout(gl.max(red.load(RED_LAYOUT), axis=0), HEAD_LAYOUT)
        m_new = gl.maximum(m_i, tile_max)
        alpha = gl.exp2(m_i - m_new)
        pt = gl.exp2(st - m_new[None, :])
        l_acc = l_acc * alpha[None, :] + pt
        m_i = m_new
        p_smem.store(_as_p(pt * P_SCALE_C).to(p_smem.dtype).permute((1, 0)))
        fence_async_shared()
        gl.thread_barrier()  # p^T written by every warp
        acc = acc * alpha[None, :]
        acc = hopper.warpgroup_mma(a, p_smem.permute((1, 0)), acc, is_async=True)
        acc = hopper.warpgroup_mma_wait(num_outstanding=0, deps=[acc])

    l_i = gl.sum(l_acc, axis=0)
    # side 1's last slot is free (no copy follows it, side 0 never reads it); with no tile of
    # its own, slot 1 was never filled
    last = ((num_tiles - 2) // 2) * 2 + 1
    stage = kv_lat.index(gl.where(num_tiles >= 2, last % STAGES, 1))
    stage = stage._reinterpret(gl.float32, [DV_C, BQ], RED_SHARED)
    if SIDE == 1:
        stage.store(acc)
        m_smem.store(m_i)
        l_smem.store(l_i)
        _merge_barrier(False)
    else:
        _merge_barrier(True)
        m_1 = m_smem.load(HEAD_LAYOUT)
        l_1 = l_smem.load(HEAD_LAYOUT)
        m = gl.maximum(m_i, m_1)
        m_safe = gl.where(m == float("-inf"), 0.0, m)
        a_0 = gl.exp2(m_i - m_safe)
        a_1 = gl.exp2(m_1 - m_safe)
        acc = acc * a_0[None, :] + stage.load(S_LAYOUT) * a_1[None, :]
        l_i = l_i * a_0 + l_1 * a_1
        # an empty split writes only its lse; a planned program without a work item nothing
        empty = l_i == 0.0
        l_safe = gl.where(empty, 1.0, l_i)
        if (num_tiles > 0) | (NUM_SPLITS == 1):
            out = acc * (kv_scale / P_SCALE_C / l_safe)[None, :]
            out = gl.convert_layout(_as_o(out), OUT_LAYOUT)
            f = gl.arange(0, DV_C, layout=gl.SliceLayout(1, OUT_LAYOUT))
            h = gl.arange(0, BQ, layout=gl.SliceLayout(0, OUT_LAYOUT))
            o_base = o_ptr + pid_b * stride_o_b + s0 * stride_o_s + pid_split * stride_o_split
            o_ptrs = o_base + (h0 + h)[None, :] * stride_o_h + f[:, None]
            gl.store(o_ptrs, out.to(o_ptr.dtype.element_ty))
        offs_h = gl.arange(0, BQ, layout=HEAD_LAYOUT)
        lse = gl.where(empty, float("-inf"), (m_safe + gl.log2(l_safe)) * 0.6931471805599453)
        lse_base = lse_ptr + pid_b * stride_lse_b + s0 * stride_lse_s
        if valid:
            gl.store(lse_base + pid_split * stride_lse_split + (h0 + offs_h) * stride_lse_h, lse)


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
    # q 9 KB, the ring STAGES x 36 KB, p^T 2 x 1 KB, the warp maxima 2 x 256 B (2 tiles: 83 KB)
    q_lat = gl.allocate_shared_memory(fp8, [BQ, DV], q_lat_desc.layout)
    q_pe = gl.allocate_shared_memory(fp8, [BQ, DPE], q_pe_desc.layout)
    kv_lat = gl.allocate_shared_memory(fp8, [STAGES, BN, DV], kv_lat_desc.layout)
    kv_pe = gl.allocate_shared_memory(fp8, [STAGES, BN, DPE], kv_pe_desc.layout)
    p_layout: gl.constexpr = gl.NVMMASharedLayout.get_default_for([BQ, BN], fp8)
    p_0 = gl.allocate_shared_memory(fp8, [BQ, BN], p_layout)
    p_1 = gl.allocate_shared_memory(fp8, [BQ, BN], p_layout)
    red_0 = gl.allocate_shared_memory(gl.float32, [PART_WARPS_C, BQ], RED_SHARED)
    red_1 = gl.allocate_shared_memory(gl.float32, [PART_WARPS_C, BQ], RED_SHARED)
    m_smem = gl.allocate_shared_memory(gl.float32, [BQ], VEC_SHARED)
    l_smem = gl.allocate_shared_memory(gl.float32, [BQ], VEC_SHARED)
    q_bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    kv_bar = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    k_free = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    mbarrier.init(q_bar, count=1)
    for i in gl.static_range(STAGES):
        mbarrier.init(kv_bar.index(i), count=1)
        mbarrier.init(k_free.index(i), count=1)
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
            (_side, (
                q_lat, q_pe, q_bar, kv_lat, kv_pe, p_0, red_0, m_smem, l_smem, kv_bar, k_free,
                seqlens_ptr, o_ptr, lse_ptr, kv_scale_ptr, q_scale_ptr, qk_scale_log2,
                stride_o_b, stride_o_s, stride_o_h, stride_o_split, stride_lse_b, stride_lse_s,
                stride_lse_h, stride_lse_split, S_Q, H, NUM_SPLITS, work_ptr, CAUSAL, PLAN, 0)),
            (_side, (
                q_lat, q_pe, q_bar, kv_lat, kv_pe, p_1, red_1, m_smem, l_smem, kv_bar, k_free,
                seqlens_ptr, o_ptr, lse_ptr, kv_scale_ptr, q_scale_ptr, qk_scale_log2,
                stride_o_b, stride_o_s, stride_o_h, stride_o_split, stride_lse_b, stride_lse_s,
                stride_lse_h, stride_lse_split, S_Q, H, NUM_SPLITS, work_ptr, CAUSAL, PLAN, 1)),
            (_loader, (
                kv_lat_desc, kv_pe_desc, kv_lat, kv_pe, kv_bar, k_free, block_table_ptr,
                seqlens_ptr, stride_bt_b, S_Q, H, NUM_SPLITS, work_ptr, PAGE_SIZE, CAUSAL,
                PLAN, 0)),
            (_loader, (
                kv_lat_desc, kv_pe_desc, kv_lat, kv_pe, kv_bar, k_free, block_table_ptr,
                seqlens_ptr, stride_bt_b, S_Q, H, NUM_SPLITS, work_ptr, PAGE_SIZE, CAUSAL,
                PLAN, 1)),
        ],
        [PART_WARPS_C, 1, 1],
        [SIDE_REGS_C, LOADER_REGS_C, LOADER_REGS_C],
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
