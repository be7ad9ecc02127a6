"""A tuned database -> the API -> `mlafleet pull` -> ``mla_decode(config=None)`` using the
pulled config; and ``mlafleet export`` straight from the database. The results come from a
real tuning run of the worker on the CPU interpreter."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from api_support import TOKEN, LiveServer, seed_trials
from typer.testing import CliRunner

from mlafleet.kernels import runtime_configs
from mlafleet.kernels.bundle import ConfigBundle, bucket_of
from mlafleet.kernels.configs import DecodeConfig, DecodeProblem
from mlafleet.kernels.decode_inputs import make_decode_inputs
from mlafleet.kernels.mla_decode import mla_decode
from mlafleet.kernels.reference import mla_decode_ref
from mlafleet.orchestrator.cli.main import app as cli
from mlafleet.orchestrator.config import get_settings
from mlafleet.worker.schemas import TrialResult
from mlafleet.worker.sweep import SweepOptions
from mlafleet.worker.timing import TimingOptions
from mlafleet.worker.tune import tune

# small head dims: the interpreter runs this in seconds
PROBLEM = DecodeProblem(
    batch=1, s_q=1, h_q=16, seqlen=32, page_size=16, dtype="fp16", d_qk=80, d_v=64
)


@pytest.fixture(scope="module")
def tuned_trials() -> list[TrialResult]:
    """One real tuning run (shared by this module's tests; each seeds its own database)."""
    result = tune(
        "mla_decode",
        PROBLEM,
        strategy="exhaustive",
        options=SweepOptions(compile_workers=1, timing=TimingOptions(interpreter_calls=1)),
    )
    ok = [t for t in result.trials if t.status.value == "ok"]
    assert ok, [t.error for t in result.trials]
    assert result.best is not None
    return list(result.trials)


@pytest.fixture
def tuned_db(db_url: str, tuned_trials: list[TrialResult]) -> str:
    seed_trials(db_url, tuned_trials)
    return db_url


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    bundle = tmp_path / "pulled" / "configs.json"
    monkeypatch.setenv("MLAFLEET_CONFIGS", str(bundle))
    monkeypatch.setenv("MLAFLEET_API_TOKEN", TOKEN)
    get_settings.cache_clear()
    runtime_configs.reset_cache()
    yield bundle
    get_settings.cache_clear()
    runtime_configs.reset_cache()


def test_pull_then_kernel_uses_the_bundle(
    tuned_db: str,
    make_server: Callable[..., LiveServer],
    cli_env: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    live = make_server(tuned_db, api_token=TOKEN)
    runner = CliRunner()
    res = runner.invoke(cli, ["pull", "--api", live.url, "--arch", "cpu-interpreter"])
    assert res.exit_code == 0, res.output
    assert f"to {cli_env}" in res.output
    bundle = ConfigBundle.model_validate_json(cli_env.read_text())
    assert len(bundle.entries) == 1
    entry = bundle.entries[0]
    assert entry.arch == "cpu-interpreter"
    assert entry.validated
    assert entry.bucket == bucket_of(PROBLEM)
    assert entry.software.triton == runtime_configs.running_software().triton

    inputs = make_decode_inputs(PROBLEM, device="cpu", seed=3)
    tensors = {
        k: v for k, v in inputs.items() if k in ("q", "kv_cache", "block_table", "cache_seqlens")
    }
    q, kv, table, lens = (tensors[k] for k in ("q", "kv_cache", "block_table", "cache_seqlens"))
    runtime_configs.reset_cache()
    with caplog.at_level(logging.DEBUG, logger="mlafleet.kernels.runtime_configs"):
        out, lse = mla_decode(q, kv, table, lens, head_dim_v=PROBLEM.d_v, config=None)
    # the lookup the kernel made: from the pulled bundle, exact bucket
    call_problem = DecodeProblem(
        batch=1,
        s_q=1,
        h_q=16,
        seqlen=table.shape[1] * PROBLEM.page_size,
        page_size=16,
        dtype="fp16",
        d_qk=80,
        d_v=64,
    )
    from mlafleet.kernels.configs import CPU_INTERPRETER

    looked = runtime_configs.lookup("mla_decode", call_problem, CPU_INTERPRETER)
    expected_level = "exact" if bucket_of(call_problem) == entry.bucket else "nearest_bucket"
    assert looked.level == expected_level
    assert looked.bundle == cli_env
    assert looked.config == DecodeConfig.from_dict(entry.config)
    assert any(f"level {expected_level}" in r.getMessage() for r in caplog.records)
    ref_out, _ = mla_decode_ref(q, kv, table, lens, head_dim_v=PROBLEM.d_v)
    torch.testing.assert_close(out.float(), ref_out.float(), atol=2e-3, rtol=2e-3)
    assert lse.shape == (1, 16, 1)


def test_export_from_the_database(tuned_db: str, tmp_path: Path, cli_env: Path) -> None:
    target = tmp_path / "exported.json"
    res = CliRunner().invoke(cli, ["export", "--db", tuned_db, "--out", str(target)])
    assert res.exit_code == 0, res.output
    bundle = ConfigBundle.model_validate_json(target.read_text())
    assert [e.arch for e in bundle.entries] == ["cpu-interpreter"]
    assert "MLAFLEET_CONFIGS" in res.output  # it says how to use a file at another path
