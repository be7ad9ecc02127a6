"""``bench/bench_fp8_q.py``'s command line without a GPU: it imports, and says what it needs."""

from __future__ import annotations

from bench_scripts import run_script


def test_needs_a_gpu():
    done = run_script("bench_fp8_q.py")
    assert done.returncode == 2, done.stderr
    assert "bench_fp8_q: needs a CUDA GPU" in done.stderr
    assert "Traceback" not in done.stderr
