"""``bench/telemetry.py``: the sampler thread over the worker's NVML reader, the summary.
(The reader itself, ``worker.device.device_sampler``: ``tests/worker/test_device.py``.)"""

from __future__ import annotations

import itertools
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from bench_scripts import BENCH, run_script

from mlafleet.worker.schemas import DeviceSample


def _module(name: str) -> Any:
    sys.path.insert(0, str(BENCH))
    try:
        return __import__(name)
    finally:
        sys.path.remove(str(BENCH))


telemetry = _module("telemetry")


def _sample(mhz: int | None, reasons: int = 0, power_w: float | None = 500.0) -> DeviceSample:
    return DeviceSample(sm_clock_mhz=mhz, power_w=power_w, clock_event_reasons=reasons)


def test_summary_gives_the_clock_range_and_whether_power_held_it_down():
    samples = [_sample(1980), _sample(1785, 0x4, 690.0), _sample(1515, 0x4, 700.4)]
    summary = telemetry.summarize_clock(samples)
    assert summary == {
        "sm_mhz_min": 1515,
        "sm_mhz_median": 1785,
        "sm_mhz_max": 1980,
        "power_w_max": 700.4,
        "reasons": ["sw_power_cap"],
        "power_capped": True,
        "thermal": False,
        "samples": 3,
    }
    cool = telemetry.summarize_clock([_sample(1980), _sample(1965)])
    assert not cool["power_capped"]
    assert cool["reasons"] == []
    assert telemetry.summarize_clock([]) is None


def test_reason_bits_are_named_and_unknown_ones_kept():
    assert telemetry.reason_names(0x4 | 0x40) == ["sw_power_cap", "hw_thermal"]
    assert telemetry.reason_names(0x1000) == ["0x1000"]
    thermal = telemetry.summarize_clock([_sample(1400, 0x20)])
    assert thermal["thermal"]
    assert not thermal["power_capped"]


def test_sampler_reads_while_entered_and_stops_on_exit():
    counter = itertools.count()
    reader_threads: set[str] = set()

    def reader() -> Any:
        reader_threads.add(threading.current_thread().name)
        return _sample(1000 + next(counter))

    sampler = telemetry.ClockSampler(reader, period_s=0.001)
    with sampler:
        time.sleep(0.05)
    taken = sampler.samples
    assert len(taken) >= 3  # on entry, from the thread, on exit
    assert [s.sm_clock_mhz for s in taken] == sorted(s.sm_clock_mhz for s in taken)  # in order
    assert "clock-sampler" in reader_threads  # the polling ran off the timing thread
    time.sleep(0.01)
    assert len(sampler.samples) == len(taken)  # nothing read after the window
    assert sampler.summary()["samples"] == len(taken)
    with sampler:  # a second window starts afresh
        pass
    assert 2 <= len(sampler.samples) < len(taken)


@pytest.mark.parametrize("period", [0.0, -1.0, float("nan")])
def test_sampler_needs_a_positive_period(period: float):
    with pytest.raises(ValueError, match="period_s: expected a positive interval"):
        telemetry.ClockSampler(lambda: _sample(1), period_s=period)


def test_a_reading_without_a_clock_is_skipped_not_recorded_as_zero():
    clock: list[int | None] = [None]
    sampler = telemetry.ClockSampler(lambda: _sample(clock[0]))
    with sampler:
        time.sleep(0.005)
    assert sampler.samples == []
    assert sampler.summary() is None  # (the row then carries no clock)
    clock[0] = 1755
    with sampler:
        pass
    assert sampler.summary()["sm_mhz_median"] == 1755
    # no power reading (NVML_ERROR_NOT_SUPPORTED): the clock still counts
    assert telemetry.summarize_clock([_sample(1755, power_w=None)])["power_w_max"] is None


def test_bench_rows_print_and_summarise_their_clock():
    bench_decode = _module("bench_decode")
    anchor = {a.name: a for a in bench_decode.anchor_shapes(64)}["b128-h128-16k"]
    row = {
        "shape": anchor.name,
        "kv": "bf16",
        "variant": "default",
        "config": {"block_size_q": 64, "block_size_k": 64, "num_warps": 8, "num_stages": 1},
        "kernel": "many_heads_seesaw",
        "engine": "gluon",
        "splits": 1,
        "rel_l2": 1.3e-3,
        "nan_in_out": 0.0,
        "us": 1039.2,
        "gbps": 2360.0,
        "tflops": 564.0,
        "clock": telemetry.summarize_clock([_sample(1785, 0x4), _sample(1950)]),
    }
    assert "1867MHz capped" in bench_decode._fmt(row)  # (the median of 1785 and 1950)
    (record,) = bench_decode.summarize([row], [anchor])
    assert (record["sm_mhz_median"], record["power_capped"]) == (1867, True)
    no_clock = {k: v for k, v in row.items() if k != "clock"}
    assert "MHz" not in bench_decode._fmt(no_clock)
    (record,) = bench_decode.summarize([no_clock], [anchor])
    assert record["sm_mhz_median"] is None


def test_ab_summary_gives_each_sides_clock():
    ab = _module("ab_decode")
    records = [
        {"row": "a:bf16", "side": side, "us": us, "clock": {"sm_mhz_median": mhz}}
        for side, us, mhz in (("main", 250.0, 1980), ("candidate", 251.0, 1965))
    ]
    (entry,) = ab.summarize_ab(records)
    assert (entry["main_mhz"], entry["candidate_mhz"]) == ([1980], [1965])
    (bare,) = ab.summarize_ab([{k: v for k, v in r.items() if k != "clock"} for r in records])
    assert "main_mhz" not in bare


@pytest.mark.gpu
def test_timed_bench_rows_carry_their_clock(tmp_path: Path):
    out = tmp_path / "rows.json"
    done = run_script("bench_decode.py", "--shapes", "b64-h16-4k", "--check-seqs", "1",
                      "--out", str(out), gpu=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    (row,) = json.loads(out.read_text())["rows"]
    clock = row["clock"]
    assert 100 < clock["sm_mhz_min"] <= clock["sm_mhz_median"] <= clock["sm_mhz_max"] < 5000
    assert clock["samples"] >= 2
    assert "MHz" in done.stdout
    bare = run_script("bench_decode.py", "--shapes", "b64-h16-4k", "--check-seqs", "1",
                      "--no-clock", "--out", str(out), gpu=True)  # fmt: skip
    assert bare.returncode == 0, bare.stderr
    assert "clock" not in json.loads(out.read_text())["rows"][0]
