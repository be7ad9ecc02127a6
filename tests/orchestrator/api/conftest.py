"""Fixtures of the API tests: a migrated SQLite file per test, live uvicorn servers, clients."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from api_support import (
    DECODE_PROBLEM,
    DEFAULT,
    TOKEN,
    TUNED,
    LiveServer,
    fingerprint,
    seed_trials,
    start_server,
    stop_server,
    trial_result,
)

from mlafleet.orchestrator.config import Settings
from mlafleet.orchestrator.db.session import upgrade as upgrade_db


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'mlafleet.db'}"
    upgrade_db(url)
    return url


@pytest.fixture
def make_server() -> Iterator[Callable[..., LiveServer]]:
    started: list[LiveServer] = []

    def make(db_url: str, **overrides: Any) -> LiveServer:
        live = start_server(Settings(db_url=db_url, **overrides))
        started.append(live)
        return live

    yield make
    for live in started:
        stop_server(live)


@pytest.fixture
def server(db_url: str, make_server: Callable[..., LiveServer]) -> LiveServer:
    """A server with a bearer token configured."""
    return make_server(db_url, api_token=TOKEN)


@pytest.fixture
def client(server: LiveServer) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


@pytest.fixture
def authed(server: LiveServer) -> Iterator[httpx.Client]:
    with server.client(token=TOKEN) as c:
        yield c


@pytest.fixture
def seeded(db_url: str) -> str:
    """One sm_90 decode workload: the default config at 20 us and a tuned one at 10 us."""
    device = fingerprint()
    seed_trials(
        db_url,
        [
            trial_result(
                problem=DECODE_PROBLEM,
                config=DEFAULT,
                median_us=20.0,
                device=device,
                is_default=True,
            ),
            trial_result(problem=DECODE_PROBLEM, config=TUNED, median_us=10.0, device=device),
        ],
    )
    return db_url
