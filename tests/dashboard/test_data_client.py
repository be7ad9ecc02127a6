"""The dashboard's pure plumbing: API models -> frames, the job form, bucket keys, the
API client's error states, and the `mlafleet dashboard` command (without starting it)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from mlafleet.dashboard import data, jobform
from mlafleet.dashboard.flatten import (
    JOB_COLUMNS,
    RECOMMENDATION_COLUMNS,
    TRIAL_COLUMNS,
    archs_frame,
    jobs_frame,
    progress_frame,
    recommendations_frame,
    software_text,
    trials_frame,
)
from mlafleet.kernels.bundle import Software, WorkloadBucket, bucket_of
from mlafleet.kernels.configs import DecodeProblem
from mlafleet.orchestrator.api.schemas import (
    ArchProgress,
    ArchSummary,
    JobPublic,
    JobStatus,
    RecommendationPublic,
    TrialPublic,
    TunedKernel,
)
from mlafleet.orchestrator.cli import dashboard_cmd
from mlafleet.orchestrator.cli.main import app
from mlafleet.worker.schemas import TrialStatus

NOW = datetime(2026, 1, 2, tzinfo=UTC)
SW = Software(driver="550.54", cuda="12.4", torch="2.4.0", triton="3.0.0")


def test_trials_frame_flattens_config_timing_and_bucket(
    make_trial: Callable[..., TrialPublic],
) -> None:
    ok = make_trial(q=32, k=64, warps=8, stages=3, splits=4, median_us=12.5)
    failed = make_trial(status=TrialStatus.COMPILE_ERROR, error="boom")
    frame = trials_frame([ok, failed])
    assert list(frame.columns) == list(TRIAL_COLUMNS)
    first, second = frame.iloc[0], frame.iloc[1]
    assert (first["block_size_q"], first["block_size_k"]) == (32, 64)
    assert (first["num_warps"], first["num_stages"], first["num_kv_splits"]) == (8, 3, "4")
    assert first["median_us"] == 12.5
    assert first["samples_us"] == ok.timing.samples_us
    assert first["bucket"] == ok.bucket.key()
    assert first["software"] == "driver 550.54, cuda 12.4, torch 2.4.0, triton 3.0.0"
    assert second["status"] == "compile_error"
    assert second["error"] == "boom"
    assert second["samples_us"] == []
    assert trials_frame([]).columns.tolist() == list(TRIAL_COLUMNS)


def test_software_text_leaves_out_missing_parts() -> None:
    assert software_text(Software(torch="2.4.0", triton="3.0.0")) == "torch 2.4.0, triton 3.0.0"
    assert software_text(None) == ""


def _rec(**overrides: object) -> RecommendationPublic:
    fields: dict[str, object] = {
        "id": 1,
        "kernel": "mla_decode",
        "arch": "sm_90",
        "gpu_name": "NVIDIA H200",
        "software": SW,
        "bucket": WorkloadBucket(batch=64, seqlen=4096, heads=16, dtype="bf16", page_size=64),
        "config": {"block_size_q": 64, "block_size_k": 32, "num_warps": 8, "num_stages": 2},
        "median_us": 20.0,
        "default_median_us": 30.0,
        "speedup_vs_default": 1.5,
        "validated": True,
        "trial_id": 7,
        "measured_at": NOW,
        "updated_at": NOW,
    }
    fields.update(overrides)
    return RecommendationPublic(**fields)  # type: ignore[arg-type]


def test_recommendations_frame_keeps_provenance_and_withdrawals() -> None:
    frame = recommendations_frame(
        [_rec(), _rec(id=2, withdrawn=True, withdrawn_reason="wrong answer on node-b")]
    )
    assert list(frame.columns) == list(RECOMMENDATION_COLUMNS)
    row = frame.iloc[0]
    assert row["bucket"] == "b64-n4096-h16-s1-bf16-p64"
    assert row["config"] == "q64 k32 w8 s2"
    assert row["speedup_vs_default"] == 1.5
    assert row["measured_at"] == NOW
    assert row["trial_id"] == 7
    assert frame.iloc[1]["withdrawn_reason"] == "wrong answer on node-b"


def test_archs_jobs_and_progress_frames() -> None:
    arch = ArchSummary(
        arch="sm_90",
        vendor="nvidia",
        nodes=["node-a", "node-b"],
        gpus=3,
        gpu_names=["NVIDIA H200"],
        software=[SW],
        tuned=[TunedKernel(kernel="mla_decode", buckets=4, withdrawn=1)],
    )
    archs = archs_frame([arch])
    assert archs.iloc[0]["nodes"] == "node-a, node-b"
    assert archs.iloc[0]["tuned"] == "mla_decode: 4 buckets (1 withdrawn)"
    job = JobPublic(
        id=3,
        name="decode",
        kind="tune",
        kernel="mla_decode",
        status=JobStatus.RUNNING,
        spec={},
        created_at=NOW,
        tasks_total=6,
        tasks_done=2,
        progress=[
            ArchProgress(arch="sm_90", tasks_total=3, succeeded=1, failed=1, running=1),
            ArchProgress(arch="sm_80", tasks_total=3, waiting=3, message="no sm_80 node"),
        ],
    )
    jobs = jobs_frame([job])
    assert list(jobs.columns) == list(JOB_COLUMNS)
    assert (jobs.iloc[0]["status"], jobs.iloc[0]["tasks_done"]) == ("running", 2)
    progress = progress_frame([job]).set_index("arch")
    assert progress.loc["sm_90", "done"] == 2
    assert progress.loc["sm_80", "waiting"] == 3
    assert progress.loc["sm_80", "message"] == "no sm_80 node"


def _form(**overrides: object) -> dict[str, object]:
    fields: dict[str, object] = {
        "kind": "tune",
        "name": "x",
        "kernel": "mla_decode",
        "batch": "1, 64",
        "seqlen": "1024",
        "heads": "16",
        "s_q": "1",
        "dtypes": ["bf16"],
        "page_size": "64",
        "archs": "all",
        "strategy": "random",
        "budget_trials": 20,
        "budget_minutes": 0.0,
        "validate": True,
    }
    fields.update(overrides)
    return fields


def test_job_form_builds_a_spec_the_api_accepts() -> None:
    spec, problems = jobform.spec_from_form(**_form(archs="sm_90, sm_80"))  # type: ignore[arg-type]
    assert problems == []
    parsed, problems = jobform.check_spec(spec)
    assert problems == []
    assert parsed is not None
    assert parsed.archs == ["sm_90", "sm_80"]
    assert parsed.budget.trials == 20
    assert parsed.budget.minutes is None
    assert len(parsed.problems()) == 2


def test_job_form_lists_every_problem_at_once() -> None:
    spec, problems = jobform.spec_from_form(**_form(batch="1, two", seqlen=""))  # type: ignore[arg-type]
    assert problems == [
        "workloads.batch: expected whole numbers separated by commas, got 'two'",
        "workloads.seqlen: give at least one value, e.g. 1, 64",
    ]
    spec, _ = jobform.spec_from_form(**_form(strategy="tpe", budget_trials=0, page_size="3"))  # type: ignore[arg-type]
    parsed, problems = jobform.check_spec(spec)
    assert parsed is None
    assert any(p.startswith("workloads.page_size") for p in problems)
    assert any(p.startswith("budget: strategy 'tpe' needs a budget") for p in problems)


def test_job_form_checks_yaml_text_too() -> None:
    parsed, problems = jobform.check_spec("kind: tune\nname: y\nkernel: nope\n")
    assert parsed is None
    assert any(p.startswith("kernel:") for p in problems)


def test_api_down_raises_a_message_naming_the_url_and_the_fix(down_url: str) -> None:
    with pytest.raises(data.ApiUnreachableError) as info:
        data.health(down_url)
    assert f"API unreachable at {down_url}" in str(info.value)
    assert "mlafleet serve" in str(info.value)


def test_api_errors_carry_the_api_message(empty_api: str) -> None:
    with pytest.raises(data.ApiError) as info:
        data.cancel_job(empty_api, "999", token="wrong")
    assert info.value.status_code == 401
    assert info.value.message
    with pytest.raises(data.ApiError) as info:
        data.submit_job(empty_api, {"name": "x"}, token="dashboard-test-token")
    assert info.value.status_code == 422
    assert "kernel" in info.value.message


def test_dashboard_command_finds_app_and_builds_streamlit_line() -> None:
    app_path = dashboard_cmd.dashboard_app_path()
    assert app_path == Path(__file__).resolve().parents[2] / "dashboard" / "app.py"
    line = dashboard_cmd.streamlit_command(app=app_path, port=8601, host="127.0.0.1")
    assert line[1:4] == ["-m", "streamlit", "run"]
    assert line[line.index("--server.port") + 1] == "8601"
    assert dashboard_cmd.check_api_url("http://h:1/") == "http://h:1"


def test_dashboard_command_refuses_a_bad_url() -> None:
    result = CliRunner().invoke(app, ["dashboard", "--api", "localhost:8000"])
    assert result.exit_code == 2
    assert "expected an http(s) URL such as http://127.0.0.1:8000" in result.output


def test_dashboard_cli_does_not_import_streamlit() -> None:
    import subprocess
    import sys

    code = (
        "import sys, mlafleet.orchestrator.cli.main; "
        "sys.exit(1 if 'streamlit' in sys.modules else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_workload_results_pages_filters_and_says_when_it_stopped(
    seeded_api: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    n = len(seeded_api.trials)
    bucket = seeded_api.trials[0].problem
    key = bucket_of(DecodeProblem.from_dict(bucket)).key()
    data.results.clear()
    trials, note = data.workload_results(
        seeded_api.url, kernel="mla_decode", arch="cpu-interpreter", bucket=key
    )
    assert len(trials) == n
    assert note == ""
    assert set(trials["bucket"]) == {key}
    other, _ = data.workload_results(
        seeded_api.url, kernel="mla_decode", arch="cpu-interpreter", bucket="b1-n1-h1-s1-fp16-p1"
    )
    assert other.empty

    data.results.clear()
    monkeypatch.setattr(data, "RESULTS_PAGE_SIZE", 1)
    monkeypatch.setattr(data, "RESULTS_MAX_ROWS", 2)
    trials, note = data.workload_results(
        seeded_api.url, kernel="mla_decode", arch="cpu-interpreter", bucket=None
    )
    data.results.clear()
    assert len(trials) == 2
    assert note == (
        f"Read the first 2 of {n} trials of mla_decode on cpu-interpreter; this view may miss some."
    )
