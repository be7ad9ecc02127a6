"""fp32 PyTorch references for MLA decode and prefill: the source of truth for every check.

Same arguments and return layout as the Triton launchers (``mla_decode``, ``mla_prefill``),
computed sequence by sequence in float32 with plain ``torch`` ops. Slow, obvious, and never
reads a KV slot outside a sequence (so NaN-poisoned padding cannot leak into the result).
"""

from __future__ import annotations

import math

import torch


def _dequant_cache(kv_cache: torch.Tensor, kv_scale: torch.Tensor | None) -> torch.Tensor:
    """[num_pages, P, HK, D] any dtype -> fp32, times ``kv_scale`` when given."""
    cache = kv_cache.float()
    if kv_scale is not None:
        cache = cache * kv_scale.float().reshape(())
    return cache


def mla_decode_ref(
    q: torch.Tensor,
    kv_cache: torch.Tensor,
    block_table: torch.Tensor,
    cache_seqlens: torch.Tensor,
    *,
    head_dim_v: int = 512,
    softmax_scale: float | None = None,
    causal: bool = False,
    kv_scale: torch.Tensor | None = None,
    config: object | None = None,
    q_scale: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention of ``s_q`` new tokens over a paged KV cache, in fp32.

    Args:
        q: [B, S, H, D_QK], fp16/bf16/fp32, or float8_e4m3fn with ``q_scale``.
        kv_cache: [num_pages, P, HK, D_QK], dtype of q or float8_e4m3fn (with ``kv_scale``).
        block_table: [B, max_pages] int32: page ids of each sequence, in order.
        cache_seqlens: [B] int32: KV tokens of each sequence (the new tokens included).
        head_dim_v: D_V; a token's value is the first D_V entries of its key row.
        softmax_scale: defaults to D_QK ** -0.5.
        causal: query i of S sees KV positions 0 .. seqlen - S + i.
        kv_scale: fp32 scalar tensor; stored value x scale = real value.
        config: ignored (accepted so the reference is call-compatible with the kernel).
        q_scale: fp32 scalar tensor with an fp8 q; stored value x scale = real value.

    Returns:
        out [B, S, H, D_V] in q's dtype (bf16 for an fp8 q); lse [B, H, S] fp32 (natural log,
        -inf for no keys).
    """
    del config
    batch, s_q, h_q, d_qk = q.shape
    _, page_size, h_kv, _ = kv_cache.shape
    scale = softmax_scale if softmax_scale is not None else d_qk**-0.5
    group = h_q // h_kv
    cache = _dequant_cache(kv_cache, kv_scale)
    q_mult = q_scale.float().reshape(()) if q_scale is not None else 1.0
    out_dtype = torch.bfloat16 if q_scale is not None else q.dtype
    out = torch.zeros(batch, s_q, h_q, head_dim_v, dtype=torch.float32, device=q.device)
    lse = torch.full((batch, h_q, s_q), -math.inf, dtype=torch.float32, device=q.device)
    for b in range(batch):
        seqlen = int(cache_seqlens[b])
        if seqlen == 0:
            continue
        num_pages = (seqlen + page_size - 1) // page_size
        pages = block_table[b, :num_pages].long()
        kv = cache[pages].reshape(num_pages * page_size, h_kv, d_qk)[:seqlen]  # [N, HK, D]
        kv = kv.repeat_interleave(group, dim=1)  # [N, H, D]
        qb = q[b].float() * q_mult  # [S, H, D]
        scores = torch.einsum("shd,nhd->hsn", qb, kv) * scale  # [H, S, N]
        if causal:
            pos = torch.arange(seqlen, device=q.device)
            limit = seqlen - s_q + torch.arange(s_q, device=q.device)  # [S]
            masked = pos[None, :] > limit[:, None]  # [S, N]
            scores = scores.masked_fill(masked[None], -math.inf)
        row_lse = torch.logsumexp(scores, dim=-1)  # [H, S]
        probs = torch.exp(scores - row_lse[..., None])
        probs = torch.nan_to_num(probs, nan=0.0)  # rows with every key masked
        out[b] = torch.einsum("hsn,nhd->shd", probs, kv[..., :head_dim_v])
        lse[b] = row_lse
    return out.to(out_dtype), lse


def mla_prefill_ref(
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
    config: object | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Variable-length attention over packed sequences, in fp32.

    Args:
        q: [total_q, H, D_QK], fp16/bf16/fp32.
        k: [total_k, HK, D_QK]; v: [total_k, HK, D_V]; HK divides H.
        cu_seqlens_q, cu_seqlens_k: [B + 1] int32 prefix sums of the sequence lengths.
        max_seqlen_q, max_seqlen_k: upper bounds (unused by the reference; kept for the signature).
        causal: mask aligned to the bottom right (query i of S_q sees keys 0 .. S_k - S_q + i).
        softmax_scale: defaults to D_QK ** -0.5.
        config: ignored.

    Returns:
        out [total_q, H, D_V] in q's dtype; lse [H, total_q] fp32 (-inf for rows with no keys).
    """
    del max_seqlen_q, max_seqlen_k, config
    total_q, h, d_qk = q.shape
    h_k, d_v = v.shape[1], v.shape[2]
    scale = softmax_scale if softmax_scale is not None else d_qk**-0.5
    group = h // h_k
    out = torch.zeros(total_q, h, d_v, dtype=torch.float32, device=q.device)
    lse = torch.full((h, total_q), -math.inf, dtype=torch.float32, device=q.device)
    batch = cu_seqlens_q.numel() - 1
    for b in range(batch):
        q0, q1 = int(cu_seqlens_q[b]), int(cu_seqlens_q[b + 1])
        k0, k1 = int(cu_seqlens_k[b]), int(cu_seqlens_k[b + 1])
        s_q, s_k = q1 - q0, k1 - k0
        if s_q == 0 or s_k == 0:
            continue
        qb = q[q0:q1].float()  # [S_q, H, D]
        kb = k[k0:k1].float().repeat_interleave(group, dim=1)  # [S_k, H, D]
        vb = v[k0:k1].float().repeat_interleave(group, dim=1)  # [S_k, H, D_V]
        scores = torch.einsum("qhd,khd->hqk", qb, kb) * scale
        if causal:
            rows = torch.arange(s_q, device=q.device)[:, None] + (s_k - s_q)
            cols = torch.arange(s_k, device=q.device)[None, :]
            scores = scores.masked_fill((cols > rows)[None], -math.inf)
        row_lse = torch.logsumexp(scores, dim=-1)  # [H, S_q]
        probs = torch.nan_to_num(torch.exp(scores - row_lse[..., None]), nan=0.0)
        out[q0:q1] = torch.einsum("hqk,khd->qhd", probs, vb)
        lse[:, q0:q1] = row_lse
    return out.to(q.dtype), lse
