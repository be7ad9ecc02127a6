"""mla_decode against the fp32 reference (CPU: Triton interpreter, fp16, small shapes).

Inputs are fresh each run, pages shuffled, every slot outside a sequence NaN and unused
block-table entries pointing at NaN pages; outputs are written into a NaN-filled buffer.
"""

from __future__ import annotations

import importlib
import random
from collections.abc import Callable
from typing import Any

import pytest
import torch

from mlafleet.kernels import mla_decode
from mlafleet.kernels.configs import CPU_INTERPRETER, DecodeConfig, DecodeProblem
from mlafleet.kernels.decode_inputs import make_decode_inputs
from mlafleet.kernels.decode_tuning import decode_search_space

Check = Callable[[DecodeProblem, DecodeConfig | None], dict[str, Any]]
Kit = Any
PINNED = DecodeConfig(block_size_q=16, block_size_k=16, num_warps=4, num_stages=1, num_kv_splits=2)


@pytest.mark.parametrize(
    ("overrides", "config"),
    [
        # lengths 0, 1, page - 1, page + 1 in one batch; two splits
        pytest.param({"seqlens": (0, 1, 15, 17)}, PINNED, id="len-0-1-P-1-P+1"),
        pytest.param({"page_size": 1, "seqlens": (5, 1)}, PINNED, id="page-1"),
        pytest.param(
            {"page_size": 64, "seqlens": (63, 65)},
            DecodeConfig(16, 32, 4, 1, 1),
            id="page-64-one-split",
        ),
        pytest.param(
            {"page_size": 256, "seqlens": (300,), "h_q": 16},
            DecodeConfig(16, 32, 4, 1, 3),
            id="page-256",
        ),
        pytest.param({"h_q": 8, "h_kv": 2, "seqlens": (33, 9)}, PINNED, id="h_kv-2"),
        pytest.param({"h_q": 24, "seqlens": (20,)}, PINNED, id="rows-not-multiple"),
        pytest.param(
            {"s_q": 2, "h_q": 8, "causal": True, "seqlens": (1, 2, 37)}, PINNED, id="s_q-2-causal"
        ),
        pytest.param(
            {"s_q": 3, "h_q": 4, "causal": True, "seqlens": (3, 20)},
            DecodeConfig(16, 16, 4, 1, 1),
            id="s_q-3-causal",
        ),
        pytest.param({"s_q": 2, "h_q": 8, "seqlens": (18,)}, PINNED, id="s_q-2-full"),
        pytest.param(
            {"seqlens": (20, 3)}, DecodeConfig(16, 16, 4, 1, 8), id="more-splits-than-blocks"
        ),
        pytest.param(
            {"d_qk": 576, "d_v": 512, "h_q": 16, "seqlens": (40,)},
            DecodeConfig(16, 16, 4, 1, 2),
            id="deepseek-576-512",
        ),
        pytest.param({"d_qk": 64, "d_v": 64, "seqlens": (21,)}, PINNED, id="no-rope"),
        pytest.param({"d_qk": 80, "d_v": 48, "seqlens": (19,)}, PINNED, id="non-pow2-dims"),
    ],
)
def test_matches_reference(
    overrides: dict[str, Any], config: DecodeConfig, check_decode: Check, kit: Kit
):
    check_decode(kit.small_problem(**overrides), config)


@pytest.mark.parametrize("kv_dtype", [None, "fp8_e4m3"], ids=["fp16", "fp8"])
@pytest.mark.parametrize(("d_qk", "d_v"), [(576, 512), (336, 288)], ids=["512", "288-padded"])
def test_latent_in_two_halves(d_qk: int, d_v: int, kv_dtype: str | None, seed: int, kit: Kit):
    # The TMA path's layout (a latent dim over 256 as two column halves; the second padded for
    # 288), forced on the pointer path so the interpreter runs it; causal s_q 2 so that
    # mask-free tiles, diagonal tiles and tail tiles all run.
    from mlafleet.kernels.decode_checks import check_decode_args, resolve_decode_config

    module = importlib.import_module("mlafleet.kernels.mla_decode")
    problem = kit.small_problem(
        d_qk=d_qk, d_v=d_v, h_q=8, s_q=2, causal=True, seqlens=(50, 17), kv_dtype=kv_dtype
    )
    inputs = make_decode_inputs(problem, device=kit.device(), seed=seed)
    args = check_decode_args(**inputs, out=kit.poisoned_out(inputs))
    config, splits = resolve_decode_config(args, DecodeConfig(16, 16, 4, 1, 2))
    got = module._launch(args, config, splits, two_parts=True)
    kit.assert_matches_reference(inputs, got, seed=seed)


