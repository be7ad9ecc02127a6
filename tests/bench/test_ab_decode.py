"""``bench/ab_decode.py``: its argument checks (CPU), the interleaving and the summary."""

from __future__ import annotations

import sys
from functools import partial
from typing import Any

import pytest
from bench_scripts import BENCH, run_script

_run = partial(run_script, "ab_decode.py")
VALID = ["--candidate", "mla_decode_hopper_fp8_mma", "--swap", "launch_fp8_mma_decode"]


def _ab_module() -> Any:
    sys.path.insert(0, str(BENCH))
    try:
        import ab_decode
    finally:
        sys.path.remove(str(BENCH))
    return ab_decode


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([*VALID, "--rows", "b64-h16-4k"], "--rows: expected <shape>:<kv>, got 'b64-h16-4k'"),
        ([*VALID, "--rows", "b1-h1-1k:bf16"], "--rows: unknown shape 'b1-h1-1k'; known: "),
        ([*VALID, "--rows", "b64-h16-4k:int8"], "expected one of bf16, fp8, fp8q"),
        ([*VALID, "--rows", "b64-h16-4k:bf16", "--rounds", "0"], "--rounds: expected at least 1"),
        (
            [*VALID, "--rows", "b64-h16-4k:bf16", "--variant", "q16-w8"],
            "--variant: expected default or q<BQ>-k<BK>-w<W>-s<ST>[-p<SPLITS>], got 'q16-w8'",
        ),
        (
            ["--candidate", "no_such_copy", "--swap", "launch_fp8_mma_decode", "--rows",
             "b64-h16-4k:fp8q"],
            "--candidate: cannot import mlafleet.kernels.no_such_copy",
        ),
        (
            ["--candidate", "mla_decode_hopper_fp8_mma", "--swap", "launch_nothing", "--rows",
             "b64-h16-4k:fp8q"],
            "--swap: 'launch_nothing' is not a launcher of mla_decode; one of ",
        ),
        (
            ["--candidate", "mla_decode_hopper_few", "--swap", "launch_fp8_mma_decode", "--rows",
             "b64-h16-4k:fp8q"],
            "--candidate: mlafleet.kernels.mla_decode_hopper_few has no launch_fp8_mma_decode()",
        ),
    ],
)  # fmt: skip
def test_bad_arguments_are_refused_before_anything_runs(args: list[str], message: str):
    done = _run(*args)
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_valid_arguments_then_need_a_gpu():
    done = _run(*VALID, "--rows", "b64-h16-4k:fp8q,b8-h16-32k:bf16")
    assert done.returncode == 2
    assert "ab_decode: needs a CUDA GPU" in done.stderr


def test_sides_take_turns_and_main_is_restored_even_on_failure():
    ab = _ab_module()
    rows = [ab.Row("b64-h16-4k", "fp8q"), ab.Row("b8-h16-32k", "bf16")]
    used: list[str] = []
    timed: list[tuple[str, str]] = []

    def bench_row(row: Any) -> dict[str, Any]:
        timed.append((row.shape, used[-1]))
        return {"us": 10.0}

    records = ab.run_ab(rows, 2, used.append, bench_row)
    turns = ["main", "candidate", "main", "candidate"]
    assert timed == [(r.shape, side) for _ in range(2) for r in rows for side in turns]
    assert [r["round"] for r in records] == [0] * 8 + [1] * 8
    assert records[0]["row"] == "b64-h16-4k:fp8q"
    assert used[-1] == "main"

    used.clear()

    def broken(row: Any) -> dict[str, Any]:
        if used[-1] == "candidate":
            raise RuntimeError("candidate crashed")
        return {"us": 1.0}

    with pytest.raises(RuntimeError, match="candidate crashed"):
        ab.run_ab(rows, 1, used.append, broken)
    assert used[-1] == "main"  # the caller's kernel is back


def test_summary_gives_medians_change_and_pairs_won():
    ab = _ab_module()
    records = [
        {"row": "a:fp8q", "side": side, "us": us}
        for side, us in (("main", 50.0), ("candidate", 45.0), ("main", 52.0), ("candidate", 53.0))
    ] + [
        {"row": "b:bf16", "side": "main", "us": 70.0},
        {"row": "b:bf16", "side": "candidate", "error": "RuntimeError: out of resources"},
    ]
    first, second = ab.summarize_ab(records)
    assert first["main_us"] == [50.0, 52.0]
    assert first["candidate_us"] == [45.0, 53.0]
    assert first["main_median_us"] == 51.0
    assert first["candidate_median_us"] == 49.0
    assert first["change_pct"] == pytest.approx(-100 * 2 / 51)
    assert first["candidate_won"] == "1 of 2"
    assert second["error"] == "RuntimeError: out of resources"
    assert "change_pct" not in second


def test_a_wrong_candidate_is_an_error_not_a_win():
    ab = _ab_module()
    good = {"kv": "fp8q", "rel_l2": 1.3e-2, "nan_in_out": 0.0}
    assert ab.correctness_error(good) is None
    assert ab.correctness_error({**good, "rel_l2": 0.5}).startswith("wrong: relative L2 error")
    assert ab.correctness_error({**good, "kv": "bf16"}).startswith("wrong: relative L2")  # 1e-2
    assert ab.correctness_error({**good, "nan_in_out": 1.0}).startswith("wrong: NaN")
    assert ab.correctness_error({"error": "compile failed"}) is None  # its own error stands


def test_an_ablation_is_timed_and_flagged_not_failed():
    ab = _ab_module()
    wrong = "wrong: relative L2 error 0.9 over 0.01"
    records = [
        {"row": "a:bf16", "side": "main", "us": 100.0},
        {"row": "a:bf16", "side": "candidate", "us": 96.0, "wrong": wrong},
        {"row": "a:bf16", "side": "main", "us": 102.0},
        {"row": "a:bf16", "side": "candidate", "us": 98.0, "wrong": wrong},
    ]
    (entry,) = ab.summarize_ab(records)
    assert entry["ablation_wrong"] == wrong
    assert "error" not in entry
    assert entry["change_pct"] == pytest.approx(-100 * 4 / 101)
    assert entry["candidate_won"] == "2 of 2"
