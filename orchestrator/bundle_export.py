"""Database -> ``ConfigBundle``: what ``GET /v1/bundle`` serves and ``mlafleet export`` writes.

A bundle carries the active recommendations (withdrawn ones are left out) as ``BundleEntry``
rows, one per kernel x architecture x workload bucket x software environment, each with its
measurement, speedup over the default and validation flag. The run-time lookup
(``kernels.runtime_configs``) reads it and never uses an unvalidated entry.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy.orm import Session

from mlafleet.kernels.bundle import BundleEntry, ConfigBundle

from .db import repo
from .schemas import RecommendationPublic


def entry_of(rec: RecommendationPublic) -> BundleEntry:
    """The bundle entry of one recommendation."""
    return BundleEntry(
        kernel=rec.kernel,
        arch=rec.arch,
        gpu_name=rec.gpu_name,
        software=rec.software,
        bucket=rec.bucket,
        config=rec.config,
        median_us=rec.median_us,
        speedup_vs_default=rec.speedup_vs_default,
        validated=rec.validated and not rec.withdrawn,
        measured_at=rec.measured_at,
    )


def bundle_of(recs: Iterable[RecommendationPublic], *, source: str) -> ConfigBundle:
    """A bundle of the given recommendations (withdrawn ones left out), in a stable order."""
    entries = [entry_of(r) for r in recs if not r.withdrawn]
    entries.sort(key=lambda e: (e.kernel, e.arch, e.bucket.key(), e.software.triton, e.gpu_name))
    return ConfigBundle(source=source, entries=entries)


def export_bundle(
    *, session: Session, source: str, arch: str | None = None, kernel: str | None = None
) -> ConfigBundle:
    """The active recommendations of the database as a bundle.

    Args:
        session: an open session.
        source: what the bundle is made from (an API URL or a database URL without password).
        arch: only this architecture (None: all).
        kernel: only this kernel (None: all).
    """
    entries = repo.bundle_entries(session, arch=arch, kernel=kernel)
    entries.sort(key=lambda e: (e.kernel, e.arch, e.bucket.key(), e.software.triton, e.gpu_name))
    return ConfigBundle(source=source, entries=entries)


__all__ = ["bundle_of", "entry_of", "export_bundle"]
