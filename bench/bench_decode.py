"""Benchmark ``mla_decode`` on a GPU over the decode shapes of ANCHORS.md.

For every shape: fresh random inputs (pages shuffled, padding NaN), a correctness check of each
variant against the fp32 reference (first sequences of the batch; the output buffer is NaN-
poisoned first and must come back finite), the compiler's resource report, then the time of
one call (CUDA graph over inputs rotated past the L2, median of repeats), with GB/s, TFLOP/s
and the ratio to FlashMLA and to the Triton peer's best (ANCHORS.md, same kind of machine).

Run from a checkout (no install needed):
    python3 bench/bench_decode.py --variants default,q64-k32-w8-s2 --out /tmp/decode.json
Variants: ``default`` (the built-in config of the device) or ``q<BQ>-k<BK>-w<W>-s<ST>[-p<SPLITS>]``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

import _path  # noqa: F401  (maps the checkout onto the mlafleet namespace)
import torch
from common import copies_for, gpu_info, rel_l2, time_rotated_us
from telemetry import ClockSampler, Reader

from mlafleet.kernels.configs import FP8_KV, FP8_QKV, DecodeConfig, DecodeProblem
from mlafleet.kernels.decode_checks import check_decode_args, resolve_decode_config
from mlafleet.kernels.decode_inputs import make_decode_inputs
from mlafleet.kernels.decode_plan import plan_decode
from mlafleet.kernels.decode_tuning import (
    default_decode_config,
    query_rows,
    resolve_num_splits,
    why_invalid_decode,
)
from mlafleet.kernels.device_limits import limits_for
from mlafleet.kernels.reference import mla_decode_ref
from mlafleet.worker.device import device_sampler

decode_mod = importlib.import_module("mlafleet.kernels.mla_decode")
hopper_mod = importlib.import_module("mlafleet.kernels.mla_decode_hopper")
DEFER_PV_DEFAULT = hopper_mod.DEFER_PV
BF16_REL_L2_MAX = 1e-2  # bf16 operands land at 1e-3 .. 1e-2 (ANCHORS: 1.7e-3 .. 2.0e-3)
FP8_MMA_REL_L2_MAX = 4e-2  # fp8 q and p on fp8 tensor cores (p's 3-bit mantissa: ~1.3e-2)


@dataclass(frozen=True)
class Anchor:
    """One row of ANCHORS.md's decode table (µs measured there)."""

    name: str
    problem: DecodeProblem
    flashmla_us: float | None
    peer_us: float | None


def _varied_lengths(batch: int, low: int, high: int) -> tuple[int, ...]:
    """``batch`` lengths drawn uniformly from ``[low, high]`` (seed 0)."""
    gen = torch.Generator().manual_seed(0)
    return tuple(int(x) for x in torch.randint(low, high + 1, (batch,), generator=gen))


def _spread_lengths(batch: int, low: int, high: int) -> tuple[int, ...]:
    """``batch`` lengths evenly spread over ``[low, high]``, in a fixed shuffled order: the
    mean of a uniform draw without its luck. ANCHORS.md's varied row (FlashMLA: 57.3 us at
    3008 GB/s, so 172 MB) was timed on a draw of about this many tokens (32 x 1K..8K: 174 MB);
    seed 0's draw holds 17 % more (203 MB: ``b32-h64-varied-seed0``)."""
    gen = torch.Generator().manual_seed(0)
    order = torch.randperm(batch, generator=gen).tolist()
    return tuple(round(low + (high - low) * i / max(batch - 1, 1)) for i in order)