def test_fp8_kv_with_scale(check_decode: Check, kit: Kit):
    # The interpreter handles float8_e4m3fn loads; the GPU run covers full size (bench).
    inputs = check_decode(kit.small_problem(kv_dtype="fp8_e4m3", seqlens=(17, 40)), PINNED)
    assert inputs["kv_cache"].dtype == torch.float8_e4m3fn
    assert inputs["kv_scale"] is not None


def test_default_config_when_none(check_decode: Check, kit: Kit):
    check_decode(kit.small_problem(seqlens=(9, 33)), None)


def test_custom_softmax_scale(seed: int, kit: Kit):
    inputs = make_decode_inputs(kit.small_problem(seqlens=(12,)), device=kit.device(), seed=seed)
    inputs["softmax_scale"] = 0.3
    kit.assert_matches_reference(inputs, mla_decode(**inputs, config=PINNED), seed=seed)


def test_sampled_search_space(check_decode: Check, kit: Kit):
    problem = kit.small_problem(seqlens=(23, 40))
    space = decode_search_space(problem, CPU_INTERPRETER)
    for config in random.sample(space, k=min(2, len(space))):
        check_decode(problem, config)


def test_zero_length_gives_zeros_and_minus_inf(seed: int, kit: Kit):
    inputs = make_decode_inputs(kit.small_problem(seqlens=(0, 0)), device=kit.device(), seed=seed)
    out, lse = mla_decode(**inputs, out=kit.poisoned_out(inputs), config=PINNED)
    assert torch.equal(out, torch.zeros_like(out))
    assert torch.isneginf(lse).all()


def test_empty_batch(kit: Kit):
    inputs = make_decode_inputs(kit.small_problem(seqlens=()), device=kit.device(), seed=0)
    out, lse = mla_decode(**inputs, config=PINNED)
    assert out.shape == (0, 1, 16, 64)
    assert lse.shape == (0, 16, 1)


def test_last_compiled_kernel_recorded(kit: Kit):
    inputs = make_decode_inputs(kit.small_problem(seqlens=(5,)), device=kit.device(), seed=1)
    mla_decode(**inputs, config=PINNED)
    module = importlib.import_module("mlafleet.kernels.mla_decode")
    assert "decode" in module.LAST_COMPILED


# ---- invalid inputs: each raises naming the argument --------------------------------------


def _base(kit: Kit) -> dict[str, Any]:
    return make_decode_inputs(kit.small_problem(seqlens=(17, 5)), device=kit.device(), seed=3)


def _dev(inputs: dict[str, Any]) -> torch.device:
    """Where the test's inputs are (a replaced tensor goes there too)."""
    return inputs["q"].device


VALUE_CHECKS = {"bt-short", "bt-page-range", "lens-negative"}
"""Cases that need the lengths' and block table's values: checked on CPU tensors only (reading
them from a GPU would synchronise the stream and break graph capture; ``decode_checks``)."""


def _set(**changes: Any) -> Callable[[dict[str, Any]], None]:
    def apply(inputs: dict[str, Any]) -> None:
        for key, value in changes.items():
            inputs[key] = value(inputs) if callable(value) else value

    return apply


