"""Engines, sessions and schema versions.

``make_engine(url)`` builds an engine (SQLite in WAL mode with a busy timeout so the runner and
the API can write the same file; PostgreSQL with pre-ping). ``session_scope(factory)`` commits,
or rolls back and raises ``StorageError`` naming the cause. ``check_schema(engine)`` refuses a
database whose schema is behind the code ("run `mlafleet db upgrade`"); ``upgrade(url)``
applies the Alembic migrations shipped in ``db/migrations``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from ..errors import SchemaOutdatedError, StorageError

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
UPGRADE_HINT = "run `mlafleet db upgrade`"


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for ``url`` (``sqlite:///path.db`` or ``postgresql+psycopg://...``).

    Raises:
        StorageError: a URL SQLAlchemy cannot parse, or an SQLite file in a missing folder
            that cannot be created.
    """
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StorageError(
            f"invalid database URL {url!r}; expected e.g. sqlite:///path/to/mlafleet.db or "
            "postgresql+psycopg://user@host:5432/dbname (MLAFLEET_DB_URL or --db)"
        ) from None
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            try:
                Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StorageError(
                    f"cannot create the folder of {parsed.database}: {exc}"
                ) from None
        kwargs.setdefault("connect_args", {"timeout": 30})
        engine = create_engine(parsed, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    try:
        return create_engine(parsed, **kwargs)
    except (ArgumentError, ImportError) as exc:
        raise StorageError(f"cannot use database URL {url!r}: {exc}") from None


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions bound to ``engine`` whose objects stay readable after commit."""
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextlib.contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One transaction: commit on success, roll back on any error.

    Raises:
        StorageError: the database failed (the message names the cause); domain errors
            (``MlafleetError``) raised inside pass through unchanged after the rollback.
    """
    session = factory()
    try:
        yield session
        session.commit()
    except SQLAlchemyError as exc:
        session.rollback()
        raise StorageError(f"database error, transaction rolled back: {_short(exc)}") from exc
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def _short(exc: SQLAlchemyError) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def alembic_config(url: str) -> Config:
    """The Alembic config of the shipped migrations, pointed at ``url``."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def head_revision() -> str:
    """The newest migration revision shipped with this code."""
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head is not None, "no migrations shipped"
    return head


def current_revision(engine: Engine) -> str | None:
    """The database's revision (None: an empty or pre-migration database).

    Raises:
        StorageError: the database cannot be reached.
    """
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    except SQLAlchemyError as exc:
        raise StorageError(
            f"cannot open the database {engine.url.render_as_string(hide_password=True)}: "
            f"{_short(exc)}; check MLAFLEET_DB_URL / --db and that the server is up"
        ) from None


def check_schema(engine: Engine) -> None:
    """Refuse a database whose schema is not at the code's head revision.

    Raises:
        SchemaOutdatedError: the schema is missing or older (message: run `mlafleet db upgrade`).
        StorageError: the database cannot be reached.
    """
    current, head = current_revision(engine), head_revision()
    if current != head:
        where = engine.url.render_as_string(hide_password=True)
        raise SchemaOutdatedError(
            f"the database schema at {where} is at revision {current or 'none (empty)'}, "
            f"this mlafleet needs {head}; run `mlafleet db upgrade --db {where}`"
        )


def upgrade(url: str, revision: str = "head") -> str:
    """Apply migrations up to ``revision``; returns the database's revision afterwards.

    Raises:
        StorageError: the migration failed (rolled back where the backend allows).
    """
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            cfg = alembic_config(url)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
    except SQLAlchemyError as exc:
        raise StorageError(f"migration failed: {_short(exc)}") from exc
    rev = current_revision(engine)
    engine.dispose()
    return rev or ""


def open_database(url: str, *, auto_upgrade: bool = False) -> tuple[Engine, sessionmaker[Session]]:
    """Engine + session factory for a database at the head revision.

    Args:
        url: database URL.
        auto_upgrade: migrate an outdated schema instead of refusing it (``demo`` and tests).

    Raises:
        SchemaOutdatedError: outdated schema and not ``auto_upgrade``.
        StorageError: unreachable database or failed migration.
    """
    if auto_upgrade:
        upgrade(url)
    engine = make_engine(url)
    check_schema(engine)
    return engine, make_session_factory(engine)


__all__ = [
    "UPGRADE_HINT",
    "alembic_config",
    "check_schema",
    "current_revision",
    "head_revision",
    "make_engine",
    "make_session_factory",
    "open_database",
    "session_scope",
    "upgrade",
]
