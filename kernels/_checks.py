"""Argument checks for the launchers: one helper, one message form.

Every message reads "<name>: expected <what>, got <what>; <what to do>" and is raised as
``TypeError`` (wrong type/dtype) or ``ValueError`` (wrong shape, value, device, layout).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

_DTYPE_NAMES = {
    torch.float16: "float16",
    torch.bfloat16: "bfloat16",
    torch.float32: "float32",
    torch.int32: "int32",
    torch.int64: "int64",
}


def dtype_name(dtype: torch.dtype) -> str:
    return _DTYPE_NAMES.get(dtype, str(dtype).removeprefix("torch."))


def check_tensor(
    x: object,
    name: str,
    *,
    ndim: int | None = None,
    shape: Sequence[int | None] | None = None,
    dtypes: Sequence[torch.dtype] | None = None,
    device: torch.device | None = None,
    last_dim_contiguous: bool = False,
    hint: str = "",
) -> torch.Tensor:
    """Check one tensor argument and return it.

    Args:
        x: the argument.
        name: its parameter name, as the caller wrote it.
        ndim: required number of dims.
        shape: required sizes per dim; ``None`` entries are free.
        dtypes: allowed dtypes.
        device: required device.
        last_dim_contiguous: require stride 1 on the last dim.
        hint: what to do, appended to the message.

    Raises:
        TypeError: not a tensor, or a dtype not in ``dtypes``.
        ValueError: wrong ndim, shape, device or layout.
    """
    suffix = f"; {hint}" if hint else ""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}{suffix}")
    if dtypes is not None and x.dtype not in dtypes:
        allowed = " or ".join(dtype_name(d) for d in dtypes)
        raise TypeError(f"{name}: expected dtype {allowed}, got {dtype_name(x.dtype)}{suffix}")
    want_ndim = ndim if ndim is not None else (len(shape) if shape is not None else None)
    if want_ndim is not None and x.dim() != want_ndim:
        raise ValueError(
            f"{name}: expected {want_ndim} dims, got {x.dim()} (shape {list(x.shape)}){suffix}"
        )
    if shape is not None:
        for axis, (got, want) in enumerate(zip(x.shape, shape, strict=True)):
            if want is not None and got != want:
                pretty = ["*" if s is None else s for s in shape]
                raise ValueError(
                    f"{name}: expected shape {pretty}, got {list(x.shape)} "
                    f"(dim {axis} is {got}, needs {want}){suffix}"
                )
    if device is not None and x.device != device:
        raise ValueError(f"{name}: expected a tensor on {device}, got one on {x.device}{suffix}")
    if last_dim_contiguous and x.dim() > 0 and x.shape[-1] > 1 and x.stride(-1) != 1:
        raise ValueError(
            f"{name}: expected the last dim to be contiguous (stride 1), got strides "
            f"{list(x.stride())}; pass {name}.contiguous()"
        )
    return x


def check_power_of_two(value: int, name: str, *, low: int, high: int) -> None:
    """Raise ``ValueError`` unless ``value`` is a power of two in [low, high]."""
    if value < low or value > high or value & (value - 1):
        raise ValueError(f"{name}: expected a power of two from {low} to {high}, got {value}")
