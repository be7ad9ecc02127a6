"""Run-time config lookup for ``config=None`` calls.

Interim version: returns the built-in default config of the architecture. The bundle lookup
(``MLAFLEET_CONFIGS``, fallback chain) replaces the body of ``config_for``; its signature is
the contract the launchers rely on.
"""

from __future__ import annotations

from typing import Any

from .configs import DecodeConfig, DecodeProblem, DeviceLimits, PrefillConfig, PrefillProblem
from .registry import get_kernel


def config_for(
    kernel: str,
    problem: DecodeProblem | PrefillProblem,
    limits: DeviceLimits,
) -> DecodeConfig | PrefillConfig:
    """The config ``kernel`` should use for ``problem`` on the device described by ``limits``."""
    spec = get_kernel(kernel)
    default: Any = spec.fn("default_config")
    return default(problem, limits)  # type: ignore[no-any-return]


__all__ = ["config_for"]
