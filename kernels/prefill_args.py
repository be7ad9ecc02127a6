"""Argument checks and config resolution for ``mla_prefill`` (split out of the launcher).

Every caller mistake raises ``TypeError``/``ValueError`` naming the argument, what it got and
what it needs (``_checks.check_tensor``'s message form). Checks that need the values of
``cu_seqlens_q``/``cu_seqlens_k`` (start at 0, end at the packed totals, non-decreasing,
no sequence longer than ``max_seqlen_*``) run only when those tensors are on the CPU: reading
them from a GPU would synchronise the stream and break CUDA-graph capture.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch

from ._checks import check_tensor
from .configs import CPU_INTERPRETER, KERNEL_PREFILL, PrefillConfig, PrefillProblem
from .device_limits import interpreting, limits_for
from .prefill_tuning import why_invalid_prefill, why_unsupported_dims

_DTYPE_NAMES = {torch.float16: "fp16", torch.bfloat16: "bf16"}


@dataclass(frozen=True)
class PrefillArgs:
    """Checked arguments of one ``mla_prefill`` call (tensors as given, scalars resolved)."""

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    cu_seqlens_q: torch.Tensor
    cu_seqlens_k: torch.Tensor
    max_seqlen_q: int
    max_seqlen_k: int
    causal: bool
    softmax_scale: float

    def problem(self) -> PrefillProblem:
        """The call's shape (``seqlen_*`` are the given maxima: no device sync)."""
        _, h, d_qk = self.q.shape
        return PrefillProblem(
            batch=self.cu_seqlens_q.shape[0] - 1,
            seqlen_q=self.max_seqlen_q,
            seqlen_k=self.max_seqlen_k,
            h=h,
            h_k=self.k.shape[1],
            d_qk=d_qk,
            d_v=self.v.shape[2],
            dtype=_DTYPE_NAMES[self.q.dtype],  # type: ignore[arg-type]
            causal=self.causal,
        )


def _check_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name}: expected an int >= 0, got {value}")
    return value


def _check_cu_seqlens(cu: torch.Tensor, name: str, *, total: int, max_seqlen: int) -> None:
    """Value checks of one prefix-sum table (CPU tensors only; see the module docstring)."""
    values = cu.tolist()
    if values[0] != 0:
        raise ValueError(f"{name}: expected 0 first (prefix sums), got {values[0]}")
    if values[-1] != total:
        raise ValueError(
            f"{name}: expected the packed total {total} last, got {values[-1]}; "
            "the last entry must equal the token count of the packed tensor"
        )
    lengths = [b - a for a, b in itertools.pairwise(values)]
    if lengths and min(lengths) < 0:
        bad = lengths.index(min(lengths))
        raise ValueError(f"{name}: expected non-decreasing prefix sums, sequence {bad} has "
                         f"length {lengths[bad]}")  # fmt: skip
    max_name = name.replace("cu_seqlens", "max_seqlen")
    if lengths and max(lengths) > max_seqlen:
        raise ValueError(
            f"{max_name}: expected >= the longest sequence ({max(lengths)}), got {max_seqlen}"
        )


