"""Cost and quality of tuning ``mla_decode`` with the worker (ANCHORS.md shapes).

For one shape per run (``--shape mem``: batch 64, 16 heads, 4096 tokens, memory-bound;
``--shape compute``: batch 128, 128 heads, 4096 tokens, arithmetic-bound; ``--shape tiny``:
a CPU-interpreter smoke run), bf16, page size 64 (``fp8q-mem``, ``fp8q-short``: 64 x 4096
and 128 x 1024 at 16 heads with an fp8 q and cache):

1. an exhaustive sweep of the pruned space: wall time, how much was compilation (the summed
   per-config compile time, and the wall time of the parallel compile phase), timing time;
   the winner against the default config;
2. the winner and the default timed again in a fresh timing process (run-to-run agreement);
3. the model-based strategy (``tpe``) with a budget of a quarter of the space: how close its
   winner is to the exhaustive one.

Run each shape in its own process with its own ``TRITON_CACHE_DIR`` so compile times are cold:
    TRITON_CACHE_DIR=/tmp/tc_mem python3 bench/bench_tuning.py --shape mem --out mem.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _namespace() -> None:
    """Make ``mlafleet.kernels``/``mlafleet.worker`` importable from a plain checkout, also in
    the worker's child processes (a folder of links on ``sys.path`` and ``PYTHONPATH``)."""
    try:
        import mlafleet.worker  # noqa: F401

        return
    except ImportError:
        pass
    top = Path(tempfile.mkdtemp(prefix="mlafleet-ns-"))
    (top / "mlafleet").mkdir()
    for name in ("kernels", "worker"):
        (top / "mlafleet" / name).symlink_to(ROOT / name)
    sys.path.insert(0, str(top))
    os.environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(top), os.environ.get("PYTHONPATH")])
    )


_namespace()

from mlafleet.kernels.configs import DecodeProblem  # noqa: E402
from mlafleet.kernels.registry import get_kernel  # noqa: E402
from mlafleet.worker.device import fingerprint, limits_of  # noqa: E402
from mlafleet.worker.schemas import TrialResult, TuneResult  # noqa: E402
from mlafleet.worker.sweep import Sweeper, SweepOptions, default_compile_workers  # noqa: E402
from mlafleet.worker.timing import TimingOptions  # noqa: E402
from mlafleet.worker.tune import tune  # noqa: E402

SHAPES = {
    "mem": DecodeProblem(batch=64, s_q=1, h_q=16, seqlen=4096, page_size=64, dtype="bf16"),
    "compute": DecodeProblem(batch=128, s_q=1, h_q=128, seqlen=4096, page_size=64, dtype="bf16"),
    "tiny": DecodeProblem(batch=1, s_q=1, h_q=16, seqlen=64, page_size=16, dtype="fp16"),
    # FlashMLA's fp8 interface (fp8 q and cache): on sm_90 the winner may be the fp8
    # tensor-core kernel, ~1e-2 off where the configs that dequantise q are ~3e-3 off
    "fp8q-mem": DecodeProblem(
        batch=64, s_q=1, h_q=16, seqlen=4096, **DecodeProblem.dtypes_of("fp8_e4m3_qkv")
    ),
    "fp8q-short": DecodeProblem(
        batch=128, s_q=1, h_q=16, seqlen=1024, **DecodeProblem.dtypes_of("fp8_e4m3_qkv")
    ),
}


def _counts(trials: list[TrialResult]) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in trials:
        out[t.status.value] = out.get(t.status.value, 0) + 1
    return out


