"""Decode split plans made once per decode step and shared by every layer's call.

With ``num_kv_splits="auto"`` a decode launch cuts every sequence into the same number of
splits, chosen from the longest one (no device sync: the lengths stay on the GPU). For a batch
of uneven lengths that leaves the long sequences' programs with most of the work: 32 sequences
of 1K..32K tokens at 16 heads run at 2.3 TB/s on an H200 where equal lengths reach 3.9
(docs/kernels/NOTES.md, variants 32-33). Sizing the splits from the batch's total work needs
all the lengths, which costs a launch a few microseconds before its first copy; FlashMLA pays
that once per decode step (``get_mla_metadata``) and every layer reuses the result. So does
this module:

    plan = plan_decode(q, kv_cache, block_table, cache_seqlens)   # once per decode step
    for layer in layers:
        out, lse = mla_decode(q_l, kv_l, block_table, cache_seqlens, plan=plan)

The plan is a work list made on the GPU by one small kernel (``_plan_kernel``): ``T`` tiles of
64 tokens a split, the smallest of eight candidates from ``total / P`` to ``total / (P -
batch)`` (``P``: the programs that run at once) whose splits fit ``P`` programs; each sequence
gets ``cdiv(tiles, T)`` splits (at most ``num_splits``, at least one), listed in order, one per
program. Equal lengths get the equal splits of the per-sequence rule. The decode kernel reads
its split with one load, as it would read the sequence's length without a plan.

A plan belongs to the lengths it was made from: make a new one whenever ``cache_seqlens``
changes (every decode step). A call whose lengths differ from the plan's gets NaN in the
affected rows (the combine checks), never a silently wrong output. Calls the planned kernel
does not take (other GPUs, configs with explicit splits, ...) ignore the plan.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from .configs import DecodeConfig
from .decode_checks import DecodeArgs, check_decode_args, resolve_decode_config
from .device_limits import limits_for
from .mla_decode_hopper_few import BLOCK_N, ROWS, WORK_RECORD, few_heads_eligible
from .mla_decode_hopper_few_fp8 import few_fp8_eligible
from .mla_decode_hopper_fp8_mma import fp8_mma_eligible

MAX_SPLITS = 64


@dataclass(frozen=True)
class DecodePlan:
    """How the decode calls of one step split their work (``plan_decode``).

    Attributes:
        shape: (batch, s_q, h_q, page_size, h_kv, cache dtype, causal) of the calls it serves.
        config: the launch config the plan was made for.
        num_splits: split slots per sequence (the partial outputs' width).
        work: [programs, 8] int32 on the GPU (``mla_decode_hopper_few.WORK_RECORD``), or
            None: no plan applies to these calls, and they run as without one.
        splits: [batch] int32: the slots each sequence uses (None with ``work``).
        lengths: [batch] int32: the lengths the plan was made from (None with ``work``).
    """

    shape: tuple[object, ...]
    config: DecodeConfig
    num_splits: int
    work: torch.Tensor | None
    splits: torch.Tensor | None
    lengths: torch.Tensor | None

    @property
    def programs(self) -> int:
        """Programs a row block of the planned launch has (0 without a work list)."""
        return 0 if self.work is None else self.work.shape[0]


def call_shape(args: DecodeArgs) -> tuple[object, ...]:
    """The part of a call a plan must match."""
    batch, s_q, h_q, _ = args.q.shape
    kv = args.kv_cache
    return (batch, s_q, h_q, kv.shape[1], kv.shape[2], str(kv.dtype), bool(args.causal))


@triton.jit
def _splits_of(tiles, per_split, NUM_SPLITS):
    """Splits of sequences of ``tiles`` tiles at ``per_split`` tiles a split, at most
    ``NUM_SPLITS`` (longer splits past that), at least one (an empty sequence's split writes
    its lse, -inf, for the combine)."""
    per_split = tl.maximum(per_split, (tiles + NUM_SPLITS - 1) // NUM_SPLITS)
    return tl.maximum((tiles + per_split - 1) // per_split, 1)


@triton.jit
def _plan_kernel(seqlens_ptr, work_ptr, splits_ptr, lengths_ptr, BATCH, PROGRAMS, NUM_SPLITS,
                 BLOCK_N: tl.constexpr, RECORD: tl.constexpr):  # fmt: skip
    """One program: the work list of ``PROGRAMS`` programs over the batch's sequences (module
    docstring). Loops are ``while`` loops: the interpreter cannot ``range`` to a runtime bound."""
    K: tl.constexpr = 8
    CHUNK: tl.constexpr = 128
    offs = tl.arange(0, CHUNK)
    total = tl.zeros([], dtype=tl.int32)
    c = tl.zeros([], dtype=tl.int32)
    while c < BATCH:
        lens = tl.load(seqlens_ptr + c + offs, mask=c + offs < BATCH, other=0)
        total += tl.sum((lens + BLOCK_N - 1) // BLOCK_N, axis=0)
        c += CHUNK
    slack = tl.arange(0, K) * BATCH // (K - 1)
    room = tl.maximum(PROGRAMS - slack, 1)
    cand = tl.maximum((total + room - 1) // room, 1)  # [K], not decreasing
    counts = tl.zeros([K], dtype=tl.int32)
    c = tl.zeros([], dtype=tl.int32)
    while c < BATCH:
        in_batch = c + offs < BATCH
        tiles = (tl.load(seqlens_ptr + c + offs, mask=in_batch, other=0) + BLOCK_N - 1) // BLOCK_N
        per_seq = _splits_of(tiles[None, :], cand[:, None], NUM_SPLITS)
        counts += tl.sum(tl.where(in_batch[None, :], per_seq, 0), axis=1)
        c += CHUNK
    per_split = tl.min(tl.where(counts <= PROGRAMS, cand, tl.max(cand, axis=0)), axis=0)

    carry = tl.zeros([], dtype=tl.int32)
    c = tl.zeros([], dtype=tl.int32)
    while c < BATCH:
        in_batch = c + offs < BATCH
        lens = tl.load(seqlens_ptr + c + offs, mask=in_batch, other=0)
        tiles = (lens + BLOCK_N - 1) // BLOCK_N
        splits = tl.where(in_batch, _splits_of(tiles, per_split, NUM_SPLITS), 0)
        first = carry + tl.cumsum(splits, axis=0) - splits  # this sequence's first program
        split_len = tl.maximum(per_split, (tiles + NUM_SPLITS - 1) // NUM_SPLITS) * BLOCK_N
        tl.store(splits_ptr + c + offs, splits, mask=in_batch)
        tl.store(lengths_ptr + c + offs, lens, mask=in_batch)
        k = tl.zeros([], dtype=tl.int32)
        while k < NUM_SPLITS:
            item = work_ptr + (first + k) * RECORD
            here = in_batch & (k < splits)
            start = k * split_len
            tl.store(item, c + offs, mask=here)
            tl.store(item + 1, start, mask=here)
            tl.store(item + 2, tl.minimum(start + split_len, lens), mask=here)
            tl.store(item + 3, tl.zeros_like(offs) + k, mask=here)
            tl.store(item + 4, lens, mask=here)
            k += 1
        carry += tl.sum(splits, axis=0)
        c += CHUNK
    j = carry + offs  # programs past the last split: no work
    while tl.min(j, axis=0) < PROGRAMS:
        tl.store(work_ptr + j * RECORD, tl.full([CHUNK], -1, tl.int32), mask=j < PROGRAMS)
        j += CHUNK


def make_work_list(
    cache_seqlens: torch.Tensor, programs: int, num_splits: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run ``_plan_kernel``: ``(work [programs, 8], splits [batch], lengths [batch])``, int32,
    on the lengths' device. Needs ``programs > batch`` (then every split has a program)."""
    batch = cache_seqlens.shape[0]
    if not batch < programs:
        raise ValueError(f"programs: expected more than the batch ({batch}), got {programs}")
    device = cache_seqlens.device
    work = torch.zeros(programs, WORK_RECORD, dtype=torch.int32, device=device)
    splits = torch.empty(batch, dtype=torch.int32, device=device)
    lengths = torch.empty(batch, dtype=torch.int32, device=device)
    _plan_kernel[(1,)](
        cache_seqlens, work, splits, lengths, batch, programs, num_splits, BLOCK_N=BLOCK_N,
        RECORD=WORK_RECORD, num_warps=4,
    )  # fmt: skip
    return work, splits, lengths