def anchor_shapes(page_size: int) -> list[Anchor]:
    """ANCHORS.md's decode rows (bf16, d_qk 576, d_v 512, h_kv 1)."""

    def p(batch: int, s_q: int, h_q: int, seqlen: int, **kw: Any) -> DecodeProblem:
        return DecodeProblem(
            batch=batch, s_q=s_q, h_q=h_q, seqlen=seqlen, page_size=page_size, **kw
        )

    return [
        Anchor("b64-h16-4k", p(64, 1, 16, 4096), 81.2, 118.4),
        Anchor("b128-h128-4k", p(128, 1, 128, 4096), 228.8, 1560.0),
        Anchor("b128-h128-16k", p(128, 1, 128, 16384), 905.0, 6070.0),
        Anchor("b128-sq2-h128-8k-causal", p(128, 2, 128, 8192, causal=True), 924.0, None),
        Anchor("b1-h128-16k", p(1, 1, 128, 16384), 39.1, 62.2),
        Anchor("b8-h16-32k", p(8, 1, 16, 32768), 82.0, 124.8),
        Anchor(
            "b32-h64-varied",
            p(32, 1, 64, 8192, seqlens=_spread_lengths(32, 1024, 8192)),
            57.3,
            254.9,
        ),
        Anchor("b128-h16-1k", p(128, 1, 16, 1024), 42.1, 72.2),
    ]


def extra_shapes(page_size: int) -> list[Anchor]:
    """Shapes outside ANCHORS.md (run when named in ``--shapes``): uneven lengths at 16 heads
    (64 sequences of 1K..8K tokens, 32 of 1K..32K), where equal splits per sequence leave the
    long ones long splits (docs/kernels/NOTES.md, variants 32-34)."""

    def uneven(batch: int, longest: int) -> Anchor:
        lengths = _varied_lengths(batch, 1024, longest)
        problem = DecodeProblem(
            batch=batch, s_q=1, h_q=16, seqlen=longest, page_size=page_size, seqlens=lengths
        )
        return Anchor(f"b{batch}-h16-varied-{longest // 1024}k", problem, None, None)

    seed0 = DecodeProblem(
        batch=32, s_q=1, h_q=64, seqlen=8192, page_size=page_size,
        seqlens=_varied_lengths(32, 1024, 8192),
    )  # fmt: skip
    # the varied anchor row as timed until the seventh session (17 % more tokens than FlashMLA's)
    return [uneven(64, 8192), uneven(32, 32768), Anchor("b32-h64-varied-seed0", seed0, None, None)]


def smoke_shapes(page_size: int) -> list[Anchor]:
    """Tiny shapes for compute-sanitizer and quick checks."""
    return [
        Anchor(
            "smoke-b2-h16",
            DecodeProblem(
                batch=2, s_q=1, h_q=16, seqlen=300, page_size=page_size, seqlens=(300, 77)
            ),
            None,
            None,
        ),
        Anchor(
            "smoke-b2-sq2-causal",
            DecodeProblem(
                batch=2,
                s_q=2,
                h_q=32,
                seqlen=129,
                page_size=page_size,
                causal=True,
                seqlens=(129, 0),
            ),
            None,
            None,
        ),
    ]


@dataclass(frozen=True)
class Variant:
    """A config to time (None: the device default)."""

    name: str
    config: DecodeConfig | None
    use_tma: bool | None = None  # None: the kernel's own choice (TMA where eligible)
    use_gluon: bool | None = None  # None: the kernel's own choice (Gluon sm_90 where eligible)
    defer_pv: bool | None = None  # Gluon kernel: p @ v behind the next scores (None: default)
    plan: bool = False  # a decode plan per input set (made once, outside the timed calls)


def parse_variant(text: str) -> Variant:
    """``default[-t0][-g0]`` or ``q64-k32-w8-s2[-p4][-t0][-g0]``.

    p: split count; t0/t1: pointer loads / TMA in the Triton kernel; g0/g1: the Triton kernel /
    the Gluon sm_90 kernels; d0/d1: the lockstep Gluon kernel's ``DEFER_PV`` (default: each
    kernel's own choice); n1: calls with a decode plan (``plan_decode``), made once per input
    set outside the timed calls, as a decode step makes one for all its layers. The config
    picks among the Gluon kernels (q64-k32-w8-s4: the warp-specialised one).
    """
    knobs = {part[0]: int(part[1:]) for part in text.split("-") if part != "default"}
    use_tma = None if "t" not in knobs else bool(knobs["t"])
    use_gluon = None if "g" not in knobs else bool(knobs["g"])
    defer_pv = None if "d" not in knobs else bool(knobs["d"])
    plan = bool(knobs.get("n", 0))
    if text.startswith("default"):
        return Variant(text, None, use_tma, use_gluon, defer_pv, plan)
    cfg = DecodeConfig(
        block_size_q=knobs["q"],
        block_size_k=knobs["k"],
        num_warps=knobs["w"],
        num_stages=knobs["s"],
        num_kv_splits=knobs.get("p", "auto"),
    )
    return Variant(text, cfg, use_tma, use_gluon, defer_pv, plan)


