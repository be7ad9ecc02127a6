"""Pure functions from DataFrames to Altair charts; no Streamlit, no HTTP.

Each function takes the DataFrame a page got from ``data.py`` (or from ``analysis.py``) and
returns a chart; pages only render it. Tested alone in ``tests/dashboard/test_charts.py``.
"""

from __future__ import annotations

from typing import cast

import altair as alt
import pandas as pd

from .analysis import KNOBS, heatmap_cells

_FAIL_COLOR = "#d9d9d9"


def heatmap_chart(trials: pd.DataFrame, *, title: str = "") -> alt.FacetChart:
    """Time over ``block_size_q`` x ``block_size_k``, faceted by ``num_warps`` and ``num_stages``.

    Cells that ran are coloured by their best median time (log scale, darker is slower); cells
    where every trial failed are grey and labelled with the failure kind.

    Args:
        trials: flat trials (``data.TRIAL_COLUMNS``) of one workload on one architecture.
        title: chart title.

    Returns:
        An Altair facet chart (rows: ``num_stages``, columns: ``num_warps``).
    """
    cells = heatmap_cells(trials)
    x = alt.X("block_size_k:O", title="block_size_k")
    y = alt.Y("block_size_q:O", title="block_size_q", sort="descending")
    tooltip = [
        *(alt.Tooltip(f"{name}:O") for name in KNOBS),
        alt.Tooltip("median_us:Q", format=".1f", title="best median (µs)"),
        alt.Tooltip("status:N"),
        alt.Tooltip("trials:Q"),
        alt.Tooltip("error:N"),
    ]
    ok = (
        alt.Chart()
        .mark_rect()
        .encode(
            x=x,
            y=y,
            color=alt.Color(
                "median_us:Q",
                title="median (µs)",
                scale=alt.Scale(type="log", scheme="viridis", reverse=True),
            ),
            tooltip=tooltip,
        )
        .transform_filter(alt.datum.status == "ok")
    )
    failed = (
        alt.Chart()
        .mark_rect(color=_FAIL_COLOR)
        .encode(x=x, y=y, tooltip=tooltip)
        .transform_filter(alt.datum.status != "ok")
    )
    labels = (
        alt.Chart()
        .mark_text(fontSize=9, color="#b00020")
        .encode(x=x, y=y, text="label:N", tooltip=tooltip)
        .transform_filter(alt.datum.status != "ok")
    )
    return (
        alt.layer(ok, failed, labels, data=cells)
        .properties(width=140, height=140)
        .facet(
            row=alt.Row("num_stages:O", title="num_stages"),
            column=alt.Column("num_warps:O", title="num_warps"),
        )
        .properties(title=title)
    )


def timing_distribution_chart(samples: pd.DataFrame, *, title: str = "") -> alt.LayerChart:
    """Histogram of one config's timing samples with its median marked.

    Args:
        samples: column ``sample_us`` (one row per timed call).
        title: chart title.

    Returns:
        A histogram layered with a rule at the median.
    """
    hist = (
        alt.Chart(samples)
        .mark_bar(opacity=0.8)
        .encode(
            x=alt.X("sample_us:Q", bin=alt.Bin(maxbins=30), title="time per call (µs)"),
            y=alt.Y("count():Q", title="samples"),
        )
    )
    median = (
        alt.Chart(samples)
        .transform_aggregate(median_us="median(sample_us)")
        .mark_rule(color="#b00020", strokeWidth=2)
        .encode(x="median_us:Q", tooltip=[alt.Tooltip("median_us:Q", format=".2f")])
    )
    return cast(alt.LayerChart, alt.layer(hist, median).properties(title=title, height=220))


def compare_chart(bars: pd.DataFrame, *, title: str = "") -> alt.Chart:
    """Measured winner against the folk rule, per architecture (grouped bars).

    Args:
        bars: long form from ``analysis.compare_bars``: ``arch``, ``which``, ``median_us``.
        title: chart title.
    """
    chart: alt.Chart = (
        alt.Chart(bars)
        .mark_bar()
        .encode(
            x=alt.X("which:N", title=None),
            y=alt.Y("median_us:Q", title="median time (µs)"),
            color=alt.Color("which:N", title=None),
            column=alt.Column("arch:N", title="architecture"),
            tooltip=["arch:N", "which:N", alt.Tooltip("median_us:Q", format=".2f")],
        )
        .properties(width=120, height=220, title=title)
    )
    return chart


def gpus_per_arch_chart(archs: pd.DataFrame) -> alt.Chart:
    """Number of GPUs per architecture.

    Args:
        archs: one row per architecture, columns ``arch``, ``gpus``, ``gpu_names``, ``nodes``.
    """
    chart: alt.Chart = (
        alt.Chart(archs)
        .mark_bar()
        .encode(
            x=alt.X("gpus:Q", title="GPUs", axis=alt.Axis(tickMinStep=1)),
            y=alt.Y("arch:N", title="architecture", sort="-x"),
            color=alt.Color("arch:N", legend=None),
            tooltip=["arch:N", "gpus:Q", "gpu_names:N", "nodes:N"],
        )
        .properties(height=alt.Step(28))
    )
    return chart


def job_progress_chart(progress: pd.DataFrame) -> alt.Chart:
    """Per job and architecture: the fraction of tasks done, as horizontal bars.

    Args:
        progress: columns ``job``, ``arch``, ``done``, ``total``.
    """
    data = progress.assign(
        fraction=(progress["done"] / progress["total"].where(progress["total"] > 0)).fillna(0.0),
        row=progress["job"].astype(str) + " · " + progress["arch"].astype(str),
    )
    chart: alt.Chart = (
        alt.Chart(data)
        .mark_bar()
        .encode(
            x=alt.X(
                "fraction:Q",
                title="done",
                scale=alt.Scale(domain=[0, 1]),
                axis=alt.Axis(format="%"),
            ),
            y=alt.Y("row:N", title=None),
            color=alt.Color("arch:N", title="architecture"),
            tooltip=["job:N", "arch:N", "done:Q", "total:Q"],
        )
        .properties(height=alt.Step(22))
    )
    return chart


def speedup_chart(recommendations: pd.DataFrame) -> alt.Chart:
    """Speedup of each recommended config over the default, per workload bucket.

    Args:
        recommendations: columns ``bucket``, ``speedup_vs_default``, ``validated``.
    """
    data = recommendations.dropna(subset=["speedup_vs_default"])
    chart: alt.Chart = (
        alt.Chart(data)
        .mark_bar()
        .encode(
            x=alt.X("speedup_vs_default:Q", title="speedup over the default config (×)"),
            y=alt.Y("bucket:N", title="workload bucket", sort="-x"),
            color=alt.Color("validated:N", title="validated"),
            tooltip=["bucket:N", alt.Tooltip("speedup_vs_default:Q", format=".2f"), "validated:N"],
        )
        .properties(height=alt.Step(20))
    )
    return chart
