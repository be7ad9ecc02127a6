"""Compile the Gluon sm_90 kernels without a GPU and report their resources as JSON.

Triton compiles for a target it is told about (``GPUTarget("cuda", 90, 32)``) with its own
ptxas; ``cuobjdump`` (shipped in Triton's wheel too) gives the registers, the stack (spills) and
the SASS. Run by ``test_mla_decode_hopper.py`` in a child process, since the CPU test run sets
``TRITON_INTERPRET=1`` and the interpreter cannot compile::

    python tests/kernels/sm90_compile_report.py             # decode: a JSON line per variant
    python tests/kernels/sm90_compile_report.py few_heads_fp8   # only the variants of a kind
    python tests/kernels/sm90_compile_report.py --prefill   # prefill: a JSON line per config
    python tests/kernels/sm90_compile_report.py many_heads_seesaw --sass out/sass
        # ... and each variant's SASS, addresses and encodings stripped, into out/sass: diff
        # two checkouts' files to see whether a refactor changed the code a kernel runs
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from collections import Counter
from functools import partial
from pathlib import Path
from typing import Any

os.environ.pop("TRITON_INTERPRET", None)

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.experimental.gluon._runtime import GluonASTSource
from triton.runtime.jit import mangle_type

from mlafleet.kernels import (
    mla_decode_hopper,
    mla_decode_hopper_few,
    mla_decode_hopper_few_fp8,
    mla_decode_hopper_fp8_mma,
    mla_decode_hopper_seesaw,
    mla_decode_hopper_seesaw_fp8,
    mla_decode_hopper_ws,
    mla_prefill_hopper,
    mla_prefill_hopper_ws,
)
from mlafleet.kernels.configs import DecodeConfig, PrefillConfig
from mlafleet.kernels.decode_checks import DecodeArgs
from mlafleet.kernels.gluon_launch import SplitOutputs
from mlafleet.kernels.prefill_args import PrefillArgs

BIN = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"


class _Capture:
    """Stands in for a kernel object: records the launch arguments instead of launching."""

    def __init__(self) -> None:
        self.args: tuple[Any, ...] = ()
        self.kwargs: dict[str, Any] = {}

    def __getitem__(self, grid: Any) -> Any:
        def launch(*args: Any, **kwargs: Any) -> None:
            self.args, self.kwargs = args, kwargs

        return launch


def _args(h_q: int, s_q: int, fp8: bool, q_fp8: bool = False, batch: int = 2) -> DecodeArgs:
    kv_dtype = torch.float8_e4m3fn if fp8 else torch.bfloat16
    return DecodeArgs(
        q=torch.empty(batch, s_q, h_q, 576, dtype=torch.float8_e4m3fn if q_fp8 else torch.bfloat16),
        kv_cache=torch.empty(8, 64, 1, 576, dtype=kv_dtype),
        block_table=torch.zeros(batch, 4, dtype=torch.int32),
        cache_seqlens=torch.zeros(batch, dtype=torch.int32),
        kv_scale=torch.ones(1) if fp8 else None,
        out=None,
        head_dim_v=512,
        d_pe=64,
        h_kv=1,
        softmax_scale=576**-0.5,
        causal=s_q > 1,
        q_scale=torch.ones(1) if q_fp8 else None,
    )


def _compile(module: Any, name: str, launch: Any) -> dict[str, Any]:
    kernel = getattr(module, name)
    capture = _Capture()
    setattr(module, name, capture)
    try:
        launch()
    finally:
        setattr(module, name, kernel)
    kwargs = dict(capture.kwargs)
    options = {"num_warps": kwargs.pop("num_warps"), "num_stages": 1}
    if "maxnreg" in kwargs:
        options["maxnreg"] = kwargs.pop("maxnreg")
    signature, constexprs, attrs = {}, {}, {}
    for index, arg_name in enumerate(kernel.arg_names):
        value = kwargs.get(arg_name, capture.args[index] if index < len(capture.args) else None)
        # Triton specializes integer arguments equal to 1 as constants, as a launch would
        if arg_name in kwargs or (type(value) is int and value == 1):
            signature[arg_name] = "constexpr"
            constexprs[(index,)] = value
        else:
            signature[arg_name] = mangle_type(capture.args[index])
            if _divisible_by_16(value):  # as a launch marks them (16-byte vector accesses)
                attrs[(index,)] = [["tt.divisibility", 16]]
    source = GluonASTSource(fn=kernel, signature=signature, constexprs=constexprs, attrs=attrs)
    compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32), options=options)
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as fh:
        fh.write(compiled.asm["cubin"])
    try:
        usage = subprocess.run(
            [str(BIN / "cuobjdump"), "-res-usage", fh.name], capture_output=True, text=True
        ).stdout
        sass = subprocess.run(
            [str(BIN / "cuobjdump"), "-sass", fh.name], capture_output=True, text=True
        ).stdout
    finally:
        os.unlink(fh.name)
    registers = int(re.search(r"REG:(\d+)", usage).group(1))  # type: ignore[union-attr]
    serialized = _wgmma_serialized(compiled.asm["ptx"])
    stack = int(re.search(r"STACK:(\d+)", usage).group(1))  # type: ignore[union-attr]
    mma = Counter(re.findall(r"[HQ]GMMA\.(\d+x\d+x\d+)", sass))
    return {
        "registers": registers,
        "stack_bytes": stack,
        "shared_bytes": compiled.metadata.shared,
        "wgmma": dict(mma),
        # programmatic dependent launch: the waits before the first global access (kernel
        # entry and each worker partition)
        "pdl_waits": compiled.asm["ptx"].count("griddepcontrol.wait"),
        "wgmma_serialized": serialized,
        # 16-byte global accesses (with the divisibility a launch gives, as above)
        "wide_loads": len(re.findall(r"LDG\.E\.128", sass)),
        "wide_stores": len(re.findall(r"STG\.E\.128", sass)),
        "sass": sass,  # (the variant's caller writes it with --sass, and drops it)
    }


SASS_DIR: Path | None = None
"""Where ``--sass`` writes each compiled variant's SASS (None: nowhere)."""


