"""Dashboard test setup: API-model factories for the pure tests, and real servers (the API on
a database seeded by a real tuning run on the CPU interpreter) for the page tests."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
import uvicorn

from mlafleet.dashboard.flatten import trials_frame
from mlafleet.kernels.bundle import Software, WorkloadBucket
from mlafleet.kernels.configs import DecodeProblem
from mlafleet.orchestrator.api.app import create_app
from mlafleet.orchestrator.api.schemas import TrialPublic
from mlafleet.orchestrator.config import Settings
from mlafleet.orchestrator.db import repo
from mlafleet.orchestrator.db.store import Store
from mlafleet.worker.schemas import TimingStats, TrialResult, TrialStatus
from mlafleet.worker.sweep import SweepOptions
from mlafleet.worker.tune import tune

SOFTWARE = Software(driver="550.54", cuda="12.4", torch="2.4.0", triton="3.0.0")
BUCKET = WorkloadBucket(batch=4, seqlen=256, heads=16, s_q=1, dtype="fp16", page_size=16)
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def make_timing(median_us: float, *, n: int = 9) -> TimingStats:
    """Timing stats whose samples are spread evenly around ``median_us``."""
    samples = [median_us * (1 + (i - n // 2) * 0.01) for i in range(n)]
    return TimingStats(
        median_us=median_us,
        p20_us=samples[n // 5],
        p80_us=samples[(4 * n) // 5],
        min_us=samples[0],
        max_us=samples[-1],
        mean_us=sum(samples) / n,
        spread=(samples[(4 * n) // 5] - samples[n // 5]) / median_us,
        samples_us=samples,
        method="wall_clock",
    )


_NEXT_ID = iter(range(1, 1_000_000))


def _make_trial(
    *,
    arch: str = "sm_90",
    q: int = 64,
    k: int = 64,
    warps: int = 4,
    stages: int = 2,
    splits: int | str = "auto",
    median_us: float | None = 100.0,
    status: TrialStatus = TrialStatus.OK,
    error: str = "",
    **overrides: Any,
) -> TrialPublic:
    """A trial as ``GET /v1/results`` returns it (ok with timing, or failed without)."""
    ok = status is TrialStatus.OK
    fields: dict[str, Any] = {
        "id": next(_NEXT_ID),
        "job_id": 1,
        "task_id": 1,
        "kernel": "mla_decode",
        "arch": arch,
        "gpu_name": {"sm_90": "NVIDIA H100", "sm_80": "NVIDIA A100"}.get(arch, arch),
        "host": "node-a",
        "device_key": f"node-a/0/{arch}",
        "software": SOFTWARE,
        "bucket": BUCKET,
        "problem": {"batch": 4, "s_q": 1, "h_q": 16, "seqlen": 256, "page_size": 16},
        "config": {
            "block_size_q": q,
            "block_size_k": k,
            "num_warps": warps,
            "num_stages": stages,
            "num_kv_splits": splits,
        },
        "status": status,
        "error": error,
        "median_us": median_us if ok else None,
        "timing": make_timing(median_us) if ok and median_us is not None else None,
        "started_at": NOW,
        "finished_at": NOW,
    }
    fields.update(overrides)
    return TrialPublic(**fields)


@pytest.fixture
def trials_df() -> pd.DataFrame:
    """A small sweep on sm_90 and sm_80, with the folk configs measured on sm_90 only."""
    trials = [
        _make_trial(arch="sm_90", q=64, k=64, warps=4, stages=2, median_us=50.0),
        _make_trial(arch="sm_90", q=64, k=64, warps=4, stages=2, splits=4, median_us=40.0),
        _make_trial(arch="sm_90", q=128, k=128, warps=8, stages=3, median_us=60.0),
        _make_trial(
            arch="sm_90",
            q=128,
            k=64,
            warps=8,
            stages=3,
            status=TrialStatus.OUT_OF_RESOURCES,
            error="shared memory: 300000 > 232448",
        ),
        _make_trial(arch="sm_80", q=64, k=32, warps=4, stages=2, median_us=90.0),
        _make_trial(
            arch="sm_80",
            q=64,
            k=64,
            warps=8,
            stages=3,
            status=TrialStatus.COMPILE_ERROR,
            error="boom",
        ),
    ]
    return trials_frame(trials)


@pytest.fixture
def make_trial() -> Callable[..., TrialPublic]:
    """The trial factory (keywords: arch, q, k, warps, stages, splits, median_us, status)."""
    return _make_trial


# ---------------------------------------------------------------------------------------------
# Real servers: the API (uvicorn) on a database seeded by a real tuning run on the interpreter.
# ---------------------------------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[2]
APP_PATH = REPO / "dashboard" / "app.py"
SEED_PROBLEM = DecodeProblem(
    batch=1, s_q=1, h_q=32, seqlen=32, d_qk=64, d_v=32, page_size=16, dtype="fp16"
)
"""Small enough for the interpreter: 4 candidate tiles (block_size_q, block_size_k in 16, 32)."""


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def api_server(db_url: str, *, token: str | None = None) -> Iterator[str]:
    """``create_app`` served by a real uvicorn server on a free loopback port (in a thread of
    this process, so starting one costs no imports)."""
    settings = Settings(db_url=db_url, api_token=token)
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings),
            host="127.0.0.1",
            port=free_port(),
            log_level="warning",
            lifespan="off",
        )
    )
    thread = threading.Thread(target=server.run, name="test-api", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test API server did not start")
        time.sleep(0.05)
    url = f"http://127.0.0.1:{server.config.port}"
    try:
        assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def new_database(path: Path) -> str:
    """An SQLite database at the head schema revision; returns its URL."""
    url = f"sqlite:///{path}"
    Store.open(url, auto_upgrade=True).close()
    return url


def seed_by_tuning(db_url: str) -> list[TrialResult]:
    """A real tuning run of ``mla_decode`` on the CPU interpreter, stored as ``mlafleet tune
    --db`` stores it: every trial recorded, the recommendation refreshed after each."""
    result = tune(
        "mla_decode",
        SEED_PROBLEM,
        strategy="exhaustive",
        seed=0,
        options=SweepOptions(compile_workers=1),
    )
    store = Store.open(db_url)
    try:
        with store.session() as session:
            for trial in result.trials:
                trial_id = repo.record_trial(session, trial=trial)
                if trial_id is not None and trial.status is TrialStatus.OK:
                    repo.refresh_for_trial(session, trial_id=trial_id)
    finally:
        store.close()
    return list(result.trials)


@dataclass(frozen=True)
class SeededApi:
    """The API over the seeded database, and what the seeding run measured."""

    url: str
    trials: list[TrialResult]
    job_name: str


@pytest.fixture(scope="session")
def seeded_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeededApi]:
    """Read-only for the tests: a database seeded by a real interpreter tuning run, plus one
    queued job submitted through the API, served on a free port."""
    db_url = new_database(tmp_path_factory.mktemp("seeded") / "mlafleet.db")
    trials = seed_by_tuning(db_url)
    with api_server(db_url) as url:
        spec = {
            "kind": "tune",
            "name": "seeded-decode",
            "kernel": "mla_decode",
            "workloads": {"batch": [1], "seqlen": [32], "heads": [32], "dtype": ["fp16"]},
        }
        httpx.post(f"{url}/v1/jobs", json=spec, timeout=10).raise_for_status()
        yield SeededApi(url=url, trials=trials, job_name=spec["name"])


@pytest.fixture(scope="module")
def empty_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Read-only for the tests: the API over an empty database, with a bearer token."""
    db_url = new_database(tmp_path_factory.mktemp("empty") / "empty.db")
    with api_server(db_url, token=TOKEN) as url:
        yield url


@pytest.fixture
def writable_api(tmp_path: Path) -> Iterator[str]:
    """The API over a fresh empty database of this test alone, with a bearer token."""
    with api_server(new_database(tmp_path / "own.db"), token=TOKEN) as url:
        yield url


TOKEN = "dashboard-test-token"


@pytest.fixture
def api_token() -> str:
    """The bearer token ``empty_api`` requires for POST and DELETE."""
    return TOKEN


@pytest.fixture
def down_url() -> str:
    """A loopback URL where nothing listens."""
    return f"http://127.0.0.1:{free_port()}"