INVALID = [
    ("q-fp32", _set(q=lambda i: i["q"].float()), TypeError, "q: expected dtype float16"),
    ("q-3d", _set(q=lambda i: i["q"][0]), ValueError, "q: expected 4 dims"),
    (
        "q-strided",
        _set(q=lambda i: i["q"].transpose(-1, -2).contiguous().transpose(-1, -2)),
        ValueError,
        "q: expected the last dim to be contiguous",
    ),
    (
        "kv-dtype",
        _set(kv_cache=lambda i: i["kv_cache"].bfloat16()),
        TypeError,
        "kv_cache: expected dtype float16",
    ),
    (
        "kv-dim",
        _set(kv_cache=lambda i: i["kv_cache"][..., :64]),
        ValueError,
        "kv_cache: expected last dim 96",
    ),
    (
        "page-3",
        _set(kv_cache=lambda i: torch.zeros(4, 3, 1, 96, dtype=torch.float16, device=_dev(i))),
        ValueError,
        "page size (dim 1): expected a power of two from 1 to 256, got 3",
    ),
    (
        "page-512",
        _set(kv_cache=lambda i: torch.zeros(1, 512, 1, 96, dtype=torch.float16, device=_dev(i))),
        ValueError,
        "got 512",
    ),
    (
        "h_kv-3",
        _set(kv_cache=lambda i: i["kv_cache"].expand(-1, -1, 3, -1)),
        ValueError,
        "kv_cache: expected h_kv (dim 2) dividing h_q=16, got 3",
    ),
    (
        "bt-int64",
        _set(block_table=lambda i: i["block_table"].long()),
        TypeError,
        "block_table: expected dtype int32",
    ),
    (
        "bt-batch",
        _set(block_table=lambda i: i["block_table"][:1]),
        ValueError,
        "block_table: expected shape [2, '*']",
    ),
    (
        "bt-short",
        _set(block_table=lambda i: i["block_table"][:, :1].contiguous()),
        ValueError,
        "block_table: expected at least 2 pages for sequence 0",
    ),
    (
        "bt-page-range",
        _set(block_table=lambda i: i["block_table"].clone().fill_(999)),
        ValueError,
        "block_table: expected page ids in [0,",
    ),
    (
        "lens-shape",
        _set(cache_seqlens=lambda i: i["cache_seqlens"][:1]),
        ValueError,
        "cache_seqlens: expected shape [2]",
    ),
    (
        "lens-negative",
        _set(cache_seqlens=lambda i: torch.tensor([-1, 3], dtype=torch.int32, device=_dev(i))),
        ValueError,
        "cache_seqlens: expected lengths >= 0, got -1",
    ),
    (
        "lens-float",
        _set(cache_seqlens=lambda i: i["cache_seqlens"].float()),
        TypeError,
        "cache_seqlens: expected dtype int32",
    ),
    ("dv-too-big", _set(head_dim_v=128), ValueError, "head_dim_v: expected 16 <= head_dim_v"),
    ("dv-float", _set(head_dim_v=64.0), TypeError, "head_dim_v: expected an int"),
    ("scale-negative", _set(softmax_scale=-1.0), ValueError, "softmax_scale: expected"),
    ("scale-str", _set(softmax_scale="0.1"), TypeError, "softmax_scale: expected a float"),
    ("causal-int", _set(causal=1), TypeError, "causal: expected a bool"),
    (
        "fp8-no-scale",
        _set(kv_cache=lambda i: i["kv_cache"].to(torch.float8_e4m3fn)),
        ValueError,
        "kv_scale: expected an fp32 scalar tensor",
    ),
    (
        "scale-not-fp8",
        _set(kv_scale=lambda i: torch.ones(1, device=_dev(i))),
        ValueError,
        "kv_scale: only meaningful with a float8_e4m3fn kv_cache",
    ),
    (
        "scale-2",
        _set(
            kv_cache=lambda i: i["kv_cache"].to(torch.float8_e4m3fn),
            kv_scale=lambda i: torch.ones(2, device=_dev(i)),
        ),
        ValueError,
        "kv_scale: expected one element",
    ),
    (
        "scale-fp16",
        _set(
            kv_cache=lambda i: i["kv_cache"].to(torch.float8_e4m3fn),
            kv_scale=lambda i: torch.ones(1, dtype=torch.float16, device=_dev(i)),
        ),
        TypeError,
        "kv_scale: expected dtype float32",
    ),
    (
        "q-not-tensor",
        _set(q=lambda i: i["q"].tolist()),
        TypeError,
        "q: expected a torch.Tensor, got list",
    ),
]


@pytest.mark.parametrize("num_splits", [1, 3, 16, 21])
def test_split_combine_skips_empty_splits(num_splits: int, kit: Kit):
    # The combine reads its splits in blocks (16 at most: 21 leaves a part block) and must
    # never let an empty split's partial in: the seesaw kernel leaves it unwritten (garbage,
    # here NaN) and marks it only by lse = -inf. A row with every split empty gives 0 and -inf.
    gen = torch.Generator().manual_seed(num_splits)
    batch, s_q, heads, d_v = 2, 2, 3, 64
    o_mid = torch.randn(batch, s_q, heads, num_splits, d_v, generator=gen)
    lse_mid = torch.randn(batch, s_q, heads, num_splits, generator=gen) * 4
    empty = torch.rand(batch, s_q, heads, num_splits, generator=gen) < 0.5
    empty[0, 0, 0] = True  # a row with no key at all
    lse_mid[empty] = float("-inf")
    o_mid[empty] = float("nan")
    out = torch.full((batch, s_q, heads, d_v), float("nan"), dtype=torch.float16)
    lse = torch.full((batch, heads, s_q), float("nan"))
    module = importlib.import_module("mlafleet.kernels.mla_decode")
    dev = kit.device()  # the kernel's inputs where it runs (the interpreter: the CPU)
    o_dev, lse_mid_dev, out_dev, lse_dev = (t.to(dev) for t in (o_mid, lse_mid, out, lse))
    module._mla_decode_combine_kernel[(batch * s_q, heads)](
        o_dev, lse_mid_dev, out_dev, lse_dev, *o_mid.stride()[:4], *lse_mid.stride()[:3],
        *out.stride()[:3], *lse.stride(), s_q, lse_mid_dev, lse_mid_dev, lse_mid_dev, D_V=d_v,
        BLOCK_DV=d_v, NUM_SPLITS=num_splits, SPLIT_BLOCK=module.combine_split_block(num_splits),
        PLANNED=False, PDL=False,
    )  # fmt: skip
    out, lse = out_dev.cpu(), lse_dev.cpu()
    weights = torch.softmax(lse_mid, dim=-1).nan_to_num(0.0)  # all -inf rows: NaN -> 0
    want = (weights[..., None] * o_mid.nan_to_num(0.0)).sum(dim=-2)
    want_lse = torch.logsumexp(lse_mid, dim=-1).transpose(1, 2)
    torch.testing.assert_close(out.float(), want, atol=2e-3, rtol=2e-3)
    torch.testing.assert_close(lse, want_lse)
    assert out[0, 0, 0].eq(0).all()
    assert lse[0, 0, 0] == float("-inf")


