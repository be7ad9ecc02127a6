"""Factories for the decode kernel tests: problems, fresh random inputs, reference checks.

Every test draws fresh inputs (a new seed each run, printed on failure) so the kernel has to
compute the same function on any valid input, not on one lucky draw.
"""

from __future__ import annotations

import importlib
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from mlafleet.kernels.configs import DecodeConfig, DecodeProblem
from mlafleet.kernels.decode_inputs import make_decode_inputs, run_decode_ref
from mlafleet.kernels.registry import TOLERANCES

LSE_TOL = (1e-3, 1e-3)  # lse is fp32 from fp32 accumulators: only summation order differs
LSE_TOL_FP8_SCORES = (2e-2, 2e-3)
"""lse when the scores run on fp8 tensor cores (the fp8 seesaw, also with a 16-bit q split in
two fp8 terms): their accumulation keeps about as many bits as one more bf16 rounding of q."""


def _run_sm90_compile_report(*flags: str) -> list[dict[str, Any]]:
    """``sm90_compile_report.py``'s rows (one per compiled Gluon variant), run in a child process
    without ``TRITON_INTERPRET`` (the interpreter cannot compile)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    script = Path(__file__).parent / "sm90_compile_report.py"
    done = subprocess.run(
        [sys.executable, str(script), *flags],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


@pytest.fixture(scope="session")
def sm90_compile_report() -> Callable[..., list[dict[str, Any]]]:
    """Runs ``sm90_compile_report.py`` with the given flags and returns its rows."""
    return _run_sm90_compile_report


def device() -> torch.device:
    """The GPU when there is one and the interpreter is off, else the CPU (interpreter)."""
    interpret = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
    return torch.device("cuda" if torch.cuda.is_available() and not interpret else "cpu")


def small_problem(**overrides: Any) -> DecodeProblem:
    """A small fp16 problem with power-of-two friendly dims (64 latent + 32 rope)."""
    values: dict[str, Any] = {
        "batch": 2,
        "s_q": 1,
        "h_q": 16,
        "seqlen": 40,
        "d_qk": 96,
        "d_v": 64,
        "page_size": 16,
        "dtype": "fp16",
    }
    values.update(overrides)
    if values.get("seqlens") is not None:
        values["batch"] = len(values["seqlens"])
    return DecodeProblem(**values)


@pytest.fixture
def seed(request: pytest.FixtureRequest) -> int:
    """A fresh seed per test; shown in the failure report."""
    value = secrets.randbelow(2**31)
    request.node.user_properties.append(("seed", value))
    return value


def poisoned_out(inputs: dict[str, Any]) -> torch.Tensor:
    """An output buffer full of NaN (q's dtype; bf16 for an fp8 q with ``q_scale``): any
    element the kernel fails to write stays NaN."""
    q = inputs["q"]
    dtype = torch.bfloat16 if inputs.get("q_scale") is not None else q.dtype
    return torch.full(
        (*q.shape[:3], inputs["head_dim_v"]), float("nan"), dtype=dtype, device=q.device
    )


_DTYPE_KEYS = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}


def assert_matches_reference(
    inputs: dict[str, Any],
    got: tuple[torch.Tensor, torch.Tensor],
    *,
    seed: int = -1,
    lse_tol: tuple[float, float] = LSE_TOL,
) -> None:
    """``got`` (out, lse) equals the fp32 reference within the dtype's tolerance (lse: within
    ``lse_tol``, absolute and relative), no NaN."""
    out, lse = got
    ref_out, ref_lse = run_decode_ref(inputs)
    assert not torch.isnan(out).any(), f"NaN in out (unwritten or read poison), seed {seed}"
    atol, rtol = TOLERANCES[_DTYPE_KEYS[inputs["q"].dtype]]
    torch.testing.assert_close(
        out.float(), ref_out.float(), atol=atol, rtol=rtol, msg=lambda m: f"out, seed {seed}: {m}"
    )
    torch.testing.assert_close(
        lse, ref_lse, atol=lse_tol[0], rtol=lse_tol[1], msg=lambda m: f"lse, seed {seed}: {m}"
    )


def launches_differing(
    inputs: dict[str, Any], config: DecodeConfig, kernel: str, launches: int = 300
) -> int:
    """How many of ``launches`` more launches of ``config`` on ``inputs`` differ, in any bit of
    out or lse, from the first; asserts the first ran ``kernel`` (``LAST_COMPILED``). For the
    kernels whose warpgroups hand values over through shared memory: their arithmetic runs in
    a fixed order, so a hand-off read too early shows as launches that differ."""
    from mlafleet.kernels.decode_checks import check_decode_args, resolve_decode_config

    module = importlib.import_module("mlafleet.kernels.mla_decode")
    args = check_decode_args(**inputs, out=None)
    config, splits = resolve_decode_config(args, config)
    first, first_lse = module._launch(args, config, splits)
    assert module.LAST_COMPILED["decode_kernel"] == kernel
    first, first_lse = first.clone(), first_lse.clone()
    differing = 0
    for _launch in range(launches):
        out, lse = module._launch(args, config, splits)
        differing += int(not (torch.equal(out, first) and torch.equal(lse, first_lse)))
    return differing


class DecodeKit:
    """The factories above, handed to tests as the ``kit`` fixture."""

    device = staticmethod(device)
    small_problem = staticmethod(small_problem)
    poisoned_out = staticmethod(poisoned_out)
    assert_matches_reference = staticmethod(assert_matches_reference)
    launches_differing = staticmethod(launches_differing)
    lse_tol_fp8_scores = LSE_TOL_FP8_SCORES


@pytest.fixture
def kit() -> type[DecodeKit]:
    return DecodeKit


@pytest.fixture
def check_decode(seed: int) -> Callable[[DecodeProblem, DecodeConfig | None], dict[str, Any]]:
    """Run ``mla_decode`` on fresh inputs of a problem into a poisoned buffer and compare."""
    from mlafleet.kernels.mla_decode import mla_decode

    def run(problem: DecodeProblem, config: DecodeConfig | None) -> dict[str, Any]:
        inputs = make_decode_inputs(problem, device=device(), seed=seed)
        out = poisoned_out(inputs)
        got = mla_decode(**inputs, config=config, out=out)
        assert got[0].data_ptr() == out.data_ptr(), "out= buffer was not used"
        assert_matches_reference(inputs, got, seed=seed)
        return inputs

    return run
