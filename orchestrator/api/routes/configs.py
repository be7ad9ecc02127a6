"""``GET /v1/configs/{kernel}``: the recommended config for one workload on one architecture.

The same fallback chain as the kernels' run-time lookup (``runtime_configs.select_entry``):
exact bucket, nearest bucket, the arch's most common winner (each first with entries measured
under the asked-for software, then others), a related architecture, the built-in default.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request

from mlafleet.kernels.bundle import Software, bucket_of, pow2_ceil
from mlafleet.kernels.configs import (
    CPU_INTERPRETER,
    FP8_WORKLOAD_DTYPES,
    KERNEL_DECODE,
    DecodeProblem,
    DeviceLimits,
    PrefillProblem,
    WorkloadDType,
)
from mlafleet.kernels.registry import get_kernel
from mlafleet.kernels.runtime_configs import LEVEL_DEFAULT, select_entry

from ..lookup_cache import RecommendationCache
from ..schemas import ConfigLookup

router = APIRouter(prefix="/v1", tags=["configs"])

KernelName = Literal["mla_decode", "mla_prefill"]
_ARCH_PATTERN = r"^[A-Za-z0-9_.\-]{1,64}$"


def _problem(
    kernel: str, *, batch: int, seqlen: int, heads: int, s_q: int, dtype: str, page_size: int
) -> DecodeProblem | PrefillProblem:
    if kernel == KERNEL_DECODE:
        return DecodeProblem(
            batch=batch,
            s_q=s_q,
            h_q=heads,
            seqlen=seqlen,
            page_size=page_size,
            **DecodeProblem.dtypes_of(dtype),
        )
    return PrefillProblem(
        batch=batch,
        seqlen_q=seqlen,
        seqlen_k=seqlen,
        h=heads,
        dtype=dtype,  # type: ignore[arg-type]
    )


def _default_config(
    kernel: str, problem: DecodeProblem | PrefillProblem, arch: str
) -> dict[str, Any] | None:
    """The kernel's built-in default for ``arch`` (generic device limits), or None."""
    spec = get_kernel(kernel)
    limits = CPU_INTERPRETER if arch == CPU_INTERPRETER.arch else DeviceLimits(arch=arch)
    try:
        config = spec.fn("default_config")(problem, limits)
    except (ImportError, AttributeError, ValueError):
        return None
    return config.as_dict()  # type: ignore[no-any-return]


def _cache(request: Request) -> RecommendationCache:
    cache: RecommendationCache = request.app.state.rec_cache
    return cache


@router.get(
    "/configs/{kernel}",
    response_model=ConfigLookup,
    summary="Recommended config for a workload, with its fallback level and provenance",
)
async def get_config(
    request: Request,
    kernel: KernelName,
    arch: Annotated[
        str, Query(pattern=_ARCH_PATTERN, description="sm_90, sm_80, gfx942, cpu-interpreter")
    ],
    batch: Annotated[int, Query(ge=1, le=1 << 20, description="sequences in the batch")],
    seqlen: Annotated[int, Query(ge=1, le=1 << 24, description="KV length (decode)")],
    heads: Annotated[int, Query(ge=1, le=1024, description="query heads")],
    s_q: Annotated[int, Query(ge=1, le=64, description="query tokens per sequence")] = 1,
    dtype: Annotated[
        WorkloadDType,
        Query(description="q and KV dtype; fp8_e4m3: fp8 KV, fp8_e4m3_qkv: fp8 q and KV"),
    ] = "bf16",
    page_size: Annotated[
        int, Query(ge=1, le=256, description="KV cache page size (decode), a power of two")
    ] = 64,
    triton: Annotated[
        str | None, Query(max_length=64, description="prefer entries measured with this Triton")
    ] = None,
    driver: Annotated[
        str | None, Query(max_length=64, description="... and this GPU driver version")
    ] = None,
) -> ConfigLookup:
    """The config to use for one workload on ``arch``.

    ``level`` says which fallback was used. Without ``triton``, entries of every software
    version count as matching (the newest measurement wins ties).
    """
    if kernel == KERNEL_DECODE and page_size & (page_size - 1):
        raise _bad_page_size(page_size)
    if kernel != KERNEL_DECODE:
        if s_q != 1:
            _raise_422("query.s_q", f"mla_prefill has no s_q axis; omit it (got {s_q})")
        if dtype in FP8_WORKLOAD_DTYPES:
            _raise_422("query.dtype", f"mla_prefill has no fp8 ({dtype}); use fp16, bf16 or fp32")
    problem = _problem(
        kernel, batch=batch, seqlen=seqlen, heads=heads, s_q=s_q, dtype=dtype, page_size=page_size
    )
    bucket = bucket_of(problem)
    software = Software(driver=driver, torch="", triton=triton) if triton else None
    key = (arch, bucket.key(), triton, driver)

    def compute(snap: Any) -> ConfigLookup:
        entry, level = select_entry(
            snap.entries, kernel=kernel, arch=arch, bucket=bucket, software=software
        )
        default = _default_config(kernel, problem, arch)
        if entry is None:
            config = default or get_kernel(kernel).config_type().as_dict()
            return ConfigLookup(
                kernel=kernel,
                arch=arch,
                bucket=bucket,
                level=LEVEL_DEFAULT,
                config=config,
                default_config=default,
            )
        rec = snap.rec_of[id(entry)]
        return ConfigLookup(
            kernel=kernel,
            arch=arch,
            bucket=bucket,
            level=level,
            config=entry.config,
            default_config=default,
            source_arch=entry.arch,
            software=entry.software,
            median_us=rec.median_us,
            default_median_us=rec.default_median_us,
            speedup_vs_default=rec.speedup_vs_default,
            noise=rec.noise,
            validated=rec.validated,
            recommendation=rec,
        )

    result: ConfigLookup = await _cache(request).answer(kernel, key, compute)
    return result


def _raise_422(loc: str, msg: str) -> None:
    from fastapi.exceptions import RequestValidationError

    raise RequestValidationError(
        [{"loc": tuple(loc.split(".")), "msg": msg, "type": "value_error"}]
    )


def _bad_page_size(page_size: int) -> Exception:
    from fastapi.exceptions import RequestValidationError

    msg = f"expected a power of two from 1 to 256, e.g. {pow2_ceil(page_size)}"
    return RequestValidationError(
        [{"loc": ("query", "page_size"), "msg": msg, "type": "value_error", "input": page_size}]
    )


__all__ = ["router"]
