"""Migrations: an empty database upgrades to head and matches the models (alembic check); a
database at the previous revision, with data, upgrades without losing it; an outdated schema
is refused with the command that fixes it."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic import command

from mlafleet.orchestrator.db.session import (
    alembic_config,
    check_schema,
    current_revision,
    head_revision,
    make_engine,
    open_database,
    upgrade,
)
from mlafleet.orchestrator.errors import SchemaOutdatedError, StorageError


def test_empty_database_upgrades_to_head_and_matches_the_models(db_url: str) -> None:
    assert upgrade(db_url) == head_revision() == "0002"
    command.check(alembic_config(db_url))  # raises when the models and the schema differ
    engine = make_engine(db_url)
    check_schema(engine)
    assert upgrade(db_url) == "0002"  # idempotent
    engine.dispose()


def test_previous_revision_with_data_upgrades(db_url: str) -> None:
    upgrade(db_url, "0001")
    engine = make_engine(db_url)
    with engine.begin() as conn:
        conn.execute(
            sa.text("INSERT INTO architectures (id, name, vendor) VALUES (1, 'sm_90', 'nvidia')")
        )
        conn.execute(
            sa.text(
                "INSERT INTO software_envs (id, env_key, torch, triton) "
                "VALUES (1, 'k', '2.13', '3.6')"
            )
        )
        conn.execute(
            sa.text("INSERT INTO nodes (id, host, first_seen, last_seen) VALUES (1, 'h', :t, :t)"),
            {"t": "2026-01-01 00:00:00+00:00"},
        )
    with pytest.raises(SchemaOutdatedError, match=r"run `mlafleet db upgrade --db "):
        check_schema(engine)
    assert upgrade(db_url) == "0002"
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT name FROM architectures")).scalars().all() == ["sm_90"]
        cols = {c["name"] for c in sa.inspect(conn).get_columns("recommendations")}
        indexes = {i["name"] for i in sa.inspect(conn).get_indexes("trials")}
    assert {"withdrawn_reason", "withdrawn_at"} <= cols
    assert "ix_trials_kernel_arch_status" in indexes
    command.check(alembic_config(db_url))
    engine.dispose()


def test_outdated_schema_is_refused_with_the_fix(sqlite_url: str) -> None:
    with pytest.raises(SchemaOutdatedError) as info:
        open_database(sqlite_url)
    assert "is at revision none (empty), this mlafleet needs 0002" in str(info.value)
    assert f"run `mlafleet db upgrade --db {sqlite_url}`" in str(info.value)
    assert current_revision(make_engine(sqlite_url)) is None


def test_unreachable_database_is_a_clear_storage_error() -> None:
    bad = "postgresql+psycopg://postgres@127.0.0.1:1/none"
    with pytest.raises(StorageError, match=r"cannot open the database .* check MLAFLEET_DB_URL"):
        current_revision(make_engine(bad, connect_args={"connect_timeout": 2}))
    with pytest.raises(StorageError, match="invalid database URL 'nope'"):
        make_engine("nope")
