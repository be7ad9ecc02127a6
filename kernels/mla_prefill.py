"""MLA prefill: variable-length causal flash attention over packed sequences, in Triton.

Algorithm (FlashAttention-2 forward, DeepSeek's un-absorbed MLA prefill shapes): one program
per (query block, head, sequence) walks the sequence's keys ``BLOCK_N`` at a time with an
online softmax in base 2 (``log2(e)`` folded into the softmax scale, so every exponential is
one ``exp2``). Query blocks of a sequence are visited last-first, so the longest causal rows
start first. The key loop stops at the causal diagonal, and is split in two: blocks every row
of the program fully sees run without any mask; only the diagonal blocks and the sequence's
tail block build and apply a mask. Scores are at most two dots over the head dim, a
power-of-two part and the rest padded with masks (192 = 128 + 64, 112 = 64 + 48->64); the
value dim is padded likewise. Accepted head dims: ``d_qk`` and ``d_v`` multiples of 16 with
``d_qk <= 320`` and ``d_v <= 256`` (``prefill_tuning.head_dims``); others are refused.

Loads: on sm_90+ (when strides allow) q/k/v are read with Hopper's bulk tensor copies (TMA)
through host-side descriptors over the whole packed tensors; elsewhere with masked pointer
loads. Measured on the H200 both run at the same speed; TMA needs fewer registers.

On sm_90 the launcher runs a Gluon kernel instead whenever one takes the call and config
(``mla_prefill_hopper_ws``, the default, and ``mla_prefill_hopper``): they overlap the softmax
with the matrix work, which this kernel cannot (Triton waits for every wgmma).

Causal masks are aligned to the bottom right (FlashAttention): with ``S_k`` keys and ``S_q``
queries, query ``i`` sees keys ``0 .. i + S_k - S_q``; a row that sees no key (``S_k = 0``,
or ``S_k < S_q`` near the top) gives zeros and ``lse = -inf``.

Axes: B batch, M query tokens, N key tokens, H query heads, HK kv heads (divides H),
D_QK query/key head dim (D1 + D2 in the kernel), D_V value head dim.
Layouts: q [total_q, H, D_QK]; k [total_k, HK, D_QK]; v [total_k, HK, D_V] (last dims
contiguous, other strides free); out [total_q, H, D_V]; lse [H, total_q] fp32 (natural log);
cu_seqlens_q / cu_seqlens_k [B + 1] int32.

References: Dao, "FlashAttention-2" (2023); Triton tutorial 06 (fused attention).
"""

from __future__ import annotations

from typing import Any

import torch
import triton
import triton.language as tl

from .configs import PrefillConfig
from .device_limits import interpreting
from .mla_prefill_hopper import launch_hopper_prefill, why_not_hopper
from .mla_prefill_hopper_ws import launch_ws_prefill, ws_prefill_config
from .prefill_args import PrefillArgs, check_prefill_args, resolve_prefill_config
from .prefill_tuning import head_dims
from .tma import descriptor, tma_eligible

_LOG2E = 1.4426950408889634  # log2(e): exp(x) == exp2(x * log2(e))
LAST_COMPILED: dict[str, Any] = {}
"""``prefill_kernel``: ``"gluon_ws"``, ``"gluon"`` or ``"triton"``, the latest launch's kernel."""


@triton.jit
def _load_tile(ptrs, mask_rows, mask_cols, MASK_ROWS: tl.constexpr, MASK_COLS: tl.constexpr):
    """Load a 2-D tile, masking only the axes the caller says may run out of bounds."""
    if MASK_ROWS and MASK_COLS:
        tile = tl.load(ptrs, mask=mask_rows[:, None] & mask_cols[None, :], other=0.0)
    elif MASK_ROWS:
        tile = tl.load(ptrs, mask=mask_rows[:, None], other=0.0)
    elif MASK_COLS:
        tile = tl.load(ptrs, mask=mask_cols[None, :], other=0.0)
    else:
        tile = tl.load(ptrs)
    return tile


