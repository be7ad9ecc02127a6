"""Device fingerprints on this (GPU-less) machine."""

from __future__ import annotations

import socket

import pytest
from worker_factories import make_device

from mlafleet.worker import device


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
    with pytest.raises(ValueError, match=r"expected 0 .*got 3"):
        device.fingerprint(3)


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
