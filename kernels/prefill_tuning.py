"""Tuning space, pruning rules and default configs of ``mla_prefill``.

Head-dim rule (shared with the launcher): the scores ``q @ k^T`` are computed as at most two
dots over the head dim, a power-of-two part ``D1`` (the largest power of two <= ``d_qk``) and
the remainder ``d_qk - D1`` padded with masks to a power of two ``D2 >= 16`` (DeepSeek:
192 = 128 + 64, no padding); the value dim is padded with masks to a power of two. Accepted:
``d_qk`` and ``d_v`` multiples of 16, ``16 <= d_qk <= 320``, ``16 <= d_v <= 256``: ``tl.dot``
needs every dim >= 16, and larger heads leave no registers for a 64-row accumulator.

Resource estimates (used to prune before anything is compiled):
    shared memory = q tile ``BLOCK_M * (D1 + D2)`` + ``num_stages`` buffers of one K tile
    ``BLOCK_N * (D1 + D2)`` and one V tile ``BLOCK_N * DV``, 2 bytes an element;
    registers per thread = fp32 accumulator ``BLOCK_M * DV`` + fp32 scores ``BLOCK_M * BLOCK_N``
    + 16-bit probabilities ``BLOCK_M * BLOCK_N / 2``, over ``num_warps * 32`` threads, plus 32
    for indices and softmax state; must stay <= 255 (the hardware's per-thread maximum).
"""

from __future__ import annotations

import itertools

from .configs import DeviceLimits, PrefillConfig, PrefillProblem

_MIN_DOT = 16  # tl.dot needs M, N, K >= 16
MAX_D_QK = 320  # 256 + 64
MAX_D_V = 256
_MAX_REGS_PER_THREAD = 255  # hardware maximum on NVIDIA (sm_50+) and the usual AMD VGPR cap
_REG_OVERHEAD = 32  # indices, pointers, m_i / l_i, loop state
_ELEM_BYTES = 2  # fp16 / bf16 operands

# Defaults per architecture, chosen from measurements (docs/PERFORMANCE.md, "## Prefill").
_DEFAULTS: dict[str, PrefillConfig] = {
    # sm_90: the warp-specialised Gluon kernel (mla_prefill_hopper_ws: two compute warpgroups
    # of 64 rows and a copy warp), 128-key tiles in a two-stage ring
    "sm_90": PrefillConfig(block_size_q=128, block_size_k=128, num_warps=8, num_stages=2),
    "cpu-interpreter": PrefillConfig(block_size_q=16, block_size_k=16, num_warps=4, num_stages=1),
}
# Unmeasured architectures: a conservative config that fits 100 KB of shared memory at d 192.
_FALLBACK = PrefillConfig(block_size_q=64, block_size_k=64, num_warps=4, num_stages=2)


def _next_pow2(x: int) -> int:
    return 1 << (x - 1).bit_length() if x > 1 else 1


def head_dims(d_qk: int, d_v: int) -> tuple[int, int, int]:
    """Split the head dims into the kernel's power-of-two tiles.

    Args:
        d_qk: query/key head dim.
        d_v: value head dim.

    Returns:
        ``(D1, D2, DV)``: the first score dot's width, the second's (0 when ``d_qk`` is a power
        of two) and the padded value width.

    Raises:
        ValueError: a pair outside the accepted rule (module docstring).
    """
    why = why_unsupported_dims(d_qk, d_v)
    if why is not None:
        raise ValueError(why)
    d1 = 1 << (d_qk.bit_length() - 1)
    rest = d_qk - d1
    d2 = max(_MIN_DOT, _next_pow2(rest)) if rest else 0
    return d1, d2, _next_pow2(d_v)


def why_unsupported_dims(d_qk: int, d_v: int) -> str | None:
    """Why the head dims ``(d_qk, d_v)`` cannot run, or ``None`` when they can."""
    if d_qk % 16 or not 16 <= d_qk <= MAX_D_QK:
        return (
            f"d_qk: expected a multiple of 16 from 16 to {MAX_D_QK} (e.g. 192 = 128 + 64 rope), "
            f"got {d_qk}; pad the head dim of q and k with zeros to a multiple of 16"
        )
    if d_v % 16 or not 16 <= d_v <= MAX_D_V:
        return (
            f"d_v: expected a multiple of 16 from 16 to {MAX_D_V}, got {d_v}; "
            "pad the head dim of v with zeros to a multiple of 16"
        )
    return None


def estimate_shared_mem_bytes(config: PrefillConfig, d_qk: int, d_v: int) -> int:
    """Shared memory one program needs (module docstring), in bytes."""
    d1, d2, dv = head_dims(d_qk, d_v)
    stages = max(config.num_stages, 1)
    q_tile = config.block_size_q * (d1 + d2)
    kv_tiles = stages * config.block_size_k * (d1 + d2 + dv)
    return (q_tile + kv_tiles) * _ELEM_BYTES


def estimate_registers_per_thread(config: PrefillConfig, d_v: int) -> int:
    """32-bit registers one thread needs (module docstring)."""
    dv = _next_pow2(d_v)
    threads = config.num_warps * 32
    acc = config.block_size_q * dv
    scores = config.block_size_q * config.block_size_k
    probs = scores // 2
    return (acc + scores + probs) // threads + _REG_OVERHEAD


