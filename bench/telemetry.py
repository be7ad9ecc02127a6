"""The clock a benchmark's timings ran at: SM clock, board power and clock-event reasons.

A row's time depends on the clock it ran at, and the H200 lowers its clock under heavy load
within ~30 ms of it (its 700 W power cap): in the eighteenth session's telemetry the 128 x 128
x 4K decode row timed at 1980 MHz throughout, while 128 x 128 x 16K's timings ran at 1515-1950
MHz with the power cap engaged (docs/PERFORMANCE.md, "Eighteenth session"). ``ClockSampler``
polls NVML from a background thread while the timings run, so every row can say what clock it
got and whether it was capped.

NVML is reached through ``ctypes`` (``libnvidia-ml.so.1``, shipped with the driver): no Python
dependency. ``nvml_reader`` returns None where there is no NVML (a CPU machine, a ROCm GPU),
and rows then carry no clock. The calls release the GIL, so the polling does not hold up the
thread that launches the timed graphs.
"""

from __future__ import annotations

import ctypes
import math
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

NVML_CLOCK_SM = 1
# NVML's clock-event reason bits (nvmlClocksEventReasons): why the clock is below its maximum
REASONS = {
    0x1: "gpu_idle",
    0x2: "applications_clocks",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal",
    0x40: "hw_thermal",
    0x80: "hw_power_brake",
    0x100: "display_clocks",
}
POWER_CAP_BITS = 0x4 | 0x80
THERMAL_BITS = 0x20 | 0x40


@dataclass(frozen=True)
class ClockSample:
    """One reading: seconds on ``time.perf_counter``, SM clock (MHz), board power (W; NVML's
    averaged reading) and the clock-event reason bits."""

    t_s: float
    sm_mhz: int
    power_w: float
    reasons: int


Reader = Callable[[], ClockSample | None]
"""One reading now, or None where NVML could not give it (the sampler skips it)."""


def reason_names(bits: int) -> list[str]:
    """The names of the reason bits set in ``bits`` (unknown bits as hex)."""
    names = [name for bit, name in REASONS.items() if bits & bit]
    unknown = bits & ~sum(REASONS)
    return names + ([hex(unknown)] if unknown else [])


def torch_pci_bus_id(device_index: int) -> str | None:
    """The PCI bus id of CUDA device ``device_index`` as NVML writes it
    (``"00000000:1B:00.0"``), from torch's device properties, or None where torch does not
    give it."""
    import torch

    props = torch.cuda.get_device_properties(device_index)
    parts = [getattr(props, f"pci_{name}_id", None) for name in ("domain", "bus", "device")]
    if any(part is None for part in parts):
        return None
    domain, bus, device = parts
    return f"{domain:08X}:{bus:02X}:{device:02X}.0"


def nvml_reader(index: int = 0, *, pci_bus_id: str | None = None) -> Reader | None:
    """A reader of the GPU at ``pci_bus_id`` (``torch_pci_bus_id``: the CUDA device timed,
    whatever ``CUDA_VISIBLE_DEVICES`` does to the numbering), else of NVML's GPU ``index``; None
    when NVML is not there."""
    try:
        nvml = ctypes.CDLL("libnvidia-ml.so.1")
        if nvml.nvmlInit_v2() != 0:
            return None
        handle = ctypes.c_void_p()
        if pci_bus_id is not None:
            found = nvml.nvmlDeviceGetHandleByPciBusId_v2(pci_bus_id.encode(), ctypes.byref(handle))
        else:
            found = nvml.nvmlDeviceGetHandleByIndex_v2(index, ctypes.byref(handle))
        if found != 0:
            return None
        # (the reasons' call before driver 535: "ThrottleReasons")
        get_reasons = getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None)
        if get_reasons is None:
            get_reasons = nvml.nvmlDeviceGetCurrentClocksThrottleReasons
    except (OSError, AttributeError):
        return None
    clock, milliwatts, reasons = ctypes.c_uint(), ctypes.c_uint(), ctypes.c_ulonglong()

    def read() -> ClockSample | None:
        # (NVML returns an error code, 0 for success: no clock, no reading, rather than a
        # stale or zero one; a board without a power reading or reasons still gives its clock)
        if nvml.nvmlDeviceGetClockInfo(handle, NVML_CLOCK_SM, ctypes.byref(clock)) != 0:
            return None
        power_ok = nvml.nvmlDeviceGetPowerUsage(handle, ctypes.byref(milliwatts)) == 0
        reasons_ok = get_reasons(handle, ctypes.byref(reasons)) == 0
        return ClockSample(
            time.perf_counter(),
            clock.value,
            milliwatts.value / 1000.0 if power_ok else math.nan,
            reasons.value if reasons_ok else 0,
        )

    return read


def clock_reader_for(device_index: int) -> Reader | None:
    """``nvml_reader`` of CUDA device ``device_index`` (by its PCI bus id where torch gives it,
    else by index)."""
    return nvml_reader(device_index, pci_bus_id=torch_pci_bus_id(device_index))


def summarize_clock(samples: Sequence[ClockSample]) -> dict[str, Any] | None:
    """The SM clock's min / median / max (MHz), the highest power reading (W; None without
    one), the reasons seen, and whether the power cap or a thermal limit held the clock down
    at any reading; None without samples."""
    if not samples:
        return None
    clocks = sorted(s.sm_mhz for s in samples)
    powers = [s.power_w for s in samples if not math.isnan(s.power_w)]
    bits = 0
    for s in samples:
        bits |= s.reasons
    return {
        "sm_mhz_min": clocks[0],
        "sm_mhz_median": int(statistics.median(clocks)),
        "sm_mhz_max": clocks[-1],
        "power_w_max": round(max(powers), 1) if powers else None,
        "reasons": reason_names(bits),
        "power_capped": bool(bits & POWER_CAP_BITS),
        "thermal": bool(bits & THERMAL_BITS),
        "samples": len(samples),
    }


class ClockSampler:
    """Reads ``reader`` every ``period_s`` from a background thread while entered (and once on
    entry and on exit; failed readings are skipped); ``summary()`` then describes the window
    (``summarize_clock``: None if no reading succeeded).

    Raises:
        ValueError: ``period_s`` is not positive.
    """

    def __init__(self, reader: Reader, *, period_s: float = 0.001) -> None:
        if not period_s > 0:
            raise ValueError(f"period_s: expected a positive interval, got {period_s}")
        self._reader = reader
        self._period_s = period_s
        self._samples: list[ClockSample] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> ClockSampler:
        self._samples = []
        self._read()
        self._stop.clear()
        self._thread = threading.Thread(target=self._poll, name="clock-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._read()

    def _read(self) -> None:
        sample = self._reader()
        if sample is not None:
            self._samples.append(sample)

    def _poll(self) -> None:
        while not self._stop.wait(self._period_s):
            self._read()

    @property
    def samples(self) -> list[ClockSample]:
        """The readings of the last window, in order."""
        return list(self._samples)

    def summary(self) -> dict[str, Any] | None:
        """``summarize_clock`` of the last window."""
        return summarize_clock(self._samples)