def _fit_to_problem(cfg: DecodeConfig, problem: DecodeProblem) -> DecodeConfig:
    rows = max(16, 1 << max(0, (query_rows(problem) - 1).bit_length()))
    return replace(cfg, block_size_q=min(cfg.block_size_q, rows))


_PLANS: dict[tuple[int, DecodeConfig], tuple[torch.Tensor, Any]] = {}
"""Plans by (id of the lengths tensor, config); the tensor is kept so its id is not reused."""


def _call(inputs: dict[str, Any], cfg: DecodeConfig, variant: Variant, **kw: Any) -> Any:
    """``mla_decode`` with the variant's kernel / TMA choices forced where it sets them."""
    hopper_mod.DEFER_PV = DEFER_PV_DEFAULT if variant.defer_pv is None else variant.defer_pv
    if variant.plan:  # made on the first (eager, untimed) call of these inputs
        lengths = inputs["cache_seqlens"]
        key = (id(lengths), cfg)
        if key not in _PLANS:
            _PLANS[key] = (lengths, plan_decode(**inputs, config=cfg))
        return decode_mod.mla_decode(**inputs, config=cfg, plan=_PLANS[key][1], **kw)
    if variant.use_tma is None and variant.use_gluon is None:
        return decode_mod.mla_decode(**inputs, config=cfg, **kw)
    args = check_decode_args(**{"out": None, **inputs, **kw})
    cfg, splits = resolve_decode_config(args, cfg)
    use_gluon = variant.use_gluon
    if use_gluon is None and variant.use_tma is not None:
        use_gluon = False  # a TMA choice names the Triton kernel
    return decode_mod._launch(args, cfg, splits, use_tma=variant.use_tma, use_gluon=use_gluon)


def _check(
    inputs: dict[str, Any], cfg: DecodeConfig, nb: int, variant: Variant
) -> dict[str, float]:
    q = inputs["q"]
    out_dtype = torch.bfloat16 if inputs.get("q_scale") is not None else q.dtype
    out = torch.full(
        (*q.shape[:3], inputs["head_dim_v"]), float("nan"), dtype=out_dtype, device=q.device
    )
    got, lse = _call(inputs, cfg, variant, out=out)
    torch.cuda.synchronize()
    sub = dict(
        inputs,
        q=q[:nb],
        block_table=inputs["block_table"][:nb],
        cache_seqlens=inputs["cache_seqlens"][:nb],
    )
    ref, ref_lse = mla_decode_ref(**sub)
    lengths = inputs["cache_seqlens"].tolist()
    unwritten = bool(torch.isnan(got).any())
    return {
        "rel_l2": rel_l2(got[:nb], ref),
        "lse_max_abs": float((lse[:nb] - ref_lse).abs().nan_to_num(0.0, 0.0, 0.0).max()),
        "nan_in_out": float(unwritten),
        "checked_seqs": float(nb),
        "min_len": float(min(lengths)),
    }


