"""``mla_prefill`` against the fp32 reference (CPU interpreter, fp16, tiny shapes).

Every test draws fresh inputs (a new seed each run, named in the failure message); q/k/v are
views into NaN-padded buffers and the outputs are poisoned with NaN before each call, so reads
past a head dim or the packed total and unwritten outputs both show up as NaN.
"""

from __future__ import annotations

import importlib
import math
import os
import random
import secrets
from typing import Any

import pytest
import torch

from mlafleet.kernels import prefill_args
from mlafleet.kernels.configs import CPU_INTERPRETER, PrefillConfig, PrefillProblem
from mlafleet.kernels.mla_prefill import _launch, mla_prefill
from mlafleet.kernels.prefill_args import check_prefill_args
from mlafleet.kernels.prefill_inputs import make_prefill_inputs, run_prefill, run_prefill_ref
from mlafleet.kernels.prefill_tuning import prefill_search_space
from mlafleet.kernels.registry import TOLERANCES, get_kernel

# the module (``mlafleet.kernels.mla_prefill`` the attribute is the re-exported function)
prefill_mod = importlib.import_module("mlafleet.kernels.mla_prefill")
PINNED = PrefillConfig(block_size_q=16, block_size_k=16, num_warps=4, num_stages=1)
LSE_TOL = (1e-3, 1e-3)  # fp32 lse from fp32 accumulators: only summation order differs


def _device() -> str:
    """The GPU when there is one and the interpreter is off, else the CPU (interpreter)."""
    interpret = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
    return "cuda" if torch.cuda.is_available() and not interpret else "cpu"


def _tma_runs_here() -> bool:
    """The descriptor path runs in the interpreter and on sm_90+."""
    return _device() == "cpu" or torch.cuda.get_device_capability()[0] >= 9


def _problem(**overrides: Any) -> PrefillProblem:
    values: dict[str, Any] = {
        "batch": 1, "seqlen_q": 24, "seqlen_k": 24, "h": 2, "d_qk": 48, "d_v": 32,
        "dtype": "fp16", "causal": True,
    }  # fmt: skip
    values.update(overrides)
    return PrefillProblem(**values)


