"""Wire format between the worker and everything above it (orchestrator, CLI, JSON output).

Frozen pydantic models. The orchestrator stores and serves these; it never redefines them.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from mlafleet.kernels.bundle import Software


class TrialStatus(enum.StrEnum):
    """How one candidate config ended."""

    OK = "ok"
    INVALID_CONFIG = "invalid_config"
    COMPILE_ERROR = "compile_error"
    COMPILE_TIMEOUT = "compile_timeout"
    OUT_OF_RESOURCES = "out_of_resources"
    RUNTIME_ERROR = "runtime_error"
    RUN_TIMEOUT = "run_timeout"
    WRONG_ANSWER = "wrong_answer"


class DeviceFingerprint(BaseModel):
    """Who measured: one GPU (or the CPU interpreter) with its software.

    ``device_key`` identifies the physical device; ``env_key`` the software environment; both
    are part of every result's identity.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    vendor: str = Field(description="nvidia, amd, or cpu")
    name: str = Field(description="e.g. 'NVIDIA H200', or 'cpu-interpreter'")
    arch: str = Field(description="sm_90, sm_80, gfx942, ... or cpu-interpreter")
    index: int = Field(default=0, description="local device index")
    uuid: str | None = None
    sm_count: int = 0
    memory_bytes: int = 0
    l2_bytes: int = 0
    max_shared_mem_bytes: int = 0
    sm_clock_mhz: int | None = None
    mem_clock_mhz: int | None = None
    software: Software
    host: str

    @property
    def device_key(self) -> str:
        return f"{self.host}/{self.uuid or self.index}/{self.name}"

    @property
    def env_key(self) -> str:
        sw = self.software
        return (
            f"driver={sw.driver};cuda={sw.cuda};rocm={sw.rocm};torch={sw.torch};triton={sw.triton}"
        )


class DeviceSample(BaseModel):
    """Device state read (NVML) around a measurement; None where unreadable."""

    model_config = ConfigDict(frozen=True)

    sm_clock_mhz: int | None = None
    mem_clock_mhz: int | None = None
    temperature_c: int | None = None
    power_w: float | None = None
    clock_event_reasons: int | None = Field(
        default=None,
        description="NVML's clock-event reason bits: why the clock is below its maximum "
        "(0x4: the power cap, 0x20 / 0x40: thermal)",
    )


class TimingStats(BaseModel):
    """Statistics of one config's timings, in microseconds per call."""

    model_config = ConfigDict(frozen=True)

    median_us: float
    p20_us: float
    p80_us: float
    min_us: float
    max_us: float
    mean_us: float
    spread: float = Field(description="(p80 - p20) / median")
    samples_us: list[float]
    method: str = Field(description="cuda_graph, cuda_event, or wall_clock (interpreter)")
    noisy: bool = False
    device_before: DeviceSample | None = None
    device_after: DeviceSample | None = None


class ValidationResult(BaseModel):
    """A config's output against the fp32 reference."""

    model_config = ConfigDict(frozen=True)

    passed: bool
    max_abs_err: float
    max_rel_err: float
    rel_l2_err: float
    lse_max_abs_err: float
    atol: float
    rtol: float
    seed: int
    message: str = ""


class TrialResult(BaseModel):
    """One candidate config on one workload on one device."""

    model_config = ConfigDict(frozen=True)

    kernel: str
    problem: dict[str, Any]
    config: dict[str, Any]
    status: TrialStatus
    error: str = ""
    timing: TimingStats | None = None
    validation: ValidationResult | None = None
    compile_s: float | None = None
    device: DeviceFingerprint
    is_default: bool = False
    started_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    finished_at: datetime = Field(default_factory=lambda: datetime.now(UTC))

    @property
    def median_us(self) -> float | None:
        return self.timing.median_us if self.timing else None


class TuneResult(BaseModel):
    """A whole sweep of one workload on one device: every trial, the winner and the default."""

    model_config = ConfigDict(frozen=True)

    kernel: str
    problem: dict[str, Any]
    device: DeviceFingerprint
    strategy: str
    trials: list[TrialResult]
    best: TrialResult | None = Field(
        description="fastest ok trial whose error is within a small factor of the most accurate"
    )
    default: TrialResult | None = None
    wall_s: float
    compile_wall_s: float
    timing_wall_s: float

    @property
    def speedup_vs_default(self) -> float | None:
        if self.best is None or self.default is None:
            return None
        if self.best.median_us is None or self.default.median_us is None:
            return None
        return self.default.median_us / self.best.median_us
