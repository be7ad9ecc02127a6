"""A few decode and prefill calls for ``compute-sanitizer`` (run by ``gpu_sanitizer.sh``).

Each case runs a kernel (Triton, or on sm_90 the Gluon kernels) on a CUDA GPU and checks
it against the fp32 reference, so the sanitizer sees real launches over real shapes: empty and
ragged sequences, page sizes 1 to 256, split KV, multi-token causal decode, fp8 KV, grouped
heads, varlen causal/non-causal prefill.
Run with ``PYTORCH_NO_CUDA_MEMORY_CACHING=1`` so every tensor is its own allocation and memcheck
catches any access past it.

    python tests/reliability/sanitizer_cases.py          # the cases (exit 1 on a wrong answer)
    python tests/reliability/sanitizer_cases.py --list   # their names
    python tests/reliability/sanitizer_cases.py --skip-warp-specialised   # all but those kernels
    python tests/reliability/sanitizer_cases.py --only=NAME,NAME           # just these

Works from a plain checkout: without an installed ``mlafleet``, a temporary ``mlafleet`` folder
with a symlink to ``kernels/`` is put on ``sys.path``.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def _import_kernels() -> None:
    try:
        import mlafleet.kernels  # noqa: F401
    except ImportError:
        shim = Path(tempfile.mkdtemp(prefix="mlafleet-shim-")) / "mlafleet"
        shim.mkdir()
        (shim / "kernels").symlink_to(ROOT / "kernels")
        sys.path.insert(0, str(shim.parent))


_import_kernels()

import torch  # noqa: E402

from mlafleet.kernels import mla_decode, mla_prefill  # noqa: E402
from mlafleet.kernels.configs import (  # noqa: E402
    DecodeConfig,
    DecodeProblem,
    PrefillConfig,
    PrefillProblem,
)
from mlafleet.kernels.decode_inputs import make_decode_inputs, run_decode_ref  # noqa: E402
from mlafleet.kernels.decode_tuning import default_decode_config  # noqa: E402
from mlafleet.kernels.device_limits import limits_for  # noqa: E402
from mlafleet.kernels.prefill_inputs import make_prefill_inputs, run_prefill_ref  # noqa: E402
from mlafleet.kernels.prefill_tuning import default_prefill_config  # noqa: E402
from mlafleet.kernels.registry import TOLERANCES  # noqa: E402


def _decode(problem: DecodeProblem, config: DecodeConfig | None) -> Callable[[], str]:
    # an fp8 q (problem.q_dtype): the fp8 tensor-core kernels on sm_90 (p in e4m3 in the
    # few-heads one: looser check)
    q_fp8 = problem.q_dtype is not None

    def run() -> str:
        inputs = make_decode_inputs(problem, device="cuda", seed=1)
        cfg = config or default_decode_config(problem, limits_for(torch.device("cuda")))
        out, lse = mla_decode(**inputs, config=cfg)
        ref_out, ref_lse = run_decode_ref(inputs)
        torch.cuda.synchronize()
        if q_fp8:
            return _compare(out, lse, ref_out, ref_lse, FP8_MMA_TOLERANCE, lse_tol=2e-2)
        return _compare(out, lse, ref_out, ref_lse, TOLERANCES[problem.dtype])

    return run


def _prefill(
    problem: PrefillProblem, lengths: list[tuple[int, int]], config: PrefillConfig | None
) -> Callable[[], str]:
    def run() -> str:
        inputs = make_prefill_inputs(problem, device="cuda", seed=1, lengths=lengths)
        cfg = config or default_prefill_config(problem, limits_for(torch.device("cuda")))
        out, lse = mla_prefill(**inputs, config=cfg)
        ref_out, ref_lse = run_prefill_ref(inputs)
        torch.cuda.synchronize()
        return _compare(out, lse, ref_out, ref_lse, TOLERANCES[problem.dtype])

    return run


FP8_MMA_TOLERANCE = (5e-2, 5e-2)  # q and p in e4m3 (mla_decode_hopper_fp8_mma)


def _compare(
    out: Any,
    lse: Any,
    ref_out: Any,
    ref_lse: Any,
    tolerance: tuple[float, float],
    lse_tol: float = 1e-3,
) -> str:
    atol, rtol = tolerance
    if torch.isnan(out).any():
        return "NaN in out"
    try:
        torch.testing.assert_close(out.float(), ref_out.float(), atol=atol, rtol=rtol)
        torch.testing.assert_close(lse, ref_lse, atol=lse_tol, rtol=1e-3)
    except AssertionError as exc:
        return str(exc).splitlines()[0]
    return ""


DS = {"d_qk": 576, "d_v": 512}
# The warp-specialised Gluon decode kernels pass values between their warpgroups through shared
# memory behind mbarriers (mla_decode_hopper_ws) or named barriers (mla_decode_hopper_seesaw,
# the sm_90 default for 64+ heads); racecheck reports those hand-offs (docs/kernels/NOTES.md,
# variants 15, 18 and 19), so gpu_sanitizer.sh runs these cases under memcheck only.
WS_CASES = (
    "decode-gluon-ws-64heads-mtp2-causal-split3",
    "decode-gluon-seesaw-64heads-mtp2-causal-split3",
    "decode-gluon-seesaw-128heads-pairs",
    "decode-gluon-fp8-seesaw-64heads-mtp2-causal-split3",  # the same hand-offs, fp8 scores
    # the paired fp8 few-heads kernel (the sm_90 default for 16-48 heads with an fp8 cache):
    # racecheck reports its score-half exchange between the two computing warpgroups, the
    # same class of report (docs/kernels/NOTES.md, variant 35)
    "decode-gluon-fp8-pair-32heads-split3",
)
CASES: dict[str, Callable[[], str]] = {
    "decode-deepseek-ragged-p64": _decode(
        DecodeProblem(batch=4, s_q=1, h_q=16, seqlen=257, page_size=64, dtype="bf16",
                      seqlens=(0, 1, 100, 257), **DS), None),
    "decode-split4-p16": _decode(
        DecodeProblem(batch=2, s_q=1, h_q=32, seqlen=300, page_size=16, dtype="bf16",
                      seqlens=(300, 17), **DS), DecodeConfig(64, 32, 4, 2, 4)),
    "decode-mtp2-causal-p1": _decode(
        DecodeProblem(batch=2, s_q=2, h_q=16, seqlen=40, page_size=1, dtype="fp16",
                      causal=True, seqlens=(1, 40), **DS), None),
    # fp8 KV, 16 heads: on sm_90 the single-consumer Gluon kernel (2-tile ring; racecheck-clean)
    "decode-fp8-p256": _decode(
        DecodeProblem(batch=2, s_q=1, h_q=16, seqlen=300, page_size=256, dtype="bf16",
                      kv_dtype="fp8_e4m3", seqlens=(300, 5), **DS), DecodeConfig(16, 64, 8, 2)),
    "decode-gluon-64heads-mtp2-causal-split3": _decode(
        DecodeProblem(batch=4, s_q=2, h_q=64, seqlen=257, page_size=64, dtype="bf16",
                      causal=True, seqlens=(0, 1, 100, 257), **DS), DecodeConfig(64, 64, 8, 2, 3)),
    "decode-gluon-128heads-fp8-p128": _decode(
        DecodeProblem(batch=2, s_q=1, h_q=128, seqlen=300, page_size=128, dtype="bf16",
                      kv_dtype="fp8_e4m3", seqlens=(300, 5), **DS), None),
    "decode-gluon-ws-64heads-mtp2-causal-split3": _decode(
        DecodeProblem(batch=4, s_q=2, h_q=64, seqlen=257, page_size=64, dtype="bf16",
                      causal=True, seqlens=(0, 1, 100, 257), **DS), DecodeConfig(64, 32, 8, 4, 3)),
    "decode-gluon-seesaw-64heads-mtp2-causal-split3": _decode(
        DecodeProblem(batch=4, s_q=2, h_q=64, seqlen=257, page_size=64, dtype="bf16",
                      causal=True, seqlens=(0, 1, 100, 257), **DS), DecodeConfig(64, 64, 8, 1, 3)),
    "decode-gluon-seesaw-128heads-pairs": _decode(
        DecodeProblem(batch=2, s_q=1, h_q=128, seqlen=1000, page_size=64, dtype="bf16",
                      seqlens=(1000, 449), **DS), DecodeConfig(64, 64, 8, 1, 1)),
    # the warp-specialised fp8 few-heads kernel (3-stage ring): tails, an empty sequence, splits
    "decode-gluon-fp8-32heads-split3": _decode(
        DecodeProblem(batch=3, s_q=1, h_q=32, seqlen=300, page_size=64, dtype="bf16",
                      kv_dtype="fp8_e4m3", seqlens=(300, 0, 65), **DS),
        DecodeConfig(16, 64, 8, 3, 3)),
    # the paired fp8 few-heads kernel (two computing warpgroups exchanging score halves
    # through shared memory, two working tiles): tails, an empty sequence, splits
    "decode-gluon-fp8-pair-32heads-split3": _decode(
        DecodeProblem(batch=3, s_q=1, h_q=32, seqlen=300, page_size=64, dtype="bf16",
                      kv_dtype="fp8_e4m3", seqlens=(300, 0, 65), **DS),
        DecodeConfig(16, 64, 8, 1, 3)),
    # fp8 q over an fp8 cache: the fp8 tensor-core kernel (two warpgroups on alternate tiles
    # with v^T from registers, a loader warp, the merge through a ring slot): tails, an empty
    # sequence, splits, causal s_q 2
    "decode-gluon-fp8-mma-32heads-mtp2-split3": _decode(
        DecodeProblem(batch=3, s_q=2, h_q=32, seqlen=300, page_size=64, dtype="bf16",
                      kv_dtype="fp8_e4m3", q_dtype="fp8_e4m3", causal=True,
                      seqlens=(300, 0, 65), **DS),
        DecodeConfig(16, 64, 8, 1, 3)),
    # fp8 q over an fp8 cache at 64+ heads, the default config: the fp8 seesaw (fp8 scores,
    # p @ v from converted fp16 copies of v): tails, an empty sequence, splits, causal s_q 2
    "decode-gluon-fp8-seesaw-64heads-mtp2-causal-split3": _decode(
        DecodeProblem(batch=4, s_q=2, h_q=64, seqlen=257, page_size=64, dtype="bf16",
                      kv_dtype="fp8_e4m3", q_dtype="fp8_e4m3", causal=True,
                      seqlens=(0, 1, 100, 257), **DS),
        DecodeConfig(64, 64, 8, 1, 3)),
    # fp8 q where no kernel computes on it (the lockstep kernel's config): the one-pass
    # dequantisation (kernels/fp8_q.py), then the lockstep fp8-cache kernel; and with small
    # dims a q of 2304 values (a masked partial block) before the Triton kernel
    "decode-gluon-fp8q-64heads-dequantised": _decode(
        DecodeProblem(batch=3, s_q=1, h_q=64, seqlen=300, page_size=64, dtype="bf16",
                      kv_dtype="fp8_e4m3", q_dtype="fp8_e4m3", seqlens=(300, 0, 65), **DS),
        DecodeConfig(64, 64, 8, 2)),
    "decode-fp8q-dequantised-small-dims": _decode(
        DecodeProblem(batch=3, s_q=1, h_q=8, seqlen=70, d_qk=96, d_v=64, page_size=16,
                      dtype="bf16", kv_dtype="fp8_e4m3", q_dtype="fp8_e4m3",
                      seqlens=(70, 0, 33)), None),
    "decode-gluon-32heads-mtp2-split2": _decode(
        DecodeProblem(batch=2, s_q=2, h_q=32, seqlen=200, page_size=64, dtype="fp16",
                      causal=True, seqlens=(200, 63), **DS), DecodeConfig(16, 64, 4, 2, 2)),
    "decode-gqa-hkv2-small-dims": _decode(
        DecodeProblem(batch=3, s_q=1, h_q=8, h_kv=2, seqlen=70, d_qk=96, d_v=64,
                      page_size=16, dtype="fp16", seqlens=(70, 0, 33)), None),
    "prefill-deepseek-varlen-causal": _prefill(
        PrefillProblem(batch=3, seqlen_q=100, seqlen_k=130, h=16, dtype="bf16", causal=True),
        [(0, 0), (17, 17), (100, 130)], None),
    "prefill-gqa-noncausal": _prefill(
        PrefillProblem(batch=2, seqlen_q=65, seqlen_k=65, h=8, h_k=2, dtype="fp16",
                       causal=False),
        [(65, 65), (3, 40)], PrefillConfig(64, 32, 4, 2)),
    "prefill-gluon-128rows-bottom-right": _prefill(
        PrefillProblem(batch=3, seqlen_q=200, seqlen_k=330, h=4, dtype="bf16", causal=True),
        [(200, 330), (0, 9), (130, 130)], PrefillConfig(128, 128, 8, 2)),
    # a config the Gluon kernel does not take (32-row blocks): the Triton kernel on sm_90
    "prefill-triton-varlen-causal": _prefill(
        PrefillProblem(batch=2, seqlen_q=90, seqlen_k=90, h=4, dtype="bf16", causal=True),
        [(90, 90), (33, 50)], PrefillConfig(32, 32, 4, 2)),
}  # fmt: skip


def main(argv: list[str]) -> int:
    if "--list" in argv:
        sys.stdout.write("\n".join(CASES) + "\n")
        return 0
    if not torch.cuda.is_available():
        sys.stderr.write("no CUDA GPU: these cases are for compute-sanitizer on a GPU\n")
        return 2
    failed = 0
    skip = set(WS_CASES) if "--skip-warp-specialised" in argv else set()
    only = next((a.split("=", 1)[1].split(",") for a in argv if a.startswith("--only=")), None)
    for name, case in CASES.items():
        if name in skip or (only is not None and name not in only):
            continue
        problem = case()
        sys.stdout.write(f"{name}: {problem or 'ok'}\n")
        failed += bool(problem)
    sys.stdout.flush()
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