@triton.jit
def _load_rows(
    desc, base_ptr, row_start, head, start, seqlen, stride_rows,
    COL0: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr, D_TOTAL: tl.constexpr,
    MASK_ROWS: tl.constexpr, USE_TMA: tl.constexpr,
):  # fmt: skip
    """Rows ``start .. start + BLOCK_R`` of one head, columns ``COL0 .. COL0 + BLOCK_C``.

    TMA: one bulk tensor copy through ``desc`` (a [tokens, heads, dim] descriptor over the
    whole packed tensor); the copy engine zero-fills past the packed total and past the head
    dim, and rows past this sequence (the next sequence's tokens) are masked out of the scores
    by the caller. Pointers: masked loads, rows only when ``MASK_ROWS``.
    """
    if USE_TMA:
        tile = desc.load([row_start + start, head, COL0]).reshape(BLOCK_R, BLOCK_C)
    else:
        # int64 block start: start * stride passes 2**31 on long sequences (~87K tokens at
        # 128 heads x 192); offsets inside the block stay int32
        block_ptr = base_ptr + tl.cast(start, tl.int64) * stride_rows
        offs_r = tl.arange(0, BLOCK_R)
        offs_c = COL0 + tl.arange(0, BLOCK_C)
        tile = _load_tile(
            block_ptr + offs_r[:, None] * stride_rows + offs_c[None, :],
            start + offs_r < seqlen,
            offs_c < D_TOTAL,
            MASK_ROWS,
            COL0 + BLOCK_C > D_TOTAL,  # a head dim padded to a power of two
        )
    return tile


@triton.jit
def _attend_block(
    acc, m_i, l_i, q1, q2, k1_desc, k2_desc, v_desc, k_base, v_base, k_start, pid_hk, start_n,
    offs_m, seqlen_k, diag_offset, qk_scale_log2, stride_k_n, stride_v_n,
    D_QK: tl.constexpr, D_V: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D1: tl.constexpr,
    BLOCK_D2: tl.constexpr, BLOCK_DV: tl.constexpr, IS_BOUNDARY: tl.constexpr,
    CAUSAL: tl.constexpr, USE_TMA: tl.constexpr,
):  # fmt: skip
    """One key block of the online softmax; masks only when ``IS_BOUNDARY``."""
    k1 = _load_rows(k1_desc, k_base, k_start, pid_hk, start_n, seqlen_k, stride_k_n,
                    0, BLOCK_N, BLOCK_D1, D_QK, IS_BOUNDARY, USE_TMA)  # fmt: skip
    qk = tl.dot(q1, tl.trans(k1))  # [BLOCK_M, BLOCK_N] fp32
    if BLOCK_D2 > 0:
        k2 = _load_rows(k2_desc, k_base, k_start, pid_hk, start_n, seqlen_k, stride_k_n,
                        BLOCK_D1, BLOCK_N, BLOCK_D2, D_QK, IS_BOUNDARY, USE_TMA)  # fmt: skip
        qk = tl.dot(q2, tl.trans(k2), qk)
    if IS_BOUNDARY:
        offs_n = start_n + tl.arange(0, BLOCK_N)
        visible = (offs_n < seqlen_k)[None, :]
        if CAUSAL:
            # bottom-right alignment: query row i sees keys 0 .. i + (S_k - S_q)
            visible = visible & (offs_n[None, :] <= offs_m[:, None] + diag_offset)
        qk = tl.where(visible, qk * qk_scale_log2, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(qk, 1))
        # a row with no visible key so far keeps m = -inf: subtract 0 so exp2 gives 0, not NaN
        m_sub = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.math.exp2(qk - m_sub[:, None])
        alpha = tl.math.exp2(m_i - m_sub)
    else:
        m_new = tl.maximum(m_i, tl.max(qk, 1) * qk_scale_log2)
        p = tl.math.exp2(qk * qk_scale_log2 - m_new[:, None])
        alpha = tl.math.exp2(m_i - m_new)
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None]
    v = _load_rows(v_desc, v_base, k_start, pid_hk, start_n, seqlen_k, stride_v_n,
                   0, BLOCK_N, BLOCK_DV, D_V, IS_BOUNDARY, USE_TMA)  # fmt: skip
    acc = tl.dot(p.to(v.dtype), v, acc)
    return acc, m_new, l_i


