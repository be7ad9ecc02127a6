"""The dashboard's aggregated reads (``data.buckets``, ``data.config_summary``, ``data.trial``)
against the real API: the summary gives the same heatmap and compare table as the raw trials,
and the Explore page's data fetch over 10 000 bulk-inserted trials is timed."""

from __future__ import annotations

import contextlib
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
import uvicorn
from sqlalchemy import insert, select

from mlafleet.dashboard import data
from mlafleet.dashboard.analysis import folk_vs_winner, heatmap_cells
from mlafleet.dashboard.summaries import (
    BUCKET_COLUMNS,
    SUMMARY_COLUMNS,
    failures_by_kind,
    summary_as_trials,
)
from mlafleet.kernels.bundle import bucket_of
from mlafleet.kernels.configs import DecodeProblem
from mlafleet.orchestrator.api.app import create_app
from mlafleet.orchestrator.config import Settings
from mlafleet.orchestrator.db import repo
from mlafleet.orchestrator.db.models import Trial
from mlafleet.orchestrator.db.store import Store
from mlafleet.worker.schemas import TrialStatus

ARCH = "cpu-interpreter"


def _clear() -> None:
    for fn in (data.buckets, data.config_summary, data.trial, data.results):
        fn.clear()


def _bucket(seeded_api: Any) -> str:
    return bucket_of(DecodeProblem.from_dict(seeded_api.trials[0].problem)).key()


def test_buckets_and_summary_match_the_raw_trials(seeded_api: Any) -> None:
    _clear()
    key = _bucket(seeded_api)
    tuned = data.buckets(seeded_api.url, "mla_decode", None)
    assert list(tuned.columns) == list(BUCKET_COLUMNS)
    assert list(zip(tuned["arch"], tuned["bucket"], strict=True)) == [(ARCH, key)]
    n = len(seeded_api.trials)
    n_ok = sum(t.status is TrialStatus.OK for t in seeded_api.trials)
    row = tuned.iloc[0]
    assert (int(row["trials"]), int(row["ok"]), bool(row["recommended"])) == (n, n_ok, True)

    summary, note = data.config_summary(seeded_api.url, "mla_decode", ARCH, key)
    assert note == ""
    assert list(summary.columns) == list(SUMMARY_COLUMNS)
    assert int(summary["trials"].sum()) == n
    raw, _ = data.workload_results(seeded_api.url, kernel="mla_decode", arch=ARCH, bucket=key)
    from_summary = heatmap_cells(summary_as_trials(summary))
    from_raw = heatmap_cells(raw)
    cols = ["block_size_q", "block_size_k", "num_warps", "num_stages", "status", "trials"]
    pd.testing.assert_frame_equal(from_summary[cols], from_raw[cols])
    assert from_summary["median_us"].tolist() == pytest.approx(
        from_raw["median_us"].tolist(), nan_ok=True
    )
    table_cols = ["arch", "winner", "winner_us", "folk", "folk_status"]
    pd.testing.assert_frame_equal(
        folk_vs_winner(summary_as_trials(summary))[table_cols], folk_vs_winner(raw)[table_cols]
    )
    # the fastest config's samples, from /v1/results/{id}
    best = summary.iloc[0]
    one = data.trial(seeded_api.url, int(best["best_trial_id"]))
    assert one["median_us"] == pytest.approx(best["best_us"])
    assert len(one["samples_us"]) > 0
    failed = failures_by_kind(summary)
    assert int(failed["trials"].sum()) == n - n_ok


def test_unknown_trial_and_unreachable_api_say_so(seeded_api: Any, down_url: str) -> None:
    _clear()
    with pytest.raises(data.ApiError, match="no trial with id 2147483647; list trials"):
        data.trial(seeded_api.url, 2_147_483_647)
    with pytest.raises(data.ApiError, match="bucket"):
        data.config_summary(seeded_api.url, "mla_decode", ARCH, "not a bucket")
    with pytest.raises(data.ApiUnreachableError, match="mlafleet serve"):
        data.buckets(down_url, "mla_decode", None)
    empty, note = data.config_summary(seeded_api.url, "mla_decode", "sm_75", None)
    assert (empty.empty, note) == (True, "")
    assert list(empty.columns) == list(SUMMARY_COLUMNS)


