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

Kernel choice (``_launch``): on sm_90, with DeepSeek's 512 + 64 dims, one KV head and pages of
whole 64-token tiles, the config picks a Gluon kernel: ``64 x 64, 8 warps, 1 stage`` (64+ heads
per KV head, 16-bit cache; the default) FlashMLA's seesaw schedule ``mla_decode_hopper_seesaw``,
``64 x 64, 8 warps, 2 stages`` (64+ heads) the lockstep ``mla_decode_hopper``,
``64 x 32, 8 warps, 4 stages`` (64+ heads, 16-bit cache) the warp-specialised
``mla_decode_hopper_ws``, ``16 x 64, 4 warps, 2 stages`` (16-48 heads, 16-bit cache; the
default) ``mla_decode_hopper_few``, ``16 x 64, 8 warps, 1-3 stages`` (16-48 heads, fp8 cache;
1 stage, the paired kernel, the default) ``mla_decode_hopper_few_fp8``, and with an fp8 q
(``q_scale``) and 1-2 stages the fp8 tensor-core kernel ``mla_decode_hopper_fp8_mma`` (1.2-2.1x
this kernel on the H200), and at 64+ heads over an fp8 cache ``64 x 64, 8 warps, 1 stage`` (the
default) the fp8 seesaw ``mla_decode_hopper_seesaw_fp8``: with an fp8 q the 16-bit seesaw's
speed, with a 16-bit q (split in the kernel into two fp8 terms) 1.06-1.69x the lockstep kernel
(docs/kernels/NOTES.md).
Everything else runs the Triton kernel below. On sm_90 the Triton kernel reads KV tiles of
64-row blocks through TMA descriptors
(``kv_tma_eligible``).

References: FlashMLA (deepseek-ai), Flash-Decoding (split-KV), Triton tutorial 06.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
import triton
import triton.language as tl

from .configs import DecodeConfig
from .decode_checks import DecodeArgs, check_decode_args, resolve_decode_config
from .decode_plan import DecodePlan, call_shape, plan_runs
from .device_limits import interpreting
from .fp8_q import dequantised_q
from .gluon_launch import SplitOutputs
from .mla_decode_hopper import hopper_decode_eligible, launch_hopper_decode
from .mla_decode_hopper_few import few_heads_eligible, launch_few_heads_decode
from .mla_decode_hopper_few_fp8 import few_fp8_eligible, launch_few_fp8_decode
from .mla_decode_hopper_fp8_mma import fp8_mma_eligible, launch_fp8_mma_decode
from .mla_decode_hopper_seesaw import launch_seesaw_decode, seesaw_decode_eligible
from .mla_decode_hopper_seesaw_fp8 import fp8_seesaw_eligible, launch_fp8_seesaw_decode
from .mla_decode_hopper_ws import launch_ws_decode, ws_decode_eligible
from .pdl import pdl_launch_options, tl_gdc_enter
from .tma import MAX_BOX, descriptor, tma_eligible

_LOG2E = 1.4426950408889634  # log2(e): exp(x) == exp2(x * log2(e))
LAST_COMPILED: dict[str, Any] = {}
"""Diagnostics of the latest launch: ``decode`` the compiled kernel (n_regs, n_spills,
shared), ``decode_tma`` whether it read KV through TMA descriptors."""


@triton.jit
def _load_kv_part(
    desc,
    kv_row,
    tma_row,
    pid_g,
    mask_n,
    like,
    COL0: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_C: tl.constexpr,
    D_END: tl.constexpr,
    MASKED: tl.constexpr,
    MASK_COLS: tl.constexpr,
    USE_TMA: tl.constexpr,
):
    """Columns ``COL0 .. COL0 + BLOCK_C`` of one KV tile, [BLOCK_N, BLOCK_C] in ``like``'s dtype.

    TMA: one bulk copy of rows ``tma_row ..`` of the [pages * P, HK, D_QK] descriptor (whole
    tiles of one page); the slots past the sequence hold whatever the cache holds, so a
    ``MASKED`` tile zeroes them (0 * NaN would poison ``p @ v``). Pointers: ``kv_row`` [BLOCK_N]
    row addresses; rows masked only when ``MASKED``, columns only when ``MASK_COLS`` (a dim
    padded to a power of two).
    """
    if USE_TMA:
        tile = desc.load([tma_row, pid_g, COL0]).reshape(BLOCK_N, BLOCK_C).to(like.dtype)
        if MASKED:
            tile = tl.where(mask_n[:, None], tile, 0.0).to(like.dtype)
    else:
        offs_c = COL0 + tl.arange(0, BLOCK_C)
        ptrs = kv_row[:, None] + offs_c[None, :]
        if MASKED and MASK_COLS:
            tile = tl.load(ptrs, mask=mask_n[:, None] & (offs_c < D_END)[None, :], other=0.0)
        elif MASKED:
            tile = tl.load(ptrs, mask=mask_n[:, None], other=0.0)
        elif MASK_COLS:
            tile = tl.load(ptrs, mask=(offs_c < D_END)[None, :], other=0.0)
        else:
            tile = tl.load(ptrs)
        tile = tile.to(like.dtype)  # no-op for fp16/bf16; the upcast for fp8
    return tile


