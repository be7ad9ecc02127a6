"""``bench/bench_fp8_q.py``'s command line without a GPU: it imports, and says what it needs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "bench_fp8_q.py"


def test_needs_a_gpu():
    done = subprocess.run(
        [sys.executable, str(SCRIPT)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "bench_fp8_q: needs a CUDA GPU" in done.stderr
    assert "Traceback" not in done.stderr