def _write_sass(sass: str, variant: str) -> None:
    """Write ``variant``'s SASS (``normalized_sass``) into ``SASS_DIR``, if set."""
    if SASS_DIR is not None:
        SASS_DIR.mkdir(parents=True, exist_ok=True)
        (SASS_DIR / f"{variant}.sass").write_text(normalized_sass(sass))


def normalized_sass(sass: str) -> str:
    """``cuobjdump -sass`` output reduced to its instructions, one a line, without addresses
    and encodings: two compiles of the same code give the same text."""
    instructions = []
    for line in sass.splitlines():
        line = line.strip()
        if line.startswith("/*") and not line.startswith("/* 0x"):
            instructions.append(re.sub(r"^/\*[0-9a-f]+\*/\s*", "", line).split(";")[0].strip())
    return "\n".join(instructions) + "\n"


def _divisible_by_16(value: Any) -> bool:
    """Whether a launch would mark this argument ``tt.divisibility = 16``: a tensor whose
    address is (a CPU tensor stands in for a CUDA one, allocated 16-byte aligned) or a nonzero
    integer that is."""
    if isinstance(value, torch.Tensor):
        return value.data_ptr() % 16 == 0
    return type(value) is int and value != 0 and value % 16 == 0


def _wgmma_serialized(ptx: str) -> bool:
    """Whether ptxas serialises the kernel's wgmma (its info C7515: a register of an in-flight
    accumulator defined by another instruction, e.g. on a path around a loop that keeps an MMA
    in flight across iterations; it made the fp8 tensor-core kernel 1.4x slower, NOTES.md)."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "kernel.ptx"
        src.write_text(ptx)
        done = subprocess.run(
            [str(BIN / "ptxas"), "-arch=sm_90a", "-v", str(src), "-o", str(src.with_suffix(".o"))],
            capture_output=True,
            text=True,
        )
    return "C7515" in done.stdout + done.stderr


def _variant(kernel: str, fp8: bool, s_q: int, splits: int) -> dict[str, Any]:
    h_q = 16 if kernel.startswith(("few_heads", "fp8_mma")) else 128
    # the seesaw kernel's grid is persistent with more (sequence, split) items than a row
    # block's programs fit the GPU at once (here the interpreter's 2 "SMs": one program a row
    # block) and no balanced splits (several splits and sequences): the plain kind one item a
    # row block (one sequence of one split, or balanced splits), the persistent one four
    # sequences of one split, or one of several
    batch = {
        "many_heads_seesaw": 1 if splits == 1 else 2,
        "many_heads_seesaw_persistent": 4 if splits == 1 else 1,
    }
    args = _args(h_q, s_q, fp8, q_fp8=kernel.startswith(("fp8_mma", "many_heads_seesaw_fp8")),
                 batch=batch.get(kernel, 2))  # fmt: skip
    out = torch.empty(args.q.shape[0], s_q, h_q, splits, 512)
    lse = torch.empty(args.q.shape[0], s_q, h_q, splits)
    outputs = SplitOutputs(out, lse, out.stride()[:4], lse.stride())
    if kernel == "many_heads":
        module, name = mla_decode_hopper, "_mla_decode_hopper_kernel"
        launch = partial(module.launch_hopper_decode, args, splits, outputs)
    elif kernel == "many_heads_ws":
        module, name = mla_decode_hopper_ws, "_mla_decode_ws_kernel"
        launch = partial(module.launch_ws_decode, args, splits, outputs)
    elif kernel in ("many_heads_seesaw", "many_heads_seesaw_persistent"):
        module, name = mla_decode_hopper_seesaw, "_mla_decode_seesaw_kernel"
        launch = partial(module.launch_seesaw_decode, args, splits, outputs)
    elif kernel in ("many_heads_seesaw_fp8", "many_heads_seesaw_split_q"):
        # an fp8 cache and an fp8 q, or a bf16 q split in two fp8 terms
        module, name = mla_decode_hopper_seesaw_fp8, "_mla_decode_seesaw_fp8_kernel"
        launch = partial(module.launch_fp8_seesaw_decode, args, splits, outputs)
    elif kernel == "few_heads_plan":  # one program a work item of a decode plan
        module, name = mla_decode_hopper_few, "_mla_decode_few_heads_kernel"
        config = DecodeConfig(16, 64, 4, 2, "auto")
        work = torch.zeros(132, 8, dtype=torch.int32)
        launch = partial(module.launch_few_heads_decode, args, config, splits, outputs, work)
    elif kernel == "few_heads_fp8_plan":  # the paired fp8 kernel reading a decode plan
        module, name = mla_decode_hopper_few_fp8, "_mla_decode_few_fp8_kernel"
        config = DecodeConfig(*mla_decode_hopper_few_fp8.KNOBS, 1, "auto")
        work = torch.zeros(132, 8, dtype=torch.int32)
        launch = partial(module.launch_few_fp8_decode, args, config, splits, outputs, work)
    elif kernel.startswith("fp8_mma"):  # "fp8_mma_s<stages>" or "fp8_mma_plan"
        module, name = mla_decode_hopper_fp8_mma, "_mla_decode_fp8_mma_kernel"
        plan = kernel.endswith("_plan")
        stages = 1 if plan else int(kernel.rsplit("_s", 1)[1])
        config = DecodeConfig(*mla_decode_hopper_fp8_mma.KNOBS, stages, splits)
        work = torch.zeros(132, 8, dtype=torch.int32) if plan else None
        launch = partial(module.launch_fp8_mma_decode, args, config, splits, outputs, work)
    elif kernel.startswith("few_heads_fp8"):  # "few_heads_fp8_s<stages>"
        module, name = mla_decode_hopper_few_fp8, "_mla_decode_few_fp8_kernel"
        stages = int(kernel.rsplit("_s", 1)[1])
        config = DecodeConfig(*mla_decode_hopper_few_fp8.KNOBS, stages, splits)
        launch = partial(module.launch_few_fp8_decode, args, config, splits, outputs)
    else:
        module, name = mla_decode_hopper_few, "_mla_decode_few_heads_kernel"
        config = DecodeConfig(16, 64, 4, 2, splits)
        launch = partial(module.launch_few_heads_decode, args, config, splits, outputs)
    found = _compile(module, name, launch)
    _write_sass(found.pop("sass"), f"{kernel}_{'fp8' if fp8 else 'bf16'}_sq{s_q}_p{splits}")
    return {"kernel": kernel, "fp8": fp8, "s_q": s_q, "splits": splits, **found}


KINDS = (
    ("many_heads", False),
    ("many_heads", True),
    ("many_heads_ws", False),
    ("many_heads_seesaw", False),
    ("many_heads_seesaw_persistent", False),
    ("many_heads_seesaw_fp8", True),
    ("many_heads_seesaw_split_q", True),
    ("few_heads", False),
    ("few_heads", True),
    ("few_heads_plan", False),
    ("few_heads_fp8_s1", True),
    ("few_heads_fp8_plan", True),
    ("few_heads_fp8_s2", True),
    ("few_heads_fp8_s3", True),
    ("fp8_mma_s1", True),
    ("fp8_mma_s2", True),
    ("fp8_mma_plan", True),
)
"""(kernel, fp8 cache) pairs the launcher can pick (fp8 with 64+ heads: the lockstep kernel;
``fp8_mma`` and ``many_heads_seesaw_fp8``: an fp8 q too)."""


def report(kinds: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Every Gluon variant the launcher can pick (or those of ``kinds``): (kernel, kv dtype,
    causal s_q 2 + splits)."""
    return [
        _variant(kernel, fp8, s_q, splits)
        for kernel, fp8 in KINDS
        if not kinds or any(kernel.startswith(kind) for kind in kinds)
        for s_q, splits in ((1, 1), (2, 3))
    ]