@triton.jit
def _attend_tile(
    q_lo,
    q_hi,
    q_pe,
    desc_lo,
    desc_pe,
    kv_head,
    bt_row,
    pid_g,
    tile_n,
    end_n,
    limit_r,
    scale_log2,
    m_i,
    l_i,
    acc_lo,
    acc_hi,
    stride_kv_page,
    stride_kv_slot,
    D_V: tl.constexpr,
    D_PE: tl.constexpr,
    PAGE_SIZE: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_DVP: tl.constexpr,
    BLOCK_DPE: tl.constexpr,
    CAUSAL: tl.constexpr,
    HAS_PE: tl.constexpr,
    TWO_PARTS: tl.constexpr,
    MASK_LO: tl.constexpr,
    MASK_HI: tl.constexpr,
    MASK_DPE: tl.constexpr,
    TILE_IN_PAGE: tl.constexpr,
    MASKED: tl.constexpr,
    USE_TMA: tl.constexpr,
):
    """One KV tile [tile_n, tile_n + BLOCK_N) for all rows: scores, online softmax, p @ v.

    The latent part is handled as one or two column halves (``TWO_PARTS``: 512 = 2 x 256, the
    largest tile one bulk copy moves); each half is a score dot and the value tile of its half
    of the output. ``MASKED``: the tile may hold slots past ``end_n`` or (causal) past some
    row's limit; unmasked tiles skip every mask.
    """
    offs_n = tile_n + tl.arange(0, BLOCK_N)
    mask_n = offs_n < end_n
    if TILE_IN_PAGE:
        # PAGE_SIZE % BLOCK_N == 0 and tiles start at multiples of BLOCK_N: one page per tile,
        # so one table entry and contiguous slots (cheaper addresses, provably aligned rows).
        page = tl.load(bt_row + tile_n // PAGE_SIZE)
        slot0 = tile_n % PAGE_SIZE
        tma_row = page * PAGE_SIZE + slot0
        kv_row = (
            kv_head
            + page.to(tl.int64) * stride_kv_page
            + (slot0 + tl.arange(0, BLOCK_N)) * stride_kv_slot
        )
    else:
        if MASKED:
            page = tl.load(bt_row + offs_n // PAGE_SIZE, mask=mask_n, other=0)  # per-token gather
        else:
            page = tl.load(bt_row + offs_n // PAGE_SIZE)
        kv_row = (
            kv_head + page.to(tl.int64) * stride_kv_page + (offs_n % PAGE_SIZE) * stride_kv_slot
        )
        tma_row = 0
    k_lo = _load_kv_part(desc_lo, kv_row, tma_row, pid_g, mask_n, q_lo, 0, BLOCK_N, BLOCK_DVP,
                         D_V, MASKED, MASK_LO, USE_TMA)  # fmt: skip
    qk = tl.dot(q_lo, tl.trans(k_lo))
    if TWO_PARTS:
        k_hi = _load_kv_part(desc_lo, kv_row, tma_row, pid_g, mask_n, q_lo, BLOCK_DVP, BLOCK_N,
                             BLOCK_DVP, D_V, MASKED, MASK_HI, USE_TMA)  # fmt: skip
        qk = tl.dot(q_hi, tl.trans(k_hi), qk)
    else:
        k_hi = k_lo  # unused placeholder
    if HAS_PE:
        k_pe = _load_kv_part(desc_pe, kv_row, tma_row, pid_g, mask_n, q_lo, D_V, BLOCK_N,
                             BLOCK_DPE, D_V + D_PE, MASKED, MASK_DPE, USE_TMA)  # fmt: skip
        qk = tl.dot(q_pe, tl.trans(k_pe), qk)
    qk = qk * scale_log2
    if MASKED:
        valid = mask_n[None, :]
        if CAUSAL:
            valid = valid & (offs_n[None, :] <= limit_r[:, None])
        qk = tl.where(valid, qk, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(qk, axis=1))
        m_use = tl.where(m_new == float("-inf"), 0.0, m_new)  # rows that have seen no key yet
    else:
        m_new = tl.maximum(m_i, tl.max(qk, axis=1))  # every score finite: m_new > -inf
        m_use = m_new
    alpha = tl.exp2(m_i - m_use)
    p = tl.exp2(qk - m_use[:, None])
    l_i = l_i * alpha + tl.sum(p, axis=1)
    p = p.to(k_lo.dtype)
    acc_lo = tl.dot(p, k_lo, acc_lo * alpha[:, None])
    if TWO_PARTS:
        acc_hi = tl.dot(p, k_hi, acc_hi * alpha[:, None])
    return m_new, l_i, acc_lo, acc_hi


@triton.jit
def _attend_span(
    first_n,
    stop_n,
    q_lo,
    q_hi,
    q_pe,
    desc_lo,
    desc_pe,
    kv_head,
    bt_row,
    pid_g,
    end_n,
    limit_r,
    scale_log2,
    m_i,
    l_i,
    acc_lo,
    acc_hi,
    stride_kv_page,
    stride_kv_slot,
    D_V: tl.constexpr,
    D_PE: tl.constexpr,
    PAGE_SIZE: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_DVP: tl.constexpr,
    BLOCK_DPE: tl.constexpr,
    CAUSAL: tl.constexpr,
    HAS_PE: tl.constexpr,
    TWO_PARTS: tl.constexpr,
    MASK_LO: tl.constexpr,
    MASK_HI: tl.constexpr,
    MASK_DPE: tl.constexpr,
    TILE_IN_PAGE: tl.constexpr,
    MASKED: tl.constexpr,
    USE_TMA: tl.constexpr,
    INTERPRET: tl.constexpr,
):
    """Tiles ``first_n, first_n + BLOCK_N, ... < stop_n``: the KV loop.

    The CPU interpreter (numpy >= 2.4) cannot use a loaded scalar as a ``range()`` bound, so
    there the loop is a ``while`` with the same body; compiled code keeps the ``for`` (only
    ``for`` loops are software-pipelined).
    """
    if INTERPRET:
        tile_n = first_n
        while tile_n < stop_n:
            m_i, l_i, acc_lo, acc_hi = _attend_tile(
                q_lo, q_hi, q_pe, desc_lo, desc_pe, kv_head, bt_row, pid_g, tile_n, end_n,
                limit_r, scale_log2, m_i, l_i, acc_lo, acc_hi, stride_kv_page, stride_kv_slot,
                D_V, D_PE, PAGE_SIZE, BLOCK_N, BLOCK_DVP, BLOCK_DPE, CAUSAL, HAS_PE, TWO_PARTS,
                MASK_LO, MASK_HI, MASK_DPE, TILE_IN_PAGE, MASKED, USE_TMA,
            )  # fmt: skip
            tile_n += BLOCK_N
    else:
        for tile_n in range(first_n, stop_n, BLOCK_N):
            m_i, l_i, acc_lo, acc_hi = _attend_tile(
                q_lo, q_hi, q_pe, desc_lo, desc_pe, kv_head, bt_row, pid_g, tile_n, end_n,
                limit_r, scale_log2, m_i, l_i, acc_lo, acc_hi, stride_kv_page, stride_kv_slot,
                D_V, D_PE, PAGE_SIZE, BLOCK_N, BLOCK_DVP, BLOCK_DPE, CAUSAL, HAS_PE, TWO_PARTS,
                MASK_LO, MASK_HI, MASK_DPE, TILE_IN_PAGE, MASKED, USE_TMA,
            )  # fmt: skip
    return m_i, l_i, acc_lo, acc_hi


@triton.jit
def _mla_decode_kernel(
    q_ptr,
    kv_ptr,
    block_table_ptr,
    seqlens_ptr,
    kv_scale_ptr,
    o_ptr,
    lse_ptr,
    desc_lo,
    desc_pe,
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
    BLOCK_DVP: tl.constexpr,
    BLOCK_DPE: tl.constexpr,
    CAUSAL: tl.constexpr,
    HAS_KV_SCALE: tl.constexpr,
    HAS_PE: tl.constexpr,
    TWO_PARTS: tl.constexpr,
    MASK_LO: tl.constexpr,
    MASK_HI: tl.constexpr,
    MASK_DPE: tl.constexpr,
    TILE_IN_PAGE: tl.constexpr,
    USE_TMA: tl.constexpr,
    INTERPRET: tl.constexpr,
    PDL: tl.constexpr,  # programmatic dependent launch (``pdl``)
):
    tl_gdc_enter(PDL, NUM_SPLITS)
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
    # Query s of S sees KV positions 0 .. seqlen - S + s (used when CAUSAL).
    limit_r = seqlen - S_Q + offs_s
    # Tiles below full_n need no mask: every slot is inside the sequence and (causal) seen by
    # every row of the block (its first row sees the least). The rest (the sequence's tail
    # tile, the causal diagonal) run the masked tile.
    full_n = end_n
    if CAUSAL:
        # The block's last row sees the most: no tile past its limit is needed.
        end_n = tl.minimum(end_n, tl.max(tl.where(mask_r, limit_r, -1), axis=0) + 1)
        full_n = tl.minimum(end_n, seqlen - S_Q + (pid_q * BLOCK_Q) // GROUP + 1)
    full_n = start_n + tl.maximum(full_n - start_n, 0) // BLOCK_N * BLOCK_N

    q_row = q_ptr + pid_b * stride_q_b + offs_s * stride_q_s + offs_h * stride_q_h
    offs_dvp = tl.arange(0, BLOCK_DVP)
    offs_dpe = tl.arange(0, BLOCK_DPE)
    q_lo = tl.load(
        q_row[:, None] + offs_dvp[None, :],
        mask=mask_r[:, None] & (offs_dvp < D_V)[None, :],
        other=0.0,
    )
    if HAS_KV_SCALE:
        # fp8 KV: the dots run in fp16 (e4m3 -> fp16 is one native cvt; -> bf16 is not).
        q_lo = q_lo.to(tl.float16)
    if TWO_PARTS:
        q_hi = tl.load(
            q_row[:, None] + BLOCK_DVP + offs_dvp[None, :],
            mask=mask_r[:, None] & (BLOCK_DVP + offs_dvp < D_V)[None, :],
            other=0.0,
        ).to(q_lo.dtype)
    else:
        q_hi = q_lo  # unused placeholder
    if HAS_PE:
        q_pe = tl.load(
            q_row[:, None] + D_V + offs_dpe[None, :],
            mask=mask_r[:, None] & (offs_dpe < D_PE)[None, :],
            other=0.0,
        ).to(q_lo.dtype)
    else:
        q_pe = q_lo  # unused placeholder (no rope part)

    scale_log2 = qk_scale_log2
    if HAS_KV_SCALE:
        kv_scale = tl.load(kv_scale_ptr)
        scale_log2 = scale_log2 * kv_scale

    m_i = tl.full([BLOCK_Q], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_Q], dtype=tl.float32)
    acc_lo = tl.zeros([BLOCK_Q, BLOCK_DVP], dtype=tl.float32)
    if TWO_PARTS:
        acc_hi = tl.zeros([BLOCK_Q, BLOCK_DVP], dtype=tl.float32)
    else:
        acc_hi = tl.zeros([BLOCK_Q, 16], dtype=tl.float32)  # unused placeholder
    bt_row = block_table_ptr + pid_b * stride_bt_b
    kv_head = kv_ptr + pid_g * stride_kv_h

    m_i, l_i, acc_lo, acc_hi = _attend_span(
        start_n, full_n, q_lo, q_hi, q_pe, desc_lo, desc_pe, kv_head, bt_row, pid_g, end_n,
        limit_r, scale_log2, m_i, l_i, acc_lo, acc_hi, stride_kv_page, stride_kv_slot, D_V, D_PE,
        PAGE_SIZE, BLOCK_N, BLOCK_DVP, BLOCK_DPE, CAUSAL, HAS_PE, TWO_PARTS, MASK_LO, MASK_HI,
        MASK_DPE, TILE_IN_PAGE, False, USE_TMA, INTERPRET,
    )  # fmt: skip
    m_i, l_i, acc_lo, acc_hi = _attend_span(
        full_n, end_n, q_lo, q_hi, q_pe, desc_lo, desc_pe, kv_head, bt_row, pid_g, end_n,
        limit_r, scale_log2, m_i, l_i, acc_lo, acc_hi, stride_kv_page, stride_kv_slot, D_V, D_PE,
        PAGE_SIZE, BLOCK_N, BLOCK_DVP, BLOCK_DPE, CAUSAL, HAS_PE, TWO_PARTS, MASK_LO, MASK_HI,
        MASK_DPE, TILE_IN_PAGE, True, USE_TMA, INTERPRET,
    )  # fmt: skip

    empty = l_i == 0.0
    l_safe = tl.where(empty, 1.0, l_i)
    out_scale = 1.0 / l_safe
    if HAS_KV_SCALE:
        out_scale = out_scale * kv_scale
    # lse in natural log: (m + log2 l) * ln 2, -inf for rows that saw no key.
    lse = tl.where(empty, float("-inf"), (m_i + tl.log2(l_safe)) * 0.6931471805599453)

    o_row = o_ptr + pid_b * stride_o_b + offs_s * stride_o_s + offs_h * stride_o_h
    o_row += pid_split * stride_o_split
    tl.store(
        o_row[:, None] + offs_dvp[None, :],
        (acc_lo * out_scale[:, None]).to(o_ptr.dtype.element_ty),
        mask=mask_r[:, None] & (offs_dvp < D_V)[None, :],
    )
    if TWO_PARTS:
        tl.store(
            o_row[:, None] + BLOCK_DVP + offs_dvp[None, :],
            (acc_hi * out_scale[:, None]).to(o_ptr.dtype.element_ty),
            mask=mask_r[:, None] & (BLOCK_DVP + offs_dvp < D_V)[None, :],
        )
    lse_row = lse_ptr + pid_b * stride_lse_b + offs_s * stride_lse_s + offs_h * stride_lse_h
    tl.store(lse_row + pid_split * stride_lse_split, lse, mask=mask_r)


COMBINE_SPLIT_BLOCK = 16
"""Most splits the combine reads at once (on an H200, 16 beat 4 and 8 on the 8-, 15- and
64-split anchor rows: docs/kernels/NOTES.md, variant 29)."""


def combine_split_block(num_splits: int) -> int:
    """The combine's ``SPLIT_BLOCK`` for ``num_splits`` splits: a power of 2, at most
    ``COMBINE_SPLIT_BLOCK``."""
    return min(COMBINE_SPLIT_BLOCK, triton.next_power_of_2(num_splits))


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
    splits_ptr,  # PLANNED: [B] int32 split slots each sequence uses (``decode_plan``)
    plan_lengths_ptr,  # PLANNED: [B] int32 the lengths the plan was made from
    seqlens_ptr,  # PLANNED: [B] int32 the call's lengths
    D_V: tl.constexpr,
    BLOCK_DV: tl.constexpr,
    NUM_SPLITS: tl.constexpr,  # constexpr: the interpreter cannot loop to a runtime bound
    SPLIT_BLOCK: tl.constexpr,  # splits read at once (a power of 2)
    PLANNED: tl.constexpr,  # a decode plan's launch: only the first splits[b] slots are written
    PDL: tl.constexpr,  # programmatic dependent launch (``pdl``): FlashMLA's combine has it too
):
    """One (batch, query token, head) row: the splits' partial outputs [NUM_SPLITS, D_V] fp32
    weighted by their lse -> out [D_V] (out's dtype) and the row's lse.

    Reads ``SPLIT_BLOCK`` splits' partials at a time (that many loads in flight: a row of 64
    splits does not wait on them one by one) and skips the empty ones: a split with lse
    -inf (weight 0) may be left unwritten, and a batch whose splits are sized by its total work
    (the seesaw kernel's) leaves about half of them empty. The skip is a per-split load mask,
    constant along the row, so the loads stay 16 bytes wide.
    """
    tl_gdc_enter(PDL, 1)  # (its successor: the next call's split kernel, or the caller's)
    pid_bs = tl.program_id(0)  # b * S + s
    pid_h = tl.program_id(1)
    pid_b = pid_bs // S_Q
    pid_s = pid_bs % S_Q
    offs_dv = tl.arange(0, BLOCK_DV)
    mask_dv = offs_dv < D_V
    lse_base = lse_mid_ptr + pid_b * stride_lm_b + pid_s * stride_lm_s + pid_h * stride_lm_h
    o_base = o_mid_ptr + pid_b * stride_om_b + pid_s * stride_om_s + pid_h * stride_om_h

    offs_sp = tl.arange(0, SPLIT_BLOCK)
    # a planned launch wrote only the first ``used`` slots of a sequence: the others hold
    # garbage; blocks of slots past ``used`` are not read (a plan's 32 slots of 8 x 16 heads x
    # 32K, 16 used: combine 5.5 -> 3.1 us, H200), the rest of a block is dropped after its load
    used = NUM_SPLITS
    stale = False
    if PLANNED:  # (loaded first: the stale check's round trips overlap the partials')
        used = tl.load(splits_ptr + pid_b)
        # a plan made from other lengths covered other tokens: say so (NaN), never a wrong value
        stale = tl.load(plan_lengths_ptr + pid_b) != tl.load(seqlens_ptr + pid_b)
    m = tl.full([], float("-inf"), dtype=tl.float32)
    for first in range(0, NUM_SPLITS, SPLIT_BLOCK):
        if first < used:  # (blocks past a planned sequence's slots: not read)
            in_range = first + offs_sp < NUM_SPLITS
            lse_part = tl.load(lse_base + first + offs_sp, mask=in_range, other=float("-inf"))
            lse_part = tl.where(first + offs_sp < used, lse_part, float("-inf"))
            m = tl.maximum(m, tl.max(lse_part, axis=0))
    m_use = tl.where(m == float("-inf"), 0.0, m)
    weight_sum = tl.zeros([], dtype=tl.float32)
    acc = tl.zeros([BLOCK_DV], dtype=tl.float32)
    for first in range(0, NUM_SPLITS, SPLIT_BLOCK):
        if first < used:
            in_range = first + offs_sp < NUM_SPLITS
            lse_part = tl.load(lse_base + first + offs_sp, mask=in_range, other=float("-inf"))
            lse_part = tl.where(first + offs_sp < used, lse_part, float("-inf"))
            weight = tl.exp(lse_part - m_use)  # 0 for empty splits (lse -inf) and past the last
            parts = tl.load(
                o_base + (first + offs_sp)[:, None] * stride_om_split + offs_dv[None, :],
                mask=(weight > 0)[:, None] & mask_dv[None, :],
                other=0.0,
            )
            acc += tl.sum(weight[:, None] * parts, axis=0)
            weight_sum += tl.sum(weight, axis=0)
    empty = weight_sum == 0.0
    acc = acc / tl.where(empty, 1.0, weight_sum)
    lse = tl.where(empty, float("-inf"), m_use + tl.log(tl.where(empty, 1.0, weight_sum)))
    if PLANNED:
        acc = tl.where(stale, float("nan"), acc)
        lse = tl.where(stale, float("nan"), lse)
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
    plan: DecodePlan | None = None,
    q_scale: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention of ``s_q`` new tokens per sequence over a paged latent KV cache.

    Args:
        q: [B, S, H, D_QK], fp16 or bf16 (or float8_e4m3fn with ``q_scale`` and an fp8 cache),
            last dim contiguous, on a CUDA device (or CPU under ``TRITON_INTERPRET=1``).
            ``D_QK = head_dim_v + D_PE`` (DeepSeek 576 = 512 + 64).
        kv_cache: [num_pages, P, HK, D_QK], dtype of q, or float8_e4m3fn with ``kv_scale``;
            last dim contiguous; P a power of two from 1 to 256; HK divides H.
        block_table: [B, max_pages] int32: the page ids of each sequence, in order.
        cache_seqlens: [B] int32: KV tokens of each sequence (0 gives zeros and lse -inf).
        head_dim_v: D_V, the value dim: the first D_V entries of each key row.
        softmax_scale: score scale; default D_QK ** -0.5.
        causal: query i of S sees KV positions 0 .. seqlen - S + i.
        kv_scale: fp32 scalar tensor (numel 1) on the cache's device; real = stored x scale.
            Required for an fp8 cache, refused otherwise. On sm_90 with 64+ heads per KV head
            the default config (``64x64 w8 s1``) then runs the scores on fp8 tensor cores, a
            16-bit q split into two fp8 terms that hold a bf16 q exactly: their accumulation
            costs about what one more bf16 rounding of q would (lse within ~1e-2); the config
            ``64x64 w8 s2`` keeps 16-bit scores at 0.6-0.95x the speed.
        config: launch knobs; ``None`` looks up the recommended config for this device/shape.
        out: optional [B, S, H, D_V] output buffer in q's dtype (bf16 for an fp8 q; written in
            full).
        plan: this decode step's split plan (``decode_plan.plan_decode``, made once per step
            for all layers): uneven lengths then get splits sized from the batch's work. A
            plan made from other lengths gives NaN in the rows whose length changed.
        q_scale: fp32 scalar tensor (numel 1) with a float8_e4m3fn q: real q = stored x scale
            (FlashMLA's ``descale_q``). On sm_90 with 16-48 heads per KV head both products
            then run on fp8 tensor cores (``mla_decode_hopper_fp8_mma``: p rounded to e4m3
            too, relative error ~1e-2); elsewhere q is dequantised to bf16 first.

    Returns:
        out [B, S, H, D_V] in q's dtype (bf16 for an fp8 q); lse [B, H, S] fp32, natural log
        (-inf: no keys).

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
        q_scale=q_scale,
    )
    cfg, num_splits = resolve_decode_config(args, config)
    return _launch(args, cfg, num_splits, plan=_usable_plan(plan, args, cfg))


