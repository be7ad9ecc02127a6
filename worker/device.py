"""Device fingerprints: who measured, with what software.

``fingerprint(index)`` reads one GPU through ``torch.cuda`` (and NVML via ``pynvml`` where
present, for the driver, UUID and clocks); with no GPU, or under ``TRITON_INTERPRET=1``, the
machine has one device: the CPU interpreter (``arch="cpu-interpreter"``), whose timings are
meaningless (functional checks only).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from mlafleet.kernels.bundle import Software
from mlafleet.kernels.configs import CPU_INTERPRETER, DeviceLimits

from .schemas import DeviceFingerprint, DeviceSample

logger = logging.getLogger(__name__)

INTERPRETER_ARCH = "cpu-interpreter"


def interpreter_mode() -> bool:
    """True when Triton runs kernels on the CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0", "false", "False")


def _torch() -> Any:
    import torch

    return torch


def _triton_version() -> str:
    try:
        import triton

        return str(triton.__version__)
    except ImportError:  # pragma: no cover - triton is a dependency
        return "absent"


def _nvml() -> Any | None:
    """The initialised ``pynvml`` module, or None when NVML is unavailable."""
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml
    except Exception:  # NVML missing or no driver: clocks/driver simply stay unknown
        return None


def pci_bus_id(index: int) -> str | None:
    """The PCI bus id of CUDA device ``index`` as NVML spells it (``"00000000:1B:00.0"``), from
    torch's device properties; None where torch does not give it."""
    props = _torch().cuda.get_device_properties(index)
    parts = [getattr(props, f"pci_{name}_id", None) for name in ("domain", "bus", "device")]
    if any(part is None for part in parts):
        return None
    domain, bus, dev = parts
    return f"{domain:08X}:{bus:02X}:{dev:02X}.0"


def _nvml_handle(nvml: Any, index: int) -> Any | None:
    """NVML's handle of CUDA device ``index``: found by its PCI bus id where torch gives it
    (NVML numbers the machine's GPUs, CUDA only those ``CUDA_VISIBLE_DEVICES`` leaves, as Ray
    sets it), else by index."""
    bus_id = _safe(lambda: pci_bus_id(index))
    try:
        if bus_id is not None:
            return nvml.nvmlDeviceGetHandleByPciBusId(bus_id)
        return nvml.nvmlDeviceGetHandleByIndex(index)
    except Exception:
        return None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def gpu_count() -> int:
    """Number of GPUs torch can use (0 in interpreter mode or without CUDA/ROCm)."""
    if interpreter_mode():
        return 0
    torch = _torch()
    return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0


def use_interpreter_without_gpu() -> bool:
    """Without a GPU, make Triton run kernels on its CPU interpreter (``TRITON_INTERPRET=1``,
    inherited by the worker's compile and timing processes); a value already set is kept.
    Call before anything imports triton. Returns whether this machine has a GPU."""
    has_gpu = gpu_count() > 0
    if not has_gpu:
        os.environ.setdefault("TRITON_INTERPRET", "1")
    return has_gpu


def cpu_fingerprint() -> DeviceFingerprint:
    """The CPU-interpreter device of this machine."""
    torch = _torch()
    return DeviceFingerprint(
        vendor="cpu",
        name=INTERPRETER_ARCH,
        arch=INTERPRETER_ARCH,
        index=0,
        sm_count=os.cpu_count() or 1,
        memory_bytes=_host_memory_bytes(),
        software=Software(torch=str(torch.__version__), triton=_triton_version()),
        host=socket.gethostname(),
    )


def _host_memory_bytes() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 0


