"""The config bundle: the JSON document that carries tuned configs to the kernels at run time.

Made by the orchestrator (``mlafleet export`` / ``GET /v1/bundle``), written to disk by
``mlafleet pull``, read by ``runtime_configs`` inside ``mla_decode``/``mla_prefill``. It lives
in the kernels package because the kernels are its reader and must not import the orchestrator.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .configs import KERNEL_NAMES, DecodeProblem, PrefillProblem, WorkloadDType

BUNDLE_FORMAT_VERSION = 1


class Software(BaseModel):
    """The software a measurement was made with; part of every result's identity."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    driver: str | None = None
    cuda: str | None = None
    rocm: str | None = None
    torch: str
    triton: str


class WorkloadBucket(BaseModel):
    """A workload class: exact in heads, query tokens, dtype and page size; batch and sequence
    length rounded up to powers of two (``bucket_of``).

    ``dtype`` names the precision (``configs.WorkloadDType``: ``fp8_e4m3`` an fp8 cache,
    ``fp8_e4m3_qkv`` an fp8 q over one). For prefill, ``s_q`` is 1, ``page_size`` is 0 and
    ``seqlen`` is the per-sequence length.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    batch: int = Field(ge=1)
    seqlen: int = Field(ge=1)
    heads: int = Field(ge=1)
    s_q: int = Field(default=1, ge=1)
    dtype: WorkloadDType = "bf16"
    page_size: int = Field(default=0, ge=0)

    def key(self) -> str:
        """Stable text key, e.g. ``b64-n4096-h16-s1-bf16-p64``."""
        return (
            f"b{self.batch}-n{self.seqlen}-h{self.heads}-s{self.s_q}-{self.dtype}-p{self.page_size}"
        )


def pow2_ceil(value: int) -> int:
    """Smallest power of two >= value (1 for value <= 1)."""
    return 1 if value <= 1 else 1 << math.ceil(math.log2(value))


def bucket_of(problem: DecodeProblem | PrefillProblem) -> WorkloadBucket:
    """The bucket a problem falls in (batch and length rounded up to powers of two)."""
    if isinstance(problem, DecodeProblem):
        lengths = problem.lengths()
        longest = max(lengths) if lengths else 1
        return WorkloadBucket(
            batch=pow2_ceil(problem.batch),
            seqlen=pow2_ceil(max(longest, 1)),
            heads=problem.h_q,
            s_q=problem.s_q,
            dtype=problem.workload_dtype,
            page_size=problem.page_size,
        )
    return WorkloadBucket(
        batch=pow2_ceil(problem.batch),
        seqlen=pow2_ceil(max(problem.seqlen_k, 1)),
        heads=problem.h,
        s_q=1,
        dtype=problem.dtype,
        page_size=0,
    )


class BundleEntry(BaseModel):
    """One recommended config: kernel x architecture x workload bucket."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kernel: str
    arch: str
    gpu_name: str
    software: Software
    bucket: WorkloadBucket
    config: dict[str, Any]
    median_us: float | None = None
    speedup_vs_default: float | None = None
    validated: bool = False
    measured_at: datetime | None = None

    @field_validator("kernel")
    @classmethod
    def _known_kernel(cls, value: str) -> str:
        if value not in KERNEL_NAMES:
            raise ValueError(f"unknown kernel {value!r}; expected one of {list(KERNEL_NAMES)}")
        return value


class ConfigBundle(BaseModel):
    """A config bundle file (``MLAFLEET_CONFIGS``)."""

    model_config = ConfigDict(extra="forbid")

    format_version: int = BUNDLE_FORMAT_VERSION
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    source: str = Field(default="", description="what the bundle was made from: API URL or db")
    entries: list[BundleEntry] = Field(default_factory=list)

    @field_validator("format_version")
    @classmethod
    def _supported_version(cls, value: int) -> int:
        if value > BUNDLE_FORMAT_VERSION:
            raise ValueError(
                f"bundle format_version {value} is newer than this mlafleet understands "
                f"({BUNDLE_FORMAT_VERSION}); upgrade mlafleet or pull the bundle again"
            )
        return value
