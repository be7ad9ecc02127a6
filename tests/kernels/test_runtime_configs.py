"""Run-time config lookup: the fallback chain, the bundle file, the cache, threads."""

from __future__ import annotations

import logging
import os
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mlafleet.kernels import runtime_configs as rc
from mlafleet.kernels.bundle import BundleEntry, ConfigBundle, Software, WorkloadBucket, bucket_of
from mlafleet.kernels.configs import CPU_INTERPRETER, DecodeConfig, DecodeProblem, DeviceLimits
from mlafleet.kernels.decode_tuning import default_decode_config
from mlafleet.kernels.device_limits import interpreting

INTERPRETER_ONLY = pytest.mark.skipif(
    not interpreting(),
    reason="runs a kernel on CPU tensors with the interpreter's bundle entry (TRITON_INTERPRET=1)",
)


SW = Software(driver="550.54", cuda="12.4", torch="2.13.0", triton="3.6.0")
OLD_SW = Software(driver="550.54", cuda="12.4", torch="2.13.0", triton="3.5.0")
BUCKET = WorkloadBucket(batch=64, seqlen=4096, heads=16, s_q=1, dtype="bf16", page_size=64)
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def entry(
    *,
    arch: str = "sm_90",
    bucket: WorkloadBucket = BUCKET,
    config: dict[str, object] | None = None,
    software: Software = SW,
    validated: bool = True,
    gpu_name: str = "NVIDIA H200",
    age_days: int = 0,
    kernel: str = "mla_decode",
) -> BundleEntry:
    return BundleEntry(
        kernel=kernel,
        arch=arch,
        gpu_name=gpu_name,
        software=software,
        bucket=bucket,
        config=config or {"block_size_q": 16, "block_size_k": 32, "num_warps": 4, "num_stages": 2},
        median_us=10.0,
        speedup_vs_default=1.5,
        validated=validated,
        measured_at=T0 - timedelta(days=age_days),
    )


def select(entries: list[BundleEntry], **kw: object) -> tuple[BundleEntry | None, str]:
    args: dict[str, object] = {"kernel": "mla_decode", "arch": "sm_90", "bucket": BUCKET}
    args["software"] = SW
    args.update(kw)
    return rc.select_entry(entries, **args)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- select_entry


def test_exact_bucket_wins_over_everything() -> None:
    exact = entry()
    near = entry(bucket=BUCKET.model_copy(update={"batch": 32}))
    assert select([near, exact]) == (exact, "exact")


def test_nearest_bucket_by_log2_distance_among_same_class() -> None:
    far = entry(bucket=BUCKET.model_copy(update={"batch": 1}))
    close = entry(bucket=BUCKET.model_copy(update={"seqlen": 8192}))
    other_heads = entry(bucket=BUCKET.model_copy(update={"heads": 128, "batch": 64}))
    got, level = select([far, close, other_heads])
    assert (got, level) == (close, "nearest_bucket")
    assert rc.bucket_distance(close.bucket, BUCKET) == 1.0
    assert rc.bucket_distance(far.bucket, BUCKET) == 6.0


def test_arch_winner_is_the_most_common_config() -> None:
    common = {"block_size_q": 32, "block_size_k": 32, "num_warps": 4, "num_stages": 1}
    rare = {"block_size_q": 16, "block_size_k": 16, "num_warps": 4, "num_stages": 1}
    pool = [
        entry(bucket=BUCKET.model_copy(update={"heads": 128}), config=common),
        entry(bucket=BUCKET.model_copy(update={"heads": 64}), config=common),
        entry(bucket=BUCKET.model_copy(update={"heads": 32}), config=rare),
    ]
    got, level = select(pool)
    assert level == "arch_winner"
    assert got is not None
    assert got.config == common


def test_unvalidated_entries_are_never_used() -> None:
    bad = entry(validated=False)
    assert select([bad]) == (None, "default")
    good = entry(bucket=BUCKET.model_copy(update={"batch": 128}))
    assert select([bad, good]) == (good, "nearest_bucket")


def test_other_software_is_only_a_fallback_and_says_so() -> None:
    old_exact = entry(software=OLD_SW)
    assert select([old_exact]) == (old_exact, "exact_other_software")
    same_sw_near = entry(bucket=BUCKET.model_copy(update={"batch": 32}))
    assert select([old_exact, same_sw_near]) == (same_sw_near, "nearest_bucket")
    # software=None: the caller does not say, every entry counts as same-software
    assert select([old_exact], software=None) == (old_exact, "exact")


