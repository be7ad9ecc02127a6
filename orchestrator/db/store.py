"""``Store``: one opened database (engine + session factory) shared by the runner and the API."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from mlafleet.worker.schemas import TrialResult, TrialStatus, TuneResult

from ..errors import StorageError
from ..recommend import refresh_for_trial
from .models import Device, Trial
from .repo_results import config_hash, record_trial
from .session import current_revision, make_engine, open_database, session_scope


@dataclass
class Store:
    """An open database at the head schema revision."""

    url: str
    engine: Engine
    factory: sessionmaker[Session]

    @classmethod
    def open(cls, url: str, *, auto_upgrade: bool = False) -> Store:
        """Open ``url``.

        Raises:
            SchemaOutdatedError: outdated schema and not ``auto_upgrade`` (run `mlafleet db
                upgrade`).
            StorageError: unreachable database or invalid URL.
        """
        engine, factory = open_database(url, auto_upgrade=auto_upgrade)
        return cls(url=url, engine=engine, factory=factory)

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction (``session_scope``)."""
        with session_scope(self.factory) as session:
            yield session

    def close(self) -> None:
        self.engine.dispose()


def save_tune_result(db_url: str, result: TuneResult) -> int:
    """Store the trials of a local ``mlafleet tune`` sweep (no job, no task) and refresh the
    recommendations they touch; returns how many trials were new.

    A trial already stored from an earlier local run (same device, software environment,
    problem and config) is not stored again. A new, empty database is created at the head
    schema; an existing one at an older revision is refused.

    Raises:
        SchemaOutdatedError: the database has an older schema (run `mlafleet db upgrade`).
        StorageError: unreachable database or invalid URL.
    """
    engine = make_engine(db_url)
    try:
        fresh = current_revision(engine) is None
    except StorageError:
        fresh = False  # let Store.open report the cause
    finally:
        engine.dispose()
    store = Store.open(db_url, auto_upgrade=fresh)
    new = 0
    try:
        with store.session() as session:
            for trial in result.trials:
                if _stored_locally(session, trial):
                    continue
                trial_id = record_trial(session, trial=trial)
                if trial_id is None:
                    continue
                new += 1
                if trial.status == TrialStatus.OK:
                    refresh_for_trial(session, trial_id=trial_id)
    finally:
        store.close()
    return new


def _stored_locally(session: Session, trial: TrialResult) -> bool:
    """Whether a task-less trial of this device, problem and config is already stored."""
    rows = session.execute(
        select(Trial.problem, Device.device_key)
        .join(Device, Device.id == Trial.device_id)
        .where(
            Trial.task_id.is_(None),
            Trial.kernel == trial.kernel,
            Trial.config_hash == config_hash(trial.config),
        )
    ).all()
    key = trial.device.device_key
    return any(problem == trial.problem and device_key == key for problem, device_key in rows)
