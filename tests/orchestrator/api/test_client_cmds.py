"""`mlafleet submit / jobs / cancel / pull` against a real server: output and error lines."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from api_support import TOKEN, LiveServer
from typer.testing import CliRunner

from mlafleet.orchestrator.cli.main import app as cli
from mlafleet.orchestrator.config import get_settings

SPEC = {
    "kind": "tune",
    "name": "cli-job",
    "kernel": "mla_decode",
    "workloads": {"batch": [1], "seqlen": [128], "heads": [16]},
}


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[pytest.MonkeyPatch]:
    monkeypatch.setenv("MLAFLEET_API_TOKEN", TOKEN)
    monkeypatch.setenv("MLAFLEET_CONFIGS", str(tmp_path / "configs.json"))
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_submit_jobs_cancel(server: LiveServer, env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    job_file = tmp_path / "job.yaml"
    job_file.write_text(yaml.safe_dump(SPEC))
    code, out, _ = run("submit", str(job_file), "--api", server.url)
    assert code == 0
    assert out.strip() == (
        "job 1 queued: cli-job (tune mla_decode); follow it with `mlafleet jobs 1`"
    )
    code, out, _ = run("jobs", "--api", server.url)
    assert code == 0
    assert "cli-job" in out
    assert "queued" in out
    code, out, _ = run("jobs", "1", "--api", server.url, "--json")
    assert code == 0
    assert '"name": "cli-job"' in out
    code, out, _ = run("cancel", "1", "--api", server.url)
    assert code == 0
    assert out.startswith("job 1 cancelled")
    code, _, err = run("cancel", "1", "--api", server.url)
    assert code == 1
    assert err.strip() == ("error: job 1 already cancelled; there is nothing to cancel (HTTP 409)")


def test_invalid_spec_lists_problems(
    server: LiveServer, env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    job_file = tmp_path / "bad.json"
    job_file.write_text('{"name": "x", "kernel": "nope", "workloads": {"batch": [0]}}')
    code, _, err = run("submit", str(job_file), "--api", server.url)
    assert code == 1
    lines = err.strip().splitlines()
    assert lines[0].startswith("error: invalid job spec (")
    assert lines[0].endswith("(HTTP 422)")
    assert any(line.startswith("  - kernel:") for line in lines[1:])
    assert any(line.startswith("  - workloads.") for line in lines[1:])


def test_errors_are_one_line(server: LiveServer, env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env.setenv("MLAFLEET_API_TOKEN", "wrong")
    get_settings.cache_clear()
    job_file = tmp_path / "job.yaml"
    job_file.write_text(yaml.safe_dump(SPEC))
    code, _, err = run("submit", str(job_file), "--api", server.url)
    assert code == 1
    assert err.strip() == (
        "error: bearer token not accepted; use the MLAFLEET_API_TOKEN the server was started "
        "with (HTTP 401)"
    )
    code, _, err = run("jobs", "42", "--api", server.url)
    assert (code, err.strip()) == (
        1,
        "error: job 42 not found; list jobs with `mlafleet jobs` (HTTP 404)",
    )
    code, _, err = run("submit", str(tmp_path / "missing.yaml"), "--api", server.url)
    assert code == 1
    assert err.startswith("error: cannot read ")
    code, _, err = run("jobs", "--api", "http://127.0.0.1:9")
    assert code == 1
    assert err.startswith("error: cannot reach the API at http://127.0.0.1:9 (ConnectError")
    assert len(err.strip().splitlines()) == 1


def test_pull_empty_bundle_says_so(
    server: LiveServer, env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    code, out, err = run("pull", "--api", server.url)
    assert code == 0
    assert out.startswith("wrote 0 config(s) for no architecture to ")
    assert "run a tune job first" in err
    assert (tmp_path / "configs.json").is_file()
