"""``bench/bench_decode.py``'s command line, as far as it runs without a GPU."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "bench_decode.py"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )


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
