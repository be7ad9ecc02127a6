"""A minimal warp-specialised Gluon kernel with the hand-off the decode kernel uses, for racecheck.

``mla_decode_hopper_ws`` passes the running row max and rescale between its two compute
warpgroups through one shared-memory buffer, ordered by an mbarrier: the writer's threads store,
meet at a warpgroup barrier, one thread arrives; the reader waits on the mbarrier, loads, and
hands the buffer back the same way before the writer overwrites it. compute-sanitizer racecheck
reports hazards on those accesses (docs/kernels/NOTES.md, variant 15). This kernel does only
that hand-off, over ``ROUNDS`` rounds, and checks every value the reader saw: if racecheck
reports hazards here too, the reports come from how the tool treats this mbarrier ordering, not
from the decode kernel's arithmetic.

A second kernel (``--seesaw``) mirrors the decode kernel more closely: both partitions write the
one buffer in turn (partition ``t % 2`` owns round ``t``), each reading the other's previous
round before writing its own, with one mbarrier per round parity, as ``_compute_warpgroup``
passes m / alpha.

A third (``--named``) hands the buffer over with named hardware barriers instead, as
``mla_decode_hopper_seesaw`` does: the writer's threads ``bar.arrive``, the reader's
``bar.sync`` (and back), and at the end both ``bar.sync`` one barrier, a full rendezvous.

    python tests/reliability/racecheck_probe.py [--seesaw | --named]   # exit 0: read right
    compute-sanitizer --tool racecheck python tests/reliability/racecheck_probe.py [--...]
"""

from __future__ import annotations

import sys

import torch
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import mbarrier

ROUNDS = 8
ROWS = 64


@gluon.jit
def _writer(buf, full, empty, ROUNDS: gl.constexpr):
    layout: gl.constexpr = gl.BlockedLayout([1], [32], [4], [0])
    rows = gl.arange(0, buf.shape[0], layout=layout)
    for r in range(ROUNDS):
        if r > 0:
            mbarrier.wait(empty, (r - 1) & 1)  # the reader is done with round r - 1
        buf.store((rows + r * 1000).to(gl.float32))
        gl.thread_barrier()  # all of this warpgroup's stores are done
        mbarrier.arrive(full)


@gluon.jit
def _reader(buf, full, empty, out_ptr, ROUNDS: gl.constexpr):
    layout: gl.constexpr = gl.BlockedLayout([1], [32], [4], [0])
    rows = gl.arange(0, buf.shape[0], layout=layout)
    for r in range(ROUNDS):
        mbarrier.wait(full, r & 1)
        seen = buf.load(layout)
        gl.store(out_ptr + r * buf.shape[0] + rows, seen)
        gl.thread_barrier()  # all of this warpgroup's loads are done
        mbarrier.arrive(empty)


@gluon.jit
def _handoff_kernel(out_ptr, ROWS: gl.constexpr, ROUNDS: gl.constexpr):
    buf = gl.allocate_shared_memory(gl.float32, [ROWS], gl.SwizzledSharedLayout(1, 1, 1, [0]))
    full = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    mbarrier.init(full, count=1)
    mbarrier.init(empty, count=1)
    gl.warp_specialize(
        [(_writer, (buf, full, empty, ROUNDS)), (_reader, (buf, full, empty, out_ptr, ROUNDS))],
        [4],
        [96],
    )


