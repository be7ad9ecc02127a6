"""Factories for the worker's tests: the planted kernel, fast sweep options, trials."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import planted_kernels
import pytest

from mlafleet.kernels.registry import register_kernel, unregister_kernel
from mlafleet.worker.sweep import SweepOptions
from mlafleet.worker.timing import TimingOptions


@pytest.fixture
def planted() -> Iterator[Any]:
    """The planted kernel, registered as ``planted`` for the test."""
    register_kernel(planted_kernels.SPEC, replace=True)
    yield planted_kernels
    unregister_kernel(planted_kernels.SPEC.name)


@pytest.fixture
def fast_options() -> SweepOptions:
    """Small timeouts so a hang costs seconds, not minutes."""
    return SweepOptions(
        compile_workers=2,
        compile_timeout_s=20.0,
        run_timeout_s=10.0,
        start_timeout_s=120.0,
        timing=TimingOptions(interpreter_calls=2),
    )