def _summary(result: TuneResult) -> dict[str, Any]:
    compile_sum = sum(t.compile_s or 0.0 for t in result.trials)
    return {
        "strategy": result.strategy,
        "trials": len(result.trials),
        "counts": _counts(result.trials),
        "wall_s": result.wall_s,
        "compile_wall_s": result.compile_wall_s,
        "compile_sum_s": compile_sum,
        "timing_wall_s": result.timing_wall_s,
        "best_config": result.best.config if result.best else None,
        "best_us": result.best.median_us if result.best else None,
        "best_spread": result.best.timing.spread if result.best and result.best.timing else None,
        "best_method": result.best.timing.method if result.best and result.best.timing else None,
        "default_config": result.default.config if result.default else None,
        "default_us": result.default.median_us if result.default else None,
        "speedup_vs_default": result.speedup_vs_default,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="mem")
    parser.add_argument("--out", type=Path, default=None, help="JSON file of all numbers")
    parser.add_argument("--workers", type=int, default=None, help="compile processes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-tpe", action="store_true", help="the exhaustive sweep only")
    args = parser.parse_args()

    problem = SHAPES[args.shape]
    spec = get_kernel("mla_decode")
    dev = fingerprint(0)
    space = spec.fn("search_space")(problem, limits_of(dev))
    options = SweepOptions(
        compile_workers=args.workers,
        compile_timeout_s=180.0,
        run_timeout_s=90.0,
        validation_seeds=2,
        seed=args.seed,
        timing=TimingOptions(max_time_s=3.0),
    )
    report: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "command": " ".join(sys.argv),
        "device": dev.model_dump(mode="json"),
        "cpu_cores": os.cpu_count(),
        "compile_workers": args.workers or default_compile_workers(),
        "shape": args.shape,
        "problem": problem.as_dict(),
        "space": len(space),
    }

    def save() -> None:
        if args.out is not None:
            args.out.write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")

    def log(text: str) -> None:
        print(f"[{args.shape} {time.strftime('%H:%M:%S')}] {text}", flush=True)

    log(f"{dev.name} {dev.arch}, {len(space)} configs in the pruned space")
    exhaustive = tune(
        "mla_decode", problem, strategy="exhaustive", options=options, device=dev, seed=args.seed
    )
    report["exhaustive"] = _summary(exhaustive)
    report["exhaustive_trials"] = [
        {
            "config": t.config,
            "status": t.status.value,
            "median_us": t.median_us,
            "compile_s": t.compile_s,
            "error": t.error[:300],
            "rel_l2": t.validation.rel_l2_err if t.validation else None,
        }
        for t in exhaustive.trials
    ]
    save()
    log(f"exhaustive: {json.dumps(report['exhaustive'])}")

    if exhaustive.best is not None and exhaustive.default is not None:
        best_cfg = spec.config_from_dict(exhaustive.best.config)
        default_cfg = spec.config_from_dict(exhaustive.default.config)
        with Sweeper(spec, problem, dev, options) as sweeper:
            again = sweeper.run([best_cfg, default_cfg])
        rep_best, rep_default = (t.median_us for t in again)
        report["repeat"] = {
            "best_us": rep_best,
            "default_us": rep_default,
            "best_change": rep_best / exhaustive.best.median_us - 1.0 if rep_best else None,
            "default_change": (
                rep_default / exhaustive.default.median_us - 1.0
                if rep_default and exhaustive.default.median_us
                else None
            ),
        }
        save()
        log(f"repeat: {json.dumps(report['repeat'])}")

    if args.no_tpe:
        return
    budget = max(1, len(space) // 4)
    model = tune(
        "mla_decode",
        problem,
        strategy="tpe",
        budget_trials=budget,
        options=options,
        device=dev,
        seed=args.seed,
    )
    report["tpe"] = _summary(model) | {"budget_trials": budget}
    if model.best is not None and exhaustive.best is not None:
        same_run = {json.dumps(t.config, sort_keys=True): t.median_us for t in exhaustive.trials}
        tpe_in_exhaustive = same_run.get(json.dumps(model.best.config, sort_keys=True))
        report["tpe"]["vs_exhaustive_best"] = model.best.median_us / exhaustive.best.median_us
        report["tpe"]["its_config_in_exhaustive_run_vs_best"] = (
            tpe_in_exhaustive / exhaustive.best.median_us if tpe_in_exhaustive else None
        )
    save()
    log(f"tpe: {json.dumps(report['tpe'])}")


if __name__ == "__main__":
    main()
