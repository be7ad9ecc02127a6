"""Plain factories for the worker's tests (importable by name: test folders are not packages)."""

from __future__ import annotations

from typing import Any

import pytest

from mlafleet.kernels.bundle import Software
from mlafleet.worker.device import interpreter_mode
from mlafleet.worker.schemas import (
    DeviceFingerprint,
    TimingStats,
    TrialResult,
    TrialStatus,
    ValidationResult,
)

INTERPRETER_ONLY = pytest.mark.skipif(
    not interpreter_mode(),
    reason="planted kernels built for the CPU interpreter (TRITON_INTERPRET=1: wall-clock "
    "timing, its limits, no compile phase); on a GPU a planted hang falls in the compile phase "
    "and the GPU's limits and timing apply",
)
"""For the tests of the isolation machinery built on the planted kernels' interpreter runs."""


def make_device(**overrides: Any) -> DeviceFingerprint:
    fields: dict[str, Any] = {
        "vendor": "nvidia",
        "name": "NVIDIA H200",
        "arch": "sm_90",
        "index": 0,
        "sm_count": 132,
        "software": Software(driver="580", cuda="13.0", torch="2.11.0", triton="3.6.0"),
        "host": "node-a",
    }
    fields.update(overrides)
    return DeviceFingerprint(**fields)


def make_trial(
    *,
    median_us: float | None = 10.0,
    rel_l2: float | None = 1e-3,
    status: TrialStatus = TrialStatus.OK,
    config: dict[str, Any] | None = None,
    device: DeviceFingerprint | None = None,
) -> TrialResult:
    timing = None
    if median_us is not None:
        timing = TimingStats(
            median_us=median_us,
            p20_us=median_us,
            p80_us=median_us,
            min_us=median_us,
            max_us=median_us,
            mean_us=median_us,
            spread=0.0,
            samples_us=[median_us],
            method="cuda_graph",
        )
    validation = None
    if rel_l2 is not None:
        validation = ValidationResult(
            passed=status == TrialStatus.OK,
            max_abs_err=rel_l2,
            max_rel_err=rel_l2,
            rel_l2_err=rel_l2,
            lse_max_abs_err=0.0,
            atol=1.6e-2,
            rtol=1.6e-2,
            seed=1,
        )
    return TrialResult(
        kernel="mla_decode",
        problem={"batch": 1, "s_q": 1, "h_q": 16, "seqlen": 64},
        config=config or {"block_size_q": 16, "block_size_k": 16},
        status=status,
        timing=timing,
        validation=validation,
        device=device or make_device(),
    )
