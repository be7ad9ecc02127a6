"""Factories of the orchestrator tests: tiny job specs, device fingerprints, trial results.

A plain module (not conftest.py) so test modules can import it by a unique name in every pytest
import mode and in whole-suite runs; ``conftest.py`` puts this folder on ``sys.path``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from mlafleet.kernels.bundle import Software
from mlafleet.worker.schemas import (
    DeviceFingerprint,
    TimingStats,
    TrialResult,
    TrialStatus,
    ValidationResult,
)

TINY_PROBLEM: dict[str, Any] = {
    "batch": 1,
    "s_q": 1,
    "h_q": 2,
    "seqlen": 16,
    "d_qk": 96,
    "d_v": 64,
    "page_size": 16,
    "dtype": "fp16",
}


def tiny_spec(**overrides: Any) -> dict[str, Any]:
    """A tune job over tiny decode problems (seconds per task on the CPU interpreter)."""
    spec: dict[str, Any] = {
        "kind": "tune",
        "name": "tiny",
        "kernel": "mla_decode",
        "workloads": {
            "batch": [1],
            "seqlen": [16],
            "heads": [2],
            "dtype": ["fp16"],
            "page_size": [16],
            "d_qk": 96,
            "d_v": 64,
        },
        "strategy": "random",
        "budget": {"trials": 2},
    }
    spec.update(overrides)
    return spec


def make_fingerprint(
    *, arch: str = "sm_90", host: str = "node-a", index: int = 0, triton: str = "3.6.0"
) -> DeviceFingerprint:
    return DeviceFingerprint(
        vendor="nvidia" if arch.startswith("sm_") else "cpu",
        name="NVIDIA H200" if arch == "sm_90" else f"dev-{arch}",
        arch=arch,
        index=index,
        uuid=f"GPU-{host}-{index}",
        sm_count=132,
        software=Software(driver="560.35", cuda="12.6", torch="2.13.0", triton=triton),
        host=host,
    )


def make_timing(median_us: float, *, spread: float = 0.02) -> TimingStats:
    samples = [median_us * f for f in (0.99, 1.0, 1.01)]
    return TimingStats(
        median_us=median_us,
        p20_us=samples[0],
        p80_us=samples[2],
        min_us=samples[0],
        max_us=samples[2],
        mean_us=median_us,
        spread=spread,
        samples_us=samples,
        method="cuda_graph",
    )


def make_trial(
    *,
    config: dict[str, Any] | None = None,
    median_us: float | None = 100.0,
    status: TrialStatus = TrialStatus.OK,
    passed: bool | None = True,
    is_default: bool = False,
    device: DeviceFingerprint | None = None,
    problem: dict[str, Any] | None = None,
    max_abs_err: float = 1e-4,
) -> TrialResult:
    start = datetime.now(UTC)
    validation = None
    if passed is not None:
        validation = ValidationResult(
            passed=passed,
            max_abs_err=max_abs_err,
            max_rel_err=max_abs_err,
            rel_l2_err=max_abs_err,
            lse_max_abs_err=0.0,
            atol=2e-3,
            rtol=2e-3,
            seed=0,
        )
    return TrialResult(
        kernel="mla_decode",
        problem=problem or dict(TINY_PROBLEM),
        config=config
        or {
            "block_size_q": 16,
            "block_size_k": 32,
            "num_warps": 4,
            "num_stages": 1,
            "num_kv_splits": "auto",
        },
        status=status,
        error="" if status == TrialStatus.OK else "boom",
        timing=make_timing(median_us) if median_us is not None else None,
        validation=validation,
        compile_s=0.5,
        device=device or make_fingerprint(),
        is_default=is_default,
        started_at=start,
        finished_at=start + timedelta(seconds=1),
    )


def cfg(block_size_k: int, *, warps: int = 4) -> dict[str, Any]:
    return {
        "block_size_q": 16,
        "block_size_k": block_size_k,
        "num_warps": warps,
        "num_stages": 1,
        "num_kv_splits": "auto",
    }
