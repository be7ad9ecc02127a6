"""FlashMLA's dense-decode Python interface over ``mla_decode``: swap the import, keep the calls.

    # from flash_mla import get_mla_metadata, flash_mla_with_kvcache
    from mlafleet.kernels.flash_mla_compat import get_mla_metadata, flash_mla_with_kvcache

Both FlashMLA call forms work:
- current (2025-09 on): ``sched_meta, _ = get_mla_metadata()`` then
  ``flash_mla_with_kvcache(q, k_cache, block_table, cache_seqlens, head_dim_v, sched_meta,
  None, softmax_scale=..., causal=...)``;
- older: ``tile_scheduler_metadata, num_splits = get_mla_metadata(cache_seqlens,
  s_q * h_q // h_kv, h_kv)`` then the same call with ``num_splits`` in 7th place, and fp8
  caches as ``descale_q``/``descale_k``.

As with FlashMLA, one ``get_mla_metadata()`` serves the calls of one decode step (all layers,
the same lengths): on the sm_90 few-heads kernel its first call makes a split plan from the
lengths (``decode_plan``; uneven lengths get splits sized from the batch's work) and the later
calls reuse it; a call with other lengths gets NaN in the rows that changed.

Unlike FlashMLA: any power-of-two page size from 1 to 256, any head count, fp16 and bf16, and
any GPU Triton runs on. Not supported: FlashMLA's sparse attention (``indices`` and friends)
and its packed fp8 layout (``is_fp8_kvcache=True``, 656 bytes per token); for a plain e4m3
cache pass ``k_cache`` as float8_e4m3fn with ``descale_k`` (or ``kv_scale``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .configs import DecodeConfig
from .decode_checks import check_decode_args, resolve_decode_config
from .decode_plan import DecodePlan, plan_for
from .mla_decode import _launch


@dataclass
class FlashMLASchedMeta:
    """Scheduling state shared by the calls of one decode step (FlashMLA's ``sched_meta``).

    The first call fixes the shape (``config``) and the launch plan (``decode_config``,
    ``num_splits`` and, where it applies, ``plan``: the split work list of
    ``decode_plan.plan_decode``, made from that call's ``cache_seqlens``); later calls must have
    the same shape and lengths, as with FlashMLA (one ``get_mla_metadata`` per decode step), and
    reuse the plan without recomputing it. A call whose lengths differ from the first one's
    gets NaN in the rows that changed.
    """

    have_initialized: bool = False
    config: tuple[Any, ...] | None = None
    decode_config: DecodeConfig | None = None
    num_splits: int | None = None
    plan: DecodePlan | None = None
    tile_scheduler_metadata: None = None  # FlashMLA's field; nothing to keep here


def get_mla_metadata(*args: Any, **kwargs: Any) -> tuple[FlashMLASchedMeta, None]:
    """A fresh scheduling state; the plan is made on the first ``flash_mla_with_kvcache`` call.

    Accepts and ignores the arguments of FlashMLA's older form (``cache_seqlens,
    num_heads_per_head_k, num_heads_k``, ...), as FlashMLA itself now does.

    Returns:
        ``(sched_meta, None)``: pass both on to ``flash_mla_with_kvcache``.
    """
    del args, kwargs
    return FlashMLASchedMeta(), None


def flash_mla_with_kvcache(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    block_table: torch.Tensor | None,
    cache_seqlens: torch.Tensor | None,
    head_dim_v: int,
    tile_scheduler_metadata: FlashMLASchedMeta | torch.Tensor | None,
    num_splits: torch.Tensor | None = None,
    softmax_scale: float | None = None,
    causal: bool = False,
    is_fp8_kvcache: bool = False,
    indices: torch.Tensor | None = None,
    attn_sink: torch.Tensor | None = None,
    extra_k_cache: torch.Tensor | None = None,
    extra_indices_in_kvcache: torch.Tensor | None = None,
    topk_length: torch.Tensor | None = None,
    extra_topk_length: torch.Tensor | None = None,
    descale_q: torch.Tensor | None = None,
    descale_k: torch.Tensor | None = None,
    *,
    kv_scale: torch.Tensor | None = None,
    config: DecodeConfig | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """FlashMLA's dense decode: attention of ``s_q`` new tokens over a paged latent cache.

    Args:
        q: [B, S, H, D_QK], bf16/fp16 (or float8_e4m3fn with ``descale_q``).
        k_cache: [num_pages, P, HK, D_QK], dtype of q, or float8_e4m3fn with ``descale_k``.
        block_table: [B, max_pages] int32.
        cache_seqlens: [B] int32.
        head_dim_v: D_V (DeepSeek 512).
        tile_scheduler_metadata: from ``get_mla_metadata`` (a FlashMLA metadata tensor or None
            is accepted too: then the plan is made per call).
        num_splits: FlashMLA's older second metadata value; ignored (None or a tensor).
        softmax_scale: default D_QK ** -0.5.
        causal: query i of S sees KV positions 0 .. seqlen - S + i.
        is_fp8_kvcache: FlashMLA's packed fp8 layout; not supported (raises).
        indices, attn_sink, extra_k_cache, extra_indices_in_kvcache, topk_length,
            extra_topk_length: FlashMLA's sparse attention; not supported (raise).
        descale_q: [1] fp32: q = stored q x descale_q (older fp8 interface; with an fp8 cache,
            ``mla_decode``'s ``q_scale``: fp8 tensor cores on sm_90).
        descale_k: [1] fp32: cache = stored x descale_k (older fp8 interface).
        kv_scale: same as ``descale_k`` (``mla_decode``'s name).
        config: mlafleet launch knobs (default: the recommended config).

    Returns:
        out [B, S, H, D_V] in q's dtype (bf16 for an fp8 q); lse [B, H, S] fp32.

    Raises:
        NotImplementedError: sparse attention or FlashMLA's packed fp8 layout.
        TypeError, ValueError: as ``mla_decode``; or a shape that differs from the one the
            scheduling state was first used with.
    """
    sparse = {
        "indices": indices,
        "attn_sink": attn_sink,
        "extra_k_cache": extra_k_cache,
        "extra_indices_in_kvcache": extra_indices_in_kvcache,
        "topk_length": topk_length,
        "extra_topk_length": extra_topk_length,
    }
    given = sorted(name for name, value in sparse.items() if value is not None)
    if given:
        raise NotImplementedError(
            f"flash_mla_with_kvcache: sparse attention ({', '.join(given)}) is not supported by "
            "mlafleet's compat layer; call FlashMLA itself for sparse decode"
        )
    if is_fp8_kvcache:
        raise NotImplementedError(
            "is_fp8_kvcache=True means FlashMLA's packed fp8 layout (656 bytes per token), which "
            "mlafleet does not read; pass k_cache as float8_e4m3fn with descale_k instead"
        )
    if block_table is None or cache_seqlens is None:
        raise ValueError("block_table, cache_seqlens: expected tensors for dense decode, got None")
    if num_splits is not None and not isinstance(num_splits, torch.Tensor):
        raise TypeError(
            f"num_splits: expected None (or FlashMLA's metadata tensor), got "
            f"{type(num_splits).__name__}"
        )
    if kv_scale is not None and descale_k is not None:
        raise ValueError("descale_k, kv_scale: expected at most one of them, got both")
    scale_k = descale_k if descale_k is not None else kv_scale
    fp8 = getattr(torch, "float8_e4m3fn", None)
    if descale_q is not None and q.dtype != fp8:
        raise ValueError(f"descale_q: only meaningful with a float8_e4m3fn q, got {q.dtype}")
    args = check_decode_args(
        q,
        k_cache,
        block_table,
        cache_seqlens,
        head_dim_v=head_dim_v,
        softmax_scale=softmax_scale,
        causal=causal,
        kv_scale=scale_k,
        out=None,
        q_scale=descale_q,
    )
    meta = (
        tile_scheduler_metadata if isinstance(tile_scheduler_metadata, FlashMLASchedMeta) else None
    )
    shape = (*q.shape[:3], k_cache.shape[1], k_cache.shape[2], causal, scale_k is not None)
    if meta is not None and meta.have_initialized and config is None:
        if meta.config != shape:
            raise ValueError(
                f"tile_scheduler_metadata: made for (batch, s_q, h_q, page_size, h_kv, causal, "
                f"fp8) = {meta.config}, got {shape}; use one get_mla_metadata() per shape"
            )
        assert meta.decode_config is not None
        assert meta.num_splits is not None
        return _launch(args, meta.decode_config, meta.num_splits, plan=meta.plan)
    cfg, splits = resolve_decode_config(args, config)
    if meta is None or config is not None:
        return _launch(args, cfg, splits)
    plan = plan_for(args, cfg, splits)
    meta.have_initialized = True
    meta.config = shape
    meta.decode_config = cfg
    meta.num_splits = splits
    meta.plan = plan if plan.work is not None else None
    return _launch(args, cfg, splits, plan=meta.plan)


__all__ = ["FlashMLASchedMeta", "flash_mla_with_kvcache", "get_mla_metadata"]