def test_driver_mismatch_counts_as_other_software_unknown_does_not() -> None:
    other_driver = entry(software=SW.model_copy(update={"driver": "535.1"}))
    assert select([other_driver])[1] == "exact_other_software"
    unknown_driver = entry(software=SW.model_copy(update={"driver": None}))
    assert select([unknown_driver])[1] == "exact"


def test_related_arch_after_own_arch_levels() -> None:
    h100a = entry(arch="sm_90a")
    assert select([h100a]) == (h100a, "related_arch")
    assert select([entry(arch="sm_90a", software=OLD_SW)])[1] == "related_arch_other_software"
    own_other_sw = entry(software=OLD_SW, bucket=BUCKET.model_copy(update={"heads": 8}))
    assert select([h100a, own_other_sw]) == (own_other_sw, "arch_winner_other_software")
    assert select([entry(arch="sm_80")]) == (None, "default")
    assert select([entry(arch="sm_90")], arch="cpu-interpreter") == (None, "default")


@pytest.mark.parametrize(
    ("arch", "pool", "expected"),
    [
        ("sm_90", ["sm_90a", "sm_80", "gfx942"], ["sm_90a"]),
        ("sm_86", ["sm_80", "sm_89", "sm_87", "sm_90"], ["sm_87", "sm_89", "sm_80"]),
        ("gfx942", ["gfx940", "gfx941", "gfx90a", "sm_90"], ["gfx941", "gfx940"]),
        ("gfx1100", ["gfx1101", "gfx942"], ["gfx1101"]),
        ("cpu-interpreter", ["sm_90", "cpu-interpreter"], []),
    ],
)
def test_related_archs(arch: str, pool: list[str], expected: list[str]) -> None:
    assert rc.related_archs(arch, pool) == expected


def test_ties_prefer_same_gpu_then_newest() -> None:
    old = entry(age_days=10)
    new = entry(age_days=1)
    h100 = entry(age_days=20, gpu_name="NVIDIA H100")
    assert select([old, new, h100])[0] is new
    assert select([old, new, h100], gpu_name="NVIDIA H100")[0] is h100


def test_accept_filter_and_other_kernels_ignored() -> None:
    prefill = entry(kernel="mla_prefill")
    rejected = entry()
    near = entry(bucket=BUCKET.model_copy(update={"batch": 128}))
    got = select([prefill, rejected, near], accept=lambda e: e is not rejected)
    assert got == (near, "nearest_bucket")


# ----------------------------------------------------------------------------- config_for


PROBLEM = DecodeProblem(batch=2, s_q=1, h_q=16, seqlen=40, page_size=16, dtype="fp16")


def write_bundle(path: Path, entries: list[BundleEntry]) -> None:
    path.write_text(ConfigBundle(source="test", entries=entries).model_dump_json())


def cpu_entry(config: dict[str, object], **kw: object) -> BundleEntry:
    args: dict[str, object] = {
        "arch": "cpu-interpreter",
        "bucket": bucket_of(PROBLEM),
        "config": config,
        "software": rc.running_software(),
    }
    args.update(kw)
    return entry(**args)  # type: ignore[arg-type]


@pytest.fixture
def bundle_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "configs.json"
    monkeypatch.setenv("MLAFLEET_CONFIGS", str(path))
    rc.reset_cache()
    yield path
    rc.reset_cache()


TUNED = {"block_size_q": 16, "block_size_k": 32, "num_warps": 2, "num_stages": 1}


