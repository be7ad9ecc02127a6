"""Dialect-specific ``INSERT ... ON CONFLICT`` (SQLite and PostgreSQL), so concurrent writers
never collide on the unique keys and a retried write is a no-op."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session


def insert_for(session: Session, model: Any) -> Any:
    """``insert(model)`` of the session's dialect (one with ``on_conflict_*``)."""
    name = session.get_bind().dialect.name
    if name == "postgresql":
        return postgresql.insert(model)
    if name == "sqlite":
        return sqlite.insert(model)
    raise NotImplementedError(f"database {name!r} is not supported; use SQLite or PostgreSQL")


def get_or_create(
    session: Session, model: Any, *, keys: Sequence[str], values: dict[str, Any]
) -> int:
    """Id of the row of ``model`` whose ``keys`` match ``values``, inserting it if missing.

    Safe under concurrent writers: the insert is ``ON CONFLICT DO NOTHING`` on the unique key,
    then the row is read back.
    """
    stmt = insert_for(session, model).values(**values).on_conflict_do_nothing(index_elements=keys)
    session.execute(stmt)
    cond = [getattr(model, k) == values[k] for k in keys]
    row_id = session.scalar(select(model.id).where(*cond))
    assert row_id is not None, f"{model.__name__} row vanished after upsert"
    return int(row_id)


def upsert(
    session: Session,
    model: Any,
    *,
    keys: Sequence[str],
    values: dict[str, Any],
    update: Sequence[str],
) -> int:
    """Insert, or update the ``update`` columns of the row with the same ``keys``; its id."""
    stmt = insert_for(session, model).values(**values)
    stmt = stmt.on_conflict_do_update(
        index_elements=keys, set_={c: getattr(stmt.excluded, c) for c in update}
    )
    session.execute(stmt)
    cond = [getattr(model, k) == values[k] for k in keys]
    row_id = session.scalar(select(model.id).where(*cond))
    assert row_id is not None, f"{model.__name__} row vanished after upsert"
    return int(row_id)
