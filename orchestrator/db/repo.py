"""The repo: every database read and write the API, CLI and runner use, returning public
schemas (``orchestrator.schemas``), never ORM rows. The list with signatures is at the top of
docs/ORCHESTRATOR.md.
"""

from __future__ import annotations

from ..recommend import refresh_for_trial, refresh_recommendation, withdraw_recommendation
from .repo_fleet import ensure_arch, ensure_env, list_archs, touch_devices, upsert_device
from .repo_jobs import (
    cancel_job,
    create_job,
    get_job,
    get_job_or_raise,
    list_jobs,
    list_tasks,
)
from .repo_results import (
    bundle_entries,
    config_hash,
    get_recommendations,
    known_trials,
    list_results,
    record_trial,
)

__all__ = [
    "bundle_entries",
    "cancel_job",
    "config_hash",
    "create_job",
    "ensure_arch",
    "ensure_env",
    "get_job",
    "get_job_or_raise",
    "get_recommendations",
    "known_trials",
    "list_archs",
    "list_jobs",
    "list_results",
    "list_tasks",
    "record_trial",
    "refresh_for_trial",
    "refresh_recommendation",
    "touch_devices",
    "upsert_device",
    "withdraw_recommendation",
]
