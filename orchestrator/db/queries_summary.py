"""Aggregated reads of the dashboard: one row per config, and the tuned workload buckets.

Everything is grouped in SQL (``GROUP BY`` on ``trials.config_hash`` / ``trials.bucket_key``,
window functions for the median), portable between SQLite (3.25+) and PostgreSQL, so a
workload with tens of thousands of trials answers with a few hundred small rows.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from mlafleet.worker.schemas import TrialStatus

from ..api.schemas import BucketSummary, ConfigSummary, ResultsSummary
from .models import Architecture, Device, Recommendation, Trial
from .queries import bucket_from_key

_OK = TrialStatus.OK
_CHUNK = 500  # ids per IN (...) list: well under SQLite's bound-parameter limit
_ERROR_CHARS = 500


def _status_text(status: Any) -> str:
    return status.value if isinstance(status, TrialStatus) else str(status)


def _arch_filter(session: Session, arch: str | None) -> tuple[list[Any], bool]:
    """The condition on ``trials.arch_id`` for an arch name, and whether the arch exists."""
    if arch is None:
        return [], True
    arch_id = session.scalar(select(Architecture.id).where(Architecture.name == arch))
    if arch_id is None:
        return [], False
    return [Trial.arch_id == arch_id], True


def _by_ids(session: Session, columns: Iterable[Any], ids: list[int]) -> dict[int, Any]:
    """``{trial id: row}`` of the given columns for these trial ids (chunked IN lists)."""
    out: dict[int, Any] = {}
    cols = list(columns)
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        for row in session.execute(select(Trial.id, *cols).where(Trial.id.in_(chunk))):
            out[int(row[0])] = row
    return out


def _medians(session: Session, cond: list[Any]) -> dict[tuple[int, str], tuple[float, int, float]]:
    """Per (arch id, config hash) over ok trials: (best median_us, its trial id, median).

    Window functions rank each group's ok trials by ``median_us``; only the first and the
    middle one or two rows leave the database.
    """
    ok = [*cond, Trial.status == _OK, Trial.median_us.is_not(None)]
    part = (Trial.arch_id, Trial.config_hash)
    ranked = (
        select(
            Trial.arch_id,
            Trial.config_hash,
            Trial.id,
            Trial.median_us,
            func.row_number()
            .over(partition_by=part, order_by=(Trial.median_us, Trial.id))
            .label("rn"),
            func.count().over(partition_by=part).label("n"),
        )
        .where(*ok)
        .subquery()
    )
    rows = session.execute(
        select(ranked).where(
            or_(
                ranked.c.rn == 1,
                ranked.c.rn == (ranked.c.n + 1) // 2,
                ranked.c.rn == (ranked.c.n + 2) // 2,
            )
        )
    ).all()
    best: dict[tuple[int, str], tuple[float, int]] = {}
    middle: dict[tuple[int, str], list[float]] = defaultdict(list)
    for arch_id, chash, trial_id, median_us, rn, n in rows:
        key = (int(arch_id), str(chash))
        if rn == 1:
            best[key] = (float(median_us), int(trial_id))
        if rn in ((n + 1) // 2, (n + 2) // 2):
            middle[key].append(float(median_us))
    return {
        key: (b_us, b_id, sum(middle[key]) / len(middle[key]) if middle[key] else b_us)
        for key, (b_us, b_id) in best.items()
    }


def results_summary(
    session: Session, *, kernel: str, arch: str | None, bucket: str | None, limit: int
) -> ResultsSummary:
    """One row per (architecture, config) of ``kernel``'s trials, fastest first.

    Args:
        session: an open session.
        kernel: ``mla_decode`` or ``mla_prefill``.
        arch: one architecture, or None for every one.
        bucket: one workload bucket key, or None for every bucket (configs of several buckets
            are then merged per config).
        limit: the most rows returned; ``truncated`` says when more matched.

    Returns:
        The rows (configs that ran first, by best time; then the never-ran ones), with the
        number of trials and configs that matched.
    """
    arch_cond, known = _arch_filter(session, arch)
    cond: list[Any] = [Trial.kernel == kernel, *arch_cond]
    if bucket is not None:
        cond.append(Trial.bucket_key == bucket)
    empty = ResultsSummary(
        kernel=kernel, arch=arch, bucket=bucket, trials=0, configs=0, limit=limit,
        truncated=False, items=[],
    )  # fmt: skip
    if not known:
        return empty
    groups = session.execute(
        select(
            Trial.arch_id,
            Trial.config_hash,
            Trial.status,
            func.count(),
            func.min(Trial.id),
            func.min(Device.name),
        )
        .join(Device, Device.id == Trial.device_id)
        .where(*cond)
        .group_by(Trial.arch_id, Trial.config_hash, Trial.status)
    ).all()
    if not groups:
        return empty
    counts: dict[tuple[int, str], dict[str, int]] = defaultdict(dict)
    first_id: dict[tuple[int, str], int] = {}
    gpu: dict[tuple[int, str], str] = {}
    error_ids: dict[tuple[int, str], dict[str, int]] = defaultdict(dict)
    for arch_id, chash, status, n, min_id, gpu_name in groups:
        key = (int(arch_id), str(chash))
        text = _status_text(status)
        counts[key][text] = int(n)
        first_id[key] = min(first_id.get(key, int(min_id)), int(min_id))
        gpu[key] = min(gpu.get(key, str(gpu_name)), str(gpu_name))
        if text != _OK.value:
            error_ids[key][text] = int(min_id)
    medians = _medians(session, cond)
    inf = float("inf")
    order = sorted(counts, key=lambda k: (medians.get(k, (inf,))[0], first_id[k]))
    chosen = order[:limit]
    arch_names = dict(session.execute(select(Architecture.id, Architecture.name)).tuples().all())
    configs = _by_ids(session, [Trial.config], [first_id[k] for k in chosen])
    wanted = [i for k in chosen for i in error_ids[k].values()]
    errors = _by_ids(session, [Trial.error], wanted)
    items = []
    for key in chosen:
        best = medians.get(key)
        items.append(
            ConfigSummary(
                arch=arch_names.get(key[0], str(key[0])),
                gpu_name=gpu[key],
                config=configs[first_id[key]][1],
                config_hash=key[1],
                trials=sum(counts[key].values()),
                ok=counts[key].get(_OK.value, 0),
                best_us=best[0] if best else None,
                median_us=best[2] if best else None,
                best_trial_id=best[1] if best else None,
                example_trial_id=first_id[key],
                status_counts=dict(sorted(counts[key].items())),
                errors={
                    kind: str(errors[i][1] or "")[:_ERROR_CHARS]
                    for kind, i in sorted(error_ids[key].items())
                },
            )
        )
    return ResultsSummary(
        kernel=kernel,
        arch=arch,
        bucket=bucket,
        trials=sum(sum(c.values()) for c in counts.values()),
        configs=len(order),
        limit=limit,
        truncated=len(order) > limit,
        items=items,
    )


def list_buckets(session: Session, *, kernel: str, arch: str | None) -> list[BucketSummary]:
    """The workload buckets of ``kernel`` with trials (on ``arch``, or on every arch).

    Buckets where every config failed are listed too (``ok`` = 0, ``recommended`` false).
    Sorted by architecture, then bucket key.
    """
    arch_cond, known = _arch_filter(session, arch)
    if not known:
        return []
    cond: list[Any] = [Trial.kernel == kernel, *arch_cond]
    is_ok = and_(Trial.status == _OK, Trial.median_us.is_not(None))
    rows = session.execute(
        select(
            Architecture.name,
            Trial.bucket_key,
            func.count(),
            func.count(Trial.median_us).filter(is_ok),
            func.count(func.distinct(Trial.config_hash)),
            func.min(Trial.median_us).filter(is_ok),
        )
        .join(Architecture, Architecture.id == Trial.arch_id)
        .where(*cond)
        .group_by(Architecture.name, Trial.bucket_key)
        .order_by(Architecture.name, Trial.bucket_key)
    ).all()
    recommended = set(
        session.execute(
            select(Architecture.name, Recommendation.bucket_key)
            .join(Architecture, Architecture.id == Recommendation.arch_id)
            .where(Recommendation.kernel == kernel, Recommendation.withdrawn.is_(False))
        )
        .tuples()
        .all()
    )
    return [
        BucketSummary(
            kernel=kernel,
            arch=name,
            bucket=key,
            workload=bucket_from_key(key),
            trials=int(n),
            ok=int(n_ok),
            failed=int(n) - int(n_ok),
            configs=int(n_cfg),
            best_us=None if best is None else float(best),
            recommended=(name, key) in recommended,
        )
        for name, key, n, n_ok, n_cfg, best in rows
    ]


__all__ = ["list_buckets", "results_summary"]
