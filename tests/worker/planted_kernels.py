"""Planted test kernels for the worker's tests: one behaviour per ``block_size_k``.

Registered through ``mlafleet.kernels.registry.register_kernel`` with absolute
``planted_kernels:function`` paths, so the worker's child processes import them too (pytest
puts this folder on ``sys.path``, and ``spawn`` children inherit it).

Behaviours (``DecodeConfig.block_size_k``):
    16, 32: a correct tiny Triton kernel (out = 2 x) with that block size.
    24: a Triton kernel whose block is not a power of two: cannot compile.
    48: correct but slowed down on purpose (for winner/order tests).
    64: wrong answer (2 x + 0.1).
    128: hangs.
    256: kills its own process with ``os._exit``.
    512: kills its own process with SIGKILL.
    1024: raises a plain RuntimeError at run time.
    8: refused by ``why_invalid``.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import torch
import triton
import triton.language as tl

from mlafleet.kernels.configs import DecodeConfig, DecodeProblem, DeviceLimits
from mlafleet.kernels.registry import KernelSpec

N = 64
BEHAVIOURS = {
    "ok16": 16,
    "ok32": 32,
    "compile_error": 24,
    "slow": 48,
    "wrong": 64,
    "hang": 128,
    "exit": 256,
    "sigkill": 512,
    "raise": 1024,
    "invalid": 8,
}


@triton.jit
def _twice_kernel(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask, other=0.0)
    tl.store(out_ptr + offs, x * 2.0, mask=mask)


def _twice(x: torch.Tensor, block: int) -> torch.Tensor:
    out = torch.empty_like(x)
    _twice_kernel[(triton.cdiv(x.numel(), block),)](x, out, x.numel(), BLOCK=block)
    return out


def make_inputs(problem: DecodeProblem, *, device: str, seed: int) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(problem.batch * N, generator=gen).to(device)
    return {"x": x}


def reference(inputs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    x = inputs["x"].float()
    return x * 2.0, torch.logsumexp(x, dim=0, keepdim=True)


def run(inputs: dict[str, Any], config: DecodeConfig) -> tuple[torch.Tensor, torch.Tensor]:
    x = inputs["x"]
    k = config.block_size_k
    lse = torch.logsumexp(x.float(), dim=0, keepdim=True)
    if k in (16, 32, 24):
        return _twice(x, k), lse
    if k == 48:
        time.sleep(0.05)
        return _twice(x, 16), lse
    if k == 64:
        return x * 2.0 + 0.1, lse
    if k == 128:
        time.sleep(3600)
    if k == 256:
        os._exit(7)
    if k == 512:
        os.kill(os.getpid(), signal.SIGKILL)
    if k == 1024:
        raise RuntimeError("planted runtime failure")
    raise AssertionError(f"planted kernel: no behaviour for block_size_k={k}")


def config(name: str) -> DecodeConfig:
    return DecodeConfig(
        block_size_q=16, block_size_k=BEHAVIOURS[name], num_warps=4, num_stages=1, num_kv_splits=1
    )


CLEAN_SPACE = ("ok16", "ok32", "slow")
FAILING_SPACE = ("ok16", "compile_error", "wrong", "hang", "exit", "sigkill", "raise", "ok32")


def search_space(problem: DecodeProblem, limits: DeviceLimits) -> list[DecodeConfig]:
    """``h_q == 1``: three good configs; ``h_q == 2``: every planted failure too."""
    names = CLEAN_SPACE if problem.h_q == 1 else FAILING_SPACE
    return [config(name) for name in names]


def why_invalid(cfg: DecodeConfig, problem: DecodeProblem, limits: DeviceLimits) -> str | None:
    if cfg.block_size_k < 16:
        return f"block_size_k {cfg.block_size_k} is under 16"
    return None


def default_config(problem: DecodeProblem, limits: DeviceLimits) -> DecodeConfig:
    return config("ok16")


SPEC = KernelSpec(
    name="planted",
    config_type=DecodeConfig,
    problem_type=DecodeProblem,
    module="planted_kernels",
    make_inputs="planted_kernels:make_inputs",
    run="planted_kernels:run",
    reference="planted_kernels:reference",
    search_space="planted_kernels:search_space",
    why_invalid="planted_kernels:why_invalid",
    default_config="planted_kernels:default_config",
)

PROBLEM = DecodeProblem(batch=1, s_q=1, h_q=1, seqlen=N, dtype="fp32")
FAILING_PROBLEM = DecodeProblem(batch=1, s_q=1, h_q=2, seqlen=N, dtype="fp32")
