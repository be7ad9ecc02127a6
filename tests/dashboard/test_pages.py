"""Every dashboard page through Streamlit's AppTest, against a real API (uvicorn) serving a
database seeded by a real tuning run on the CPU interpreter; plus an empty database and an API
that is down."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from streamlit.testing.v1 import AppTest

from mlafleet.dashboard.analysis import folk_config, format_config
from mlafleet.worker.schemas import TrialResult, TrialStatus

SeededApi = Any  # conftest.SeededApi: url, trials (the seeding run's TrialResults), job_name

PAGES = ["recommendations", "fleet", "explore", "compare", "jobs"]


APP_PATH = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"


def run_page(page: str, url: str, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    """Render one page of the dashboard against the API at ``url``."""
    monkeypatch.setenv("MLAFLEET_API_URL", url)
    monkeypatch.delenv("MLAFLEET_API_TOKEN", raising=False)
    at = AppTest.from_file(str(APP_PATH), default_timeout=60)
    at.switch_page(f"app_pages/{page}.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(at: AppTest) -> str:
    """Every message, caption and markdown text of the page, joined."""
    parts = [
        *(e.value for e in at.error),
        *(e.value for e in at.warning),
        *(e.value for e in at.info),
        *(e.value for e in at.success),
        *(e.value for e in at.caption),
        *(e.value for e in at.markdown),
    ]
    return "\n".join(str(p) for p in parts)


def fastest(trials: list[TrialResult]) -> TrialResult:
    ok = [t for t in trials if t.status is TrialStatus.OK and t.median_us is not None]
    validated = [t for t in ok if t.validation is not None and t.validation.passed]
    return min(validated or ok, key=lambda t: t.median_us or 0.0)


def test_recommendations_page_shows_the_measured_winner(
    seeded_api: SeededApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = run_page("recommendations", seeded_api.url, monkeypatch)
    assert at.title[0].value == "Recommended configs"
    table = at.dataframe[0].value
    best = fastest(seeded_api.trials)
    assert len(table) == 1
    row = table.iloc[0]
    assert row["config"] == format_config(best.config)
    assert row["median_us"] == pytest.approx(best.median_us)
    default = next(t for t in seeded_api.trials if t.is_default)
    assert row["speedup_vs_default"] == pytest.approx(default.median_us / best.median_us)
    assert bool(row["validated"]) is True
    assert row["gpu_name"] == best.device.name
    assert f"triton {best.device.software.triton}" in row["software"]
    assert at.selectbox[1].value == "cpu-interpreter"
    downloads = at.get("download_button")
    assert len(downloads) == 1
    assert "(1 entry, JSON)" in downloads[0].label


def test_fleet_page_lists_devices_and_jobs(
    seeded_api: SeededApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = run_page("fleet", seeded_api.url, monkeypatch)
    archs, jobs = at.dataframe[0].value, at.dataframe[1].value
    assert list(archs["arch"]) == ["cpu-interpreter"]
    device = seeded_api.trials[0].device
    assert device.host in archs.iloc[0]["nodes"]
    assert f"torch {device.software.torch}" in archs.iloc[0]["software"]
    assert seeded_api.job_name in list(jobs["name"])
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["GPUs"] == "1"
    assert metrics["Architectures"] == "1"


def test_explore_page_heatmap_and_timing_distribution(
    seeded_api: SeededApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = run_page("explore", seeded_api.url, monkeypatch)
    metrics = {m.label: m.value for m in at.metric}
    ran = [t for t in seeded_api.trials if t.status is TrialStatus.OK]
    assert metrics["Trials"] == str(len(seeded_api.trials))
    assert metrics["Ran"] == str(len(ran))
    charts = [json.loads(c.proto.spec) for c in at.get("vega_lite_chart")]
    assert len(charts) == 2  # heatmap + timing distribution
    heatmap, timing = charts
    assert heatmap["facet"]["row"]["field"] == "num_stages"
    assert heatmap["facet"]["column"]["field"] == "num_warps"
    assert timing["layer"][0]["encoding"]["x"]["field"] == "sample_us"
    best = fastest(seeded_api.trials)
    config_box = at.selectbox[-1]
    assert config_box.label == "Config (fastest first)"
    assert str(config_box.options[0]).startswith(format_config(best.config))
    assert len(config_box.options) == len(ran)
    assert "trial #" in texts(at)


def test_compare_page_folk_rule_against_winner(
    seeded_api: SeededApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = run_page("compare", seeded_api.url, monkeypatch)
    table = at.dataframe[0].value
    row = table.iloc[0]
    best = fastest(seeded_api.trials)
    assert row["arch"] == "cpu-interpreter"
    assert row["winner_us"] == pytest.approx(best.median_us)
    folk = folk_config("cpu-interpreter")
    measured = [t for t in seeded_api.trials if all(t.config.get(k) == v for k, v in folk.items())]
    assert row["folk"] == format_config(folk)
    if measured:  # the folk tiles were in this search: their time and the loss are shown
        folk_us = min(t.median_us for t in measured if t.median_us is not None)
        assert float(row["folk_us"]) == pytest.approx(folk_us, abs=0.05)
        assert row["lost"] == f"{(folk_us / best.median_us - 1) * 100:.0f}% slower"
    else:  # pruned from the interpreter's small space: said, not guessed
        assert row["folk_us"] == "not measured"
        assert row["lost"] == "—"
        assert "not measured in this search" in texts(at)


def test_jobs_page_lists_jobs_and_offers_the_form(
    seeded_api: SeededApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = run_page("jobs", seeded_api.url, monkeypatch)
    assert seeded_api.job_name in list(at.dataframe[0].value["name"])
    labels = [b.label for b in at.button]
    assert {"Submit job", "Submit YAML", "Cancel job"} <= set(labels)


@pytest.mark.parametrize("page", PAGES)
def test_pages_on_an_empty_database_say_how_to_start(
    page: str, empty_api: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = run_page(page, empty_api, monkeypatch)
    assert "mlafleet demo" in texts(at)
    assert "mlafleet submit job.yaml" in texts(at)


@pytest.mark.parametrize("page", PAGES)
def test_pages_with_the_api_down_say_so(
    page: str, down_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = run_page(page, down_url, monkeypatch)
    errors = [e.value for e in at.error]
    assert any(f"API unreachable at {down_url}" in e for e in errors), errors
    assert any("mlafleet serve" in e for e in errors)
    assert "Traceback" not in texts(at)


def test_submit_then_cancel_with_a_token(
    writable_api: str, api_token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = run_page("jobs", writable_api, monkeypatch)
    at.text_input(key="job_name").set_value("from-the-dashboard")
    at.button(key="submit_form").click().run()
    assert not at.exception
    assert any("401" in e.value for e in at.error), [e.value for e in at.error]
    assert httpx.get(f"{writable_api}/v1/jobs").json()["total"] == 0

    at.text_input(key="api_token").set_value(api_token)
    at.button(key="submit_form").click().run()
    assert not at.exception
    assert any("Submitted job" in s.value for s in at.success), texts(at)
    jobs = httpx.get(f"{writable_api}/v1/jobs").json()["items"]
    assert [j["name"] for j in jobs] == ["from-the-dashboard"]
    assert jobs[0]["spec"]["workloads"]["batch"] == [1, 8]

    at.run()
    at.selectbox(key="cancel_job_id").set_value(jobs[0]["id"])
    at.button(key="cancel").click().run()
    assert not at.exception
    assert any("Cancelling job" in s.value for s in at.success), texts(at)
    status = httpx.get(f"{writable_api}/v1/jobs/{jobs[0]['id']}").json()["status"]
    assert status in ("cancelled", "cancelling")


def test_invalid_form_lists_every_problem_and_sends_nothing(
    empty_api: str, api_token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = run_page("jobs", empty_api, monkeypatch)
    at.text_input(key="api_token").set_value(api_token)
    at.text_input(key="batch").set_value("1, x")
    at.text_input(key="heads").set_value("")
    at.button(key="submit_form").click().run()
    assert not at.exception
    errors = "\n".join(e.value for e in at.error)
    assert "workloads.batch: expected whole numbers separated by commas, got 'x'" in errors
    assert "workloads.heads: give at least one value" in errors
    assert httpx.get(f"{empty_api}/v1/jobs").json()["total"] == 0

    at.text_input(key="batch").set_value("1")
    at.text_input(key="heads").set_value("16")
    at.text_input(key="job_name").set_value("")
    at.text_input(key="archs").set_value("sm_90, sm_90")
    at.button(key="submit_form").click().run()
    errors = "\n".join(e.value for e in at.error)
    assert "name:" in errors
    assert "archs: listed more than once: ['sm_90']" in errors
    assert httpx.get(f"{empty_api}/v1/jobs").json()["total"] == 0
