"""Fleet job specs: what a user submits (YAML or JSON) to tune or validate a kernel fleet-wide.

A ``tune`` job searches configs for every workload of its grid on every target architecture
and publishes the winners as recommendations; a ``validate`` job re-checks the current
recommendations (or a given bundle) on every node of the target architectures.

``parse_job_spec`` is the one way in: it refuses an invalid spec with ``JobSpecError`` listing
EVERY problem at once (each field is checked on its own, then the cross-field rules run on the
fields that were valid), so a user fixes a spec in one round trip.

Example (YAML)::

    kind: tune
    name: decode-h200
    kernel: mla_decode
    workloads: {batch: [1, 64], seqlen: [1024, 8192], heads: [16, 128], dtype: [bf16]}
    archs: all
    strategy: tpe
    budget: {trials: 40, minutes: 10}
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from mlafleet.kernels.bundle import ConfigBundle
from mlafleet.kernels.configs import (
    FP8_WORKLOAD_DTYPES,
    KERNEL_DECODE,
    KERNEL_NAMES,
    KERNEL_PREFILL,
    DecodeProblem,
    PrefillProblem,
    WorkloadDType,
)

from .errors import JobSpecError

JobKind = Literal["tune", "validate"]
Strategy = Literal["exhaustive", "random", "tpe"]

_DECODE_ONLY = ("s_q", "page_size")
_POSITIVE = Annotated[int, Field(ge=1, le=1 << 24)]


def _as_list(value: Any) -> Any:
    """Accept a scalar where a list is expected (``batch: 1`` means ``batch: [1]``)."""
    if value is None or isinstance(value, list | tuple):
        return value
    return [value]


def _default_dtypes() -> list[WorkloadDType]:
    return ["bf16"]


class Workloads(BaseModel):
    """A grid of workloads: the cross product of every listed axis.

    Decode axes: batch, seqlen (KV length), heads (query heads), s_q (query tokens), dtype,
    page_size. Prefill axes: batch, seqlen (per-sequence length, queries = keys), heads, dtype.
    ``dtype`` names q's and the cache's precision (``fp16``, ``bf16``, ``fp32``; decode also
    ``fp8_e4m3``: a bf16 q over an fp8 cache, and ``fp8_e4m3_qkv``: an fp8 q over one).
    ``d_qk``/``d_v``/``kv_heads`` override the DeepSeek head dims (small test shapes).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    batch: list[_POSITIVE] = Field(min_length=1)
    seqlen: list[_POSITIVE] = Field(min_length=1)
    heads: list[_POSITIVE] = Field(min_length=1)
    s_q: list[Annotated[int, Field(ge=1, le=64)]] | None = None
    dtype: list[WorkloadDType] = Field(default_factory=lambda: _default_dtypes(), min_length=1)
    page_size: list[int] | None = None
    d_qk: int | None = Field(default=None, ge=1, le=4096)
    d_v: int | None = Field(default=None, ge=1, le=4096)
    kv_heads: int | None = Field(default=None, ge=1)
    causal: bool | None = None

    _lists = field_validator(
        "batch", "seqlen", "heads", "s_q", "dtype", "page_size", mode="before"
    )(_as_list)

    @field_validator("page_size")
    @classmethod
    def _pow2_pages(cls, value: list[int] | None) -> list[int] | None:
        for page in value or []:
            if page < 1 or page > 256 or page & (page - 1):
                raise ValueError(f"expected powers of two from 1 to 256, got {page}")
        return value

    def size(self) -> int:
        """Number of workloads in the grid."""
        n = len(self.batch) * len(self.seqlen) * len(self.heads) * len(self.dtype)
        return n * len(self.s_q or [1]) * len(self.page_size or [1])


