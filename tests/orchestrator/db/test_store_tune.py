"""`mlafleet tune --db`: a local sweep's trials are stored once, with recommendations."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from typer.testing import CliRunner

from mlafleet.orchestrator.cli.main import app

TINY = [
    "--kernel", "mla_decode", "--batch", "1", "--seqlen", "16", "--heads", "2",
    "--dtype", "fp16", "--page-size", "16", "--strategy", "exhaustive", "--budget", "1",
    "--no-resume",
]  # fmt: skip


def _counts(url: str) -> tuple[int, int, list[str]]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            trials = conn.execute(sa.text("SELECT status FROM trials")).scalars().all()
            recs = conn.execute(sa.text("SELECT count(*) FROM recommendations")).scalar_one()
    finally:
        engine.dispose()
    return len(trials), int(recs), sorted(trials)


def test_tune_db_stores_each_trial_once_and_recommends(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'local.db'}"
    runner = CliRunner()
    first = runner.invoke(app, ["tune", *TINY, "--db", url])
    assert first.exit_code == 0, first.output
    n_trials, n_recs, statuses = _counts(url)
    assert n_trials >= 1
    assert set(statuses) == {"ok"}, statuses
    assert n_recs == 1

    again = runner.invoke(app, ["tune", *TINY, "--db", url])
    assert again.exit_code == 0, again.output
    assert _counts(url) == (n_trials, n_recs, statuses)  # nothing stored twice
