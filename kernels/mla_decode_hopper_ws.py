"""MLA decode for Hopper (sm_90) in Gluon, warp-specialised: FlashMLA's seesaw schedule.

Three partitions share one CTA: two compute warpgroups and one copy warp.

- Warpgroup ``w`` (0, 1) owns the KV tiles ``t`` with ``t % 2 == w``: it computes their whole
  score tile ``s_t = q @ k_t^T`` (64 x 32, one wgmma chain, nothing replicated) and their
  softmax. Both warpgroups add every tile's ``p_t @ v_t`` into their half of the 512 output
  columns. While one warpgroup runs its softmax, the other's matrix work runs: the overlap the
  lockstep kernel (``mla_decode_hopper``) cannot have.
- The online softmax is a chain along the tiles: the owner of tile ``t`` needs the running row
  max after tile ``t - 1`` (from the other warpgroup) and publishes ``m_t``, the rescale
  ``alpha_t`` and ``p_t`` in shared memory, then arrives on ``p_ready[t % 2]``. One buffer of
  each is enough: a warpgroup overwrites them only after it has consumed the other's previous
  ones (program order plus that barrier).
- The copy warp fills a 4-slot ring of 32-token KV tiles (36 KB each; q takes 72 KB): slot
  ``t % 4`` is refilled once both warpgroups have arrived on ``kv_empty`` for tile ``t``.
- Each warpgroup keeps the row sum of its own tiles' ``p``, rescaled by every tile's ``alpha``;
  at the end the two sums are added through shared memory.

Scope (``ws_decode_eligible``): the shapes of ``mla_decode_hopper`` (sm_90, 512 + 64 dims, one
KV head, 64+ heads per KV head, pages of whole 64-token tiles) with a 16-bit cache, for the
config ``64 x 32, 8 warps, 4 stages`` (in the sm_90 tuning space; not the default: see
docs/kernels/NOTES.md, variant 15, for why).
"""

from __future__ import annotations

from typing import Any

from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia import hopper
from triton.experimental.gluon.language.nvidia.hopper import fence_async_shared, mbarrier, tma

from .configs import DecodeConfig
from .decode_checks import DecodeArgs
from .gluon_launch import SplitOutputs, launch_decode_kernel
from .mla_decode_hopper import _split_range, _zero_tail_rows, sm90_many_heads_call
from .pdl import gdc_enter, gdc_wait

BLOCK_Q = 64
BLOCK_N = 32
STAGES = 4


