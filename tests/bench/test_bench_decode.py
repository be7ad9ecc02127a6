"""``bench/bench_decode.py``'s command line, as far as it runs without a GPU."""

from __future__ import annotations

import sys
from functools import partial

from bench_scripts import BENCH, run_script

_run = partial(run_script, "bench_decode.py")


def test_unknown_shape_is_named_with_the_known_ones():
    done = _run("--shapes", "b64-h16-4k,no-such-shape")
    assert done.returncode == 2
    assert "--shapes: unknown no-such-shape" in done.stderr
    assert "b32-h16-varied-32k" in done.stderr  # the extra shapes are listed too
    assert "Traceback" not in done.stderr


def test_known_shapes_need_a_gpu():
    done = _run("--shapes", "b32-h16-varied-32k", "--no-time")
    assert done.returncode == 2
    assert "needs a CUDA GPU" in done.stderr


def test_timing_durations_must_be_milliseconds():
    for flag, value in (("--load-ms", "-5"), ("--warmup-ms", "soon"), ("--load-ms", "nan")):
        done = _run("--shapes", "b64-h16-4k", flag, value)
        assert done.returncode == 2
        assert f"argument {flag}: expected milliseconds (a number >= 0), got {value!r}" in (
            done.stderr
        )
        assert "Traceback" not in done.stderr


def _bench_decode_module():
    sys.path.insert(0, str(BENCH))
    try:
        import bench_decode
    finally:
        sys.path.remove(str(BENCH))
    return bench_decode


def test_varied_anchor_row_holds_the_bytes_flashmla_was_timed_on():
    bench_decode = _bench_decode_module()
    rows = {a.name: a for a in bench_decode.anchor_shapes(64)}
    varied = rows["b32-h64-varied"]
    lengths = varied.problem.lengths()
    assert (min(lengths), max(lengths)) == (1024, 8192)
    assert len(set(lengths)) == 32  # evenly spread, not a repeated length
    q_and_out = 32 * 64 * (576 + 512) * 2
    ours = varied.problem.kv_bytes() + q_and_out
    flashmla = varied.flashmla_us * 3008e3  # ANCHORS.md: 57.3 us at 3008 GB/s
    assert abs(ours / flashmla - 1) < 0.02
    # the earlier draw (seed 0) stays runnable under its own name, 17 % more bytes
    seed0 = {a.name: a for a in bench_decode.extra_shapes(64)}["b32-h64-varied-seed0"]
    assert seed0.problem.kv_bytes() > 1.15 * varied.problem.kv_bytes()