@pytest.mark.parametrize(
    ("case", "mutate", "error", "message"), INVALID, ids=[c[0] for c in INVALID]
)
def test_invalid_input_raises(
    case: str, mutate: Callable[[dict[str, Any]], None], error: type, message: str, kit: Kit
):
    if case in VALUE_CHECKS and kit.device().type == "cuda":
        pytest.skip("value checks run on CPU tensors only (VALUE_CHECKS); here on the GPU")
    inputs = _base(kit)
    mutate(inputs)
    with pytest.raises(error) as info:
        mla_decode(**inputs, config=PINNED)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (
            {"out": torch.empty(2, 1, 16, 32, dtype=torch.float16)},
            ValueError,
            "out: expected shape [2, 1, 16, 64]",
        ),
        ({"config": {"block_size_q": 16}}, TypeError, "config: expected a DecodeConfig"),
        (
            {"config": DecodeConfig(24, 16, 4, 1, 1)},
            ValueError,
            "config.block_size_q: expected a power of two >= 16",
        ),
        ({"config": DecodeConfig(16, 8, 4, 1, 1)}, ValueError, "config.block_size_k"),
        ({"config": DecodeConfig(16, 16, 3, 1, 1)}, ValueError, "config.num_warps"),
        ({"config": DecodeConfig(16, 16, 4, 1, 0)}, ValueError, "config.num_kv_splits"),
    ],
)
def test_invalid_keyword_raises(kwargs: dict[str, Any], error: type, message: str, kit: Kit):
    inputs = _base(kit)
    kwargs = {"config": PINNED, **kwargs}
    with pytest.raises(error) as info:
        mla_decode(**inputs, **kwargs)
    assert message in str(info.value)


# ---- GPU: full DeepSeek size (skipped, and reported as skipped, without a CUDA GPU) ----------


@pytest.mark.gpu
@pytest.mark.parametrize("kv_dtype", [None, "fp8_e4m3"], ids=["bf16", "fp8"])
def test_full_deepseek_size_on_gpu(kv_dtype: str | None, seed: int, kit: Kit):
    problem = DecodeProblem(
        batch=4,
        s_q=2,
        h_q=128,
        seqlen=0,
        seqlens=(4113, 1, 0, 2048),
        page_size=64,
        dtype="bf16",
        kv_dtype=kv_dtype,
        causal=True,
    )
    inputs = make_decode_inputs(problem, device="cuda", seed=seed)
    got = mla_decode(**inputs, out=kit.poisoned_out(inputs))
    # on sm_90 an fp8 cache at 128 heads runs the fp8 seesaw by default: q split in two fp8
    # terms, the scores on fp8 tensor cores
    if kv_dtype is not None and torch.cuda.get_device_capability() == (9, 0):
        kit.assert_matches_reference(inputs, got, seed=seed, lse_tol=kit.lse_tol_fp8_scores)
    else:
        kit.assert_matches_reference(inputs, got, seed=seed)


