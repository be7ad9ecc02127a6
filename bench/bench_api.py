"""Benchmark the config lookup: in-process (``config_for``) and over HTTP on loopback.

1. In-process: ``runtime_configs.config_for`` on a bundle of ``--entries`` entries, after the
   first call of each problem (the cached path, target < 2 us), and the first call itself.
2. HTTP: a seeded SQLite database, ``mlafleet serve``'s app under uvicorn in a child process,
   and an open-loop client (raw asyncio HTTP/1.1 keep-alive connections, 127.0.0.1 only)
   sending ``GET /v1/configs/mla_decode?...`` at ``--rate`` requests/s for ``--seconds``
   (target: 1000 req/s with p99 < 5 ms). Latency is measured from each request's scheduled
   send time, so a server that falls behind is charged for the queueing.

Run (needs the installed package):
    python bench/bench_api.py --rate 1000 --seconds 10 --out bench/results/api.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("TRITON_INTERPRET", "1")  # CPU machines: no CUDA needed for lookups

ARCHS = ("sm_90", "sm_80", "gfx942")
BATCHES = (1, 4, 16, 64, 128)
SEQLENS = (1024, 4096, 16384)
HEADS = (16, 128)


def _entries(count: int) -> list[Any]:
    from mlafleet.kernels.bundle import BundleEntry, WorkloadBucket
    from mlafleet.kernels.runtime_configs import running_software

    out = []
    sw = running_software()
    i = 0
    while len(out) < count:
        arch = ARCHS[i % len(ARCHS)]
        b = BATCHES[(i // 3) % len(BATCHES)]
        n = SEQLENS[(i // 15) % len(SEQLENS)] * (1 + i // 90)
        h = HEADS[(i // 45) % len(HEADS)]
        out.append(
            BundleEntry(
                kernel="mla_decode",
                arch=arch,
                gpu_name="bench",
                software=sw,
                bucket=WorkloadBucket(
                    batch=b, seqlen=n, heads=h, s_q=1, dtype="fp16", page_size=64
                ),
                config={
                    "block_size_q": 16,
                    "block_size_k": 32 << (i % 2),
                    "num_warps": 4,
                    "num_stages": 1 + i % 3,
                },
                median_us=10.0 + i,
                validated=True,
            )
        )
        i += 1
    return out


def bench_in_process(entries: int, calls: int) -> dict[str, Any]:
    """ns per cached ``config_for`` call, and the first (uncached) call of each problem."""
    from mlafleet.kernels import runtime_configs as rc
    from mlafleet.kernels.bundle import ConfigBundle
    from mlafleet.kernels.configs import DecodeProblem, DeviceLimits

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "configs.json"
        path.write_text(ConfigBundle(source="bench", entries=_entries(entries)).model_dump_json())
        os.environ["MLAFLEET_CONFIGS"] = str(path)
        rc.reset_cache()
        limits = DeviceLimits(arch="sm_90")
        problems = [
            DecodeProblem(batch=b, s_q=1, h_q=h, seqlen=n, page_size=64, dtype="fp16")
            for b in (3, 50, 100)
            for n in (2000, 9000)
            for h in HEADS
        ]
        t0 = time.perf_counter_ns()
        levels = [rc.lookup("mla_decode", p, limits).level for p in problems]
        first_ns = (time.perf_counter_ns() - t0) / len(problems)
        rounds = []
        for _ in range(5):
            t0 = time.perf_counter_ns()
            for i in range(calls):
                rc.config_for("mla_decode", problems[i % len(problems)], limits)
            rounds.append((time.perf_counter_ns() - t0) / calls)
        baseline = []
        for _ in range(5):
            t0 = time.perf_counter_ns()
            for i in range(calls):
                hash(problems[i % len(problems)])
            baseline.append((time.perf_counter_ns() - t0) / calls)
        os.environ.pop("MLAFLEET_CONFIGS")
        rc.reset_cache()
    return {
        "loop_plus_hash_problem_ns_median": statistics.median(baseline),
        "bundle_entries": entries,
        "cached_ns_per_call_median": statistics.median(rounds),
        "cached_ns_per_call_rounds": rounds,
        "first_call_us": first_ns / 1000,
        "levels": sorted(set(levels)),
    }


# ------------------------------------------------------------------------------------ HTTP


def _seed(db_url: str) -> None:
    from mlafleet.kernels.bundle import Software
    from mlafleet.orchestrator.db import repo
    from mlafleet.orchestrator.db.session import (
        make_engine,
        make_session_factory,
        session_scope,
        upgrade,
    )
    from mlafleet.worker.schemas import DeviceFingerprint, TimingStats, TrialResult, TrialStatus

    upgrade(db_url)
    engine = make_engine(db_url)
    factory = make_session_factory(engine)
    now = datetime.now(UTC)
    with session_scope(factory) as session:
        for arch in ARCHS:
            device = DeviceFingerprint(
                vendor="nvidia",
                name=f"gpu-{arch}",
                arch=arch,
                host=f"node-{arch}",
                software=Software(driver="550", cuda="12.4", torch="2.13.0", triton="3.6.0"),
            )
            for b in BATCHES:
                for n in SEQLENS:
                    for h in HEADS:
                        problem = {
                            "batch": b,
                            "s_q": 1,
                            "h_q": h,
                            "seqlen": n,
                            "page_size": 64,
                            "dtype": "bf16",
                        }
                        for k, us in ((32, 20.0), (64, 12.0)):
                            timing = TimingStats(
                                median_us=us,
                                p20_us=us,
                                p80_us=us,
                                min_us=us,
                                max_us=us,
                                mean_us=us,
                                spread=0.01,
                                samples_us=[us],
                                method="cuda_graph",
                            )
                            trial = TrialResult(
                                kernel="mla_decode",
                                problem=problem,
                                config={
                                    "block_size_q": 64,
                                    "block_size_k": k,
                                    "num_warps": 8,
                                    "num_stages": 2,
                                    "num_kv_splits": "auto",
                                },
                                status=TrialStatus.OK,
                                timing=timing,
                                device=device,
                                is_default=k == 32,
                                started_at=now,
                                finished_at=now,
                            )
                            trial_id = repo.record_trial(session, trial=trial)
                            if trial_id is not None:
                                repo.refresh_for_trial(session, trial_id=trial_id)
    engine.dispose()


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def serve(db_url: str, port: int, http: str = "auto", loop: str = "auto") -> None:
    """Child process: the API app under uvicorn on 127.0.0.1:port."""
    import logging

    import uvicorn

    from mlafleet.orchestrator.api.app import create_app
    from mlafleet.orchestrator.config import Settings

    logging.disable(logging.WARNING)
    app = create_app(Settings(db_url=db_url))
    uvicorn.run(
        app, host="127.0.0.1", port=port, log_level="error", access_log=False, http=http, loop=loop
    )


def _paths(count: int) -> list[bytes]:
    out = []
    for i in range(count):
        arch = ARCHS[i % 3]
        b = (1, 3, 16, 40, 100, 128)[i % 6]
        n = (700, 1024, 3000, 9000, 16384)[i % 5]
        h = HEADS[i % 2]
        out.append(f"/v1/configs/mla_decode?arch={arch}&batch={b}&seqlen={n}&heads={h}".encode())
    return out


async def _connection(
    port: int,
    slots: asyncio.Queue[tuple[float, bytes] | None],
    latencies: list[float],
    errors: list[str],
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while True:
            item = await slots.get()
            if item is None:
                return
            scheduled, path = item
            writer.write(b"GET " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - scheduled)
            if status != 200:
                errors.append(str(status))
    finally:
        writer.close()


async def _load(port: int, *, rate: float, seconds: float, connections: int) -> dict[str, Any]:
    paths = _paths(64)
    latencies: list[float] = []
    errors: list[str] = []
    slots: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()
    workers = [
        asyncio.create_task(_connection(port, slots, latencies, errors)) for _ in range(connections)
    ]
    total = int(rate * seconds)
    start = time.perf_counter() + 0.05
    for i in range(total):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        slots.put_nowait((due, paths[i % len(paths)]))
    for _ in workers:
        slots.put_nowait(None)
    await asyncio.gather(*workers)
    wall = time.perf_counter() - start
    lat_ms = sorted(x * 1000 for x in latencies)

    def pct(q: float) -> float:
        return lat_ms[min(len(lat_ms) - 1, int(q * len(lat_ms)))]

    return {
        "requests": len(lat_ms),
        "errors": len(errors),
        "target_rate": rate,
        "achieved_rate": len(lat_ms) / wall,
        "p50_ms": pct(0.50),
        "p90_ms": pct(0.90),
        "p99_ms": pct(0.99),
        "p999_ms": pct(0.999),
        "max_ms": lat_ms[-1],
        "connections": connections,
    }


async def _closed(port: int, *, seconds: float) -> dict[str, Any]:
    """One keep-alive connection sending the next request as soon as the answer is in."""
    paths = _paths(64)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    lat: list[float] = []
    end = time.perf_counter() + seconds
    i = 0
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        writer.write(b"GET " + paths[i % 64] + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        await reader.readexactly(length)
        lat.append((time.perf_counter() - t0) * 1000)
        i += 1
    writer.close()
    lat.sort()
    return {
        "requests": len(lat),
        "rate": len(lat) / seconds,
        "p50_ms": lat[len(lat) // 2],
        "p99_ms": lat[int(0.99 * len(lat))],
        "max_ms": lat[-1],
    }


def bench_http(
    *, rate: float, seconds: float, connections: int, http: str = "auto", loop: str = "auto"
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        db_url = f"sqlite:///{tmp}/bench.db"
        _seed(db_url)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        child = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--serve",
                db_url,
                "--port",
                str(port),
                "--http",
                http,
                "--loop",
                loop,
            ],
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or child.poll() is not None:
                        raise RuntimeError("the API server did not start") from None
                    time.sleep(0.1)
            # warm-up: first loads of the recommendation cache and the memo
            asyncio.run(_load(port, rate=200, seconds=1, connections=connections))
            closed = asyncio.run(_closed(port, seconds=3))
            cpu0, client0 = _cpu_s(child.pid), time.process_time()
            result = asyncio.run(_load(port, rate=rate, seconds=seconds, connections=connections))
            server_cpu = _cpu_s(child.pid) - cpu0
            result["server_cpu_us_per_request"] = server_cpu / result["requests"] * 1e6
            result["client_cpu_us_per_request"] = (
                (time.process_time() - client0) / result["requests"] * 1e6
            )
            result["server"] = {"http": http, "loop": loop}
            result["closed_loop_1_connection"] = closed
            with open("/proc/loadavg") as fh:
                result["loadavg_1min_after"] = float(fh.read().split()[0])
            return result
        finally:
            child.terminate()
            child.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="requests per second")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--entries", type=int, default=300, help="bundle entries (in-process)")
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--skip-http", action="store_true")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    parser.add_argument("--serve", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--http", default="auto", help="uvicorn HTTP parser: auto, h11, httptools")
    parser.add_argument("--loop", default="auto", help="uvicorn event loop: auto, asyncio, uvloop")
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port, args.http, args.loop)
        return
    with open("/proc/loadavg") as fh:
        load = float(fh.read().split()[0])
    results: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "loadavg_1min_before": load,
        },
        "in_process": bench_in_process(args.entries, args.calls),
    }
    print(json.dumps(results["in_process"], indent=2))
    if not args.skip_http:
        results["http"] = bench_http(
            rate=args.rate,
            seconds=args.seconds,
            connections=args.connections,
            http=args.http,
            loop=args.loop,
        )
        print(json.dumps(results["http"], indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
