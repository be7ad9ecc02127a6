"""Helpers of the API tests (imported by conftest.py and the tests): a real uvicorn server on
a free loopback port in a background thread, and factories that seed results through the
orchestrator's repo functions."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import uvicorn

from mlafleet.kernels.bundle import Software
from mlafleet.orchestrator.api.app import create_app
from mlafleet.orchestrator.config import Settings
from mlafleet.orchestrator.db import repo
from mlafleet.orchestrator.db.session import make_engine, make_session_factory, session_scope
from mlafleet.worker.schemas import (
    DeviceFingerprint,
    TimingStats,
    TrialResult,
    TrialStatus,
    ValidationResult,
)

TOKEN = "s3cret-token"


@dataclass
class LiveServer:
    url: str
    server: uvicorn.Server
    thread: threading.Thread
    settings: Settings

    def client(self, *, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


def start_server(settings: Settings, **app_kwargs: Any) -> LiveServer:
    """uvicorn serving ``create_app(settings)`` on a free 127.0.0.1 port, in a thread."""
    app = create_app(settings, **app_kwargs)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start within 20 s")
        time.sleep(0.01)
    return LiveServer(f"http://127.0.0.1:{port}", server, thread, settings)


def stop_server(live: LiveServer) -> None:
    live.server.should_exit = True
    live.thread.join(timeout=20)


# ------------------------------------------------------------------------------ seeding

SOFTWARE = Software(driver="550.54.15", cuda="12.4", torch="2.13.0", triton="3.6.0")


def fingerprint(
    *,
    arch: str = "sm_90",
    name: str = "NVIDIA H200",
    host: str = "node-a",
    software: Software = SOFTWARE,
) -> DeviceFingerprint:
    return DeviceFingerprint(
        vendor="nvidia" if arch.startswith("sm_") else "cpu",
        name=name,
        arch=arch,
        index=0,
        uuid=f"GPU-{host}-{arch}",
        sm_count=132,
        software=software,
        host=host,
    )


def trial_result(
    *,
    problem: dict[str, Any],
    config: dict[str, Any],
    median_us: float,
    device: DeviceFingerprint,
    is_default: bool = False,
    passed: bool = True,
    status: TrialStatus = TrialStatus.OK,
    kernel: str = "mla_decode",
) -> TrialResult:
    samples = [median_us * f for f in (0.98, 0.99, 1.0, 1.01, 1.02)]
    timing = TimingStats(
        median_us=median_us,
        p20_us=samples[1],
        p80_us=samples[3],
        min_us=samples[0],
        max_us=samples[-1],
        mean_us=median_us,
        spread=(samples[3] - samples[1]) / median_us,
        samples_us=samples,
        method="cuda_graph",
    )
    validation = ValidationResult(
        passed=passed,
        max_abs_err=1e-3,
        max_rel_err=1e-3,
        rel_l2_err=1e-4,
        lse_max_abs_err=1e-5,
        atol=1.6e-2,
        rtol=1.6e-2,
        seed=0,
    )
    now = datetime.now(UTC)
    return TrialResult(
        kernel=kernel,
        problem=problem,
        config=config,
        status=status,
        timing=timing if status == TrialStatus.OK else None,
        validation=validation if status == TrialStatus.OK else None,
        device=device,
        is_default=is_default,
        started_at=now,
        finished_at=now,
    )


def seed_trials(db_url: str, trials: list[TrialResult], *, job_id: int | None = None) -> None:
    """Record trials through the repo and refresh their recommendations."""
    engine = make_engine(db_url)
    factory = make_session_factory(engine)
    with session_scope(factory) as session:
        for trial in trials:
            trial_id = repo.record_trial(session, trial=trial, job_id=job_id)
            if trial_id is not None and trial.status == TrialStatus.OK:
                repo.refresh_for_trial(session, trial_id=trial_id)
    engine.dispose()


DECODE_PROBLEM = {
    "batch": 64,
    "s_q": 1,
    "h_q": 16,
    "seqlen": 4096,
    "page_size": 64,
    "dtype": "bf16",
}
TUNED = {
    "block_size_q": 16,
    "block_size_k": 64,
    "num_warps": 4,
    "num_stages": 3,
    "num_kv_splits": "auto",
}
DEFAULT = {
    "block_size_q": 16,
    "block_size_k": 32,
    "num_warps": 8,
    "num_stages": 2,
    "num_kv_splits": "auto",
}
