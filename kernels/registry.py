"""One entry per tunable kernel: how to build inputs, run, check and tune it.

The worker and the benchmarks drive kernels only through ``get_kernel(name)``, so adding a
kernel means adding one ``KernelSpec`` here. Imports of the kernel modules are lazy: importing
this module does not import Triton.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .configs import (
    FP8_KV,
    FP8_QKV,
    KERNEL_DECODE,
    KERNEL_PREFILL,
    DecodeConfig,
    DecodeProblem,
    PrefillConfig,
    PrefillProblem,
)

# Tolerances against the fp32 reference, per dtype of the output (atol, rtol), applied as
# torch.testing.assert_close does. fp8 KV is compared against the reference on the same
# dequantized cache, so only the q/out rounding and accumulation order remain. An fp8 q over an
# fp8 cache (``fp8_e4m3_qkv``, bf16 out) may run on fp8 tensor cores, which round p to e4m3 (3
# mantissa bits): a PyTorch emulation of that kernel on short sequences (5-64 tokens, where
# single p values weigh most) needs atol = rtol = 4.4e-2; this allows 8e-2.
TOLERANCES: dict[str, tuple[float, float]] = {
    "fp32": (1e-4, 1e-4),
    "fp16": (2e-3, 2e-3),
    "bf16": (1.6e-2, 1.6e-2),
    FP8_QKV: (8e-2, 8e-2),
}

# The relative L2 error a workload (``DecodeProblem.workload_dtype``) may have whatever the most
# accurate trial of a tuning run reached (``worker.validate.winner``): with an fp8 q, the
# configs that dequantise q first are ~3e-3 off, the fp8 tensor-core kernel 0.6-1.8e-2 (H200);
# with an fp8 cache and a 16-bit q, the 16-bit-scores kernels ~5e-4, the fp8 seesaw (q split in
# two fp8 terms, fp8 score accumulation) 1.6-2.0e-3 (H200). Each is the precision asked for.
REL_L2_FLOORS: dict[str, float] = {FP8_QKV: 3e-2, FP8_KV: 5e-3}


def tolerance_key(problem: Any) -> str:
    """The ``TOLERANCES`` entry ``problem``'s output is compared under: ``fp8_e4m3_qkv`` for an
    fp8 q (``DecodeProblem.q_dtype``), else the output's dtype (its ``dtype`` field)."""
    if getattr(problem, "q_dtype", None) is not None:
        return FP8_QKV
    return str(getattr(problem, "dtype", "fp32"))


@dataclass(frozen=True)
class KernelSpec:
    """How the worker drives one kernel.

    Attributes:
        name: ``mla_decode`` or ``mla_prefill``.
        config_type: the config dataclass.
        problem_type: the problem dataclass.
        module: module (relative to this package) holding the functions named below.
        make_inputs: ``(problem, *, device, seed) -> dict[str, Any]``: the launcher's arguments
            (tensors and keywords, ``config`` excluded), fresh random data, padding poisoned.
        run: ``(inputs, config) -> (out, lse)``: calls the Triton launcher.
        reference: ``(inputs) -> (out, lse)``: calls the fp32 reference.
        search_space: ``(problem, device_limits) -> list[config]``: pruned candidates.
        why_invalid: ``(config, problem, device_limits) -> str | None``.
        default_config: ``(problem, device_limits) -> config``.
    """

    name: str
    config_type: Any
    problem_type: Any
    module: str
    make_inputs: str
    run: str
    reference: str
    search_space: str
    why_invalid: str
    default_config: str

    def fn(self, attr: str) -> Callable[..., Any]:
        """The callable named by field ``attr`` (imported on first use).

        A field is either ``"module.function"`` (relative to this package) or an absolute
        ``"package.module:function"`` path (kernels registered from outside, e.g. by tests).
        """
        path: str = getattr(self, attr)
        if ":" in path:
            module_name, _, fn_name = path.partition(":")
            module = importlib.import_module(module_name)
        else:
            module_name, _, fn_name = path.rpartition(".")
            module = importlib.import_module(f"{__package__}.{module_name}")
        return getattr(module, fn_name)  # type: ignore[no-any-return]

    def config_from_dict(self, data: dict[str, Any]) -> DecodeConfig | PrefillConfig:
        return self.config_type.from_dict(data)  # type: ignore[no-any-return]

    def problem_from_dict(self, data: dict[str, Any]) -> DecodeProblem | PrefillProblem:
        return self.problem_type.from_dict(data)  # type: ignore[no-any-return]


KERNELS: dict[str, KernelSpec] = {
    KERNEL_DECODE: KernelSpec(
        name=KERNEL_DECODE,
        config_type=DecodeConfig,
        problem_type=DecodeProblem,
        module="mla_decode",
        make_inputs="decode_inputs.make_decode_inputs",
        run="decode_inputs.run_decode",
        reference="decode_inputs.run_decode_ref",
        search_space="decode_tuning.decode_search_space",
        why_invalid="decode_tuning.why_invalid_decode",
        default_config="decode_tuning.default_decode_config",
    ),
    KERNEL_PREFILL: KernelSpec(
        name=KERNEL_PREFILL,
        config_type=PrefillConfig,
        problem_type=PrefillProblem,
        module="mla_prefill",
        make_inputs="prefill_inputs.make_prefill_inputs",
        run="prefill_inputs.run_prefill",
        reference="prefill_inputs.run_prefill_ref",
        search_space="prefill_tuning.prefill_search_space",
        why_invalid="prefill_tuning.why_invalid_prefill",
        default_config="prefill_tuning.default_prefill_config",
    ),
}


def register_kernel(spec: KernelSpec, *, replace: bool = False) -> None:
    """Add ``spec`` to the registry (extra kernels, e.g. planted ones in the worker's tests).

    Its function fields should be absolute ``"package.module:function"`` paths so that a
    child process can import them.

    Raises:
        ValueError: ``spec.name`` is already registered and ``replace`` is False.
    """
    if spec.name in KERNELS and not replace:
        raise ValueError(
            f"kernel {spec.name!r} is already registered; pass replace=True to override it"
        )
    KERNELS[spec.name] = spec


def unregister_kernel(name: str) -> None:
    """Remove an extra kernel added by ``register_kernel`` (no error if absent)."""
    if name not in (KERNEL_DECODE, KERNEL_PREFILL):
        KERNELS.pop(name, None)


def get_kernel(name: str) -> KernelSpec:
    """The spec of kernel ``name``.

    Raises:
        ValueError: an unknown kernel name (the message lists the known ones).
    """
    try:
        return KERNELS[name]
    except KeyError:
        raise ValueError(f"unknown kernel {name!r}; expected one of {sorted(KERNELS)}") from None