@pytest.fixture(autouse=True)
def _poison_outputs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every output buffer the launcher allocates starts as NaN."""

    def poisoned(shape: tuple[int, ...], *, dtype: torch.dtype, device: Any) -> torch.Tensor:
        return torch.full(shape, float("nan"), dtype=dtype, device=device)

    monkeypatch.setattr(prefill_mod, "_empty", poisoned)


def _check(inputs: dict[str, Any], out: torch.Tensor, lse: torch.Tensor, seed: int) -> None:
    ref_out, ref_lse = run_prefill_ref(inputs)
    atol, rtol = TOLERANCES["fp16"]
    msg = f"seed {seed}"
    assert out.shape == ref_out.shape, msg
    assert out.dtype == inputs["q"].dtype, msg
    assert not torch.isnan(out).any(), f"{msg}: NaN in out (unwritten or poisoned read)"
    torch.testing.assert_close(out, ref_out, atol=atol, rtol=rtol, msg=lambda m: f"{msg}: {m}")
    torch.testing.assert_close(lse, ref_lse, atol=LSE_TOL[0], rtol=LSE_TOL[1],
                               msg=lambda m: f"{msg}: {m}")  # fmt: skip


def _run_case(problem: PrefillProblem, *, config: PrefillConfig | None = PINNED,
              use_tma: bool | None = None, **input_kw: Any) -> dict[str, Any]:  # fmt: skip
    seed = secrets.randbits(31)
    inputs = make_prefill_inputs(problem, device=_device(), seed=seed, **input_kw)
    if use_tma is None:
        out, lse = mla_prefill(**inputs, config=config)
    else:
        args = check_prefill_args(
            inputs["q"], inputs["k"], inputs["v"], inputs["cu_seqlens_q"], inputs["cu_seqlens_k"],
            inputs["max_seqlen_q"], inputs["max_seqlen_k"], causal=inputs["causal"],
            softmax_scale=inputs["softmax_scale"],
        )  # fmt: skip
        assert config is not None
        out, lse, _ = _launch(args, config, use_tma=use_tma)
    _check(inputs, out, lse, seed)
    return {"inputs": inputs, "out": out, "lse": lse}


CASES = {
    "causal": (_problem(seqlen_q=37, seqlen_k=37), {}),
    "noncausal": (_problem(seqlen_q=37, seqlen_k=29, causal=False), {}),
    "varlen_with_empty": (
        _problem(batch=4), {"lengths": [(20, 20), (0, 0), (33, 33), (1, 1)]},
    ),
    "bottom_right": (_problem(batch=2), {"lengths": [(9, 40), (17, 21)]}),
    "more_queries_than_keys": (_problem(batch=2), {"lengths": [(20, 10), (5, 0)]}),
    "gqa": (_problem(h=4, h_k=2, seqlen_q=33, seqlen_k=33), {}),
    "mqa_noncausal_varlen": (
        _problem(batch=3, h=4, h_k=1, seqlen_q=20, seqlen_k=26, causal=False), {"varlen": True},
    ),
    "deepseek_dims": (_problem(seqlen_q=20, seqlen_k=20, h=1, d_qk=192, d_v=128), {}),
    "pair_96_64": (_problem(seqlen_q=18, seqlen_k=30, d_qk=96, d_v=64), {}),
    "padded_dims_80_48": (_problem(seqlen_q=17, seqlen_k=17, d_qk=80, d_v=48), {}),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_reference(case: str) -> None:
    problem, input_kw = CASES[case]
    _run_case(problem, **input_kw)


@pytest.mark.parametrize("case", ["varlen_with_empty", "bottom_right", "padded_dims_80_48"])
def test_tma_path_matches_reference(case: str) -> None:
    """The descriptor (TMA) load path, which the GPU takes on sm_90, through the interpreter."""
    if not _tma_runs_here():
        pytest.skip("TMA descriptors need sm_90+ (or the interpreter)")
    problem, input_kw = CASES[case]
    _run_case(problem, use_tma=True, **input_kw)


def test_rows_without_keys_give_zero_and_minus_inf() -> None:
    result = _run_case(_problem(batch=2), lengths=[(6, 3), (4, 0)])
    out, lse = result["out"], result["lse"]
    # sequence 0: rows 0..2 see no key (3 keys, 6 queries, bottom-right); sequence 1: none do
    assert torch.all(out[:3] == 0)
    assert torch.all(out[6:] == 0)
    assert torch.all(torch.isneginf(lse[:, :3]))
    assert torch.all(torch.isneginf(lse[:, 6:]))
    assert torch.isfinite(lse[:, 3:6]).all()


def test_custom_softmax_scale_and_default_config() -> None:
    problem = _problem(seqlen_q=21, seqlen_k=21)
    seed = secrets.randbits(31)
    inputs = make_prefill_inputs(problem, device=_device(), seed=seed)
    inputs["softmax_scale"] = 0.3
    out, lse = mla_prefill(**inputs)  # config=None: the interpreter's default
    _check(inputs, out, lse, seed)


def test_sampled_sweep_of_interpreter_search_space() -> None:
    problem = _problem(batch=2, seqlen_q=40, seqlen_k=40)
    space = prefill_search_space(problem, CPU_INTERPRETER)  # small tiles run on any device
    assert PINNED in space
    for config in random.Random(secrets.randbits(31)).sample(space, 2):
        _run_case(problem, config=config, varlen=True)


def test_registry_entry_drives_the_kernel() -> None:
    spec = get_kernel("mla_prefill")
    problem = _problem(seqlen_q=19, seqlen_k=19)
    inputs = spec.fn("make_inputs")(problem, device=_device(), seed=secrets.randbits(31))
    config = spec.fn("default_config")(problem, CPU_INTERPRETER)
    assert spec.fn("why_invalid")(config, problem, CPU_INTERPRETER) is None
    out, lse = spec.fn("run")(inputs, config)
    ref_out, ref_lse = spec.fn("reference")(inputs)
    torch.testing.assert_close(out, ref_out, atol=2e-3, rtol=2e-3)
    torch.testing.assert_close(lse, ref_lse, atol=1e-3, rtol=1e-3)
    assert run_prefill is spec.fn("run")


def test_inputs_are_poisoned_views_and_lengths_follow_the_problem() -> None:
    problem = _problem(batch=5, seqlen_q=30, seqlen_k=40, h=4, h_k=2)
    inputs = make_prefill_inputs(problem, device="cpu", seed=3, varlen=True)
    q_lens = inputs["cu_seqlens_q"].diff().tolist()
    k_lens = inputs["cu_seqlens_k"].diff().tolist()
    assert all(15 <= s <= 30 for s in q_lens)
    assert [k - q for q, k in zip(q_lens, k_lens, strict=True)] == [10] * 5
    for name in ("q", "k", "v"):
        view = inputs[name]
        assert torch.isfinite(view).all()
        storage = view.as_strided((view.shape[0] + 1, *view.shape[1:]), view.stride())
        assert torch.isnan(storage[-1]).all(), f"{name}: the row past the total is not NaN"
        assert view.stride(1) > view.shape[2], f"{name}: no NaN columns after the head dim"
    exact = make_prefill_inputs(problem, device="cpu", seed=3)
    assert exact["cu_seqlens_q"].tolist() == [0, 30, 60, 90, 120, 150]
    assert exact["max_seqlen_k"] == 40


def _valid_inputs() -> dict[str, Any]:
    return make_prefill_inputs(_problem(batch=2, h=4, h_k=2), device="cpu", seed=0)


def _set(key: str, value: Any) -> Any:
    def edit(inputs: dict[str, Any]) -> None:
        inputs[key] = value(inputs) if callable(value) else value

    return edit


def _cu(values: list[int]) -> Any:
    return lambda inputs: torch.tensor(values, dtype=torch.int32)


INVALID = {
    "q_not_tensor": (
        _set("q", [1.0]),
        TypeError,
        "q: expected a torch.Tensor, got list",
    ),
    "q_fp32": (
        _set("q", lambda i: i["q"].float()),
        TypeError,
        "q: expected dtype float16 or bfloat16",
    ),
    "q_2d": (
        _set("q", lambda i: i["q"][:, 0]),
        ValueError,
        "q: expected 3 dims",
    ),
    "q_last_dim_strided": (
        _set("q", lambda i: i["q"].transpose(1, 2)),
        ValueError,
        "q: expected the last dim to be contiguous",
    ),
    "k_dtype": (
        _set("k", lambda i: i["k"].to(torch.bfloat16)),
        TypeError,
        "k: expected dtype float16, got bfloat16",
    ),
    "k_head_dim": (
        _set("k", lambda i: i["k"][:, :, :32]),
        ValueError,
        "k: expected last dim 48",
    ),
    "h_k_not_dividing": (
        _set("k", lambda i: i["k"][:, :1].expand(-1, 3, -1)),
        ValueError,
        "k: expected h_k (dim 1) dividing h=4, got 3",
    ),
    "v_tokens": (
        _set("v", lambda i: i["v"][:-1]),
        ValueError,
        "v: expected shape",
    ),
    "v_dim_unsupported": (
        _set("v", lambda i: torch.zeros(i["v"].shape[0], 2, 40, dtype=torch.float16)),
        ValueError,
        "d_v: expected a multiple of 16",
    ),
    "cu_q_int64": (
        _set("cu_seqlens_q", lambda i: i["cu_seqlens_q"].long()),
        TypeError,
        "cu_seqlens_q: expected dtype int32",
    ),
    "cu_k_length": (
        _set("cu_seqlens_k", _cu([0, 48])),
        ValueError,
        "cu_seqlens_k: expected shape [3]",
    ),
    "cu_q_not_zero_first": (
        _set("cu_seqlens_q", _cu([1, 24, 48])),
        ValueError,
        "cu_seqlens_q: expected 0 first",
    ),
    "cu_q_wrong_total": (
        _set("cu_seqlens_q", _cu([0, 24, 40])),
        ValueError,
        "cu_seqlens_q: expected the packed total 48 last, got 40",
    ),
    "cu_k_longer_than_max_seqlen_k": (
        _set("cu_seqlens_k", _cu([0, 30, 48])),
        ValueError,
        "max_seqlen_k: expected >= the longest sequence (30), got 24",
    ),
    "cu_q_negative_length": (
        _set("cu_seqlens_q", _cu([0, 50, 48])),
        ValueError,
        "cu_seqlens_q: expected non-decreasing prefix sums",
    ),
    "cu_q_empty": (
        _set("cu_seqlens_q", _cu([])),
        ValueError,
        "cu_seqlens_q: expected [batch + 1] entries",
    ),
    "max_seqlen_q_small": (
        _set("max_seqlen_q", 10),
        ValueError,
        "max_seqlen_q: expected >= the longest sequence (24), got 10",
    ),
    "max_seqlen_k_float": (
        _set("max_seqlen_k", 24.0),
        TypeError,
        "max_seqlen_k: expected an int, got float",
    ),
    "max_seqlen_q_negative": (
        _set("max_seqlen_q", -1),
        ValueError,
        "max_seqlen_q: expected an int >= 0",
    ),
    "causal_int": (
        _set("causal", 1),
        TypeError,
        "causal: expected a bool, got int",
    ),
    "scale_negative": (
        _set("softmax_scale", -0.1),
        ValueError,
        "softmax_scale: expected a finite value > 0",
    ),
    "scale_nan": (
        _set("softmax_scale", math.nan),
        ValueError,
        "softmax_scale: expected a finite value > 0",
    ),
    "scale_str": (
        _set("softmax_scale", "0.1"),
        TypeError,
        "softmax_scale: expected a float or None, got str",
    ),
    "config_dict": (
        _set("config", {"block_size_q": 16}),
        TypeError,
        "config: expected a PrefillConfig or None, got dict",
    ),
    "config_block_not_pow2": (
        _set("config", PrefillConfig(24, 16, 4, 1)),
        ValueError,
        "config.block_size_q: expected a power of two from 16 to 256, got 24",
    ),
    "config_block_too_small": (
        _set("config", PrefillConfig(16, 8, 4, 1)),
        ValueError,
        "config.block_size_k: expected a power of two from 16 to 256, got 8",
    ),
    "config_stages": (
        _set("config", PrefillConfig(16, 16, 4, 0)),
        ValueError,
        "config.num_stages: expected 1 to 6, got 0",
    ),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_invalid_input_is_refused_with_a_message_naming_it(
    case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # CPU tensors pass the device check (as under the interpreter) on any machine; every
    # case is refused before anything launches
    monkeypatch.setattr(prefill_args, "interpreting", lambda: True)
    edit, error, text = INVALID[case]
    inputs = _valid_inputs()
    inputs["config"] = PINNED
    edit(inputs)
    with pytest.raises(error) as excinfo:
        mla_prefill(**inputs)
    assert text in str(excinfo.value)


def test_d_qk_outside_the_rule_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prefill_args, "interpreting", lambda: True)
    inputs = make_prefill_inputs(_problem(d_qk=200, d_v=32), device="cpu", seed=0)
    with pytest.raises(ValueError, match=r"d_qk: expected a multiple of 16 from 16 to 320"):
        mla_prefill(**inputs, config=PINNED)


def test_cpu_tensors_without_the_interpreter_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prefill_args, "interpreting", lambda: False)
    with pytest.raises(ValueError, match=r"q: expected a CUDA tensor, got one on cpu"):
        mla_prefill(**_valid_inputs(), config=PINNED)


@pytest.mark.gpu
@pytest.mark.parametrize("causal", [True, False])
def test_full_size_bf16_on_the_gpu(causal: bool) -> None:
    """DeepSeek size (128 heads, d 192/128) in bf16, varied lengths, default config."""
    problem = PrefillProblem(batch=2, seqlen_q=2048, seqlen_k=2048 + (512 if causal else 0),
                             h=128, dtype="bf16", causal=causal)  # fmt: skip
    seed = secrets.randbits(31)
    inputs = make_prefill_inputs(problem, device="cuda", seed=seed, varlen=True)
    out, lse = mla_prefill(**inputs)
    ref_out, ref_lse = run_prefill_ref(inputs)
    assert not torch.isnan(out).any(), f"seed {seed}"
    rel_l2 = float((out.float() - ref_out.float()).norm() / ref_out.float().norm())
    assert rel_l2 < 1e-2, f"seed {seed}: relative L2 error {rel_l2:.2e} (H200 run: 2.1e-3)"
    torch.testing.assert_close(lse, ref_lse, atol=1e-3, rtol=1e-3)
