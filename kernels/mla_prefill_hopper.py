"""MLA prefill for Hopper (sm_90) in Gluon: the softmax of one key block under the next's MMAs.

Why a second kernel: the Triton kernel (``mla_prefill.py``) reaches ~63 % of the bf16 matmul
rate on the H200, because Triton 3.6 waits for every wgmma before the next instruction
(``wgmma.wait_group 0`` after each dot): the exponentials of a 128 x 64 score tile (~512 cycles
of MUFU work) and the row bookkeeping never overlap the tensor cores (~1280 cycles a tile).
Gluon issues wgmma asynchronously and waits where the code says, so this kernel runs
FlashAttention-3's intra-warpgroup pipeline (Shah et al., 2024, algorithm 2): in iteration ``j``

    issue  s_j  = q @ k_j^T                 (async)
    issue  o   += p_{j-1} @ v_{j-1}          (async, p in registers: wgmma's A operand)
    wait   s_j                              (p @ v still running)
    softmax(s_j) -> p_j, row max, alpha     (under the p @ v MMAs)
    wait   p @ v;  o *= alpha

Each warpgroup owns 64 query rows (no cross-warpgroup reductions); ``block_size_q`` = 64 per 4
warps. Configs of 128 rows over 8 warps run the warp-specialised variant instead
(``mla_prefill_hopper_ws``: the two warpgroups independent, a copy warp feeding both; the sm_90
default); this kernel serves the 64-row configs.

K and V tiles come by TMA in two rings with an mbarrier per slot: a K slot goes back to the copy
engine as soon as its scores are done, a V slot one iteration later, so the next copies start a
whole iteration before they are needed.

Scope (``why_not_hopper``, ``why_not_shape``), for both Gluon prefill kernels: sm_90,
fp16/bf16, ``d_qk`` a power of two or a power of two plus a smaller one (192 = 128 + 64),
``d_v`` a power of two <= 256, q/k/v with a contiguous last dim and 16-byte aligned token and
head strides (each tensor is read as 2-D [tokens, heads x stride(1)] through one descriptor), at
least one key, configs with ``block_size_q == 16 * num_warps`` (64 x 4 or 128 x 8 warps), 2+
stages, and the tiles within shared memory and registers. Every other call runs the Triton
kernel, with the same results.

Layouts and semantics as ``mla_prefill``: q [total_q, H, D_QK], k [total_k, HK, D_QK],
v [total_k, HK, D_V], out [total_q, H, D_V], lse [H, total_q] (natural log); causal masks
aligned to the bottom right.
"""

from __future__ import annotations

from typing import Any

import torch
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia import hopper
from triton.experimental.gluon.language.nvidia.hopper import fence_async_shared, mbarrier, tma

from .configs import PrefillConfig
from .device_limits import interpreting
from .prefill_args import PrefillArgs
from .prefill_tuning import estimate_registers_per_thread, estimate_shared_mem_bytes, head_dims

_LOG2E = 1.4426950408889634
_GL_DTYPES = {torch.bfloat16: gl.bfloat16, torch.float16: gl.float16}
_MAX_SHARED = 232448  # bytes of shared memory one block may use on sm_90 (227 KB)
Q_IN_REGISTERS = True
"""Let configs whose registers allow it keep q in registers (``q_in_registers``)."""


@gluon.jit
def _issue_k(k1_desc, k2_desc, k1_s, k2_s, bar, row, col, slot, pred, HAS_D2: gl.constexpr):
    """Start the TMA copy of one K tile (rows ``row ..``, columns ``col ..``) into ``slot``."""
    nbytes: gl.constexpr = k1_desc.block_type.nbytes + (k2_desc.block_type.nbytes if HAS_D2 else 0)
    D1: gl.constexpr = k1_desc.block_type.shape[1]
    mbarrier.expect(bar.index(slot), nbytes, pred=pred)
    tma.async_copy_global_to_shared(k1_desc, [row, col], bar.index(slot), k1_s.index(slot),
                                    pred=pred)  # fmt: skip
    if HAS_D2:
        tma.async_copy_global_to_shared(k2_desc, [row, col + D1], bar.index(slot),
                                        k2_s.index(slot), pred=pred)  # fmt: skip


