"""Recommendations: per kernel x arch x workload bucket x software env, the fastest validated
config, its speedup over the default config and the noise of its measurement.

``refresh_recommendation`` recomputes one key from the trials table; the runner calls it after
every successful trial, so recommendations follow results as they arrive. Validate jobs call
``withdraw_recommendation`` when a config fails (or drifts) somewhere.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mlafleet.kernels.bundle import WorkloadBucket, bucket_of
from mlafleet.kernels.registry import get_kernel
from mlafleet.worker.schemas import TrialStatus

from .db.models import Architecture, Device, Recommendation, SoftwareEnv, Trial
from .db.repo_results import recommendation_public
from .db.types import utcnow
from .errors import NotFoundError
from .schemas import RecommendationPublic


def _best_trial(session: Session, cond: list[Any]) -> Trial | None:
    ok = [*cond, Trial.status == TrialStatus.OK, Trial.median_us.is_not(None)]
    for passed in (Trial.validation_passed.is_(True), Trial.validation_passed.is_(None)):
        best = session.scalars(
            select(Trial).where(*ok, passed).order_by(Trial.median_us, Trial.id).limit(1)
        ).first()
        if best is not None:
            return best
    return None


def refresh_recommendation(
    session: Session, *, kernel: str, arch_id: int, bucket_key: str, env_id: int
) -> RecommendationPublic | None:
    """Recompute the recommendation of one key from its trials; None when nothing qualifies.

    The fastest ok trial that passed validation wins (trials measured without validation
    only when no validated one exists; then ``validated`` is False). A withdrawn
    recommendation stays withdrawn while its trial is still the fastest; a different, faster
    trial replaces it and clears the withdrawal.
    """
    cond = [
        Trial.kernel == kernel,
        Trial.arch_id == arch_id,
        Trial.bucket_key == bucket_key,
        Trial.env_id == env_id,
    ]
    best = _best_trial(session, cond)
    if best is None:
        return None
    default_us = session.scalar(
        select(Trial.median_us)
        .where(*cond, Trial.is_default.is_(True), Trial.status == TrialStatus.OK)
        .order_by(Trial.median_us)
        .limit(1)
    )
    rec = session.scalars(
        select(Recommendation).where(
            Recommendation.kernel == kernel,
            Recommendation.arch_id == arch_id,
            Recommendation.bucket_key == bucket_key,
            Recommendation.env_id == env_id,
        )
    ).first()
    problem = get_kernel(kernel).problem_from_dict(best.problem)
    device = session.get(Device, best.device_id)
    assert device is not None
    assert best.median_us is not None
    spread = (best.timing or {}).get("spread")
    values: dict[str, Any] = {
        "bucket": bucket_of(problem).model_dump(mode="json"),
        "trial_id": best.id,
        "job_id": best.job_id,
        "gpu_name": device.name,
        "config": best.config,
        "median_us": best.median_us,
        "default_median_us": default_us,
        "speedup_vs_default": (default_us / best.median_us) if default_us else None,
        "noise": float(spread) if isinstance(spread, int | float) else None,
        "validated": bool(best.validation_passed),
        "measured_at": best.finished_at,
        "updated_at": utcnow(),
    }
    if rec is None:
        rec = Recommendation(
            kernel=kernel, arch_id=arch_id, bucket_key=bucket_key, env_id=env_id, **values
        )
        session.add(rec)
    else:
        if rec.withdrawn and rec.trial_id != best.id:
            rec.withdrawn, rec.withdrawn_reason, rec.withdrawn_at = False, "", None
        for name, value in values.items():
            setattr(rec, name, value)
    session.flush()
    return _public(session, rec)


def refresh_for_trial(session: Session, *, trial_id: int) -> RecommendationPublic | None:
    """``refresh_recommendation`` for the key of one stored trial."""
    trial = session.get(Trial, trial_id)
    if trial is None:
        raise NotFoundError(f"trial {trial_id} not found")
    return refresh_recommendation(
        session,
        kernel=trial.kernel,
        arch_id=trial.arch_id,
        bucket_key=trial.bucket_key,
        env_id=trial.env_id,
    )


def withdraw_recommendation(
    session: Session, *, recommendation_id: int, reason: str
) -> RecommendationPublic:
    """Withdraw a recommendation (it leaves bundles and config lookups) with the reason.

    Raises:
        NotFoundError: no recommendation ``recommendation_id``.
    """
    rec = session.get(Recommendation, recommendation_id)
    if rec is None:
        raise NotFoundError(f"recommendation {recommendation_id} not found")
    rec.withdrawn, rec.withdrawn_reason, rec.withdrawn_at = True, reason, utcnow()
    rec.updated_at = utcnow()
    session.flush()
    return _public(session, rec)


def find_recommendation(
    session: Session, *, kernel: str, arch: str, bucket: WorkloadBucket
) -> list[RecommendationPublic]:
    """Active recommendations of one exact key, across software envs."""
    rows = session.execute(
        select(Recommendation, Architecture.name, SoftwareEnv)
        .join(Architecture, Architecture.id == Recommendation.arch_id)
        .join(SoftwareEnv, SoftwareEnv.id == Recommendation.env_id)
        .where(
            Recommendation.kernel == kernel,
            Architecture.name == arch,
            Recommendation.bucket_key == bucket.key(),
            Recommendation.withdrawn.is_(False),
        )
    ).all()
    return [recommendation_public(r, name, env) for r, name, env in rows]


def _public(session: Session, rec: Recommendation) -> RecommendationPublic:
    arch = session.get(Architecture, rec.arch_id)
    env = session.get(SoftwareEnv, rec.env_id)
    assert arch is not None
    assert env is not None
    return recommendation_public(rec, arch.name, env)