def plan_runs(args: DecodeArgs, cfg: DecodeConfig) -> bool:
    """True when ``cfg`` runs this call on a kernel that takes a decode plan: the sm_90
    few-heads kernel with a 16-bit cache, the paired fp8 one (``num_stages`` 1), or, with an
    fp8 q, the fp8 tensor-core one."""
    if args.q_scale is not None and fp8_mma_eligible(args, cfg):
        return True
    if args.kv_scale is None:
        return few_heads_eligible(args, cfg)
    return cfg.num_stages == 1 and few_fp8_eligible(args, cfg)


def plan_programs(args: DecodeArgs) -> int:
    """Programs of one row block that run at once: one per SM (the planned kernels take 164 KB
    (16-bit) and 219 KB (fp8) of shared memory), the SMs shared among the row blocks."""
    _, s_q, h_q, _ = args.q.shape
    return max(1, limits_for(args.q.device).sm_count // (s_q * h_q // ROWS))


def plan_decode(
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
    q_scale: torch.Tensor | None = None,
) -> DecodePlan:
    """The split plan of this decode step's calls (arguments as ``mla_decode``'s; the tensors
    of any one layer; ``softmax_scale`` is only checked). Pass it to every ``mla_decode`` call
    of the step (``plan=``).

    It applies (``work`` set) where the calls run an sm_90 few-heads kernel that takes plans
    (``plan_runs``: 16-48 heads per KV head, DeepSeek's dims; a 16-bit cache, or an fp8 one on
    the paired kernel) with ``num_kv_splits="auto"`` and more than one split, and there are
    fewer sequences than SMs; elsewhere the calls ignore it. No device sync: the plan is made
    by a kernel on the GPU (CUDA-graph safe).

    Raises:
        TypeError, ValueError: as ``mla_decode``.
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
        out=None,
        q_scale=q_scale,
    )
    cfg, num_splits = resolve_decode_config(args, config)
    return plan_for(args, cfg, num_splits)


def plan_for(args: DecodeArgs, cfg: DecodeConfig, num_splits: int) -> DecodePlan:
    """``plan_decode`` for checked arguments, their config and its resolved split count."""
    programs = plan_programs(args)
    batch = args.q.shape[0]
    applies = (
        cfg.num_kv_splits == "auto"
        and num_splits > 1
        and 1 < batch < programs
        and plan_runs(args, cfg)
    )
    if not applies:
        return DecodePlan(call_shape(args), cfg, num_splits, None, None, None)
    # a long sequence among short ones may take more splits than the uniform count
    slots = min(MAX_SPLITS, 2 * num_splits)
    work, splits, lengths = make_work_list(args.cache_seqlens, programs, slots)
    return DecodePlan(call_shape(args), cfg, slots, work, splits, lengths)


__all__ = ["DecodePlan", "call_shape", "make_work_list", "plan_decode", "plan_for", "plan_runs"]
