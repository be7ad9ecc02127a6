"""CLI commands: devices, tune, validate (worker; one machine, no fleet).

Results go to stdout (JSON with ``--json``, else a table); progress and notes go to stderr.
A bad flag is a typer usage error (exit code 2) naming the flag and what it expects.
"""

from __future__ import annotations

import importlib
import itertools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from mlafleet.kernels.bundle import ConfigBundle
from mlafleet.kernels.configs import (
    FP8_WORKLOAD_DTYPES,
    KERNEL_DECODE,
    KERNEL_NAMES,
    WORKLOAD_DTYPES,
    DecodeProblem,
    PrefillProblem,
)

_out = Console(highlight=False, soft_wrap=True)
_err = Console(stderr=True, highlight=False)


def _int_list(text: str, flag: str) -> list[int]:
    """``"1,64"`` -> ``[1, 64]``; a clear usage error otherwise."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise typer.BadParameter(
            f"expected comma-separated positive integers like 1,64, got {text!r}", param_hint=flag
        ) from None
    if not values or min(values) < 1:
        raise typer.BadParameter(
            f"expected comma-separated positive integers like 1,64, got {text!r}", param_hint=flag
        )
    return values


def _device_json(dev: Any) -> dict[str, Any]:
    data: dict[str, Any] = dev.model_dump(mode="json")
    data["device_key"] = dev.device_key
    data["env_key"] = dev.env_key
    return data


def devices(
    as_json: Annotated[bool, typer.Option("--json", help="JSON on stdout.")] = False,
) -> None:
    """The local devices (GPUs, or the CPU interpreter) and their fingerprints."""
    from mlafleet.worker.device import local_devices

    devs = local_devices()
    if as_json:
        typer.echo(json.dumps([_device_json(d) for d in devs], indent=2))
        return
    table = Table(title="local devices")
    for col in (
        "index",
        "name",
        "arch",
        "SMs",
        "memory GiB",
        "L2 MiB",
        "driver",
        "CUDA/ROCm",
        "torch",
        "triton",
        "host",
    ):
        table.add_column(col)
    for d in devs:
        sw = d.software
        table.add_row(
            str(d.index),
            d.name,
            d.arch,
            str(d.sm_count),
            f"{d.memory_bytes / 2**30:.1f}",
            f"{d.l2_bytes / 2**20:.1f}",
            sw.driver or "-",
            sw.cuda or sw.rocm or "-",
            sw.torch,
            sw.triton,
            d.host,
        )
    _out.print(table)
    if devs[0].arch == "cpu-interpreter":
        _err.print(
            "no GPU: kernels run on Triton's CPU interpreter (functional only, timings meaningless)"
        )


def _problems(
    kernel: str, *, batch: str, seqlen: str, heads: str, s_q: int, dtype: str, page_size: int
) -> list[Any]:
    batches = _int_list(batch, "--batch")
    seqlens = _int_list(seqlen, "--seqlen")
    head_counts = _int_list(heads, "--heads")
    out: list[Any] = []
    for b, n, h in itertools.product(batches, seqlens, head_counts):
        if kernel == KERNEL_DECODE:
            dtypes = DecodeProblem.dtypes_of(dtype)
            out.append(
                DecodeProblem(batch=b, s_q=s_q, h_q=h, seqlen=n, page_size=page_size, **dtypes)
            )
        else:
            out.append(PrefillProblem(batch=b, seqlen_q=n, seqlen_k=n, h=h, dtype=dtype))
    return out


def _check_common(kernel: str, dtype: str | None, s_q: int, page_size: int) -> str:
    from mlafleet.kernels.registry import KERNELS
    from mlafleet.worker.device import interpreter_mode

    if kernel not in KERNELS:
        raise typer.BadParameter(
            f"expected one of {sorted(KERNELS)}, got {kernel!r}", param_hint="--kernel"
        )
    chosen = dtype or ("fp16" if interpreter_mode() else "bf16")
    if chosen not in WORKLOAD_DTYPES:
        raise typer.BadParameter(
            f"expected one of {list(WORKLOAD_DTYPES)}, got {chosen!r}", param_hint="--dtype"
        )
    if kernel != KERNEL_DECODE and chosen in FP8_WORKLOAD_DTYPES:
        raise typer.BadParameter(
            f"{kernel} has no fp8 ({chosen}); use fp16, bf16 or fp32", param_hint="--dtype"
        )
    if s_q < 1:
        raise typer.BadParameter(f"expected a positive integer, got {s_q}", param_hint="--s-q")
    if page_size < 1 or page_size & (page_size - 1) or page_size > 256:
        raise typer.BadParameter(
            f"expected a power of two from 1 to 256, got {page_size}", param_hint="--page-size"
        )
    return chosen


def _db_saver(db_url: str) -> Callable[[str, Any], None]:
    """``save_tune_result(db_url, tune_result)`` of the orchestrator's store, checked before any
    tuning starts (so a missing feature fails fast, not after the sweep)."""
    try:
        store = importlib.import_module("mlafleet.orchestrator.db.store")
        save: Callable[[str, Any], None] = store.save_tune_result
    except (ImportError, AttributeError):
        _err.print(
            f"[red]error:[/red] --db {db_url}: saving tune results to a database is not "
            "available in this build yet; use --json and keep the output"
        )
        raise typer.Exit(2) from None
    return save


def tune(
    kernel: Annotated[str, typer.Option("--kernel", help=f"One of {list(KERNEL_NAMES)}.")],
    batch: Annotated[str, typer.Option("--batch", help="Batch sizes, comma-separated.")],
    seqlen: Annotated[str, typer.Option("--seqlen", help="KV lengths, comma-separated.")],
    heads: Annotated[str, typer.Option("--heads", help="Query head counts, comma-separated.")],
    s_q: Annotated[int, typer.Option("--s-q", help="Query tokens per sequence (decode).")] = 1,
    dtype: Annotated[
        str | None,
        typer.Option(
            "--dtype",
            help="fp16, bf16 or fp32 (default bf16; fp16 on the CPU interpreter); decode also "
            "fp8_e4m3 (fp8 KV cache) or fp8_e4m3_qkv (fp8 q and KV cache).",
        ),
    ] = None,
    page_size: Annotated[int, typer.Option("--page-size", help="KV page size (decode).")] = 64,
    strategy: Annotated[str, typer.Option("--strategy", help="exhaustive, random or tpe.")] = (
        "exhaustive"
    ),
    budget: Annotated[
        int | None, typer.Option("--budget", min=1, help="New measurements per workload.")
    ] = None,
    budget_minutes: Annotated[
        float | None, typer.Option("--budget-minutes", min=0.01, help="Minutes per workload.")
    ] = None,
    device: Annotated[
        int | None, typer.Option("--device", min=0, help="Only this local device.")
    ] = None,
    cache: Annotated[
        Path | None,
        typer.Option(
            "--cache", help="Results cache (JSON lines); default: the user's cache folder."
        ),
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume/--no-resume", help="Reuse configs measured before.")
    ] = True,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    db: Annotated[str | None, typer.Option("--db", help="Database URL to store results.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON on stdout.")] = False,
) -> None:
    """Tune one kernel on this machine's devices over a grid of workloads, without a fleet."""
    from mlafleet.worker.device import use_interpreter_without_gpu

    use_interpreter_without_gpu()
    from mlafleet.worker.device import local_devices
    from mlafleet.worker.results_cache import ResultsCache, default_cache_path
    from mlafleet.worker.search import STRATEGIES
    from mlafleet.worker.tune import tune as run_tune

    chosen_dtype = _check_common(kernel, dtype, s_q, page_size)
    if strategy not in STRATEGIES:
        raise typer.BadParameter(
            f"expected one of {list(STRATEGIES)}, got {strategy!r}", param_hint="--strategy"
        )
    problems = _problems(
        kernel,
        batch=batch,
        seqlen=seqlen,
        heads=heads,
        s_q=s_q,
        dtype=chosen_dtype,
        page_size=page_size,
    )
    devs = local_devices()
    if device is not None:
        if device >= len(devs):
            raise typer.BadParameter(
                f"expected 0..{len(devs) - 1}, got {device}", param_hint="--device"
            )
        devs = [devs[device]]
    if devs[0].arch == "cpu-interpreter":
        _err.print(
            "no GPU: tuning on Triton's CPU interpreter (functional only, timings meaningless)"
        )
    save = _db_saver(db) if db is not None else None
    store = ResultsCache(cache or default_cache_path()) if resume else ResultsCache(None)
    results = []
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=_err,
        transient=False,
    ) as progress:
        for dev, problem in itertools.product(devs, problems):
            label = f"{dev.arch}#{dev.index} {_label(problem)}"
            task = progress.add_task(label, total=None)
            try:
                result = run_tune(
                    kernel,
                    problem,
                    device_index=dev.index,
                    strategy=strategy,
                    budget_trials=budget,
                    budget_minutes=budget_minutes,
                    seed=seed,
                    cache=store,
                    device=dev,
                    on_plan=lambda n, t=task: progress.update(t, total=n),
                    on_trial=lambda _trial, t=task: progress.advance(t),
                )
            except ValueError as exc:
                _err.print(f"[red]error:[/red] {exc}")
                raise typer.Exit(2) from None
            progress.update(task, total=len(result.trials), completed=len(result.trials))
            results.append(result)
    if save is not None:
        assert db is not None
        for result in results:
            save(db, result)
    if as_json:
        typer.echo(json.dumps({"results": [_result_json(r) for r in results]}, indent=2))
    else:
        _print_results(results)


