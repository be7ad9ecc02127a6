"""Programmatic dependent launch (``kernels/pdl.py``): when it is on, and that the decode calls
launched with it still give the stream's results.

The CPU half checks the switch (never on the interpreter or the CPU; ``MLAFLEET_PDL=0``); the
compile report (``test_mla_decode_hopper.py``) checks that every Gluon decode kernel waits
before its first global access. The GPU half runs calls back to back with PDL, eagerly and
captured in a CUDA graph, against the same calls each synchronised and launched without it:
the partial-output buffers of one call are the next one's (the caching allocator hands the
freed block back), so a kernel that touched memory before its predecessor finished would show
up as a difference.
"""

from __future__ import annotations

import importlib
from typing import Any

import pytest
import torch

from mlafleet.kernels import mla_decode
from mlafleet.kernels.configs import DecodeConfig, DecodeProblem
from mlafleet.kernels.decode_inputs import make_decode_inputs, with_fp8_q
from mlafleet.kernels.pdl import PDL_ENV, pdl_enabled, pdl_launch_options


def test_pdl_is_off_on_the_cpu_interpreter():
    # the CPU test run sets TRITON_INTERPRET=1: no launch option the interpreter would reject
    assert not pdl_enabled(torch.device("cpu"))
    assert pdl_launch_options(torch.device("cpu")) == {}


def test_environment_switch_turns_pdl_off(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setenv(PDL_ENV, "0")
    assert not pdl_enabled(torch.device("cuda", 0))  # (decided before asking the device)


# ---- GPU (sm_90): back-to-back calls with PDL give what synchronised calls give ---------------

CHAIN_CASES = {  # name: (h_q, kv dtype ("fp8q": an fp8 q too), config or None, lengths)
    "seesaw-splits": (128, None, None, (300, 4097, 1, 2500)),
    "few-heads-splits": (16, None, None, (5000, 64, 0, 9000)),
    "few-heads-fp8-paired": (16, "fp8_e4m3", None, (5000, 64, 0, 9000)),
    "fp8-tensor-cores": (16, "fp8q", None, (5000, 64, 0, 9000)),
    "fp8-seesaw-splits": (128, "fp8q", None, (300, 4097, 1, 2500)),
    "triton-kernel": (16, None, DecodeConfig(16, 32, 4, 2, 4), (700, 1500, 3, 64)),
}
KERNELS = {  # the kernel each case runs (``LAST_COMPILED["decode_kernel"]``)
    "seesaw-splits": "many_heads_seesaw",
    "few-heads-splits": "few_heads",
    "few-heads-fp8-paired": "few_heads_fp8",
    "fp8-tensor-cores": "fp8_mma",
    "fp8-seesaw-splits": "many_heads_fp8_seesaw",
    "triton-kernel": "triton",
}


def _chain_inputs(case: str, seed: int, calls: int) -> tuple[list[dict[str, Any]], Any]:
    h_q, kv_dtype, config, lengths = CHAIN_CASES[case]
    q_fp8 = kv_dtype == "fp8q"
    problem = DecodeProblem(
        batch=len(lengths), s_q=1, h_q=h_q, seqlen=0, seqlens=lengths, page_size=64,
        dtype="bf16", kv_dtype="fp8_e4m3" if q_fp8 else kv_dtype,
    )  # fmt: skip
    made = [make_decode_inputs(problem, device="cuda", seed=seed + k) for k in range(calls)]
    return [with_fp8_q(one) for one in made] if q_fp8 else made, config


def _serial(inputs: list[dict[str, Any]], config: Any, monkeypatch: pytest.MonkeyPatch) -> list:
    """Each call launched without PDL and synchronised: the stream's plain order."""
    monkeypatch.setenv(PDL_ENV, "0")
    results = []
    for one in inputs:
        out, lse = mla_decode(**one, config=config)
        torch.cuda.synchronize()
        results.append((out.clone(), lse.clone()))
    monkeypatch.setenv(PDL_ENV, "1")  # the calls under test: with PDL
    return results


@pytest.mark.gpu
@pytest.mark.parametrize("case", list(CHAIN_CASES))
def test_back_to_back_calls_with_pdl_match_serial_calls_on_gpu(
    case: str, seed: int, monkeypatch: pytest.MonkeyPatch
):
    if torch.cuda.get_device_capability() != (9, 0):
        pytest.skip("checked on sm_90, where the Gluon kernels run")
    module = importlib.import_module("mlafleet.kernels.mla_decode")
    inputs, config = _chain_inputs(case, seed, calls=6)
    expected = _serial(inputs, config, monkeypatch)
    assert pdl_enabled(inputs[0]["q"].device)
    got = [mla_decode(**one, config=config) for one in inputs]  # no sync in between
    assert module.LAST_COMPILED["decode"].metadata.launch_pdl
    assert module.LAST_COMPILED["decode_kernel"] == KERNELS[case]
    torch.cuda.synchronize()
    for (out, lse), (ref_out, ref_lse) in zip(got, expected, strict=True):
        assert torch.equal(out, ref_out)
        assert torch.equal(lse.nan_to_num(), ref_lse.nan_to_num())


@pytest.mark.gpu
@pytest.mark.parametrize(
    "case", ["seesaw-splits", "few-heads-fp8-paired", "fp8-tensor-cores", "fp8-seesaw-splits"]
)
def test_pdl_calls_captured_in_a_cuda_graph_on_gpu(
    case: str, seed: int, monkeypatch: pytest.MonkeyPatch
):
    # serving frameworks replay decode steps from CUDA graphs: the programmatic edges must
    # survive capture, and the replay must give the eager results, on every replay
    if torch.cuda.get_device_capability() != (9, 0):
        pytest.skip("checked on sm_90, where the Gluon kernels run")
    inputs, config = _chain_inputs(case, seed, calls=4)
    expected = _serial(inputs, config, monkeypatch)
    outs = [torch.full_like(ref_out, float("nan")) for ref_out, _ in expected]
    for one, out in zip(inputs, outs, strict=True):  # warm-up: compile outside the capture
        mla_decode(**one, config=config, out=out)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for one, out in zip(inputs, outs, strict=True):
            mla_decode(**one, config=config, out=out)
    for _ in range(3):
        for out in outs:
            out.fill_(float("nan"))
        graph.replay()
        torch.cuda.synchronize()
        for out, (ref_out, _) in zip(outs, expected, strict=True):
            assert torch.equal(out, ref_out)
