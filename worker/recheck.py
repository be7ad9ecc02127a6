"""Re-checking configs on this machine: correctness against the reference, timing drift.

Used by ``mlafleet validate`` and by fleet validation jobs: a bundle's entries (or given
configs) are run through the same isolation as a sweep (validated on fresh inputs, then timed)
and compared with what was recorded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict

from mlafleet.kernels.bundle import BundleEntry, ConfigBundle, WorkloadBucket
from mlafleet.kernels.configs import KERNEL_DECODE, DecodeProblem, PrefillProblem
from mlafleet.kernels.registry import get_kernel

from .device import fingerprint
from .schemas import DeviceFingerprint, TrialResult, TrialStatus
from .sweep import Sweeper, SweepOptions
from .tune import problem_of

DEFAULT_MAX_DRIFT = 0.10
"""A recorded median this much faster than today's is reported as drift."""


class ConfigCheck(BaseModel):
    """One config re-checked on this machine.

    Attributes:
        kernel: registry name.
        problem: the problem it ran on.
        config: the config.
        status: ``ok``, ``drift`` (correct, but slower than recorded by more than
            ``max_drift``), ``skipped`` (recorded for another architecture), or the trial's
            failure kind (``wrong_answer``, ``runtime_error``, ...).
        message: what is wrong and why, for a person.
        recorded_us: the median recorded with the config (bundle entries), if any.
        measured_us: today's median, if it ran.
        drift: measured / recorded - 1, when both exist and the device matches.
        trial: the full trial (None when skipped).
    """

    model_config = ConfigDict(frozen=True)

    kernel: str
    problem: dict[str, Any]
    config: dict[str, Any]
    status: str
    message: str = ""
    recorded_us: float | None = None
    measured_us: float | None = None
    drift: float | None = None
    trial: TrialResult | None = None

    @property
    def ok(self) -> bool:
        return self.status in ("ok", "skipped")


def problem_from_bucket(kernel: str, bucket: WorkloadBucket) -> DecodeProblem | PrefillProblem:
    """A representative problem of ``bucket`` (its batch and length are the bucket's bounds)."""
    if kernel == KERNEL_DECODE:
        return DecodeProblem(
            batch=bucket.batch,
            s_q=bucket.s_q,
            h_q=bucket.heads,
            seqlen=bucket.seqlen,
            page_size=bucket.page_size or 64,
            **DecodeProblem.dtypes_of(bucket.dtype),
        )
    return PrefillProblem(
        batch=bucket.batch,
        seqlen_q=bucket.seqlen,
        seqlen_k=bucket.seqlen,
        h=bucket.heads,
        dtype=bucket.dtype,
    )


def _judge(
    trial: TrialResult, *, recorded_us: float | None, same_device: bool, max_drift: float
) -> ConfigCheck:
    measured = trial.median_us
    drift = None
    status = trial.status.value
    message = trial.error
    if trial.status == TrialStatus.OK and recorded_us and measured is not None and same_device:
        drift = measured / recorded_us - 1.0
        if drift > max_drift:
            status = "drift"
            message = (
                f"correct, but {measured:.1f} µs against {recorded_us:.1f} µs recorded "
                f"({drift:+.1%}, over the {max_drift:.0%} allowed): re-tune this workload"
            )
    return ConfigCheck(
        kernel=trial.kernel,
        problem=trial.problem,
        config=trial.config,
        status=status,
        message=message,
        recorded_us=recorded_us,
        measured_us=measured,
        drift=drift,
        trial=trial,
    )


def check_configs(
    kernel: str,
    problem: Any,
    configs: Sequence[dict[str, Any]],
    *,
    device_index: int = 0,
    recorded_us: Sequence[float | None] | None = None,
    max_drift: float = DEFAULT_MAX_DRIFT,
    options: SweepOptions | None = None,
    device: DeviceFingerprint | None = None,
) -> list[ConfigCheck]:
    """Validate and time ``configs`` of ``kernel`` on ``problem``; one check per config.

    Args:
        kernel: registry name.
        problem: problem dataclass or mapping.
        configs: knob dicts (e.g. ``{"block_size_q": 64, ...}``).
        device_index: local device.
        recorded_us: a recorded median per config (None where there is none).
        max_drift: slow-down over the recorded median reported as ``drift``.
        options: isolation settings.
        device: the fingerprint, if already read.

    Raises:
        ValueError: an unknown kernel, a bad problem, or a config with unknown knobs.
    """
    spec = get_kernel(kernel)
    prob = problem_of(spec, problem)
    parsed = [spec.config_from_dict(dict(c)) for c in configs]
    dev = device or fingerprint(device_index)
    recorded = list(recorded_us) if recorded_us is not None else [None] * len(parsed)
    with Sweeper(spec, prob, dev, options) as sweeper:
        trials = sweeper.run(parsed)
    return [
        _judge(t, recorded_us=r, same_device=True, max_drift=max_drift)
        for t, r in zip(trials, recorded, strict=True)
    ]


def check_bundle(
    bundle: ConfigBundle,
    *,
    device_index: int = 0,
    max_drift: float = DEFAULT_MAX_DRIFT,
    all_archs: bool = False,
    options: SweepOptions | None = None,
) -> list[ConfigCheck]:
    """Re-check every entry of ``bundle`` meant for this device's architecture.

    Entries of other architectures are reported as ``skipped`` (or checked for correctness
    too with ``all_archs``; their timings are then not compared). Drift is only judged when
    the GPU model matches the one the entry was measured on.
    """
    dev = fingerprint(device_index)
    checks: list[ConfigCheck] = []
    for entry in bundle.entries:
        problem = problem_from_bucket(entry.kernel, entry.bucket)
        if entry.arch != dev.arch and not all_archs:
            checks.append(_skipped(entry, problem, dev))
            continue
        (check,) = check_configs(
            entry.kernel,
            problem,
            [entry.config],
            recorded_us=[entry.median_us if entry.gpu_name == dev.name else None],
            max_drift=max_drift,
            options=options,
            device=dev,
        )
        checks.append(check)
    return checks


def _skipped(entry: BundleEntry, problem: Any, dev: DeviceFingerprint) -> ConfigCheck:
    return ConfigCheck(
        kernel=entry.kernel,
        problem=problem.as_dict(),
        config=entry.config,
        status="skipped",
        message=(
            f"recorded for {entry.arch}, this device is {dev.arch}: not checked "
            "(pass --all-archs to check its correctness here anyway)"
        ),
        recorded_us=entry.median_us,
    )
