"""``bench/probe_tma_stream.py``: its command line without a GPU, and a small run on one."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import torch
from bench_scripts import run_script

_run = partial(run_script, "probe_tma_stream.py")


def test_needs_a_gpu():
    done = _run()
    assert done.returncode == 2, done.stderr
    assert "probe_tma_stream: needs a CUDA GPU with TMA" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--stages", "two"), "expected comma-separated integers, got 'two'"),
        (("--hold-ns", "-5"), "expected non-negative integers"),
        (("--layouts", "fp4"), "unknown layout(s) ['fp4']"),
        (("--tiles", "0"), "must be at least 1"),
        (("--pages", "0"), "must be at least 1"),
        (("--structures", "ws3"), "unknown structure(s) ['ws3']"),
        (("--structures", "ws2", "--stages", "3"), "['ws2'] need an even --stages"),
        (("--structures", "halves", "--pages", "2"), "halves reads one page a tile"),
        (("--skew-ns", "soon"), "expected comma-separated integers, got 'soon'"),
    ],
)
def test_bad_flags_say_what_is_wrong(flags: tuple[str, ...], message: str):
    done = _run(*flags)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr


NEEDS_TMA = pytest.mark.skipif(
    not torch.cuda.is_available() or torch.cuda.get_device_capability()[0] < 9,
    reason="needs a CUDA GPU with TMA (sm_90 or newer)",
)


def _records_on_gpu(tmp_path: Path, *flags: str) -> list[dict[str, Any]]:
    """Run the probe on the GPU with ``flags``; its JSON records."""
    out = tmp_path / "probe.jsonl"
    done = _run(*flags, "--programs", "8", "--out", str(out), gpu=True)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in out.read_text().splitlines()]


@NEEDS_TMA
def test_streams_on_a_gpu(tmp_path: Path):
    flags = ("--layouts", "fp8,bf16", "--stages", "1", "--pages", "1,2", "--tiles", "4")
    records = _records_on_gpu(tmp_path, *flags)
    cases = [(r["layout"], r["pages"], r["stages"]) for r in records]
    assert cases == [("fp8", 1, 1), ("fp8", 2, 1), ("bf16", 1, 1), ("bf16", 2, 1)]
    assert all(r["us"] > 0 and r["tbps"] > 0 and r["copies"] >= 2 for r in records)
    assert [r["kb_a_slot"] for r in records] == [36, 72, 72, 144]


@NEEDS_TMA
def test_the_kernels_structures_stream_on_a_gpu(tmp_path: Path):
    flags = ("--layouts", "fp8", "--stages", "2", "--structures", "ws1,ws2,ws2x2", "--tiles", "7")
    records = _records_on_gpu(tmp_path, *flags)
    assert [r["structure"] for r in records] == ["ws1", "ws2", "ws2x2"]
    assert all(r["us"] > 0 and r["tbps"] > 0 for r in records)


@NEEDS_TMA
def test_split_rows_stream_on_a_gpu(tmp_path: Path):
    # each tile as two column halves, the second half's ring started late or not
    flags = ("--layouts", "bf16", "--stages", "2", "--structures", "single,halves", "--tiles", "5",
             "--skew-ns", "0,800")  # fmt: skip
    records = _records_on_gpu(tmp_path, *flags)
    cases = [(r["structure"], r["skew_ns"]) for r in records]
    assert cases == [("single", 0), ("halves", 0), ("halves", 800)]
    assert all(r["us"] > 0 and r["tbps"] > 0 for r in records)
    assert {r["kb_a_slot"] for r in records} == {72}  # the same bytes either way
