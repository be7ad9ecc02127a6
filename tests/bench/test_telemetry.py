"""``bench/telemetry.py``: NVML readings through ctypes, the sampler thread, the summary."""

from __future__ import annotations

import ctypes
import itertools
import json
import math
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from bench_scripts import BENCH, run_script


def _module(name: str) -> Any:
    sys.path.insert(0, str(BENCH))
    try:
        return __import__(name)
    finally:
        sys.path.remove(str(BENCH))


telemetry = _module("telemetry")


def _sample(mhz: int, reasons: int = 0, power_w: float = 500.0) -> Any:
    return telemetry.ClockSample(t_s=0.0, sm_mhz=mhz, power_w=power_w, reasons=reasons)


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
    assert [s.sm_mhz for s in taken] == sorted(s.sm_mhz for s in taken)  # in order
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


class _FakeNvml:
    """What ``nvml_reader`` calls of libnvidia-ml (its names), writing through the ``byref``
    pointers."""

    def __init__(self, init_status: int = 0, event_reasons: bool = True) -> None:
        self.init_status = init_status
        self.clock_status = 0
        self.power_status = 0
        self.index = None
        self.pci_bus_id = None
        if event_reasons:
            self.nvmlDeviceGetCurrentClocksEventReasons = self._reasons
        else:  # a driver before 535
            self.nvmlDeviceGetCurrentClocksThrottleReasons = self._reasons

    def nvmlInit_v2(self) -> int:  # noqa: N802
        return self.init_status

    def nvmlDeviceGetHandleByIndex_v2(self, index: int, handle: Any) -> int:  # noqa: N802
        self.index = index
        return 0

    def nvmlDeviceGetHandleByPciBusId_v2(self, bus_id: bytes, handle: Any) -> int:  # noqa: N802
        self.pci_bus_id = bus_id
        return 0 if bus_id.startswith(b"00000000:") else 2  # (2: NVML_ERROR_INVALID_ARGUMENT)

    def nvmlDeviceGetClockInfo(self, handle: Any, kind: int, out: Any) -> int:  # noqa: N802
        out._obj.value = 1755 if kind == telemetry.NVML_CLOCK_SM else 0
        return self.clock_status

    def nvmlDeviceGetPowerUsage(self, handle: Any, out: Any) -> int:  # noqa: N802
        out._obj.value = 695_500  # milliwatts
        return self.power_status

    def _reasons(self, handle: Any, out: Any) -> int:
        out._obj.value = 0x4
        return 0


@pytest.mark.parametrize("event_reasons", [True, False])
def test_nvml_reader_reads_clock_power_and_reasons(
    monkeypatch: pytest.MonkeyPatch, event_reasons: bool
):
    fake = _FakeNvml(event_reasons=event_reasons)
    monkeypatch.setattr(ctypes, "CDLL", lambda name: fake)
    read = telemetry.nvml_reader(1)
    assert fake.index == 1
    sample = read()
    assert (sample.sm_mhz, sample.power_w, sample.reasons) == (1755, 695.5, 0x4)


def test_a_failed_reading_is_skipped_not_recorded_as_zero(monkeypatch: pytest.MonkeyPatch):
    fake = _FakeNvml()
    monkeypatch.setattr(ctypes, "CDLL", lambda name: fake)
    read = telemetry.nvml_reader()
    fake.clock_status = 999  # NVML_ERROR_UNKNOWN
    assert read() is None
    sampler = telemetry.ClockSampler(read)
    with sampler:
        time.sleep(0.005)
    assert sampler.samples == []
    assert sampler.summary() is None  # (the row then carries no clock)
    fake.clock_status = 0
    with sampler:
        pass
    assert sampler.summary()["sm_mhz_median"] == 1755
    fake.power_status = 3  # NVML_ERROR_NOT_SUPPORTED: the clock still counts
    sample = read()
    assert sample.sm_mhz == 1755
    assert math.isnan(sample.power_w)
    assert telemetry.summarize_clock([sample])["power_w_max"] is None


def test_the_timed_device_is_found_by_its_pci_bus_id(monkeypatch: pytest.MonkeyPatch):
    fake = _FakeNvml()
    monkeypatch.setattr(ctypes, "CDLL", lambda name: fake)
    assert telemetry.nvml_reader(3, pci_bus_id="00000000:1B:00.0") is not None
    assert (fake.pci_bus_id, fake.index) == (b"00000000:1B:00.0", None)  # not by index
    assert telemetry.nvml_reader(pci_bus_id="0001:1B:00.0") is None  # NVML knows no such GPU


def test_torch_gives_the_pci_bus_id_in_nvmls_spelling(monkeypatch: pytest.MonkeyPatch):
    import torch

    class Props:
        pci_domain_id, pci_bus_id, pci_device_id = 0, 0x1B, 0

    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: Props())
    assert telemetry.torch_pci_bus_id(0) == "00000000:1B:00.0"
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: object())
    assert telemetry.torch_pci_bus_id(0) is None  # an older torch: NVML's index instead


def test_no_nvml_means_no_reader(monkeypatch: pytest.MonkeyPatch):
    def missing(name: str) -> Any:
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr(ctypes, "CDLL", missing)
    assert telemetry.nvml_reader() is None
    monkeypatch.setattr(ctypes, "CDLL", lambda name: _FakeNvml(init_status=9))  # no driver
    assert telemetry.nvml_reader() is None


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
def test_nvml_reads_the_gpu_the_tests_run_on():
    read = telemetry.clock_reader_for(0)
    assert read is not None, "NVML (libnvidia-ml.so.1) should come with the NVIDIA driver"
    sample = read()
    assert 100 < sample.sm_mhz < 5000
    assert sample.power_w > 0


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