def _is_pow2(x: int) -> bool:
    return x > 0 and not x & (x - 1)


def why_invalid_prefill(
    config: PrefillConfig, problem: PrefillProblem, limits: DeviceLimits
) -> str | None:
    """Why ``config`` cannot run ``problem`` on the device of ``limits``; ``None`` if it can.

    Args:
        config: the candidate.
        problem: the call's shape (head dims, heads).
        limits: the device's limits (``DeviceLimits``).

    Returns:
        A sentence naming the knob and the limit it breaks, or ``None``.
    """
    why = why_unsupported_dims(problem.d_qk, problem.d_v)
    if why is not None:
        return why
    for name in ("block_size_q", "block_size_k", "num_warps", "num_stages"):
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int):
            return f"{name}: expected an int, got {value!r}"
    h_k = problem.kv_heads
    if h_k < 1 or problem.h % h_k:
        return f"h_k: expected a divisor of h={problem.h}, got {h_k}"
    for name in ("block_size_q", "block_size_k"):
        value = getattr(config, name)
        if not _is_pow2(value) or not _MIN_DOT <= value <= 256:
            return f"{name}: expected a power of two from 16 to 256, got {value}"
    if not _is_pow2(config.num_warps) or config.num_warps > limits.max_warps_per_block:
        return (
            f"num_warps: expected a power of two <= {limits.max_warps_per_block}, "
            f"got {config.num_warps}"
        )
    if not 1 <= config.num_stages <= 6:
        return f"num_stages: expected 1 to 6, got {config.num_stages}"
    if limits.is_interpreter:
        return None
    smem = estimate_shared_mem_bytes(config, problem.d_qk, problem.d_v)
    if smem > limits.max_shared_mem_bytes:
        return (
            f"shared memory: needs ~{smem} bytes (q tile + {config.num_stages} stage(s) of K/V "
            f"tiles), device allows {limits.max_shared_mem_bytes}; lower num_stages, "
            "block_size_k or block_size_q"
        )
    regs = estimate_registers_per_thread(config, problem.d_v)
    if regs > _MAX_REGS_PER_THREAD:
        return (
            f"registers: needs ~{regs} per thread (accumulator {config.block_size_q}x"
            f"{_next_pow2(problem.d_v)} + scores {config.block_size_q}x{config.block_size_k} "
            f"over {config.num_warps} warps), limit {_MAX_REGS_PER_THREAD}; more warps or "
            "smaller blocks"
        )
    if regs * config.num_warps * 32 > limits.max_registers_per_block:
        return (
            f"registers: needs ~{regs * config.num_warps * 32} per program, device allows "
            f"{limits.max_registers_per_block}; fewer warps or smaller blocks"
        )
    return None


def prefill_search_space(problem: PrefillProblem, limits: DeviceLimits) -> list[PrefillConfig]:
    """The candidate configs for ``problem`` on the device of ``limits``, invalid ones pruned.

    GPUs: ``block_size_q`` 64/128/256 x ``block_size_k`` 32/64/128 x warps 4/8 x stages 1..4.
    The CPU interpreter (which ignores warps and stages): blocks 16/32 only, one stage.
    """
    if limits.is_interpreter:
        grid = itertools.product((16, 32), (16, 32), (4,), (1,))
    else:
        grid = itertools.product((64, 128, 256), (32, 64, 128), (4, 8), (1, 2, 3, 4))
    configs = [
        PrefillConfig(block_size_q=bq, block_size_k=bk, num_warps=w, num_stages=s)
        for bq, bk, w, s in grid
    ]
    return [c for c in configs if why_invalid_prefill(c, problem, limits) is None]


def default_prefill_config(problem: PrefillProblem, limits: DeviceLimits) -> PrefillConfig:
    """The built-in config of ``limits.arch`` for ``problem``.

    The measured default of the architecture when it can run the problem, else the first
    valid config of the search space (the most conservative fallback for other archs).

    Raises:
        ValueError: head dims outside the accepted rule, or no config fits the device.
    """
    why = why_unsupported_dims(problem.d_qk, problem.d_v)
    if why is not None:
        raise ValueError(why)
    for candidate in (_DEFAULTS.get(limits.arch), _FALLBACK):
        if candidate is not None and why_invalid_prefill(candidate, problem, limits) is None:
            return candidate
    space = prefill_search_space(problem, limits)
    if not space:
        raise ValueError(
            f"mla_prefill: no config fits {limits.arch} (shared memory "
            f"{limits.max_shared_mem_bytes} bytes) for d_qk={problem.d_qk}, d_v={problem.d_v}"
        )
    return min(space, key=lambda c: (c.num_stages, c.block_size_q, c.block_size_k))


__all__ = [
    "MAX_D_QK",
    "MAX_D_V",
    "default_prefill_config",
    "estimate_registers_per_thread",
    "estimate_shared_mem_bytes",
    "head_dims",
    "prefill_search_space",
    "why_invalid_prefill",
    "why_unsupported_dims",
]