@gluon.jit
def _allocate_tiles(q1_desc, q2_desc, k1_desc, k2_desc, v_desc, STAGES: gl.constexpr):
    """Shared memory for the q tile (two parts) and ``STAGES``-slot K (two parts) and V rings,
    in the descriptors' layouts: ``(q1_s, q2_s, k1_s, k2_s, v_s)``."""
    dtype: gl.constexpr = q1_desc.dtype
    k1_shape: gl.constexpr = k1_desc.block_type.shape
    k2_shape: gl.constexpr = k2_desc.block_type.shape
    v_shape: gl.constexpr = v_desc.block_type.shape
    q1_s = gl.allocate_shared_memory(dtype, q1_desc.block_type.shape, q1_desc.layout)
    q2_s = gl.allocate_shared_memory(dtype, q2_desc.block_type.shape, q2_desc.layout)
    k1_s = gl.allocate_shared_memory(dtype, [STAGES, k1_shape[0], k1_shape[1]], k1_desc.layout)
    k2_s = gl.allocate_shared_memory(dtype, [STAGES, k2_shape[0], k2_shape[1]], k2_desc.layout)
    v_s = gl.allocate_shared_memory(dtype, [STAGES, v_shape[0], v_shape[1]], v_desc.layout)
    return q1_s, q2_s, k1_s, k2_s, v_s


@gluon.jit
def _issue_q(q1_desc, q2_desc, q1_s, q2_s, bar, row, col, HAS_D2: gl.constexpr):
    """Start the TMA copies of the q tile (rows ``row ..``, columns ``col ..``)."""
    nbytes: gl.constexpr = q1_desc.block_type.nbytes + (q2_desc.block_type.nbytes if HAS_D2 else 0)
    mbarrier.expect(bar, nbytes)
    tma.async_copy_global_to_shared(q1_desc, [row, col], bar, q1_s)
    if HAS_D2:
        D1: gl.constexpr = q1_desc.block_type.shape[1]
        tma.async_copy_global_to_shared(q2_desc, [row, col + D1], bar, q2_s)


@gluon.jit
def _issue_v(v_desc, v_s, bar, row, col, slot, pred):
    """Start the TMA copy of one V tile into ``slot``."""
    mbarrier.expect(bar.index(slot), v_desc.block_type.nbytes, pred=pred)
    tma.async_copy_global_to_shared(v_desc, [row, col], bar.index(slot), v_s.index(slot), pred=pred)


@gluon.jit
def _scores(q1, q2, k1_s, k2_s, s_layout: gl.constexpr, HAS_D2: gl.constexpr):
    """Issue ``s = q @ k^T`` ([BM, BN] fp32) asynchronously; the caller waits. ``q1``/``q2``:
    shared memory or registers (wgmma's A operand may be either)."""
    BM: gl.constexpr = q1.shape[0]
    BN: gl.constexpr = k1_s.shape[0]
    s = gl.zeros([BM, BN], gl.float32, layout=s_layout)
    s = hopper.warpgroup_mma(q1, k1_s.permute((1, 0)), s, is_async=True)
    if HAS_D2:
        s = hopper.warpgroup_mma(q2, k2_s.permute((1, 0)), s, is_async=True)
    return s


