"""Job specs: valid specs expand to grids; invalid ones list every problem at once."""

from __future__ import annotations

import json

import pytest
from orch_factories import tiny_spec

from mlafleet.kernels.bundle import ConfigBundle
from mlafleet.kernels.configs import DecodeProblem, PrefillProblem
from mlafleet.orchestrator.errors import JobSpecError
from mlafleet.orchestrator.jobspec import parse_job_spec, spec_from_json

DTYPES = ["bf16", "fp8_e4m3", "fp8_e4m3_qkv"]


def test_decode_grid_expands_to_the_cross_product() -> None:
    spec = parse_job_spec(
        {
            "name": "h200",
            "kernel": "mla_decode",
            "workloads": {"batch": [1, 64], "seqlen": 4096, "heads": [16, 128], "s_q": [1, 2]},
            "archs": ["sm_90", "sm_80"],
            "strategy": "tpe",
            "budget": {"trials": 40, "minutes": 10},
        },
        max_workloads=100,
    )
    problems = spec.problems()
    assert len(problems) == 8
    assert all(isinstance(p, DecodeProblem) for p in problems)
    assert {(p.batch, p.h_q, p.s_q, p.seqlen, p.page_size, p.dtype) for p in problems} == {
        (b, h, s, 4096, 64, "bf16") for b in (1, 64) for h in (16, 128) for s in (1, 2)
    }
    assert spec.target_archs(["gfx942"]) == ["sm_90", "sm_80"]


def test_decode_grid_takes_fp8_precisions() -> None:
    spec = parse_job_spec(
        {
            "name": "fp8",
            "kernel": "mla_decode",
            "workloads": {"batch": 64, "seqlen": 4096, "heads": 16, "dtype": DTYPES},
        },
        max_workloads=10,
    )
    problems = spec.problems()
    assert [p.workload_dtype for p in problems] == DTYPES  # type: ignore[union-attr]
    assert problems[2] == DecodeProblem(
        batch=64, s_q=1, h_q=16, seqlen=4096, dtype="bf16", kv_dtype="fp8_e4m3",
        q_dtype="fp8_e4m3",
    )  # fmt: skip
    assert spec_from_json(json.dumps(spec.to_json_dict())) == spec


def test_prefill_grid_refuses_fp8() -> None:
    spec = {
        "name": "p",
        "kernel": "mla_prefill",
        "workloads": {"batch": 1, "seqlen": 512, "heads": 16, "dtype": ["bf16", *DTYPES[1:]]},
    }
    with pytest.raises(JobSpecError) as info:
        parse_job_spec(spec, max_workloads=10)
    assert info.value.problems == [
        "workloads.dtype: mla_prefill has no fp8 (fp8_e4m3, fp8_e4m3_qkv); use fp16, bf16 or fp32"
    ]


def test_prefill_grid_and_all_archs() -> None:
    spec = parse_job_spec(
        {
            "name": "p",
            "kernel": "mla_prefill",
            "workloads": {"batch": 2, "seqlen": [512, 1024], "heads": 16},
        },
        max_workloads=100,
    )
    problems = spec.problems()
    assert problems == [
        PrefillProblem(batch=2, seqlen_q=n, seqlen_k=n, h=16, dtype="bf16") for n in (512, 1024)
    ]
    assert spec.target_archs(["sm_90", "cpu-interpreter", "sm_90"]) == ["cpu-interpreter", "sm_90"]


def test_yaml_text_and_stored_json_round_trip() -> None:
    text = """
kind: tune
name: yaml job
kernel: mla_decode
workloads: {batch: [1], seqlen: [16], heads: [2], d_qk: 96, d_v: 64, dtype: fp16}
validate: false
"""
    spec = parse_job_spec(text, max_workloads=10)
    assert spec.validate_ is False
    assert spec.workloads is not None
    assert spec.workloads.dtype == ["fp16"]
    assert spec_from_json(json.dumps(spec.to_json_dict())) == spec


