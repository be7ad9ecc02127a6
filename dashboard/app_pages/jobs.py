"""Jobs: the list, a form to submit one (validated as the API does), and cancel with a token."""

from __future__ import annotations

import streamlit as st

from mlafleet.dashboard import data, jobform, ui
from mlafleet.kernels.configs import FP8_KV, FP8_QKV

url = data.api_url()
st.title("Jobs")

jobs = ui.fetch(data.jobs, url)
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

token = st.text_input(
    "API token",
    type="password",
    key="api_token",
    help=(
        "needed to submit or cancel when the API has MLAFLEET_API_TOKEN set; never prefilled, "
        "so the dashboard does not hand the token to whoever opens it"
    ),
)


def _submit(spec: dict[str, object] | str) -> None:
    parsed, problems = jobform.check_spec(spec)
    if parsed is None:
        st.error("The job spec is invalid:\n" + "\n".join(f"- {p}" for p in problems))
        return
    try:
        answer = data.submit_job(url, parsed.to_json_dict(), token=token or None)
    except data.ApiUnreachableError as exc:
        st.error(str(exc), icon=ui.ICON_DOWN)
        return
    except data.ApiError as exc:
        st.error(f"The API refused the job ({exc.status_code}): {exc.message}", icon=ui.ICON_WARN)
        return
    st.success(f"Submitted job #{answer.get('id')} ({parsed.name}).", icon=ui.ICON_OK)


st.subheader("Submit a job")
form_tab, yaml_tab = st.tabs(["Form", "YAML"])
with form_tab, st.form("submit_job"):
    c1, c2, c3 = st.columns(3)
    kind = c1.selectbox("Kind", ["tune", "validate"])
    name = c2.text_input("Name", value="dashboard-job", key="job_name")
    kernel = c3.selectbox("Kernel", ["mla_decode", "mla_prefill"])
    c1, c2, c3 = st.columns(3)
    batch = c1.text_input("Batch sizes", value="1, 8", key="batch")
    seqlen = c2.text_input("Sequence lengths", value="1024")
    heads = c3.text_input("Heads", value="16", key="heads")
    c1, c2, c3 = st.columns(3)
    s_q = c1.text_input("Query tokens (decode)", value="1")
    page_size = c2.text_input("Page sizes (decode)", value="64")
    dtypes = c3.multiselect(
        "Dtypes",
        ["bf16", "fp16", "fp32", FP8_KV, FP8_QKV],
        default=["bf16"],
        help=f"decode also {FP8_KV} (fp8 KV cache) and {FP8_QKV} (fp8 q and KV cache)",
    )
    c1, c2, c3, c4 = st.columns(4)
    archs = c1.text_input(
        "Architectures", value="all", help="all, or e.g. sm_90, sm_80", key="archs"
    )
    strategy = c2.selectbox("Strategy", ["exhaustive", "random", "tpe"])
    trials = c3.number_input("Budget: trials (0 = no limit)", min_value=0, value=0, step=10)
    minutes = c4.number_input("Budget: minutes (0 = no limit)", min_value=0.0, value=0.0)
    validate = st.checkbox("Validate winners against the reference", value=True)
    if st.form_submit_button("Submit job", key="submit_form"):
        spec, problems = jobform.spec_from_form(
            kind=kind,
            name=name,
            kernel=kernel,
            batch=batch,
            seqlen=seqlen,
            heads=heads,
            s_q=s_q if kernel == "mla_decode" else "",
            dtypes=dtypes,
            page_size=page_size if kernel == "mla_decode" else "",
            archs=archs,
            strategy=strategy,
            budget_trials=int(trials),
            budget_minutes=float(minutes),
            validate=validate,
        )
        if problems:
            st.error("The job spec is invalid:\n" + "\n".join(f"- {p}" for p in problems))
        else:
            _submit(spec)
with yaml_tab, st.form("submit_yaml"):
    text = st.text_area(
        "Job spec (YAML or JSON), as for `mlafleet submit job.yaml`",
        height=220,
        value=(
            "kind: tune\nname: decode-small\nkernel: mla_decode\n"
            "workloads: {batch: [1, 8], seqlen: [1024], heads: [16], dtype: [bf16]}\n"
            "archs: all\nstrategy: random\nbudget: {trials: 20}\n"
        ),
    )
    if st.form_submit_button("Submit YAML", key="submit_yaml"):
        _submit(text)

st.subheader("Cancel a job")
finished = ["succeeded", "failed", "cancelled"]
active = jobs[~jobs["status"].isin(finished)] if not jobs.empty else jobs
if active.empty:
    st.caption("No job is queued or running.")
else:
    with st.form("cancel_job"):
        job_id = st.selectbox(
            "Job",
            list(active["id"]),
            format_func=lambda i: f"#{i} {active.loc[active['id'] == i, 'name'].iloc[0]}",
            key="cancel_job_id",
        )
        if st.form_submit_button("Cancel job", key="cancel"):
            try:
                data.cancel_job(url, str(job_id), token=token or None)
            except data.ApiUnreachableError as exc:
                st.error(str(exc), icon=ui.ICON_DOWN)
            except data.ApiError as exc:
                st.error(
                    f"The API refused to cancel ({exc.status_code}): {exc.message}",
                    icon=ui.ICON_WARN,
                )
            else:
                st.success(f"Cancelling job #{job_id}.", icon=ui.ICON_CANCEL)
