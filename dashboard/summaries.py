"""Aggregated API answers -> flat DataFrames: config summaries and workload buckets.

Pure functions (no HTTP, no Streamlit), like ``flatten.py``. ``summary_as_trials`` expands the
one-row-per-config summary back into the flat trial layout (``flatten.TRIAL_COLUMNS``) that
``analysis.heatmap_cells`` and ``analysis.folk_vs_winner`` read, without any raw samples: a
config with ``n`` trials of a status gives ``n`` rows of that status, the ok ones carrying the
config's best time and the failed ones its example error.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pandas as pd

from mlafleet.orchestrator.api.schemas import BucketSummary, ConfigSummary

from .analysis import KNOBS, STATUS_OK

SUMMARY_COLUMNS: tuple[str, ...] = (
    "arch",
    "gpu_name",
    "config",
    "config_hash",
    *KNOBS,
    "num_kv_splits",
    "trials",
    "ok",
    "best_us",
    "median_us",
    "best_trial_id",
    "example_trial_id",
    "status_counts",
    "errors",
)
"""One row per (architecture, config) of a workload: counts, best and median time, errors."""

BUCKET_COLUMNS: tuple[str, ...] = (
    "arch",
    "bucket",
    "trials",
    "ok",
    "failed",
    "configs",
    "best_us",
    "recommended",
)
"""One row per workload bucket with trials, per architecture."""


def summary_frame(items: Iterable[ConfigSummary]) -> pd.DataFrame:
    """Config summaries as a DataFrame with ``SUMMARY_COLUMNS``, in the API's order."""
    rows: list[dict[str, Any]] = []
    for item in items:
        splits = item.config.get("num_kv_splits")
        rows.append(
            {
                "arch": item.arch,
                "gpu_name": item.gpu_name,
                "config": item.config,
                "config_hash": item.config_hash,
                **{name: item.config.get(name) for name in KNOBS},
                "num_kv_splits": "" if splits is None else str(splits),
                "trials": item.trials,
                "ok": item.ok,
                "best_us": item.best_us,
                "median_us": item.median_us,
                "best_trial_id": item.best_trial_id,
                "example_trial_id": item.example_trial_id,
                "status_counts": dict(item.status_counts),
                "errors": dict(item.errors),
            }
        )
    frame = pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))
    for name in ("best_us", "median_us"):
        frame[name] = pd.to_numeric(frame[name], errors="coerce").astype("float64")
    for name in (*KNOBS, "best_trial_id"):
        frame[name] = pd.to_numeric(frame[name], errors="coerce").astype("Int64")
    return frame


def buckets_frame(items: Iterable[BucketSummary]) -> pd.DataFrame:
    """Workload buckets as a DataFrame with ``BUCKET_COLUMNS``."""
    frame = pd.DataFrame(
        [{name: getattr(b, name) for name in BUCKET_COLUMNS} for b in items],
        columns=list(BUCKET_COLUMNS),
    )
    frame["best_us"] = pd.to_numeric(frame["best_us"], errors="coerce").astype("float64")
    return frame


AS_TRIAL_COLUMNS: tuple[str, ...] = (
    "arch",
    "gpu_name",
    *KNOBS,
    "num_kv_splits",
    "status",
    "error",
    "median_us",
)
"""The columns of ``flatten.TRIAL_COLUMNS`` that ``heatmap_cells`` and ``folk_vs_winner`` read."""


def summary_as_trials(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary as flat trials, one row per trial (``AS_TRIAL_COLUMNS`` only: the narrow
    frame keeps the analysis fast on 10 000 rows). A config's ok rows carry its best time, its
    failed rows the example error of their kind."""
    rows: list[dict[str, Any]] = []
    counts: list[int] = []
    for item in summary.itertuples(index=False):
        for status, count in item.status_counts.items():
            ok = status == STATUS_OK
            rows.append(
                {
                    "arch": item.arch,
                    "gpu_name": item.gpu_name,
                    **{name: getattr(item, name) for name in KNOBS},
                    "num_kv_splits": item.num_kv_splits,
                    "status": status,
                    "error": "" if ok else str(item.errors.get(status, "")),
                    "median_us": item.best_us if ok else None,
                }
            )
            counts.append(int(count))
    frame = pd.DataFrame(rows, columns=list(AS_TRIAL_COLUMNS))
    # plain object strings: pandas' arrow-backed strings make the per-cell filtering of
    # ``heatmap_cells`` 2-3x slower on 10 000 rows
    text = ["arch", "gpu_name", "num_kv_splits", "status", "error"]
    frame[text] = frame[text].astype(object)
    frame = frame.loc[frame.index.repeat(counts)].reset_index(drop=True)
    frame["median_us"] = pd.to_numeric(frame["median_us"], errors="coerce").astype("float64")
    for name in KNOBS:
        frame[name] = pd.to_numeric(frame[name], errors="coerce").astype("Int64")
    return frame


def failures_by_kind(summary: pd.DataFrame) -> pd.DataFrame:
    """Columns ``status``, ``trials``, ``example``: failed trials per kind, most first."""
    counts: dict[str, int] = {}
    examples: dict[str, str] = {}
    for item in summary.itertuples(index=False):
        for status, count in item.status_counts.items():
            if status == STATUS_OK:
                continue
            counts[status] = counts.get(status, 0) + int(count)
            examples.setdefault(status, str(item.errors.get(status, "")))
    rows = [{"status": s, "trials": n, "example": examples[s]} for s, n in counts.items()]
    frame = pd.DataFrame(rows, columns=["status", "trials", "example"])
    return frame.sort_values(["trials", "status"], ascending=[False, True]).reset_index(drop=True)


__all__ = [
    "AS_TRIAL_COLUMNS",
    "BUCKET_COLUMNS",
    "SUMMARY_COLUMNS",
    "buckets_frame",
    "failures_by_kind",
    "summary_as_trials",
    "summary_frame",
]
