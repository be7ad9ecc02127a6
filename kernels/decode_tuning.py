"""Tuning space of ``mla_decode``: candidate configs, why a config cannot run, the defaults.

Everything here is arithmetic on ``DecodeConfig``/``DecodeProblem``/``DeviceLimits``: nothing
imports Triton and nothing is compiled. A config is pruned before compilation when
``why_invalid_decode`` gives a reason: a shape rule (tiles too small for a dot, more query rows
than the problem has), the fp32 accumulator not fitting the register file, or the pipelined KV
tiles plus the query tile not fitting shared memory. The estimates are calibrated against the
compiler's report on an H200 (docs/kernels/NOTES.md).
"""

from __future__ import annotations

import itertools
import math

from .configs import DecodeConfig, DecodeProblem, DeviceLimits

_MIN_DOT = 16  # tl.dot needs every dim >= 16
_MAX_BLOCK = 256
_MAX_SPLITS = 64
_MIN_TOKENS_PER_SPLIT = 256  # below this a split's prologue/epilogue outweighs its KV work
_REGS_PER_THREAD = 255
_REG_OVERHEAD = 40  # registers besides the accumulator: indices, m_i/l_i, pointers, scores
_WAVE_EFFICIENCY = 0.85
# A split count may leave up to 10 % of the slots of its one wave idle (4 splits x 32 programs on
# 132 SMs, one program each: 97 %, measured 98 us vs 112 us for the 7 splits a full-wave rule
# takes, bench/results/raw/h200_decode_run9_gluon_splits.json).
_MIN_WAVE = 0.9
# A 128-token KV tile makes the compiler add layout-conversion scratch that grows with the rows
# and warps: on an H200 every config with block_size_q * num_warps >= 256 ran out of shared
# memory (233-299 KB against 227 KB), every one below fit (bench/results/h200_tuning_*.json).
_WIDE_TILE = 128
_WIDE_TILE_SCRATCH_LIMIT = 256
_HOPPER_SMEM_BYTES = 232448  # take the fewest splits within 85% of the best wave efficiency


def _pow2(x: int) -> bool:
    return x > 0 and x & (x - 1) == 0


def _next_pow2(x: int) -> int:
    return 1 << max(0, (x - 1).bit_length())


