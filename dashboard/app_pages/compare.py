"""Compare: one workload across architectures, and the folk rule against the measured winner.

Reads the API's per-config summary of the workload on every architecture
(``/v1/results/summary``, aggregated in the database), not the raw trials.
"""

from __future__ import annotations

import streamlit as st

from mlafleet.dashboard import charts, data, ui
from mlafleet.dashboard.analysis import compare_bars, folk_vs_winner
from mlafleet.dashboard.summaries import summary_as_trials
from mlafleet.kernels.configs import KERNEL_NAMES

url = data.api_url()
st.title("Compare architectures")
st.caption(
    "Folk rule: blocks of 128, 8 warps and 3 stages on A100/H100-class GPUs (sm_80 and newer); "
    "4 warps and 2 stages on older GPUs. How much speed does it leave on the table?"
)

c1, c2 = st.columns([1, 2])
kernel = c1.selectbox("Kernel", KERNEL_NAMES)
tuned = ui.fetch(data.buckets, url, kernel, None)
if tuned.empty:
    ui.empty_state(f"tuned workloads of {kernel}")
    st.stop()
counts = (
    tuned.sort_values("bucket")
    .groupby("bucket", sort=True)["arch"]
    .nunique()
    .sort_values(ascending=False, kind="stable")
)
bucket = c2.selectbox(
    "Workload bucket",
    list(counts.index),
    format_func=lambda b: f"{b}  ({counts[b]} architecture{'s' if counts[b] != 1 else ''})",
)

summary, note = ui.fetch(data.config_summary, url, kernel, None, bucket)
trials = summary_as_trials(summary)
if trials.empty:
    st.info(f"No trials recorded for {kernel} on {bucket}.", icon=ui.ICON_INFO)
    st.stop()
if note:
    st.warning(note, icon=ui.ICON_CUT)

table = folk_vs_winner(trials)
display = table.assign(
    folk_us=table.apply(
        lambda r: f"{r.folk_us:.1f}" if r.folk_status == "ok" else r.folk_status, axis=1
    ),
    lost=table.apply(
        lambda r: f"{r.lost_pct:.0f}% slower" if r.folk_status == "ok" else "—", axis=1
    ),
)
st.dataframe(
    display[["arch", "gpu_name", "winner", "winner_us", "folk", "folk_us", "lost"]],
    hide_index=True,
    width="stretch",
    column_config={
        "arch": "architecture",
        "gpu_name": "GPU",
        "winner": "measured winner",
        "winner_us": st.column_config.NumberColumn("winner (µs)", format="%.1f"),
        "folk": "folk rule",
        "folk_us": "folk rule (µs)",
        "lost": "folk rule loses",
    },
)
bars = compare_bars(table)
if not bars.empty:
    st.altair_chart(charts.compare_chart(bars, title=f"{kernel} · {bucket}"))
not_measured = table[table["folk_status"] != "ok"]
for row in not_measured.itertuples(index=False):
    st.caption(
        f"{row.arch}: the folk config ({row.folk}) is {row.folk_status}"
        + (" in this search" if row.folk_status == "not measured" else "")
        + "."
    )
