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
