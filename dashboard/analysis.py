"""Pure pandas helpers behind the pages: the folk rule, heatmap cells, the compare table.

Nothing here talks to the API or to Streamlit; every function takes and returns DataFrames in
the flat trial layout of ``data.TRIAL_COLUMNS`` (one row per trial), so they are unit-tested
alone (``tests/dashboard/test_charts.py``).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

KNOBS: tuple[str, ...] = ("block_size_q", "block_size_k", "num_warps", "num_stages")
"""The four knobs the heatmap lays out (``num_kv_splits`` is folded: the best split wins)."""

STATUS_OK = "ok"

FAILURE_LABELS: dict[str, str] = {
    "invalid_config": "invalid",
    "compile_error": "compile",
    "compile_timeout": "compile t/o",
    "out_of_resources": "OOR",
    "runtime_error": "runtime",
    "run_timeout": "run t/o",
    "wrong_answer": "wrong",
}
"""Short labels of the worker's failure kinds (``worker.schemas.TrialStatus``) for the heatmap."""


def folk_config(arch: str) -> dict[str, int]:
    """The folk rule for an architecture: what people pick without measuring.

    Blocks of 128, 8 warps and 3 stages on A100/H100-class GPUs (``sm_80`` and newer NVIDIA);
    4 warps and 2 stages on older GPUs and everything else (AMD, the CPU interpreter).

    Args:
        arch: ``sm_90``, ``sm_80``, ``sm_75``, ``gfx942``, ``cpu-interpreter``, ...

    Returns:
        The four knobs ``block_size_q``, ``block_size_k``, ``num_warps``, ``num_stages``.
    """
    major = None
    if arch.startswith("sm_") and arch[3:].isdigit():
        major = int(arch[3:]) // 10
    if major is not None and major >= 8:
        return {"block_size_q": 128, "block_size_k": 128, "num_warps": 8, "num_stages": 3}
    return {"block_size_q": 128, "block_size_k": 128, "num_warps": 4, "num_stages": 2}


def format_config(config: dict[str, Any]) -> str:
    """A config as one short line, e.g. ``q64 k32 w4 s2 splits=auto``."""
    parts = [
        f"q{config.get('block_size_q', '?')}",
        f"k{config.get('block_size_k', '?')}",
        f"w{config.get('num_warps', '?')}",
        f"s{config.get('num_stages', '?')}",
    ]
    if "num_kv_splits" in config and config["num_kv_splits"] is not None:
        parts.append(f"splits={config['num_kv_splits']}")
    return " ".join(parts)


