"""Statistics of timing samples: percentiles, spread, stability and outliers.

Pure functions over plain lists of floats (microseconds), so they are tested on known samples.
Percentiles interpolate linearly between order statistics, as ``numpy.percentile`` does.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from .schemas import DeviceSample, TimingStats

DEFAULT_MAX_SPREAD = 0.05
"""A measurement whose (p80 - p20) / median is above this is repeated, then flagged noisy."""

DEFAULT_STABLE_REL = 0.005
"""The median is stable when adding a batch of samples moves it by less than this fraction."""


def percentile(samples: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of ``samples``, linearly interpolated.

    Raises:
        ValueError: no samples, or ``q`` outside 0..100.
    """
    if not samples:
        raise ValueError("percentile: expected at least one sample, got none")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile: expected q in 0..100, got {q}")
    ordered = sorted(samples)
    pos = (len(ordered) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    frac = pos - lo
    return ordered[lo] + (ordered[hi] - ordered[lo]) * frac


def spread(samples: Sequence[float]) -> float:
    """(p80 - p20) / median: the relative width of the middle 60% of the samples."""
    median = statistics.median(samples)
    if median <= 0:
        return 0.0
    return (percentile(samples, 80) - percentile(samples, 20)) / median


def is_stable(samples: Sequence[float], *, batch: int, rel_tol: float = DEFAULT_STABLE_REL) -> bool:
    """Whether the median of ``samples`` moved by less than ``rel_tol`` with the last ``batch``.

    Needs at least two batches; fewer are never stable.
    """
    if batch < 1 or len(samples) < 2 * batch:
        return False
    before = statistics.median(samples[:-batch])
    after = statistics.median(samples)
    if after <= 0:
        return True
    return abs(after - before) / after < rel_tol


def outliers(samples: Sequence[float], *, k: float = 3.0) -> list[int]:
    """Indices of samples outside Tukey's fences (``k`` times the p25..p75 range).

    Args:
        samples: timing samples.
        k: fence width in interquartile ranges (3 = "far out").
    """
    if len(samples) < 4:
        return []
    q1, q3 = percentile(samples, 25), percentile(samples, 75)
    iqr = q3 - q1
    lo, hi = q1 - k * iqr, q3 + k * iqr
    return [i for i, x in enumerate(samples) if x < lo or x > hi]


def summarize(
    samples_us: Sequence[float],
    *,
    method: str,
    max_spread: float = DEFAULT_MAX_SPREAD,
    device_before: DeviceSample | None = None,
    device_after: DeviceSample | None = None,
) -> TimingStats:
    """Statistics of ``samples_us``, every raw sample kept.

    Args:
        samples_us: microseconds per call, one per sample.
        method: ``cuda_graph``, ``cuda_event`` or ``wall_clock``.
        max_spread: spread above which the result is flagged ``noisy``.
        device_before: NVML state before the samples were taken.
        device_after: NVML state after.

    Raises:
        ValueError: no samples, or a sample that is not a finite non-negative number.
    """
    if not samples_us:
        raise ValueError("summarize: expected at least one timing sample, got none")
    bad = [x for x in samples_us if not math.isfinite(x) or x < 0]
    if bad:
        raise ValueError(f"summarize: expected finite non-negative samples, got {bad[:3]}")
    values = [float(x) for x in samples_us]
    width = spread(values)
    return TimingStats(
        median_us=statistics.median(values),
        p20_us=percentile(values, 20),
        p80_us=percentile(values, 80),
        min_us=min(values),
        max_us=max(values),
        mean_us=statistics.fmean(values),
        spread=width,
        samples_us=values,
        method=method,
        noisy=width > max_spread,
        device_before=device_before,
        device_after=device_after,
    )
