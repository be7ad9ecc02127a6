"""``Store``: one opened database (engine + session factory) shared by the runner and the API."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from .session import open_database, session_scope


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