@gluon.jit
def _softmax(s, m_i, l_i, tile_n, offs_m, full_end, seqlen_k, diag_offset, qk_scale_log2,
             CAUSAL: gl.constexpr):  # fmt: skip
    """Online-softmax step of one score tile: ``(p, m_new, l_new, alpha)``, base 2.

    Tiles before ``full_end`` are seen whole by every row and take no mask; later ones mask
    keys past the sequence and (causal) right of the diagonal.
    """
    BN: gl.constexpr = s.shape[1]
    if tile_n >= full_end:
        offs_n = tile_n + gl.arange(0, BN, layout=gl.SliceLayout(0, s.type.layout))
        visible = (offs_n < seqlen_k)[None, :]
        if CAUSAL:
            visible = visible & (offs_n[None, :] <= offs_m[:, None] + diag_offset)
        s = gl.where(visible, s * qk_scale_log2, float("-inf"))
        m_new = gl.maximum(m_i, gl.max(s, axis=1))
        # a row with no visible key so far keeps m = -inf: subtract 0 so exp2 gives 0, not NaN
        m_sub = gl.where(m_new == float("-inf"), 0.0, m_new)
        p = gl.exp2(s - m_sub[:, None])
        alpha = gl.exp2(m_i - m_sub)
    else:
        m_new = gl.maximum(m_i, gl.max(s, axis=1) * qk_scale_log2)
        p = gl.exp2(s * qk_scale_log2 - m_new[:, None])
        alpha = gl.exp2(m_i - m_new)
    l_new = l_i * alpha + gl.sum(p, axis=1)
    return p, m_new, l_new, alpha


@gluon.jit
def _block(cu_seqlens_q_ptr, cu_seqlens_k_ptr, BM: gl.constexpr):
    """This program's sequence and query block: ``(q_start, seqlen_q, k_start, seqlen_k,
    start_m)``; ``start_m < 0`` when the sequence has no block ``program_id(0)``. Query blocks
    go last-first, so the longest causal rows start earliest (load balance)."""
    pid_b = gl.program_id(2)
    q_start = gl.load(cu_seqlens_q_ptr + pid_b)
    seqlen_q = gl.load(cu_seqlens_q_ptr + pid_b + 1) - q_start
    k_start = gl.load(cu_seqlens_k_ptr + pid_b)
    seqlen_k = gl.load(cu_seqlens_k_ptr + pid_b + 1) - k_start
    start_m = (gl.cdiv(seqlen_q, BM) - 1 - gl.program_id(0)) * BM
    return q_start, seqlen_q, k_start, seqlen_k, start_m


