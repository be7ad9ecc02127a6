"""Recommendations: per architecture and kernel, the config for each workload bucket."""

from __future__ import annotations

import streamlit as st

from mlafleet.dashboard import charts, data, ui
from mlafleet.kernels.configs import KERNEL_NAMES

url = data.api_url()
st.title("Recommended configs")
st.caption(
    "The fastest validated config per architecture, kernel and workload bucket: what "
    "`GET /v1/configs` serves and `mlafleet pull` downloads."
)

left, right = st.columns(2)
kernel = left.selectbox("Kernel", KERNEL_NAMES)
recs = ui.fetch(data.recommendations, url, kernel)
if recs.empty:
    ui.empty_state(f"recommendations for {kernel}")
    st.stop()
arch = right.selectbox("Architecture", sorted(recs["arch"].unique()))
on_arch = recs[recs["arch"] == arch].sort_values(
    ["heads", "s_q", "dtype", "page_size", "batch", "seqlen"]
)
active = on_arch[~on_arch["withdrawn"]]
withdrawn = on_arch[on_arch["withdrawn"]]

cols = st.columns(4)
cols[0].metric("Workload buckets", len(active))
cols[1].metric("Validated", f"{int(active['validated'].sum())} / {len(active)}")
speedups = active["speedup_vs_default"].dropna()
cols[2].metric("Median speedup", f"{speedups.median():.2f}×" if not speedups.empty else "n/a")
cols[3].metric("Withdrawn", len(withdrawn))

st.dataframe(
    active[
        [
            "bucket",
            "config",
            "median_us",
            "speedup_vs_default",
            "validated",
            "measured_at",
            "gpu_name",
            "software",
            "noise",
            "trial_id",
        ]
    ],
    hide_index=True,
    width="stretch",
    column_config={
        "bucket": st.column_config.TextColumn(
            "workload bucket", help="b=batch n=seqlen h=heads s=query tokens p=page size"
        ),
        "config": st.column_config.TextColumn(
            "config",
            help="q=block_size_q k=block_size_k w=num_warps s=num_stages",
            width="medium",
        ),
        "median_us": st.column_config.NumberColumn("median (µs)", format="%.1f"),
        "speedup_vs_default": st.column_config.NumberColumn("speedup vs default", format="%.2f×"),
        "validated": st.column_config.CheckboxColumn("validated"),
        "noise": st.column_config.NumberColumn("noise", format="%.3f", help="(p80-p20)/median"),
        "measured_at": st.column_config.DatetimeColumn("measured", format="YYYY-MM-DD HH:mm"),
        "gpu_name": "measured on",
        "software": "with",
        "trial_id": st.column_config.NumberColumn("trial", format="%d"),
    },
)

bundle_json, entries = ui.fetch(data.bundle, url, arch, kernel)
st.download_button(
    f"Download the {arch} bundle ({entries} entr{'y' if entries == 1 else 'ies'}, JSON)",
    data=bundle_json,
    file_name=f"mlafleet-{kernel}-{arch}.json",
    mime="application/json",
    help="point MLAFLEET_CONFIGS at the file, as `mlafleet pull` does",
)
if not speedups.empty:
    st.altair_chart(charts.speedup_chart(active), width="stretch")

if not withdrawn.empty:
    st.subheader("Withdrawn by validation")
    st.dataframe(
        withdrawn[["bucket", "config", "median_us", "withdrawn_reason", "software"]],
        hide_index=True,
        width="stretch",
        column_config={"withdrawn_reason": "why"},
    )
