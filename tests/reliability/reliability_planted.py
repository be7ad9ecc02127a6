"""Planted candidates for the reliability suite: one misbehaviour per ``block_size_k``.

Registered as kernel ``rel_planted`` through ``mlafleet.kernels.registry.register_kernel`` with
absolute ``reliability_planted:function`` paths, so the worker's spawned child processes import
them too (pytest puts this folder on ``sys.path``; ``spawn`` children inherit it).

    16:  correct (out = 2 x), the default config
    32:  returns NaN everywhere
    64:  hangs (sleeps for an hour)
    128: crashes its process (SIGSEGV, as a segfaulting kernel would)
    256: correct, after every failure: the sweep must still reach it
    512: an illegal memory access on the GPU (an unmasked load 2**40 elements past the
         buffer); on the CPU interpreter it is refused as invalid before running
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

N = 256
BEHAVIOURS = {"ok": 16, "nan": 32, "hang": 64, "crash": 128, "ok_last": 256, "illegal": 512}


@triton.jit
def _twice_kernel(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask, other=0.0)
    tl.store(out_ptr + offs, x * 2.0, mask=mask)


@triton.jit
def _out_of_bounds_kernel(x_ptr, out_ptr, BLOCK: tl.constexpr):
    # 2**40 elements past the buffer: an address no allocation covers (illegal access)
    offs = tl.arange(0, BLOCK).to(tl.int64) + (1 << 40)
    x = tl.load(x_ptr + offs)
    tl.store(out_ptr + tl.arange(0, BLOCK), x)


def _twice(x: torch.Tensor) -> torch.Tensor:
    out = torch.empty_like(x)
    _twice_kernel[(triton.cdiv(x.numel(), 64),)](x, out, x.numel(), BLOCK=64)
    return out


def make_inputs(problem: DecodeProblem, *, device: str, seed: int) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(seed)
    return {"x": torch.randn(problem.batch * N, generator=gen).to(device)}


def reference(inputs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    x = inputs["x"].float()
    return x * 2.0, torch.logsumexp(x, dim=0, keepdim=True)


def run(inputs: dict[str, Any], config: DecodeConfig) -> tuple[torch.Tensor, torch.Tensor]:
    x = inputs["x"]
    lse = torch.logsumexp(x.float(), dim=0, keepdim=True)
    k = config.block_size_k
    if k in (16, 256):
        return _twice(x), lse
    if k == 32:
        return torch.full_like(x, float("nan")), lse
    if k == 64:
        time.sleep(3600)
    if k == 128:
        os.kill(os.getpid(), signal.SIGSEGV)
        time.sleep(60)  # the signal is delivered asynchronously
    if k == 512:
        out = torch.empty_like(x)
        _out_of_bounds_kernel[(1,)](x, out, BLOCK=64)
        return out, lse
    raise AssertionError(f"planted kernel: no behaviour for block_size_k={k}")


def config(name: str) -> DecodeConfig:
    return DecodeConfig(block_size_q=16, block_size_k=BEHAVIOURS[name], num_warps=4,
                        num_stages=1, num_kv_splits=1)  # fmt: skip


CPU_SPACE = ("ok", "nan", "hang", "crash", "ok_last")
GPU_SPACE = ("ok", "illegal", "nan", "ok_last")


def clean_space() -> list[DecodeConfig]:
    """Six correct configs (the default among them): for budget tests."""
    warps = [DecodeConfig(16, 16, w, 1, 1) for w in (1, 2, 4, 8)]
    return [*warps, DecodeConfig(16, 16, 4, 2, 1), config("ok_last")]


def search_space(problem: DecodeProblem, limits: DeviceLimits) -> list[DecodeConfig]:
    """``h_q == 1``: the CPU set; ``h_q == 2``: the GPU set (with the illegal access);
    ``h_q == 4``: only correct configs."""
    if problem.h_q == 4:
        return clean_space()
    return [config(name) for name in (CPU_SPACE if problem.h_q == 1 else GPU_SPACE)]


def why_invalid(cfg: DecodeConfig, problem: DecodeProblem, limits: DeviceLimits) -> str | None:
    if cfg.block_size_k == 512 and limits.arch == "cpu-interpreter":
        return "the illegal-access candidate needs a GPU"
    return None


def default_config(problem: DecodeProblem, limits: DeviceLimits) -> DecodeConfig:
    return config("ok")


SPEC = KernelSpec(
    name="rel_planted",
    config_type=DecodeConfig,
    problem_type=DecodeProblem,
    module="reliability_planted",
    make_inputs="reliability_planted:make_inputs",
    run="reliability_planted:run",
    reference="reliability_planted:reference",
    search_space="reliability_planted:search_space",
    why_invalid="reliability_planted:why_invalid",
    default_config="reliability_planted:default_config",
)

CPU_PROBLEM = DecodeProblem(batch=1, s_q=1, h_q=1, seqlen=N, dtype="fp32")
GPU_PROBLEM = DecodeProblem(batch=1, s_q=1, h_q=2, seqlen=N, dtype="fp32")
CLEAN_PROBLEM = DecodeProblem(batch=1, s_q=1, h_q=4, seqlen=N, dtype="fp32")