@triton.jit
def _mla_prefill_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    o_ptr,
    lse_ptr,
    cu_seqlens_q_ptr,
    cu_seqlens_k_ptr,
    q1_desc,
    q2_desc,
    k1_desc,
    k2_desc,
    v_desc,
    qk_scale_log2,
    stride_q_m,
    stride_q_h,
    stride_k_n,
    stride_k_h,
    stride_v_n,
    stride_v_h,
    stride_o_m,
    stride_o_h,
    stride_lse_h,
    GROUP,
    D_QK: tl.constexpr,
    D_V: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D1: tl.constexpr,
    BLOCK_D2: tl.constexpr,
    BLOCK_DV: tl.constexpr,
    CAUSAL: tl.constexpr,
    USE_TMA: tl.constexpr,
    INTERPRET: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_h = tl.program_id(1)
    pid_b = tl.program_id(2)
    q_start = tl.load(cu_seqlens_q_ptr + pid_b)
    seqlen_q = tl.load(cu_seqlens_q_ptr + pid_b + 1) - q_start
    k_start = tl.load(cu_seqlens_k_ptr + pid_b)
    seqlen_k = tl.load(cu_seqlens_k_ptr + pid_b + 1) - k_start
    # last query block first: the longest causal rows start earliest (load balance)
    block_m = tl.cdiv(seqlen_q, BLOCK_M) - 1 - pid_m
    if block_m < 0:
        return  # the grid covers max_seqlen_q; this sequence is shorter
    start_m = block_m * BLOCK_M
    offs_m = start_m + tl.arange(0, BLOCK_M)
    mask_m = offs_m < seqlen_q
    pid_hk = pid_h // GROUP  # GQA: GROUP query heads share one kv head

    q_base = q_ptr + q_start.to(tl.int64) * stride_q_m + pid_h * stride_q_h
    k_base = k_ptr + k_start.to(tl.int64) * stride_k_n + pid_hk * stride_k_h
    v_base = v_ptr + k_start.to(tl.int64) * stride_v_n + pid_hk * stride_v_h

    q1 = _load_rows(q1_desc, q_base, q_start, pid_h, start_m, seqlen_q, stride_q_m,
                    0, BLOCK_M, BLOCK_D1, D_QK, True, USE_TMA)  # fmt: skip
    if BLOCK_D2 > 0:
        q2 = _load_rows(q2_desc, q_base, q_start, pid_h, start_m, seqlen_q, stride_q_m,
                        BLOCK_D1, BLOCK_M, BLOCK_D2, D_QK, True, USE_TMA)  # fmt: skip
    else:
        q2 = q1  # unused: no second dot

    diag_offset = seqlen_k - seqlen_q
    if CAUSAL:
        # keys every row of the block sees: 0 .. start_m + diag_offset (inclusive)
        seen_by_all = tl.maximum(tl.minimum(start_m + diag_offset + 1, seqlen_k), 0)
        full_end = (seen_by_all // BLOCK_N) * BLOCK_N
        end = tl.maximum(tl.minimum(seqlen_k, start_m + BLOCK_M + diag_offset), 0)
    else:
        full_end = (seqlen_k // BLOCK_N) * BLOCK_N
        end = seqlen_k

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_DV], dtype=tl.float32)
    if INTERPRET:
        # The CPU interpreter (numpy >= 2.4) cannot use a loaded scalar as a range() bound;
        # the while form is the same loops (compiled code keeps the for form: it pipelines).
        start_n = 0
        while start_n < end:
            if start_n < full_end:
                acc, m_i, l_i = _attend_block(
                    acc, m_i, l_i, q1, q2, k1_desc, k2_desc, v_desc, k_base, v_base, k_start,
                    pid_hk, start_n, offs_m, seqlen_k, diag_offset, qk_scale_log2, stride_k_n,
                    stride_v_n, D_QK=D_QK, D_V=D_V, BLOCK_N=BLOCK_N, BLOCK_D1=BLOCK_D1,
                    BLOCK_D2=BLOCK_D2, BLOCK_DV=BLOCK_DV, IS_BOUNDARY=False, CAUSAL=CAUSAL,
                    USE_TMA=USE_TMA,
                )  # fmt: skip
            else:
                acc, m_i, l_i = _attend_block(
                    acc, m_i, l_i, q1, q2, k1_desc, k2_desc, v_desc, k_base, v_base, k_start,
                    pid_hk, start_n, offs_m, seqlen_k, diag_offset, qk_scale_log2, stride_k_n,
                    stride_v_n, D_QK=D_QK, D_V=D_V, BLOCK_N=BLOCK_N, BLOCK_D1=BLOCK_D1,
                    BLOCK_D2=BLOCK_D2, BLOCK_DV=BLOCK_DV, IS_BOUNDARY=True, CAUSAL=CAUSAL,
                    USE_TMA=USE_TMA,
                )  # fmt: skip
            start_n += BLOCK_N
    else:
        for start_n in range(0, full_end, BLOCK_N):
            acc, m_i, l_i = _attend_block(
                acc, m_i, l_i, q1, q2, k1_desc, k2_desc, v_desc, k_base, v_base, k_start,
                pid_hk, start_n, offs_m, seqlen_k, diag_offset, qk_scale_log2, stride_k_n,
                stride_v_n, D_QK=D_QK, D_V=D_V, BLOCK_N=BLOCK_N, BLOCK_D1=BLOCK_D1,
                BLOCK_D2=BLOCK_D2, BLOCK_DV=BLOCK_DV, IS_BOUNDARY=False, CAUSAL=CAUSAL,
                USE_TMA=USE_TMA,
            )  # fmt: skip
        for start_n in range(full_end, end, BLOCK_N):
            acc, m_i, l_i = _attend_block(
                acc, m_i, l_i, q1, q2, k1_desc, k2_desc, v_desc, k_base, v_base, k_start,
                pid_hk, start_n, offs_m, seqlen_k, diag_offset, qk_scale_log2, stride_k_n,
                stride_v_n, D_QK=D_QK, D_V=D_V, BLOCK_N=BLOCK_N, BLOCK_D1=BLOCK_D1,
                BLOCK_D2=BLOCK_D2, BLOCK_DV=BLOCK_DV, IS_BOUNDARY=True, CAUSAL=CAUSAL,
                USE_TMA=USE_TMA,
            )  # fmt: skip

    empty = l_i == 0.0  # rows that saw no key: zeros and lse = -inf
    l_safe = tl.where(empty, 1.0, l_i)
    acc = acc / l_safe[:, None]
    # x ln(2): the base-2 lse back to natural log
    lse = tl.where(empty, float("-inf"), (m_i + tl.math.log2(l_safe)) * 0.6931471805599453)
    offs_dv = tl.arange(0, BLOCK_DV)
    o_ptrs = (
        o_ptr
        + (q_start + start_m).to(tl.int64) * stride_o_m  # int64 block start, as in _load_rows
        + pid_h * stride_o_h
        + tl.arange(0, BLOCK_M)[:, None] * stride_o_m
        + offs_dv[None, :]
    )
    o_mask = mask_m[:, None]
    if BLOCK_DV != D_V:
        o_mask = o_mask & (offs_dv < D_V)[None, :]
    tl.store(o_ptrs, acc.to(o_ptr.dtype.element_ty), mask=o_mask)
    lse_row = lse_ptr + pid_h.to(tl.int64) * stride_lse_h + q_start
    tl.store(lse_row + offs_m, lse, mask=mask_m)