def _label(problem: Any) -> str:
    if isinstance(problem, DecodeProblem):
        dtype = problem.workload_dtype
        return f"b{problem.batch} s{problem.s_q} h{problem.h_q} n{problem.seqlen} {dtype}"
    return f"b{problem.batch} h{problem.h} n{problem.seqlen_k} {problem.dtype}"


def _result_json(result: Any) -> dict[str, Any]:
    data: dict[str, Any] = result.model_dump(mode="json")
    data["speedup_vs_default"] = result.speedup_vs_default
    data["counts"] = _counts(result.trials)
    return data


def _counts(trials: list[Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for trial in trials:
        counts[trial.status.value] = counts.get(trial.status.value, 0) + 1
    return counts


def _print_results(results: list[Any]) -> None:
    table = Table(title="tuning results")
    for col in ("device", "workload", "trials", "best µs", "default µs", "speedup", "best config"):
        table.add_column(col)
    for r in results:
        best = r.best
        table.add_row(
            f"{r.device.arch}#{r.device.index}",
            json.dumps(r.problem, separators=(",", ":")),
            " ".join(f"{k}={v}" for k, v in _counts(r.trials).items()),
            f"{best.median_us:.1f}" if best and best.median_us else "-",
            f"{r.default.median_us:.1f}" if r.default and r.default.median_us else "-",
            f"{r.speedup_vs_default:.2f}x" if r.speedup_vs_default else "-",
            json.dumps(best.config) if best else "none passed",
        )
    _out.print(table)


def validate(
    bundle: Annotated[
        Path | None, typer.Option("--bundle", help="Config bundle JSON file.")
    ] = None,
    kernel: Annotated[str | None, typer.Option("--kernel")] = None,
    config: Annotated[
        list[str] | None, typer.Option("--config", help="A config as JSON (repeatable).")
    ] = None,
    batch: Annotated[str, typer.Option("--batch")] = "4",
    seqlen: Annotated[str, typer.Option("--seqlen")] = "1024",
    heads: Annotated[str, typer.Option("--heads")] = "16",
    s_q: Annotated[int, typer.Option("--s-q")] = 1,
    dtype: Annotated[str | None, typer.Option("--dtype")] = None,
    page_size: Annotated[int, typer.Option("--page-size")] = 64,
    device: Annotated[int, typer.Option("--device", min=0)] = 0,
    max_drift: Annotated[
        float, typer.Option("--max-drift", min=0.0, help="Allowed slow-down vs recorded.")
    ] = 0.10,
    all_archs: Annotated[
        bool, typer.Option("--all-archs", help="Also check other architectures' entries.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="JSON on stdout.")] = False,
) -> None:
    """Check configs (a bundle's, or given ones) for correctness and timing drift here."""
    from mlafleet.worker.device import use_interpreter_without_gpu

    use_interpreter_without_gpu()
    from mlafleet.worker.recheck import check_bundle, check_configs

    if (bundle is None) == (kernel is None):
        raise typer.BadParameter(
            "pass either --bundle FILE or --kernel K --config JSON", param_hint="--bundle/--kernel"
        )
    if bundle is not None:
        try:
            doc = ConfigBundle.model_validate_json(bundle.read_text(encoding="utf-8"))
        except OSError as exc:
            raise typer.BadParameter(
                f"cannot read {bundle}: {exc.strerror}", param_hint="--bundle"
            ) from None
        except ValidationError as exc:
            raise typer.BadParameter(
                f"{bundle} is not a config bundle: {exc.errors()[0]['msg']} "
                f"at {exc.errors()[0]['loc']}",
                param_hint="--bundle",
            ) from None
        checks = check_bundle(doc, device_index=device, max_drift=max_drift, all_archs=all_archs)
    else:
        assert kernel is not None
        chosen = _check_common(kernel, dtype, s_q, page_size)
        if not config:
            raise typer.BadParameter("give at least one --config JSON", param_hint="--config")
        configs = []
        for text in config:
            try:
                configs.append(json.loads(text))
            except json.JSONDecodeError as exc:
                raise typer.BadParameter(
                    f"not JSON ({exc.msg}): {text!r}", param_hint="--config"
                ) from None
        checks = []
        for problem in _problems(
            kernel,
            batch=batch,
            seqlen=seqlen,
            heads=heads,
            s_q=s_q,
            dtype=chosen,
            page_size=page_size,
        ):
            try:
                checks += check_configs(
                    kernel, problem, configs, device_index=device, max_drift=max_drift
                )
            except ValueError as exc:
                raise typer.BadParameter(str(exc), param_hint="--config") from None
    if as_json:
        typer.echo(json.dumps({"checks": [c.model_dump(mode="json") for c in checks]}, indent=2))
    else:
        table = Table(title="validation")
        for col in ("kernel", "workload", "config", "status", "µs", "message"):
            table.add_column(col)
        for c in checks:
            table.add_row(
                c.kernel,
                json.dumps(c.problem, separators=(",", ":")),
                json.dumps(c.config),
                c.status,
                f"{c.measured_us:.1f}" if c.measured_us else "-",
                c.message,
            )
        _out.print(table)
    if not all(c.ok for c in checks):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command("devices")(devices)
    app.command("tune")(tune)
    app.command("validate")(validate)
