"""Explore: one workload on one architecture, every config tried.

Time over block_size_q x block_size_k, faceted by num_warps and num_stages, failures marked by
kind; then the distribution of one config's timings.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from mlafleet.dashboard import charts, data, ui
from mlafleet.dashboard.analysis import format_config
from mlafleet.kernels.configs import KERNEL_NAMES

url = data.api_url()
st.title("Explore a workload")

c1, c2, c3 = st.columns([1, 1, 2])
kernel = c1.selectbox("Kernel", KERNEL_NAMES)
recs = ui.fetch(data.recommendations, url, kernel)
if recs.empty:
    ui.empty_state(f"tuned workloads of {kernel}")
    st.stop()
arch = c2.selectbox("Architecture", sorted(recs["arch"].unique()))
buckets = sorted(recs.loc[recs["arch"] == arch, "bucket"].unique())
bucket = c3.selectbox(
    "Workload bucket", buckets, help="b=batch n=seqlen h=heads s=query tokens p=page size"
)

trials, note = ui.fetch(data.workload_results, url, kernel=kernel, arch=arch, bucket=bucket)
if trials.empty:
    st.info(f"No trials recorded for {kernel} on {arch} for {bucket}.", icon=ui.ICON_INFO)
    st.stop()
if note:
    st.warning(note, icon=ui.ICON_CUT)

ok = trials[trials["status"] == "ok"]
cols = st.columns(4)
cols[0].metric("Trials", len(trials))
cols[1].metric("Ran", len(ok))
cols[2].metric("Failed", len(trials) - len(ok))
cols[3].metric("Best median", f"{ok['median_us'].min():.1f} µs" if not ok.empty else "n/a")

st.subheader("Time by block sizes, warps and stages")
st.caption(
    "Each cell is the best median over the other knobs (num_kv_splits); grey cells never ran "
    "and name the failure kind."
)
st.altair_chart(charts.heatmap_chart(trials, title=f"{kernel} · {arch} · {bucket}"))

failed = trials[trials["status"] != "ok"]
if not failed.empty:
    st.markdown("**Failures by kind**")
    summary = (
        failed.groupby("status")
        .agg(trials=("status", "size"), example=("error", "first"))
        .reset_index()
        .sort_values("trials", ascending=False)
    )
    st.dataframe(summary, hide_index=True, width="stretch")

st.subheader("Timing distribution of one config")
if ok.empty:
    st.info("No config of this workload ran, so there are no timings to show.", icon=ui.ICON_INFO)
else:
    ranked = ok.sort_values("median_us").reset_index(drop=True)
    knobs = ["block_size_q", "block_size_k", "num_warps", "num_stages", "num_kv_splits"]
    labels = [
        f"{format_config(row[knobs].to_dict())} · {row['median_us']:.1f} µs"
        for _, row in ranked.iterrows()
    ]
    choice = st.selectbox(
        "Config (fastest first)", range(len(labels)), format_func=labels.__getitem__
    )
    chosen = ranked.iloc[choice]
    samples = pd.DataFrame({"sample_us": list(chosen["samples_us"])})
    if samples.empty:
        st.info("The API returned no raw samples for this trial.", icon=ui.ICON_INFO)
    else:
        st.altair_chart(
            charts.timing_distribution_chart(
                samples, title=f"{len(samples)} timed calls, median {chosen['median_us']:.2f} µs"
            ),
            width="stretch",
        )
    st.caption(
        f"trial #{chosen['trial_id']} on {chosen['gpu_name']} ({chosen['host']}), "
        f"{chosen['software']}; spread (p80-p20)/median = {chosen['spread']:.3f}"
    )
