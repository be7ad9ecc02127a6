"""Device fingerprints: the CPU interpreter on a machine without a GPU, and (``gpu``) a GPU's."""

from __future__ import annotations

import socket

import pytest
from worker_factories import make_device

from mlafleet.worker import device

NO_GPU = pytest.mark.skipif(
    device.gpu_count() > 0, reason="the interpreter's device: a machine without a GPU"
)


@NO_GPU
def test_cpu_fingerprint_is_the_interpreter() -> None:
    devs = device.local_devices()
    assert len(devs) == 1
    fp = devs[0]
    assert fp.arch == "cpu-interpreter"
    assert fp.vendor == "cpu"
    assert fp.host == socket.gethostname()
    assert fp.software.triton.startswith("3.")
    assert fp.software.torch
    assert fp.sm_count >= 1
    assert fp.memory_bytes > 0
    assert fp.env_key.startswith("driver=None;cuda=None")
    assert device.fingerprint(0) == fp


def test_fingerprint_of_a_missing_device_says_what_exists() -> None:
    missing = device.gpu_count() + 2
    with pytest.raises(ValueError, match=rf"expected 0.*got {missing}"):
        device.fingerprint(missing)


@NO_GPU
def test_no_nvml_sample_on_the_interpreter() -> None:
    assert device.interpreter_mode()
    assert device.device_sample(0) is None


def test_limits_of_a_gpu_and_the_interpreter() -> None:
    gpu = device.limits_of(make_device(sm_count=78, max_shared_mem_bytes=232448))
    assert gpu.arch == "sm_90"
    assert gpu.sm_count == 78
    assert gpu.max_shared_mem_bytes == 232448
    cpu = device.limits_of(device.cpu_fingerprint())
    assert cpu.is_interpreter


@pytest.mark.gpu
def test_gpu_fingerprint_names_the_architecture_sizes_and_driver() -> None:
    import torch

    devs = device.local_devices()
    assert len(devs) == torch.cuda.device_count()
    fp = devs[0]
    props = torch.cuda.get_device_properties(0)
    assert fp.vendor == "nvidia"
    assert fp.arch == f"sm_{props.major}{props.minor}"
    assert fp.name == props.name
    assert fp.sm_count == props.multi_processor_count
    assert fp.memory_bytes == props.total_memory
    assert fp.software.cuda == torch.version.cuda
    assert "driver=None" not in fp.env_key  # (the driver version is part of a result's key)
    assert device.fingerprint(0) == fp


@pytest.mark.gpu
def test_nvml_reads_the_gpu_the_tests_run_on() -> None:
    read = device.device_sampler(0)
    assert read is not None, "NVML (pynvml over the driver's libnvidia-ml) should be there"
    sample = read()
    assert sample.sm_clock_mhz is not None
    assert 100 < sample.sm_clock_mhz < 5000
    assert sample.power_w is not None
    assert sample.power_w > 0
    assert sample.clock_event_reasons is not None


class _FakeNvml:
    """The part of ``pynvml`` the sampler calls (its names)."""

    NVML_CLOCK_SM, NVML_CLOCK_MEM, NVML_TEMPERATURE_GPU = 1, 2, 0

    def __init__(self, event_reasons: bool = True) -> None:
        self.found_by: tuple[str, object] | None = None
        self.clock_fails = self.power_fails = False
        if event_reasons:
            self.nvmlDeviceGetCurrentClocksEventReasons = self._reasons
        else:  # a driver before 535
            self.nvmlDeviceGetCurrentClocksThrottleReasons = self._reasons

    def nvmlDeviceGetHandleByIndex(self, index: int) -> str:  # noqa: N802
        self.found_by = ("index", index)
        return "handle"

    def nvmlDeviceGetHandleByPciBusId(self, bus_id: str) -> str:  # noqa: N802
        self.found_by = ("pci", bus_id)
        if not bus_id.startswith("00000000:"):
            raise RuntimeError("NVML_ERROR_NOT_FOUND")
        return "handle"

    def nvmlDeviceGetClockInfo(self, handle: str, kind: int) -> int:  # noqa: N802
        if self.clock_fails:
            raise RuntimeError("NVML_ERROR_UNKNOWN")
        return 1755 if kind == self.NVML_CLOCK_SM else 3201

    def nvmlDeviceGetTemperature(self, handle: str, sensor: int) -> int:  # noqa: N802
        return 51

    def nvmlDeviceGetPowerUsage(self, handle: str) -> int:  # noqa: N802
        if self.power_fails:
            raise RuntimeError("NVML_ERROR_NOT_SUPPORTED")
        return 695_500  # milliwatts

    def _reasons(self, handle: str) -> int:
        return 0x4


def _fake_gpu(
    monkeypatch: pytest.MonkeyPatch, bus_id: str | None = "00000000:1B:00.0", **kw: bool
) -> _FakeNvml:
    fake = _FakeNvml(**kw)
    monkeypatch.setattr(device, "interpreter_mode", lambda: False)
    monkeypatch.setattr(device, "_nvml", lambda: fake)
    monkeypatch.setattr(device, "pci_bus_id", lambda index: bus_id)
    return fake


@pytest.mark.parametrize("event_reasons", [True, False])
def test_sampler_reads_clocks_power_and_clock_event_reasons(
    monkeypatch: pytest.MonkeyPatch, event_reasons: bool
) -> None:
    _fake_gpu(monkeypatch, event_reasons=event_reasons)
    read = device.device_sampler(1)
    assert read is not None
    sample = read()
    assert (sample.sm_clock_mhz, sample.power_w, sample.clock_event_reasons) == (1755, 695.5, 0x4)
    assert (sample.mem_clock_mhz, sample.temperature_c) == (3201, 51)
    assert device.device_sample(1) == sample


def test_the_cuda_device_is_found_by_its_pci_bus_id(monkeypatch: pytest.MonkeyPatch) -> None:
    # (under Ray, CUDA's device 0 is whichever GPU CUDA_VISIBLE_DEVICES names, not NVML's 0)
    fake = _fake_gpu(monkeypatch)
    assert device.device_sampler(0) is not None
    assert fake.found_by == ("pci", "00000000:1B:00.0")  # not by index
    fake = _fake_gpu(monkeypatch, bus_id="00000001:1B:00.0")
    assert device.device_sampler(0) is None  # NVML knows no such GPU
    fake = _fake_gpu(monkeypatch, bus_id=None)  # an older torch: NVML's index instead
    assert device.device_sampler(3) is not None
    assert fake.found_by == ("index", 3)


def test_torch_gives_the_pci_bus_id_in_nvmls_spelling(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    class Props:
        pci_domain_id, pci_bus_id, pci_device_id = 0, 0x1B, 0

    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: Props())
    assert device.pci_bus_id(0) == "00000000:1B:00.0"
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: object())
    assert device.pci_bus_id(0) is None


def test_a_field_nvml_cannot_read_is_none(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _fake_gpu(monkeypatch)
    read = device.device_sampler(0)
    assert read is not None
    fake.clock_fails = True
    assert read().sm_clock_mhz is None  # (the benchmarks skip such a reading)
    fake.clock_fails, fake.power_fails = False, True
    sample = read()
    assert (sample.sm_clock_mhz, sample.power_w) == (1755, None)


def test_no_nvml_means_no_sampler(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device, "interpreter_mode", lambda: False)
    monkeypatch.setattr(device, "_nvml", lambda: None)
    assert device.device_sampler(0) is None
    assert device.device_sample(0) is None