# ------------------------------------------------------------------------ 10 000 trials


@contextlib.contextmanager
def _serve(db_url: str) -> Iterator[str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    config = uvicorn.Config(
        create_app(Settings(db_url=db_url)), host="127.0.0.1", port=port, log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test API server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _bulk_seed(db_url: str, template: Any, n: int) -> None:
    """``n`` trials of one bucket: the template recorded through the repo, then copies of its
    row with 960 different configs (a bulk ORM insert); one in five failed."""
    space = [
        {"block_size_q": q, "block_size_k": k, "num_warps": w, "num_stages": s,
         "num_kv_splits": sp}
        for q in (16, 32, 64, 128) for k in (16, 32, 64, 128) for w in (2, 4, 8)
        for s in (1, 2, 3, 4) for sp in ("auto", 1, 2, 4, 8)
    ]  # fmt: skip
    store = Store.open(db_url, auto_upgrade=True)
    try:
        with store.session() as session:
            first = repo.record_trial(session, trial=template)
            row = session.scalars(select(Trial).where(Trial.id == first)).one()
            base = {c.key: getattr(row, c.key) for c in Trial.__table__.columns if c.key != "id"}
            rows = []
            for i in range(n - 1):
                config = space[i % len(space)]
                bad = i % 5 == 4
                median = 50.0 + (i % len(space)) * 0.5 + (i // len(space)) * 0.01
                rows.append(
                    {
                        **base,
                        "config": config,
                        "config_hash": repo.config_hash(config),
                        "status": TrialStatus.RUNTIME_ERROR if bad else TrialStatus.OK,
                        "error": "illegal memory access" if bad else "",
                        "median_us": None if bad else median,
                        "timing": None if bad else {**base["timing"], "median_us": median},
                    }
                )
            session.execute(insert(Trial), rows)
    finally:
        store.close()


@pytest.mark.slow
def test_explore_fetch_of_10000_trials_is_fast(
    seeded_api: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    template = next(t for t in seeded_api.trials if t.status is TrialStatus.OK)
    db_url = f"sqlite:///{tmp_path / 'big.db'}"
    _bulk_seed(db_url, template, 10_000)
    key = _bucket(seeded_api)
    with _serve(db_url) as url:
        times = []
        for _ in range(3):
            _clear()
            t0 = time.perf_counter()
            tuned = data.buckets(url, "mla_decode", None)
            summary, _ = data.config_summary(url, "mla_decode", ARCH, key)
            cells = heatmap_cells(summary_as_trials(summary))
            one = data.trial(url, int(summary.iloc[0]["best_trial_id"]))
            times.append(time.perf_counter() - t0)
        # the same view from a page of raw trials without samples, for scale
        t0 = time.perf_counter()
        r = httpx.get(
            f"{url}/v1/results",
            params={"kernel": "mla_decode", "bucket": key, "limit": 500, "include_samples": False},
            timeout=60,
        )
        page_s = time.perf_counter() - t0
    _clear()
    assert int(tuned["trials"].sum()) == 10_000
    assert int(summary["trials"].sum()) == 10_000
    assert len(summary) == 960
    assert int(cells["trials"].sum()) == 10_000
    assert len(one["samples_us"]) > 0
    assert r.json()["total"] == 10_000
    assert all(t["timing"] is None or t["timing"]["samples_us"] == [] for t in r.json()["items"])
    with capsys.disabled():
        print(  # noqa: T201 -- the measurement, shown with -s or on failure
            f"\n[10k trials] Explore data fetch {statistics.median(times):.3f} s (median of 3: "
            f"buckets + summary + heatmap cells + one trial); one 500-trial page without "
            f"samples {page_s:.3f} s"
        )
    assert statistics.median(times) < 10.0  # paging /v1/results took ~49 s; loaded CI: slack
