"""API models -> flat DataFrames, with fixed columns so pages and charts never guess.

Pure functions (no HTTP, no Streamlit). ``data.py`` validates each API answer with the
orchestrator's own pydantic models (``orchestrator.schemas``, ``kernels.bundle``) and hands the
models here; each function returns a DataFrame with the columns of its ``*_COLUMNS`` constant,
also when empty.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pandas as pd

from mlafleet.kernels.bundle import Software, WorkloadBucket
from mlafleet.orchestrator.api.schemas import (
    ArchSummary,
    JobPublic,
    RecommendationPublic,
    TrialPublic,
)

from .analysis import format_config

TRIAL_COLUMNS: tuple[str, ...] = (
    "trial_id",
    "job_id",
    "kernel",
    "arch",
    "gpu_name",
    "host",
    "bucket",
    "batch",
    "seqlen",
    "heads",
    "s_q",
    "dtype",
    "page_size",
    "block_size_q",
    "block_size_k",
    "num_warps",
    "num_stages",
    "num_kv_splits",
    "status",
    "error",
    "median_us",
    "p20_us",
    "p80_us",
    "spread",
    "samples_us",
    "validated",
    "is_default",
    "software",
    "finished_at",
)
"""One row per trial: workload, config knobs, outcome, timing, who measured and when."""

RECOMMENDATION_COLUMNS: tuple[str, ...] = (
    "kernel",
    "arch",
    "bucket",
    "batch",
    "seqlen",
    "heads",
    "s_q",
    "dtype",
    "page_size",
    "config",
    "median_us",
    "default_median_us",
    "speedup_vs_default",
    "noise",
    "validated",
    "withdrawn",
    "withdrawn_reason",
    "measured_at",
    "gpu_name",
    "software",
    "trial_id",
    "job_id",
)
"""One row per recommendation (kernel x arch x workload bucket x software environment)."""

ARCH_COLUMNS: tuple[str, ...] = (
    "arch",
    "vendor",
    "gpus",
    "nodes",
    "alive_nodes",
    "gpu_names",
    "software",
    "tuned",
    "last_seen",
)
"""One row per architecture of the fleet."""

JOB_COLUMNS: tuple[str, ...] = (
    "id",
    "name",
    "kind",
    "kernel",
    "status",
    "tasks_done",
    "tasks_total",
    "trials",
    "created_at",
    "message",
)
"""One row per job."""

PROGRESS_COLUMNS: tuple[str, ...] = (
    "job",
    "arch",
    "done",
    "total",
    "running",
    "waiting",
    "failed",
    "trials",
    "message",
)
"""One row per job and architecture."""


def software_text(software: Software | None) -> str:
    """``driver 550.54, cuda 12.4, torch 2.4.0, triton 3.0.0`` (absent parts left out)."""
    if software is None:
        return ""
    parts = (
        ("driver", software.driver),
        ("cuda", software.cuda),
        ("rocm", software.rocm),
        ("torch", software.torch),
        ("triton", software.triton),
    )
    return ", ".join(f"{name} {value}" for name, value in parts if value)


def _bucket_fields(bucket: WorkloadBucket) -> dict[str, Any]:
    return {
        "bucket": bucket.key(),
        "batch": bucket.batch,
        "seqlen": bucket.seqlen,
        "heads": bucket.heads,
        "s_q": bucket.s_q,
        "dtype": bucket.dtype,
        "page_size": bucket.page_size,
    }


def trial_row(trial: TrialPublic) -> dict[str, Any]:
    """One trial as a flat row (``TRIAL_COLUMNS``)."""
    config = trial.config
    timing = trial.timing
    splits = config.get("num_kv_splits")
    return {
        "trial_id": trial.id,
        "job_id": trial.job_id,
        "kernel": trial.kernel,
        "arch": trial.arch,
        "gpu_name": trial.gpu_name,
        "host": trial.host,
        **_bucket_fields(trial.bucket),
        "block_size_q": config.get("block_size_q"),
        "block_size_k": config.get("block_size_k"),
        "num_warps": config.get("num_warps"),
        "num_stages": config.get("num_stages"),
        "num_kv_splits": "" if splits is None else str(splits),
        "status": trial.status.value,
        "error": trial.error,
        "median_us": trial.median_us
        if trial.median_us is not None
        else (timing.median_us if timing else None),
        "p20_us": timing.p20_us if timing else None,
        "p80_us": timing.p80_us if timing else None,
        "spread": timing.spread if timing else None,
        "samples_us": list(timing.samples_us) if timing else [],
        "validated": trial.validation.passed if trial.validation else None,
        "is_default": trial.is_default,
        "software": software_text(trial.software),
        "finished_at": trial.finished_at,
    }


def trials_frame(trials: Iterable[TrialPublic]) -> pd.DataFrame:
    """Trials as a DataFrame with ``TRIAL_COLUMNS`` (numeric columns coerced)."""
    frame = pd.DataFrame([trial_row(t) for t in trials], columns=list(TRIAL_COLUMNS))
    for name in ("median_us", "p20_us", "p80_us", "spread"):
        frame[name] = pd.to_numeric(frame[name], errors="coerce").astype("float64")
    for name in ("block_size_q", "block_size_k", "num_warps", "num_stages"):
        frame[name] = pd.to_numeric(frame[name], errors="coerce").astype("Int64")
    return frame


def recommendation_row(rec: RecommendationPublic) -> dict[str, Any]:
    """One recommendation as a flat row (``RECOMMENDATION_COLUMNS``)."""
    return {
        "kernel": rec.kernel,
        "arch": rec.arch,
        **_bucket_fields(rec.bucket),
        "config": format_config(rec.config),
        "median_us": rec.median_us,
        "default_median_us": rec.default_median_us,
        "speedup_vs_default": rec.speedup_vs_default,
        "noise": rec.noise,
        "validated": rec.validated,
        "withdrawn": rec.withdrawn,
        "withdrawn_reason": rec.withdrawn_reason,
        "measured_at": rec.measured_at,
        "gpu_name": rec.gpu_name,
        "software": software_text(rec.software),
        "trial_id": rec.trial_id,
        "job_id": rec.job_id,
    }


def recommendations_frame(recs: Iterable[RecommendationPublic]) -> pd.DataFrame:
    """Recommendations as a DataFrame with ``RECOMMENDATION_COLUMNS``."""
    frame = pd.DataFrame(
        [recommendation_row(r) for r in recs], columns=list(RECOMMENDATION_COLUMNS)
    )
    for name in ("median_us", "default_median_us", "speedup_vs_default", "noise"):
        frame[name] = pd.to_numeric(frame[name], errors="coerce").astype("float64")
    frame["measured_at"] = pd.to_datetime(frame["measured_at"], errors="coerce", utc=True)
    return frame


def archs_frame(archs: Iterable[ArchSummary]) -> pd.DataFrame:
    """Architectures of the fleet as a DataFrame with ``ARCH_COLUMNS``."""
    rows = [
        {
            "arch": a.arch,
            "vendor": a.vendor,
            "gpus": a.gpus,
            "nodes": ", ".join(a.nodes),
            "alive_nodes": a.alive_nodes,
            "gpu_names": ", ".join(a.gpu_names),
            "software": "; ".join(software_text(s) for s in a.software),
            "tuned": ", ".join(
                f"{t.kernel}: {t.buckets} buckets"
                + (f" ({t.withdrawn} withdrawn)" if t.withdrawn else "")
                for t in a.tuned
            ),
            "last_seen": a.last_seen,
        }
        for a in archs
    ]
    frame = pd.DataFrame(rows, columns=list(ARCH_COLUMNS))
    frame["last_seen"] = pd.to_datetime(frame["last_seen"], errors="coerce", utc=True)
    return frame


def jobs_frame(jobs: Iterable[JobPublic]) -> pd.DataFrame:
    """Jobs as a DataFrame with ``JOB_COLUMNS``."""
    rows = [
        {
            "id": j.id,
            "name": j.name,
            "kind": j.kind,
            "kernel": j.kernel,
            "status": j.status.value,
            "tasks_done": j.tasks_done,
            "tasks_total": j.tasks_total,
            "trials": j.trials,
            "created_at": j.created_at,
            "message": j.message,
        }
        for j in jobs
    ]
    frame = pd.DataFrame(rows, columns=list(JOB_COLUMNS))
    frame["created_at"] = pd.to_datetime(frame["created_at"], errors="coerce", utc=True)
    return frame


def progress_frame(jobs: Iterable[JobPublic]) -> pd.DataFrame:
    """One row per job and architecture with ``PROGRESS_COLUMNS``."""
    rows = [
        {
            "job": f"#{j.id} {j.name}",
            "arch": p.arch,
            "done": p.succeeded + p.failed + p.cancelled,
            "total": p.tasks_total,
            "running": p.running,
            "waiting": p.waiting,
            "failed": p.failed,
            "trials": p.trials,
            "message": p.message,
        }
        for j in jobs
        for p in j.progress
    ]
    return pd.DataFrame(rows, columns=list(PROGRESS_COLUMNS))