@pytest.mark.gpu
@pytest.mark.parametrize("kv_dtype", [None, "fp8_e4m3"], ids=["bf16", "fp8"])
@pytest.mark.parametrize("use_tma", [True, False], ids=["tma", "pointers"])
def test_tma_and_pointer_paths_on_gpu(kv_dtype: str | None, use_tma: bool, seed: int, kit: Kit):
    # Both KV load paths, full DeepSeek dims, tails and causal diagonals inside pages of 64.
    from mlafleet.kernels.decode_checks import check_decode_args, resolve_decode_config

    if use_tma and torch.cuda.get_device_capability()[0] < 9:
        pytest.skip("TMA needs an sm_90+ GPU")
    module = importlib.import_module("mlafleet.kernels.mla_decode")
    problem = DecodeProblem(
        batch=3,
        s_q=2,
        h_q=64,
        seqlen=0,
        seqlens=(1000, 63, 129),
        page_size=64,
        dtype="bf16",
        kv_dtype=kv_dtype,
        causal=True,
    )
    inputs = make_decode_inputs(problem, device="cuda", seed=seed)
    args = check_decode_args(**inputs, out=kit.poisoned_out(inputs))
    config = DecodeConfig(block_size_q=64, block_size_k=64, num_warps=8, num_stages=2)
    config, splits = resolve_decode_config(args, config)
    if use_tma:
        assert module.kv_tma_eligible(args, config), "sm_90+ with pages of 64 takes TMA"
    got = module._launch(args, config, splits, use_tma=use_tma, use_gluon=False)
    assert module.LAST_COMPILED["decode_tma"] is use_tma
    kit.assert_matches_reference(inputs, got, seed=seed)


MANY_LENGTHS = (0, 1, 63, 64, 65, 0, 0, 127, 128, 129, 1000, 3001, 2048, 200, 4095)
"""Lengths a persistent program's items cycle through: empty ones (also two in a row), one
token, tails in either warpgroup's tile, odd and even tile counts, one tile to 64."""


@pytest.mark.gpu
@pytest.mark.parametrize(
    ("dtype", "kv_dtype", "page_size", "splits", "s_q", "kernel"),
    [
        ("bf16", None, 64, 1, 1, "seesaw"),
        ("bf16", None, 64, 4, 2, "seesaw"),
        ("fp16", None, 128, 3, 1, "seesaw"),
        ("bf16", None, 256, 64, 2, "seesaw"),
        ("bf16", None, 64, 2, 1, "seesaw-long"),
        ("bf16", None, 64, 1, 1, "seesaw-many"),
        ("fp16", None, 128, 1, 2, "seesaw-many"),
        ("bf16", None, 64, 4, 1, "seesaw-many"),
        ("bf16", None, 64, 100, 1, "seesaw-one"),
        ("bf16", None, 64, 1, 1, "ws"),
        ("bf16", None, 64, 4, 2, "ws"),
        ("fp16", None, 128, 3, 1, "ws"),
        ("bf16", None, 256, 64, 2, "ws"),
        ("bf16", None, 64, 1, 1, "lockstep"),
        ("bf16", None, 64, 4, 2, "lockstep"),
        ("bf16", None, 256, 64, 2, "lockstep"),
        ("bf16", "fp8_e4m3", 64, 1, 1, "lockstep"),
        ("bf16", "fp8_e4m3", 128, 5, 2, "lockstep"),
    ],
)
def test_gluon_hopper_kernel_on_gpu(
    dtype: str,
    kv_dtype: str | None,
    page_size: int,
    splits: int,
    s_q: int,
    kernel: str,
    seed: int,
    kit: Kit,
):
    # kernel: the seesaw one (config 64x64 w8 s1, 16-bit caches), the warp-specialised one
    # (64x32 w8 s4, 16-bit caches) or the lockstep one (64x64 w8 s2). Tails inside a tile (in
    # either warpgroup's tile), empty and one-token sequences, odd and even tile counts, empty
    # splits (64 splits of short sequences), causal s_q 2, 64 and 128 heads; "-long": lengths
    # of many tile pairs; "-many": more (sequence, split) items than a row block's programs
    # fit the GPU (150 sequences, one split each), so the seesaw's persistent grid takes them,
    # each program one item after another (empty ones among them, lengths of 1 token to
    # 64 tiles, odd and even tile counts); "-one": the same over one sequence's 100 splits;
    # "-many" with 4 splits: balanced splits for a batch larger than a wave.
    lengths = {
        "-long": (4095, 2048, 1000, 3001, 64),
        "-many": tuple(MANY_LENGTHS[i % len(MANY_LENGTHS)] for i in range(150)),
        "-one": (50_000,),
    }
    if torch.cuda.get_device_capability() != (9, 0):
        pytest.skip("the Gluon decode kernel is for sm_90")
    from mlafleet.kernels.decode_checks import check_decode_args, resolve_decode_config

    module = importlib.import_module("mlafleet.kernels.mla_decode")
    suffix = next((end for end in lengths if kernel.endswith(end)), "")
    seqlens = lengths.get(suffix, (1000, 63, 129, 0, 1))
    problem = DecodeProblem(
        batch=len(seqlens),
        s_q=s_q,
        h_q=128 if s_q == 1 else 64,
        seqlen=0,
        seqlens=seqlens,
        page_size=page_size,
        dtype=dtype,
        kv_dtype=kv_dtype,
        causal=s_q > 1,
    )
    kernel = kernel.removesuffix(suffix)
    inputs = make_decode_inputs(problem, device="cuda", seed=seed)
    args = check_decode_args(**inputs, out=kit.poisoned_out(inputs))
    knobs = {"seesaw": (64, 64, 8, 1), "ws": (64, 32, 8, 4), "lockstep": (64, 64, 8, 2)}[kernel]
    config, splits = resolve_decode_config(args, DecodeConfig(*knobs, num_kv_splits=splits))
    got = module._launch(args, config, splits)
    assert module.LAST_COMPILED["decode_kernel"] == f"many_heads_{kernel}"
    if suffix == "-one" or (suffix == "-many" and splits == 1):  # (the persistent grid)
        from mlafleet.kernels.mla_decode_hopper_seesaw import persistent_programs

        assert persistent_programs(args, splits) is not None
    kit.assert_matches_reference(inputs, got, seed=seed)


