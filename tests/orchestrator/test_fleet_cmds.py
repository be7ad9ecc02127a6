"""The fleet commands' database handling: `db upgrade`, and `serve` refusing an outdated schema."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from mlafleet.orchestrator.cli.main import app
from mlafleet.orchestrator.db.session import current_revision, make_engine

runner = CliRunner()


def test_db_upgrade_then_again(sqlite_url: str) -> None:
    first = runner.invoke(app, ["db", "upgrade", "--db", sqlite_url])
    assert first.exit_code == 0, first.output
    assert "database at revision 0002 (head)" in first.output
    assert current_revision(make_engine(sqlite_url)) == "0002"
    again = runner.invoke(app, ["db", "upgrade", "--db", sqlite_url])
    assert again.exit_code == 0
    assert "revision 0002" in again.output


def test_db_upgrade_bad_url() -> None:
    result = runner.invoke(app, ["db", "upgrade", "--db", "mysql+nothing://x"])
    assert result.exit_code == 1
    assert "error:" in result.output


@pytest.mark.parametrize("command", [["serve"], ["serve", "--port", "8999"]])
def test_serve_refuses_an_outdated_schema(sqlite_url: str, command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--db", sqlite_url])
    assert result.exit_code == 1
    assert "run `mlafleet db upgrade --db" in " ".join(result.output.split())
