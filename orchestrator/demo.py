"""``mlafleet demo``: the whole product on one machine.

Embedded Ray and SQLite, a small fleet tuning job over the local devices (the GPUs, or the CPU
interpreter with tiny decode shapes and a few configs so it finishes in minutes on two cores),
the recommendations as a table, then the API and the dashboard served until Ctrl-C.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from rich.console import Console
from rich.table import Table

from .config import Settings
from .db import repo
from .db.store import Store
from .jobspec import JobSpec, parse_job_spec
from .runner import Runner
from .schemas import RecommendationPublic

log = logging.getLogger(__name__)

# Tiny MLA decode problems (d_qk 64 latent + 32 rope) that the interpreter runs in seconds.
CPU_JOB: dict[str, Any] = {
    "kind": "tune",
    "name": "demo (CPU interpreter)",
    "kernel": "mla_decode",
    "workloads": {
        "batch": [1],
        "seqlen": [16, 64],
        "heads": [2],
        "dtype": ["fp16"],
        "page_size": [16],
        "d_qk": 96,
        "d_v": 64,
    },
    "archs": "all",
    "strategy": "random",
    "budget": {"trials": 3, "minutes": 2},
}

GPU_JOB: dict[str, Any] = {
    "kind": "tune",
    "name": "demo (DeepSeek decode shapes)",
    "kernel": "mla_decode",
    "workloads": {
        "batch": [1, 32],
        "seqlen": [1024, 8192],
        "heads": [16, 128],
        "dtype": ["bf16"],
        "page_size": [64],
    },
    "archs": "all",
    "strategy": "tpe",
    "budget": {"trials": 16, "minutes": 3},
}


CONFIG_KEYS = ("block_size_q", "block_size_k", "num_warps", "num_stages", "num_kv_splits")
CONFIG_LEGEND = "config = block_size_q/block_size_k/num_warps/num_stages/num_kv_splits"


def demo_spec(*, has_gpu: bool) -> JobSpec:
    """The demo job for this machine."""
    return parse_job_spec(GPU_JOB if has_gpu else CPU_JOB)


def run_demo_job(
    store: Store, settings: Settings, *, spec: JobSpec, timeout_s: float = 600
) -> tuple[int, list[RecommendationPublic]]:
    """Submit ``spec`` and run it to the end on the connected Ray cluster.

    Returns:
        The job id and the recommendations of its kernel.

    Raises:
        TimeoutError: the job did not finish within ``timeout_s``.
    """
    with store.session() as s:
        job = repo.create_job(s, spec=spec)
    runner = Runner(store=store, settings=settings)
    try:
        runner.run_until([job.id], timeout_s=timeout_s)
    finally:
        runner.fleet.shutdown()
    with store.session() as s:
        recs = repo.get_recommendations(s, kernel=spec.kernel)
    return job.id, recs


def recommendations_table(recs: list[RecommendationPublic], *, title: str) -> Table:
    """A rich table of recommendations, one row per arch x workload bucket x software."""
    table = Table(title=title, show_lines=False, caption=CONFIG_LEGEND)
    for name, justify in (
        ("arch", "left"),
        ("workload bucket", "left"),
        ("config", "left"),
        ("median us", "right"),
        ("vs default", "right"),
        ("noise", "right"),
        ("valid", "center"),
    ):
        table.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for r in recs:
        knobs = "/".join(str(r.config.get(k, "-")) for k in CONFIG_KEYS)
        table.add_row(
            r.arch,
            r.bucket.key(),
            knobs,
            f"{r.median_us:,.1f}",
            f"{r.speedup_vs_default:.2f}x" if r.speedup_vs_default else "-",
            f"{r.noise * 100:.0f}%" if r.noise is not None else "-",
            "yes" if r.validated else "no",
        )
    return table


def print_summary(
    console: Console, *, job_id: int, recs: list[RecommendationPublic], wall_s: float
) -> None:
    """The table plus one line of context."""
    console.print(recommendations_table(recs, title=f"Recommended configs (job {job_id})"))
    interp = any(r.arch.startswith("cpu-interpreter") for r in recs)
    console.print(
        f"job {job_id} finished in {wall_s:.0f} s"
        + (" (CPU interpreter: timings check the pipeline, not GPU speed)" if interp else "")
    )


def timed(fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    start = time.monotonic()
    out = fn(*args, **kwargs)
    return out, time.monotonic() - start