def fingerprint(index: int = 0) -> DeviceFingerprint:
    """Fingerprint of local device ``index``.

    Args:
        index: CUDA/ROCm device index; 0 is the CPU interpreter when there is no GPU.

    Returns:
        The device with its architecture, sizes, clocks and software versions.

    Raises:
        ValueError: ``index`` is not a local device.
    """
    count = gpu_count()
    if count == 0:
        if index != 0:
            raise ValueError(
                f"device index: expected 0 (the CPU interpreter; no GPU here), got {index}"
            )
        return cpu_fingerprint()
    if not 0 <= index < count:
        raise ValueError(
            f"device index: expected 0..{count - 1} ({count} GPU(s) here), got {index}; "
            "see `mlafleet devices`"
        )
    torch = _torch()
    props = torch.cuda.get_device_properties(index)
    is_rocm = torch.version.hip is not None
    if is_rocm:
        arch = str(getattr(props, "gcnArchName", "gfx")).split(":")[0]
        vendor = "amd"
    else:
        arch = f"sm_{props.major}{props.minor}"
        vendor = "nvidia"
    nvml: Any = _nvml() if not is_rocm else None
    handle = _nvml_handle(nvml, index) if nvml is not None else None
    driver = uuid = None
    sm_clock = mem_clock = None
    if nvml is not None:
        try:
            driver = _text(nvml.nvmlSystemGetDriverVersion())
        except Exception:
            driver = None
    if handle is not None:
        uuid = _safe(lambda: _text(nvml.nvmlDeviceGetUUID(handle)))
        sm_clock = _safe(lambda: int(nvml.nvmlDeviceGetMaxClockInfo(handle, nvml.NVML_CLOCK_SM)))
        mem_clock = _safe(lambda: int(nvml.nvmlDeviceGetMaxClockInfo(handle, nvml.NVML_CLOCK_MEM)))
    if uuid is None and getattr(props, "uuid", None) is not None:
        uuid = str(props.uuid)
    shared = int(
        getattr(props, "shared_memory_per_block_optin", 0)
        or getattr(props, "shared_memory_per_block", 0)
    )
    return DeviceFingerprint(
        vendor=vendor,
        name=str(props.name),
        arch=arch,
        index=index,
        uuid=uuid,
        sm_count=int(props.multi_processor_count),
        memory_bytes=int(props.total_memory),
        l2_bytes=int(getattr(props, "L2_cache_size", 0)),
        max_shared_mem_bytes=shared,
        sm_clock_mhz=sm_clock,
        mem_clock_mhz=mem_clock,
        software=Software(
            driver=driver,
            cuda=None if is_rocm else torch.version.cuda,
            rocm=torch.version.hip if is_rocm else None,
            torch=str(torch.__version__),
            triton=_triton_version(),
        ),
        host=socket.gethostname(),
    )


def _safe(read: Any) -> Any:
    try:
        return read()
    except Exception:
        return None


def local_devices() -> list[DeviceFingerprint]:
    """Every local GPU, or the CPU interpreter alone when there is none."""
    count = gpu_count()
    if count == 0:
        return [cpu_fingerprint()]
    return [fingerprint(i) for i in range(count)]


def limits_of(device: DeviceFingerprint) -> DeviceLimits:
    """The ``DeviceLimits`` a kernel's tuning space is pruned with, for ``device``."""
    if device.arch == INTERPRETER_ARCH:
        return replace(CPU_INTERPRETER, sm_count=max(device.sm_count, 1))
    limits = DeviceLimits(arch=device.arch, sm_count=device.sm_count or 132)
    if device.max_shared_mem_bytes:
        limits = replace(limits, max_shared_mem_bytes=device.max_shared_mem_bytes)
    return limits


def device_sampler(index: int) -> Callable[[], DeviceSample] | None:
    """A reader of GPU ``index``'s state now (``device_sample``) with NVML and the device's
    handle looked up once, so that it can be polled (the benchmarks read it every
    millisecond); None without NVML."""
    if interpreter_mode():
        return None
    nvml: Any = _nvml()
    handle = _nvml_handle(nvml, index) if nvml is not None else None
    if handle is None:
        return None
    # (the reasons' call before driver 535: "ThrottleReasons"; a pynvml with neither reads none)
    reasons = getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None) or getattr(
        nvml, "nvmlDeviceGetCurrentClocksThrottleReasons", None
    )

    def clock(kind: int) -> int:
        return int(nvml.nvmlDeviceGetClockInfo(handle, kind))

    def read() -> DeviceSample:
        power_mw = _safe(lambda: nvml.nvmlDeviceGetPowerUsage(handle))
        return DeviceSample(
            sm_clock_mhz=_safe(lambda: clock(nvml.NVML_CLOCK_SM)),
            mem_clock_mhz=_safe(lambda: clock(nvml.NVML_CLOCK_MEM)),
            temperature_c=_safe(
                lambda: int(nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU))
            ),
            power_w=None if power_mw is None else float(power_mw) / 1000.0,
            clock_event_reasons=None if reasons is None else _safe(lambda: int(reasons(handle))),
        )

    return read


def device_sample(index: int) -> DeviceSample | None:
    """Clocks, temperature, power and clock-event reasons of GPU ``index`` now (NVML); None
    without NVML; a field NVML could not read is None."""
    read = device_sampler(index)
    return None if read is None else read()