def test_config_for_uses_the_bundle_entry(
    bundle_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_bundle(bundle_file, [cpu_entry(TUNED)])
    with caplog.at_level(logging.DEBUG, logger="mlafleet.kernels.runtime_configs"):
        got = rc.config_for("mla_decode", PROBLEM, CPU_INTERPRETER)
    assert got == DecodeConfig(**TUNED)
    looked = rc.lookup("mla_decode", PROBLEM, CPU_INTERPRETER)
    assert looked.level == "exact"
    assert looked.bundle == bundle_file
    assert looked.entry is not None
    assert looked.entry.config == TUNED
    assert any("level exact" in r.getMessage() for r in caplog.records)


def test_no_bundle_gives_the_builtin_default(bundle_file: Path) -> None:
    got = rc.lookup("mla_decode", PROBLEM, CPU_INTERPRETER)
    assert got.level == "default"
    assert got.entry is None
    assert got.config == default_decode_config(PROBLEM, CPU_INTERPRETER)


def test_corrupt_bundle_is_ignored_with_a_warning(
    bundle_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bundle_file.write_text('{"format_version": 1, "entries": [{"kernel": "nope"}]}')
    with caplog.at_level(logging.WARNING, logger="mlafleet.kernels.runtime_configs"):
        got = rc.lookup("mla_decode", PROBLEM, CPU_INTERPRETER)
    assert got.level == "default"
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "not a valid mlafleet config bundle" in messages
    assert "mlafleet pull" in messages


def test_config_the_kernel_cannot_run_is_skipped(bundle_file: Path) -> None:
    # block_size_q 128 > the 16 query rows of PROBLEM: why_invalid refuses it
    too_big = {"block_size_q": 128, "block_size_k": 32, "num_warps": 4, "num_stages": 1}
    near = cpu_entry(TUNED, bucket=bucket_of(PROBLEM).model_copy(update={"batch": 4}))
    write_bundle(bundle_file, [cpu_entry(too_big), near])
    got = rc.lookup("mla_decode", PROBLEM, CPU_INTERPRETER)
    assert (got.level, got.config) == ("nearest_bucket", DecodeConfig(**TUNED))


def test_unknown_knob_in_entry_is_skipped(bundle_file: Path) -> None:
    write_bundle(bundle_file, [cpu_entry({"block_size_q": 16, "warp_count": 4})])
    assert rc.lookup("mla_decode", PROBLEM, CPU_INTERPRETER).level == "default"


def test_reloads_when_the_file_changes(bundle_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rc, "CHECK_INTERVAL_S", 0.0)
    write_bundle(bundle_file, [cpu_entry(TUNED)])
    assert rc.lookup("mla_decode", PROBLEM, CPU_INTERPRETER).config == DecodeConfig(**TUNED)
    other = {"block_size_q": 16, "block_size_k": 16, "num_warps": 4, "num_stages": 1}
    write_bundle(bundle_file, [cpu_entry(other)])
    st = bundle_file.stat()
    os.utime(bundle_file, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert rc.lookup("mla_decode", PROBLEM, CPU_INTERPRETER).config == DecodeConfig(**other)
    bundle_file.unlink()
    assert rc.lookup("mla_decode", PROBLEM, CPU_INTERPRETER).level == "default"


def test_check_is_throttled_to_once_per_interval(bundle_file: Path) -> None:
    write_bundle(bundle_file, [cpu_entry(TUNED)])
    first = rc.lookup("mla_decode", PROBLEM, CPU_INTERPRETER)
    bundle_file.unlink()  # within the interval the cached lookup stands
    assert rc.lookup("mla_decode", PROBLEM, CPU_INTERPRETER) is first


def test_cache_is_per_arch(bundle_file: Path) -> None:
    write_bundle(bundle_file, [cpu_entry(TUNED)])
    sm90 = DeviceLimits(arch="sm_90")
    assert rc.lookup("mla_decode", PROBLEM, CPU_INTERPRETER).level == "exact"
    on_gpu = rc.lookup("mla_decode", PROBLEM, sm90)
    assert on_gpu.level == "default"
    assert on_gpu.config == default_decode_config(PROBLEM, sm90)


def test_threads_agree_while_the_file_is_rewritten(
    bundle_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rc, "CHECK_INTERVAL_S", 0.0)
    write_bundle(bundle_file, [cpu_entry(TUNED)])
    allowed = {DecodeConfig(**TUNED), default_decode_config(PROBLEM, CPU_INTERPRETER)}
    errors: list[BaseException] = []
    seen: set[DecodeConfig] = set()
    stop = threading.Event()

    def reader() -> None:
        try:
            while not stop.is_set():
                problem = DecodeProblem(
                    batch=2, s_q=1, h_q=16, seqlen=40, page_size=16, dtype="fp16"
                )
                seen.add(rc.config_for("mla_decode", problem, CPU_INTERPRETER))  # type: ignore[arg-type]
        except BaseException as exc:  # collected and re-raised in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    for i in range(20):
        if i % 2:
            write_bundle(bundle_file, [cpu_entry(TUNED)])
        else:
            bundle_file.unlink()
    stop.set()
    for t in threads:
        t.join(timeout=30)
    assert not errors
    assert seen
    assert seen <= allowed


def test_default_path_is_the_user_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLAFLEET_CONFIGS", raising=False)
    path = rc.bundle_path()
    assert path.name == "configs.json"
    assert path.parent.name == "mlafleet"


@INTERPRETER_ONLY
def test_prefill_call_with_config_none_uses_the_bundle(
    bundle_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import torch

    from mlafleet.kernels.configs import PrefillConfig, PrefillProblem
    from mlafleet.kernels.mla_prefill import mla_prefill
    from mlafleet.kernels.reference import mla_prefill_ref

    problem = PrefillProblem(batch=1, seqlen_q=32, seqlen_k=32, h=2, d_qk=32, d_v=32, dtype="fp16")
    tuned = {"block_size_q": 16, "block_size_k": 32, "num_warps": 4, "num_stages": 1}
    write_bundle(
        bundle_file,
        [cpu_entry(tuned, kernel="mla_prefill", bucket=bucket_of(problem))],
    )
    looked = rc.lookup("mla_prefill", problem, CPU_INTERPRETER)
    assert (looked.level, looked.config) == ("exact", PrefillConfig(**tuned))
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(32, 2, 32, generator=gen).half()
    k = torch.randn(32, 2, 32, generator=gen).half()
    v = torch.randn(32, 2, 32, generator=gen).half()
    cu = torch.tensor([0, 32], dtype=torch.int32)
    rc.reset_cache()
    with caplog.at_level(logging.DEBUG, logger="mlafleet.kernels.runtime_configs"):
        out, lse = mla_prefill(q, k, v, cu, cu, 32, 32, causal=True, config=None)
    logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("mla_prefill")]
    assert len(logged) == 1
    assert "level exact" in logged[0]
    assert str(PrefillConfig(**tuned)) in logged[0]
    ref, ref_lse = mla_prefill_ref(q, k, v, cu, cu, 32, 32, causal=True)
    torch.testing.assert_close(out.float(), ref.float(), atol=2e-3, rtol=2e-3)
    torch.testing.assert_close(lse, ref_lse, atol=1e-3, rtol=1e-3)


@INTERPRETER_ONLY
def test_fp8_q_call_looks_up_its_own_precision(
    bundle_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # an fp8 q over an fp8 cache is its own bucket (fp8_e4m3_qkv): the entry tuned for it wins
    # over the one for a bf16 q over the same cache
    import torch

    from mlafleet.kernels.decode_inputs import make_decode_inputs
    from mlafleet.kernels.mla_decode import mla_decode
    from mlafleet.kernels.reference import mla_decode_ref

    fp8_kv = DecodeProblem(
        batch=2, s_q=1, h_q=16, seqlen=40, d_qk=96, d_v=64, page_size=16, dtype="bf16",
        kv_dtype="fp8_e4m3",
    )  # fmt: skip
    fp8_q = DecodeProblem(**{**fp8_kv.as_dict(), "q_dtype": "fp8_e4m3"})
    for_kv = {"block_size_q": 16, "block_size_k": 16, "num_warps": 4, "num_stages": 1}
    for_q = {"block_size_q": 16, "block_size_k": 32, "num_warps": 4, "num_stages": 1}
    write_bundle(
        bundle_file,
        [cpu_entry(for_kv, bucket=bucket_of(fp8_kv)), cpu_entry(for_q, bucket=bucket_of(fp8_q))],
    )
    assert bucket_of(fp8_q).dtype == "fp8_e4m3_qkv"
    inputs = make_decode_inputs(fp8_q, device="cpu", seed=3)
    assert inputs["q"].dtype == torch.float8_e4m3fn
    with caplog.at_level(logging.DEBUG, logger="mlafleet.kernels.runtime_configs"):
        out, lse = mla_decode(**inputs, config=None)
    (logged,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("mla_decode")]
    assert "bucket b2-n64-h16-s1-fp8_e4m3_qkv-p16: level exact" in logged
    assert str(DecodeConfig(**for_q)) in logged
    ref, ref_lse = mla_decode_ref(**inputs)
    torch.testing.assert_close(out.float(), ref.float(), atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(lse, ref_lse, atol=1e-3, rtol=1e-3)
