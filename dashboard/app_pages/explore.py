"""Explore: one workload on one architecture, every config tried.

Time over block_size_q x block_size_k, faceted by num_warps and num_stages, failures marked by
kind; then the distribution of one config's timings. Reads the API's per-config summary
(``/v1/results/summary``, aggregated in the database) and one trial's samples
(``/v1/results/{id}``), so it stays fast on tens of thousands of trials.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from mlafleet.dashboard import charts, data, ui
from mlafleet.dashboard.analysis import format_config
from mlafleet.dashboard.summaries import failures_by_kind, summary_as_trials
from mlafleet.kernels.configs import KERNEL_NAMES

url = data.api_url()
st.title("Explore a workload")

c1, c2, c3 = st.columns([1, 1, 2])
kernel = c1.selectbox("Kernel", KERNEL_NAMES)
tuned = ui.fetch(data.buckets, url, kernel, None)
if tuned.empty:
    ui.empty_state(f"tuned workloads of {kernel}")
    st.stop()
arch = c2.selectbox("Architecture", sorted(tuned["arch"].unique()))
of_arch = tuned[tuned["arch"] == arch].set_index("bucket")
bucket = c3.selectbox(
    "Workload bucket",
    sorted(of_arch.index),
    format_func=lambda b: b if of_arch.loc[b, "ok"] else f"{b}  (every config failed)",
    help="b=batch n=seqlen h=heads s=query tokens p=page size",
)

summary, note = ui.fetch(data.config_summary, url, kernel, arch, bucket)
if summary.empty:
    st.info(f"No trials recorded for {kernel} on {arch} for {bucket}.", icon=ui.ICON_INFO)
    st.stop()
if note:
    st.warning(note, icon=ui.ICON_CUT)

n_trials, n_ok = int(summary["trials"].sum()), int(summary["ok"].sum())
cols = st.columns(4)
cols[0].metric("Trials", n_trials)
cols[1].metric("Ran", n_ok)
cols[2].metric("Failed", n_trials - n_ok)
best_us = summary["best_us"].min()
cols[3].metric("Best median", f"{best_us:.1f} µs" if pd.notna(best_us) else "n/a")

st.subheader("Time by block sizes, warps and stages")
st.caption(
    "Each cell is the best median over the other knobs (num_kv_splits); grey cells never ran "
    "and name the failure kind."
)
st.altair_chart(
    charts.heatmap_chart(summary_as_trials(summary), title=f"{kernel} · {arch} · {bucket}")
)

failed = failures_by_kind(summary)
if not failed.empty:
    st.markdown("**Failures by kind**")
    st.dataframe(failed, hide_index=True, width="stretch")

st.subheader("Timing distribution of one config")
ran = summary[summary["best_trial_id"].notna()].sort_values("best_us", kind="stable")
if ran.empty:
    st.info("No config of this workload ran, so there are no timings to show.", icon=ui.ICON_INFO)
else:
    ranked = ran.reset_index(drop=True)
    labels = [
        f"{format_config(row.config)} · {row.best_us:.1f} µs"
        + (f" (best of {row.ok})" if row.ok > 1 else "")
        for row in ranked.itertuples(index=False)
    ]
    choice = st.selectbox(
        "Config (fastest first)", range(len(labels)), format_func=labels.__getitem__
    )
    chosen = ui.fetch(data.trial, url, int(ranked.loc[choice, "best_trial_id"]))
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
    spread = chosen["spread"]
    st.caption(
        f"trial #{chosen['trial_id']} on {chosen['gpu_name']} ({chosen['host']}), "
        f"{chosen['software']}; spread (p80-p20)/median = "
        + (f"{spread:.3f}" if spread is not None else "n/a")
    )
