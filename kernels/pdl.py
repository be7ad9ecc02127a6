"""Programmatic dependent launch (PDL): a decode call's kernels start while the one before ends.

On sm_90 and newer a kernel launched with the programmatic-serialization attribute may be
scheduled as soon as every block of the kernel before it on the stream has signalled
(``griddepcontrol.launch_dependents``), instead of after that kernel has fully finished; it
then waits (``griddepcontrol.wait``) until that kernel has completed and its writes are
visible, before it touches global memory. What overlaps is the launch, the block scheduling and
the set-up before the first load (shared-memory carve-out, barrier init): between the split
kernel and its combine, and between one call and the next in a CUDA graph. FlashMLA launches
its combine this way.

Every mlafleet decode kernel (the Gluon sm_90 ones and the Triton ones, split and combine)
starts with the wait and is launched with the attribute where the GPU has it; it then lets its
successor be scheduled at once, except a split kernel followed by its combine (``gdc_enter``).
The order of memory stays the stream's: the wait comes before each kernel's first global load
or store, so a kernel never reads an input before its producer is done nor overwrites a buffer
its predecessor still reads. A kernel launched without the attribute runs both instructions as
no-ops. ``MLAFLEET_PDL=0`` in the environment launches without it (for A/B timings).
"""

from __future__ import annotations

import functools
import os
from typing import Any

import torch
import triton
import triton.language as tl
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.language.extra import cuda as tl_cuda

from .device_limits import interpreting

PDL_ENV = "MLAFLEET_PDL"
"""Environment variable: ``0`` launches the decode kernels without PDL."""


def pdl_enabled(device: torch.device) -> bool:
    """True when kernels on ``device`` are launched with PDL: a CUDA GPU of compute capability
    9.0 or newer, not the interpreter, not ROCm, and ``MLAFLEET_PDL`` is not ``0``."""
    if interpreting() or device.type != "cuda" or torch.version.hip is not None:
        return False
    if os.environ.get(PDL_ENV, "1").strip() == "0":
        return False
    index = device.index if device.index is not None else torch.cuda.current_device()
    return _capability_major(index) >= 9


@functools.cache
def _capability_major(index: int) -> int:
    return torch.cuda.get_device_capability(index)[0]


def pdl_launch_options(device: torch.device) -> dict[str, Any]:
    """Launch keyword arguments for a kernel on ``device``: ``{"launch_pdl": True}`` where
    ``pdl_enabled``, else none (the interpreter takes no such option)."""
    return {"launch_pdl": True} if pdl_enabled(device) else {}


@gluon.jit
def gdc_enter(NUM_SPLITS):
    """Gluon, first in the kernel: wait for the previous kernel on the stream (complete, its
    writes visible); then, unless a combine follows (``NUM_SPLITS`` > 1), let the next kernel be
    scheduled. (A combine's small blocks scheduled early would crowd onto the SMs this grid
    leaves idle and stay there: 1 x 128 x 16K, 64 splits, went 26.4 -> 32.3 us on an H200; it
    is launched when this grid ends, without the launch gap.) No-ops without a PDL launch."""
    gl.inline_asm_elementwise(
        """{
        .reg .pred p;
        griddepcontrol.wait;
        setp.eq.s32 p, $1, 1;
        @p griddepcontrol.launch_dependents;
        mov.b32 $0, $1;
        }""",
        "=r,r,~{memory}", [NUM_SPLITS], dtype=gl.int32, is_pure=False, pack=1,
    )  # fmt: skip


@gluon.jit
def gdc_wait():
    """Gluon, first in each worker partition (which does not run the kernel's preamble): wait
    for the previous kernel as ``gdc_enter`` does, before the partition's first global access."""
    gl.inline_asm_elementwise(
        "griddepcontrol.wait; mov.b32 $0, $1;", "=r,r,~{memory}", [0], dtype=gl.int32,
        is_pure=False, pack=1,
    )  # fmt: skip


@triton.jit
def tl_gdc_enter(PDL: tl.constexpr, NUM_SPLITS):
    """Triton: ``gdc_enter`` where ``PDL`` (constexpr: off in the interpreter and before
    sm_90, which have no such instructions)."""
    if PDL:
        tl_cuda.gdc_wait()
        if NUM_SPLITS == 1:
            tl_cuda.gdc_launch_dependents()


__all__ = ["PDL_ENV", "gdc_enter", "gdc_wait", "pdl_enabled", "pdl_launch_options", "tl_gdc_enter"]