def check_prefill_args(
    q: object,
    k: object,
    v: object,
    cu_seqlens_q: object,
    cu_seqlens_k: object,
    max_seqlen_q: object,
    max_seqlen_k: object,
    *,
    causal: object,
    softmax_scale: object,
) -> PrefillArgs:
    """Check every argument of ``mla_prefill``; see its docstring for what each must be.

    Raises:
        TypeError: a non-tensor, a wrong dtype, or a non-int/non-bool/non-float scalar.
        ValueError: a wrong shape, device, layout, head split, head dims or sequence table.
    """
    q = check_tensor(q, "q", ndim=3, dtypes=(torch.float16, torch.bfloat16),
                     last_dim_contiguous=True, hint="q is [total_q, h, d_qk]")  # fmt: skip
    device = q.device
    if device.type != "cuda" and not interpreting():
        raise ValueError(
            f"q: expected a CUDA tensor, got one on {device}; move the inputs to a GPU, or set "
            "TRITON_INTERPRET=1 before importing triton to run on the CPU interpreter"
        )
    total_q, h, d_qk = q.shape
    k = check_tensor(k, "k", ndim=3, dtypes=(q.dtype,), device=device, last_dim_contiguous=True,
                     hint="k is [total_k, h_k, d_qk] in q's dtype")  # fmt: skip
    total_k, h_k, k_d = k.shape
    if k_d != d_qk:
        raise ValueError(f"k: expected last dim {d_qk} (q's d_qk), got {k_d}")
    if h < 1:
        raise ValueError(f"q: expected at least one head, got shape {list(q.shape)}")
    if h_k == 0 or h % h_k:
        raise ValueError(f"k: expected h_k (dim 1) dividing h={h}, got {h_k}")
    v = check_tensor(v, "v", ndim=3, shape=(total_k, h_k, None), dtypes=(q.dtype,),
                     device=device, last_dim_contiguous=True,
                     hint="v is [total_k, h_k, d_v] in q's dtype")  # fmt: skip
    why = why_unsupported_dims(d_qk, v.shape[2])
    if why is not None:
        raise ValueError(why)
    cu_q = check_tensor(
        cu_seqlens_q, "cu_seqlens_q", ndim=1, dtypes=(torch.int32,), device=device,
        hint="cu_seqlens_q is [batch + 1] int32 prefix sums",
    )  # fmt: skip
    if cu_q.shape[0] < 1:
        raise ValueError("cu_seqlens_q: expected [batch + 1] entries (at least [0]), got none")
    cu_k = check_tensor(
        cu_seqlens_k, "cu_seqlens_k", shape=(cu_q.shape[0],), dtypes=(torch.int32,),
        device=device, hint="cu_seqlens_k is [batch + 1] int32, as long as cu_seqlens_q",
    )  # fmt: skip
    if not cu_q.is_contiguous() or not cu_k.is_contiguous():
        name = "cu_seqlens_q" if not cu_q.is_contiguous() else "cu_seqlens_k"
        raise ValueError(f"{name}: expected a contiguous tensor; pass {name}.contiguous()")
    max_q = _check_int(max_seqlen_q, "max_seqlen_q")
    max_k = _check_int(max_seqlen_k, "max_seqlen_k")
    if not isinstance(causal, bool):
        raise TypeError(f"causal: expected a bool, got {type(causal).__name__}")
    if softmax_scale is None:
        scale = d_qk**-0.5
    elif isinstance(softmax_scale, bool) or not isinstance(softmax_scale, (int, float)):
        raise TypeError(
            f"softmax_scale: expected a float or None, got {type(softmax_scale).__name__}"
        )
    elif not (math.isfinite(softmax_scale) and softmax_scale > 0):
        raise ValueError(f"softmax_scale: expected a finite value > 0, got {softmax_scale}")
    else:
        scale = float(softmax_scale)
    if device.type == "cpu":
        _check_cu_seqlens(cu_q, "cu_seqlens_q", total=total_q, max_seqlen=max_q)
        _check_cu_seqlens(cu_k, "cu_seqlens_k", total=total_k, max_seqlen=max_k)
    return PrefillArgs(q=q, k=k, v=v, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, max_seqlen_q=max_q,
                       max_seqlen_k=max_k, causal=causal, softmax_scale=scale)  # fmt: skip


def resolve_prefill_config(args: PrefillArgs, config: object) -> PrefillConfig:
    """The config to launch with: ``config``, or the recommended one when it is ``None``.

    A given config is held to the kernel's shape rules (powers of two, tile sizes >= 16, ...),
    not to the resource estimates, which only prune the tuning space.

    Raises:
        TypeError: ``config`` is not a PrefillConfig.
        ValueError: a knob the kernel cannot compile.
    """
    problem = args.problem()
    if config is None:
        from .runtime_configs import config_for

        config = config_for(KERNEL_PREFILL, problem, limits_for(args.q.device))
    if not isinstance(config, PrefillConfig):
        raise TypeError(f"config: expected a PrefillConfig or None, got {type(config).__name__}")
    why = why_invalid_prefill(config, problem, CPU_INTERPRETER)
    if why is not None:
        raise ValueError(f"config.{why}")
    return config


__all__ = ["PrefillArgs", "check_prefill_args", "resolve_prefill_config"]
