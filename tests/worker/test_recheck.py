"""``recheck.problem_from_bucket``: a bundle entry's bucket back to the problem it stands for."""

from __future__ import annotations

import pytest

from mlafleet.kernels.bundle import WorkloadBucket, bucket_of
from mlafleet.kernels.configs import WORKLOAD_DTYPES, DecodeProblem, PrefillProblem
from mlafleet.worker.recheck import problem_from_bucket


@pytest.mark.parametrize("dtype", WORKLOAD_DTYPES)
def test_decode_bucket_round_trips_every_precision(dtype: str) -> None:
    bucket = WorkloadBucket(batch=64, seqlen=4096, heads=16, s_q=2, dtype=dtype, page_size=64)
    problem = problem_from_bucket("mla_decode", bucket)
    assert isinstance(problem, DecodeProblem)
    assert problem.workload_dtype == dtype
    assert bucket_of(problem) == bucket


def test_fp8_q_bucket_gives_an_fp8_q_over_an_fp8_cache() -> None:
    bucket = WorkloadBucket(batch=8, seqlen=32768, heads=16, dtype="fp8_e4m3_qkv", page_size=64)
    problem = problem_from_bucket("mla_decode", bucket)
    assert isinstance(problem, DecodeProblem)
    assert (problem.dtype, problem.kv_dtype, problem.q_dtype) == ("bf16", "fp8_e4m3", "fp8_e4m3")


def test_prefill_bucket() -> None:
    bucket = WorkloadBucket(batch=1, seqlen=4096, heads=128, dtype="bf16")
    assert problem_from_bucket("mla_prefill", bucket) == PrefillProblem(
        batch=1, seqlen_q=4096, seqlen_k=4096, h=128, dtype="bf16"
    )
