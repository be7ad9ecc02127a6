"""Tuning knobs, problem shapes and device limits shared by the MLA kernels.

Everything here is plain data (frozen dataclasses): the launchers map a config onto their
``BLOCK_*`` constexprs, the tuning spaces (``tuning.py``) enumerate configs, and the worker
sends them across process boundaries as dicts (``dataclasses.asdict`` / ``from_dict``).

Axis letters used across the package: B batch, S query tokens per sequence (``s_q``),
H query heads, HK kv heads, N kv tokens, P page size, D_CKV latent (512), D_PE rope (64).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

DType = Literal["fp16", "bf16", "fp32"]
KvDType = Literal["fp16", "bf16", "fp8_e4m3"]
QDType = Literal["fp8_e4m3"]
WorkloadDType = Literal["fp16", "bf16", "fp32", "fp8_e4m3", "fp8_e4m3_qkv"]
"""A workload's precision in one name (job specs, buckets, the API): a 16-bit or fp32 q over a
cache of the same dtype; ``fp8_e4m3``: a bf16 q over an fp8 cache; ``fp8_e4m3_qkv``: an fp8 q
over an fp8 cache (FlashMLA's fp8 interface). The output is bf16 for both fp8 kinds."""
FP8_KV = "fp8_e4m3"
FP8_QKV = "fp8_e4m3_qkv"
FP8_WORKLOAD_DTYPES: tuple[str, ...] = (FP8_KV, FP8_QKV)
"""The workload dtypes with an fp8 cache: decode only."""
WORKLOAD_DTYPES: tuple[str, ...] = get_args(WorkloadDType)

KERNEL_DECODE = "mla_decode"
KERNEL_PREFILL = "mla_prefill"
KERNEL_NAMES: tuple[str, ...] = (KERNEL_DECODE, KERNEL_PREFILL)


@dataclass(frozen=True)
class DecodeConfig:
    """Launch knobs of ``mla_decode``.

    Attributes:
        block_size_q: query rows (heads x query tokens) one program handles; one program reads
            each KV tile once for all of its rows.
        block_size_k: KV tokens per inner-loop step.
        num_warps: warps per program.
        num_stages: software-pipelining depth of the KV loop.
        num_kv_splits: programs along the KV axis per (batch, query block), combined afterwards;
            ``"auto"`` picks it from batch, heads, length and the device's SM count.
    """

    block_size_q: int = 64
    block_size_k: int = 64
    num_warps: int = 8
    num_stages: int = 2
    num_kv_splits: int | Literal["auto"] = "auto"

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DecodeConfig:
        return _config_from_dict(cls, data)


@dataclass(frozen=True)
class PrefillConfig:
    """Launch knobs of ``mla_prefill``.

    Attributes:
        block_size_q: query tokens per program (one head per program).
        block_size_k: key tokens per inner-loop step.
        num_warps: warps per program.
        num_stages: software-pipelining depth of the key loop.
    """

    block_size_q: int = 128
    block_size_k: int = 64
    num_warps: int = 8
    num_stages: int = 2

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PrefillConfig:
        return _config_from_dict(cls, data)


KernelConfig = DecodeConfig | PrefillConfig


def _config_from_dict(cls: Any, data: Mapping[str, Any]) -> Any:
    """Build a config dataclass from a mapping, naming unknown or missing keys in the error.

    Raises:
        ValueError: a key that is not a knob of ``cls``, or a value of the wrong type.
    """
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(
            f"{cls.__name__}: unknown knob(s) {unknown}; expected a subset of {sorted(names)}"
        )
    values: dict[str, Any] = {}
    for name, value in data.items():
        if name == "num_kv_splits" and value == "auto":
            values[name] = value
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{cls.__name__}.{name}: expected a positive int, got {value!r}")
        values[name] = value
    return cls(**values)


@dataclass(frozen=True)
class DecodeProblem:
    """The shape of one decode call: what a config is tuned for.

    Attributes:
        batch: B.
        s_q: query tokens per sequence (1 for plain decode, 2+ for multi-token prediction).
        h_q: query heads H.
        seqlen: KV length of every sequence (``seqlens`` overrides it per sequence).
        h_kv: KV heads (MLA: 1).
        d_qk: query/key head dim (576 = 512 latent + 64 rope).
        d_v: value head dim (512): the first ``d_v`` entries of a key row.
        page_size: tokens per page of the paged cache.
        dtype: dtype of the output, and of q unless ``q_dtype`` is set.
        kv_dtype: dtype of the cache (``fp8_e4m3`` comes with a scale).
        causal: causal mask over the ``s_q`` new tokens.
        seqlens: optional per-sequence lengths (len == batch); varied-length workloads.
        q_dtype: ``fp8_e4m3`` for an fp8 q with its scale (``q_scale``), over an fp8 cache
            and with a bf16 output; None: q is in ``dtype``.

    Raises:
        ValueError: an fp8 q without an fp8 cache, or with an output dtype other than bf16.
    """

    batch: int
    s_q: int
    h_q: int
    seqlen: int
    h_kv: int = 1
    d_qk: int = 576
    d_v: int = 512
    page_size: int = 64
    dtype: DType = "bf16"
    kv_dtype: KvDType | None = None
    causal: bool = False
    seqlens: tuple[int, ...] | None = None
    q_dtype: QDType | None = None

    def __post_init__(self) -> None:
        if self.q_dtype is not None and (self.kv_dtype != FP8_KV or self.dtype != "bf16"):
            raise ValueError(
                f"q_dtype {self.q_dtype!r}: an fp8 q needs kv_dtype 'fp8_e4m3' and dtype 'bf16' "
                f"(its output), got kv_dtype {self.kv_dtype!r} and dtype {self.dtype!r}"
            )

    @property
    def kernel(self) -> str:
        return KERNEL_DECODE

    @property
    def cache_dtype(self) -> str:
        return self.kv_dtype or self.dtype

    @property
    def workload_dtype(self) -> str:
        """The precision in one name (``WorkloadDType``): ``fp8_e4m3_qkv``, ``fp8_e4m3`` or
        ``dtype``."""
        if self.q_dtype is not None:
            return FP8_QKV
        return FP8_KV if self.kv_dtype == FP8_KV else self.dtype

    @classmethod
    def dtypes_of(cls, workload_dtype: str) -> dict[str, Any]:
        """``dtype``, ``kv_dtype`` and ``q_dtype`` of a workload dtype name (the inverse of
        ``workload_dtype``).

        Raises:
            ValueError: a name that is not one of ``WORKLOAD_DTYPES``.
        """
        if workload_dtype == FP8_QKV:
            return {"dtype": "bf16", "kv_dtype": FP8_KV, "q_dtype": FP8_KV}
        if workload_dtype == FP8_KV:
            return {"dtype": "bf16", "kv_dtype": FP8_KV, "q_dtype": None}
        if workload_dtype in WORKLOAD_DTYPES:
            return {"dtype": workload_dtype, "kv_dtype": None, "q_dtype": None}
        raise ValueError(f"dtype: expected one of {list(WORKLOAD_DTYPES)}, got {workload_dtype!r}")

    def lengths(self) -> tuple[int, ...]:
        """Per-sequence KV lengths, ``seqlens`` when given, else ``seqlen`` for every sequence."""
        return self.seqlens if self.seqlens is not None else (self.seqlen,) * self.batch

    def as_dict(self) -> dict[str, Any]:
        """The fields as JSON-ready data; ``q_dtype`` only when set, so a problem's identity
        (results caches, stored trials) is the same as before that field existed."""
        data = dataclasses.asdict(self)
        if self.seqlens is not None:
            data["seqlens"] = list(self.seqlens)
        if self.q_dtype is None:
            del data["q_dtype"]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DecodeProblem:
        values = dict(data)
        if values.get("seqlens") is not None:
            values["seqlens"] = tuple(values["seqlens"])
        return cls(**values)

    def kv_bytes(self) -> int:
        """Bytes of KV the kernel must read at least once (one read of each token row)."""
        elem = 1 if self.cache_dtype == FP8_KV else 2
        return sum(self.lengths()) * self.h_kv * self.d_qk * elem

    def flops(self) -> int:
        """2 * sum(seqlen) * s_q * h_q * (d_qk + d_v), as ANCHORS.md counts them."""
        return 2 * sum(self.lengths()) * self.s_q * self.h_q * (self.d_qk + self.d_v)


@dataclass(frozen=True)
class PrefillProblem:
    """The shape of one prefill call.

    Attributes:
        batch: sequences packed in the call.
        seqlen_q: query tokens per sequence.
        seqlen_k: key tokens per sequence (>= seqlen_q for bottom-right causal).
        h: query heads.
        h_k: key/value heads (divides h).
        d_qk: query/key head dim (DeepSeek: 192 = 128 + 64 rope).
        d_v: value head dim (DeepSeek: 128).
        dtype: fp16 or bf16.
        causal: causal mask aligned bottom-right.
    """

    batch: int
    seqlen_q: int
    seqlen_k: int
    h: int
    h_k: int | None = None
    d_qk: int = 192
    d_v: int = 128
    dtype: DType = "bf16"
    causal: bool = True

    @property
    def kernel(self) -> str:
        return KERNEL_PREFILL

    @property
    def kv_heads(self) -> int:
        return self.h_k if self.h_k is not None else self.h

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PrefillProblem:
        return cls(**dict(data))

    def flops(self) -> int:
        """2 * b * h * s_q * s_k * (d_qk + d_v), halved for the causal square part."""
        full = 2 * self.batch * self.h * self.seqlen_q * self.seqlen_k * (self.d_qk + self.d_v)
        return full // 2 if self.causal else full


Problem = DecodeProblem | PrefillProblem


@dataclass(frozen=True)
class DeviceLimits:
    """What a config must fit on one device; built by ``worker.device`` or by hand in tests.

    Attributes:
        arch: ``sm_90``, ``sm_80``, ``gfx942``, ... or ``cpu-interpreter``.
        sm_count: streaming multiprocessors (CUs on AMD).
        max_shared_mem_bytes: shared memory one program may use (opt-in maximum).
        max_registers_per_block: 32-bit registers available to one program.
        max_warps_per_block: warps one program may have.
    """

    arch: str
    sm_count: int = 132
    max_shared_mem_bytes: int = 227 * 1024
    max_registers_per_block: int = 65536
    max_warps_per_block: int = 32
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def is_interpreter(self) -> bool:
        return self.arch == "cpu-interpreter"

    @property
    def sm_major(self) -> int | None:
        """9 for ``sm_90``, 8 for ``sm_80``/``sm_86``/``sm_89``; None off NVIDIA."""
        if self.arch.startswith("sm_") and self.arch[3:].isdigit():
            return int(self.arch[3:]) // 10
        return None


CPU_INTERPRETER = DeviceLimits(
    arch="cpu-interpreter",
    sm_count=2,
    max_shared_mem_bytes=1 << 30,
    max_registers_per_block=1 << 30,
)
