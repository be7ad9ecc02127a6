"""Benchmark ``mla_prefill`` on a GPU: correctness at full size, then timings vs torch SDPA.

Runs from an installed mlafleet or from a plain checkout (it then links the checkout's
``kernels/`` into a temporary ``mlafleet`` package). Steps, all in one process:
1. correctness in the given dtype against the fp32 reference (relative L2 error of ``out``,
   max |lse| error, NaN check) on DeepSeek-size shapes, for every config timed;
2. timings over the ANCHORS prefill shapes (causal, 128 heads, d_qk 192, d_v 128) for each
   config: ``triton.testing.do_bench`` median, TFLOP/s counting the causal half;
3. torch SDPA on the same shapes (cuDNN backend when available), timed the same way.
Prefill at these sizes is bound by arithmetic (hundreds of FLOPs per byte), so no L2 rotation.

Usage:
    python3 bench/bench_prefill.py [--configs 128x128x8x2,128x64x8x3t,...] [--out FILE.json]
        [--md FILE.md]   (suffix t: the Triton kernel, p: Triton with pointer loads,
                          g: the Gluon sm_90 kernel; none: as the launcher picks)
    python3 bench/bench_prefill.py --smoke   # tiny shapes on the CPU interpreter (tests the script)
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
ANCHOR_SHAPES = [(1, 4096), (4, 4096), (1, 16384)]  # batch x seqlen, ANCHORS.md
CUDNN_ANCHOR_TFLOPS = {(1, 4096): 599, (4, 4096): 538, (1, 16384): 585}
DEFAULT_CONFIGS = (
    "128x128x8x2,128x64x8x3,128x64x8x4,64x64x4x2,64x128x4x2,64x64x4x3,128x64x8x3t,128x64x8x3p"
)


def _import_mlafleet() -> None:
    """Make ``mlafleet.kernels`` importable from a plain checkout (no install needed)."""
    try:
        import mlafleet.kernels  # noqa: F401

        return
    except ImportError:
        pass
    root = Path(tempfile.mkdtemp(prefix="mlafleet_path_"))
    pkg = root / "mlafleet"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "kernels").symlink_to(REPO / "kernels", target_is_directory=True)
    sys.path.insert(0, str(root))


_SUFFIX_OPTIONS: dict[str, dict[str, Any]] = {
    "": {},  # as the launcher picks (sm_90: the Gluon kernel when it takes the config)
    "t": {"use_gluon": False},  # the Triton kernel (TMA loads on sm_90+)
    "p": {"use_gluon": False, "use_tma": False},  # the Triton kernel, pointer loads
    "g": {"use_gluon": True},  # the Gluon sm_90 kernel, or an error
}


def _parse_configs(text: str) -> list[tuple[str, Any, dict[str, Any]]]:
    """``BQxBKxWARPSxSTAGES[t|p|g]`` -> ``(name, config, launch options)`` (``_SUFFIX_OPTIONS``)."""
    from mlafleet.kernels.configs import PrefillConfig

    configs = []
    for item in filter(None, text.split(",")):
        body = item.rstrip("tpg")
        suffix = item[len(body) :]
        if suffix not in _SUFFIX_OPTIONS:
            raise SystemExit(f"--configs: unknown suffix {suffix!r} in {item!r}; use t, p or g")
        bq, bk, w, s = (int(x) for x in body.split("x"))
        cfg = PrefillConfig(block_size_q=bq, block_size_k=bk, num_warps=w, num_stages=s)
        configs.append((item, cfg, dict(_SUFFIX_OPTIONS[suffix])))
    return configs


def _args(inputs: dict[str, Any]) -> Any:
    from mlafleet.kernels.prefill_args import check_prefill_args

    return check_prefill_args(
        inputs["q"],
        inputs["k"],
        inputs["v"],
        inputs["cu_seqlens_q"],
        inputs["cu_seqlens_k"],
        inputs["max_seqlen_q"],
        inputs["max_seqlen_k"],
        causal=inputs["causal"],
        softmax_scale=inputs["softmax_scale"],
    )


def _rel_l2(out: Any, ref: Any) -> float:
    diff = (out.float() - ref.float()).norm()
    return float(diff / ref.float().norm().clamp_min(1e-30))


def check_correctness(
    problems: list[tuple[str, Any, dict[str, Any]]],
    configs: list[tuple[str, Any, dict[str, Any]]],
    device: str,
) -> list[dict[str, Any]]:
    """Configs against the fp32 reference on each problem (a problem's ``max_configs`` limits
    how many, to save compile time); returns one record each."""
    import torch

    from mlafleet.kernels.mla_prefill import _launch
    from mlafleet.kernels.prefill_inputs import make_prefill_inputs, run_prefill_ref

    records = []
    for seed, (label, problem, kwargs) in enumerate(problems):
        kwargs = dict(kwargs)
        limit = kwargs.pop("max_configs", len(configs))
        inputs = make_prefill_inputs(problem, device=device, seed=seed, **kwargs)
        ref_out, ref_lse = run_prefill_ref(inputs)
        finite = torch.isfinite(ref_lse)
        for name, cfg, launch_opts in configs[:limit]:
            rec: dict[str, Any] = {"problem": label, "config": name}
            try:
                out, lse, _ = _launch(_args(inputs), cfg, **launch_opts)
                rec["rel_l2_out"] = _rel_l2(out, ref_out)
                rec["max_abs_lse"] = float((lse[finite] - ref_lse[finite]).abs().max())
                rec["nan_out"] = bool(torch.isnan(out).any())
                rec["lse_inf_match"] = bool(torch.equal(torch.isinf(lse), ~finite))
                rec["ok"] = (
                    rec["rel_l2_out"] < 1e-2
                    and rec["max_abs_lse"] < 5e-2
                    and not rec["nan_out"]
                    and rec["lse_inf_match"]
                )
            except Exception as exc:  # recorded, the sweep goes on
                rec.update(ok=False, error=f"{type(exc).__name__}: {exc}"[:300])
            records.append(rec)
            if "error" in rec:
                detail = rec["error"]
            else:
                detail = (
                    f"rel_l2={rec['rel_l2_out']:.2e} lse_err={rec['max_abs_lse']:.1e} "
                    f"ok={rec['ok']}"
                )
            print(f"check {label:<28} {rec['config']:<12} {detail}", flush=True)
        del inputs, ref_out, ref_lse
    return records


def _bench(fn: Any, *, rep_ms: int) -> float:
    """Median ms of ``fn``: ``do_bench`` (CUDA events) on a GPU, a host clock under --smoke."""
    import statistics

    import triton

    if os.environ.get("TRITON_INTERPRET") == "1":
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(times)
    return float(
        triton.testing.do_bench(fn, warmup=max(rep_ms // 4, 5), rep=rep_ms, return_mode="median")
    )


def time_configs(
    shapes: list[tuple[int, int]],
    configs: list[Any],
    *,
    device: str,
    dtype: str,
    rep_ms: int,
    heads: int = 128,
) -> list[dict[str, Any]]:
    """Median time of each config (and of torch SDPA) on each causal anchor shape."""
    import torch

    from mlafleet.kernels.configs import PrefillProblem
    from mlafleet.kernels.mla_prefill import LAST_COMPILED, _launch
    from mlafleet.kernels.prefill_inputs import make_prefill_inputs

    records = []
    for batch, seqlen in shapes:
        problem = PrefillProblem(
            batch=batch,
            seqlen_q=seqlen,
            seqlen_k=seqlen,
            h=heads,
            d_qk=192,
            d_v=128,
            dtype=dtype,
            causal=True,
        )  # type: ignore[arg-type]
        inputs = make_prefill_inputs(problem, device=device, seed=batch * seqlen)
        # contiguous copies: the NaN-padded views of make_prefill_inputs are for correctness
        for key in ("q", "k", "v"):
            inputs[key] = inputs[key].contiguous()
        args = _args(inputs)
        flops = problem.flops()
        for name, cfg, launch_opts in configs:
            rec: dict[str, Any] = {
                "batch": batch,
                "seqlen": seqlen,
                "impl": "mla_prefill",
                "config": name,
            }
            try:
                t0 = time.perf_counter()
                _, _, compiled = _launch(args, cfg, **launch_opts)
                torch.cuda.synchronize() if device == "cuda" else None
                rec["first_call_s"] = round(time.perf_counter() - t0, 2)
                rec["kernel"] = LAST_COMPILED.get("prefill_kernel")
                if compiled is not None and hasattr(compiled, "n_regs"):
                    rec["n_regs"] = int(compiled.n_regs)
                    rec["n_spills"] = int(compiled.n_spills)
                    rec["shared_bytes"] = int(compiled.metadata.shared)
                    rec["wgmma"] = "wgmma" in compiled.asm.get("ptx", "")
                ms = _bench(lambda a=args, c=cfg, o=launch_opts: _launch(a, c, **o), rep_ms=rep_ms)
                rec.update(median_ms=ms, tflops=flops / ms / 1e9)
            except Exception as exc:
                rec.update(error=f"{type(exc).__name__}: {exc}"[:300])
            records.append(rec)
            if "error" in rec:
                detail = rec["error"]
            else:
                detail = (
                    f"{rec['median_ms']:.3f} ms {rec['tflops']:.0f} TFLOP/s "
                    f"regs={rec.get('n_regs')} spills={rec.get('n_spills')} "
                    f"smem={rec.get('shared_bytes')} wgmma={rec.get('wgmma')} "
                    f"kernel={rec.get('kernel')}"
                )
            print(f"time {batch}x{seqlen:<6} {rec['config']:<12} {detail}", flush=True)
        records.append(_time_sdpa(batch, seqlen, inputs, flops, device=device, rep_ms=rep_ms))
        del inputs, args
    return records


def _time_sdpa(
    batch: int, seqlen: int, inputs: dict[str, Any], flops: int, *, device: str, rep_ms: int
) -> dict[str, Any]:
    """torch SDPA (cuDNN backend first, then whatever torch picks) on the same data."""
    import torch.nn.functional as F  # noqa: N812
    from torch.nn.attention import SDPBackend, sdpa_kernel

    def to_bhsd(x: Any) -> Any:
        return x.view(batch, seqlen, x.shape[1], x.shape[2]).transpose(1, 2)

    q, k, v = (to_bhsd(inputs[name]) for name in ("q", "k", "v"))
    rec: dict[str, Any] = {"batch": batch, "seqlen": seqlen, "impl": "torch_sdpa"}
    backends = [("cudnn", [SDPBackend.CUDNN_ATTENTION])] if device == "cuda" else []
    backends.append(
        (
            "default",
            [
                SDPBackend.CUDNN_ATTENTION,
                SDPBackend.FLASH_ATTENTION,
                SDPBackend.EFFICIENT_ATTENTION,
                SDPBackend.MATH,
            ],
        )
    )
    for name, allowed in backends:
        try:
            with sdpa_kernel(allowed):
                fn = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True)  # noqa: E731
                fn()
                ms = _bench(fn, rep_ms=rep_ms)
            rec.update(backend=name, median_ms=ms, tflops=flops / ms / 1e9)
            break
        except Exception as exc:
            rec[f"error_{name}"] = f"{type(exc).__name__}: {exc}"[:300]
    print(
        f"time {batch}x{seqlen:<6} sdpa/{rec.get('backend')} "
        f"{rec.get('median_ms', float('nan')):.3f} ms {rec.get('tflops', 0):.0f} TFLOP/s",
        flush=True,
    )
    return rec


def markdown_table(timings: list[dict[str, Any]]) -> str:
    """One row per shape: best config, its time/TFLOP/s, every config's TFLOP/s, SDPA."""
    shapes = sorted({(r["batch"], r["seqlen"]) for r in timings}, key=lambda s: s[0] * s[1])
    configs = list(dict.fromkeys(r["config"] for r in timings if r["impl"] == "mla_prefill"))
    head = [
        "batch x seqlen",
        "best config",
        "ms",
        "TFLOP/s",
        *configs,
        "torch SDPA ms (TFLOP/s)",
        "ours / SDPA",
        "cuDNN in ANCHORS",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for batch, seqlen in shapes:
        rows = [r for r in timings if (r["batch"], r["seqlen"]) == (batch, seqlen)]
        ours = {r["config"]: r for r in rows if r["impl"] == "mla_prefill" and "tflops" in r}
        sdpa = next((r for r in rows if r["impl"] == "torch_sdpa"), {})
        best = max(ours.values(), key=lambda r: r["tflops"], default=None)
        cells = [f"{batch} x {seqlen}"]
        if best:
            cells += [best["config"], f"{best['median_ms']:.3f}", f"{best['tflops']:.0f}"]
        else:
            cells += ["-", "-", "-"]
        cells += [f"{ours[c]['tflops']:.0f}" if c in ours else "fail" for c in configs]
        if "median_ms" in sdpa:
            cells.append(f"{sdpa['median_ms']:.3f} ({sdpa['tflops']:.0f}, {sdpa['backend']})")
            cells.append(f"{sdpa['median_ms'] / best['median_ms']:.2f}x" if best else "-")
        else:
            cells += ["-", "-"]
        cells.append(str(CUDNN_ANCHOR_TFLOPS.get((batch, seqlen), "-")))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--configs", default=DEFAULT_CONFIGS, help="comma-separated BQxBKxWARPSxSTAGES"
    )
    parser.add_argument("--out", default=str(REPO / "bench/results/h200_prefill.json"))
    parser.add_argument("--md", default="", help="also write the markdown table here")
    parser.add_argument("--rep-ms", type=int, default=200)
    parser.add_argument("--smoke", action="store_true", help="tiny shapes, CPU interpreter")
    opts = parser.parse_args()
    if opts.smoke:
        os.environ["TRITON_INTERPRET"] = "1"
    _import_mlafleet()
    import torch
    import triton

    from mlafleet.kernels.configs import PrefillProblem

    device = "cpu" if opts.smoke else "cuda"
    dtype = "fp16" if opts.smoke else "bf16"
    configs = _parse_configs("16x16x4x1,32x16x4x1p" if opts.smoke else opts.configs)
    if opts.smoke:
        h, seq, shapes = 2, 40, [(1, 33), (2, 20)]
    else:
        h, seq, shapes = 128, 4096, ANCHOR_SHAPES
    problems: list[tuple[str, PrefillProblem, dict[str, Any]]] = [
        (
            f"1x{seq} causal",
            PrefillProblem(batch=1, seqlen_q=seq, seqlen_k=seq, h=h, dtype=dtype),
            {},
        ),
        (
            f"varlen 4x~{seq // 2} k+{seq // 4} causal",
            PrefillProblem(
                batch=4, seqlen_q=seq // 2, seqlen_k=seq // 2 + seq // 4, h=h, dtype=dtype
            ),
            {"varlen": True},
        ),
        (
            f"varlen 3x~{seq // 2} gqa h_k=h/8 noncausal",
            PrefillProblem(
                batch=3,
                seqlen_q=seq // 2,
                seqlen_k=seq // 2,
                h=max(h, 8),
                h_k=max(h, 8) // 8,
                dtype=dtype,
                causal=False,
            ),
            {"varlen": True, "max_configs": 2},
        ),
    ]
    started = time.time()
    env = {
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu-interpreter",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python3", *sys.argv]),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "cudnn": torch.backends.cudnn.version() if device == "cuda" else None,
    }
    print(json.dumps(env), flush=True)
    checks = check_correctness(problems, configs, device)
    timings = time_configs(shapes, configs, device=device, dtype=dtype, rep_ms=opts.rep_ms, heads=h)
    table = markdown_table(timings)
    print(table)
    result = {
        "env": env,
        "correctness": checks,
        "timings": timings,
        "table_md": table,
        "wall_s": round(time.time() - started, 1),
    }
    Path(opts.out).parent.mkdir(parents=True, exist_ok=True)
    Path(opts.out).write_text(json.dumps(result, indent=1))
    if opts.md:
        Path(opts.md).write_text(table + "\n")
    print(f"wrote {opts.out} in {result['wall_s']} s")


if __name__ == "__main__":
    main()
