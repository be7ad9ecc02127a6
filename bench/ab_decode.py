"""Interleaved A/B of a decode kernel variant against main's kernel, on chosen anchor rows.

The candidate is a copy of a kernel module placed under ``kernels/`` (say
``kernels/_v51_fp8_mma.py``, with the original's relative imports) that defines the launcher
``mla_decode`` calls (``--swap``, say ``launch_fp8_mma_decode``). For each round and row the two
launchers take turns (main, candidate, main, candidate): each turn is one row of
``bench_decode.bench_shape``, checked against the fp32 reference first and timed over rotated
inputs after the clock warm-up, so both sides see the same machine state. One process, one
GPU: the comparison NOTES.md's variants were measured with (keep the copy out of commits).

    python3 bench/ab_decode.py --candidate _v51_fp8_mma --swap launch_fp8_mma_decode \\
        --rows b64-h16-4k:fp8q,b8-h16-32k:fp8q,b128-h16-1k:fp8q --rounds 2 --out ab.jsonl

Rows are ``<shape>:<kv>``: an anchor or extra shape of ``bench_decode.py`` and ``bf16``,
``fp8`` (an fp8 cache) or ``fp8q`` (fp8 cache and q). The summary gives, per row, both sides'
times and how many of the pairs the candidate won.

``--ablation``: the candidate leaves work out on purpose (say, the output rescales), so its
output is wrong: its turns are timed anyway and flagged ``wrong`` rather than failed, and the
summary's ``ablation_wrong`` says so; the change then bounds what that work costs.
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import _path  # noqa: F401  (maps the checkout onto the mlafleet namespace)
import bench_decode as bd
import torch
from telemetry import Reader

from mlafleet.worker.device import device_sampler

KV_KINDS = ("bf16", "fp8", "fp8q")
SIDES = ("main", "candidate")


@dataclass(frozen=True)
class Row:
    """One A/B row: a ``bench_decode`` shape and its cache / q precision."""

    shape: str
    kv: str


def parse_rows(text: str, known: Sequence[str]) -> list[Row]:
    """``shape:kv,...`` -> rows.

    Raises:
        ValueError: an entry without ``:``, an unknown shape (the known ones are listed) or kv.
    """
    rows = []
    for entry in filter(None, text.split(",")):
        shape, sep, kv = entry.partition(":")
        if not sep:
            raise ValueError(f"--rows: expected <shape>:<kv>, got {entry!r}")
        if shape not in known:
            raise ValueError(f"--rows: unknown shape {shape!r}; known: {', '.join(known)}")
        if kv not in KV_KINDS:
            raise ValueError(f"--rows: kv of {entry!r}: expected one of {', '.join(KV_KINDS)}")
        rows.append(Row(shape, kv))
    if not rows:
        raise ValueError("--rows: expected at least one <shape>:<kv>")
    return rows


def load_candidate(module: str, swap: str) -> Callable[..., Any]:
    """The candidate launcher: ``swap`` of ``mlafleet.kernels.<module>``, which must also be a
    launcher of ``mla_decode`` (a name its ``_launch`` calls).

    Raises:
        ValueError: the module does not import, or lacks ``swap``, or ``swap`` is not one of
        ``mla_decode``'s launchers.
    """
    if not callable(getattr(bd.decode_mod, swap, None)) or not swap.startswith("launch_"):
        launchers = sorted(n for n in vars(bd.decode_mod) if n.startswith("launch_"))
        raise ValueError(f"--swap: {swap!r} is not a launcher of mla_decode; one of {launchers}")
    try:
        candidate = importlib.import_module(f"mlafleet.kernels.{module}")
    except ImportError as exc:
        raise ValueError(
            f"--candidate: cannot import mlafleet.kernels.{module} ({exc}); put the copy under "
            "kernels/ and give its module name"
        ) from None
    launcher = getattr(candidate, swap, None)
    if not callable(launcher):
        raise ValueError(f"--candidate: mlafleet.kernels.{module} has no {swap}()")
    return launcher


def run_ab(
    rows: Sequence[Row],
    rounds: int,
    use: Callable[[str], None],
    bench_row: Callable[[Row], dict[str, Any]],
    emit: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Every round, every row: ``use(side)`` then ``bench_row(row)`` for main, candidate, main,
    candidate (interleaved, so drifts of the machine hit both sides). Returns the records (the
    bench row with ``round``, ``side`` and ``row``), each also passed to ``emit``; ``use("main")``
    is called last, whatever happens."""
    records = []
    try:
        for round_ in range(rounds):
            for row in rows:
                for side in (*SIDES, *SIDES):
                    use(side)
                    record = {"round": round_, "side": side, "row": f"{row.shape}:{row.kv}"}
                    record.update(bench_row(row))
                    records.append(record)
                    if emit is not None:
                        emit(record)
    finally:
        use("main")
    return records