class Budget(BaseModel):
    """Per-task budget: stop after ``trials`` configs or ``minutes``, whichever comes first."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    trials: int | None = Field(default=None, ge=1, le=100_000)
    minutes: float | None = Field(default=None, gt=0, le=7 * 24 * 60)


class JobSpec(BaseModel):
    """A fleet job. Build it with ``parse_job_spec`` to get every problem listed at once."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    kind: JobKind = "tune"
    name: str = Field(min_length=1, max_length=200)
    kernel: Literal["mla_decode", "mla_prefill"]
    workloads: Workloads | None = None
    archs: Literal["all"] | list[Annotated[str, Field(min_length=1, max_length=64)]] = "all"
    strategy: Strategy = "exhaustive"
    budget: Budget = Field(default_factory=Budget)
    validate_: bool = Field(default=True, alias="validate")
    bundle: ConfigBundle | None = None
    drift_tolerance: float = Field(
        default=0.25, gt=0, le=100, description="validate: allowed relative slowdown vs recorded"
    )

    def problems(self) -> list[DecodeProblem | PrefillProblem]:
        """The workload grid expanded into kernel problems, in a stable order."""
        if self.workloads is None:
            return []
        return expand_workloads(self.kernel, self.workloads)

    def target_archs(self, available: list[str]) -> list[str]:
        """The architectures this job targets, given the ones the fleet has."""
        return sorted(set(available)) if self.archs == "all" else list(self.archs)

    def to_json_dict(self) -> dict[str, Any]:
        """JSON-ready dict that ``parse_job_spec`` reads back to an equal spec."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def expand_workloads(kernel: str, grid: Workloads) -> list[DecodeProblem | PrefillProblem]:
    """The cross product of ``grid``'s axes as problem dataclasses of ``kernel``."""
    dims: dict[str, int] = {}
    if grid.d_qk is not None:
        dims["d_qk"] = grid.d_qk
    if grid.d_v is not None:
        dims["d_v"] = grid.d_v
    out: list[DecodeProblem | PrefillProblem] = []
    if kernel == KERNEL_DECODE:
        extra: dict[str, Any] = dict(dims)
        if grid.kv_heads is not None:
            extra["h_kv"] = grid.kv_heads
        if grid.causal is not None:
            extra["causal"] = grid.causal
        for b, n, h, s, dt, p in itertools.product(
            grid.batch, grid.seqlen, grid.heads, grid.s_q or [1], grid.dtype, grid.page_size or [64]
        ):
            dtypes = DecodeProblem.dtypes_of(dt)
            out.append(
                DecodeProblem(batch=b, s_q=s, h_q=h, seqlen=n, page_size=p, **dtypes, **extra)
            )
        return out
    extra = dict(dims)
    if grid.kv_heads is not None:
        extra["h_k"] = grid.kv_heads
    if grid.causal is not None:
        extra["causal"] = grid.causal
    for b, n, h, dt in itertools.product(grid.batch, grid.seqlen, grid.heads, grid.dtype):
        if dt in FP8_WORKLOAD_DTYPES:
            raise ValueError(f"workloads.dtype: mla_prefill has no fp8 ({dt})")
        out.append(PrefillProblem(batch=b, seqlen_q=n, seqlen_k=n, h=h, dtype=dt, **extra))
    return out


def _loc(prefix: str, loc: tuple[Any, ...]) -> str:
    parts = [prefix, *(str(p) for p in loc)]
    return ".".join(p for p in parts if p)


def _field_problems(name: str, exc: ValidationError) -> list[str]:
    out = []
    for err in exc.errors():
        msg = err["msg"]
        if err["type"] == "literal_error":
            msg = f"{msg}, got {err.get('input')!r}"
        out.append(f"{_loc(name, err['loc'])}: {msg}")
    return out


_ADAPTERS: dict[str, TypeAdapter[Any]] = {}


def _adapter(name: str) -> TypeAdapter[Any]:
    if name not in _ADAPTERS:
        field = JobSpec.model_fields[name]
        annotation: Any = field.annotation
        if field.metadata:
            annotation = Annotated[(annotation, *field.metadata)]
        _ADAPTERS[name] = TypeAdapter(annotation)
    return _ADAPTERS[name]


