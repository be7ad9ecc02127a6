"""Validation against a reference, tolerances, and the winner rule."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from worker_factories import make_trial

from mlafleet.kernels.configs import DecodeProblem
from mlafleet.kernels.registry import tolerance_key
from mlafleet.worker.schemas import TrialStatus
from mlafleet.worker.validate import compare, error_floor, tolerance_for, winner


def _ref() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return torch.randn(2, 1, 4, 8, generator=gen), torch.randn(2, 4, 1, generator=gen)


def test_within_tolerance_passes_with_errors_reported() -> None:
    ref, lse = _ref()
    out = (ref + 1e-3).to(torch.float16)
    result = compare(out, lse + 1e-4, ref, lse, dtype="fp16", seed=5)
    assert result.passed, result.message
    assert (result.atol, result.rtol) == tolerance_for("fp16")
    assert 0 < result.max_abs_err < 2e-3
    assert 0 < result.rel_l2_err < 5e-3
    assert result.lse_max_abs_err == pytest.approx(1e-4, rel=0.1)
    assert result.seed == 5


def test_outside_tolerance_fails_and_says_how_much() -> None:
    ref, lse = _ref()
    result = compare(ref + 0.1, lse, ref, lse, dtype="bf16", seed=0)
    assert not result.passed
    assert result.max_abs_err == pytest.approx(0.1, rel=1e-3)
    assert "64 of 64 value(s) outside atol=0.016" in result.message


def test_fp32_tolerance_is_tighter_than_bf16() -> None:
    ref, lse = _ref()
    assert compare(ref + 1e-3, lse, ref, lse, dtype="bf16", seed=0).passed
    assert not compare(ref + 1e-3, lse, ref, lse, dtype="fp32", seed=0).passed


def test_nan_output_fails() -> None:
    ref, lse = _ref()
    out = ref.clone()
    out[0, 0, 0, 0] = math.nan
    result = compare(out, lse, ref, lse, dtype="fp32", seed=0)
    assert not result.passed
    assert "1 NaN/inf" in result.message
    assert math.isinf(result.max_abs_err)


def test_lse_minus_inf_must_match_empty_sequences() -> None:
    ref, lse = _ref()
    ref_lse = lse.clone()
    ref_lse[1] = -math.inf
    assert compare(ref, ref_lse.clone(), ref, ref_lse, dtype="fp32", seed=0).passed
    result = compare(ref, lse, ref, ref_lse, dtype="fp32", seed=0)
    assert not result.passed
    assert "-inf/NaN positions differ" in result.message


def test_shape_mismatch_and_missing_lse_fail() -> None:
    ref, lse = _ref()
    assert "expected shape" in compare(ref[:1], lse, ref, lse, dtype="fp32", seed=0).message
    assert "returned none" in compare(ref, None, ref, lse, dtype="fp32", seed=0).message


def test_unknown_dtype_names_the_known_ones() -> None:
    with pytest.raises(
        ValueError, match=r"expected one of \['bf16', 'fp16', 'fp32', 'fp8_e4m3_qkv'\]"
    ):
        tolerance_for("int8")


def test_winner_is_fastest_within_error_factor() -> None:
    accurate = make_trial(median_us=20.0, rel_l2=1e-3, config={"c": 1})
    close = make_trial(median_us=15.0, rel_l2=3e-3, config={"c": 2})
    sloppy_fast = make_trial(median_us=5.0, rel_l2=9e-3, config={"c": 3})  # > 4x the best error
    wrong = make_trial(median_us=1.0, rel_l2=0.5, status=TrialStatus.WRONG_ANSWER, config={"c": 4})
    crashed = make_trial(
        median_us=None, rel_l2=None, status=TrialStatus.RUNTIME_ERROR, config={"c": 5}
    )
    best = winner([accurate, close, sloppy_fast, wrong, crashed])
    assert best is not None
    assert best.config == {"c": 2}
    assert winner([accurate, sloppy_fast], factor=10.0).config == {"c": 3}  # type: ignore[union-attr]


def test_an_fp8_q_has_its_own_tolerance_and_error_floor() -> None:
    fp8_q = DecodeProblem(
        batch=1, s_q=1, h_q=16, seqlen=64, dtype="bf16", kv_dtype="fp8_e4m3", q_dtype="fp8_e4m3"
    )
    fp8_kv = replace(fp8_q, q_dtype=None)
    assert tolerance_key(fp8_q) == "fp8_e4m3_qkv"
    assert tolerance_key(fp8_kv) == "bf16"
    assert tolerance_for("fp8_e4m3_qkv") == (8e-2, 8e-2)
    assert (error_floor(fp8_q), error_floor(fp8_kv)) == (3e-2, 5e-3)
    assert error_floor(replace(fp8_kv, kv_dtype=None)) == 0.0  # bf16: the 4x rule alone
    # an fp8 cache with a bf16 q: the fp8 seesaw (fp8 scores, 2e-3) against the 16-bit-scores
    # kernel (5e-4) at 128 heads on the H200: both are what an fp8 cache asks for
    lockstep = make_trial(median_us=504.0, rel_l2=5e-4, config={"c": 1})
    split_q = make_trial(median_us=311.0, rel_l2=2.1e-3, config={"c": 2})
    assert winner([lockstep, split_q]).config == {"c": 1}  # type: ignore[union-attr]
    assert winner([lockstep, split_q], floor=error_floor(fp8_kv)).config == {"c": 2}  # type: ignore[union-attr]
    # fp8 tensor cores (1.5e-2) against a dequantised q (3e-3): both are what an fp8 q asks for
    dequantised = make_trial(median_us=40.0, rel_l2=3e-3, config={"c": 1})
    tensor_cores = make_trial(median_us=25.0, rel_l2=1.5e-2, config={"c": 2})
    broken = make_trial(median_us=5.0, rel_l2=4e-2, config={"c": 3})
    assert winner([dequantised, tensor_cores, broken]).config == {"c": 1}  # type: ignore[union-attr]
    best = winner([dequantised, tensor_cores, broken], floor=error_floor(fp8_q))
    assert best is not None
    assert best.config == {"c": 2}


def test_winner_none_without_an_ok_timed_trial() -> None:
    assert winner([]) is None
    assert winner([make_trial(status=TrialStatus.RUN_TIMEOUT, median_us=None)]) is None
    assert winner([make_trial(median_us=None)]) is None
