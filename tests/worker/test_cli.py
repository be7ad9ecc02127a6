"""The worker's commands through typer's CliRunner: devices, tune, validate."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlafleet.kernels.bundle import BundleEntry, ConfigBundle, Software, WorkloadBucket
from mlafleet.orchestrator.cli.main import app
from mlafleet.worker import device

runner = CliRunner()
TINY = [
    "--kernel",
    "mla_decode",
    "--batch",
    "1",
    "--seqlen",
    "32",
    "--heads",
    "16",
    "--page-size",
    "16",
    "--dtype",
    "fp16",
]
GOOD = {
    "block_size_q": 16,
    "block_size_k": 16,
    "num_warps": 4,
    "num_stages": 1,
    "num_kv_splits": "auto",
}


def _flat(text: str) -> str:
    """Output with rich's box characters and line wrapping removed."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


def test_devices_json_lists_this_machine() -> None:
    # the CPU interpreter alone without a GPU (no driver in its key), else every GPU
    result = runner.invoke(app, ["devices", "--json"])
    assert result.exit_code == 0, result.output
    listed = json.loads(result.stdout)
    assert [d["arch"] for d in listed] == [d.arch for d in device.local_devices()]
    if device.gpu_count() == 0:
        assert listed[0]["arch"] == "cpu-interpreter"
        assert listed[0]["env_key"].startswith("driver=None")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--batch", "1,x"], "expected comma-separated positive integers"),
        (["--batch", "0"], "expected comma-separated positive integers"),
        (["--strategy", "grid"], "expected one of ['exhaustive', 'random', 'tpe']"),
        (["--page-size", "3"], "expected a power of two from 1 to 256"),
        (["--kernel", "nope"], "expected one of ['mla_decode', 'mla_prefill']"),
        (
            ["--dtype", "int8"],
            "expected one of ['fp16', 'bf16', 'fp32', 'fp8_e4m3', 'fp8_e4m3_qkv']",
        ),
        (
            ["--kernel", "mla_prefill", "--dtype", "fp8_e4m3", "--page-size", "64"],
            "mla_prefill has no fp8 (fp8_e4m3); use fp16, bf16 or fp32",
        ),
        (["--budget", "0"], "--budget"),
    ],
)
def test_tune_bad_flags_are_usage_errors(args: list[str], message: str) -> None:
    base = dict(zip(TINY[::2], TINY[1::2], strict=True))
    base.update(dict(zip(args[::2], args[1::2], strict=True)))
    argv = ["tune", *[x for kv in base.items() for x in kv]]
    result = runner.invoke(app, argv)
    assert result.exit_code == 2, result.output
    assert message in _flat(result.output)
    assert "Traceback" not in result.output


def test_tune_without_kernel_is_a_usage_error() -> None:
    result = runner.invoke(app, ["tune", "--batch", "1", "--seqlen", "32", "--heads", "16"])
    assert result.exit_code == 2
    assert "--kernel" in result.output


