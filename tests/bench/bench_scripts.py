"""Run a ``bench/`` script as a user would: a subprocess of this Python, from the checkout."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"
"""The repo's ``bench/`` folder."""


def run_script(name: str, *args: str, gpu: bool = False) -> subprocess.CompletedProcess[str]:
    """``python bench/<name> <args>``, output captured; the GPU hidden unless ``gpu``."""
    env = dict(os.environ) if gpu else {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run(
        [sys.executable, str(BENCH / name), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