def mla_prefill(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    cu_seqlens_k: torch.Tensor,
    max_seqlen_q: int,
    max_seqlen_k: int,
    *,
    causal: bool = True,
    softmax_scale: float | None = None,
    config: PrefillConfig | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Variable-length (causal) attention over packed sequences.

    Args:
        q: [total_q, H, D_QK], fp16 or bf16, last dim contiguous, on a CUDA device (or the CPU
            under ``TRITON_INTERPRET=1``).
        k: [total_k, HK, D_QK], dtype and device of q, last dim contiguous; HK divides H.
        v: [total_k, HK, D_V], dtype and device of q, last dim contiguous.
        cu_seqlens_q: [B + 1] int32 prefix sums of the query lengths (0 first, total_q last).
        cu_seqlens_k: [B + 1] int32 prefix sums of the key lengths (0 first, total_k last).
        max_seqlen_q: >= the longest query sequence (sizes the grid).
        max_seqlen_k: >= the longest key sequence.
        causal: mask aligned to the bottom right (query i sees keys 0 .. i + S_k - S_q).
        softmax_scale: scale of ``q . k``; defaults to ``D_QK ** -0.5``.
        config: launch knobs; ``None`` looks up the recommended config for this device and shape
            (``runtime_configs.config_for``), falling back to the architecture's default.

    Returns:
        out [total_q, H, D_V] in q's dtype; lse [H, total_q] fp32 (natural log, ``-inf`` for
        rows that see no key).

    Raises:
        TypeError: an argument of the wrong type or dtype.
        ValueError: a wrong shape, device, layout, head split, sequence table, head-dim pair
            (see ``prefill_tuning.head_dims``) or a config that cannot run here.
    """
    args = check_prefill_args(
        q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
        causal=causal, softmax_scale=softmax_scale,
    )  # fmt: skip
    cfg = resolve_prefill_config(args, config)
    out, lse, _ = _launch(args, cfg)
    return out, lse


def _empty(shape: tuple[int, ...], *, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Output allocation (one place, so tests can poison it)."""
    return torch.empty(shape, dtype=dtype, device=device)


