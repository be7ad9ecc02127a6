"""Inputs for ``mla_prefill`` from a ``PrefillProblem``, and the two ways to run them.

``make_prefill_inputs`` draws fresh random data and poisons everything the kernel must never
read: q, k and v are views into larger buffers whose extra head-dim columns and whose rows past
the packed totals are NaN. A kernel that reads past a head dim or past the last token therefore
returns NaN instead of a plausible number (and the non-contiguous token/head strides are
exercised on every call).
"""

from __future__ import annotations

from typing import Any

import torch

from .configs import PrefillConfig, PrefillProblem

_TORCH_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
_PAD_COLS = 8  # NaN columns after each head's dims
_PAD_ROWS = 4  # NaN tokens after the packed total


def sequence_lengths(
    problem: PrefillProblem, *, varlen: bool, generator: torch.Generator | None = None
) -> list[tuple[int, int]]:
    """``(seqlen_q, seqlen_k)`` of each sequence.

    Exact: every sequence has the problem's lengths. ``varlen``: query lengths drawn uniformly
    from ``[seqlen_q // 2, seqlen_q]``, each key length keeping the problem's offset
    ``seqlen_k - seqlen_q`` (clipped at 0), so the bottom-right causal geometry is preserved.
    """
    if not varlen:
        return [(problem.seqlen_q, problem.seqlen_k)] * problem.batch
    low = problem.seqlen_q // 2
    draws = torch.randint(low, problem.seqlen_q + 1, (problem.batch,), generator=generator)
    offset = problem.seqlen_k - problem.seqlen_q
    return [(int(s), max(int(s) + offset, 0)) for s in draws]


def _poisoned(
    rows: int, heads: int, dim: int, *, dtype: torch.dtype, gen: torch.Generator, device: Any
) -> torch.Tensor:
    """A [rows, heads, dim] random view into a NaN-padded [rows + pad, heads, dim + pad]."""
    buf = torch.full(
        (rows + _PAD_ROWS, heads, dim + _PAD_COLS), float("nan"), dtype=dtype, device=device
    )
    data = torch.randn((rows, heads, dim), generator=gen, device=device, dtype=torch.float32)
    buf[:rows, :, :dim] = data.to(dtype)
    return buf[:rows, :, :dim]


def make_prefill_inputs(
    problem: PrefillProblem,
    *,
    device: torch.device | str,
    seed: int,
    varlen: bool = False,
    lengths: list[tuple[int, int]] | None = None,
) -> dict[str, Any]:
    """Random, poisoned inputs of ``problem`` on ``device``.

    Args:
        problem: the shape (batch, lengths, heads, head dims, dtype, causal).
        device: where the tensors live.
        seed: seeds a generator on ``device`` (lengths: on the CPU); same seed, same inputs.
        varlen: draw each sequence's lengths around the problem's (see ``sequence_lengths``).
        lengths: explicit ``(seqlen_q, seqlen_k)`` per sequence (overrides ``varlen``).

    Returns:
        ``mla_prefill``'s arguments by name: q [total_q, H, D_QK]; k [total_k, HK, D_QK];
        v [total_k, HK, D_V]; cu_seqlens_q, cu_seqlens_k [B + 1] int32; max_seqlen_q;
        max_seqlen_k; causal; softmax_scale.

    Raises:
        ValueError: ``lengths`` not of ``batch`` pairs >= 0, or an unknown dtype.
    """
    dev = torch.device(device)
    if problem.dtype not in _TORCH_DTYPES:
        raise ValueError(f"problem.dtype: expected one of {sorted(_TORCH_DTYPES)}, got "
                         f"{problem.dtype!r}")  # fmt: skip
    if lengths is None:
        cpu_gen = torch.Generator().manual_seed(seed)
        lengths = sequence_lengths(problem, varlen=varlen, generator=cpu_gen)
    if len(lengths) != problem.batch or any(min(pair) < 0 for pair in lengths):
        raise ValueError(
            f"lengths: expected {problem.batch} (seqlen_q, seqlen_k) pairs >= 0, got {lengths}"
        )
    gen = torch.Generator(device=dev)
    gen.manual_seed(seed)
    dtype = _TORCH_DTYPES[problem.dtype]
    seq_q = [pair[0] for pair in lengths]
    seq_k = [pair[1] for pair in lengths]
    cu_q = torch.tensor([0, *seq_q], dtype=torch.int64).cumsum(0).to(torch.int32)
    cu_k = torch.tensor([0, *seq_k], dtype=torch.int64).cumsum(0).to(torch.int32)
    total_q, total_k = int(cu_q[-1]), int(cu_k[-1])
    h_k = problem.kv_heads
    return {
        "q": _poisoned(total_q, problem.h, problem.d_qk, dtype=dtype, gen=gen, device=dev),
        "k": _poisoned(total_k, h_k, problem.d_qk, dtype=dtype, gen=gen, device=dev),
        "v": _poisoned(total_k, h_k, problem.d_v, dtype=dtype, gen=gen, device=dev),
        "cu_seqlens_q": cu_q.to(dev),
        "cu_seqlens_k": cu_k.to(dev),
        "max_seqlen_q": max(seq_q, default=0),
        "max_seqlen_k": max(seq_k, default=0),
        "causal": problem.causal,
        "softmax_scale": problem.d_qk**-0.5,
    }


def run_prefill(inputs: dict[str, Any], config: PrefillConfig | None) -> tuple[torch.Tensor, ...]:
    """``mla_prefill(**inputs, config=config)`` -> (out [total_q, H, D_V], lse [H, total_q])."""
    from .mla_prefill import mla_prefill

    return mla_prefill(**inputs, config=config)


def run_prefill_ref(inputs: dict[str, Any]) -> tuple[torch.Tensor, ...]:
    """The fp32 reference on the same inputs -> (out in q's dtype, lse [H, total_q] fp32)."""
    from .reference import mla_prefill_ref

    return mla_prefill_ref(**inputs)


__all__ = ["make_prefill_inputs", "run_prefill", "run_prefill_ref", "sequence_lengths"]