def test_every_problem_is_listed_at_once() -> None:
    bad = {
        "kind": "retune",
        "kernel": "mla_prefill",
        "workloads": {"batch": [0], "seqlen": [16], "heads": 2, "page_size": [3, 16], "s_q": 2},
        "strategy": "annealing",
        "budget": {"trials": -1},
        "archs": ["sm_90", "sm_90"],
        "colour": "blue",
    }
    with pytest.raises(JobSpecError) as info:
        parse_job_spec(bad, max_workloads=10)
    problems = info.value.problems
    expected = [
        "colour: unknown field",
        "kind: Input should be 'tune' or 'validate', got 'retune'",
        "name: required field is missing",
        "workloads.batch.0: Input should be greater than or equal to 1",
        "workloads.page_size: Value error, expected powers of two from 1 to 256, got 3",
        "strategy: Input should be 'exhaustive', 'random' or 'tpe', got 'annealing'",
        "budget.trials: Input should be greater than or equal to 1",
    ]
    for fragment in expected:
        assert any(p.startswith(fragment) for p in problems), (fragment, problems)
    # cross-field rules still run on the fields that were valid on their own
    assert "archs: listed more than once: ['sm_90']" in problems
    assert len(problems) == len(expected) + 1
    assert str(info.value).startswith("invalid job spec:\n  - ")


def test_cross_field_rules() -> None:
    spec = {
        "name": "x",
        "kernel": "mla_prefill",
        "workloads": {"batch": [1, 2, 3], "seqlen": [16, 32, 64, 128], "heads": [2], "s_q": [2]},
        "strategy": "tpe",
    }
    with pytest.raises(JobSpecError) as info:
        parse_job_spec(spec, max_workloads=10)
    assert info.value.problems == [
        "workloads.s_q: only mla_decode has this axis; remove it for mla_prefill",
        "workloads: the grid has 12 workloads, more than the limit of 10 "
        "(MLAFLEET_MAX_WORKLOADS_PER_JOB); split the job or shrink the grid",
        "budget: strategy 'tpe' needs a budget; set budget.trials and/or budget.minutes",
    ]


def test_absurd_grid_refused_by_the_settings_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    from mlafleet.orchestrator.config import get_settings

    monkeypatch.setenv("MLAFLEET_MAX_WORKLOADS_PER_JOB", "3")
    get_settings.cache_clear()
    try:
        with pytest.raises(
            JobSpecError, match="the grid has 4 workloads, more than the limit of 3"
        ):
            parse_job_spec(tiny_spec(workloads={"batch": [1, 2], "seqlen": [16, 32], "heads": 2}))
    finally:
        get_settings.cache_clear()


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ("", "expected a mapping of kind, name, kernel, workloads, ...; got NoneType"),
        ("[1, 2]", "expected a mapping of kind, name, kernel, workloads, ...; got list"),
        ("name: [unclosed", "not valid YAML or JSON"),
    ],
)
def test_not_a_mapping(data: str, problem: str) -> None:
    with pytest.raises(JobSpecError) as info:
        parse_job_spec(data, max_workloads=10)
    assert info.value.problems[0].startswith(problem)


def test_validate_job_takes_a_bundle_or_workloads_not_both() -> None:
    bundle = ConfigBundle(entries=[]).model_dump(mode="json")
    ok = parse_job_spec(
        {"kind": "validate", "name": "v", "kernel": "mla_decode", "bundle": bundle},
        max_workloads=10,
    )
    assert ok.bundle is not None
    assert ok.problems() == []
    with pytest.raises(JobSpecError) as info:
        parse_job_spec(tiny_spec(kind="validate", bundle=bundle), max_workloads=10)
    assert info.value.problems == [
        "workloads: a validate job takes workloads OR a bundle, not both"
    ]
    with pytest.raises(JobSpecError) as info:
        parse_job_spec(tiny_spec(bundle=bundle), max_workloads=10)
    assert info.value.problems == [
        "bundle: only a validate job takes a bundle; remove it or set kind: validate"
    ]


def test_tune_job_needs_workloads() -> None:
    with pytest.raises(JobSpecError) as info:
        parse_job_spec({"name": "x", "kernel": "mla_decode"}, max_workloads=10)
    assert info.value.problems == [
        "workloads: a tune job needs a workload grid (batch, seqlen, heads, ...)"
    ]