def test_tune_db_refused_before_tuning_when_the_store_cannot_save(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mlafleet.orchestrator.db import store

    monkeypatch.delattr(store, "save_tune_result", raising=False)
    result = runner.invoke(app, ["tune", *TINY, "--db", "sqlite:///x.db"])
    assert result.exit_code == 2
    assert "not available in this build yet" in _flat(result.output)


def test_tune_json_on_this_machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlafleet.orchestrator.db import store

    saved: list[tuple[str, object]] = []
    monkeypatch.setattr(
        store, "save_tune_result", lambda url, res: saved.append((url, res)), raising=False
    )
    cache = tmp_path / "trials.jsonl"
    result = runner.invoke(
        app,
        [
            "tune",
            *TINY,
            "--strategy",
            "exhaustive",
            "--cache",
            str(cache),
            "--json",
            "--db",
            "sqlite:///t.db",
        ],
    )
    assert result.exit_code == 0, result.output
    assert [url for url, _ in saved] == ["sqlite:///t.db"]
    (tuned,) = json.loads(result.stdout)["results"]
    assert tuned["device"]["arch"] == device.local_devices()[0].arch  # (the interpreter: no GPU)
    assert tuned["problem"]["h_q"] == 16
    assert tuned["counts"].get("ok", 0) >= 1
    assert tuned["best"]["status"] == "ok"
    assert tuned["best"]["validation"]["passed"]
    on_gpu = device.gpu_count() > 0
    assert tuned["best"]["timing"]["method"] == ("cuda_graph" if on_gpu else "wall_clock")
    assert tuned["default"]["is_default"]
    assert tuned["speedup_vs_default"] > 0
    assert len(cache.read_text().splitlines()) == len(tuned["trials"])


def test_validate_given_configs(tmp_path: Path) -> None:
    bad = {**GOOD, "block_size_q": 24}
    result = runner.invoke(
        app,
        ["validate", *TINY, "--config", json.dumps(GOOD), "--config", json.dumps(bad), "--json"],
    )
    assert result.exit_code == 1, result.output  # one config is invalid
    checks = json.loads(result.stdout)["checks"]
    assert [c["status"] for c in checks] == ["ok", "invalid_config"]
    assert "block_size_q 24" in checks[1]["message"]
    assert checks[0]["trial"]["validation"]["passed"]


def test_validate_bundle_checks_this_arch_and_skips_others(tmp_path: Path) -> None:
    here = device.local_devices()[0].arch  # ("cpu-interpreter" without a GPU)
    other = "sm_80" if here == "sm_90" else "sm_90"
    bucket = WorkloadBucket(batch=1, seqlen=32, heads=16, s_q=1, dtype="fp16", page_size=16)
    sw = Software(torch="2", triton="3")
    entries = [
        BundleEntry(
            kernel="mla_decode",
            arch=arch,
            gpu_name=name,
            software=sw,
            bucket=bucket,
            config=GOOD,
            median_us=1.0,
            validated=True,
        )
        for arch, name in ((here, "this machine's"), (other, "another"))
    ]
    path = tmp_path / "bundle.json"
    path.write_text(ConfigBundle(entries=entries).model_dump_json(), encoding="utf-8")
    result = runner.invoke(app, ["validate", "--bundle", str(path), "--json", "--max-drift", "1e9"])
    assert result.exit_code == 0, result.output
    checks = json.loads(result.stdout)["checks"]
    assert [c["status"] for c in checks] == ["ok", "skipped"]
    assert f"recorded for {other}" in checks[1]["message"]


def test_validate_needs_a_bundle_or_a_kernel(tmp_path: Path) -> None:
    result = runner.invoke(app, ["validate"])
    assert result.exit_code == 2
    assert "pass either --bundle FILE or --kernel K" in _flat(result.output)
    junk = tmp_path / "junk.json"
    junk.write_text("{}", encoding="utf-8")
    junk.write_text('{"entries": [{"kernel": "mla_decode"}]}', encoding="utf-8")
    result = runner.invoke(app, ["validate", "--bundle", str(junk)])
    assert result.exit_code == 2
    assert "is not a config bundle" in _flat(result.output)


def test_tune_an_fp8_q_over_an_fp8_cache_on_the_interpreter(tmp_path: Path) -> None:
    # FlashMLA's fp8 interface as a workload: inputs with an fp8 q and cache, checked against
    # the fp32 reference under the fp8 tolerance, the winner among them
    cache = tmp_path / "trials.jsonl"
    argv = ["tune", *TINY[:-1], "fp8_e4m3_qkv", "--cache", str(cache), "--json"]
    result = runner.invoke(app, argv)
    assert result.exit_code == 0, result.output
    (tuned,) = json.loads(result.stdout)["results"]
    assert tuned["problem"]["q_dtype"] == tuned["problem"]["kv_dtype"] == "fp8_e4m3"
    assert tuned["best"]["status"] == "ok"
    validation = tuned["best"]["validation"]
    assert validation["passed"]
    assert (validation["atol"], validation["rtol"]) == (8e-2, 8e-2)
    assert 0 < validation["rel_l2_err"] < 3e-2
    assert len(cache.read_text().splitlines()) == len(tuned["trials"]) >= 2
