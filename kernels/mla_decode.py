"""MLA decode over a paged latent KV cache: split-KV flash-decoding in Triton.

Algorithm (DeepSeek's absorbed MLA decode, as FlashMLA computes it):
    for each (batch b, kv head g), the query rows are the (query token s, head h) pairs of the
    heads that share kv head g: ``rows = S * (H / HK)``, row ``r`` = token ``r // (H / HK)``,
    head ``g * (H / HK) + r % (H / HK)``. One program takes ``BLOCK_Q`` of those rows and one KV
    split, and walks the split's tokens ``BLOCK_N`` at a time: each KV tile is read ONCE for all
    of the program's rows (the Triton kernels of SGLang/vLLM take 16 heads per program and
    re-read KV 8x for 128 heads). Scores are two dots, latent + rope
    (``q_nope @ k_nope^T + q_pe @ k_pe^T``), since 576 is not a power of two; a token's value
    is its latent row, so the tile loaded for the scores is reused for ``p @ v``. Online
    softmax in base 2 with the scale folded in; then either the final normalised output (one
    split) or a partial output + lse per split, merged by ``_mla_decode_combine_kernel``.

Paging: every token's row is gathered through the block table (``page = table[n // P]``,
``slot = n % P``), so any power-of-two page size works with any ``BLOCK_N``.

fp8 KV: the e4m3 tile is upcast to q's dtype before the dots and ``kv_scale`` is folded into
the softmax scale (scores) and the final rescale (values): ``q . (s k) = s (q . k)``.

Head dims: any ``head_dim_v >= 16`` and ``D_PE = d_qk - head_dim_v >= 0``; each part is padded
to the next power of two (at least 16) and masked, so powers of two waste nothing (DeepSeek
512 + 64). ``D_PE == 0`` drops the rope dot.

Axes: B batch, S query tokens (``s_q``), H query heads, HK kv heads, N kv tokens, P page size,
D_V latent / value dim (512), D_PE rope dim (64), D_QK = D_V + D_PE.
Layouts: q [B, S, H, D_QK]; kv_cache [num_pages, P, HK, D_QK]; block_table [B, max_pages];
out [B, S, H, D_V]; lse [B, H, S]; split partials o_mid [B, S, H, splits, D_V] fp32 and
lse_mid [B, S, H, splits] fp32 (natural log).

References: FlashMLA (deepseek-ai), Flash-Decoding (split-KV), Triton tutorial 06.
"""

from __future__ import annotations

from typing import Any

import torch
import triton
import triton.language as tl

from .configs import DecodeConfig
from .decode_checks import DecodeArgs, check_decode_args, resolve_decode_config
from .device_limits import interpreting

_LOG2E = 1.4426950408889634  # log2(e): exp(x) == exp2(x * log2(e))
LAST_COMPILED: dict[str, Any] = {}
"""The compiled decode kernel of the latest launch (diagnostics: n_regs, n_spills, shared)."""


