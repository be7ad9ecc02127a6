"""Correctness of a config against the fp32 reference, and the winner rule.

Every candidate is run on fresh random inputs (``make_inputs`` with a new seed) and compared
with ``reference`` (fp32 PyTorch) under the registry's per-dtype tolerances, in the manner of
``torch.testing.assert_close``: ``|out - ref| <= atol + rtol * |ref|`` everywhere, no NaN/inf
where the reference is finite, and the log-sum-exp ``-inf`` exactly where the reference has
it (empty sequences). The result carries the errors, not a bare bool.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from mlafleet.kernels.registry import REL_L2_FLOORS, TOLERANCES, KernelSpec, tolerance_key

from .schemas import TrialResult, TrialStatus, ValidationResult

WINNER_ERROR_FACTOR = 4.0
"""The winner's relative L2 error may be at most this many times the most accurate trial's."""

WINNER_ERROR_EPS = 1e-6
"""Absolute slack on the winner rule (so a trial exactly as good as a perfect one qualifies)."""


def tolerance_for(dtype: str) -> tuple[float, float]:
    """(atol, rtol) for an output dtype name (``fp16``, ``bf16``, ``fp32``), or
    ``fp8_e4m3_qkv`` for an fp8 q (``registry.tolerance_key``).

    Raises:
        ValueError: a dtype with no tolerance entry.
    """
    try:
        atol, rtol = TOLERANCES[dtype]
    except KeyError:
        raise ValueError(
            f"dtype: expected one of {sorted(TOLERANCES)} for validation, got {dtype!r}"
        ) from None
    return float(atol), float(rtol)


def compare(
    out: Any,
    lse: Any | None,
    ref_out: Any,
    ref_lse: Any | None,
    *,
    dtype: str,
    seed: int,
) -> ValidationResult:
    """Errors of ``(out, lse)`` against ``(ref_out, ref_lse)``.

    Args:
        out: kernel output tensor (any shape, e.g. [B, S, H, D_V]), any float dtype.
        lse: kernel log-sum-exp (e.g. [B, H, S] fp32), or None if the kernel has none.
        ref_out: reference output, same shape as ``out``.
        ref_lse: reference log-sum-exp, same shape as ``lse``, or None.
        dtype: dtype name of the output, picks the tolerance.
        seed: seed the inputs were drawn with (recorded).

    Returns:
        The max absolute / relative and relative-L2 errors of ``out``, the max absolute error
        of ``lse`` (over finite reference entries), and whether everything is within tolerance.
    """
    import torch

    atol, rtol = tolerance_for(dtype)
    if tuple(out.shape) != tuple(ref_out.shape):
        return _failed(
            f"out: expected shape {tuple(ref_out.shape)}, got {tuple(out.shape)}", atol, rtol, seed
        )
    got = out.detach().float().cpu()
    ref = ref_out.detach().float().cpu()
    problems: list[str] = []
    ref_finite = torch.isfinite(ref)
    bad = ref_finite & ~torch.isfinite(got)
    if bool(bad.any()):
        problems.append(f"out has {int(bad.sum())} NaN/inf value(s) where the reference is finite")
    diff = torch.where(ref_finite & torch.isfinite(got), (got - ref).abs(), torch.zeros_like(ref))
    if bool(bad.any()):
        diff = torch.where(bad, torch.full_like(ref, math.inf), diff)
    ref_abs = torch.where(ref_finite, ref.abs(), torch.zeros_like(ref))
    max_abs = float(diff.max()) if diff.numel() else 0.0
    max_rel = float((diff / (ref_abs + atol)).max()) if diff.numel() else 0.0
    ref_norm = float(torch.linalg.vector_norm(ref_abs))
    diff_norm = float(torch.linalg.vector_norm(diff))
    rel_l2 = diff_norm / ref_norm if ref_norm > 0 else diff_norm
    over = diff > atol + rtol * ref_abs
    if bool(over.any()):
        problems.append(
            f"out: {int(over.sum())} of {over.numel()} value(s) outside atol={atol} rtol={rtol} "
            f"(max abs err {max_abs:.3g})"
        )
    lse_err = 0.0
    if ref_lse is not None and lse is not None:
        lse_err, lse_problem = _compare_lse(lse, ref_lse, atol=atol, rtol=rtol)
        if lse_problem:
            problems.append(lse_problem)
    elif ref_lse is not None:
        problems.append("lse: the kernel returned none; expected one like the reference")
    return ValidationResult(
        passed=not problems,
        max_abs_err=max_abs,
        max_rel_err=max_rel,
        rel_l2_err=rel_l2,
        lse_max_abs_err=lse_err,
        atol=atol,
        rtol=rtol,
        seed=seed,
        message="; ".join(problems),
    )


def _compare_lse(lse: Any, ref_lse: Any, *, atol: float, rtol: float) -> tuple[float, str]:
    import torch

    if tuple(lse.shape) != tuple(ref_lse.shape):
        return math.inf, f"lse: expected shape {tuple(ref_lse.shape)}, got {tuple(lse.shape)}"
    got = lse.detach().float().cpu()
    ref = ref_lse.detach().float().cpu()
    ref_finite = torch.isfinite(ref)
    if bool((ref_finite != torch.isfinite(got)).any()) or bool(
        (got[~ref_finite] != ref[~ref_finite]).any()
    ):
        return math.inf, "lse: -inf/NaN positions differ from the reference (empty sequences?)"
    if not bool(ref_finite.any()):
        return 0.0, ""
    diff = (got[ref_finite] - ref[ref_finite]).abs()
    err = float(diff.max())
    over = diff > atol + rtol * ref[ref_finite].abs()
    if bool(over.any()):
        return err, f"lse: {int(over.sum())} value(s) outside tolerance (max abs err {err:.3g})"
    return err, ""


def _failed(message: str, atol: float, rtol: float, seed: int) -> ValidationResult:
    return ValidationResult(
        passed=False,
        max_abs_err=math.inf,
        max_rel_err=math.inf,
        rel_l2_err=math.inf,
        lse_max_abs_err=math.inf,
        atol=atol,
        rtol=rtol,
        seed=seed,
        message=message,
    )


def validate_config(
    spec: KernelSpec,
    problem: Any,
    config: Any,
    *,
    device: str,
    seed: int,
    reference_cache: dict[Any, Any] | None = None,
) -> ValidationResult:
    """Run ``config`` and the reference on fresh inputs drawn with ``seed``; compare.

    Args:
        spec: the kernel.
        problem: its problem dataclass.
        config: its config dataclass.
        device: torch device string of the inputs (``cuda:0``, ``cpu``).
        seed: input seed (use a new one per check).
        reference_cache: where the inputs and reference output of (kernel, problem, seed) are
            kept between calls (the reference is slow on big shapes); None: always recompute.
            Holds at most two entries.

    Raises:
        Whatever the kernel raises (the caller classifies it).
    """
    key = (spec.name, repr(problem), seed, device)
    if reference_cache is not None and key in reference_cache:
        inputs, (ref_out, ref_lse) = reference_cache[key]
    else:
        inputs = spec.fn("make_inputs")(problem, device=device, seed=seed)
        ref_out, ref_lse = _pair(spec.fn("reference")(inputs))
        if reference_cache is not None:
            while len(reference_cache) >= 2:
                reference_cache.pop(next(iter(reference_cache)))
            reference_cache[key] = (inputs, (ref_out, ref_lse))
    out, lse = _pair(spec.fn("run")(inputs, config))
    return compare(out, lse, ref_out, ref_lse, dtype=tolerance_key(problem), seed=seed)


def _pair(result: Any) -> tuple[Any, Any | None]:
    if isinstance(result, tuple | list):
        return result[0], (result[1] if len(result) > 1 else None)
    return result, None


def error_floor(problem: Any) -> float:
    """The ``floor`` of ``winner`` for ``problem``'s workload (``registry.REL_L2_FLOORS``, by
    ``workload_dtype``: an fp8 q, an fp8 cache; a problem without one: its output dtype)."""
    key = getattr(problem, "workload_dtype", None) or tolerance_key(problem)
    return REL_L2_FLOORS.get(key, 0.0)


def winner(
    trials: Iterable[TrialResult],
    *,
    factor: float = WINNER_ERROR_FACTOR,
    eps: float = WINNER_ERROR_EPS,
    floor: float = 0.0,
) -> TrialResult | None:
    """The fastest ok trial whose error is within ``factor`` of the most accurate ok trial's.

    A trial qualifies when ``rel_l2_err <= max(factor * best_rel_l2_err + eps, floor)``, so a
    config that is fast because it is wrong (but still inside the tolerance) does not win.
    ``floor`` is the error the precision itself allows (``error_floor``: an fp8 q's configs
    differ by design, fp8 tensor cores against a dequantised q). Trials with no validation are
    not eligible.

    Returns:
        The winner, or None when no trial is ok, validated and timed.
    """
    eligible = [
        t
        for t in trials
        if t.status == TrialStatus.OK and t.validation is not None and t.timing is not None
    ]
    if not eligible:
        return None
    best_err = min(t.validation.rel_l2_err for t in eligible if t.validation is not None)
    limit = max(factor * best_err + eps, floor)
    accurate: Sequence[TrialResult] = [
        t for t in eligible if t.validation is not None and t.validation.rel_l2_err <= limit
    ]
    return min(accurate, key=lambda t: t.timing.median_us if t.timing else math.inf)
