"""The clock a benchmark's timings ran at: SM clock, board power and clock-event reasons.

A row's time depends on the clock it ran at, and the H200 lowers its clock under heavy load
within ~30 ms of it (its 700 W power cap): in the eighteenth session's telemetry the 128 x 128
x 4K decode row timed at 1980 MHz throughout, while 128 x 128 x 16K's timings ran at 1515-1950
MHz with the power cap engaged (docs/PERFORMANCE.md, "Eighteenth session"). ``ClockSampler``
polls the worker's NVML reader (``mlafleet.worker.device.device_sampler``: pynvml, the GPU
found by its PCI bus id) from a background thread while the timings run, so every row can say
what clock it got and whether it was capped. Where there is no NVML (a CPU machine, a ROCm
GPU, no ``pynvml``) the reader is None and rows carry no clock. NVML's calls release the GIL,
so the polling does not hold up the thread that launches the timed graphs.
"""

from __future__ import annotations

import statistics
import threading
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

from mlafleet.worker.schemas import DeviceSample

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

Reader = Callable[[], DeviceSample | None]
"""One reading now (``device_sampler``'s); a reading without an SM clock is skipped."""


def reason_names(bits: int) -> list[str]:
    """The names of the reason bits set in ``bits`` (unknown bits as hex)."""
    names = [name for bit, name in REASONS.items() if bits & bit]
    unknown = bits & ~sum(REASONS)
    return names + ([hex(unknown)] if unknown else [])


def summarize_clock(samples: Sequence[DeviceSample]) -> dict[str, Any] | None:
    """The SM clock's min / median / max (MHz), the highest power reading (W; None without
    one), the reasons seen, and whether the power cap or a thermal limit held the clock down
    at any reading; None without samples."""
    clocks = sorted(s.sm_clock_mhz for s in samples if s.sm_clock_mhz is not None)
    if not clocks:
        return None
    powers = [s.power_w for s in samples if s.power_w is not None]
    bits = 0
    for s in samples:
        bits |= s.clock_event_reasons or 0
    return {
        "sm_mhz_min": clocks[0],
        "sm_mhz_median": int(statistics.median(clocks)),
        "sm_mhz_max": clocks[-1],
        "power_w_max": round(max(powers), 1) if powers else None,
        "reasons": reason_names(bits),
        "power_capped": bool(bits & POWER_CAP_BITS),
        "thermal": bool(bits & THERMAL_BITS),
        "samples": len(clocks),
    }


class ClockSampler:
    """Reads ``reader`` every ``period_s`` from a background thread while entered (and once on
    entry and on exit; readings without a clock are skipped); ``summary()`` then describes the
    window (``summarize_clock``: None if no reading had a clock).

    Raises:
        ValueError: ``period_s`` is not positive.
    """

    def __init__(self, reader: Reader, *, period_s: float = 0.001) -> None:
        if not period_s > 0:
            raise ValueError(f"period_s: expected a positive interval, got {period_s}")
        self._reader = reader
        self._period_s = period_s
        self._samples: list[DeviceSample] = []
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
        if sample is not None and sample.sm_clock_mhz is not None:
            self._samples.append(sample)

    def _poll(self) -> None:
        while not self._stop.wait(self._period_s):
            self._read()

    @property
    def samples(self) -> list[DeviceSample]:
        """The readings of the last window, in order."""
        return list(self._samples)

    def summary(self) -> dict[str, Any] | None:
        """``summarize_clock`` of the last window."""
        return summarize_clock(self._samples)
