"""Probe: how fast can TMA stream a paged MLA cache into shared memory, with no compute?

The ceiling the decode kernels' copies run under, per cache layout and ring depth: each of
``--programs`` programs (one a SM) walks its own ``--tiles`` tiles of ``--pages`` 64-token pages
each (in a shuffled page order, as the benches' block tables) through a ring of ``--stages``
slots. One warp waits for a slot, holds it ``--hold-ns`` (a stand-in for the compute on it; 0:
none), then refills it with the tile ``stages`` ahead. Copies as the decode kernels issue them:
the latent part ``[64, 512]`` and the rope part ``[64, 64]`` of a 576-column row, as two TMA
descriptors, a pair a page. Timed as the benches time: one CUDA graph over input copies of
~512 MB in all (L2 holds 60 MB), so no call reads what the one before it left in L2.

    python3 bench/probe_tma_stream.py --layouts fp8,bf16 --stages 2,4,6 --hold-ns 0,1000
    python3 bench/probe_tma_stream.py --layouts fp8 --stages 2,4 --structures single,ws2x2

``--structures`` runs the same copies in the decode kernels' warp-specialised shapes (a loader
warp, one or two consuming warpgroups: ``STRUCTURES``), still with nothing computed.

Prints one line a case: layout, stages, hold, us a call, TB/s of cache read.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import _path  # noqa: F401  (maps the checkout onto the mlafleet namespace)
import torch
from common import copies_for, time_rotated_us
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import fence_async_shared, mbarrier, tma

from mlafleet.kernels.gluon_launch import GL_DTYPES

BLOCK_N = 64
D_LAT = 512
D_PE = 64
LAYOUTS = {"fp8": torch.float8_e4m3fn, "bf16": torch.bfloat16}


@gluon.jit
def _sleep(ns):
    gl.inline_asm_elementwise(
        "nanosleep.u32 $1; mov.b32 $0, 0;", "=r,r", [ns], dtype=gl.int32, is_pure=False, pack=1
    )


@gluon.jit
def _copy(lat_desc, pe_desc, lat, pe, bars, pages_ptr, j, slot):
    """Tile ``j`` (its ``PAGES`` pages) into ring slot ``slot``."""
    BN: gl.constexpr = lat_desc.block_type.shape[0]
    PAGES: gl.constexpr = lat.shape[1] // BN
    bar = bars.index(slot)
    mbarrier.expect(bar, PAGES * (lat_desc.block_type.nbytes + pe_desc.block_type.nbytes))
    for p in gl.static_range(PAGES):
        row = gl.load(pages_ptr + j * PAGES + p) * BN
        lat_dst = lat.index(slot).slice(p * BN, BN)
        pe_dst = pe.index(slot).slice(p * BN, BN)
        tma.async_copy_global_to_shared(lat_desc, [row, 0], bar, lat_dst)
        tma.async_copy_global_to_shared(pe_desc, [row, lat.shape[2]], bar, pe_dst)


@gluon.jit
def _ring(lat_desc, pe_desc, STAGES: gl.constexpr, PAGES: gl.constexpr):
    """The ring's slots (latent and rope parts, ``PAGES`` pages each) and a ready barrier a
    slot, initialised (not yet fenced)."""
    dtype: gl.constexpr = lat_desc.dtype
    BN: gl.constexpr = lat_desc.block_type.shape[0]
    DL: gl.constexpr = lat_desc.block_type.shape[1]
    DP: gl.constexpr = pe_desc.block_type.shape[1]
    lat = gl.allocate_shared_memory(dtype, [STAGES, PAGES * BN, DL], lat_desc.layout)
    pe = gl.allocate_shared_memory(dtype, [STAGES, PAGES * BN, DP], pe_desc.layout)
    bars = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(STAGES):
        mbarrier.init(bars.index(i), count=1)
    return lat, pe, bars


@gluon.jit
def _fill_ring(lat_desc, pe_desc, lat, pe, bars, pages, tiles):
    """The first copies: tile ``i`` into slot ``i`` for every slot (fewer if ``tiles`` is)."""
    STAGES: gl.constexpr = lat.shape[0]
    for i in gl.static_range(STAGES):
        if i < tiles:
            _copy(lat_desc, pe_desc, lat, pe, bars, pages, i, i)


@gluon.jit
def _stream_kernel(lat_desc, pe_desc, pages_ptr, sink_ptr, tiles, hold_ns,
                   STAGES: gl.constexpr, PAGES: gl.constexpr):  # fmt: skip
    lat, pe, bars = _ring(lat_desc, pe_desc, STAGES, PAGES)
    fence_async_shared()
    pages = pages_ptr + gl.program_id(0) * tiles * PAGES
    _fill_ring(lat_desc, pe_desc, lat, pe, bars, pages, tiles)
    for j in range(tiles):
        slot = j % STAGES
        mbarrier.wait(bars.index(slot), (j // STAGES) & 1)
        if hold_ns > 0:
            _sleep(hold_ns)
        if j + STAGES < tiles:
            _copy(lat_desc, pe_desc, lat, pe, bars, pages, j + STAGES, slot)
    for i in gl.static_range(STAGES):  # the last copies have landed; nothing to write
        mbarrier.invalidate(bars.index(i))
    gl.store(sink_ptr + gl.program_id(0), tiles)


@gluon.jit
def _ws_loader(lat_desc, pe_desc, lat, pe, bars, free, pages, tiles, FIRST: gl.constexpr,
               STEP: gl.constexpr, FILL: gl.constexpr):  # fmt: skip
    """A loader warp: (with ``FILL``) the first ``STAGES`` tiles, then tile ``j + STAGES``
    into tile ``j``'s slot once it is freed, for ``j = FIRST, FIRST + STEP, ..``."""
    STAGES: gl.constexpr = lat.shape[0]
    if FILL:
        _fill_ring(lat_desc, pe_desc, lat, pe, bars, pages, tiles)
    for j in range(FIRST, tiles - STAGES, STEP):
        slot = j % STAGES
        mbarrier.wait(free.index(slot), (j // STAGES) & 1)
        _copy(lat_desc, pe_desc, lat, pe, bars, pages, j + STAGES, slot)


@gluon.jit
def _ws_consumer(bars, free, tiles, hold_ns, FIRST: gl.constexpr, STEP: gl.constexpr):
    """A consuming warpgroup: waits for tiles ``j = FIRST, FIRST + STEP, ..``, holds each
    ``hold_ns``, frees its slot."""
    STAGES: gl.constexpr = bars.shape[0]
    for j in range(FIRST, tiles, STEP):
        slot = j % STAGES
        mbarrier.wait(bars.index(slot), (j // STAGES) & 1)
        if hold_ns > 0:
            _sleep(hold_ns)
        gl.thread_barrier()
        mbarrier.arrive(free.index(slot))


@gluon.jit
def _stream_ws_kernel(lat_desc, pe_desc, pages_ptr, sink_ptr, tiles, hold_ns,
                      STAGES: gl.constexpr, PAGES: gl.constexpr,
                      STRUCTURE: gl.constexpr):  # fmt: skip
    """The decode kernels' structures (``STRUCTURES``) with nothing computed."""
    lat, pe, bars = _ring(lat_desc, pe_desc, STAGES, PAGES)
    free = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(STAGES):
        mbarrier.init(free.index(i), count=1)
    fence_async_shared()
    pages = pages_ptr + gl.program_id(0) * tiles * PAGES
    if STRUCTURE == 1:
        gl.warp_specialize(
            [
                (_ws_consumer, (bars, free, tiles, hold_ns, 0, 1)),
                (_ws_loader, (lat_desc, pe_desc, lat, pe, bars, free, pages, tiles, 0, 1, True)),
            ],
            [1],
            [24],
        )
    elif STRUCTURE == 2:
        gl.warp_specialize(
            [
                (_ws_consumer, (bars, free, tiles, hold_ns, 0, 2)),
                (_ws_consumer, (bars, free, tiles, hold_ns, 1, 2)),
                (_ws_loader, (lat_desc, pe_desc, lat, pe, bars, free, pages, tiles, 0, 1, True)),
            ],
            [4, 1],
            [32, 24],
        )
    else:
        gl.warp_specialize(
            [
                (_ws_consumer, (bars, free, tiles, hold_ns, 0, 2)),
                (_ws_consumer, (bars, free, tiles, hold_ns, 1, 2)),
                (_ws_loader, (lat_desc, pe_desc, lat, pe, bars, free, pages, tiles, 0, 2, True)),
                (_ws_loader, (lat_desc, pe_desc, lat, pe, bars, free, pages, tiles, 1, 2, False)),
            ],
            [4, 1, 1],
            [32, 24, 24],
        )
    gl.store(sink_ptr + gl.program_id(0), tiles)


@gluon.jit
def _copy_half(desc, pe_desc, buf, pe, bars, pages, j, slot, COL: gl.constexpr,
               WITH_PE: gl.constexpr):  # fmt: skip
    """Columns ``COL ..`` of tile ``j``'s latent part (and, ``WITH_PE``, its rope part) into
    ring slot ``slot``."""
    bar = bars.index(slot)
    nbytes: gl.constexpr = desc.block_type.nbytes + (pe_desc.block_type.nbytes if WITH_PE else 0)
    mbarrier.expect(bar, nbytes)
    row = gl.load(pages + j) * desc.block_type.shape[0]
    tma.async_copy_global_to_shared(desc, [row, COL], bar, buf.index(slot))
    if WITH_PE:
        tma.async_copy_global_to_shared(pe_desc, [row, 2 * COL], bar, pe.index(slot))


@gluon.jit
def _half_side(desc, pe_desc, buf, pe, bars, pages, tiles, hold_ns, skew_ns,
               COL: gl.constexpr, WITH_PE: gl.constexpr):  # fmt: skip
    """One column half of every tile through its own ring (the seesaw kernel's split: columns
    0-255 by one warpgroup, 256-575 by the other), starting ``skew_ns`` late."""
    STAGES: gl.constexpr = buf.shape[0]
    if skew_ns > 0:
        _sleep(skew_ns)
    for i in gl.static_range(STAGES):
        if i < tiles:
            _copy_half(desc, pe_desc, buf, pe, bars, pages, i, i, COL, WITH_PE)
    for j in range(tiles):
        slot = j % STAGES
        mbarrier.wait(bars.index(slot), (j // STAGES) & 1)
        if hold_ns > 0:
            _sleep(hold_ns)
        if j + STAGES < tiles:
            _copy_half(desc, pe_desc, buf, pe, bars, pages, j + STAGES, slot, COL, WITH_PE)


@gluon.jit
def _stream_halves_kernel(half_desc, pe_desc, pages_ptr, sink_ptr, tiles, hold_ns, skew_ns,
                          STAGES: gl.constexpr):  # fmt: skip
    """Each tile read as two column halves by two independent parts (``halves``): the default
    partition (4 warps, one issuing) and a 1-warp worker."""
    dtype: gl.constexpr = half_desc.dtype
    BN: gl.constexpr = half_desc.block_type.shape[0]
    DH: gl.constexpr = half_desc.block_type.shape[1]
    left = gl.allocate_shared_memory(dtype, [STAGES, BN, DH], half_desc.layout)
    right = gl.allocate_shared_memory(dtype, [STAGES, BN, DH], half_desc.layout)
    pe = gl.allocate_shared_memory(dtype, [STAGES, BN, pe_desc.block_type.shape[1]],
                                   pe_desc.layout)  # fmt: skip
    bars_l = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    bars_r = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(STAGES):
        mbarrier.init(bars_l.index(i), count=1)
        mbarrier.init(bars_r.index(i), count=1)
    fence_async_shared()
    pages = pages_ptr + gl.program_id(0) * tiles
    gl.warp_specialize(
        [
            (_half_side, (half_desc, pe_desc, left, pe, bars_l, pages, tiles, hold_ns, 0, 0,
                          False)),
            (_half_side, (half_desc, pe_desc, right, pe, bars_r, pages, tiles, hold_ns, skew_ns,
                          DH, True)),
        ],
        [1],
        [24],
    )  # fmt: skip
    gl.store(sink_ptr + gl.program_id(0), tiles)


STRUCTURES = {"single": 0, "ws1": 1, "ws2": 2, "ws2x2": 3, "halves": 4}
"""How a program waits and refills: ``single``, one warp does both; ``ws1``, a consuming
warpgroup frees each slot and a loader warp refills it (the few-heads kernels); ``ws2``, two
consuming warpgroups on alternate tiles and one loader refilling in tile order (the fp8
tensor-core kernel before variant 46); ``ws2x2``, the same with a loader per warpgroup, each
refilling its warpgroup's slots (variant 46); ``halves``, each tile read as two column halves
(0-255; 256-511 with the rope) by two partitions with a ring each, the second starting
``--skew-ns`` late (the seesaw kernel's copies: do split rows stream as fast as whole ones?).
The two-warpgroup ones need an even ring; ``halves`` takes one page a tile."""


def run_case(
    layout: str,
    stages: int,
    hold_ns: int,
    programs: int,
    tiles: int,
    pages: int = 1,
    structure: str = "single",
    skew_ns: int = 0,
) -> dict[str, Any]:
    """Time one case; returns its record (us a call, TB/s of cache bytes)."""
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

    dtype = LAYOUTS[layout]
    n_pages = programs * tiles * pages
    nbytes = n_pages * BLOCK_N * (D_LAT + D_PE) * dtype.itemsize
    halves = structure == "halves"
    shape = [BLOCK_N, D_LAT // 2 if halves else D_LAT], [BLOCK_N, D_PE]
    layouts = [gl.NVMMASharedLayout.get_default_for(b, GL_DTYPES[dtype]) for b in shape]
    sink = torch.empty(programs, device="cuda", dtype=torch.int32)
    calls = []
    for _ in range(copies_for(nbytes)):
        cache = torch.randn(n_pages * BLOCK_N, D_LAT + D_PE, device="cuda").to(dtype)
        order = torch.randperm(n_pages, device="cuda", dtype=torch.int32)
        lat_desc, pe_desc = (
            TensorDescriptor(cache, list(cache.shape), list(cache.stride()), box, lay)
            for box, lay in zip(shape, layouts, strict=True)
        )

        def call(lat_desc=lat_desc, pe_desc=pe_desc, order=order) -> None:  # (descs hold cache)
            args = (lat_desc, pe_desc, order, sink, tiles, hold_ns)
            if halves:
                _stream_halves_kernel[(programs,)](*args, skew_ns, STAGES=stages, num_warps=4)
            elif structure == "single":
                _stream_kernel[(programs,)](*args, STAGES=stages, PAGES=pages, num_warps=1)
            else:
                _stream_ws_kernel[(programs,)](
                    *args, STAGES=stages, PAGES=pages, STRUCTURE=STRUCTURES[structure],
                    num_warps=4,
                )  # fmt: skip

        calls.append(call)
    timing = time_rotated_us(calls)
    return {
        "layout": layout,
        "structure": structure,
        "stages": stages,
        "pages": pages,
        "hold_ns": hold_ns,
        "skew_ns": skew_ns,
        "programs": programs,
        "tiles": tiles,
        "copies": len(calls),
        "us": round(timing.median_us, 2),
        "tbps": round(nbytes / timing.median_us / 1e6, 3),
        "kb_a_slot": nbytes // (programs * tiles) // 1024,
    }


def _int_list(text: str) -> list[int]:
    """``"2,4"`` -> [2, 4]; an argparse type (a clear error for anything else)."""
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        msg = f"expected comma-separated integers, got {text!r}"
        raise argparse.ArgumentTypeError(msg) from None
    if any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected non-negative integers, got {text!r}")
    return values


def _names_in(choices: dict[str, Any], what: str) -> Any:
    """An argparse type: ``"a,b"`` -> ["a", "b"], each a key of ``choices`` (else a clear
    error naming the unknown ones and the choices)."""

    def parse(text: str) -> list[str]:
        names = text.split(",")
        unknown = [n for n in names if n not in choices]
        if unknown:
            msg = f"unknown {what}(s) {unknown}; choose from {list(choices)}"
            raise argparse.ArgumentTypeError(msg)
        return names

    return parse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layouts", type=_names_in(LAYOUTS, "layout"), default="fp8,bf16")
    parser.add_argument("--stages", type=_int_list, default="2,4", help="ring depths")
    parser.add_argument("--hold-ns", type=_int_list, default="0", help="hold a slot this long")
    parser.add_argument("--programs", type=int, default=128, help="programs (one a SM)")
    parser.add_argument("--tiles", type=int, default=32, help="tiles (ring slots' loads) a program")
    parser.add_argument("--pages", type=_int_list, default="1", help="64-token pages a tile")
    parser.add_argument(
        "--structures",
        type=_names_in(STRUCTURES, "structure"),
        default="single",
        help=", ".join(STRUCTURES),
    )
    parser.add_argument(
        "--skew-ns", type=_int_list, default="0", help="halves: the second half's late start"
    )
    parser.add_argument("--out", help="write the records as JSON lines here")
    args = parser.parse_args(argv)
    if args.programs < 1 or args.tiles < 1 or 0 in args.stages or 0 in args.pages:
        parser.error("--programs, --tiles and each of --stages and --pages must be at least 1")
    two_groups = {"ws2", "ws2x2"} & set(args.structures)
    if two_groups and any(stages % 2 for stages in args.stages):
        parser.error(f"{sorted(two_groups)} need an even --stages (each slot serves one group)")
    if "halves" in args.structures and args.pages != [1]:
        parser.error("halves reads one page a tile: leave --pages at 1")
    if not torch.cuda.is_available() or torch.cuda.get_device_capability()[0] < 9:
        print("probe_tma_stream: needs a CUDA GPU with TMA (sm_90 or newer)", file=sys.stderr)
        return 2
    records = []
    for layout in args.layouts:
        for pages, stages in ((p, s) for p in args.pages for s in args.stages):
            slot_kb = pages * (D_LAT + D_PE) * BLOCK_N * LAYOUTS[layout].itemsize / 1024
            if stages * slot_kb > 220:
                print(f"skipped {layout}, {stages} x {slot_kb:.0f} KB: over shared memory",
                      file=sys.stderr)  # fmt: skip
                continue
            for structure, hold in ((t, h) for t in args.structures for h in args.hold_ns):
                for skew in args.skew_ns if structure == "halves" else [0]:
                    record = run_case(
                        layout, stages, hold, args.programs, args.tiles, pages, structure, skew
                    )
                    print(json.dumps(record), flush=True)
                    records.append(record)
    if args.out:
        with open(args.out, "w") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in records)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