def _cross_problems(
    values: dict[str, Any], *, max_workloads: int | None, raw: Mapping[str, Any]
) -> list[str]:
    """Rules between fields, checked only on fields that were valid on their own."""
    problems: list[str] = []
    kind = values.get("kind", "tune")
    kernel = values.get("kernel")
    grid: Workloads | None = values.get("workloads")
    if kind == "tune" and "workloads" not in raw:
        problems.append("workloads: a tune job needs a workload grid (batch, seqlen, heads, ...)")
    if kind == "validate" and "workloads" in raw and "bundle" in raw:
        problems.append("workloads: a validate job takes workloads OR a bundle, not both")
    if kind == "tune" and "bundle" in raw:
        problems.append(
            "bundle: only a validate job takes a bundle; remove it or set kind: validate"
        )
    if grid is not None and kernel == KERNEL_PREFILL:
        for axis in _DECODE_ONLY:
            if getattr(grid, axis) is not None:
                problems.append(
                    f"workloads.{axis}: only mla_decode has this axis; remove it for mla_prefill"
                )
        fp8 = [dt for dt in grid.dtype if dt in FP8_WORKLOAD_DTYPES]
        if fp8:
            problems.append(
                f"workloads.dtype: mla_prefill has no fp8 ({', '.join(fp8)}); use fp16, bf16 "
                "or fp32"
            )
    if grid is not None and kernel in KERNEL_NAMES:
        kv_heads = grid.kv_heads or 1
        if kernel == KERNEL_DECODE and any(h % kv_heads for h in grid.heads):
            problems.append(f"workloads.kv_heads: {kv_heads} must divide every heads value")
        d_qk, d_v = grid.d_qk, grid.d_v
        default_qk, default_v = (576, 512) if kernel == KERNEL_DECODE else (192, 128)
        if kernel == KERNEL_DECODE and (d_v or default_v) > (d_qk or default_qk):
            problems.append(
                f"workloads.d_v: expected <= d_qk ({d_qk or default_qk}), got {d_v or default_v}"
            )
    if grid is not None and max_workloads is not None and grid.size() > max_workloads:
        problems.append(
            f"workloads: the grid has {grid.size()} workloads, more than the limit of "
            f"{max_workloads} (MLAFLEET_MAX_WORKLOADS_PER_JOB); split the job or shrink the grid"
        )
    budget: Budget | None = values.get("budget") if "budget" in raw else Budget()
    strategy = values.get("strategy", "exhaustive")
    if (
        kind == "tune"
        and strategy != "exhaustive"
        and budget is not None
        and budget.trials is None
        and budget.minutes is None
    ):
        problems.append(
            f"budget: strategy {strategy!r} needs a budget; set budget.trials and/or budget.minutes"
        )
    archs = values.get("archs")
    if isinstance(archs, list):
        if not archs:
            problems.append("archs: expected 'all' or a non-empty list of architectures")
        dupes = sorted({a for a in archs if archs.count(a) > 1})
        if dupes:
            problems.append(f"archs: listed more than once: {dupes}")
    bundle: ConfigBundle | None = values.get("bundle")
    if bundle is not None and kernel is not None:
        others = sorted({e.kernel for e in bundle.entries if e.kernel != kernel})
        if others:
            problems.append(f"bundle: has entries of kernel(s) {others}, but the job's is {kernel}")
    return problems


def parse_job_spec(
    data: Mapping[str, Any] | str | bytes, *, max_workloads: int | None = None
) -> JobSpec:
    """Validate a job spec (a mapping, or YAML/JSON text), reporting every problem at once.

    Args:
        data: the spec as a mapping, or YAML or JSON text.
        max_workloads: refuse grids with more workloads (``settings.max_workloads_per_job``);
            None reads the limit from the settings.

    Returns:
        The validated ``JobSpec``.

    Raises:
        JobSpecError: the spec is invalid; ``problems`` lists every problem, one per line,
            each naming the field (``workloads.batch.0: ...``).
    """
    if isinstance(data, bytes | str):
        text = data.decode() if isinstance(data, bytes) else data
        try:
            loaded: Any = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as exc:
            raise JobSpecError([f"not valid YAML or JSON: {exc}"]) from None
        return _parse_mapping(loaded, max_workloads=max_workloads)
    return _parse_mapping(data, max_workloads=max_workloads)


def _parse_mapping(data: Any, *, max_workloads: int | None) -> JobSpec:
    if not isinstance(data, Mapping):
        got = type(data).__name__
        raise JobSpecError([f"expected a mapping of kind, name, kernel, workloads, ...; got {got}"])
    if max_workloads is None:
        from .config import get_settings

        max_workloads = get_settings().max_workloads_per_job
    problems: list[str] = []
    aliases = {f.alias or n: n for n, f in JobSpec.model_fields.items()}
    for key in data:
        if key not in aliases:
            problems.append(f"{key}: unknown field; expected one of {sorted(aliases)}")
    values: dict[str, Any] = {}
    for key, name in aliases.items():
        field = JobSpec.model_fields[name]
        if key not in data:
            if field.is_required():
                problems.append(f"{key}: required field is missing")
            continue
        try:
            values[name] = _adapter(name).validate_python(data[key])
        except ValidationError as exc:
            problems.extend(_field_problems(key, exc))
    problems.extend(_cross_problems(values, max_workloads=max_workloads, raw=data))
    if problems:
        raise JobSpecError(problems)
    return JobSpec.model_validate(dict(data))


def load_job_spec_file(path: str) -> JobSpec:
    """``parse_job_spec`` on a YAML or JSON file.

    Raises:
        JobSpecError: unreadable file or invalid spec.
    """
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise JobSpecError([f"cannot read {path}: {exc.strerror}; check the path"]) from None
    return parse_job_spec(text)


def spec_from_json(text: str) -> JobSpec:
    """Read back a spec stored by ``JobSpec.to_json_dict`` (no grid limit: it was checked)."""
    return parse_job_spec(json.loads(text), max_workloads=1 << 62)


__all__ = [
    "Budget",
    "JobKind",
    "JobSpec",
    "Strategy",
    "Workloads",
    "expand_workloads",
    "load_job_spec_file",
    "parse_job_spec",
    "spec_from_json",
]