def _usable_plan(plan: object, args: DecodeArgs, cfg: DecodeConfig) -> DecodePlan | None:
    """``plan`` if this call runs it: checked against the call's shape (a mismatch is the
    caller's error), None where it holds no work list or was made for another config."""
    if plan is None:
        return None
    if not isinstance(plan, DecodePlan):
        raise TypeError(
            f"plan: expected a DecodePlan (plan_decode) or None, got {type(plan).__name__}"
        )
    shape = call_shape(args)
    if plan.shape != shape:
        raise ValueError(
            f"plan: made for calls of (batch, s_q, h_q, page_size, h_kv, cache dtype, causal) = "
            f"{plan.shape}, got {shape}; make one plan_decode per decode step and shape"
        )
    return plan if plan.work is not None and plan.config == cfg else None


TMA_MIN_ROWS = 64
"""Row blocks from which ``config=None``-style launches read KV through TMA: measured on the
H200, TMA won with 64-row blocks (wgmma, 8 warps: 489 vs 520 us at 128 x 128 heads x 4K) and
lost with 16 (mma.sync, 4 warps: 101 vs 92 us at 64 x 16 heads x 4K; the pipeline's buffers
leave room for one program per SM instead of two)."""


def kv_tma_eligible(args: DecodeArgs, cfg: DecodeConfig) -> bool:
    """True when ``cfg``'s KV tiles can be read with Hopper bulk copies (TMA) for this call.

    Needs: an sm_90+ GPU with TMA-compatible strides (``tma.tma_eligible``), pages that hold
    whole tiles (``page_size >= block_size_k``), pages laid out back to back (``stride(0) ==
    page_size * stride(1)``, so ``page * P + slot`` indexes rows), and power-of-two head dims
    whose tiles fit one copy (``head_dim_v`` 16..512, rope 0 or 16..256): no column masks.
    """
    kv = args.kv_cache
    page_size = kv.shape[1]
    d_v, d_pe = args.head_dim_v, args.d_pe
    return (
        page_size >= cfg.block_size_k
        and cfg.block_size_k <= MAX_BOX
        and kv.stride(0) == page_size * kv.stride(1)
        and d_v == triton.next_power_of_2(d_v)
        and 16 <= d_v <= 2 * MAX_BOX
        and (d_pe == 0 or (d_pe == triton.next_power_of_2(d_pe) and 16 <= d_pe <= MAX_BOX))
        and tma_eligible(kv)
    )