@triton.jit
def _attend_tile(
    q_nope,
    q_pe,
    kv_head,
    bt_row,
    tile_n,
    end_n,
    limit_r,
    scale_log2,
    m_i,
    l_i,
    acc,
    stride_kv_page,
    stride_kv_slot,
    D_V: tl.constexpr,
    D_PE: tl.constexpr,
    PAGE_SIZE: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_DV: tl.constexpr,
    BLOCK_DPE: tl.constexpr,
    CAUSAL: tl.constexpr,
    HAS_PE: tl.constexpr,
    TILE_IN_PAGE: tl.constexpr,
):
    """One KV tile [tile_n, tile_n + BLOCK_N) for all rows: scores, online softmax, p @ v."""
    offs_dv = tl.arange(0, BLOCK_DV)
    offs_dpe = tl.arange(0, BLOCK_DPE)
    offs_n = tile_n + tl.arange(0, BLOCK_N)
    mask_n = offs_n < end_n
    if TILE_IN_PAGE:
        # PAGE_SIZE % BLOCK_N == 0 and tiles start at multiples of BLOCK_N: one page per tile,
        # so one table entry and contiguous slots (cheaper addresses, provably aligned rows).
        page = tl.load(bt_row + tile_n // PAGE_SIZE)
        slots = tile_n % PAGE_SIZE + tl.arange(0, BLOCK_N)
        kv_row = kv_head + page.to(tl.int64) * stride_kv_page + slots * stride_kv_slot
    else:
        page = tl.load(bt_row + offs_n // PAGE_SIZE, mask=mask_n, other=0)  # per-token gather
        kv_row = (
            kv_head + page.to(tl.int64) * stride_kv_page + (offs_n % PAGE_SIZE) * stride_kv_slot
        )
    k_nope = tl.load(
        kv_row[:, None] + offs_dv[None, :],
        mask=mask_n[:, None] & (offs_dv[None, :] < D_V),
        other=0.0,
    ).to(q_nope.dtype)  # no-op for fp16/bf16; the upcast for fp8
    qk = tl.dot(q_nope, tl.trans(k_nope))
    if HAS_PE:
        k_pe = tl.load(
            kv_row[:, None] + D_V + offs_dpe[None, :],
            mask=mask_n[:, None] & (offs_dpe[None, :] < D_PE),
            other=0.0,
        ).to(q_nope.dtype)
        qk += tl.dot(q_pe, tl.trans(k_pe))
    qk = qk * scale_log2
    valid = mask_n[None, :]
    if CAUSAL:
        valid = valid & (offs_n[None, :] <= limit_r[:, None])
    qk = tl.where(valid, qk, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(qk, axis=1))
    m_use = tl.where(m_new == float("-inf"), 0.0, m_new)  # rows that have seen no key yet
    alpha = tl.exp2(m_i - m_use)
    p = tl.exp2(qk - m_use[:, None])
    l_i = l_i * alpha + tl.sum(p, axis=1)
    acc = acc * alpha[:, None] + tl.dot(p.to(k_nope.dtype), k_nope)
    return m_new, l_i, acc


@triton.jit
def _mla_decode_kernel(
    q_ptr,
    kv_ptr,
    block_table_ptr,
    seqlens_ptr,
    kv_scale_ptr,
    o_ptr,
    lse_ptr,
    qk_scale_log2,
    stride_q_b,
    stride_q_s,
    stride_q_h,
    stride_kv_page,
    stride_kv_slot,
    stride_kv_h,
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
    GROUP,
    H_KV,
    NUM_SPLITS,
    D_V: tl.constexpr,
    D_PE: tl.constexpr,
    PAGE_SIZE: tl.constexpr,
    BLOCK_Q: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_DV: tl.constexpr,
    BLOCK_DPE: tl.constexpr,
    CAUSAL: tl.constexpr,
    HAS_KV_SCALE: tl.constexpr,
    HAS_PE: tl.constexpr,
    TILE_IN_PAGE: tl.constexpr,
    INTERPRET: tl.constexpr,
):
    pid_q = tl.program_id(0)  # row block: the fastest axis, so blocks sharing a KV tile co-run
    pid_split = tl.program_id(1)
    pid_bg = tl.program_id(2)  # b * HK + g
    pid_b = pid_bg // H_KV
    pid_g = pid_bg % H_KV

    seqlen = tl.load(seqlens_ptr + pid_b)
    # Tokens per split, rounded up to whole tiles so that splits never share a tile.
    split_len = tl.cdiv(tl.cdiv(seqlen, NUM_SPLITS), BLOCK_N) * BLOCK_N
    start_n = pid_split * split_len
    end_n = tl.minimum(start_n + split_len, seqlen)

    offs_r = pid_q * BLOCK_Q + tl.arange(0, BLOCK_Q)
    mask_r = offs_r < S_Q * GROUP
    offs_s = offs_r // GROUP  # query token of each row
    offs_h = pid_g * GROUP + offs_r % GROUP  # query head of each row
    offs_dv = tl.arange(0, BLOCK_DV)
    offs_dpe = tl.arange(0, BLOCK_DPE)
    mask_dv = offs_dv < D_V
    mask_dpe = offs_dpe < D_PE
    # Query s of S sees KV positions 0 .. seqlen - S + s (used when CAUSAL).
    limit_r = seqlen - S_Q + offs_s
    if CAUSAL:
        # The block's last row sees the most: no tile past its limit is needed.
        end_n = tl.minimum(end_n, tl.max(tl.where(mask_r, limit_r, -1), axis=0) + 1)

    q_row = q_ptr + pid_b * stride_q_b + offs_s * stride_q_s + offs_h * stride_q_h
    q_nope = tl.load(
        q_row[:, None] + offs_dv[None, :], mask=mask_r[:, None] & mask_dv[None, :], other=0.0
    )
    if HAS_KV_SCALE:
        # fp8 KV: the dots run in fp16 (e4m3 -> fp16 is one native cvt; -> bf16 is not).
        q_nope = q_nope.to(tl.float16)
    if HAS_PE:
        q_pe = tl.load(
            q_row[:, None] + D_V + offs_dpe[None, :],
            mask=mask_r[:, None] & mask_dpe[None, :],
            other=0.0,
        ).to(q_nope.dtype)
    else:
        q_pe = q_nope  # unused placeholder (no rope part)

    scale_log2 = qk_scale_log2
    if HAS_KV_SCALE:
        kv_scale = tl.load(kv_scale_ptr)
        scale_log2 = scale_log2 * kv_scale

    m_i = tl.full([BLOCK_Q], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_Q], dtype=tl.float32)
    acc = tl.zeros([BLOCK_Q, BLOCK_DV], dtype=tl.float32)
    bt_row = block_table_ptr + pid_b * stride_bt_b
    kv_head = kv_ptr + pid_g * stride_kv_h

    if INTERPRET:
        # The CPU interpreter (numpy >= 2.4) cannot use a loaded scalar as a range() bound;
        # the while form is the same loop (compiled code keeps the for form: it pipelines).
        tile_n = start_n
        while tile_n < end_n:
            m_i, l_i, acc = _attend_tile(
                q_nope,
                q_pe,
                kv_head,
                bt_row,
                tile_n,
                end_n,
                limit_r,
                scale_log2,
                m_i,
                l_i,
                acc,
                stride_kv_page,
                stride_kv_slot,
                D_V,
                D_PE,
                PAGE_SIZE,
                BLOCK_N,
                BLOCK_DV,
                BLOCK_DPE,
                CAUSAL,
                HAS_PE,
                TILE_IN_PAGE,
            )
            tile_n += BLOCK_N
    else:
        for tile_n in range(start_n, end_n, BLOCK_N):
            m_i, l_i, acc = _attend_tile(
                q_nope,
                q_pe,
                kv_head,
                bt_row,
                tile_n,
                end_n,
                limit_r,
                scale_log2,
                m_i,
                l_i,
                acc,
                stride_kv_page,
                stride_kv_slot,
                D_V,
                D_PE,
                PAGE_SIZE,
                BLOCK_N,
                BLOCK_DV,
                BLOCK_DPE,
                CAUSAL,
                HAS_PE,
                TILE_IN_PAGE,
            )

    empty = l_i == 0.0
    l_safe = tl.where(empty, 1.0, l_i)
    out_scale = 1.0 / l_safe
    if HAS_KV_SCALE:
        out_scale = out_scale * kv_scale
    acc = acc * out_scale[:, None]
    # lse in natural log: (m + log2 l) * ln 2, -inf for rows that saw no key.
    lse = tl.where(empty, float("-inf"), (m_i + tl.log2(l_safe)) * 0.6931471805599453)

    o_row = o_ptr + pid_b * stride_o_b + offs_s * stride_o_s + offs_h * stride_o_h
    o_row += pid_split * stride_o_split
    tl.store(
        o_row[:, None] + offs_dv[None, :],
        acc.to(o_ptr.dtype.element_ty),
        mask=mask_r[:, None] & mask_dv[None, :],
    )
    lse_row = lse_ptr + pid_b * stride_lse_b + offs_s * stride_lse_s + offs_h * stride_lse_h
    tl.store(lse_row + pid_split * stride_lse_split, lse, mask=mask_r)


@triton.jit
def _mla_decode_combine_kernel(
    o_mid_ptr,
    lse_mid_ptr,
    out_ptr,
    lse_ptr,
    stride_om_b,
    stride_om_s,
    stride_om_h,
    stride_om_split,
    stride_lm_b,
    stride_lm_s,
    stride_lm_h,
    stride_out_b,
    stride_out_s,
    stride_out_h,
    stride_lse_b,
    stride_lse_h,
    stride_lse_s,
    S_Q,
    D_V: tl.constexpr,
    BLOCK_DV: tl.constexpr,
    NUM_SPLITS: tl.constexpr,  # constexpr: the interpreter cannot loop to a runtime bound
):
    pid_bs = tl.program_id(0)  # b * S + s
    pid_h = tl.program_id(1)
    pid_b = pid_bs // S_Q
    pid_s = pid_bs % S_Q
    offs_dv = tl.arange(0, BLOCK_DV)
    mask_dv = offs_dv < D_V
    lse_base = lse_mid_ptr + pid_b * stride_lm_b + pid_s * stride_lm_s + pid_h * stride_lm_h
    o_base = o_mid_ptr + pid_b * stride_om_b + pid_s * stride_om_s + pid_h * stride_om_h

    m = tl.full([], float("-inf"), dtype=tl.float32)
    for split in range(NUM_SPLITS):
        m = tl.maximum(m, tl.load(lse_base + split))
    m_use = tl.where(m == float("-inf"), 0.0, m)
    weight_sum = tl.zeros([], dtype=tl.float32)
    acc = tl.zeros([BLOCK_DV], dtype=tl.float32)
    for split in range(NUM_SPLITS):
        weight = tl.exp(tl.load(lse_base + split) - m_use)  # 0 for empty splits (lse -inf)
        part = tl.load(o_base + split * stride_om_split + offs_dv, mask=mask_dv, other=0.0)
        acc += weight * part
        weight_sum += weight
    empty = weight_sum == 0.0
    acc = acc / tl.where(empty, 1.0, weight_sum)
    lse = tl.where(empty, float("-inf"), m_use + tl.log(tl.where(empty, 1.0, weight_sum)))
    out_row = out_ptr + pid_b * stride_out_b + pid_s * stride_out_s + pid_h * stride_out_h
    tl.store(out_row + offs_dv, acc.to(out_ptr.dtype.element_ty), mask=mask_dv)
    tl.store(lse_ptr + pid_b * stride_lse_b + pid_h * stride_lse_h + pid_s * stride_lse_s, lse)


def mla_decode(
    q: torch.Tensor,
    kv_cache: torch.Tensor,
    block_table: torch.Tensor,
    cache_seqlens: torch.Tensor,
    *,
    head_dim_v: int = 512,
    softmax_scale: float | None = None,
    causal: bool = False,
    kv_scale: torch.Tensor | None = None,
    config: DecodeConfig | None = None,
    out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention of ``s_q`` new tokens per sequence over a paged latent KV cache.

    Args:
        q: [B, S, H, D_QK], fp16 or bf16, last dim contiguous, on a CUDA device (or CPU under
            ``TRITON_INTERPRET=1``). ``D_QK = head_dim_v + D_PE`` (DeepSeek 576 = 512 + 64).
        kv_cache: [num_pages, P, HK, D_QK], dtype of q, or float8_e4m3fn with ``kv_scale``;
            last dim contiguous; P a power of two from 1 to 256; HK divides H.
        block_table: [B, max_pages] int32: the page ids of each sequence, in order.
        cache_seqlens: [B] int32: KV tokens of each sequence (0 gives zeros and lse -inf).
        head_dim_v: D_V, the value dim: the first D_V entries of each key row.
        softmax_scale: score scale; default D_QK ** -0.5.
        causal: query i of S sees KV positions 0 .. seqlen - S + i.
        kv_scale: fp32 scalar tensor (numel 1) on the cache's device; real = stored x scale.
            Required for an fp8 cache, refused otherwise.
        config: launch knobs; ``None`` looks up the recommended config for this device/shape.
        out: optional [B, S, H, D_V] output buffer in q's dtype (written in full).

    Returns:
        out [B, S, H, D_V] in q's dtype; lse [B, H, S] fp32, natural log (-inf: no keys).

    Raises:
        TypeError: a tensor of the wrong dtype, or a non-tensor argument.
        ValueError: a wrong shape, device, layout, page size, head split or config.
    """
    args = check_decode_args(
        q,
        kv_cache,
        block_table,
        cache_seqlens,
        head_dim_v=head_dim_v,
        softmax_scale=softmax_scale,
        causal=causal,
        kv_scale=kv_scale,
        out=out,
    )
    cfg, num_splits = resolve_decode_config(args, config)
    return _launch(args, cfg, num_splits)


def _launch(
    args: DecodeArgs, cfg: DecodeConfig, num_splits: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Allocate, build the grid and launch (one split: direct; else split + combine)."""
    q, kv_cache = args.q, args.kv_cache
    batch, s_q, h_q, _ = q.shape
    h_kv, d_v, d_pe = args.h_kv, args.head_dim_v, args.d_pe
    group = h_q // h_kv
    out = args.out if args.out is not None else q.new_empty(batch, s_q, h_q, d_v)
    lse = torch.empty(batch, h_q, s_q, dtype=torch.float32, device=q.device)
    if batch == 0:
        return out, lse
    if num_splits == 1:
        o_buf, lse_buf = out, lse
        o_strides = (*out.stride()[:3], 0)
        lse_strides = (lse.stride(0), lse.stride(2), lse.stride(1), 0)
    else:
        o_buf = torch.empty(batch, s_q, h_q, num_splits, d_v, dtype=torch.float32, device=q.device)
        lse_buf = torch.empty(batch, s_q, h_q, num_splits, dtype=torch.float32, device=q.device)
        o_strides = o_buf.stride()[:4]
        lse_strides = lse_buf.stride()
    page_size = kv_cache.shape[1]
    block_dv = triton.next_power_of_2(d_v)
    block_dpe = triton.next_power_of_2(max(d_pe, 16))  # dots need K >= 16
    kv_scale = args.kv_scale if args.kv_scale is not None else lse  # unused pointer when absent
    grid = (triton.cdiv(s_q * group, cfg.block_size_q), num_splits, batch * h_kv)
    LAST_COMPILED["decode"] = _mla_decode_kernel[grid](
        q,
        kv_cache,
        args.block_table,
        args.cache_seqlens,
        kv_scale,
        o_buf,
        lse_buf,
        args.softmax_scale * _LOG2E,
        *q.stride()[:3],
        kv_cache.stride(0),
        kv_cache.stride(1),
        kv_cache.stride(2),
        args.block_table.stride(0),
        *o_strides,
        *lse_strides,
        s_q,
        group,
        h_kv,
        num_splits,
        D_V=d_v,
        D_PE=d_pe,
        PAGE_SIZE=page_size,
        BLOCK_Q=cfg.block_size_q,
        BLOCK_N=cfg.block_size_k,
        BLOCK_DV=block_dv,
        BLOCK_DPE=block_dpe,
        CAUSAL=args.causal and s_q > 1,
        HAS_KV_SCALE=args.kv_scale is not None,
        HAS_PE=d_pe > 0,
        TILE_IN_PAGE=page_size >= cfg.block_size_k,
        INTERPRET=interpreting(),
        num_warps=cfg.num_warps,
        num_stages=cfg.num_stages,
    )
    if num_splits > 1:
        _mla_decode_combine_kernel[(batch * s_q, h_q)](
            o_buf,
            lse_buf,
            out,
            lse,
            *o_buf.stride()[:4],
            *lse_buf.stride()[:3],
            *out.stride()[:3],
            *lse.stride(),
            s_q,
            D_V=d_v,
            BLOCK_DV=block_dv,
            NUM_SPLITS=num_splits,
            num_warps=4,
        )
    return out, lse


__all__ = ["mla_decode"]