def heatmap_cells(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per knob combination: the best time, or the failure kind when none ran.

    Args:
        trials: flat trials (``data.TRIAL_COLUMNS``) of one workload on one architecture.

    Returns:
        Columns ``block_size_q, block_size_k, num_warps, num_stages, median_us`` (NaN for a
        failed cell), ``status`` (``ok`` or the most common failure kind), ``label`` (the
        failure's short label, empty when ok), ``trials`` (how many trials fell in the cell),
        ``error`` (one example error message, empty when ok).
    """
    columns = [*KNOBS, "median_us", "status", "label", "trials", "error"]
    if trials.empty:
        return pd.DataFrame(columns=columns)
    rows: list[dict[str, Any]] = []
    for key, group in trials.groupby(list(KNOBS), sort=True):
        cell = dict(zip(KNOBS, key, strict=True))
        ok = group[(group["status"] == STATUS_OK) & group["median_us"].notna()]
        if not ok.empty:
            cell.update(
                median_us=float(ok["median_us"].min()), status=STATUS_OK, label="", error=""
            )
        else:
            kind = str(group["status"].mode().iloc[0])
            example = group.loc[group["status"] == kind, "error"].astype(str)
            cell.update(
                median_us=float("nan"),
                status=kind,
                label=FAILURE_LABELS.get(kind, kind),
                error=example.iloc[0][:200] if not example.empty else "",
            )
        cell["trials"] = len(group)
        rows.append(cell)
    return pd.DataFrame(rows, columns=columns)


def best_ok_trial(trials: pd.DataFrame) -> pd.Series | None:
    """The fastest ok trial, or None when no trial ran."""
    ok = trials[(trials["status"] == STATUS_OK) & trials["median_us"].notna()]
    if ok.empty:
        return None
    return ok.loc[ok["median_us"].idxmin()]


def matching_trials(trials: pd.DataFrame, knobs: dict[str, int]) -> pd.DataFrame:
    """Trials whose four knobs equal ``knobs`` (any ``num_kv_splits``)."""
    mask = pd.Series(True, index=trials.index)
    for name, value in knobs.items():
        mask &= trials[name] == value
    return trials[mask]


def folk_vs_winner(trials: pd.DataFrame) -> pd.DataFrame:
    """Per architecture: the measured winner against the folk rule's config.

    Args:
        trials: flat trials of one workload, across architectures (column ``arch``).

    Returns:
        One row per architecture with ``arch``, ``gpu_name``, ``winner`` (config text),
        ``winner_us``, ``folk`` (config text), ``folk_us`` (NaN when not measured or failed),
        ``folk_status`` (``ok``, a failure kind, or ``not measured``), ``slowdown`` (folk time /
        winner time, NaN when unknown) and ``lost_pct`` (speed the folk rule loses, in percent of
        the winner's time).
    """
    columns = [
        "arch",
        "gpu_name",
        "winner",
        "winner_us",
        "folk",
        "folk_us",
        "folk_status",
        "slowdown",
        "lost_pct",
    ]
    rows: list[dict[str, Any]] = []
    if trials.empty:
        return pd.DataFrame(columns=columns)
    for arch, group in trials.groupby("arch", sort=True):
        best = best_ok_trial(group)
        folk = folk_config(str(arch))
        folk_rows = matching_trials(group, folk)
        folk_best = best_ok_trial(folk_rows)
        if folk_best is not None:
            folk_us = float(folk_best["median_us"])
            folk_status = STATUS_OK
        elif not folk_rows.empty:
            folk_us = float("nan")
            folk_status = str(folk_rows["status"].mode().iloc[0])
        else:
            folk_us = float("nan")
            folk_status = "not measured"
        winner_us = float(best["median_us"]) if best is not None else float("nan")
        slowdown = folk_us / winner_us if best is not None and folk_best is not None else None
        rows.append(
            {
                "arch": arch,
                "gpu_name": str(group["gpu_name"].iloc[0]),
                "winner": format_config(_knobs_of(best)) if best is not None else "none ran",
                "winner_us": winner_us,
                "folk": format_config(folk),
                "folk_us": folk_us,
                "folk_status": folk_status,
                "slowdown": slowdown if slowdown is not None else float("nan"),
                "lost_pct": (slowdown - 1.0) * 100.0 if slowdown is not None else float("nan"),
            }
        )
    return pd.DataFrame(rows, columns=columns)


def _knobs_of(trial: pd.Series) -> dict[str, Any]:
    knobs = {name: int(trial[name]) for name in KNOBS}
    if "num_kv_splits" in trial.index and pd.notna(trial["num_kv_splits"]):
        knobs["num_kv_splits"] = trial["num_kv_splits"]
    return knobs


def compare_bars(table: pd.DataFrame) -> pd.DataFrame:
    """The compare table in long form for a grouped bar chart.

    Args:
        table: the output of ``folk_vs_winner``.

    Returns:
        Columns ``arch``, ``which`` (``measured winner`` or ``folk rule``), ``median_us``;
        rows with an unknown time are dropped.
    """
    long = pd.concat(
        [
            pd.DataFrame(
                {"arch": table["arch"], "which": "measured winner", "median_us": table["winner_us"]}
            ),
            pd.DataFrame(
                {"arch": table["arch"], "which": "folk rule", "median_us": table["folk_us"]}
            ),
        ],
        ignore_index=True,
    )
    return long.dropna(subset=["median_us"]).reset_index(drop=True)
