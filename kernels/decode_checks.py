"""Argument checks and config resolution for ``mla_decode`` (split out of the launcher).

Every caller mistake raises ``TypeError``/``ValueError`` naming the argument, what it got and
what it needs (``_checks.check_tensor``'s message form). Checks that need the values of
``cache_seqlens``/``block_table`` (lengths >= 0, a block table long enough for each sequence,
page ids in range) run only when those tensors are on the CPU: reading them from a GPU would
synchronise the stream and break CUDA-graph capture.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ._checks import check_power_of_two, check_tensor
from .configs import KERNEL_DECODE, DecodeConfig, DecodeProblem
from .decode_tuning import resolve_num_splits
from .device_limits import interpreting, limits_for

_FP8 = getattr(torch, "float8_e4m3fn", None)
_DTYPE_NAMES = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}


@dataclass(frozen=True)
class DecodeArgs:
    """Checked arguments of one ``mla_decode`` call (tensors as given, scalars resolved)."""

    q: torch.Tensor
    kv_cache: torch.Tensor
    block_table: torch.Tensor
    cache_seqlens: torch.Tensor
    kv_scale: torch.Tensor | None
    out: torch.Tensor | None
    head_dim_v: int
    d_pe: int
    h_kv: int
    softmax_scale: float
    causal: bool
    q_scale: torch.Tensor | None = None
    """fp32 scalar with an fp8 (e4m3) q: real q = stored x q_scale."""

    @property
    def out_dtype(self) -> torch.dtype:
        """The output's dtype: q's, or bf16 for an fp8 q (FlashMLA's fp8 interface)."""
        return torch.bfloat16 if self.q_scale is not None else self.q.dtype

    def problem(self) -> DecodeProblem:
        """The call's shape; ``seqlen`` is the block table's capacity (an upper bound, no sync)."""
        batch, s_q, h_q, d_qk = self.q.shape
        page_size = self.kv_cache.shape[1]
        return DecodeProblem(
            batch=batch,
            s_q=s_q,
            h_q=h_q,
            seqlen=self.block_table.shape[1] * page_size,
            h_kv=self.h_kv,
            d_qk=d_qk,
            d_v=self.head_dim_v,
            page_size=page_size,
            dtype=_DTYPE_NAMES[self.out_dtype],  # type: ignore[arg-type]
            kv_dtype="fp8_e4m3" if self.kv_scale is not None else None,
            causal=self.causal,
            q_dtype="fp8_e4m3" if self.q_scale is not None else None,
        )


def check_decode_args(
    q: object,
    kv_cache: object,
    block_table: object,
    cache_seqlens: object,
    *,
    head_dim_v: object,
    softmax_scale: object,
    causal: object,
    kv_scale: object,
    out: object,
    q_scale: object = None,
) -> DecodeArgs:
    """Check every argument of ``mla_decode``; see its docstring for what each must be.

    Raises:
        TypeError: a non-tensor, a wrong dtype, or a non-int/non-bool scalar.
        ValueError: a wrong shape, device, layout, page size, head split or length.
    """
    q_fp8 = _FP8 is not None and isinstance(q, torch.Tensor) and q.dtype == _FP8
    if q_fp8 and q_scale is None:
        raise ValueError(
            "q_scale: expected an fp32 scalar tensor for a float8_e4m3fn q, got None; pass "
            "q's dequantisation scale (real q = stored q x q_scale)"
        )
    q = check_tensor(
        q,
        "q",
        ndim=4,
        dtypes=(torch.float16, torch.bfloat16) + ((_FP8,) if q_fp8 else ()),
        last_dim_contiguous=True,
        hint="q is [batch, s_q, h_q, d_qk]",
    )
    device = q.device
    if device.type != "cuda" and not interpreting():
        raise ValueError(
            f"q: expected a CUDA tensor, got one on {device}; move the inputs to a GPU, or set "
            "TRITON_INTERPRET=1 before importing triton to run on the CPU interpreter"
        )
    batch, s_q, h_q, d_qk = q.shape
    kv_dtypes = (_FP8,) if q_fp8 else (q.dtype,) + ((_FP8,) if _FP8 is not None else ())
    kv_cache = check_tensor(
        kv_cache,
        "kv_cache",
        ndim=4,
        dtypes=kv_dtypes,
        device=device,
        last_dim_contiguous=True,
        hint="an fp8 q needs a float8_e4m3fn cache (with kv_scale)"
        if q_fp8
        else "kv_cache is [num_pages, page_size, h_kv, d_qk] in q's dtype "
        "or float8_e4m3fn with kv_scale",
    )
    num_pages, page_size, h_kv, kv_d = kv_cache.shape
    if kv_d != d_qk:
        raise ValueError(
            f"kv_cache: expected last dim {d_qk} (q's d_qk), got {kv_d}; pass the "
            "concatenated latent+rope cache"
        )
    check_power_of_two(page_size, "kv_cache page size (dim 1)", low=1, high=256)
    if h_kv == 0 or h_q % h_kv:
        raise ValueError(f"kv_cache: expected h_kv (dim 2) dividing h_q={h_q}, got {h_kv}")
    if s_q < 1 or h_q < 1:
        raise ValueError(f"q: expected s_q >= 1 and h_q >= 1, got shape {list(q.shape)}")
    block_table = check_tensor(
        block_table,
        "block_table",
        ndim=2,
        shape=(batch, None),
        dtypes=(torch.int32,),
        device=device,
        last_dim_contiguous=True,
        hint="block_table is [batch, max_pages] int32",
    )
    cache_seqlens = check_tensor(
        cache_seqlens,
        "cache_seqlens",
        shape=(batch,),
        dtypes=(torch.int32,),
        device=device,
        last_dim_contiguous=True,
        hint="cache_seqlens is [batch] int32",
    )
    if isinstance(head_dim_v, bool) or not isinstance(head_dim_v, int):
        raise TypeError(f"head_dim_v: expected an int, got {type(head_dim_v).__name__}")
    if not 16 <= head_dim_v <= d_qk:
        raise ValueError(
            f"head_dim_v: expected 16 <= head_dim_v <= d_qk={d_qk}, got "
            f"{head_dim_v}; DeepSeek uses 512 with d_qk 576"
        )
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
    if not isinstance(causal, bool):
        raise TypeError(f"causal: expected a bool, got {type(causal).__name__}")
    is_fp8 = kv_cache.dtype == _FP8
    if is_fp8 and kv_scale is None:
        raise ValueError(
            "kv_scale: expected an fp32 scalar tensor for a float8_e4m3fn "
            "kv_cache, got None; pass the cache's dequantisation scale"
        )
    if kv_scale is not None:
        if not is_fp8:
            raise ValueError(
                f"kv_scale: only meaningful with a float8_e4m3fn kv_cache, got a "
                f"{kv_cache.dtype} cache; pass kv_scale=None"
            )
        kv_scale = check_tensor(kv_scale, "kv_scale", dtypes=(torch.float32,), device=device)
        if kv_scale.numel() != 1:
            raise ValueError(f"kv_scale: expected one element, got shape {list(kv_scale.shape)}")
    if q_scale is not None:
        if not q_fp8:
            raise ValueError(
                f"q_scale: only meaningful with a float8_e4m3fn q, got a {q.dtype} q; pass "
                "q_scale=None"
            )
        q_scale = check_tensor(q_scale, "q_scale", dtypes=(torch.float32,), device=device)
        if q_scale.numel() != 1:
            raise ValueError(f"q_scale: expected one element, got shape {list(q_scale.shape)}")
    if out is not None:
        out = check_tensor(
            out,
            "out",
            shape=(batch, s_q, h_q, head_dim_v),
            dtypes=(torch.bfloat16 if q_fp8 else q.dtype,),
            device=device,
            last_dim_contiguous=True,
        )
    if cache_seqlens.device.type == "cpu" and batch > 0:
        _check_lengths(cache_seqlens, block_table, page_size=page_size, num_pages=num_pages)
    return DecodeArgs(
        q=q,
        kv_cache=kv_cache,
        block_table=block_table,
        cache_seqlens=cache_seqlens,
        kv_scale=kv_scale,
        out=out,  # type: ignore[arg-type]
        head_dim_v=head_dim_v,
        d_pe=d_qk - head_dim_v,
        h_kv=h_kv,
        softmax_scale=scale,
        causal=causal,
        q_scale=q_scale,  # type: ignore[arg-type]
    )


def _check_lengths(
    cache_seqlens: torch.Tensor, block_table: torch.Tensor, *, page_size: int, num_pages: int
) -> None:
    """Value checks (CPU tensors only): lengths >= 0, table long enough, page ids in range."""
    lengths = cache_seqlens.tolist()
    capacity = block_table.shape[1] * page_size
    for b, length in enumerate(lengths):
        if length < 0:
            raise ValueError(f"cache_seqlens: expected lengths >= 0, got {length} at batch {b}")
        if length > capacity:
            raise ValueError(
                f"block_table: expected at least {math.ceil(length / page_size)} pages for "
                f"sequence {b} (cache_seqlens[{b}]={length}, page size {page_size}), got "
                f"{block_table.shape[1]}; widen the block table"
            )
        used = block_table[b, : math.ceil(length / page_size)]
        if used.numel() and (int(used.min()) < 0 or int(used.max()) >= num_pages):
            raise ValueError(
                f"block_table: expected page ids in [0, {num_pages}) for sequence {b}, got "
                f"{int(used.min())}..{int(used.max())}"
            )


def resolve_decode_config(args: DecodeArgs, config: object) -> tuple[DecodeConfig, int]:
    """The config to launch with (looked up when None) and its resolved split count.

    Raises:
        TypeError: ``config`` is not a DecodeConfig.
        ValueError: a knob the kernel cannot compile (tiles < 16 or not powers of two, ...).
    """
    problem = args.problem()
    limits = limits_for(args.q.device)
    if config is None:
        from .runtime_configs import config_for

        config = config_for(KERNEL_DECODE, problem, limits)
    if not isinstance(config, DecodeConfig):
        raise TypeError(f"config: expected a DecodeConfig or None, got {type(config).__name__}")
    for name in ("block_size_q", "block_size_k"):
        value = getattr(config, name)
        if not isinstance(value, int) or value < 16 or value & (value - 1):
            raise ValueError(
                f"config.{name}: expected a power of two >= 16 (tl.dot's minimum), got {value!r}"
            )
    if (
        not isinstance(config.num_warps, int)
        or config.num_warps < 1
        or (config.num_warps & (config.num_warps - 1))
    ):
        raise ValueError(f"config.num_warps: expected a power of two, got {config.num_warps!r}")
    if not isinstance(config.num_stages, int) or config.num_stages < 1:
        raise ValueError(f"config.num_stages: expected an int >= 1, got {config.num_stages!r}")
    splits = config.num_kv_splits
    if splits != "auto" and (isinstance(splits, bool) or not isinstance(splits, int) or splits < 1):
        raise ValueError(f"config.num_kv_splits: expected 'auto' or an int >= 1, got {splits!r}")
    return config, resolve_num_splits(config, problem, limits)


__all__ = ["DecodeArgs", "check_decode_args", "resolve_decode_config"]