@gluon.jit
def _key_range(start_m, rows, seqlen_k, diag_offset, BN: gl.constexpr, CAUSAL: gl.constexpr):
    """``(full_end, end)`` for query rows ``start_m .. start_m + rows``: keys before
    ``full_end`` (a multiple of ``BN``) are seen by every row, none at or past ``end``."""
    if CAUSAL:
        # keys every row sees: 0 .. start_m + diag_offset (inclusive)
        seen_by_all = gl.maximum(gl.minimum(start_m + diag_offset + 1, seqlen_k), 0)
        full_end = (seen_by_all // BN) * BN
        end = gl.maximum(gl.minimum(seqlen_k, start_m + rows + diag_offset), 0)
    else:
        full_end = (seqlen_k // BN) * BN
        end = seqlen_k
    return full_end, end


@gluon.jit
def _store_rows(acc, m_i, l_i, o_ptr, lse_ptr, q_start, start_m, seqlen_q, pid_h, stride_o_m,
                stride_o_h, stride_lse_h):  # fmt: skip
    """Normalise ``acc`` [rows, D_V] and store it and the lse of query rows ``start_m ..``
    (rows that saw no key: zeros and ``lse = -inf``)."""
    BM: gl.constexpr = acc.shape[0]
    D_V: gl.constexpr = acc.shape[1]
    o_layout: gl.constexpr = acc.type.layout
    empty = l_i == 0.0
    l_safe = gl.where(empty, 1.0, l_i)
    lse = gl.where(empty, float("-inf"), (m_i + gl.log2(l_safe)) * 0.6931471805599453)
    acc = acc * gl.convert_layout(1.0 / l_safe, gl.SliceLayout(1, o_layout))[:, None]
    offs_r = gl.arange(0, BM, layout=gl.SliceLayout(1, o_layout))
    offs_d = gl.arange(0, D_V, layout=gl.SliceLayout(0, o_layout))
    o_ptrs = (
        o_ptr
        + (q_start + start_m).to(gl.int64) * stride_o_m
        + pid_h * stride_o_h
        + offs_r[:, None] * stride_o_m
        + offs_d[None, :]
    )
    gl.store(o_ptrs, acc.to(o_ptr.dtype.element_ty), mask=(start_m + offs_r < seqlen_q)[:, None])
    offs_m = start_m + gl.arange(0, BM, layout=m_i.type.layout)
    lse_row = lse_ptr + pid_h.to(gl.int64) * stride_lse_h + q_start
    gl.store(lse_row + offs_m, lse, mask=offs_m < seqlen_q)


@gluon.jit
def _zero_rows_from(buf, first_zero, layout: gl.constexpr):
    """Zero the rows of a tile in shared memory from ``first_zero`` on (keys past the end:
    they may hold NaN, and ``0 * NaN`` is NaN in ``p @ v``)."""
    tile = buf.load(layout)
    rows = gl.arange(0, tile.shape[0], layout=gl.SliceLayout(1, layout))
    buf.store(gl.where((rows < first_zero)[:, None], tile, gl.zeros_like(tile)))


@gluon.jit
def _mla_prefill_hopper_kernel(
    q1_desc,
    q2_desc,
    k1_desc,
    k2_desc,
    v_desc,
    o_ptr,
    lse_ptr,
    cu_seqlens_q_ptr,
    cu_seqlens_k_ptr,
    qk_scale_log2,
    stride_q_h,
    stride_k_h,
    stride_v_h,
    stride_o_m,
    stride_o_h,
    stride_lse_h,
    GROUP,
    D_V: gl.constexpr,
    HAS_D2: gl.constexpr,
    CAUSAL: gl.constexpr,
    STAGES: gl.constexpr,
    Q_IN_REGISTERS: gl.constexpr,
):
    dtype: gl.constexpr = q1_desc.dtype
    BM: gl.constexpr = q1_desc.block_type.shape[0]
    BN: gl.constexpr = k1_desc.block_type.shape[0]
    W: gl.constexpr = gl.num_warps()
    # each warpgroup computes its own 64 rows of both products
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(
        version=[3, 0], warps_per_cta=[W, 1], instr_shape=[16, BN, 16]
    )
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(
        version=[3, 0], warps_per_cta=[W, 1], instr_shape=[16, D_V, 16]
    )
    p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)
    v_zero_layout: gl.constexpr = gl.BlockedLayout([1, 8], [4, 8], [W, 1], [1, 0])

    pid_h = gl.program_id(1)
    q_start, seqlen_q, k_start, seqlen_k, start_m = _block(cu_seqlens_q_ptr, cu_seqlens_k_ptr, BM)
    if start_m < 0:
        return  # the grid covers max_seqlen_q; this sequence is shorter
    diag_offset = seqlen_k - seqlen_q
    full_end, end = _key_range(start_m, BM, seqlen_k, diag_offset, BN, CAUSAL)
    num_tiles = gl.cdiv(end, BN)
    pid_hk = pid_h // GROUP  # GQA: GROUP query heads share one kv head
    q_col = pid_h * stride_q_h
    k_col = pid_hk * stride_k_h
    v_col = pid_hk * stride_v_h

    q1_s, q2_s, k1_s, k2_s, v_s = _allocate_tiles(q1_desc, q2_desc, k1_desc, k2_desc, v_desc,
                                                  STAGES)  # fmt: skip
    q_bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    k_bar = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    v_bar = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    mbarrier.init(q_bar, count=1)
    for i in gl.static_range(STAGES):
        mbarrier.init(k_bar.index(i), count=1)
        mbarrier.init(v_bar.index(i), count=1)
    fence_async_shared()

    _issue_q(q1_desc, q2_desc, q1_s, q2_s, q_bar, q_start + start_m, q_col, HAS_D2)
    for i in gl.static_range(STAGES):
        _issue_k(k1_desc, k2_desc, k1_s, k2_s, k_bar, k_start + i * BN, k_col, i,
                 i < num_tiles, HAS_D2)  # fmt: skip
        _issue_v(v_desc, v_s, v_bar, k_start + i * BN, v_col, i, i < num_tiles)

    offs_m = start_m + gl.arange(0, BM, layout=gl.SliceLayout(1, s_layout))
    m_i = gl.full([BM], float("-inf"), gl.float32, layout=gl.SliceLayout(1, s_layout))
    l_i = gl.zeros([BM], gl.float32, layout=gl.SliceLayout(1, s_layout))
    acc = gl.zeros([BM, D_V], gl.float32, layout=o_layout)
    p_op = gl.zeros([BM, BN], dtype, layout=p_layout)
    mbarrier.wait(q_bar, 0)
    if Q_IN_REGISTERS:
        # the score wgmma then reads only k from shared memory (a 64 x 64 x 16 step reading
        # both operands there would need all of shared memory's 128 bytes a cycle)
        q_op_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=s_layout,
                                                        k_width=2)  # fmt: skip
        q1 = q1_s.load(q_op_layout)
        q2 = q2_s.load(q_op_layout) if HAS_D2 else q1
    else:
        q1 = q1_s
        q2 = q2_s

    if num_tiles > 0:
        # tile 0: its scores alone (no p @ v to overlap yet)
        mbarrier.wait(k_bar.index(0), 0)
        s = _scores(q1, q2, k1_s.index(0), k2_s.index(0), s_layout, HAS_D2)
        s = hopper.warpgroup_mma_wait(num_outstanding=0, deps=[s])
        gl.thread_barrier()  # both warpgroups are done with K slot 0
        _issue_k(k1_desc, k2_desc, k1_s, k2_s, k_bar, k_start + STAGES * BN, k_col, 0,
                 num_tiles > STAGES, HAS_D2)  # fmt: skip
        p, m_i, l_i, alpha = _softmax(s, m_i, l_i, 0, offs_m, full_end, seqlen_k,
                                      diag_offset, qk_scale_log2, CAUSAL)  # fmt: skip
        p_op = gl.convert_layout(p.to(dtype), p_layout)

    for j in range(1, num_tiles):
        k_slot = j % STAGES
        v_slot = (j - 1) % STAGES
        mbarrier.wait(k_bar.index(k_slot), (j // STAGES) & 1)
        s = _scores(q1, q2, k1_s.index(k_slot), k2_s.index(k_slot), s_layout, HAS_D2)
        mbarrier.wait(v_bar.index(v_slot), ((j - 1) // STAGES) & 1)
        acc = hopper.warpgroup_mma(p_op, v_s.index(v_slot), acc, is_async=True)
        s = hopper.warpgroup_mma_wait(num_outstanding=1, deps=[s])
        # both warpgroups are done with K slot j and (waited last iteration) V slot j - 2
        gl.thread_barrier()
        _issue_k(k1_desc, k2_desc, k1_s, k2_s, k_bar, k_start + (j + STAGES) * BN, k_col,
                 k_slot, j + STAGES < num_tiles, HAS_D2)  # fmt: skip
        v_next = j - 2 + STAGES
        _issue_v(v_desc, v_s, v_bar, k_start + v_next * BN, v_col, (j - 2) % STAGES,
                 (j >= 2) & (v_next < num_tiles))  # fmt: skip
        p, m_i, l_i, alpha = _softmax(s, m_i, l_i, j * BN, offs_m, full_end, seqlen_k,
                                      diag_offset, qk_scale_log2, CAUSAL)  # fmt: skip
        acc, p_op = hopper.warpgroup_mma_wait(num_outstanding=0, deps=[acc, p_op])
        acc = acc * gl.convert_layout(alpha, gl.SliceLayout(1, o_layout))[:, None]
        p_op = gl.convert_layout(p.to(dtype), p_layout)

    if num_tiles > 0:
        last = num_tiles - 1
        v_slot = last % STAGES
        mbarrier.wait(v_bar.index(v_slot), (last // STAGES) & 1)
        if last * BN + BN > seqlen_k:
            _zero_rows_from(v_s.index(v_slot), seqlen_k - last * BN, v_zero_layout)
            fence_async_shared()
            gl.thread_barrier()
        acc = hopper.warpgroup_mma(p_op, v_s.index(v_slot), acc)

    mbarrier.invalidate(q_bar)
    for i in gl.static_range(STAGES):
        mbarrier.invalidate(k_bar.index(i))
        mbarrier.invalidate(v_bar.index(i))

    _store_rows(acc, m_i, l_i, o_ptr, lse_ptr, q_start, start_m, seqlen_q, pid_h, stride_o_m,
                stride_o_h, stride_lse_h)  # fmt: skip


def _row_width(t: torch.Tensor) -> int:
    """Elements from a token's first head to the end of its last one ([tokens, heads, dim])."""
    return (t.shape[1] - 1) * t.stride(1) + t.shape[2]


def shared_bytes(cfg: PrefillConfig, d_qk: int, d_v: int) -> int:
    """Shared memory of these kernels: the tuning space's estimate (q tile, ``num_stages`` K and
    V tiles) plus their mbarriers."""
    return estimate_shared_mem_bytes(cfg, d_qk, d_v) + 8 * (1 + 2 * cfg.num_stages)


def why_not_hopper(args: PrefillArgs, cfg: PrefillConfig) -> str | None:
    """Why the Gluon kernels cannot take the call with ``cfg`` here (``None``: they can)."""
    if interpreting() or not args.q.is_cuda or torch.version.hip is not None:
        return "not an NVIDIA GPU"
    if torch.cuda.get_device_capability(args.q.device) != (9, 0):
        return "not sm_90"
    return why_not_shape(args, cfg)


def why_not_shape(args: PrefillArgs, cfg: PrefillConfig) -> str | None:
    """Why the call's dims, dtype, strides or ``cfg`` rule the Gluon kernels out, whatever the
    device (``None``: they fit; see the module docstring's scope)."""
    q, k, v = args.q, args.k, args.v
    d_qk, d_v = q.shape[2], v.shape[2]
    d1, d2, dv = head_dims(d_qk, d_v)
    if d1 + d2 != d_qk or dv != d_v or d_v > 256:
        return f"head dims {d_qk}/{d_v}: needs d_qk = 2^a (+ 2^b) and d_v = 2^c <= 256"
    if q.dtype not in _GL_DTYPES:
        return f"dtype {q.dtype}"
    if k.shape[0] == 0:
        return "no keys at all"
    for name, t in (("q", q), ("k", k), ("v", v)):
        dim = t.shape[2]
        s0, s1, s2 = t.stride()
        if s2 != 1 or s1 < dim or s0 < _row_width(t) or s0 % 8 or s1 % 8 or t.data_ptr() % 16:
            return f"{name}: strides {t.stride()} (needs heads apart, 16-byte aligned rows)"
    if cfg.block_size_q != 16 * cfg.num_warps or cfg.num_warps not in (4, 8):
        return "config: block_size_q must be 64 with 4 warps or 128 with 8"
    if cfg.block_size_k not in (32, 64, 128) or not 1 <= cfg.num_stages <= 4:
        return "config: block_size_k 32/64/128 and 1-4 stages"
    if cfg.num_stages < 2:
        return "config: needs 2+ stages (K and V rings)"
    regs = estimate_registers_per_thread(cfg, d_v)
    if regs > 255:
        return f"config: ~{regs} registers a thread"
    if shared_bytes(cfg, d_qk, d_v) > _MAX_SHARED:
        return f"config: {shared_bytes(cfg, d_qk, d_v)} bytes of shared memory"
    return None


def q_in_registers(cfg: PrefillConfig, d_qk: int, d_v: int) -> bool:
    """Keep q in registers for the score wgmma when they hold it beside the tiles."""
    return Q_IN_REGISTERS and estimate_registers_per_thread(cfg, d_v) + d_qk // 4 <= 224


def prefill_launch_args(
    args: PrefillArgs, cfg: PrefillConfig, out: torch.Tensor, lse: torch.Tensor
) -> tuple[tuple[int, int, int], list[Any], bool]:
    """The grid, the leading positional arguments both Gluon prefill kernels take, and whether
    ``d_qk`` has a second part.

    Arguments: TMA descriptors ``(q1, q2, k1, k2, v)`` for ``cfg``'s tiles (``q2``/``k2`` repeat
    ``q1``/``k1`` without a second part), out, lse, the sequence tables, the softmax scale in
    base 2, the head strides of q/k/v, out's token and head strides, lse's head stride and the
    query heads per kv head.
    """
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

    q, k, v = args.q, args.k, args.v
    d1, d2, _ = head_dims(q.shape[2], v.shape[2])
    gl_dtype = _GL_DTYPES[q.dtype]

    def desc(t: torch.Tensor, rows: int, cols: int) -> Any:
        # [tokens, heads, dim] seen as 2-D [tokens, heads' columns]: head h's dims start at
        # column h * stride(1); a tile never crosses into the gap after a head's dims
        layout = gl.NVMMASharedLayout.get_default_for([rows, cols], gl_dtype)
        shape = [t.shape[0], _row_width(t)]
        return TensorDescriptor(t, shape, [t.stride(0), 1], [rows, cols], layout)

    bm, bn = cfg.block_size_q, cfg.block_size_k
    q1 = desc(q, bm, d1)
    k1 = desc(k, bn, d1)
    q2 = desc(q, bm, d2) if d2 else q1
    k2 = desc(k, bn, d2) if d2 else k1
    batch = args.cu_seqlens_q.shape[0] - 1
    grid = ((max(args.max_seqlen_q, 1) + bm - 1) // bm, q.shape[1], batch)
    leading = [
        q1, q2, k1, k2, desc(v, bn, v.shape[2]), out, lse, args.cu_seqlens_q, args.cu_seqlens_k,
        args.softmax_scale * _LOG2E, q.stride(1), k.stride(1), v.stride(1), out.stride(0),
        out.stride(1), lse.stride(0), q.shape[1] // k.shape[1],
    ]  # fmt: skip
    return grid, leading, d2 > 0


def launch_hopper_prefill(
    args: PrefillArgs, cfg: PrefillConfig, out: torch.Tensor, lse: torch.Tensor
) -> Any:
    """Launch into ``out`` [total_q, H, D_V] and ``lse`` [H, total_q] (allocated by the caller)."""
    grid, leading, has_d2 = prefill_launch_args(args, cfg, out, lse)
    d_qk, d_v = args.q.shape[2], args.v.shape[2]
    return _mla_prefill_hopper_kernel[grid](
        *leading, D_V=d_v, HAS_D2=has_d2, CAUSAL=args.causal, STAGES=cfg.num_stages,
        Q_IN_REGISTERS=q_in_registers(cfg, d_qk, d_v), num_warps=cfg.num_warps,
    )  # fmt: skip


__all__ = [
    "launch_hopper_prefill",
    "prefill_launch_args",
    "shared_bytes",
    "why_not_hopper",
    "why_not_shape",
]