def _descriptors(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cfg: PrefillConfig,
                 dims: tuple[int, int, int]) -> tuple[Any, ...]:  # fmt: skip
    """Host-side TMA descriptors: q1, q2, k1, k2, v (the second of each pair: the rest dims)."""
    block_d1, block_d2, block_dv = dims

    def desc(t: torch.Tensor, rows: int, cols: int) -> Any:
        return descriptor(t, t.shape, t.stride(), [rows, 1, cols])

    bm, bn = cfg.block_size_q, cfg.block_size_k
    q1, k1 = desc(q, bm, block_d1), desc(k, bn, block_d1)
    q2 = desc(q, bm, block_d2) if block_d2 else q1
    k2 = desc(k, bn, block_d2) if block_d2 else k1
    return q1, q2, k1, k2, desc(v, bn, block_dv)


def _launch(
    args: PrefillArgs,
    cfg: PrefillConfig,
    *,
    use_tma: bool | None = None,
    use_gluon: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor, Any]:
    """Allocate, build the grid and launch; also returns Triton's compiled-kernel handle.

    ``use_gluon``: run a Gluon sm_90 kernel (``mla_prefill_hopper_ws`` for 128-row 8-warp
    configs, else ``mla_prefill_hopper``; ``None``: whenever one takes the call and config,
    ``True`` raises when none can). ``use_tma``: the Triton
    kernel reads q/k/v through TMA descriptors (``None``: when ``tma_eligible``). Which kernel
    ran is left in ``LAST_COMPILED["prefill_kernel"]``.
    """
    q, k, v = args.q, args.k, args.v
    total_q, h, d_qk = q.shape
    d_v = v.shape[2]
    dims = head_dims(d_qk, d_v)
    out = _empty((total_q, h, d_v), dtype=q.dtype, device=q.device)
    lse = _empty((h, total_q), dtype=torch.float32, device=q.device)
    batch = args.cu_seqlens_q.shape[0] - 1
    if total_q == 0 or batch == 0:
        return out, lse, None
    why_not = why_not_hopper(args, cfg) if use_gluon is not False else "not asked for"
    if use_gluon and why_not is not None:
        raise ValueError(
            f"use_gluon: no sm_90 Gluon prefill kernel takes this call: {why_not}; leave it None"
        )
    if why_not is None:
        if ws_prefill_config(cfg):
            LAST_COMPILED["prefill_kernel"] = "gluon_ws"
            return out, lse, launch_ws_prefill(args, cfg, out, lse)
        LAST_COMPILED["prefill_kernel"] = "gluon"
        return out, lse, launch_hopper_prefill(args, cfg, out, lse)
    LAST_COMPILED["prefill_kernel"] = "triton"
    if use_tma is None:
        use_tma = tma_eligible(q, k, v)
    descs = _descriptors(q, k, v, cfg, dims) if use_tma else (q, q, k, k, v)
    grid = (triton.cdiv(max(args.max_seqlen_q, 1), cfg.block_size_q), h, batch)
    compiled = _mla_prefill_kernel[grid](
        q, k, v, out, lse, args.cu_seqlens_q, args.cu_seqlens_k, *descs,
        args.softmax_scale * _LOG2E,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
        out.stride(0), out.stride(1), lse.stride(0),
        h // k.shape[1],
        D_QK=d_qk, D_V=d_v,
        BLOCK_M=cfg.block_size_q, BLOCK_N=cfg.block_size_k,
        BLOCK_D1=dims[0], BLOCK_D2=dims[1], BLOCK_DV=dims[2],
        CAUSAL=args.causal, USE_TMA=use_tma, INTERPRET=interpreting(),
        num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )  # fmt: skip
    return out, lse, compiled


__all__ = ["mla_prefill", "tma_eligible"]