def query_rows(problem: DecodeProblem) -> int:
    """Rows one (batch, kv head) pair holds: query tokens x heads per kv head."""
    return problem.s_q * (problem.h_q // problem.h_kv)


def estimate_shared_bytes(config: DecodeConfig, problem: DecodeProblem) -> int:
    """Shared memory of one program: pipelined KV tiles + the query tile + the P tile."""
    d_qk = _next_pow2(problem.d_v) + (
        _next_pow2(problem.d_qk - problem.d_v) if problem.d_qk > problem.d_v else 0
    )
    kv_elem = 1 if problem.cache_dtype == "fp8_e4m3" else 2
    stages = max(1, config.num_stages)
    kv_tiles = stages * config.block_size_k * d_qk * kv_elem
    if kv_elem == 1:
        kv_tiles += config.block_size_k * d_qk * 2  # the upcast copy the dots read
    q_tile = config.block_size_q * d_qk * 2
    p_tile = config.block_size_q * config.block_size_k * 2
    return kv_tiles + q_tile + p_tile


def estimate_registers_per_thread(config: DecodeConfig, problem: DecodeProblem) -> int:
    """Registers per thread: the fp32 accumulator [block_size_q, D_V] and the scores, plus, for
    row blocks of <= 32 (mma.sync, q held in registers), the q tile (calibrated on H200
    compiles, NOTES.md)."""
    threads = 32 * config.num_warps
    d_qk = _next_pow2(problem.d_v) + _next_pow2(max(problem.d_qk - problem.d_v, 1))
    acc = config.block_size_q * _next_pow2(problem.d_v) // threads
    scores = config.block_size_q * config.block_size_k // threads
    regs = acc + scores + _REG_OVERHEAD
    if config.block_size_q <= 32:
        regs += config.block_size_q * d_qk * 2 // 4 // threads
    return regs


def why_invalid_decode(
    config: DecodeConfig, problem: DecodeProblem, limits: DeviceLimits
) -> str | None:
    """Why ``config`` cannot (or should not) run ``problem`` on ``limits``'s device; None if fine.

    Args:
        config: the candidate.
        problem: the decode shape.
        limits: the device (``CPU_INTERPRETER`` skips the register and shared-memory rules).

    Returns:
        A sentence naming the knob and the limit it breaks, or None.
    """
    for name in ("block_size_q", "block_size_k"):
        value = getattr(config, name)
        if not _pow2(value) or not _MIN_DOT <= value <= _MAX_BLOCK:
            return f"{name} {value}: expected a power of two from {_MIN_DOT} to {_MAX_BLOCK}"
    if not _pow2(config.num_warps) or config.num_warps > limits.max_warps_per_block:
        return (
            f"num_warps {config.num_warps}: expected a power of two up to "
            f"{limits.max_warps_per_block} ({limits.arch})"
        )
    if not 1 <= config.num_stages <= 5:
        return f"num_stages {config.num_stages}: expected 1 to 5"
    splits = config.num_kv_splits
    if splits != "auto" and (
        isinstance(splits, bool) or not isinstance(splits, int) or not 1 <= splits <= 256
    ):
        return f"num_kv_splits {splits!r}: expected 'auto' or an int from 1 to 256"
    rows = query_rows(problem)
    if config.block_size_q > max(_MIN_DOT, _next_pow2(rows)):
        return (
            f"block_size_q {config.block_size_q} > {max(_MIN_DOT, _next_pow2(rows))} "
            f"(the problem has {rows} query rows per kv head): rows would be wasted"
        )
    if limits.is_interpreter:
        return None
    regs = estimate_registers_per_thread(config, problem)
    cap = min(_REGS_PER_THREAD, limits.max_registers_per_block // (32 * config.num_warps))
    if regs > cap:
        return (
            f"registers: about {regs} per thread with {config.num_warps} warps (the fp32 "
            f"accumulator [{config.block_size_q}, {problem.d_v}], scores, q/fp8 tiles), over "
            f"the {cap} available: it would spill; use fewer query rows or more warps"
        )
    smem = estimate_shared_bytes(config, problem)
    if smem > limits.max_shared_mem_bytes:
        return (
            f"shared memory: about {smem} bytes ({config.num_stages} stage(s) of "
            f"{config.block_size_k}-token KV tiles + the {config.block_size_q}-row query tile), "
            f"over the {limits.max_shared_mem_bytes} bytes of {limits.arch}; use fewer stages "
            "or a smaller block_size_k"
        )
    if (
        config.block_size_k >= _WIDE_TILE
        and config.block_size_q * config.num_warps >= _WIDE_TILE_SCRATCH_LIMIT
        and limits.max_shared_mem_bytes <= _HOPPER_SMEM_BYTES
    ):
        return (
            f"shared memory: block_size_k {config.block_size_k} with block_size_q "
            f"{config.block_size_q} and {config.num_warps} warps needs layout-conversion scratch "
            f"beyond the {limits.max_shared_mem_bytes} bytes of {limits.arch} (measured on an "
            "H200: 233-299 KB); use block_size_k 64 or fewer warps"
        )
    return None


def auto_num_splits(
    *, programs: int, max_seqlen: int, block_size_k: int, sm_count: int, programs_per_sm: int = 2
) -> int:
    """KV splits that fill the GPU: FlashAttention's rule (the fewest splits whose waves are
    about as full as the best count's), then as many more as still fit in the same number of
    waves: the waves take as long as their programs, and more splits make each program
    shorter (on an H200, 8 x 16 heads x 32K: 16 splits, 128 programs, 77.3-77.8 us against
    78.7-79.7 for the 15 the rule alone picks; docs/kernels/NOTES.md, variant 31).

    Args:
        programs: programs without splitting (batch x kv heads x query-row blocks).
        max_seqlen: the longest sequence (an upper bound is fine).
        block_size_k: KV tile; a split holds whole tiles.
        sm_count: multiprocessors of the device.
        programs_per_sm: programs one multiprocessor runs at once (shared memory bound):
            a wave is ``sm_count * programs_per_sm`` programs.
    """
    if programs <= 0 or max_seqlen <= 0:
        return 1
    slots = sm_count * max(1, programs_per_sm)
    per_split = max(block_size_k, _MIN_TOKENS_PER_SPLIT)
    max_splits = max(1, min(_MAX_SPLITS, math.ceil(max_seqlen / per_split)))
    if programs >= 0.8 * slots:
        return 1
    if programs * max_splits <= slots:
        return max_splits  # all of it fits one wave: the most parallelism (1 x 128 heads x 16K)

    def efficiency(splits: int) -> float:
        waves = programs * splits / slots
        return waves / math.ceil(waves)

    best = max(efficiency(s) for s in range(1, max_splits + 1))
    for splits in range(1, max_splits + 1):
        waves = programs * splits / slots
        if waves >= _MIN_WAVE and efficiency(splits) >= _WAVE_EFFICIENCY * best:
            # the most splits that keep this many waves
            return min(max_splits, math.ceil(waves) * slots // programs)
    return max_splits


def _knobs(config: DecodeConfig) -> tuple[int, int, int, int]:
    return (config.block_size_q, config.block_size_k, config.num_warps, config.num_stages)


def programs_per_sm(config: DecodeConfig, problem: DecodeProblem, limits: DeviceLimits) -> int:
    """Decode programs one SM holds at once (shared memory bound), as measured on an H200.

    64-row blocks: 1 (220-230 KB, Triton and Gluon kernels). On sm_90 the few-heads Gluon
    kernel (config 16 x 64, 4 warps, 2 stages; 16-bit cache, 512 + 64 dims, 16-48 heads per KV
    head): 1 (168 KB); with an fp8 cache its warp-specialised kernels (16 x 64, 8 warps, 1, 2 or
    3 stages): 1 (168-219 KB), and with an fp8 q too the fp8 tensor-core kernel under the same
    configs: 1 (147-219 KB). Other configs of fewer rows: 2 (Triton, 47-94 KB).
    """
    if config.block_size_q >= 64:
        return 1
    knobs = _knobs(config)
    few_heads_kernel = _sm90_few_heads_shape(problem, limits) and (
        knobs in _SM90_FEW_FP8_KNOBS if problem.kv_dtype else knobs == _SM90_FEW_KNOBS
    )
    return 1 if few_heads_kernel else 2


def resolve_num_splits(config: DecodeConfig, problem: DecodeProblem, limits: DeviceLimits) -> int:
    """The split count ``config`` means for ``problem`` (``"auto"`` resolved), at least 1."""
    if config.num_kv_splits != "auto":
        return int(config.num_kv_splits)
    programs = problem.batch * problem.h_kv * math.ceil(query_rows(problem) / config.block_size_q)
    uniform = auto_num_splits(
        programs=programs,
        max_seqlen=max(problem.lengths(), default=0),
        block_size_k=config.block_size_k,
        sm_count=limits.sm_count,
        programs_per_sm=programs_per_sm(config, problem, limits),
    )
    seesaw = _knobs(config) == _SM90_SEESAW_KNOBS and _sm90_seesaw_shape(problem, limits)
    if seesaw and uniform > 1 and problem.batch > 1:
        # the seesaw kernel sizes its splits from the batch's total work, so a long sequence
        # among short ones may take more than the uniform count: allow twice as many
        return min(_MAX_SPLITS, 2 * uniform)
    return uniform


def decode_search_space(problem: DecodeProblem, limits: DeviceLimits) -> list[DecodeConfig]:
    """Candidate configs for ``problem`` on ``limits``'s device, invalid ones pruned.

    GPUs: block_size_q x block_size_k x warps x stages with automatic splits, plus half and
    double the automatic split count for the structural shapes the default uses (about 50 to
    150 configs). The CPU interpreter: a handful of small tiles.
    """
    if limits.is_interpreter:
        grid = itertools.product((16, 32), (16, 32), (4,), (1,), ("auto",))
    else:
        grid = itertools.product(
            (16, 32, 64, 128), (16, 32, 64, 128), (4, 8, 16), (1, 2, 3), ("auto",)
        )
    space = [
        DecodeConfig(block_size_q=bq, block_size_k=bk, num_warps=w, num_stages=st, num_kv_splits=sp)
        for bq, bk, w, st, sp in grid
    ]
    if not limits.is_interpreter:
        space += _split_variants(space, problem, limits)
    if limits.arch == "sm_90":
        # the warp-specialised Gluon kernel's config (4 stages: its ring of 32-token tiles)
        space.append(DecodeConfig(64, 32, 8, 4))
    return [c for c in space if why_invalid_decode(c, problem, limits) is None]


def _split_variants(
    space: list[DecodeConfig], problem: DecodeProblem, limits: DeviceLimits
) -> list[DecodeConfig]:
    """Explicit split counts around ``"auto"`` for the largest valid tiles and, on sm_90 with
    16-48 heads, for the few-heads Gluon kernels' configs (the split count moves the
    memory-bound shapes by up to 4x in ANCHORS.md)."""
    out: list[DecodeConfig] = []
    valid = [c for c in space if why_invalid_decode(c, problem, limits) is None]
    valid.sort(key=lambda c: (-c.block_size_q, -c.block_size_k, c.num_warps, -c.num_stages))
    bases = valid[:4]
    if _sm90_few_heads_shape(problem, limits):
        knobs = _SM90_FEW_FP8_KNOBS if problem.kv_dtype else (_SM90_FEW_KNOBS,)
        bases += [c for c in valid if _knobs(c) in knobs and c not in bases]
    for base in bases:
        auto = resolve_num_splits(base, problem, limits)
        for splits in sorted({max(1, auto // 4), max(1, auto // 2), auto * 2, auto * 4} - {auto}):
            variant = DecodeConfig(
                base.block_size_q, base.block_size_k, base.num_warps, base.num_stages, splits
            )
            if splits <= _MAX_SPLITS and variant not in out:
                out.append(variant)
    return out


# Per-architecture starting points (block_size_q, block_size_k, num_warps, num_stages);
# block_size_q is then capped at the problem's rows, and num_warps follows the rows (see
# _warps_for). sm_90 comes from the H200 sweeps in docs/kernels/NOTES.md (KV tiles of 64
# tokens, 2 stages; 4 warps for <= 32 rows, 8 for 64); the others are hypotheses until measured.
_ARCH_DEFAULTS: dict[str, tuple[int, int, int, int]] = {
    "sm_90": (64, 64, 8, 2),
    "sm_100": (64, 64, 8, 2),
    "sm_80": (64, 32, 8, 2),
    "sm_89": (32, 32, 4, 2),
    "sm_86": (32, 32, 4, 2),
    "cpu-interpreter": (16, 16, 4, 1),
}
_FALLBACK_DEFAULT = (32, 32, 4, 1)


_SM90_SEESAW_KNOBS = (64, 64, 8, 1)
"""The config of the sm_90 seesaw decode kernel (``mla_decode_hopper_seesaw.KNOBS``)."""


def _sm90_seesaw_shape(problem: DecodeProblem, limits: DeviceLimits) -> bool:
    """``problem`` on ``limits`` suits the sm_90 seesaw decode kernels (config ``64 x 64, 8
    warps, 1 stage``): DeepSeek's dims, one KV head, 64+ heads, pages of whole 64-token tiles;
    a 16-bit cache (``mla_decode_hopper_seesaw``) or an fp8 one, with an fp8 q or a 16-bit q
    split in two fp8 terms (``mla_decode_hopper_seesaw_fp8``)."""
    return (
        limits.arch == "sm_90"
        and (problem.d_qk, problem.d_v, problem.h_kv) == (576, 512, 1)
        and problem.h_q % 64 == 0
        and problem.page_size % 64 == 0
    )


_SM90_FEW_KNOBS = (16, 64, 4, 2)
"""The config of the sm_90 few-heads decode kernel, 16-bit caches (``mla_decode_hopper_few``)."""
_SM90_FEW_FP8_KNOBS = ((16, 64, 8, 1), (16, 64, 8, 2), (16, 64, 8, 3))
"""The configs of the sm_90 few-heads decode kernel for fp8 caches
(``mla_decode_hopper_few_fp8``): 1 stage, the paired kernel (two computing warpgroups and a
converter, a one-tile fp8 ring), the default; 2 or 3, one computing warpgroup and a converter
with an fp8 ring of that many tiles (H200, s8-5, the 16-head rows of ANCHORS.md: 76.6 / 76.8 /
40.1 us paired, 79.6 / 79.9 / 42.1 with 2 stages; s5-8: 3 stages 0-3 % slower than 2)."""


def _sm90_few_heads_shape(problem: DecodeProblem, limits: DeviceLimits) -> bool:
    """``problem`` on ``limits`` suits the sm_90 few-heads decode kernels: DeepSeek's dims, one
    KV head, 16-48 heads, pages of whole 64-token tiles."""
    return (
        limits.arch == "sm_90"
        and (problem.d_qk, problem.d_v, problem.h_kv) == (576, 512, 1)
        and problem.h_q % 16 == 0
        and problem.h_q < 64
        and problem.page_size % 64 == 0
    )


def _warps_for(block_size_q: int, num_warps: int) -> int:
    """Small row blocks run best on 4 warps (H200, 16 rows: bf16 85 vs 89 us with 8 warps,
    fp8 114 vs 143 us)."""
    return min(num_warps, 4) if block_size_q <= 32 else num_warps


def default_decode_config(problem: DecodeProblem, limits: DeviceLimits) -> DecodeConfig:
    """The built-in config for ``problem`` on ``limits.arch``: the arch's starting point with
    ``block_size_q`` shrunk to the problem's rows, else the first valid config of the space.

    Raises:
        ValueError: nothing in the search space can run ``problem`` on this device.
    """
    bq, bk, warps, stages = _ARCH_DEFAULTS.get(limits.arch, _FALLBACK_DEFAULT)
    bq = min(bq, max(_MIN_DOT, _next_pow2(query_rows(problem))))
    warps = _warps_for(bq, warps)
    if _sm90_seesaw_shape(problem, limits) and (bq, bk, warps, 1) == _SM90_SEESAW_KNOBS:
        # the seesaw Gluon kernels' config: 1.3x the lockstep kernel's speed with a 16-bit cache
        # (NOTES 19), 1.9x with an fp8 cache and q (NOTES, fifteenth session)
        stages = 1
    fp8_few = problem.kv_dtype is not None and _sm90_few_heads_shape(problem, limits)
    if fp8_few and (bq, bk) == _SM90_FEW_FP8_KNOBS[0][:2]:
        # the warp-specialised fp8 kernel: 1.4-1.5x the Triton kernel's speed (NOTES 21)
        bq, bk, warps, stages = _SM90_FEW_FP8_KNOBS[0]
    cfg = DecodeConfig(
        block_size_q=bq, block_size_k=bk, num_warps=warps, num_stages=stages, num_kv_splits="auto"
    )
    if why_invalid_decode(cfg, problem, limits) is None:
        return cfg
    space = decode_search_space(problem, limits)
    if not space:
        raise ValueError(
            f"no decode config fits {problem} on {limits.arch}; the head dims may be too large "
            "for this device's shared memory"
        )
    return space[0]


__all__ = [
    "auto_num_splits",
    "decode_search_space",
    "default_decode_config",
    "estimate_registers_per_thread",
    "estimate_shared_bytes",
    "programs_per_sm",
    "query_rows",
    "resolve_num_splits",
    "why_invalid_decode",
]