def summarize_ab(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per row: both sides' times (us) in run order, their medians, the candidate's change in
    percent and how many (main, candidate) pairs it won; a row with a failing turn says so."""
    summary = []
    for row in dict.fromkeys(r["row"] for r in records):
        turns = [r for r in records if r["row"] == row]
        failed = [r for r in turns if "us" not in r or r.get("error")]
        times = {
            side: [r["us"] for r in turns if r["side"] == side and "us" in r] for side in SIDES
        }
        entry: dict[str, Any] = {"row": row, **{f"{s}_us": times[s] for s in SIDES}}
        wrong = sorted({str(r["wrong"]) for r in turns if r.get("wrong")})
        if wrong:  # an ablation's candidate: its change is an upper bound, not a result
            entry["ablation_wrong"] = "; ".join(wrong)
        for side in SIDES:  # the SM clock each side's timings ran at, where it was sampled
            mhz = [r["clock"]["sm_mhz_median"] for r in turns if r["side"] == side and "clock" in r]
            if mhz:
                entry[f"{side}_mhz"] = mhz
        if failed:
            entry["error"] = "; ".join(str(r.get("error", "no time")) for r in failed)
        elif times["main"] and times["candidate"]:
            main, cand = (statistics.median(times[s]) for s in SIDES)
            pairs = list(zip(times["main"], times["candidate"], strict=False))
            entry.update(
                main_median_us=main,
                candidate_median_us=cand,
                change_pct=100.0 * (cand - main) / main,
                candidate_won=f"{sum(c < m for m, c in pairs)} of {len(pairs)}",
            )
        summary.append(entry)
    return summary


def _check_variant(text: str) -> None:
    """``bench_decode``'s variant syntax, or a ValueError that shows it."""
    try:
        bd.parse_variant(text)
    except (KeyError, ValueError):
        raise ValueError(
            f"--variant: expected default or q<BQ>-k<BK>-w<W>-s<ST>[-p<SPLITS>], got {text!r}"
        ) from None


def _bench_row(
    row: Row,
    anchors: dict[str, bd.Anchor],
    variant: str,
    clock_reader: Reader | None = None,
    ablation: bool = False,
) -> dict[str, Any]:
    """One timed turn of ``row`` (``bench_decode.bench_shape``), its output checked: a wrong
    one gets ``error`` (``wrong`` instead with ``ablation``: timed all the same)."""
    (result,) = bd.bench_shape(
        anchors[row.shape],
        [bd.parse_variant(variant)],
        kv_fp8=row.kv != "bf16",
        q_fp8=row.kv == "fp8q",
        check_seqs=2,
        time_it=True,
        all_bq=True,  # (the one variant asked for, whatever its block_size_q)
        clock_reader=clock_reader,
    )
    result["kernel_name"] = bd.decode_mod.LAST_COMPILED.get("decode_kernel")
    wrong = correctness_error(result)
    if wrong and "error" not in result:
        # (a fast candidate that is wrong wins nothing; an ablation is wrong on purpose)
        result["wrong" if ablation else "error"] = wrong
    return result


def correctness_error(result: dict[str, Any]) -> str | None:
    """Why a timed turn's output is wrong (unwritten entries, or an error past its
    precision's bound, as ``bench_decode`` judges its rows), or None."""
    if "rel_l2" not in result:
        return None  # (the turn failed before its check: its own error says why)
    if result.get("nan_in_out"):
        return "wrong: NaN in the output (entries left unwritten)"
    bound = bd.max_rel_l2(result)
    if not result["rel_l2"] <= bound:
        return f"wrong: relative L2 error {result['rel_l2']:.3g} over {bound:.3g}"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidate", required=True, help="module name under kernels/")
    parser.add_argument("--swap", required=True, help="the launcher to replace, by name")
    parser.add_argument("--rows", required=True, help="<shape>:<bf16|fp8|fp8q>,...")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--variant", default="default", help="bench_decode variant of the calls")
    parser.add_argument("--page-size", type=int, default=64)
    parser.add_argument("--out", default="", help="write every turn as a JSON line here")
    parser.add_argument(
        "--no-clock", action="store_true", help="do not sample the SM clock while timing (NVML)"
    )
    parser.add_argument(
        "--ablation",
        action="store_true",
        help="the candidate leaves work out on purpose (its output is wrong): time it anyway, "
        "to bound what that work costs; wrong turns are noted, not failed",
    )
    args = parser.parse_args(argv)
    pool = bd.anchor_shapes(args.page_size) + bd.extra_shapes(args.page_size)
    anchors = {a.name: a for a in pool}
    try:
        if args.rounds < 1:
            raise ValueError(f"--rounds: expected at least 1, got {args.rounds}")
        rows = parse_rows(args.rows, list(anchors))
        _check_variant(args.variant)
        candidate = load_candidate(args.candidate, args.swap)
    except ValueError as exc:
        print(f"ab_decode: {exc}", file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print("ab_decode: needs a CUDA GPU", file=sys.stderr)
        return 2
    launchers = {"main": getattr(bd.decode_mod, args.swap), "candidate": candidate}
    clock_reader = None if args.no_clock else device_sampler(torch.cuda.current_device())
    try:
        out = open(args.out, "w", encoding="utf-8") if args.out else None  # noqa: SIM115
    except OSError as exc:
        print(f"ab_decode: --out: cannot write {args.out} ({exc.strerror})", file=sys.stderr)
        return 2

    def use(side: str) -> None:
        setattr(bd.decode_mod, args.swap, launchers[side])

    def emit(record: dict[str, Any]) -> None:
        us = record.get("us", float("nan"))
        line = f"{record['round']} {record['row']:28s} {record['side']:9s} {us:9.2f} us"
        if "clock" in record:
            line += f" {record['clock']['sm_mhz_median']} MHz"
        print(line, record.get("error", record.get("wrong", "")), flush=True)
        if out is not None:
            out.write(json.dumps(record) + "\n")
            out.flush()

    try:
        records = run_ab(
            rows,
            args.rounds,
            use,
            lambda row: _bench_row(row, anchors, args.variant, clock_reader, args.ablation),
            emit,
        )
    finally:
        if out is not None:
            out.close()
    summary = summarize_ab(records)
    for entry in summary:
        print(json.dumps(entry))
    return 1 if any("error" in entry for entry in summary) else 0


if __name__ == "__main__":
    sys.exit(main())