def _rising_spikes(inputs: dict[str, Any], lengths: tuple[int, ...], step: float) -> None:
    """Give every sequence one token a tile (position ``64 j + 5``, skipping every third tile)
    whose key leans on head 0's q, ``step * (j + 1)`` along the signs of its entries: head 0's
    scores then jump past their running max tile after tile (by ~11 in log2 units at ``step``
    0.4), heads 64-71, copies of head 0, jump with it in the other row block, and the other
    heads' scores move little. In place."""
    q, kv, table = inputs["q"], inputs["kv_cache"], inputs["block_table"]
    page = kv.shape[1]
    q[:, :, 64:72] = q[:, :, :1]
    for b, length in enumerate(lengths):
        tiles = torch.arange(0, (length - 5 + 63) // 64, device=q.device)
        tiles = tiles[tiles % 3 != 1]
        if tiles.numel() == 0:
            continue
        pos = tiles * 64 + 5
        direction = q[b, 0, 0].float().sign()
        keys = step * (tiles + 1).float()[:, None] * direction[None, :]
        kv[table[b, pos // page].long(), pos % page, 0] = keys.to(kv.dtype)


@pytest.mark.gpu
@pytest.mark.parametrize(
    ("dtype", "splits", "lengths"),
    [
        ("bf16", 1, (4000, 1000, 129, 0, 64)),
        ("fp16", 3, (4000, 700, 65)),
        ("bf16", 1, tuple(MANY_LENGTHS[i % len(MANY_LENGTHS)] for i in range(150))),
    ],
)
def test_gluon_seesaw_kernel_when_the_running_max_jumps(
    dtype: str, splits: int, lengths: tuple[int, ...], seed: int, kit: Kit
):
    # With the KV unsplit the seesaw kernel moves a row's running max only when a tile's
    # scores pass it by more than 2^8 and skips a warpgroup's rescale of its output when no
    # row of the row block moved (lazy rescaling). Random keys exercise the skip; here some
    # rows' maxima jump far past their running max tile after tile, in both warpgroups'
    # tiles, while the other rows' stay: the rescale must still happen for them, and not
    # disturb the rows that did not move (one split: one item a program, and the persistent
    # grid; three balanced splits, fp16: the exact rescale on the same keys).
    if torch.cuda.get_device_capability() != (9, 0):
        pytest.skip("the Gluon decode kernels are for sm_90")
    from mlafleet.kernels.decode_checks import check_decode_args, resolve_decode_config

    problem = DecodeProblem(
        batch=len(lengths), s_q=1, h_q=128, seqlen=0, seqlens=lengths, page_size=64, dtype=dtype
    )
    inputs = make_decode_inputs(problem, device="cuda", seed=seed)
    _rising_spikes(inputs, lengths, step=0.4)
    args = check_decode_args(**inputs, out=kit.poisoned_out(inputs))
    module = importlib.import_module("mlafleet.kernels.mla_decode")
    config, splits = resolve_decode_config(args, DecodeConfig(64, 64, 8, 1, num_kv_splits=splits))
    got = module._launch(args, config, splits)
    assert module.LAST_COMPILED["decode_kernel"] == "many_heads_seesaw"
    kit.assert_matches_reference(inputs, got, seed=seed)


@pytest.mark.gpu
def test_gluon_seesaw_kernel_is_bitwise_repeatable(seed: int, kit: Kit):
    # The seesaw kernel's two warpgroups hand the running max, rescales and p to each other
    # through shared memory behind named barriers; its arithmetic runs in a fixed order, so any
    # hand-off read too early would show as launches that differ. 300 launches (a ~1 ms one
    # each: 256 programs of 2 x 4096 tokens, causal s_q 2 for the masked last tiles) must give
    # the same bits.
    if torch.cuda.get_device_capability() != (9, 0):
        pytest.skip("the Gluon decode kernels are for sm_90")
    problem = DecodeProblem(
        batch=64, s_q=2, h_q=128, seqlen=4000, page_size=64, dtype="bf16", causal=True
    )
    inputs = make_decode_inputs(problem, device="cuda", seed=seed)
    config = DecodeConfig(64, 64, 8, 1, num_kv_splits=1)
    differing = kit.launches_differing(inputs, config, "many_heads_seesaw")
    assert differing == 0, f"{differing} of 300 launches differ from the first"


@pytest.mark.gpu
@pytest.mark.parametrize(
    ("h_q", "dtype", "kv_dtype", "warps", "stages", "splits", "s_q", "page_size"),
    [
        (16, "bf16", None, 4, 2, 1, 1, 64),
        (16, "bf16", None, 4, 2, 4, 2, 64),
        (32, "fp16", None, 4, 2, 3, 1, 64),
        (16, "bf16", "fp8_e4m3", 4, 2, 1, 1, 64),
        (48, "bf16", "fp8_e4m3", 4, 3, 64, 2, 64),
        (16, "bf16", "fp8_e4m3", 8, 3, 1, 1, 64),
        (16, "bf16", "fp8_e4m3", 8, 2, 4, 1, 128),
        (32, "fp16", "fp8_e4m3", 8, 3, 3, 1, 64),
        (48, "bf16", "fp8_e4m3", 8, 3, 64, 2, 256),
        (16, "bf16", "fp8_e4m3", 8, 1, 1, 1, 64),  # 1 stage: the paired fp8 kernel
        (32, "fp16", "fp8_e4m3", 8, 1, 3, 1, 128),
        (48, "bf16", "fp8_e4m3", 8, 1, 64, 2, 256),
    ],
)
def test_gluon_few_heads_kernels_on_gpu(
    h_q: int,
    dtype: str,
    kv_dtype: str | None,
    warps: int,
    stages: int,
    splits: int,
    s_q: int,
    page_size: int,
    seed: int,
    kit: Kit,
):
    # The few-heads Gluon sm_90 kernels (tokens on the wgmma rows): 4 warps, the one-warpgroup
    # kernel (16-bit caches by default, fp8 with its in-line upcast when asked); 8 warps, the
    # fp8 kernels whose converter warpgroup upcasts while one (2-3 stages) or two (1 stage, the
    # paired kernel: score halves exchanged through shared memory) compute. Tails in a tile,
    # empty and one-token sequences, empty splits (64 splits), causal s_q 2, ring depths 2 and
    # 3, pages of 64-256 tokens, bf16 and fp16 queries.
    if torch.cuda.get_device_capability() != (9, 0):
        pytest.skip("the Gluon decode kernels are for sm_90")
    from mlafleet.kernels.decode_checks import check_decode_args, resolve_decode_config

    module = importlib.import_module("mlafleet.kernels.mla_decode")
    problem = DecodeProblem(
        batch=5,
        s_q=s_q,
        h_q=h_q,
        seqlen=0,
        seqlens=(1000, 63, 129, 0, 1),
        page_size=page_size,
        dtype=dtype,
        kv_dtype=kv_dtype,
        causal=s_q > 1,
    )
    inputs = make_decode_inputs(problem, device="cuda", seed=seed)
    args = check_decode_args(**inputs, out=kit.poisoned_out(inputs))
    config, splits = resolve_decode_config(args, DecodeConfig(16, 64, warps, stages, splits))
    got = module._launch(args, config, splits, use_gluon=True)
    assert module.LAST_COMPILED["decode_kernel"] == ("few_heads_fp8" if warps == 8 else "few_heads")
    kit.assert_matches_reference(inputs, got, seed=seed)


PLANNED_CASES = [
    (16, "bf16", 1, 64, (1000, 63, 129, 0, 1)),  # tails, empty and one-token sequences
    (16, "bf16", 1, 256, (64 * 300 + 5, *(100,) * 30)),  # one long among many short
    (32, "fp16", 2, 128, (20000, 0, 7, 4096, 12345, 64, 65)),  # causal s_q 2, 4 row blocks
    (48, "bf16", 1, 64, (0, 0, 3000)),
    (16, "bf16", 1, 64, (4096,) * 64),  # an anchor row: the plan's splits are the equal ones
]


def _planned_problem(
    h_q: int,
    dtype: str,
    s_q: int,
    page_size: int,
    seqlens: tuple[int, ...],
    kv_dtype: str | None = None,
):
    return DecodeProblem(
        batch=len(seqlens),
        s_q=s_q,
        h_q=h_q,
        seqlen=0,
        seqlens=seqlens,
        page_size=page_size,
        dtype=dtype,
        kv_dtype=kv_dtype,
        causal=s_q > 1,
    )


PLANNED_KERNELS = {  # cache dtype: (config, kernel)
    None: (DecodeConfig(16, 64, 4, 2, "auto"), "few_heads"),
    "fp8_e4m3": (DecodeConfig(16, 64, 8, 1, "auto"), "few_heads_fp8"),  # the paired kernel
}


@pytest.mark.gpu
@pytest.mark.parametrize("kv_dtype", list(PLANNED_KERNELS))
@pytest.mark.parametrize(("h_q", "dtype", "s_q", "page_size", "seqlens"), PLANNED_CASES)
def test_gluon_few_heads_with_a_plan_on_gpu(
    h_q: int,
    dtype: str,
    s_q: int,
    page_size: int,
    seqlens: tuple[int, ...],
    kv_dtype: str | None,
    seed: int,
    kit: Kit,
):
    # One plan for a decode step, two "layers" (fresh q and cache, the same lengths): the
    # few-heads kernels (16-bit cache; fp8 on the paired kernel) take their splits from the
    # plan's work list (programs without a work item, empty sequences, more splits for the
    # long sequences), into poisoned outputs.
    if torch.cuda.get_device_capability() != (9, 0):
        pytest.skip("the Gluon decode kernels are for sm_90")
    from mlafleet.kernels.decode_plan import plan_decode

    module = importlib.import_module("mlafleet.kernels.mla_decode")
    problem = _planned_problem(h_q, dtype, s_q, page_size, seqlens, kv_dtype)
    config, kernel = PLANNED_KERNELS[kv_dtype]  # (32-48 heads default to 64-row blocks)
    plan = plan_decode(**make_decode_inputs(problem, device="cuda", seed=seed), config=config)
    assert plan.work is not None
    for layer in range(2):
        inputs = make_decode_inputs(problem, device="cuda", seed=seed + 1 + layer)
        got = mla_decode(**inputs, plan=plan, config=config, out=kit.poisoned_out(inputs))
        assert module.LAST_COMPILED["decode_kernel"] == kernel
        kit.assert_matches_reference(inputs, got, seed=seed + 1 + layer)


@pytest.mark.gpu
def test_stale_plan_gives_nan_rows_on_gpu(seed: int, kit: Kit):
    # A plan made from other lengths (the previous decode step's) must not give a wrong
    # output quietly: the rows of the sequences whose length changed come back NaN.
    if torch.cuda.get_device_capability() != (9, 0):
        pytest.skip("the Gluon decode kernels are for sm_90")
    from mlafleet.kernels.decode_plan import plan_decode

    old = make_decode_inputs(
        _planned_problem(16, "bf16", 1, 64, (3000, 700, 5000)), device="cuda", seed=seed
    )
    new = make_decode_inputs(
        _planned_problem(16, "bf16", 1, 64, (3000, 701, 5000)), device="cuda", seed=seed
    )
    out, lse = mla_decode(**new, plan=plan_decode(**old))
    assert out[1].isnan().all()
    assert lse[1].isnan().all()
    from mlafleet.kernels.decode_inputs import run_decode_ref

    ref_out, _ = run_decode_ref(new)
    for b in (0, 2):
        torch.testing.assert_close(out[b].float(), ref_out[b].float(), atol=2e-2, rtol=2e-2)


@pytest.mark.gpu
@pytest.mark.parametrize("kv_dtype", list(PLANNED_KERNELS))
def test_flash_mla_compat_plans_once_per_step_on_gpu(kv_dtype: str | None, seed: int, kit: Kit):
    # FlashMLA's calling pattern: one get_mla_metadata per decode step, then every layer's
    # call with it; the first call makes the plan, the later ones reuse it (16-bit and fp8
    # caches: descale_k).
    if torch.cuda.get_device_capability() != (9, 0):
        pytest.skip("the Gluon decode kernels are for sm_90")
    from mlafleet.kernels.flash_mla_compat import flash_mla_with_kvcache, get_mla_metadata

    problem = _planned_problem(16, "bf16", 1, 64, (64 * 300 + 5, *(100,) * 30), kv_dtype)
    sched_meta, _ = get_mla_metadata()
    for layer in range(3):
        inputs = make_decode_inputs(problem, device="cuda", seed=seed + layer)
        got = flash_mla_with_kvcache(
            inputs["q"], inputs["kv_cache"], inputs["block_table"], inputs["cache_seqlens"],
            512, sched_meta, None, softmax_scale=inputs["softmax_scale"],
            descale_k=inputs["kv_scale"],
        )  # fmt: skip
        assert sched_meta.plan is not None
        kit.assert_matches_reference(inputs, got, seed=seed + layer)
