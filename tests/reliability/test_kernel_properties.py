"""Kernels against the fp32 reference over random valid shapes (hypothesis), and every invalid
argument refused with a TypeError/ValueError that names it.

On the CPU the kernels run in Triton's interpreter: tiny head dims, fp16. Decode draws batch,
query tokens, heads, KV heads dividing them, per-sequence lengths (0 included), page sizes,
causal and split counts; prefill draws variable-length packed batches (keys >= 0, empty
sequences included), causal or not, and grouped KV heads. Outputs go into NaN-poisoned inputs
(``make_*_inputs``), so a read outside a sequence shows up as NaN.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlafleet.kernels import mla_decode, mla_prefill
from mlafleet.kernels.configs import DecodeConfig, DecodeProblem, PrefillConfig, PrefillProblem
from mlafleet.kernels.decode_inputs import make_decode_inputs, run_decode_ref
from mlafleet.kernels.prefill_inputs import make_prefill_inputs, run_prefill_ref
from mlafleet.kernels.registry import TOLERANCES

pytestmark = pytest.mark.timeout(900)
LSE_TOL = 1e-3
PROPERTY = settings(
    max_examples=15,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _assert_close(got: tuple[torch.Tensor, torch.Tensor], ref: tuple[Any, Any], what: str) -> None:
    out, lse = got
    ref_out, ref_lse = ref
    atol, rtol = TOLERANCES["fp16"]
    assert out.dtype == torch.float16
    assert not torch.isnan(out).any(), f"{what}: NaN in out"
    torch.testing.assert_close(out.float(), ref_out.float(), atol=atol, rtol=rtol, msg=what)
    torch.testing.assert_close(lse, ref_lse, atol=LSE_TOL, rtol=LSE_TOL, msg=what)


@st.composite
def decode_cases(draw: Any) -> tuple[DecodeProblem, DecodeConfig, int]:
    h_kv = draw(st.sampled_from([1, 1, 2]))
    h_q = h_kv * draw(st.sampled_from([1, 2, 4, 8]))
    batch = draw(st.integers(1, 3))
    s_q = draw(st.integers(1, 2))
    lengths = tuple(draw(st.lists(st.integers(0, 40), min_size=batch, max_size=batch)))
    d_qk, d_v = draw(st.sampled_from([(48, 32), (64, 64), (96, 64)]))
    problem = DecodeProblem(
        batch=batch,
        s_q=s_q,
        h_q=h_q,
        seqlen=max(max(lengths), 1),
        h_kv=h_kv,
        d_qk=d_qk,
        d_v=d_v,
        page_size=draw(st.sampled_from([1, 4, 16, 64])),
        dtype="fp16",
        causal=draw(st.booleans()),
        seqlens=lengths,
    )
    config = DecodeConfig(
        block_size_q=16,
        block_size_k=draw(st.sampled_from([16, 32])),
        num_warps=4,
        num_stages=1,
        num_kv_splits=draw(st.sampled_from([1, 2, 3, "auto"])),
    )
    return problem, config, draw(st.integers(0, 2**31 - 1))


@PROPERTY
@given(case=decode_cases())
def test_decode_matches_the_reference_on_random_shapes(
    case: tuple[DecodeProblem, DecodeConfig, int],
) -> None:
    problem, config, seed = case
    inputs = make_decode_inputs(problem, device=_device(), seed=seed)
    got = mla_decode(**inputs, config=config)
    assert got[0].shape == (problem.batch, problem.s_q, problem.h_q, problem.d_v)
    assert got[1].shape == (problem.batch, problem.h_q, problem.s_q)
    _assert_close(got, run_decode_ref(inputs), f"{problem} {config} seed {seed}")
    for b, length in enumerate(problem.lengths()):  # an empty sequence: zeros and lse -inf
        if length == 0:
            assert torch.all(got[0][b] == 0)
            assert torch.all(got[1][b] == float("-inf"))


@st.composite
def prefill_cases(draw: Any) -> tuple[PrefillProblem, list[tuple[int, int]], PrefillConfig, int]:
    h_k = draw(st.sampled_from([1, 2]))
    h = h_k * draw(st.sampled_from([1, 2]))
    batch = draw(st.integers(1, 3))
    pairs = st.tuples(st.integers(0, 20), st.integers(0, 20))
    lengths = draw(st.lists(pairs, min_size=batch, max_size=batch))
    causal = draw(st.booleans())
    d_qk, d_v = draw(st.sampled_from([(32, 16), (48, 32), (64, 32)]))
    problem = PrefillProblem(
        batch=batch,
        seqlen_q=max(q for q, _ in lengths),
        seqlen_k=max(k for _, k in lengths),
        h=h,
        h_k=h_k,
        d_qk=d_qk,
        d_v=d_v,
        dtype="fp16",
        causal=causal,
    )
    config = PrefillConfig(
        block_size_q=16, block_size_k=draw(st.sampled_from([16, 32])), num_warps=4, num_stages=1
    )
    return problem, lengths, config, draw(st.integers(0, 2**31 - 1))


@PROPERTY
@given(case=prefill_cases())
def test_prefill_matches_the_reference_on_random_varlen_batches(
    case: tuple[PrefillProblem, list[tuple[int, int]], PrefillConfig, int],
) -> None:
    problem, lengths, config, seed = case
    inputs = make_prefill_inputs(problem, device=_device(), seed=seed, lengths=lengths)
    got = mla_prefill(**inputs, config=config)
    total_q = sum(q for q, _ in lengths)
    assert got[0].shape == (total_q, problem.h, problem.d_v)
    assert got[1].shape == (problem.h, total_q)
    _assert_close(got, run_prefill_ref(inputs), f"{problem} {lengths} {config} seed {seed}")


# ------------------------------------------------------------------------------ invalid input

Mutate = Callable[[dict[str, Any]], None]


def _decode_inputs() -> dict[str, Any]:
    problem = DecodeProblem(batch=2, s_q=1, h_q=4, seqlen=20, d_qk=48, d_v=32, page_size=16,
                            dtype="fp16", seqlens=(20, 5))  # fmt: skip
    return make_decode_inputs(problem, device=_device(), seed=0)


def _set(name: str, value: Any) -> Mutate:
    return lambda inputs: inputs.__setitem__(name, value)


def _with(name: str, fn: Callable[[Any], Any]) -> Mutate:
    return lambda inputs: inputs.__setitem__(name, fn(inputs[name]))


DECODE_INVALID: list[tuple[str, Mutate, type[Exception], str]] = [
    ("q-not-tensor", _with("q", lambda q: q.tolist()), TypeError, "q: expected a torch.Tensor"),
    ("q-fp32", _with("q", lambda q: q.float()), TypeError, "q: expected dtype"),
    ("q-3d", _with("q", lambda q: q[0]), ValueError, "q:"),
    ("kv-dim", _with("kv_cache", lambda kv: kv[..., :32].contiguous()), ValueError,
     "kv_cache: expected last dim 48"),
    ("kv-dtype", _with("kv_cache", lambda kv: kv.float()), TypeError, "kv_cache: expected dtype"),
    ("page-3", _with("kv_cache", lambda kv: kv[:, :3].contiguous()), ValueError, "page size"),
    ("h_kv-3", _with("kv_cache", lambda kv: kv.expand(-1, -1, 3, -1).contiguous()), ValueError,
     "kv_cache: expected h_kv (dim 2) dividing h_q=4, got 3"),
    ("table-int64", _with("block_table", lambda t: t.long()), TypeError, "block_table"),
    ("table-rows", _with("block_table", lambda t: t[:1]), ValueError, "block_table"),
    ("lens-shape", _with("cache_seqlens", lambda s: s[:1]), ValueError, "cache_seqlens"),
    ("lens-negative", _set("cache_seqlens", torch.tensor([20, -1], dtype=torch.int32)),
     ValueError, "cache_seqlens: expected lengths >= 0, got -1 at batch 1"),
    ("lens-over-table", _set("cache_seqlens", torch.tensor([20, 10_000], dtype=torch.int32)),
     ValueError, "block_table: expected at least"),
    ("page-id-range", _with("block_table", lambda t: t + 10_000), ValueError,
     "block_table: expected page ids in"),
    ("head_dim_v-bool", _set("head_dim_v", True), TypeError, "head_dim_v: expected an int"),
    ("head_dim_v-big", _set("head_dim_v", 4096), ValueError, "head_dim_v: expected 16 <="),
    ("scale-str", _set("softmax_scale", "big"), TypeError, "softmax_scale"),
    ("scale-nan", _set("softmax_scale", float("nan")), ValueError, "softmax_scale"),
    ("scale-negative", _set("softmax_scale", -1.0), ValueError, "softmax_scale"),
    ("causal-int", _set("causal", 1), TypeError, "causal: expected a bool"),
    ("kv_scale-fp16", _set("kv_scale", torch.tensor(1.0)), ValueError, "kv_scale"),
    ("config-str", _set("config", "fast"), TypeError, "config: expected a DecodeConfig"),
    ("config-q-8", _set("config", DecodeConfig(8, 16, 4, 1, 1)), ValueError,
     "config.block_size_q"),
    ("config-k-24", _set("config", DecodeConfig(16, 24, 4, 1, 1)), ValueError,
     "config.block_size_k"),
    ("config-warps-3", _set("config", DecodeConfig(16, 16, 3, 1, 1)), ValueError,
     "config.num_warps"),
    ("config-splits-0", _set("config", DecodeConfig(16, 16, 4, 1, 0)), ValueError,
     "config.num_kv_splits"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("mutate", "error", "text"),
    [pytest.param(m, e, t, id=name) for name, m, e, t in DECODE_INVALID],
)
def test_decode_refuses_invalid_input_naming_it(
    mutate: Mutate, error: type[Exception], text: str
) -> None:
    inputs = _decode_inputs()
    inputs.setdefault("config", DecodeConfig(16, 16, 4, 1, 1))
    mutate(inputs)
    with pytest.raises(error) as info:
        mla_decode(**inputs)
    assert text in str(info.value)


def _prefill_inputs(d_qk: int = 32) -> dict[str, Any]:
    problem = PrefillProblem(batch=2, seqlen_q=8, seqlen_k=12, h=4, h_k=2, d_qk=d_qk, d_v=16,
                             dtype="fp16", causal=True)  # fmt: skip
    return make_prefill_inputs(problem, device=_device(), seed=0, lengths=[(8, 12), (3, 5)])


PREFILL_INVALID: list[tuple[str, Mutate, type[Exception], str]] = [
    ("q-int", _set("q", 3), TypeError, "q: expected a torch.Tensor"),
    ("q-fp32", _with("q", lambda q: q.float()), TypeError, "q: expected dtype"),
    ("k-dim", _with("k", lambda k: k[..., :16]), ValueError, "k: expected last dim 32"),
    ("k-dtype", _with("k", lambda k: k.float()), TypeError, "k: expected dtype"),
    ("h_k-3", _with("k", lambda k: k[:, :1].expand(-1, 3, -1)), ValueError,
     "k: expected h_k (dim 1) dividing h=4, got 3"),
    ("v-rows", _with("v", lambda v: v[:-1]), ValueError, "v:"),
    ("d_qk-40", lambda inputs: inputs.update(_prefill_inputs(d_qk=40)), ValueError,
     "d_qk: expected a multiple of 16"),
    ("cu-int64", _with("cu_seqlens_q", lambda c: c.long()), TypeError, "cu_seqlens_q"),
    ("cu-k-len", _with("cu_seqlens_k", lambda c: c[:-1]), ValueError, "cu_seqlens_k"),
    ("cu-q-first", _with("cu_seqlens_q", lambda c: c + 1), ValueError,
     "cu_seqlens_q: expected 0 first"),
    ("cu-q-total", _set("cu_seqlens_q", torch.tensor([0, 8, 10], dtype=torch.int32)),
     ValueError, "cu_seqlens_q: expected the packed total 11 last, got 10"),
    ("cu-k-decreasing", _set("cu_seqlens_k", torch.tensor([0, 18, 17], dtype=torch.int32)),
     ValueError, "cu_seqlens_k"),
    ("max-q-small", _set("max_seqlen_q", 2), ValueError,
     "max_seqlen_q: expected >= the longest sequence (8), got 2"),
    ("max-k-float", _set("max_seqlen_k", 12.0), TypeError, "max_seqlen_k: expected an int"),
    ("causal-str", _set("causal", "yes"), TypeError, "causal: expected a bool"),
    ("scale-zero", _set("softmax_scale", 0.0), ValueError, "softmax_scale"),
    ("config-decode", _set("config", DecodeConfig()), TypeError,
     "config: expected a PrefillConfig"),
    ("config-q-12", _set("config", PrefillConfig(12, 16, 4, 1)), ValueError, "config."),
]  # fmt: skip


@pytest.mark.parametrize(
    ("mutate", "error", "text"),
    [pytest.param(m, e, t, id=name) for name, m, e, t in PREFILL_INVALID],
)
def test_prefill_refuses_invalid_input_naming_it(
    mutate: Mutate, error: type[Exception], text: str
) -> None:
    inputs = _prefill_inputs()
    inputs.setdefault("config", PrefillConfig(16, 16, 4, 1))
    mutate(inputs)
    with pytest.raises(error) as info:
        mla_prefill(**inputs)
    assert text in str(info.value)
