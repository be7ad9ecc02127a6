"""The FlashMLA drop-in against the same fp32 reference, in both of FlashMLA's call forms."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from mlafleet.kernels.configs import DecodeConfig
from mlafleet.kernels.decode_inputs import make_decode_inputs
from mlafleet.kernels.flash_mla_compat import (
    FlashMLASchedMeta,
    flash_mla_with_kvcache,
    get_mla_metadata,
)

Kit = Any
CFG = DecodeConfig(16, 16, 4, 1, 2)


def _inputs(kit: Kit, seed: int, **overrides: Any) -> dict[str, Any]:
    overrides.setdefault("seqlens", (19, 33))
    return make_decode_inputs(kit.small_problem(**overrides), device=kit.device(), seed=seed)


def test_current_form_matches_reference_and_reuses_the_plan(kit: Kit, seed: int):
    inputs = _inputs(kit, seed, s_q=2, h_q=8, causal=True)
    sched_meta, none = get_mla_metadata()
    assert none is None
    assert isinstance(sched_meta, FlashMLASchedMeta)
    args = (
        inputs["q"],
        inputs["kv_cache"],
        inputs["block_table"],
        inputs["cache_seqlens"],
        inputs["head_dim_v"],
        sched_meta,
        None,
    )
    got = flash_mla_with_kvcache(*args, softmax_scale=inputs["softmax_scale"], causal=True)
    kit.assert_matches_reference(inputs, got, seed=seed)
    assert sched_meta.have_initialized
    assert sched_meta.num_splits is not None
    again = flash_mla_with_kvcache(*args, softmax_scale=inputs["softmax_scale"], causal=True)
    torch.testing.assert_close(again[0], got[0], rtol=0, atol=0)  # same plan, same result


def test_older_form_with_metadata_and_num_splits(kit: Kit, seed: int):
    inputs = _inputs(kit, seed)
    h_q = inputs["q"].shape[2]
    tile_scheduler_metadata, num_splits = get_mla_metadata(inputs["cache_seqlens"], h_q, 1)
    got = flash_mla_with_kvcache(
        inputs["q"],
        inputs["kv_cache"],
        inputs["block_table"],
        inputs["cache_seqlens"],
        inputs["head_dim_v"],
        tile_scheduler_metadata,
        num_splits,
        causal=False,
    )
    kit.assert_matches_reference(inputs, got, seed=seed)


def test_fp8_cache_with_descale_k(kit: Kit, seed: int):
    inputs = _inputs(kit, seed, kv_dtype="fp8_e4m3")
    got = flash_mla_with_kvcache(
        inputs["q"],
        inputs["kv_cache"],
        inputs["block_table"],
        inputs["cache_seqlens"],
        inputs["head_dim_v"],
        None,
        None,
        descale_k=inputs["kv_scale"],
        config=CFG,
    )
    kit.assert_matches_reference(inputs, got, seed=seed)


def test_shape_change_on_one_metadata_is_refused(kit: Kit, seed: int):
    inputs = _inputs(kit, seed)
    meta, _ = get_mla_metadata()
    base = (inputs["kv_cache"], inputs["block_table"], inputs["cache_seqlens"], 64, meta, None)
    flash_mla_with_kvcache(inputs["q"], *base)
    with pytest.raises(ValueError, match="tile_scheduler_metadata: made for"):
        flash_mla_with_kvcache(inputs["q"], *base, causal=True)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (
            {"indices": torch.zeros(1, dtype=torch.int32)},
            NotImplementedError,
            "sparse attention (indices)",
        ),
        ({"attn_sink": torch.zeros(1)}, NotImplementedError, "attn_sink"),
        ({"is_fp8_kvcache": True}, NotImplementedError, "packed fp8 layout"),
        ({"num_splits": 4}, TypeError, "num_splits: expected None"),
        ({"descale_q": torch.ones(1)}, ValueError, "descale_q: only meaningful"),
        ({"descale_k": torch.ones(1), "kv_scale": torch.ones(1)}, ValueError, "at most one"),
    ],
)
def test_unsupported_arguments_raise(kit: Kit, kwargs: dict[str, Any], error: type, message: str):
    inputs = _inputs(kit, 0)
    with pytest.raises(error) as info:
        flash_mla_with_kvcache(
            inputs["q"],
            inputs["kv_cache"],
            inputs["block_table"],
            inputs["cache_seqlens"],
            64,
            None,
            **kwargs,
        )
    assert message in str(info.value)


def test_missing_block_table_raises(kit: Kit):
    inputs = _inputs(kit, 0)
    with pytest.raises(ValueError, match="block_table, cache_seqlens: expected tensors"):
        flash_mla_with_kvcache(inputs["q"], inputs["kv_cache"], None, None, 64, None)
