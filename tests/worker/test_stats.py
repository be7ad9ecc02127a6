"""Statistics on known samples."""

from __future__ import annotations

import math

import pytest

from mlafleet.worker import stats


def test_percentile_interpolates_like_numpy() -> None:
    samples = [1.0, 2.0, 3.0, 4.0, 5.0]
    assert stats.percentile(samples, 0) == 1.0
    assert stats.percentile(samples, 50) == 3.0
    assert stats.percentile(samples, 100) == 5.0
    assert stats.percentile(samples, 20) == pytest.approx(1.8)
    assert stats.percentile(samples, 80) == pytest.approx(4.2)
    assert stats.percentile([7.0], 35) == 7.0


def test_percentile_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="at least one sample"):
        stats.percentile([], 50)
    with pytest.raises(ValueError, match=r"q in 0\.\.100"):
        stats.percentile([1.0], 101)


def test_spread_of_known_samples() -> None:
    # p20 = 1.8, p80 = 4.2, median 3 -> 0.8
    assert stats.spread([5.0, 1.0, 4.0, 2.0, 3.0]) == pytest.approx(0.8)
    assert stats.spread([10.0] * 7) == 0.0


def test_is_stable_needs_two_batches_and_a_still_median() -> None:
    steady = [100.0, 101.0, 99.0, 100.0, 100.5, 99.5]
    assert not stats.is_stable(steady[:3], batch=3)
    assert stats.is_stable(steady, batch=3, rel_tol=0.01)
    drifting = [100.0, 100.0, 100.0, 120.0, 121.0, 122.0]
    assert not stats.is_stable(drifting, batch=3, rel_tol=0.01)


def test_outliers_flags_far_out_samples_only() -> None:
    samples = [10.0, 10.1, 9.9, 10.0, 10.2, 9.8, 10.0, 50.0]
    assert stats.outliers(samples) == [7]
    assert stats.outliers([10.0, 10.1, 9.9]) == []


def test_summarize_keeps_samples_and_flags_noise() -> None:
    calm = stats.summarize([10.0, 10.1, 9.9, 10.0, 10.0], method="cuda_graph")
    assert calm.median_us == 10.0
    assert calm.min_us == 9.9
    assert calm.max_us == 10.1
    assert calm.mean_us == pytest.approx(10.0)
    assert calm.samples_us == [10.0, 10.1, 9.9, 10.0, 10.0]
    assert calm.method == "cuda_graph"
    assert not calm.noisy
    wild = stats.summarize([5.0, 10.0, 15.0, 20.0, 25.0], method="cuda_event", max_spread=0.05)
    assert wild.noisy
    assert wild.spread == pytest.approx((21.0 - 9.0) / 15.0)


def test_summarize_rejects_empty_and_nonfinite() -> None:
    with pytest.raises(ValueError, match="at least one timing sample"):
        stats.summarize([], method="wall_clock")
    with pytest.raises(ValueError, match="finite non-negative"):
        stats.summarize([1.0, math.nan], method="wall_clock")
