"""The Gluon sm_90 decode kernels compile for Hopper without a GPU, with the intended shape.

Their numerics run on the GPU only (``test_mla_decode.py``'s ``gpu`` tests and the sanitizer
cases); here every variant the launcher can pick is compiled for sm_90 by Triton's own ptxas
(``sm90_compile_report.py``, in a child process without ``TRITON_INTERPRET``), and the compile
report is checked for what the design depends on: it fits one block's shared memory, spills at
most a few bytes, ptxas does not serialise its wgmma (C7515), and the score tile is computed
once (36 wgmma of 64 x 32 per tile for 64+ heads, not the 72 Triton's own layout gave).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mlafleet.kernels.mla_decode_hopper_fp8_mma import RING_DEPTHS

SM90_SHARED_BYTES = 232448  # 227 KB: the most one block may use on an H100/H200


@pytest.fixture(scope="module")
def sass_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sass")


@pytest.fixture(scope="module")
def report(
    sm90_compile_report: Callable[..., list[dict[str, Any]]], sass_dir: Path
) -> list[dict[str, Any]]:
    return sm90_compile_report("--sass", str(sass_dir))


def test_sass_files_hold_what_the_report_counts(report: list[dict[str, Any]], sass_dir: Path):
    # `--sass` writes each variant's SASS without addresses and encodings, so that two
    # checkouts' files diff to what a change did to the code a kernel runs; its matrix
    # instructions are the ones the report counts
    for row in report:
        dtype = "fp8" if row["fp8"] else "bf16"
        path = sass_dir / f"{row['kernel']}_{dtype}_sq{row['s_q']}_p{row['splits']}.sass"
        sass = path.read_text()
        assert "/*" not in sass, path
        assert dict(Counter(re.findall(r"[HQ]GMMA\.(\d+x\d+x\d+)", sass))) == row["wgmma"], path


def test_every_variant_compiles(report: list[dict[str, Any]]):
    kinds = {(row["kernel"], row["fp8"], row["s_q"]) for row in report}
    assert kinds == {
        (kernel, fp8, s_q)
        for kernel, fp8 in (
            *((k, fp8) for k in ("many_heads", "few_heads") for fp8 in (False, True)),
            ("many_heads_ws", False),
            ("many_heads_seesaw", False),
            ("many_heads_seesaw_persistent", False),  # its persistent grid
            ("many_heads_seesaw_fp8", True),  # an fp8 cache and an fp8 q
            ("many_heads_seesaw_split_q", True),  # ... and a bf16 q split in two fp8 terms
            ("few_heads_plan", False),  # the few-heads kernel reading a decode plan
            ("few_heads_fp8_s1", True),  # the paired fp8 few-heads kernel
            ("few_heads_fp8_plan", True),  # ... reading a decode plan
            ("few_heads_fp8_s2", True),  # the single-consumer one's ring depths
            ("few_heads_fp8_s3", True),
            # fp8 q too: the fp8 tensor-core kernel, its ring depths and with a decode plan
            *((f"fp8_mma_s{stages}", True) for stages in RING_DEPTHS),
            ("fp8_mma_plan", True),
        )
        for s_q in (1, 2)
    }


def test_resources_fit_one_block(report: list[dict[str, Any]]):
    for row in report:
        assert row["registers"] <= 255, row
        assert row["shared_bytes"] <= SM90_SHARED_BYTES, row
        # the lockstep kernels spill at most 8 bytes (fp8 upcast); the warp-specialised one, at
        # 240 registers a compute warpgroup, 8 (128 before the tail tile was zeroed in slices);
        # the fp8 seesaw with a split q 40 (its per-row scale, and since the prologue is
        # skipped by empty splits a few scalars around it; timed on the H200: no row slower);
        # the persistent seesaw 48 (warpgroup 1's output addresses: stored before its first
        # item, read back once an item, none in the pair loop), and since lazy rescaling the
        # one-item seesaw 8 (two scalars of warpgroup 0's prologue, read back once before its
        # pair loop)
        limits = {
            "many_heads_ws": 32,
            "many_heads_seesaw": 8,
            "many_heads_seesaw_split_q": 40,
            "many_heads_seesaw_persistent": 48,
        }
        limit = limits.get(row["kernel"], 8 if row["fp8"] else 0)
        assert row["stack_bytes"] <= limit, row


def test_no_kernel_has_its_wgmma_serialised(report: list[dict[str, Any]]):
    # ptxas's C7515: every wgmma of the kernel waits for the previous one (a 1.4x slowdown of
    # the fp8 tensor-core kernel when an in-flight accumulator could skip a loop, NOTES.md)
    assert [row for row in report if row["wgmma_serialized"]] == []


def test_score_tile_is_computed_once(report: list[dict[str, Any]]):
    for row in report:
        if row["kernel"] == "many_heads":
            # scores 64 x 64 x 576 split over 2 warpgroups: 36 k-steps of 64 x 32; p @ v: 4 of
            # 64 x 256 (each warpgroup half of the 512 output columns)
            assert row["wgmma"] == {"64x32x16": 36, "64x256x16": 4}, row
        elif row["kernel"] == "many_heads_seesaw":
            # two partitions, each: its first tile's and its loop's score tiles (36 k-steps of
            # 64 x 64 each); p @ v (4 k-steps of 64 x 256) twice in warpgroup 0, three times in
            # warpgroup 1 (its pair step and its lone-last-tile step)
            assert row["wgmma"] == {"64x64x16": 4 * 36, "64x256x16": 5 * 4}, row
        elif row["kernel"] == "many_heads_seesaw_persistent":
            # one score tile more: warpgroup 0's first tile of the next item after a lone last
            # tile a (after a pair, that tile's scores are the loop's own)
            assert row["wgmma"] == {"64x64x16": 5 * 36, "64x256x16": 5 * 4}, row
        elif row["kernel"] == "many_heads_seesaw_fp8":
            # the same with fp8 scores (k 32: 18 k-steps a tile); p @ v in fp16 as above
            assert row["wgmma"] == {"64x64x32": 4 * 18, "64x256x16": 5 * 4}, row
        elif row["kernel"] == "many_heads_seesaw_split_q":
            # a split q: each score tile twice (q's two fp8 terms)
            assert row["wgmma"] == {"64x64x32": 2 * 4 * 18, "64x256x16": 5 * 4}, row
        elif row["kernel"] == "many_heads_ws":
            # two partitions, each: its own 32-token tiles' scores (36 k-steps of 64 x 32) and
            # p @ v on its half for its own tile, the other's tile in the loop and after it
            # (2 k-steps of 64 x 256 each): 2 x 36 and 2 x (2 + 2 + 1 ...) in the SASS
            assert row["wgmma"]["64x32x16"] == 72, row
            assert row["wgmma"]["64x256x16"] >= 8, row
        elif row["kernel"].startswith("fp8_mma"):
            # fp8 wgmma (k 32), in each of the two computing warpgroups: s^T 18 k-steps of
            # 64 x 16, o^T 8 row tiles x 2 k-steps (v^T from registers)
            assert row["wgmma"] == {"64x16x32": 2 * (18 + 16)}, row
            assert row["stack_bytes"] == 0, row
        else:
            # few heads (both kernels): tokens on the rows: s^T 36 k-steps of 64 x 16, o^T 8 row
            # tiles x 4 k-steps
            assert row["wgmma"] == {"64x16x16": 36 + 32}, row


def test_every_kernel_waits_for_its_predecessor(report: list[dict[str, Any]]):
    # programmatic dependent launch (kernels/pdl.py): the wait comes first in the kernel and in
    # each worker partition (which start without the kernel's preamble)
    partitions = {  # the kernel's entry + its worker partitions
        "many_heads_ws": 3,
        "many_heads_seesaw": 2,
        "many_heads_seesaw_persistent": 2,
        "many_heads_seesaw_fp8": 2,
        "many_heads_seesaw_split_q": 2,
        "few_heads_fp8_s1": 3,
        "few_heads_fp8_plan": 3,
        "few_heads_fp8_s2": 2,
        "few_heads_fp8_s3": 2,
        **{f"fp8_mma_s{stages}": 4 for stages in RING_DEPTHS},  # 2 loaders, 1 computing worker
        "fp8_mma_plan": 4,
    }
    for row in report:
        kind = row["kernel"]
        expected = partitions.get(kind, 1)
        assert row["pdl_waits"] >= expected, row


def test_outputs_leave_in_16_byte_stores(report: list[dict[str, Any]]):
    # compiled with the divisibility a launch gives its pointers and strides, each thread's
    # consecutive output features leave in 16-byte stores (the fp8 tensor-core kernel: 16
    # features of a head a thread, ``_as_o``), not one 4-byte store a feature
    for row in report:
        if row["kernel"].startswith("fp8_mma"):
            assert row["wide_stores"] >= 16, row


@pytest.mark.parametrize(
    ("batch", "s_q", "h_q", "splits", "programs"),
    [
        (128, 1, 128, 1, 66),  # 128 items a row block, 66 fit the H200: persistent
        (128, 2, 128, 1, 33),  # causal s_q 2: four row blocks of 33 programs
        (64, 1, 128, 1, None),  # 64 items: one wave, a program each
        (1, 1, 128, 64, None),  # one sequence's 64 splits: one wave
        (1, 1, 128, 100, 66),  # ... 100 splits: persistent
        (32, 1, 64, 8, None),  # several splits and sequences: balanced splits, one wave
    ],
)
def test_seesaw_grid_is_persistent_past_one_wave(
    batch: int, s_q: int, h_q: int, splits: int, programs: int | None, monkeypatch
):
    import torch

    from mlafleet.kernels import mla_decode_hopper_seesaw as seesaw
    from mlafleet.kernels.decode_checks import check_decode_args
    from mlafleet.kernels.device_limits import DeviceLimits

    h200 = DeviceLimits("sm_90", 132, 232448, 65536, 32)
    monkeypatch.setattr(seesaw, "limits_for", lambda device: h200)
    args = check_decode_args(
        torch.empty(batch, s_q, h_q, 576, dtype=torch.bfloat16),
        torch.empty(8, 64, 1, 576, dtype=torch.bfloat16),
        torch.zeros(batch, 4, dtype=torch.int32),
        torch.full((batch,), 64, dtype=torch.int32),
        head_dim_v=512,
        softmax_scale=None,
        causal=s_q > 1,
        kv_scale=None,
        out=None,
    )
    assert seesaw.persistent_programs(args, splits) == programs