@gluon.jit
def _seesaw_partition(buf, ready, out_ptr, W: gl.constexpr, ROUNDS: gl.constexpr):
    """Owns rounds ``W, W + 2, ...``; reads every round of the other partition."""
    layout: gl.constexpr = gl.BlockedLayout([1], [32], [4], [0])
    rows = gl.arange(0, buf.shape[0], layout=layout)
    for t in range(W, ROUNDS + 1, 2):  # (t == ROUNDS: only the other's last round to read)
        if t > 0:  # the other partition's round t - 1 first
            mbarrier.wait(ready.index((t - 1) % 2), ((t - 1) // 2) & 1)
            gl.store(out_ptr + (t - 1) * buf.shape[0] + rows, buf.load(layout))
        if t < ROUNDS:
            buf.store((rows + t * 1000).to(gl.float32))
            gl.thread_barrier()  # all of this warpgroup's loads and stores are done
            mbarrier.arrive(ready.index(t % 2))


@gluon.jit
def _idle_warp(ready):
    """The decode kernel's third partition (its copy warp) has no part in this hand-off."""
    mbarrier.wait(ready.index(0), 0)


@gluon.jit
def _seesaw_kernel(out_ptr, ROWS: gl.constexpr, ROUNDS: gl.constexpr):
    buf = gl.allocate_shared_memory(gl.float32, [ROWS], gl.SwizzledSharedLayout(1, 1, 1, [0]))
    ready = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    mbarrier.init(ready.index(0), count=1)
    mbarrier.init(ready.index(1), count=1)
    gl.warp_specialize(
        [
            (_seesaw_partition, (buf, ready, out_ptr, 0, ROUNDS)),
            (_seesaw_partition, (buf, ready, out_ptr, 1, ROUNDS)),
            (_idle_warp, (ready,)),
        ],
        [4, 1],
        [96, 24],
    )


_FULL_ARRIVE = gl.constexpr("bar.arrive 8, 256; mov.b32 $0, $1;")
_FULL_SYNC = gl.constexpr("bar.sync 8, 256; mov.b32 $0, $1;")
_EMPTY_ARRIVE = gl.constexpr("bar.arrive 9, 256; mov.b32 $0, $1;")
_EMPTY_SYNC = gl.constexpr("bar.sync 9, 256; mov.b32 $0, $1;")
_BOTH_SYNC = gl.constexpr("bar.sync 10, 256; mov.b32 $0, $1;")


@gluon.jit
def _bar(asm: gl.constexpr):
    gl.inline_asm_elementwise(asm, "=r,r,~{memory}", [0], dtype=gl.int32, is_pure=False,
                              pack=1)  # fmt: skip


@gluon.jit
def _named_writer(buf, last, out_ptr, ROUNDS: gl.constexpr):
    layout: gl.constexpr = gl.BlockedLayout([1], [32], [4], [0])
    rows = gl.arange(0, buf.shape[0], layout=layout)
    for r in range(ROUNDS):
        if r > 0:
            _bar(_EMPTY_SYNC)  # the reader is done with round r - 1
        buf.store((rows + r * 1000).to(gl.float32))
        _bar(_FULL_ARRIVE)
    # a full rendezvous: both partitions write their half of `last`, sync, read the other's
    last.slice(0, buf.shape[0]).store((rows + (ROUNDS - 1) * 1000).to(gl.float32))
    _bar(_BOTH_SYNC)
    seen = last.slice(buf.shape[0], buf.shape[0]).load(layout)
    gl.store(out_ptr + ROUNDS * buf.shape[0] + rows, seen)


@gluon.jit
def _named_reader(buf, last, out_ptr, ROUNDS: gl.constexpr):
    layout: gl.constexpr = gl.BlockedLayout([1], [32], [4], [0])
    rows = gl.arange(0, buf.shape[0], layout=layout)
    for r in range(ROUNDS):
        _bar(_FULL_SYNC)
        gl.store(out_ptr + r * buf.shape[0] + rows, buf.load(layout))
        _bar(_EMPTY_ARRIVE)
    last.slice(buf.shape[0], buf.shape[0]).store((rows + (ROUNDS - 1) * 1000).to(gl.float32))
    _bar(_BOTH_SYNC)


@gluon.jit
def _named_kernel(out_ptr, ROWS: gl.constexpr, ROUNDS: gl.constexpr):
    buf = gl.allocate_shared_memory(gl.float32, [ROWS], gl.SwizzledSharedLayout(1, 1, 1, [0]))
    last = gl.allocate_shared_memory(gl.float32, [2 * ROWS], gl.SwizzledSharedLayout(1, 1, 1, [0]))
    gl.warp_specialize(
        [(_named_writer, (buf, last, out_ptr, ROUNDS)),
         (_named_reader, (buf, last, out_ptr, ROUNDS))],
        [4],
        [96],
    )  # fmt: skip


def main(argv: list[str]) -> int:
    named = "--named" in argv
    out = torch.full((ROUNDS + named, ROWS), float("nan"), device="cuda")
    kernel = _seesaw_kernel if "--seesaw" in argv else _named_kernel if named else _handoff_kernel
    kernel[(1,)](out, ROWS=ROWS, ROUNDS=ROUNDS, num_warps=4)
    torch.cuda.synchronize()
    want = (
        torch.arange(ROWS, device="cuda", dtype=torch.float32)
        + 1000 * torch.arange(ROUNDS, device="cuda", dtype=torch.float32)[:, None]
    )
    if named:  # the rendezvous row: the reader's last round, read back by the writer
        want = torch.cat([want, want[-1:]])
    ok = torch.equal(out, want)
    sys.stdout.write(f"racecheck probe: {ROUNDS} hand-offs {'read right' if ok else 'WRONG'}\n")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
