"""mlafleet.kernels: Triton MLA decode/prefill kernels, fp32 references, tuning spaces.

On Hopper (sm_90) decode calls with the kernels' own configs run two Gluon kernels (Triton's
explicit-layout dialect, ``mla_decode_hopper*``); everything else runs the Triton kernels.

Importing this package is cheap: the configs are plain dataclasses, and the kernels (which
import Triton) load on first use of ``mla_decode``, ``mla_prefill`` or the references.

The functions ``mla_decode`` and ``mla_prefill`` share their names with the modules that hold
them; the package keeps the *functions* under those names (importing the submodule does not
replace them). Reach a module itself through ``importlib.import_module(
"mlafleet.kernels.mla_decode")``.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

from .configs import DecodeConfig, DecodeProblem, DeviceLimits, PrefillConfig, PrefillProblem

# exported name -> (submodule, attribute), loaded on first access
_LAZY: dict[str, tuple[str, str]] = {
    "mla_decode": ("mla_decode", "mla_decode"),
    "mla_prefill": ("mla_prefill", "mla_prefill"),
    "mla_decode_ref": ("reference", "mla_decode_ref"),
    "mla_prefill_ref": ("reference", "mla_prefill_ref"),
    "limits_for": ("device_limits", "limits_for"),
    "plan_decode": ("decode_plan", "plan_decode"),
    "DecodePlan": ("decode_plan", "DecodePlan"),
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module_name, attr = _LAZY[name]
    value = getattr(importlib.import_module(f"{__name__}.{module_name}"), attr)
    globals()[name] = value
    return value


class _Package(types.ModuleType):
    """Keeps an exported function when its same-named submodule is imported."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _LAZY and isinstance(value, types.ModuleType) and _LAZY[name][0] == name:
            return  # the import system binding the submodule; keep the function export
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

__all__ = [
    "DecodeConfig",
    "DecodePlan",
    "DecodeProblem",
    "DeviceLimits",
    "PrefillConfig",
    "PrefillProblem",
    "limits_for",
    "mla_decode",
    "mla_decode_ref",
    "mla_prefill",
    "mla_prefill_ref",
    "plan_decode",
]
