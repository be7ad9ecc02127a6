"""Decode split plans (``decode_plan``): the work list kernel against its rule (CPU:
interpreter), the combine of a planned launch, and what ``mla_decode`` does with a plan.

The planned few-heads kernel runs on the GPU only (``test_mla_decode.py``'s ``gpu`` tests).
"""

from __future__ import annotations

import importlib
import random
from typing import Any

import pytest
import torch

from mlafleet.kernels import mla_decode
from mlafleet.kernels.decode_inputs import make_decode_inputs
from mlafleet.kernels.decode_plan import make_work_list, plan_decode

Kit = Any


def _rule(lengths: list[int], programs: int, num_splits: int) -> list[tuple[int, int, int, int]]:
    """The plan's rule in Python: (sequence, start, end, slot) per program, in order."""
    tiles = [-(-n // 64) for n in lengths]
    total = sum(tiles)
    batch = len(lengths)

    def splits_of(t: int, per_split: int) -> int:
        per_split = max(per_split, -(-t // num_splits))
        return max(-(-t // per_split), 1)

    rooms = [max(programs - k * batch // 7, 1) for k in range(8)]
    cands = [max(-(-total // room), 1) for room in rooms]
    fitting = [c for c in cands if sum(splits_of(t, c) for t in tiles) <= programs]
    per_split = min(fitting) if fitting else max(cands)
    work = []
    for b, (n, t) in enumerate(zip(lengths, tiles, strict=True)):
        split_len = max(per_split, -(-t // num_splits)) * 64
        for k in range(splits_of(t, per_split)):
            work.append((b, k * split_len, min((k + 1) * split_len, n), k))
    return work


@pytest.mark.parametrize("draw", range(12))
def test_work_list_follows_the_rule_and_covers_every_token_once(draw: int, kit: Kit):
    rng = random.Random(draw)
    batch = rng.choice([2, 5, 31, 130])  # 130: more than one chunk of 128 sequences
    lengths = [rng.choice([0, 1, 63, 64, 65, rng.randint(0, 40000)]) for _ in range(batch)]
    programs = batch + rng.randint(1, 140)
    num_splits = rng.choice([2, 8, 64])
    seqlens = torch.tensor(lengths, dtype=torch.int32, device=kit.device())
    work, splits, plan_lengths = (t.cpu() for t in make_work_list(seqlens, programs, num_splits))
    want = _rule(lengths, programs, num_splits)
    got = [tuple(int(v) for v in row[:4]) for row in work if row[0] >= 0]
    assert got == want
    assert all(int(row[0]) == -1 for row in work[len(want) :])
    assert len(want) <= programs
    assert plan_lengths.tolist() == lengths
    assert splits.tolist() == [sum(1 for w in want if w[0] == b) for b in range(batch)]
    for b, n in enumerate(lengths):  # every token once, in slots 0, 1, ...
        mine = [w for w in want if w[0] == b]
        assert [w[3] for w in mine] == list(range(len(mine)))
        assert len(mine) <= num_splits
        covered = [tok for _, start, end, _ in mine for tok in range(start, end)]
        assert covered == list(range(n))
        assert all(start % 64 == 0 for _, start, _, _ in mine)  # whole tiles of a page


def test_more_sequences_than_programs_is_refused():
    with pytest.raises(ValueError, match="programs: expected more than the batch"):
        make_work_list(torch.zeros(4, dtype=torch.int32), 4, 2)


@pytest.mark.parametrize(
    ("slots", "used"),
    [
        (4, (1, 4, 2, 3)),  # one block of slots
        (32, (3, 20, 16, 32)),  # two blocks of 16: the second read in part, skipped, whole
    ],
)
def test_planned_combine_reads_only_used_slots_and_flags_stale_lengths(
    slots: int, used: tuple[int, ...], kit: Kit
):
    # A planned launch writes only the first splits[b] slots of a sequence (the rest hold
    # garbage, here NaN); a call whose lengths differ from the plan's gets NaN rows.
    module = importlib.import_module("mlafleet.kernels.mla_decode")
    gen = torch.Generator().manual_seed(7)
    batch, s_q, heads, d_v = len(used), 1, 2, 64
    o_mid = torch.full((batch, s_q, heads, slots, d_v), float("nan"))
    lse_mid = torch.full((batch, s_q, heads, slots), float("nan"))
    for b, n in enumerate(used):
        o_mid[b, :, :, :n] = torch.randn(s_q, heads, n, d_v, generator=gen)
        lse_mid[b, :, :, :n] = torch.randn(s_q, heads, n, generator=gen)
    plan_lengths = torch.tensor([10, 300, 100, 4000], dtype=torch.int32)
    seqlens = torch.tensor([10, 300, 100, 4001], dtype=torch.int32)  # the last one grew
    out = torch.full((batch, s_q, heads, d_v), float("nan"), dtype=torch.float16)
    lse = torch.full((batch, heads, s_q), float("nan"))
    dev = kit.device()  # the kernel's inputs where it runs (the interpreter: the CPU)
    o_dev, lse_mid_dev, out_dev, lse_dev = (t.to(dev) for t in (o_mid, lse_mid, out, lse))
    module._mla_decode_combine_kernel[(batch * s_q, heads)](
        o_dev, lse_mid_dev, out_dev, lse_dev, *o_mid.stride()[:4], *lse_mid.stride()[:3],
        *out.stride()[:3], *lse.stride(), s_q, torch.tensor(used, dtype=torch.int32, device=dev),
        plan_lengths.to(dev), seqlens.to(dev), D_V=d_v, BLOCK_DV=d_v, NUM_SPLITS=slots,
        SPLIT_BLOCK=module.combine_split_block(slots), PLANNED=True, PDL=False,
    )  # fmt: skip
    out, lse = out_dev.cpu(), lse_dev.cpu()
    for b, n in enumerate(used[:-1]):
        weights = torch.softmax(lse_mid[b, :, :, :n], dim=-1)
        want = (weights[..., None] * o_mid[b, :, :, :n]).sum(dim=-2)
        torch.testing.assert_close(out[b].float(), want, atol=2e-3, rtol=2e-3)
        torch.testing.assert_close(lse[b], torch.logsumexp(lse_mid[b, :, :, :n], -1).T)
    assert out[-1].isnan().all()
    assert lse[-1].isnan().all()


def test_plan_holds_no_work_where_its_kernel_does_not_run(kit: Kit):
    # On the CPU interpreter (as on any GPU without the sm_90 few-heads kernel) the calls run
    # their usual split rule: the plan is empty and mla_decode gives the same result with it.
    inputs = make_decode_inputs(kit.small_problem(seqlens=(40, 3, 17)), device=kit.device(), seed=2)
    plan = plan_decode(**inputs)
    assert plan.work is None
    assert plan.programs == 0
    out, lse = mla_decode(**inputs, plan=plan)
    kit.assert_matches_reference(inputs, (out, lse))


def test_plan_of_another_shape_or_type_is_refused(kit: Kit):
    inputs = make_decode_inputs(kit.small_problem(seqlens=(40, 3)), device=kit.device(), seed=2)
    other = make_decode_inputs(kit.small_problem(seqlens=(40, 3, 9)), device=kit.device(), seed=2)
    with pytest.raises(ValueError, match="plan: made for calls of"):
        mla_decode(**inputs, plan=plan_decode(**other))
    with pytest.raises(TypeError, match="plan: expected a DecodePlan"):
        mla_decode(**inputs, plan="step-7")