PREFILL_CONFIGS = ("128x128x8x2", "128x64x8x3", "128x64x8x4", "64x128x4x2", "64x64x4x2")


def prefill_report() -> list[dict[str, Any]]:
    """The Gluon prefill kernel at DeepSeek's dims (192 / 128, causal, bf16), per config."""
    tokens, heads = 256, 4
    args = PrefillArgs(
        q=torch.empty(tokens, heads, 192, dtype=torch.bfloat16),
        k=torch.empty(tokens, heads, 192, dtype=torch.bfloat16),
        v=torch.empty(tokens, heads, 128, dtype=torch.bfloat16),
        cu_seqlens_q=torch.zeros(2, dtype=torch.int32),
        cu_seqlens_k=torch.zeros(2, dtype=torch.int32),
        max_seqlen_q=tokens,
        max_seqlen_k=tokens,
        causal=True,
        softmax_scale=192**-0.5,
    )
    out = torch.empty(tokens, heads, 128, dtype=torch.bfloat16)
    lse = torch.empty(heads, tokens)
    rows = []
    for name in PREFILL_CONFIGS:
        bq, bk, warps, stages = (int(x) for x in name.split("x"))
        cfg = PrefillConfig(block_size_q=bq, block_size_k=bk, num_warps=warps, num_stages=stages)
        if mla_prefill_hopper_ws.ws_prefill_config(cfg):
            module, kernel, kind = mla_prefill_hopper_ws, "_mla_prefill_ws_kernel", "prefill_ws"
            launch = partial(module.launch_ws_prefill, args, cfg, out, lse)
        else:
            module, kernel, kind = mla_prefill_hopper, "_mla_prefill_hopper_kernel", "prefill"
            launch = partial(module.launch_hopper_prefill, args, cfg, out, lse)
        found = _compile(module, kernel, launch)
        _write_sass(found.pop("sass"), f"{kind}_{name}")
        rows.append({"kernel": kind, "config": name, **found})
    return rows


if __name__ == "__main__":
    argv = sys.argv[1:]
    if "--sass" in argv:
        at = argv.index("--sass")
        if at + 1 >= len(argv):
            sys.exit("--sass: expected a folder to write the SASS files into")
        SASS_DIR = Path(argv[at + 1])
        del argv[at : at + 2]
    flags = [a for a in argv if a.startswith("--")]
    kinds = tuple(a for a in argv if not a.startswith("--"))
    for row in prefill_report() if "--prefill" in flags else report(kinds):
        sys.stdout.write(json.dumps(row) + "\n")
