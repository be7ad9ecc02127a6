"""Hopper bulk tensor copies (TMA): when a tensor can be read through a host-side descriptor.

Both kernels read tiles through ``triton.tools.tensor_descriptor.TensorDescriptor`` on sm_90+
(the copy engine moves a whole tile into shared memory asynchronously, with no per-element
address registers) and fall back to pointer loads elsewhere (older GPUs, ROCm, the CPU
interpreter, or strides the copy engine cannot take).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .device_limits import interpreting

MAX_BOX = 256
"""Largest tile extent along one dimension that one bulk copy can move (elements)."""


def tma_eligible(*tensors: torch.Tensor) -> bool:
    """True when the tensors can be read with Hopper's bulk tensor copies (TMA).

    Needs a CUDA GPU of compute capability >= 9.0 (not the interpreter) and, per tensor, a
    16-byte aligned base and strides (all but the last) that are multiples of 16 bytes.
    """
    if interpreting() or not all(t.is_cuda for t in tensors):
        return False
    if torch.version.hip is not None or torch.cuda.get_device_capability(tensors[0].device)[0] < 9:
        return False
    return all(
        t.data_ptr() % 16 == 0 and all(st * t.element_size() % 16 == 0 for st in t.stride()[:-1])
        for t in tensors
    )


def descriptor(
    base: torch.Tensor, shape: Sequence[int], strides: Sequence[int], block: Sequence[int]
) -> Any:
    """A host-side TMA descriptor over ``base``'s memory seen as ``shape`` / ``strides``.

    ``block`` is the tile one load moves (each extent <= ``MAX_BOX``); the copy engine zero-fills
    the parts of a tile that fall outside ``shape``.
    """
    from triton.tools.tensor_descriptor import TensorDescriptor

    return TensorDescriptor(base, list(shape), list(strides), list(block))


__all__ = ["MAX_BOX", "descriptor", "tma_eligible"]