@gluon.jit
def _copy_warp(q_lat_desc, q_pe_desc, kv_lat_desc, kv_pe_desc, q_lat, q_pe, kv_lat, kv_pe,
               q_bar, kv_full, kv_empty, block_table_ptr, seqlens_ptr, stride_bt_b, S_Q, H,
               NUM_SPLITS, PAGE_SIZE: gl.constexpr, CAUSAL: gl.constexpr):  # fmt: skip
    """Producer: q once, then KV tiles into the ring as slots come free."""
    gdc_wait()  # (a partition: before its first global access)
    BQ: gl.constexpr = q_lat_desc.block_type.shape[0]
    DV: gl.constexpr = q_lat_desc.block_type.shape[1]
    BN: gl.constexpr = kv_lat_desc.block_type.shape[0]
    NSLOT: gl.constexpr = kv_lat.shape[0]
    kv_bytes: gl.constexpr = kv_lat_desc.block_type.nbytes + kv_pe_desc.block_type.nbytes
    pid_q = gl.program_id(0)
    pid_split = gl.program_id(1)
    pid_b = gl.program_id(2)
    row0 = pid_q * BQ
    s0 = row0 // H
    q_row = (pid_b * S_Q + s0) * H + row0 % H
    mbarrier.expect(q_bar, q_lat_desc.block_type.nbytes + q_pe_desc.block_type.nbytes)
    tma.async_copy_global_to_shared(q_lat_desc, [q_row, 0], q_bar, q_lat)
    tma.async_copy_global_to_shared(q_pe_desc, [q_row, DV], q_bar, q_pe)
    start_n, _end_n, num_tiles = _split_range(seqlens_ptr, pid_b, pid_split, s0, S_Q,
                                              NUM_SPLITS, BN, CAUSAL)  # fmt: skip
    bt_row = block_table_ptr + pid_b * stride_bt_b
    for t in range(num_tiles):
        slot = t % NSLOT
        if t >= NSLOT:
            mbarrier.wait(kv_empty.index(slot), (t // NSLOT - 1) & 1)
        tile_n = start_n + t * BN
        page = gl.load(bt_row + tile_n // PAGE_SIZE)
        kv_row = page * PAGE_SIZE + tile_n % PAGE_SIZE
        bar = kv_full.index(slot)
        mbarrier.expect(bar, kv_bytes)
        tma.async_copy_global_to_shared(kv_lat_desc, [kv_row, 0], bar, kv_lat.index(slot))
        tma.async_copy_global_to_shared(kv_pe_desc, [kv_row, DV], bar, kv_pe.index(slot))


@gluon.jit
def _consume(kv_lat, p_smem, m_smem, alpha_smem, p_ready, kv_empty, t, acc,
             W: gl.constexpr, o_layout: gl.constexpr):  # fmt: skip
    """Add the other warpgroup's tile ``t`` (its p, published) into this warpgroup's half."""
    NSLOT: gl.constexpr = kv_lat.shape[0]
    DH: gl.constexpr = acc.shape[1]
    row_layout: gl.constexpr = gl.SliceLayout(1, o_layout)
    mbarrier.wait(p_ready.index(t % 2), (t // 2) & 1)
    alpha = alpha_smem.load(row_layout)
    m_t = m_smem.load(row_layout)
    acc = acc * alpha[:, None]
    v_half = kv_lat.index(t % NSLOT).slice(W * DH, DH, dim=1)
    acc = hopper.warpgroup_mma(p_smem.index(t % 2), v_half, acc, is_async=True)
    acc = hopper.warpgroup_mma_wait(num_outstanding=0, deps=[acc])
    mbarrier.arrive(kv_empty.index(t % NSLOT))
    return acc, alpha, m_t


@gluon.jit
def _compute_warpgroup(q_lat, q_pe, kv_lat, kv_pe, p_smem, m_smem, alpha_smem, l_smem, q_bar,
                       kv_full, kv_empty, p_ready, fin_bar, seqlens_ptr, o_ptr, lse_ptr,
                       qk_scale_log2, stride_o_b, stride_o_s, stride_o_h, stride_o_split,
                       stride_lse_b, stride_lse_s, stride_lse_h, stride_lse_split, S_Q, H,
                       NUM_SPLITS, W: gl.constexpr, CAUSAL: gl.constexpr):  # fmt: skip
    """Warpgroup ``W``: its tiles' scores + softmax, every tile's p @ v on its output half."""
    gdc_wait()  # (a partition: before its first global access)
    BQ: gl.constexpr = q_lat.shape[0]
    DV: gl.constexpr = q_lat.shape[1]
    NSLOT: gl.constexpr = kv_lat.shape[0]
    BN: gl.constexpr = kv_lat.shape[1]
    DH: gl.constexpr = DV // 2
    dtype: gl.constexpr = q_lat.dtype
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(
        version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, BN, 16]
    )
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(
        version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, DH, 16]
    )
    tile_layout: gl.constexpr = gl.BlockedLayout([1, 8], [4, 8], [4, 1], [1, 0])
    row_s: gl.constexpr = gl.SliceLayout(1, s_layout)
    row_o: gl.constexpr = gl.SliceLayout(1, o_layout)

    pid_q = gl.program_id(0)
    pid_split = gl.program_id(1)
    pid_b = gl.program_id(2)
    row0 = pid_q * BQ
    s0 = row0 // H
    h0 = row0 % H
    start_n, end_n, num_tiles = _split_range(seqlens_ptr, pid_b, pid_split, s0, S_Q, NUM_SPLITS,
                                             BN, CAUSAL)  # fmt: skip

    acc = gl.zeros([BQ, DH], gl.float32, layout=o_layout)
    l_i = gl.zeros([BQ], gl.float32, layout=row_s)  # row sum of this warpgroup's own tiles' p
    m_i = gl.full([BQ], float("-inf"), gl.float32, layout=row_o)
    offs_n = gl.arange(0, BN, layout=gl.SliceLayout(0, s_layout))
    mbarrier.wait(q_bar, 0)
    for t in range(W, num_tiles, 2):
        slot = t % NSLOT
        tile_n = start_n + t * BN
        mbarrier.wait(kv_full.index(slot), (t // NSLOT) & 1)
        is_tail = tile_n + BN > end_n
        if is_tail:
            _zero_tail_rows(kv_lat.index(slot), end_n - tile_n, tile_layout)
            _zero_tail_rows(kv_pe.index(slot), end_n - tile_n, tile_layout)
            fence_async_shared()
            gl.thread_barrier()
        s = gl.zeros([BQ, BN], gl.float32, layout=s_layout)
        s = hopper.warpgroup_mma(q_lat, kv_lat.index(slot).permute((1, 0)), s, is_async=True)
        s = hopper.warpgroup_mma(q_pe, kv_pe.index(slot).permute((1, 0)), s, is_async=True)
        if t > 0:  # the other warpgroup's tile t - 1 first: its p @ v while our scores run
            acc, alpha_o, m_i = _consume(kv_lat, p_smem, m_smem, alpha_smem, p_ready, kv_empty,
                                         t - 1, acc, W, o_layout)  # fmt: skip
            l_i = l_i * gl.convert_layout(alpha_o, row_s)
        s = hopper.warpgroup_mma_wait(num_outstanding=0, deps=[s])
        s = s * qk_scale_log2
        if is_tail:
            s = gl.where((tile_n + offs_n < end_n)[None, :], s, float("-inf"))
        m_prev = gl.convert_layout(m_i, row_s)
        m_new = gl.maximum(m_prev, gl.max(s, axis=1))
        alpha = gl.exp2(m_prev - m_new)
        p = gl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + gl.sum(p, axis=1)
        m_i = gl.convert_layout(m_new, row_o)
        p_smem.index(t % 2).store(p.to(dtype))
        m_smem.store(m_new)
        alpha_smem.store(alpha)
        fence_async_shared()
        gl.thread_barrier()  # the warpgroup's 128 threads have written p, m, alpha
        mbarrier.arrive(p_ready.index(t % 2))
        acc = acc * gl.convert_layout(alpha, row_o)[:, None]
        acc = hopper.warpgroup_mma(p_smem.index(t % 2),
                                   kv_lat.index(slot).slice(W * DH, DH, dim=1), acc,
                                   is_async=True)  # fmt: skip
        acc = hopper.warpgroup_mma_wait(num_outstanding=0, deps=[acc])
        mbarrier.arrive(kv_empty.index(slot))
    # the other warpgroup's last tile, when it comes after ours
    last = num_tiles - 1
    if (last >= 0) & (last % 2 != W):
        acc, alpha_o, m_i = _consume(kv_lat, p_smem, m_smem, alpha_smem, p_ready, kv_empty,
                                     last, acc, W, o_layout)  # fmt: skip
        l_i = l_i * gl.convert_layout(alpha_o, row_s)

    # total row sum = both warpgroups' sums (each already relative to the final max)
    l_smem.slice(W * BQ, BQ).store(l_i)
    gl.thread_barrier()
    mbarrier.arrive(fin_bar)
    mbarrier.wait(fin_bar, 0)
    l_tot = l_i + l_smem.slice((1 - W) * BQ, BQ).load(row_s)
    empty = l_tot == 0.0
    l_safe = gl.where(empty, 1.0, l_tot)
    acc = acc * gl.convert_layout(1.0 / l_safe, row_o)[:, None]
    offs_r = gl.arange(0, BQ, layout=row_o)
    offs_d = W * DH + gl.arange(0, DH, layout=gl.SliceLayout(0, o_layout))
    o_base = o_ptr + pid_b * stride_o_b + s0 * stride_o_s + pid_split * stride_o_split
    gl.store(o_base + (h0 + offs_r)[:, None] * stride_o_h + offs_d[None, :],
             acc.to(o_ptr.dtype.element_ty))  # fmt: skip
    if W == 0:
        m_fin = gl.convert_layout(m_i, row_s)
        lse = gl.where(empty, float("-inf"), (m_fin + gl.log2(l_safe)) * 0.6931471805599453)
        offs_l = gl.arange(0, BQ, layout=row_s)
        lse_base = lse_ptr + pid_b * stride_lse_b + s0 * stride_lse_s + pid_split * stride_lse_split
        gl.store(lse_base + (h0 + offs_l) * stride_lse_h, lse)


@gluon.jit
def _mla_decode_ws_kernel(
    q_ptr,  # noqa: ARG001 (the Gluon decode kernels' shared leading arguments; 16-bit only)
    q_lat_desc, q_pe_desc, kv_lat_desc, kv_pe_desc, block_table_ptr, seqlens_ptr, o_ptr, lse_ptr,
    kv_scale_ptr,  # noqa: ARG001
    qk_scale_log2, stride_bt_b, stride_o_b, stride_o_s, stride_o_h, stride_o_split,
    stride_lse_b, stride_lse_s, stride_lse_h, stride_lse_split, S_Q, H, NUM_SPLITS,
    PAGE_SIZE: gl.constexpr, CAUSAL: gl.constexpr, NSLOT: gl.constexpr,
):  # fmt: skip
    gdc_enter(NUM_SPLITS)
    dtype: gl.constexpr = q_lat_desc.dtype
    BQ: gl.constexpr = q_lat_desc.block_type.shape[0]
    DV: gl.constexpr = q_lat_desc.block_type.shape[1]
    DPE: gl.constexpr = q_pe_desc.block_type.shape[1]
    BN: gl.constexpr = kv_lat_desc.block_type.shape[0]
    vec_layout: gl.constexpr = gl.SwizzledSharedLayout(1, 1, 1, [0])
    q_lat = gl.allocate_shared_memory(dtype, [BQ, DV], q_lat_desc.layout)
    q_pe = gl.allocate_shared_memory(dtype, [BQ, DPE], q_pe_desc.layout)
    kv_lat = gl.allocate_shared_memory(dtype, [NSLOT, BN, DV], kv_lat_desc.layout)
    kv_pe = gl.allocate_shared_memory(dtype, [NSLOT, BN, DPE], kv_pe_desc.layout)
    # p by tile parity: the owner's own p @ v may still read p_t while the other warpgroup
    # publishes p_{t+1}
    p_smem = gl.allocate_shared_memory(
        dtype, [2, BQ, BN], gl.NVMMASharedLayout.get_default_for([BQ, BN], dtype)
    )
    m_smem = gl.allocate_shared_memory(gl.float32, [BQ], vec_layout)
    alpha_smem = gl.allocate_shared_memory(gl.float32, [BQ], vec_layout)
    l_smem = gl.allocate_shared_memory(gl.float32, [2 * BQ], vec_layout)
    q_bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    kv_full = gl.allocate_shared_memory(gl.int64, [NSLOT, 1], mbarrier.MBarrierLayout())
    kv_empty = gl.allocate_shared_memory(gl.int64, [NSLOT, 1], mbarrier.MBarrierLayout())
    p_ready = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    fin_bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    mbarrier.init(q_bar, count=1)
    for i in gl.static_range(NSLOT):
        mbarrier.init(kv_full.index(i), count=1)
        mbarrier.init(kv_empty.index(i), count=2)  # one arrive per compute warpgroup
    mbarrier.init(p_ready.index(0), count=1)
    mbarrier.init(p_ready.index(1), count=1)
    mbarrier.init(fin_bar, count=2)
    fence_async_shared()

    # the two compute warpgroups run the same function; W (0, 1) is a constexpr of each
    gl.warp_specialize(
        [
            (_compute_warpgroup, (
                q_lat, q_pe, kv_lat, kv_pe, p_smem, m_smem, alpha_smem, l_smem, q_bar, kv_full,
                kv_empty, p_ready, fin_bar, seqlens_ptr, o_ptr, lse_ptr, qk_scale_log2, stride_o_b,
                stride_o_s, stride_o_h, stride_o_split, stride_lse_b, stride_lse_s, stride_lse_h,
                stride_lse_split, S_Q, H, NUM_SPLITS, 0, CAUSAL)),
            (_compute_warpgroup, (
                q_lat, q_pe, kv_lat, kv_pe, p_smem, m_smem, alpha_smem, l_smem, q_bar, kv_full,
                kv_empty, p_ready, fin_bar, seqlens_ptr, o_ptr, lse_ptr, qk_scale_log2, stride_o_b,
                stride_o_s, stride_o_h, stride_o_split, stride_lse_b, stride_lse_s, stride_lse_h,
                stride_lse_split, S_Q, H, NUM_SPLITS, 1, CAUSAL)),
            (_copy_warp, (q_lat_desc, q_pe_desc, kv_lat_desc, kv_pe_desc, q_lat, q_pe, kv_lat,
                          kv_pe, q_bar, kv_full, kv_empty, block_table_ptr, seqlens_ptr,
                          stride_bt_b, S_Q, H, NUM_SPLITS, PAGE_SIZE, CAUSAL)),
        ],
        [4, 1],
        [240, 24],
    )  # fmt: skip


def ws_decode_eligible(args: DecodeArgs, cfg: DecodeConfig) -> bool:
    """True when this call runs this kernel: config ``64 x 32, 8 warps, 4 stages`` (the compute
    warpgroups, the ring of 32-token tiles), a 16-bit cache and a suitable shape."""
    knobs = (cfg.block_size_q, cfg.block_size_k, cfg.num_warps, cfg.num_stages)
    return (
        knobs == (BLOCK_Q, BLOCK_N, 8, STAGES)
        and args.kv_scale is None
        and args.kv_cache.dtype == args.q.dtype
        and sm90_many_heads_call(args)
    )


def launch_ws_decode(
    args: DecodeArgs,
    num_splits: int,
    out: SplitOutputs,
) -> Any:
    """Launch the warp-specialised kernel into ``out``."""
    return launch_decode_kernel(
        _mla_decode_ws_kernel, args, num_splits, out, rows=BLOCK_Q, block_n=BLOCK_N, num_warps=4,
        NSLOT=STAGES,
    )  # fmt: skip


__all__ = ["launch_ws_decode", "ws_decode_eligible"]