def bench_shape(
    anchor: Anchor,
    variants: list[Variant],
    *,
    kv_fp8: bool,
    check_seqs: int,
    time_it: bool,
    all_bq: bool,
    q_fp8: bool = False,
    warmup_ms: float = 20.0,
    load_ms: float = 0.0,
    clock_reader: Reader | None = None,
) -> list[dict[str, Any]]:
    """Check and time ``variants`` of ``anchor``: one row each (``_fmt`` prints it). With
    ``clock_reader`` (``worker.device.device_sampler``) a timed row also carries the SM clock,
    power and clock-event reasons its timings ran under (``clock``)."""
    precision = (FP8_QKV if q_fp8 else FP8_KV) if kv_fp8 else anchor.problem.dtype
    problem = replace(anchor.problem, **DecodeProblem.dtypes_of(precision))
    limits = limits_for("cuda")

    def make(seed: int) -> dict[str, Any]:
        return make_decode_inputs(problem, device="cuda", seed=seed)

    first = make(1)
    q_bytes = first["q"].numel() * first["q"].element_size() + first["q"].numel() * 2 * 512 / 576
    bytes_call = problem.kv_bytes() + q_bytes
    copies = copies_for(int(bytes_call)) if time_it else 1
    inputs = [first] + [make(2 + i) for i in range(copies - 1)]
    rows: list[dict[str, Any]] = []
    seen: set[tuple[Any, ...]] = set()
    default = default_decode_config(problem, limits)
    for variant in variants:
        cfg = default if variant.config is None else _fit_to_problem(variant.config, problem)
        key = (cfg, variant.use_tma, variant.use_gluon, variant.defer_pv, variant.plan)
        if key in seen or (not all_bq and cfg.block_size_q != default.block_size_q):
            continue
        seen.add(key)
        row: dict[str, Any] = {
            "shape": anchor.name,
            "kv": ("fp8q" if q_fp8 else "fp8") if kv_fp8 else "bf16",
            "variant": variant.name,
            "config": asdict(cfg),
            "problem": problem.as_dict(),
            "splits": resolve_num_splits(cfg, problem, limits),
            "why_invalid": why_invalid_decode(cfg, problem, limits),
        }
        try:
            t0 = time.perf_counter()
            row.update(_check(first, cfg, min(check_seqs, problem.batch), variant))
            row["tma"] = decode_mod.LAST_COMPILED.get("decode_tma")
            row["engine"] = decode_mod.LAST_COMPILED.get("decode_engine")
            row["kernel"] = decode_mod.LAST_COMPILED.get("decode_kernel")
            row["compile_s"] = time.perf_counter() - t0
            kernel = decode_mod.LAST_COMPILED.get("decode")
            if kernel is not None:
                row["n_regs"] = kernel.n_regs
                row["n_spills"] = kernel.n_spills
                row["shared"] = kernel.metadata.shared
            if time_it:
                calls = [lambda inp=inp, cfg=cfg, v=variant: _call(inp, cfg, v) for inp in inputs]
                clock = ClockSampler(clock_reader) if clock_reader is not None else None
                timing = time_rotated_us(calls, warmup_ms=warmup_ms, load_ms=load_ms,
                                         clock=clock)  # fmt: skip
                row.update(us=timing.median_us, spread=timing.spread(), copies=timing.copies)
                if timing.clock is not None:
                    row["clock"] = timing.clock
                row.update(samples_us=list(timing.samples_us), warmup_ms=warmup_ms,
                           load_ms=load_ms)  # fmt: skip
                row["gbps"] = bytes_call / timing.median_us / 1e3
                row["tflops"] = problem.flops() / timing.median_us / 1e6
                if anchor.flashmla_us:
                    row["vs_flashmla"] = anchor.flashmla_us / timing.median_us
                if anchor.peer_us:
                    row["vs_peer"] = anchor.peer_us / timing.median_us
        except Exception as exc:  # a variant that fails to compile/run is recorded, not fatal
            row["error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
        rows.append(row)
        print(_fmt(row), flush=True)
    del inputs, first
    torch.cuda.empty_cache()
    return rows


def _fmt(row: dict[str, Any]) -> str:
    c = row["config"]
    tag = f"q{c['block_size_q']}-k{c['block_size_k']}-w{c['num_warps']}-s{c['num_stages']}"
    tag += "" if row.get("engine") == "gluon" else "-tma" if row.get("tma") else ""
    tag += "-d1" if "-d1" in row["variant"] else ""
    tag += "-plan" if "-n1" in row["variant"] else ""
    tag += f"-{row['kernel']}" if row.get("kernel", "triton") != "triton" else ""
    head = f"{row['shape']:<26}{row['kv']:<5}{tag:<19}p{row['splits']:<3}"
    if "error" in row:
        return head + " ERROR " + row["error"][:120]
    parts = [
        f"rel {row['rel_l2']:.1e}",
        f"nan {int(row['nan_in_out'])}",
        f"regs {row.get('n_regs')}",
        f"spill {row.get('n_spills')}",
        f"smem {row.get('shared')}",
    ]
    if "us" in row:
        parts += [
            f"{row['us']:8.1f}us",
            f"{row['gbps']:6.0f}GB/s",
            f"{row['tflops']:5.0f}TF",
            f"xFM {row.get('vs_flashmla', math.nan):.2f}",
            f"xPeer {row.get('vs_peer', math.nan):.2f}",
        ]
        if "clock" in row:
            capped = " capped" if row["clock"]["power_capped"] else ""
            parts.append(f"{row['clock']['sm_mhz_median']}MHz{capped}")
    return head + " " + " ".join(parts)


def summarize(rows: list[dict[str, Any]], anchors: list[Anchor]) -> list[dict[str, Any]]:
    """One record per (shape, kv dtype): the best variant (tuned) and the default's time."""
    by_name = {a.name: a for a in anchors}
    out: list[dict[str, Any]] = []
    keys = dict.fromkeys((r["shape"], r["kv"]) for r in rows if "us" in r)
    for shape, kv in keys:
        timed = [r for r in rows if (r["shape"], r["kv"]) == (shape, kv) and "us" in r]
        best = min(timed, key=lambda r: r["us"])
        default = next((r for r in timed if r["variant"] == "default"), None)
        anchor = by_name[shape]
        p = anchor.problem
        out.append(
            {
                "shape": shape,
                "kv": kv,
                "batch": p.batch,
                "s_q": p.s_q,
                "h_q": p.h_q,
                "seqlen": p.seqlen if p.seqlens is None else f"{min(p.seqlens)}..{max(p.seqlens)}",
                "causal": p.causal,
                "tuned_us": best["us"],
                "default_us": default["us"] if default else None,
                "gbps": best["gbps"],
                "tflops": best["tflops"],
                "config": best["config"],
                "tma": best.get("tma"),
                "engine": best.get("engine"),
                "kernel": best.get("kernel"),
                "splits": best["splits"],
                "rel_l2": best["rel_l2"],
                "flashmla_us": anchor.flashmla_us,
                "peer_us": anchor.peer_us,
                "sm_mhz_median": best.get("clock", {}).get("sm_mhz_median"),
                "power_capped": best.get("clock", {}).get("power_capped"),
            }
        )
    return out


def _write(out: str, summary: str, rows: list[dict[str, Any]], pool: list[Anchor]) -> None:
    """The rows (``out``) and one record per shape (``summary``) as JSON, with the device."""
    head = {"device": gpu_info(), "date": time.strftime("%Y-%m-%d"), "command": " ".join(sys.argv)}
    if out:
        with open(out, "w") as fh:
            json.dump({**head, "rows": rows}, fh, indent=1)
    if summary:
        with open(summary, "w") as fh:
            json.dump({**head, "shapes": summarize(rows, pool)}, fh, indent=1)


def max_rel_l2(row: dict[str, Any]) -> float:
    """The relative L2 error a row may have: bf16's, or fp8 tensor cores' for an fp8 q."""
    return FP8_MMA_REL_L2_MAX if row["kv"] == "fp8q" else BF16_REL_L2_MAX


def _duration_ms(text: str) -> float:
    """argparse type: a duration in milliseconds, at least 0."""
    refusal = argparse.ArgumentTypeError(f"expected milliseconds (a number >= 0), got {text!r}")
    try:
        value = float(text)
    except ValueError:
        raise refusal from None
    if not value >= 0:  # (NaN too)
        raise refusal
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--shapes",
        default="anchors",
        help="anchors | smoke | comma-separated anchor names or extra shapes "
        "(b64-h16-varied-8k, b32-h16-varied-32k, b32-h64-varied-seed0)",
    )
    parser.add_argument("--variants", default="default")
    parser.add_argument(
        "--fp8", default="", help="comma-separated shape names (or 'all') also run with fp8 KV"
    )
    parser.add_argument(
        "--kv",
        choices=("all", "bf16", "fp8"),
        default="all",
        help="which cache dtypes to run: fp8 skips the 16-bit rows of the --fp8 shapes",
    )
    parser.add_argument(
        "--q-fp8",
        choices=("no", "also", "only"),
        default="no",
        help="fp8 rows with q quantised to fp8 too (q_scale: fp8 tensor cores on sm_90, kv "
        "'fp8q'): also = besides the 16-bit-q fp8 rows, only = instead of them",
    )
    parser.add_argument("--page-size", type=int, default=64)
    parser.add_argument("--check-seqs", type=int, default=2)
    parser.add_argument("--no-time", action="store_true", help="correctness only")
    parser.add_argument("--out", default="", help="write the rows as JSON here")
    parser.add_argument("--summary", default="", help="write one record per shape here")
    parser.add_argument(
        "--warmup-ms",
        type=_duration_ms,
        default=20.0,
        help="one GPU thread spins this long before each row's timings, so an idle GPU's "
        "clock ramp stays out of them",
    )
    parser.add_argument(
        "--load-ms",
        type=_duration_ms,
        default=0.0,
        help="replay each row's graph this long before its timings instead: the sustained "
        "regime, power management engaged (0: the burst regime ANCHORS.md timed FlashMLA in)",
    )
    parser.add_argument(
        "--all-bq",
        action="store_true",
        help="also time variants whose block_size_q differs from the default's",
    )
    parser.add_argument(
        "--no-clock",
        action="store_true",
        help="do not sample the SM clock, power and clock-event reasons while timing (NVML)",
    )
    args = parser.parse_args(argv)
    pool = smoke_shapes(args.page_size) if args.shapes == "smoke" else anchor_shapes(args.page_size)
    if args.shapes not in ("anchors", "smoke"):
        wanted = set(args.shapes.split(","))
        known = pool + extra_shapes(args.page_size)
        unknown = sorted(wanted - {a.name for a in known})
        if unknown:
            names = ", ".join(a.name for a in known)
            print(f"bench_decode: --shapes: unknown {', '.join(unknown)}; known: {names}",
                  file=sys.stderr)  # fmt: skip
            return 2
        pool = [a for a in known if a.name in wanted]
    if not torch.cuda.is_available():
        print("bench_decode: needs a CUDA GPU", file=sys.stderr)
        return 2
    variants = [parse_variant(v) for v in args.variants.split(",") if v]
    clock_reader = None if args.no_clock else device_sampler(torch.cuda.current_device())
    fp8 = {a.name for a in pool} if args.fp8 == "all" else set(filter(None, args.fp8.split(",")))
    rows: list[dict[str, Any]] = []
    for anchor in pool:
        for kv_fp8 in (False, True) if anchor.name in fp8 else (False,):
            if args.kv != "all" and args.kv != ("fp8" if kv_fp8 else "bf16"):
                continue
            q_kinds = {"no": (False,), "also": (False, True), "only": (True,)}[args.q_fp8]
            for q_fp8 in q_kinds if kv_fp8 else (False,):
                rows += bench_shape(
                    anchor,
                    variants,
                    kv_fp8=kv_fp8,
                    check_seqs=args.check_seqs,
                    time_it=not args.no_time,
                    all_bq=args.all_bq,
                    q_fp8=q_fp8,
                    warmup_ms=args.warmup_ms,
                    load_ms=args.load_ms,
                    clock_reader=clock_reader,
                )
                _write(args.out, args.summary, rows, pool)  # a cut run keeps its rows
    bad = [r for r in rows if "error" in r or r["nan_in_out"] or r["rel_l2"] > max_rel_l2(r)]
    print(f"{len(rows)} rows, {len(bad)} failing correctness or erroring")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
