"""What an fp8 q costs the decode kernels that compute in 16 bits (64+ heads, other GPUs).

There, ``mla_decode`` turns the fp8 q into bf16 before the kernel (``kernels/fp8_q.py``). For
each shape (an fp8 cache, 64-128 heads) this times, in CUDA graphs over input copies larger
than L2 (``common.time_rotated_us``):

- the dequantisation alone: the one-pass Triton kernel (``fp8_q.dequantise_q``) and the three
  PyTorch ops it replaced (``(q.float() * q_scale).bfloat16()``), and whether they agree bitwise;
- ``mla_decode`` with the fp8 q, with each of the two dequantisations (``torch_ops``: the old
  path, patched in), against the same call given the bf16 q directly.

    python3 bench/bench_fp8_q.py --out bench/results/raw/h200_fp8_q.json
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from dataclasses import replace
from typing import Any

import _path  # noqa: F401
import torch
from common import copies_for, gpu_info, time_rotated_us

from mlafleet.kernels import fp8_q, mla_decode
from mlafleet.kernels.configs import DecodeProblem
from mlafleet.kernels.decode_checks import DecodeArgs
from mlafleet.kernels.decode_inputs import make_decode_inputs

SHAPES = [(128, 128, 4096), (128, 128, 1024), (1, 128, 16384), (32, 64, 4096)]
"""(batch, heads, KV length): ANCHORS.md's 128-head rows and a 64-head one."""


def _torch_ops(args: DecodeArgs) -> DecodeArgs:
    """The dequantisation ``fp8_q`` replaced: fp32 temporaries, three kernels."""
    if args.q_scale is None:
        return args
    q = (args.q.float() * args.q_scale.float().reshape(())).to(torch.bfloat16)
    return replace(args, q=q, q_scale=None)


def bench(batch: int, heads: int, seqlen: int) -> dict[str, Any]:
    problem = DecodeProblem(
        batch=batch, s_q=1, h_q=heads, seqlen=seqlen, **DecodeProblem.dtypes_of("fp8_e4m3_qkv")
    )
    copies = copies_for(problem.kv_bytes() + batch * heads * 576 * 3)
    inputs = [make_decode_inputs(problem, device="cuda", seed=i) for i in range(copies)]
    q, q_scale = inputs[0]["q"], inputs[0]["q_scale"]
    row: dict[str, Any] = {"batch": batch, "heads": heads, "seqlen": seqlen, "copies": copies}
    row["bitwise_equal"] = bool(
        torch.equal(fp8_q.dequantise_q(q, q_scale), (q.float() * q_scale).to(torch.bfloat16))
    )
    row["pass_triton_us"] = time_rotated_us(
        [lambda i=i: fp8_q.dequantise_q(i["q"], i["q_scale"]) for i in inputs]
    ).median_us
    row["pass_torch_ops_us"] = time_rotated_us(
        [lambda i=i: (i["q"].float() * i["q_scale"]).to(torch.bfloat16) for i in inputs]
    ).median_us
    module = importlib.import_module("mlafleet.kernels.mla_decode")
    for name, dequantise in (("triton", fp8_q.dequantised_q), ("torch_ops", _torch_ops)):
        module.dequantised_q = dequantise  # type: ignore[attr-defined]
        try:
            calls = [lambda i=i: mla_decode(**i) for i in inputs]
            row[f"call_fp8q_{name}_us"] = time_rotated_us(calls).median_us
        finally:
            module.dequantised_q = fp8_q.dequantised_q  # type: ignore[attr-defined]
    bf16 = [{**i, "q": fp8_q.dequantise_q(i["q"], i["q_scale"]), "q_scale": None} for i in inputs]
    row["call_bf16q_us"] = time_rotated_us([lambda i=i: mla_decode(**i) for i in bf16]).median_us
    row["fp8q_overhead"] = row["call_fp8q_triton_us"] / row["call_bf16q_us"] - 1.0
    row["fp8q_overhead_torch_ops"] = row["call_fp8q_torch_ops_us"] / row["call_bf16q_us"] - 1.0
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="", help="write the rows as JSON here")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench_fp8_q: needs a CUDA GPU", file=sys.stderr)
        return 2
    rows = []
    for shape in SHAPES:
        rows.append(bench(*shape))
        print(json.dumps(rows[-1]), flush=True)
        torch.cuda.empty_cache()
    if args.out:
        with open(args.out, "w") as fh:
            json.dump({"device": gpu_info(), "command": " ".join(sys.argv), "rows": rows}, fh)
    return 0 if all(r["bitwise_equal"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
