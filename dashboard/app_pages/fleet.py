"""Fleet: architectures, GPUs, nodes and software; jobs with progress per architecture."""

from __future__ import annotations

import streamlit as st

from mlafleet.dashboard import charts, data, ui

url = data.api_url()
st.title("Fleet")

archs = ui.fetch(data.archs, url)
jobs = ui.fetch(data.jobs, url)
progress = ui.fetch(data.job_progress, url)

st.subheader("Devices")
if archs.empty:
    st.info(
        "No devices have joined yet. Start the API and job runner with `mlafleet serve`, then "
        "join each GPU machine with `mlafleet worker --ray-address ADDR` (or run "
        "`mlafleet demo` on one machine).",
        icon=ui.ICON_INFO,
    )
else:
    hosts = {h for nodes in archs["nodes"] for h in str(nodes).split(", ") if h}
    cols = st.columns(3)
    cols[0].metric("Architectures", len(archs))
    cols[1].metric("GPUs", int(archs["gpus"].sum()))
    cols[2].metric("Nodes", len(hosts))
    st.altair_chart(charts.gpus_per_arch_chart(archs), width="stretch")
    st.dataframe(
        archs[["arch", "gpus", "gpu_names", "nodes", "software", "tuned", "last_seen"]],
        hide_index=True,
        width="stretch",
        column_config={
            "arch": "architecture",
            "gpu_names": "GPUs",
            "software": "software (driver, CUDA/ROCm, torch, Triton)",
            "tuned": "tuned",
            "last_seen": st.column_config.DatetimeColumn("last seen", format="YYYY-MM-DD HH:mm"),
        },
    )

st.subheader("Jobs")
if jobs.empty:
    ui.empty_state("jobs")
else:
    st.dataframe(
        jobs,
        hide_index=True,
        width="stretch",
        column_config={
            "tasks_done": st.column_config.NumberColumn("tasks done"),
            "tasks_total": st.column_config.NumberColumn("tasks"),
            "created_at": st.column_config.DatetimeColumn("created", format="YYYY-MM-DD HH:mm"),
        },
    )
    if not progress.empty:
        st.markdown("**Progress per architecture**")
        st.altair_chart(charts.job_progress_chart(progress), width="stretch")
        waiting = progress[progress["message"].astype(bool)]
        if not waiting.empty:
            st.dataframe(
                waiting[["job", "arch", "waiting", "message"]],
                hide_index=True,
                width="stretch",
            )