def _kv_descriptors(
    kv_cache: torch.Tensor, block_n: int, block_dvp: int, block_dpe: int
) -> tuple[Any, Any]:
    """TMA descriptors over the cache seen as [pages * P, HK, D_QK]: latent half, rope part."""
    num_pages, page_size, h_kv, d_qk = kv_cache.shape
    shape = (num_pages * page_size, h_kv, d_qk)
    strides = (kv_cache.stride(1), kv_cache.stride(2), 1)
    return (
        descriptor(kv_cache, shape, strides, (block_n, 1, block_dvp)),
        descriptor(kv_cache, shape, strides, (block_n, 1, block_dpe)),
    )


def _launch(
    args: DecodeArgs,
    cfg: DecodeConfig,
    num_splits: int,
    *,
    use_tma: bool | None = None,
    two_parts: bool | None = None,
    use_gluon: bool | None = None,
    plan: DecodePlan | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Allocate, pick the kernel and launch (one split: direct; else split + combine).

    ``plan``: a decode plan with a work list for this call's config (``_usable_plan``): the
    few-heads kernel then takes its splits from it (``plan.num_splits`` slots a sequence).

    ``use_gluon``: run a Gluon sm_90 kernel (``mla_decode_hopper_seesaw`` for 64+ heads with
    the config ``64x64 w8 s1``, ``mla_decode_hopper_seesaw_fp8`` for that with an fp8 cache,
    ``mla_decode_hopper`` for 64+ with ``64x64 w8 s2``,
    ``mla_decode_hopper_ws`` for 64+ with ``64x32 w8 s4``, ``mla_decode_hopper_few`` for 16-48
    (``mla_decode_hopper_few_fp8`` with an fp8 cache and ``16x64 w8 s1/s2/s3``);
    ``None``: when one is eligible). ``use_tma``: read KV tiles through TMA
    descriptors in the Triton kernel (``None``: for row blocks of at least ``TMA_MIN_ROWS`` when
    ``kv_tma_eligible``). ``two_parts``: split a latent dim over 256 into two column halves
    (``None``: when reading through TMA; tests force it on the interpreter).
    """
    fp8_mma = fp8_mma_eligible(args, cfg) and use_gluon is not False
    fp8_seesaw = fp8_seesaw_eligible(args, cfg) and use_gluon is not False
    if not (fp8_mma or fp8_seesaw):
        args = dequantised_q(args)  # (no fp8 tensor-core kernel for this call)
    q = args.q
    batch, s_q, h_q, _ = q.shape
    d_v = args.head_dim_v
    out = args.out
    if out is None:
        out = torch.empty(batch, s_q, h_q, d_v, dtype=args.out_dtype, device=q.device)
    lse = torch.empty(batch, h_q, s_q, dtype=torch.float32, device=q.device)
    if batch == 0:
        return out, lse
    if plan is not None and (use_gluon is False or not plan_runs(args, cfg)):
        plan = None  # (a kernel choice the plan was not made for)
    if plan is not None:
        num_splits = plan.num_splits
    if num_splits == 1:
        o_buf, lse_buf = out, lse
        o_strides = (*out.stride()[:3], 0)
        lse_strides = (lse.stride(0), lse.stride(2), lse.stride(1), 0)
    else:
        o_buf = torch.empty(batch, s_q, h_q, num_splits, d_v, dtype=torch.float32, device=q.device)
        lse_buf = torch.empty(batch, s_q, h_q, num_splits, dtype=torch.float32, device=q.device)
        o_strides = o_buf.stride()[:4]
        lse_strides = lse_buf.stride()
    seesaw = seesaw_decode_eligible(args, cfg)
    warp_specialized = ws_decode_eligible(args, cfg)
    many_heads = seesaw or fp8_seesaw or warp_specialized or hopper_decode_eligible(args, cfg)
    # the few-heads kernel with an fp8 cache runs only when asked: its in-line upcast made it
    # 1-8 % slower than the Triton kernel (bench/results/raw/h200_decode_run11_few_heads.json);
    # fp8 at few heads defaults to the paired warp-specialised kernel (config 16x64 w8 s1)
    few_heads = (
        not many_heads
        and few_heads_eligible(args, cfg)
        and (use_gluon is True or args.kv_scale is None)
    )
    few_fp8 = few_fp8_eligible(args, cfg) and not fp8_mma
    if use_gluon is None:
        use_gluon = many_heads or few_heads or few_fp8 or fp8_mma
    if use_gluon and not (many_heads or few_heads or few_fp8 or fp8_mma):
        raise ValueError(
            "use_gluon: no Gluon kernel takes this call (sm_90, 512 + 64 dims, one KV head, "
            "pages of whole 64-token tiles, config 64x64 w8 s1 or s2, 64x32 w8 s4, 16x64 w4 "
            "s2 or, with an fp8 cache, 16x64 w8 s1/s2/s3); leave it None"
        )
    LAST_COMPILED["decode_engine"] = "gluon" if use_gluon else "triton"
    work = plan.work if plan is not None else None
    LAST_COMPILED["decode_kernel"] = "triton"
    if use_gluon:
        if seesaw:
            name, launch = "many_heads_seesaw", launch_seesaw_decode
        elif fp8_seesaw:
            name, launch = "many_heads_fp8_seesaw", launch_fp8_seesaw_decode
        elif warp_specialized:
            name, launch = "many_heads_ws", launch_ws_decode
        elif many_heads:
            name, launch = "many_heads_lockstep", launch_hopper_decode
        elif fp8_mma:
            name, launch = "fp8_mma", partial(launch_fp8_mma_decode, cfg=cfg, work=work)
        elif few_fp8:
            name, launch = "few_heads_fp8", partial(launch_few_fp8_decode, cfg=cfg, work=work)
        else:
            name, launch = "few_heads", partial(launch_few_heads_decode, cfg=cfg, work=work)
        LAST_COMPILED["decode_kernel"] = name
        outputs = SplitOutputs(o_buf, lse_buf, o_strides, lse_strides)
        LAST_COMPILED["decode"] = launch(args, num_splits=num_splits, out=outputs)
        LAST_COMPILED["decode_tma"] = True
    else:
        _launch_triton(args, cfg, num_splits, o_buf, lse_buf, o_strides, lse_strides,
                       use_tma=use_tma, two_parts=two_parts)  # fmt: skip
    if num_splits > 1:
        block_dv = triton.next_power_of_2(d_v)
        pdl = pdl_launch_options(q.device)
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
            *((plan.splits, plan.lengths) if plan is not None else (lse_buf, lse_buf)),
            args.cache_seqlens,
            D_V=d_v,
            BLOCK_DV=block_dv,
            NUM_SPLITS=num_splits,
            SPLIT_BLOCK=combine_split_block(num_splits),
            PLANNED=plan is not None,
            PDL=bool(pdl),
            num_warps=4,
            **pdl,
        )
    return out, lse


def _launch_triton(
    args: DecodeArgs,
    cfg: DecodeConfig,
    num_splits: int,
    o_buf: torch.Tensor,
    lse_buf: torch.Tensor,
    o_strides: tuple[int, ...],
    lse_strides: tuple[int, ...],
    *,
    use_tma: bool | None,
    two_parts: bool | None,
) -> None:
    """The Triton split kernel into ``o_buf``/``lse_buf`` (the output, or split partials)."""
    q, kv_cache = args.q, args.kv_cache
    batch, s_q, h_q, _ = q.shape
    h_kv, d_v, d_pe = args.h_kv, args.head_dim_v, args.d_pe
    group = h_q // h_kv
    page_size = kv_cache.shape[1]
    block_dv = triton.next_power_of_2(d_v)
    block_dpe = triton.next_power_of_2(max(d_pe, 16))  # dots need K >= 16
    if use_tma is None:
        use_tma = cfg.block_size_q >= TMA_MIN_ROWS and kv_tma_eligible(args, cfg)
    # TMA: 512 = two halves of 256 (one bulk copy moves <= 256 columns); pointer loads keep the
    # latent part whole (halves cost the mma.sync path of small row blocks registers: spills)
    if two_parts is None:
        two_parts = use_tma
    two_parts = two_parts and block_dv > MAX_BOX
    block_dvp = block_dv // 2 if two_parts else block_dv
    LAST_COMPILED["decode_tma"] = use_tma
    if use_tma:
        desc_lo, desc_pe = _kv_descriptors(kv_cache, cfg.block_size_k, block_dvp, block_dpe)
    else:
        desc_lo = desc_pe = kv_cache  # unused placeholders
    kv_scale = args.kv_scale if args.kv_scale is not None else lse_buf  # unused when absent
    grid = (triton.cdiv(s_q * group, cfg.block_size_q), num_splits, batch * h_kv)
    pdl = pdl_launch_options(q.device)  # (and the kernel's waits, where it has them)
    LAST_COMPILED["decode"] = _mla_decode_kernel[grid](
        q,
        kv_cache,
        args.block_table,
        args.cache_seqlens,
        kv_scale,
        o_buf,
        lse_buf,
        desc_lo,
        desc_pe,
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
        BLOCK_DVP=block_dvp,
        BLOCK_DPE=block_dpe,
        CAUSAL=args.causal and s_q > 1,
        HAS_KV_SCALE=args.kv_scale is not None,
        HAS_PE=d_pe > 0,
        TWO_PARTS=two_parts,
        MASK_LO=d_v < block_dvp,
        MASK_HI=d_v < 2 * block_dvp,
        MASK_DPE=d_pe < block_dpe,
        TILE_IN_PAGE=page_size >= cfg.block_size_k,
        USE_TMA=use_tma,
        INTERPRET=interpreting(),
        PDL=bool(pdl),
        num_warps=cfg.num_warps,
        num_stages=cfg.num_stages,
        **pdl,
    )


__all__ = ["kv_tma_eligible", "mla_decode"]
