"""What one device lets a program use: ``limits_for(device) -> DeviceLimits``, cached.

``arch`` is ``sm_XY`` on NVIDIA (from ``torch.cuda.get_device_capability``), ``gfxNNNN`` on
ROCm (the ``gcnArchName`` without its feature suffix), and ``cpu-interpreter`` for CPU tensors
or whenever ``TRITON_INTERPRET=1`` (Triton then runs kernels on the CPU).
"""

from __future__ import annotations

import functools
import os

import torch

from .configs import CPU_INTERPRETER, DeviceLimits


def interpreting() -> bool:
    """True when Triton runs kernels through its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def limits_for(device: torch.device | str) -> DeviceLimits:
    """The limits of ``device`` (a CUDA/ROCm GPU, or the CPU interpreter).

    Args:
        device: a torch device or its name (``"cuda:0"``, ``"cpu"``).

    Returns:
        The device's ``DeviceLimits``; ``CPU_INTERPRETER`` for CPU devices or under
        ``TRITON_INTERPRET=1``.

    Raises:
        ValueError: a device type that is neither ``cuda`` nor ``cpu``.
    """
    dev = torch.device(device)
    if dev.type == "cpu" or interpreting():
        return CPU_INTERPRETER
    if dev.type != "cuda":
        raise ValueError(
            f"device: expected a CUDA/ROCm device or the CPU (interpreter), got {dev}; "
            "move the tensors to a GPU"
        )
    index = dev.index if dev.index is not None else torch.cuda.current_device()
    return _gpu_limits(index)


@functools.cache
def _gpu_limits(index: int) -> DeviceLimits:
    props = torch.cuda.get_device_properties(index)
    if torch.version.hip is not None:
        arch = str(getattr(props, "gcnArchName", "gfx")).split(":")[0]
        warp = 64
    else:
        major, minor = torch.cuda.get_device_capability(index)
        arch = f"sm_{major}{minor}"
        warp = 32
    smem = int(
        getattr(props, "shared_memory_per_block_optin", 0)
        or getattr(props, "shared_memory_per_block", 48 * 1024)
    )
    regs = int(getattr(props, "regs_per_multiprocessor", 65536) or 65536)
    threads = int(getattr(props, "max_threads_per_block", 1024) or 1024)
    return DeviceLimits(
        arch=arch,
        sm_count=int(props.multi_processor_count),
        max_shared_mem_bytes=smem,
        max_registers_per_block=min(regs, 65536),
        max_warps_per_block=threads // warp,
        extra={"name": props.name, "l2_bytes": int(getattr(props, "L2_cache_size", 0) or 0)},
    )


__all__ = ["interpreting", "limits_for"]
