"""The Ray-free parts of dispatch and the device actor: resources a node advertises, the test
alias mode, and the thread-to-stream bridge that yields trials as they are reported."""

from __future__ import annotations

import pytest
from orch_factories import make_fingerprint, make_trial

from mlafleet.orchestrator.dispatch import node_resources
from mlafleet.worker.actor import TaskRequest, actor_devices, stream
from mlafleet.worker.device import cpu_fingerprint


def test_node_resources_per_architecture() -> None:
    gpus = [make_fingerprint(arch="sm_90", index=i) for i in range(2)]
    gpus.append(make_fingerprint(arch="sm_80", index=2))
    assert node_resources(gpus) == ({"arch:sm_90": 2, "arch:sm_80": 1}, 3)
    assert node_resources([cpu_fingerprint()]) == ({"arch:cpu-interpreter": 1}, 0)


def test_test_alias_is_labelled_and_cpu_only() -> None:
    resources, gpus = node_resources([cpu_fingerprint()], test_arch_alias="cpu-interpreter-b")
    assert resources == {"arch:cpu-interpreter-b": 1, "mlafleet_test_arch_alias": 1}
    assert gpus == 0
    with pytest.raises(ValueError, match="test mode for machines without a GPU"):
        node_resources([make_fingerprint(arch="sm_90")], test_arch_alias="x")


def test_actor_device_alias_reports_the_alias_but_runs_the_interpreter() -> None:
    real, reported = actor_devices(index=0, arch="cpu-interpreter-b", test_alias=True)
    assert real.arch == "cpu-interpreter"
    assert reported.arch == "cpu-interpreter-b"
    assert reported.name == "cpu-interpreter [test alias cpu-interpreter-b]"
    assert reported.device_key != real.device_key
    same, same_reported = actor_devices(index=0, arch="cpu-interpreter", test_alias=False)
    assert same is same_reported


def test_actor_refuses_an_arch_its_device_does_not_have() -> None:
    with pytest.raises(ValueError, match="advertises arch:sm_90 but its device 0 is"):
        actor_devices(index=0, arch="sm_90", test_alias=False)


def test_stream_yields_each_trial_then_reraises_the_error() -> None:
    trials = [make_trial(median_us=float(i + 1)) for i in range(3)]

    def run(on_trial: object) -> None:
        for t in trials:
            on_trial(t)  # type: ignore[operator]
        raise RuntimeError("compile server crashed")

    items = stream(run)
    assert [next(items) for _ in trials] == trials
    with pytest.raises(RuntimeError, match="compile server crashed"):
        next(items)


def test_task_request_round_trips_known_trials() -> None:
    known = [make_trial()]
    req = TaskRequest(
        task_id=3, kernel="mla_decode", problem={"batch": 1}, known=known, validate=False
    )
    again = TaskRequest.model_validate_json(req.model_dump_json(by_alias=True))
    assert again == req
    assert again.validate_ is False
